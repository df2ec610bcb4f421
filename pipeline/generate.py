"""``kdpipe generate``: resolve config, load the teacher, run (or dry-run) the task's stages in ``OUT/<task>``."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
import yaml

import kdpipe
from kdpipe.pipeline.config import resolve_config
from kdpipe.pipeline.runner.shards import resolve_png_encoder
from kdpipe.pipeline.runner.dag import Context, Decision, run_stages, stage_status, world_from_env
from kdpipe.errors import ConfigError
from kdpipe.fsutil import atomic_write_bytes
from kdpipe.pipeline.stages.tasks import build_stages
from kdpipe.pipeline.teacher.load import load_teacher


def resolve_device(spec: str) -> torch.device:
    """``'auto'`` -> cuda if available else cpu; ``'cuda'`` without a GPU -> ConfigError."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"runtime.device: {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {spec!r} asked for but no CUDA device is visible; use --device cpu")
    return device


def make_context(cfg: dict, out_root: Path, log=print) -> Context:
    """Validate the device and load the teacher (so a bad ``--generator`` fails before anything is written)."""
    device = resolve_device(cfg["runtime"]["device"])
    if not cfg["teacher"]["generator"]:
        raise ConfigError("no teacher: pass --generator PATH (a StyleGAN2 .pkl or .pt), or --generator "
                          "builtin:random-64 for an untrained smoke-test teacher")
    teacher = load_teacher(cfg["teacher"]["generator"], device)
    rank, world = world_from_env()
    ctx = Context(cfg=cfg, out=Path(out_root) / cfg["task"], device=device, teacher_sha256=teacher.sha256,
                  load_teacher=lambda: teacher, rank=rank, world_size=world, log=log)
    ctx._teacher = teacher
    return ctx


def generate(task: str, out_root: Path, config_file: Path | None = None, overrides: list[str] | None = None,
             cli: dict | None = None, dry_run: bool = False, log=print) -> list[Decision]:
    """Run (or with ``dry_run`` only plan) ``task`` into ``out_root/<task>``; re-running resumes.

    Writes ``config.yaml`` (resolved config) and ``run.json`` (fingerprints, versions, timings) beside the outputs.
    Raises:
        KdpipeError subclasses for bad config, teacher, or a concurrent run on the same output.
    """
    cfg = resolve_config(task, config_file=config_file, overrides=overrides, cli=cli)
    png_fallback = resolve_png_encoder(cfg, log)
    ctx = make_context(cfg, out_root, log)
    stages = build_stages(cfg)
    for stage in stages:
        if hasattr(stage, "validate"):
            stage.validate(cfg, ctx.teacher())
    if not dry_run:  # saved first, so `kdpipe status` works on an interrupted run too
        ctx.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(ctx.out / "config.yaml", yaml.safe_dump(cfg, sort_keys=True).encode())
    t0 = time.time()
    decisions = run_stages(stages, ctx, dry_run=dry_run)
    if dry_run:
        return decisions
    run = {"task": task, "kdpipe_version": kdpipe.__version__, "torch": torch.__version__,
           "python": platform.python_version(), "device": str(ctx.device), "rank": ctx.rank,
           "world_size": ctx.world_size, "seconds": round(time.time() - t0, 3),
           "teacher": ctx.teacher().name, "teacher_sha256": ctx.teacher_sha256, "stages": [],
           "png_encoder": {s: cfg[s]["png_encoder"] for s in ("render", "pairs") if s in cfg},
           "png_encoder_fallback": png_fallback}
    for d in decisions:
        state = ctx.out / "stages" / f"{d.stage}.json"
        summary = json.loads(state.read_text()).get("summary") if state.exists() else None
        run["stages"].append({"stage": d.stage, "action": d.action, "reason": d.reason,
                              "fingerprint": d.fingerprint, "summary": summary})
    name = "run.json" if ctx.rank == 0 else f"run.rank{ctx.rank}.json"
    atomic_write_bytes(ctx.out / name, json.dumps(run, indent=1, sort_keys=True).encode())
    return decisions


def status(out_dir: Path, log=print) -> list[dict]:
    """Per-stage state of an output directory ``OUT/<task>`` (reads its saved ``config.yaml``).

    Raises:
        ConfigError: no ``config.yaml`` there (not a kdpipe output directory).
    """
    out_dir = Path(out_dir)
    cfg_path = out_dir / "config.yaml"
    if not cfg_path.exists():
        raise ConfigError(f"'{out_dir}' is not a kdpipe task directory (no config.yaml); pass OUT/<task>")
    cfg = yaml.safe_load(cfg_path.read_text())
    ctx = make_context(cfg, out_dir.parent, log)
    return stage_status(build_stages(cfg), ctx)
