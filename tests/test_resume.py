"""Issue 3: fingerprints, byte-identical resume after SIGKILL, ranks, the run lock, status/verify/publish."""

import json
import os
import signal
import subprocess
import sys
import time


from conftest import dataset_bytes, run_kdpipe
from kdpipe.pipeline.config import resolve_config
from kdpipe.pipeline.runner.dag import NON_SEMANTIC, fingerprint, semantic_config
from kdpipe.pipeline.stages.triplets import TripletRender

BASE = ["generate", "--task", "style-mix", "--generator", "builtin:random-32", "--no-progress",
        "--set", "render.shard_size=4"]


def gen(cli, out, *extra):
    res = cli(*BASE, "--out", out, *extra)
    assert res.exit_code == 0, res.output
    return [line.split()[0] for line in res.stdout.splitlines() if line.split()[0] in ("skip", "run", "resume")]


def test_fingerprint_ignores_runtime_knobs_only(monkeypatch):
    """The non-semantic list is explicit and pinned: changing it must be a deliberate decision."""
    assert NON_SEMANTIC == {"runtime": ("device", "batch_size", "encode_workers", "progress"),
                            "teacher": ("generator",)}
    import torch

    from dataclasses import replace

    cfg = resolve_config("style-mix")
    stage, cpu = TripletRender(), torch.device("cpu")
    fp = fingerprint(stage, cfg, {}, "sha", cpu)
    for key, value in (("batch_size", 3), ("encode_workers", 0), ("progress", False), ("device", "cpu")):
        changed = replace(cfg, runtime=replace(cfg.runtime, **{key: value}))
        assert fingerprint(stage, changed, {}, "sha", cpu) == fp, key
    for section, key, value in (("render", "n", 7), ("render", "mix", "fine"), ("teacher", "truncation_psi", 0.5),
                                ("render", "png_compress_level", 6)):
        changed = replace(cfg, **{section: replace(cfg.section(section), **{key: value})})
        assert fingerprint(stage, changed, {}, "sha", cpu) != fp, key
    assert fingerprint(stage, cfg, {}, "other-teacher", cpu) != fp  # the teacher counts by content...
    moved = replace(cfg, teacher=replace(cfg.teacher, generator="/elsewhere/same-file.pkl"))
    assert fingerprint(stage, moved, {}, "sha", cpu) == fp  # ...not by path
    assert "runtime" not in semantic_config(stage, cfg)
    # What picks float kernels counts: torch threads on CPU; on a GPU its model and the batch size.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert fingerprint(stage, cfg, {}, "sha", cpu) != fp
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100")
    cuda = torch.device("cuda")
    assert fingerprint(stage, cfg, {}, "sha", cuda) != fp
    assert fingerprint(stage, replace(cfg, runtime=replace(cfg.runtime, batch_size=3)), {}, "sha", cuda) != \
        fingerprint(stage, cfg, {}, "sha", cuda)
    cuda_fp = fingerprint(stage, cfg, {}, "sha", cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    assert fingerprint(stage, cfg, {}, "sha", cuda) != cuda_fp


def test_rerun_skips_param_change_redoes_downstream_worker_change_nothing(tmp_path, cli):
    assert gen(cli, tmp_path, "-n", 9) == ["run"] * 3
    first = dataset_bytes(tmp_path / "style-mix")
    assert gen(cli, tmp_path, "-n", 9) == ["skip"] * 3
    assert gen(cli, tmp_path, "-n", 9, "--workers", 0, "--batch-size", 5) == ["skip"] * 3
    assert gen(cli, tmp_path, "-n", 9, "--mix", "middle") == ["run"] * 3
    assert dataset_bytes(tmp_path / "style-mix") != first
    assert gen(cli, tmp_path, "-n", 9) == ["run"] * 3  # back to the first settings: same bytes as before
    assert dataset_bytes(tmp_path / "style-mix") == first


def test_output_bytes_do_not_depend_on_workers_or_batch_size(tmp_path, cli):
    gen(cli, tmp_path / "a", "-n", 7, "--workers", 0, "--batch-size", 2)
    gen(cli, tmp_path / "b", "-n", 7, "--workers", 3, "--batch-size", 16)
    assert dataset_bytes(tmp_path / "a" / "style-mix") == dataset_bytes(tmp_path / "b" / "style-mix")


def test_deleted_or_truncated_shard_is_detected_and_redone(tmp_path, cli):
    gen(cli, tmp_path, "-n", 12)
    task = tmp_path / "style-mix"
    good = dataset_bytes(task)
    (task / "shards" / "style-mix-000001.tar").unlink()
    shard2 = task / "shards" / "style-mix-000002.tar"
    shard2.write_bytes(shard2.read_bytes()[:1000])
    status = cli("status", task)
    assert "render     partial  1 of 3 shards" in status.stdout, status.stdout
    assert "style-mix-000001.tar: missing" in status.stdout and "style-mix-000002.tar: corrupt" in status.stdout
    verify = cli("verify", task)
    assert verify.exit_code == 1 and "shards/style-mix-000001.tar: missing" in verify.stderr
    assert gen(cli, tmp_path, "-n", 12) == ["resume", "skip", "skip"]
    assert dataset_bytes(task) == good
    assert cli("verify", task).exit_code == 0


def test_sigkill_mid_shard_then_resume_is_byte_identical(tmp_path):
    args = [*BASE, "-n", 40, "--workers", 1]
    run_kdpipe(*args, "--out", tmp_path / "full")
    victim = subprocess.Popen([sys.executable, "-m", "kdpipe.cli", *map(str, args), "--out", str(tmp_path / "killed")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard_dir = tmp_path / "killed" / "style-mix" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill while a shard is being written, after at least one is done
        done = len(list((shard_dir / ".done").glob("*.json"))) if (shard_dir / ".done").exists() else 0
        if done >= 2 and list(shard_dir.glob("*.tar.*tmp")):
            break
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = len(list((shard_dir / ".done").glob("*.json")))
    assert 2 <= done < 10, f"kill came too late or too early ({done} shards done)"
    assert not (tmp_path / "killed" / "style-mix" / "manifest.parquet").exists()
    proc = run_kdpipe(*args, "--out", tmp_path / "killed")
    assert proc.stdout.splitlines()[0].startswith("resume render")
    assert dataset_bytes(tmp_path / "killed" / "style-mix") == dataset_bytes(tmp_path / "full" / "style-mix")
    assert not list(shard_dir.glob("*.tmp"))


def test_two_ranks_give_the_same_bytes_as_one_process(tmp_path):
    args = [*BASE, "-n", 14, "--workers", 0]
    run_kdpipe(*args, "--out", tmp_path / "one")
    procs = [subprocess.Popen([sys.executable, "-m", "kdpipe.cli", *map(str, args), "--out", str(tmp_path / "two")],
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE="2"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert dataset_bytes(tmp_path / "two" / "style-mix") == dataset_bytes(tmp_path / "one" / "style-mix")
    run = json.loads((tmp_path / "two" / "style-mix" / "stages" / "render.json").read_text())
    assert run["status"] == "done"


def test_concurrent_run_on_same_output_fails_with_lock_message(tmp_path):
    args = [sys.executable, "-m", "kdpipe.cli", *map(str, BASE), "-n", "400", "--out", str(tmp_path)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "style-mix" / ".run.lock"
    deadline = time.time() + 60
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.01)
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert "another kdpipe run (pid" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert first.poll() is None  # it failed at once: it did not wait for the first run to end
    first.kill()
    first.wait()


def test_publish_then_verify_and_detect_a_flipped_byte(tmp_path, cli):
    gen(cli, tmp_path / "out", "-n", 6)
    src, dest = tmp_path / "out" / "style-mix", tmp_path / "published"
    res = cli("publish", src, dest)
    assert res.exit_code == 0, res.output
    assert "published 5 file(s), 0 already present" in res.stdout
    assert cli("publish", src, dest).stdout.startswith("published 0 file(s), 5 already present")
    assert cli("verify", dest).exit_code == 0
    shard = dest / "shards" / "style-mix-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = cli("verify", dest)
    assert bad.exit_code == 1 and "shards/style-mix-000001.tar: sha256 mismatch" in bad.stderr


def test_publish_refuses_unfinished_dataset(tmp_path, cli):
    gen(cli, tmp_path, "-n", 6)
    (tmp_path / "style-mix" / "shards" / "style-mix-000000.tar").unlink()
    res = cli("publish", tmp_path / "style-mix", tmp_path / "dest")
    assert res.exit_code == 2 and "is not finished: stage render is partial" in res.stderr
    assert not (tmp_path / "dest" / "SHA256SUMS").exists()
