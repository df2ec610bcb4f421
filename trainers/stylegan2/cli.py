"""``kdpipe train stylegan2``: typer glue only (options -> dotted overrides -> :func:`~kdpipe.trainers.stylegan2.run.run`).

    kdpipe train stylegan2 --data digits --out runs/digits-32 --steps 2000 --set model.augment=translation
    kdpipe train stylegan2 --data IMAGE_DIR --out RUN --init network-snapshot.pkl --resolution 64
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kdpipe.trainers.cli_train import one_line_errors

KEYS = {"data": "data.path", "out": "loop.out_dir", "init": "model.init", "steps": "loop.steps",
        "batch_size": "data.batch_size", "resolution": "data.resolution", "seed": "loop.seed",
        "device": "loop.device", "stop_after": "loop.stop_after", "ckpt_every": "loop.ckpt_every",
        "sample_every": "loop.sample_every", "log_every": "loop.log_every", "progress": "loop.progress",
        "augment": "model.augment", "r1_gamma": "model.r1_gamma", "pl_weight": "model.pl_weight"}


def stylegan2_command(
    data: Annotated[Optional[str], typer.Option(help="'digits', an image folder, or a kdpipe shard directory.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (checkpoints/, snapshots, samples/).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML config with sections data/loop/model.")] = None,
    init: Annotated[Optional[str], typer.Option(help="Start from this teacher (builtin:... or checkpoint).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Total steps (minibatches).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step over all processes.")] = None,
    resolution: Annotated[Optional[int], typer.Option(help="Resize images to this square side.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for init, latents and data order.")] = None,
    augment: Annotated[Optional[str], typer.Option(help="DiffAugment ops: color,translation,cutout ('' = none).")] = None,
    r1_gamma: Annotated[Optional[float], typer.Option(help="R1 weight gamma.")] = None,
    pl_weight: Annotated[Optional[float], typer.Option(help="Path-length weight (0 = off).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N.")] = None,
    stop_after: Annotated[Optional[int], typer.Option(help="Stop this invocation after N steps.")] = None,
    ckpt_every: Annotated[Optional[int], typer.Option(help="Checkpoint + snapshot every N steps.")] = None,
    sample_every: Annotated[Optional[int], typer.Option(help="PNG grid every N steps (0 = never).")] = None,
    log_every: Annotated[Optional[int], typer.Option(help="metrics.jsonl line every N steps.")] = None,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="tqdm bar.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any field: --set model.ema_kimg=5.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")] = False,
) -> None:
    """Train a StyleGAN2 generator (Karras et al. 2020) as stylegan2-ada-pytorch does; snapshots load as teachers."""
    from kdpipe.trainers.core.config import parse_overrides
    from kdpipe.trainers.stylegan2.run import run

    opts = dict(data=data, out=out, init=init, steps=steps, batch_size=batch_size, resolution=resolution, seed=seed,
                augment=augment, r1_gamma=r1_gamma, pl_weight=pl_weight, device=device, stop_after=stop_after,
                ckpt_every=ckpt_every, sample_every=sample_every, log_every=log_every, progress=progress)
    with one_line_errors():
        overrides = {KEYS[k]: (str(v) if isinstance(v, Path) else v) for k, v in opts.items() if v is not None}
        overrides.update(parse_overrides(set_ or []))
        result = run(config, overrides, resume=resume)
        typer.echo(f"trained to step {result.step}; snapshots in {overrides.get('loop.out_dir', out)}")
