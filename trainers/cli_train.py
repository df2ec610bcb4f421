"""Typer commands for training and translation; ``kdpipe.cli`` mounts them:

    app.add_typer(train_app, name="train")        # kdpipe train pix2pixhd ...
    app.command("translate")(translate_command)   # kdpipe translate --checkpoint CKPT IN... OUT_DIR

Commands are thin: options become dotted config overrides (only those given), then one library call.
``python -m kdpipe.trainers.cli_train {pix2pixhd,translate} ...`` runs them without kdpipe.cli (torchrun too).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer

from kdpipe.errors import KdpipeError

train_app = typer.Typer(help="Train a student on kdpipe shards.", no_args_is_help=True, add_completion=False)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Print a KdpipeError as ``error: <message>`` on stderr and exit with status 2 (no traceback)."""
    try:
        yield
    except KdpipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def pix2pixhd_overrides(**opts: Any) -> dict[str, Any]:
    """Map CLI option values to dotted config keys; options left as None are not overrides."""
    keys = {
        "data": "data.path", "kind": "data.kind", "direction": "data.direction", "batch_size": "data.batch_size",
        "num_workers": "data.num_workers", "resolution": "data.resolution", "out": "loop.out_dir",
        "steps": "loop.steps", "seed": "loop.seed", "precision": "loop.precision", "ema_decay": "loop.ema_decay",
        "device": "loop.device", "stop_after": "loop.stop_after", "ckpt_every": "loop.ckpt_every",
        "sample_every": "loop.sample_every", "log_every": "loop.log_every", "vgg_weights": "model.vgg_weights",
        "net_g": "model.netG", "ngf": "model.ngf", "progress": "loop.progress",
    }
    out = {keys[k]: (str(v) if isinstance(v, Path) else v) for k, v in opts.items() if v is not None}
    return out


@train_app.command("pix2pixhd")
def pix2pixhd_command(
    data: Annotated[Optional[str], typer.Option(help="Dataset: OUT/<task>, tar/glob/brace pattern, fsspec or pipe: URL.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (checkpoints/, samples/, metrics.jsonl).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML config with sections data/loop/model.")] = None,
    kind: Annotated[Optional[str], typer.Option(help="auto | pair | triplet (triplets: x1,x2 -> y, 6 channels).")] = None,
    direction: Annotated[Optional[str], typer.Option(help="Pairs: forward (src->tgt) | reverse (tgt->src).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Total optimiser steps (defines the lr schedule).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Samples per step per process.")] = None,
    num_workers: Annotated[Optional[int], typer.Option(help="DataLoader workers (data order unchanged).")] = None,
    resolution: Annotated[Optional[int], typer.Option(help="Resize images to this square size.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for init and data order.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 | bf16 | fp16 (autocast).")] = None,
    ema_decay: Annotated[Optional[float], typer.Option(help="EMA decay of G per step; 0 = no EMA.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N.")] = None,
    vgg_weights: Annotated[Optional[Path], typer.Option(envvar="KDPIPE_VGG19", help="torchvision vgg19 state_dict; missing -> VGG loss off.")] = None,
    net_g: Annotated[Optional[str], typer.Option("--net-g", help="global | local (local enhancer).")] = None,
    ngf: Annotated[Optional[int], typer.Option(help="Generator base width.")] = None,
    stop_after: Annotated[Optional[int], typer.Option(help="Stop this invocation after N steps (resume later).")] = None,
    ckpt_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps.")] = None,
    sample_every: Annotated[Optional[int], typer.Option(help="PNG grid every N steps (0 = never).")] = None,
    log_every: Annotated[Optional[int], typer.Option(help="metrics.jsonl line every N steps.")] = None,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="tqdm bar.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any field: --set model.n_blocks_global=6 (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")] = False,
    resume_from: Annotated[Optional[Path], typer.Option(help="Continue from this checkpoint file.")] = None,
) -> None:
    """Train pix2pixHD (Wang et al. 2018) on pair shards (src->tgt) or triplet shards (x1+x2 -> y)."""
    from kdpipe.trainers.core.config import parse_overrides
    from .pix2pixhd.train import run

    with one_line_errors():
        overrides = pix2pixhd_overrides(
            data=data, out=out, kind=kind, direction=direction, steps=steps, batch_size=batch_size,
            num_workers=num_workers, resolution=resolution, seed=seed, precision=precision, ema_decay=ema_decay,
            device=device, vgg_weights=vgg_weights, net_g=net_g, ngf=ngf, stop_after=stop_after,
            ckpt_every=ckpt_every, sample_every=sample_every, log_every=log_every, progress=progress)
        overrides.update(parse_overrides(set_ or []))
        result = run(config, overrides, resume=resume, resume_from=resume_from)
        if result.checkpoints:
            typer.echo(f"step {result.step}: checkpoint {result.checkpoints[-1]}")


def translate_command(
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or directories, then OUT_DIR last.")],
    checkpoint: Annotated[Path, typer.Option(help="Training checkpoint (ckpt-*.pt).")],
    x2: Annotated[Optional[list[Path]], typer.Option(help="Triplet students: directory of same-named second images.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 8,
    size: Annotated[Optional[int], typer.Option(help="Resize side; default training size; 0 = keep size.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use G_ema when present.")] = True,
) -> None:
    """Apply a trained student to images: kdpipe translate --checkpoint CKPT IN_DIR_OR_IMAGES... OUT_DIR."""
    from .translate import translate

    with one_line_errors():
        if len(inputs) < 2:
            raise KdpipeError("give at least one input (image or directory) and then OUT_DIR")
        written = translate(checkpoint, inputs[:-1], inputs[-1], x2=x2, batch_size=batch_size, size=size,
                            device=device, use_ema=ema)
        typer.echo(f"wrote {len(written)} image(s) to {inputs[-1]}")


def _standalone_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, no_args_is_help=True)
    app.command("pix2pixhd")(pix2pixhd_command)
    app.command("translate")(translate_command)
    return app


if __name__ == "__main__":
    sys.exit(_standalone_app()())
