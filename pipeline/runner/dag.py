"""The stage runner: fingerprints, skip/redo decisions, shard-level resume, ranks, dry runs and status.

A stage (:class:`kdpipe.pipeline.runner.stage.Stage`) declares the config sections it depends on; its
fingerprint is the sha256 of: stage name, output schema version, its semantic config, its upstream stages'
fingerprints, the teacher checkpoint's sha256 and, for stages whose bytes depend on the device, the device type
plus what selects its float kernels: the torch thread count on CPU, the GPU model and batch size on CUDA (CPU
forwards have a fixed shape, see render.py). :data:`NON_SEMANTIC` lists what never counts.

Same fingerprint and outputs present -> skipped. Changed -> the stage and every stage after it are cleaned
(old outputs removed, never mixed with new ones) and redone. Sharded stages keep per-shard done records, so a
re-run after a crash redoes only missing shards. With ``WORLD_SIZE``/``RANK`` (torchrun) or
``SLURM_NTASKS``/``SLURM_PROCID``, rank r renders the shards with ``k % world_size == r``; exclusive stages run
once, under a shared lock, by whichever rank gets there first, and the reduce stages (manifest, card) run on the
rank that finds all shards present.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from kdpipe.errors import ConfigError
from kdpipe.fsutil import atomic_write_bytes
from kdpipe.pipeline.runner.integrity import output_problem, record_outputs
from kdpipe.pipeline.runner.lock import exclusive, hold_run_lock
from kdpipe.pipeline.runner.stage import Context, Stage
from kdpipe.pipeline.teacher.ops import FORWARD_REVISION

if TYPE_CHECKING:
    from kdpipe.pipeline.config import PipelineConfig

# Config that never enters a fingerprint: how fast or how verbosely outputs are made, not what they are; and the
# checkpoint's path (its sha256 counts instead, so a moved or renamed checkpoint does not redo anything).
NON_SEMANTIC = {"runtime": ("device", "batch_size", "encode_workers", "progress"), "teacher": ("generator",)}
# Config that enters a fingerprint only through the stage's ``revisions`` (and only when it is in effect), so tasks it
# does not touch keep the fingerprints they had before the fields existed: pairs' identity settings
# (:meth:`kdpipe.pipeline.stages.pairs.PairsStage.revisions`).
VIA_REVISIONS = {"pairs": ("identity", "max_identity_distance")}
STATE_DIR = "stages"
# Fields added after datasets existed: left out of the fingerprint while null, so those datasets' fingerprints
# (and every pinned one) stay valid; set, they count like any other field.
ADDED_WHEN_SET = {"render": ("seeds",), "pairs": ("seeds",)}


def world_from_env(env=os.environ) -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun (``RANK``, ``WORLD_SIZE``) or SLURM (``SLURM_PROCID``, ``SLURM_NTASKS``).

    Raises:
        ConfigError: a variable that is not an integer, ``world_size < 1``, or a rank outside
            ``[0, world_size)`` (a rank with no shards would otherwise exit 0 having done nothing).
    """
    if "WORLD_SIZE" in env:
        names = ("RANK", "WORLD_SIZE")
    elif "SLURM_NTASKS" in env:
        names = ("SLURM_PROCID", "SLURM_NTASKS")
    else:
        return 0, 1
    rank_name, world_name = names
    values = []
    for name, default in ((rank_name, "0"), (world_name, None)):
        raw = env.get(name, default)
        try:
            values.append(int(raw))
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r} is not an integer; unset it or fix the "
                              "launcher (torchrun sets RANK/WORLD_SIZE, srun SLURM_PROCID/SLURM_NTASKS)") from None
    rank, world = values
    if world < 1:
        raise ConfigError(f"{world_name}={world} must be >= 1")
    if not 0 <= rank < world:
        raise ConfigError(f"{rank_name}={rank} is outside [0, {world_name}={world}); each rank must be in "
                          f"0..{world - 1}")
    return rank, world


def semantic_config(stage: Stage, cfg: PipelineConfig) -> dict:
    """The part of ``cfg`` that changes ``stage``'s output (its sections minus :data:`NON_SEMANTIC` and
    :data:`VIA_REVISIONS`, and minus the :data:`ADDED_WHEN_SET` fields left null)."""
    out = {}
    for section in stage.sections:
        values = dict(vars(cfg.section(section)))
        for key in NON_SEMANTIC.get(section, ()) + VIA_REVISIONS.get(section, ()):
            values.pop(key, None)
        for key in ADDED_WHEN_SET.get(section, ()):
            if values.get(key) is None:
                values.pop(key, None)
        out[section] = values
    return out


def fingerprint(stage: Stage, cfg: PipelineConfig, upstream: dict, teacher_sha256: str,
                device: torch.device) -> str:
    """sha256 hex of what determines ``stage``'s output (see module docstring and :func:`fingerprint_inputs`)."""
    doc = fingerprint_inputs(stage, cfg, upstream, teacher_sha256, device)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def fingerprint_inputs(stage: Stage, cfg: PipelineConfig, upstream: dict, teacher_sha256: str,
                       device: torch.device) -> dict:
    """The JSON document a fingerprint hashes; kept in the stage state so a redo can say what changed."""
    doc = {"stage": stage.name, "schema_version": stage.schema_version, "config": semantic_config(stage, cfg),
           "upstream": upstream, "teacher_sha256": teacher_sha256}
    if revisions := stage.revisions(cfg):  # absent when empty: fingerprints from before any revision stay valid
        doc["revisions"] = revisions
    if stage.device_dependent:  # float kernels are chosen by device, shape and threads (see render.py)
        doc["forward_revision"] = FORWARD_REVISION
        doc["device_type"] = device.type
        if device.type == "cpu":
            doc["cpu_threads"] = torch.get_num_threads()  # CPU forwards have a fixed shape: batch size is free
        else:
            doc["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
            doc["batch_size"] = cfg.runtime.batch_size
    return doc


def describe_change(old: dict | None, new: dict) -> str:
    """Human reason for a changed fingerprint: ``'render.n 30 -> 40; teacher_sha256 changed'`` (at most 3 items)."""
    if not old:
        return "config, teacher or schema changed"
    changes = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            name = path.removeprefix("config.")
            short = isinstance(a, (int, float, str, type(None))) and len(str(a)) + len(str(b)) < 40
            changes.append(f"{name} {a} -> {b}" if short else f"{name} changed")

    walk({k: v for k, v in old.items() if k != "upstream"}, {k: v for k, v in new.items() if k != "upstream"}, "")
    if not changes and old.get("upstream") != new.get("upstream"):
        changes.append("upstream changed")
    return "; ".join(changes[:3]) + (f" (+{len(changes) - 3} more)" if len(changes) > 3 else "") if changes \
        else "fingerprint changed"


def read_state(out: Path, name: str) -> dict | None:
    try:
        return json.loads((out / STATE_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def write_state(out: Path, name: str, state: dict) -> None:
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / STATE_DIR / f"{name}.json", json.dumps(state, indent=1, sort_keys=True).encode())


def clean_outputs(ctx: Context, stage: Stage) -> None:
    """Remove a stage's outputs and its state (files, or whole directories)."""
    for p in stage.outputs(ctx):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    (ctx.out / STATE_DIR / f"{stage.name}.json").unlink(missing_ok=True)


@dataclass
class Decision:
    """Why a stage will run or be skipped: ``action`` in {'skip', 'run', 'resume'} and a human reason."""

    stage: str
    action: str
    reason: str
    fingerprint: str
    inputs: dict = field(default_factory=dict)


def plan(stages: list[Stage], ctx: Context) -> list[Decision]:
    """Fingerprint every stage and decide skip / run / resume, in order (a redo upstream forces redo below)."""
    decisions, redo_below = [], False
    for stage in stages:
        inputs = fingerprint_inputs(stage, ctx.cfg, {d.stage: d.fingerprint for d in decisions}, ctx.teacher.sha256,
                                    ctx.device)
        fp = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
        ctx.fingerprints[stage.name] = fp
        state = read_state(ctx.out, stage.name)
        if state is None:
            action, reason = "run", "never run"
        elif state.get("fingerprint") != fp:
            action, reason = "run", "upstream changed" if redo_below else describe_change(state.get("inputs"), inputs)
        elif state.get("status") != "done":
            action, reason = "resume", state.get("detail", "interrupted")
        elif problem := output_problem(stage, ctx, state, fp):  # the files, not the state file, say what is done
            action, reason = ("resume" if stage.sharded else "run"), problem
        else:
            action, reason = "skip", "up to date"
        if redo_below and action == "skip":
            action, reason = "run", "upstream changed"
        redo_below = redo_below or action == "run"
        decisions.append(Decision(stage.name, action, reason, fp, inputs))
    return decisions


def run_stages(stages: list[Stage], ctx: Context, dry_run: bool = False,
               on_plan: Callable[[list[Decision]], None] | None = None) -> list[Decision]:
    """Run the stages of one task, resuming where a previous run stopped.

    Returns the decisions taken; ``on_plan(decisions)`` is called with them before any work starts (also on a
    dry run). With ``dry_run`` nothing is written. A rank whose shards are done but whose peers are not yet
    finished stops after the sharded stage (the last rank runs the reduce stages).
    """
    decisions = plan(stages, ctx)
    if on_plan is not None:
        on_plan(decisions)
    if dry_run:
        return decisions
    ctx.out.mkdir(parents=True, exist_ok=True)
    with hold_run_lock(ctx.out, ctx.rank):
        for stage, decision in zip(stages, decisions):
            fp = decision.fingerprint
            with exclusive(ctx.out / ".stage.lock"):
                state = read_state(ctx.out, stage.name)
                if state and state.get("fingerprint") == decision.fingerprint and state.get("status") == "done" \
                        and decision.action == "skip":
                    continue
                if state and state.get("fingerprint") != decision.fingerprint:
                    for later in stages[stages.index(stage):]:  # never mix old outputs with new ones
                        clean_outputs(ctx, later)
                if not stage.sharded:
                    state = read_state(ctx.out, stage.name)
                    if state and state.get("fingerprint") == decision.fingerprint and state.get("status") == "done" \
                            and output_problem(stage, ctx, state, fp) is None:
                        continue  # another rank did it while we waited for the lock
                write_state(ctx.out, stage.name, {"fingerprint": decision.fingerprint, "status": "running",
                                                  "detail": "interrupted while running", "inputs": decision.inputs})
                if not stage.sharded:
                    _run_one(stage, ctx, decision)
                    continue
            summary = stage.run(ctx, fp)  # sharded work runs outside the lock, ranks in parallel
            later_sharded = any(s.sharded for s in stages[stages.index(stage) + 1:])
            waited = 0.0
            while later_sharded and not summary.get("complete", True):  # peers still on this stage: wait
                if waited % 60 == 0:
                    ctx.log(f"[{stage.name}] rank {ctx.rank}: waiting for {summary.get('missing')} shard(s) "
                            "of other ranks")
                time.sleep(2)
                waited += 2
                summary = stage.summarize(ctx, fp)
            with exclusive(ctx.out / ".stage.lock"):
                if not summary.get("complete", True):
                    ctx.log(f"[{stage.name}] rank {ctx.rank}/{ctx.world_size}: my shards are done; "
                            f"{summary.get('missing')} shard(s) of other ranks pending; the last rank finishes the job")
                    return decisions
                state = read_state(ctx.out, stage.name) or {}
                if state.get("status") != "done":
                    write_state(ctx.out, stage.name, _done_state(decision, summary, {}))
    return decisions


def _run_one(stage: Stage, ctx: Context, decision: Decision) -> None:
    t0 = time.time()
    summary = stage.run(ctx, decision.fingerprint)
    summary["seconds"] = round(time.time() - t0, 3)
    write_state(ctx.out, stage.name, _done_state(decision, summary, record_outputs(stage, ctx)))


def _done_state(decision: Decision, summary: dict, outputs: dict) -> dict:
    return {"fingerprint": decision.fingerprint, "status": "done", "summary": summary, "inputs": decision.inputs,
            "outputs": outputs, "finished_unix": round(time.time(), 3)}


def stage_status(stages: list[Stage], ctx: Context, deep: bool = False) -> list[dict]:
    """Per stage: ``{'stage', 'state': done|partial|stale|missing|corrupt, 'detail'}`` for ``kdpipe status``.

    ``deep`` also re-hashes every shard against the sha256 in its done record (reads every byte).
    """
    rows = []
    for d, stage in zip(plan(stages, ctx), stages):
        state = read_state(ctx.out, stage.name)
        rep = stage.shard_report(ctx, d.fingerprint, check_hash=deep)
        if rep is not None:
            if rep["done"] == rep["total"] and d.action == "skip":
                rows.append({"stage": stage.name, "state": "done",
                             "detail": f"{rep['done']} of {rep['total']} {stage.unit}"})
                continue
            if state is not None and state.get("fingerprint") != d.fingerprint:
                rows.append({"stage": stage.name, "state": "stale", "detail": d.reason})
                continue
            bad = ", ".join(rep["problems"][:3])
            rows.append({"stage": stage.name, "state": "partial" if rep["done"] else "missing",
                         "detail": f"{rep['done']} of {rep['total']} {stage.unit}" + (f"; {bad}" if bad else "")})
            continue
        if d.action == "skip":
            rows.append({"stage": stage.name, "state": "done", "detail": "up to date"})
        elif state is None:
            rows.append({"stage": stage.name, "state": "missing", "detail": "never run"})
        else:
            rows.append({"stage": stage.name, "state": "stale", "detail": d.reason})
    return rows
