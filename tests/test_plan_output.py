"""``kdpipe generate`` prints its stage plan before any work starts, once per run under torchrun (rank 0)."""

from __future__ import annotations

import os
import subprocess
import sys

ARGS = ["generate", "--task", "style-mix", "--generator", "builtin:random-16", "--no-progress", "-n", "4",
        "--set", "render.shard_size=2"]


def test_plan_comes_before_any_output(tmp_path):
    from kdpipe.pipeline.generate import generate

    seen = []

    def on_plan(decisions):
        seen.append(([d.action for d in decisions], list((tmp_path / "style-mix").glob("shards/*.tar"))))

    generate("style-mix", tmp_path, overrides=["render.shard_size=2"], log=lambda m: None, on_plan=on_plan,
             cli={"teacher.generator": "builtin:random-16", "render.n": 4, "runtime.progress": False})
    assert seen == [(["run", "run", "run"], [])]  # called once, when no shard existed yet
    assert len(list((tmp_path / "style-mix").glob("shards/*.tar"))) == 2


def test_one_plan_per_run_under_two_ranks(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "kdpipe", *ARGS, "--out", str(tmp_path)],
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE="2"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    rank0, rank1 = (out.splitlines() for out, _ in outs)
    # the actions may say resume: the other rank can start the render stage before rank 0 plans
    assert [line.split()[1] for line in rank0[:3]] == ["render", "manifest", "card"]
    assert all(line.split()[0] in ("run", "resume") for line in rank0[:3])
    assert rank0[-1] == f"dataset: {tmp_path / 'style-mix'}"
    assert rank1 == []
