"""``kdpipe generate``: resolve config, load the teacher, run (or dry-run) the task's stages in ``OUT/<task>``."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch
import yaml

import kdpipe
from kdpipe.devices import resolve_device
from kdpipe.pipeline.runner.shards import resolve_png_encoder
from kdpipe.errors import ConfigError
from kdpipe.fsutil import atomic_write_text
from kdpipe.config import load_yaml
from kdpipe.pipeline.config import PipelineConfig, from_dict, resolve_config
from kdpipe.pipeline.runner.dag import Decision, run_stages, stage_status, world_from_env
from kdpipe.pipeline.runner.stage import Context
from kdpipe.pipeline.stages.tasks import build_stages, used_sections
from kdpipe.pipeline.teacher.load import load_teacher

# What each dedicated `kdpipe generate` option sets (named in errors: "-n (render.n) is not used by ...").
CLI_OPTIONS = {"teacher.generator": "--generator", "teacher.truncation_psi": "--truncation-psi", "render.n": "-n",
               "render.seed": "--seed", "render.seeds": "--seeds", "render.mix": "--mix", "runtime.device": "--device",
               "runtime.batch_size": "--batch-size", "runtime.encode_workers": "--workers",
               "runtime.progress": "--progress"}


def make_context(cfg: PipelineConfig, out: Path, log=print) -> Context:
    """Check ranks and device, load the teacher (so a bad ``--generator`` fails before anything is written).

    Args:
        out: the task's output directory ``OUT/<task>``.
    Raises:
        ConfigError: no teacher named, a bad device or bad rank variables; CheckpointError: unloadable teacher.
    """
    rank, world = world_from_env()
    device = resolve_device(cfg.runtime.device, field="runtime.device")
    if not cfg.teacher.generator:
        raise ConfigError("no teacher: pass --generator PATH (a StyleGAN2 .pkl or .pt), or --generator "
                          "builtin:random-64 for an untrained smoke-test teacher")
    teacher = load_teacher(cfg.teacher.generator, device)
    return Context(cfg=cfg, out=Path(out), device=device, teacher=teacher, rank=rank, world_size=world, log=log)


def generate(task: str, out_root: Path, config_file: Path | None = None, overrides: list[str] | None = None,
             cli: dict | None = None, dry_run: bool = False, log=print,
             on_plan: Callable[[list[Decision]], None] | None = None) -> list[Decision]:
    """Run (or with ``dry_run`` only plan) ``task`` into ``out_root/<task>``; re-running resumes.

    Writes ``config.yaml`` (resolved config) and ``run.json`` (fingerprints, versions, timings) beside the outputs.
    ``on_plan(decisions)`` is called once the stages are planned, before any work, on rank 0 only (under torchrun
    or SLURM every rank plans, one prints).
    Raises:
        KdpipeError subclasses for bad config, teacher, or a concurrent run on the same output.
    """
    cfg = resolve_config(task, config_file=config_file, overrides=overrides, cli=cli, cli_names=CLI_OPTIONS,
                         used_sections=used_sections)
    png_fallback = resolve_png_encoder(cfg, log)
    stages = build_stages(cfg.task, cfg.stages)
    ctx = make_context(cfg, Path(out_root) / cfg.task, log)
    for stage in stages:
        stage.validate(cfg, ctx.teacher)
    if not dry_run:  # saved first, so `kdpipe status` works on an interrupted run too
        ctx.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(ctx.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=True))
    t0 = time.time()
    decisions = run_stages(stages, ctx, dry_run=dry_run, on_plan=on_plan if ctx.rank == 0 else None)
    if dry_run:
        return decisions
    run = {"task": task, "kdpipe_version": kdpipe.__version__, "torch": torch.__version__,
           "python": platform.python_version(), "device": str(ctx.device), "rank": ctx.rank,
           "world_size": ctx.world_size, "seconds": round(time.time() - t0, 3),
           "teacher": ctx.teacher.name, "teacher_sha256": ctx.teacher.sha256, "stages": [],
           "png_encoder": {s: cfg.section(s).png_encoder for s in ("render", "pairs")},
           "png_encoder_fallback": png_fallback}
    for d in decisions:
        state = ctx.out / "stages" / f"{d.stage}.json"
        summary = json.loads(state.read_text()).get("summary") if state.exists() else None
        run["stages"].append({"stage": d.stage, "action": d.action, "reason": d.reason,
                              "fingerprint": d.fingerprint, "summary": summary})
    name = "run.json" if ctx.rank == 0 else f"run.rank{ctx.rank}.json"
    atomic_write_text(ctx.out / name, json.dumps(run, indent=1, sort_keys=True))
    return decisions


def status(out_dir: Path, log=print, deep: bool = False) -> list[dict]:
    """Per-stage state of the output directory ``out_dir`` as given (reads its saved ``config.yaml``; the
    directory may have been renamed or moved). ``deep`` re-hashes every shard against its recorded sha256.

    Raises:
        ConfigError: no ``config.yaml`` there (not a kdpipe output directory).
    """
    out_dir = Path(out_dir)
    cfg_path = out_dir / "config.yaml"
    if not cfg_path.exists():
        raise ConfigError(f"'{out_dir}' is not a kdpipe task directory (no config.yaml); pass OUT/<task>")
    cfg = from_dict(load_yaml(cfg_path, "saved config"))
    ctx = make_context(cfg, out_dir, log)
    return stage_status(build_stages(cfg.task, cfg.stages), ctx, deep=deep)
