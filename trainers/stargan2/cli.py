"""Typer commands of the two StarGANv2 stages; ``kdpipe.cli`` mounts ``app`` under ``kdpipe train``::

    kdpipe train stargan2-kd --teacher builtin:random-64 --out runs/kd [--source shards --data OUT/style-mix]
    kdpipe train stargan2 --init runs/kd --data TARGET_DIR --out runs/ft      # no --init: the "No KD" baseline

Commands are thin: the options given become dotted config overrides, then one library call
(:func:`~kdpipe.trainers.stargan2.train_kd.run_kd` / :func:`~kdpipe.trainers.stargan2.train_ft.run_ft`).
User errors (:class:`KdpipeError`) print as one ``error:`` line and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from kdpipe.errors import ConfigError
from kdpipe.trainers.cli_train import one_line_errors
from kdpipe.trainers.core.config import parse_overrides
from kdpipe.trainers.stargan2.config import ABLATIONS

app = typer.Typer(help="StarGANv2 student: KD from a StyleGAN2 teacher, then finetuning.", no_args_is_help=True,
                  add_completion=False)

# option name -> dotted config key, shared by both commands where they mean the same thing
COMMON_KEYS = {
    "out": "loop.out_dir", "steps": "loop.steps", "batch_size": "data.batch_size", "img_size": "model.img_size",
    "seed": "loop.seed", "device": "loop.device", "stop_after": "loop.stop_after", "ckpt_every": "loop.ckpt_every",
    "sample_every": "loop.sample_every", "log_every": "loop.log_every", "progress": "loop.progress",
    "precision": "loop.precision",
}
KD_KEYS = {**COMMON_KEYS, "teacher": "teacher.spec", "source": "data.source", "data": "data.path",
           "mode": "loss.mode", "mix": "teacher.mix", "truncation_psi": "teacher.truncation_psi"}
FT_KEYS = {**COMMON_KEYS, "init": "init", "data": "data.path"}


def to_overrides(keys: dict[str, str], set_: list[str] | None, **opts: Any) -> dict[str, Any]:
    """Options that were given (not None) as dotted overrides, then the ``--set KEY=VALUE`` items on top."""
    out = {keys[k]: (str(v) if isinstance(v, Path) else v) for k, v in opts.items() if v is not None}
    out.update(parse_overrides(set_ or []))
    return out


Out = Annotated[Optional[Path], typer.Option(help="Run directory (checkpoints/, samples/, metrics.jsonl).")]
Config = Annotated[Optional[Path], typer.Option(help="YAML config with the same sections as the dataclasses.")]
Steps = Annotated[Optional[int], typer.Option(help="Total steps (KD default 20000, finetune 100000).")]
BatchSize = Annotated[Optional[int], typer.Option(help="Samples per step per process (KD 2, finetune 8).")]
ImgSize = Annotated[Optional[int], typer.Option(help="Student resolution (power of two; default 256).")]
Seed = Annotated[Optional[int], typer.Option(help="Seed for init and data.")]
Device = Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N.")]
StopAfter = Annotated[Optional[int], typer.Option(help="Stop this invocation after N steps (resume later).")]
Every = Annotated[Optional[int], typer.Option(help="Every N steps.")]
Progress = Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="tqdm bar.")]
Precision = Annotated[Optional[str], typer.Option(help="fp32 | bf16 | fp16 (autocast).")]
Set = Annotated[Optional[list[str]], typer.Option("--set", help="Any field: --set loss.gamma=0.1 (repeatable).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")]
ResumeFrom = Annotated[Optional[Path], typer.Option(help="Continue from this checkpoint file.")]


@app.command("stargan2-kd")
def stargan2_kd_command(
    teacher: Annotated[Optional[str], typer.Option(help="builtin:random-64 or a StyleGAN2 .pkl/.pt.")] = None,
    out: Out = None,
    config: Config = None,
    source: Annotated[Optional[str], typer.Option(help="online (teacher per minibatch) | shards.")] = None,
    data: Annotated[Optional[str], typer.Option(help="--source shards: OUT/style-mix (shards with latents).")] = None,
    mode: Annotated[Optional[str], typer.Option(help="reference | latent | both (E_R(x2) / mapping(z2)).")] = None,
    ablation: Annotated[Optional[str], typer.Option(
        help="Fig. 3(b): kd | kd-l1 (no adv.) | kd-adv (no L1) | kd-star (x1,x1,x1).")] = None,
    mix: Annotated[Optional[str], typer.Option(help="Layers of y from x2: crossover:K (default 4).")] = None,
    truncation_psi: Annotated[Optional[float], typer.Option(help="Truncation of online triplets (default 1).")] = None,
    steps: Steps = None, batch_size: BatchSize = None, img_size: ImgSize = None, seed: Seed = None,
    device: Device = None, precision: Precision = None, stop_after: StopAfter = None, ckpt_every: Every = None,
    sample_every: Every = None, log_every: Every = None, progress: Progress = None, set_: Set = None,
    resume: Resume = False, resume_from: ResumeFrom = None,
) -> None:
    """Stage one of seed 000: distil a StyleGAN2 teacher into StarGANv2 with style-mixed triplets (Eq. 1-5)."""
    from kdpipe.trainers.stargan2.train_kd import run_kd

    with one_line_errors():
        overrides = {}
        if ablation is not None:
            if ablation not in ABLATIONS:
                raise ConfigError(f"--ablation {ablation!r} is not one of {', '.join(ABLATIONS)} (the 'No KD' "
                                  "baseline is `kdpipe train stargan2` without --init)")
            overrides.update(ABLATIONS[ablation])
        overrides.update(to_overrides(
            KD_KEYS, set_, teacher=teacher, out=out, source=source, data=data, mode=mode, mix=mix,
            truncation_psi=truncation_psi, steps=steps, batch_size=batch_size, img_size=img_size, seed=seed,
            device=device, precision=precision, stop_after=stop_after, ckpt_every=ckpt_every,
            sample_every=sample_every, log_every=log_every, progress=progress))
        result = run_kd(config, overrides, resume=resume, resume_from=resume_from)
        if result.checkpoints:
            typer.echo(f"step {result.step}: checkpoint {result.checkpoints[-1]}")


@app.command("stargan2")
def stargan2_command(
    data: Annotated[Optional[Path], typer.Option(help="Target dataset: one sub-folder of images per domain.")] = None,
    init: Annotated[Optional[Path], typer.Option(help="KD checkpoint or run dir; none: 'No KD' baseline.")] = None,
    out: Out = None,
    config: Config = None,
    steps: Steps = None, batch_size: BatchSize = None, img_size: ImgSize = None, seed: Seed = None,
    device: Device = None, precision: Precision = None, stop_after: StopAfter = None, ckpt_every: Every = None,
    sample_every: Every = None, log_every: Every = None, progress: Progress = None, set_: Set = None,
    resume: Resume = False, resume_from: ResumeFrom = None,
) -> None:
    """Stage two: finetune StarGANv2 (adv. + R1, style rec., diversity, cycle) on a few real images per domain."""
    from kdpipe.trainers.stargan2.train_ft import run_ft

    with one_line_errors():
        overrides = to_overrides(
            FT_KEYS, set_, init=init, data=data, out=out, steps=steps, batch_size=batch_size, img_size=img_size,
            seed=seed, device=device, precision=precision, stop_after=stop_after, ckpt_every=ckpt_every,
            sample_every=sample_every, log_every=log_every, progress=progress)
        result = run_ft(config, overrides, resume=resume, resume_from=resume_from)
        if result.checkpoints:
            typer.echo(f"step {result.step}: checkpoint {result.checkpoints[-1]}")


if __name__ == "__main__":  # python -m kdpipe.trainers.stargan2.cli (also under torchrun)
    app()
