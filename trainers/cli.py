"""``kdpipe train NAME`` for every registered trainer, and ``kdpipe translate``; ``kdpipe.cli`` mounts them.

Each ``train`` command is built from :data:`kdpipe.trainers.registry.TRAINERS`: the options every trainer shares
(:data:`SHARED`), the trainer's own few options and presets (``TrainerSpec.options`` / ``presets``, typed and
documented from its config dataclass), ``--config FILE`` and ``--set SECTION.KEY=VALUE`` for every other field.
``--help`` lists all fields with their defaults and docstrings. Under torchrun: ``torchrun ... -m kdpipe.cli train
NAME ...``.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from kdpipe.config import field_docs
from kdpipe.errors import ConfigError, KdpipeError, report_user_errors

train_app = typer.Typer(help="Train a student (kdpipe train NAME --help lists its fields).", no_args_is_help=True,
                        add_completion=False, rich_markup_mode=None)

SHARED: dict[str, str] = {
    "data": "data.path", "out": "loop.out_dir", "steps": "loop.steps", "batch_size": "data.batch_size",
    "device": "loop.device", "stop_after": "loop.stop_after", "seed": "loop.seed",
    "eval_every": "loop.eval_every", "eval_metrics": "loop.eval_metrics",
}
"""Options of every trainer: option name -> dotted config field (type and help from the field)."""


# ------------------------------------------------------------------------------------------- field help

def config_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    """``[(dotted name, type, default, docstring)]`` of every leaf field of a nested config dataclass."""
    hints, docs, out = typing.get_type_hints(cls), field_docs(cls), []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(tp):
            out += config_fields(tp, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, tp, default, docs.get(f.name, "")))
    return out


def fields_help(spec) -> str:
    """The ``--help`` epilog: every field ``--set`` accepts, with this trainer's default and docstring."""
    from kdpipe.trainers.core.config import flatten

    defaults = flatten(spec.defaults)
    lines = ["Fields (--set SECTION.KEY=VALUE, or YAML sections in --config):"]
    for name, _, default, doc in config_fields(spec.config):
        lines.append(f"  {name} = {defaults.get(name, default)!r}")
        lines += textwrap.wrap(doc, 72, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- commands

def _option_type(tp: Any) -> Any:
    """CLI type of a config annotation: ``int | None`` -> int, ``str`` -> str (every option may be left out)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _options(spec) -> dict[str, tuple[str, Any, str]]:
    """This trainer's options: name -> (dotted field, CLI type, help), the shared ones first."""
    fields = {name: (tp, doc) for name, tp, _, doc in config_fields(spec.config)}
    out = {}
    for name, dotted in {**SHARED, **spec.options}.items():
        if dotted in fields:
            tp, doc = fields[dotted]
            out[name] = (dotted, _option_type(tp), doc)
    return out


def to_overrides(spec, values: dict[str, Any], set_: list[str] | None) -> dict[str, Any]:
    """Dotted overrides from given options (None = not given): presets, then options, then ``--set`` on top.

    Raises:
        ConfigError: an unknown preset value.
    """
    from kdpipe.trainers.core.config import parse_overrides

    out: dict[str, Any] = {}
    for name, table in spec.presets.items():
        choice = values.get(name)
        if choice is not None:
            if choice not in table:
                raise ConfigError(f"--{name.replace('_', '-')} {choice!r} is not one of {', '.join(table)}")
            out.update(table[choice])
    for name, (dotted, _, _) in _options(spec).items():
        if values.get(name) is not None:
            out[dotted] = str(values[name]) if isinstance(values[name], Path) else values[name]
    out.update(parse_overrides(set_ or []))
    return out


def make_train_command(spec):
    """A typer command for trainer ``spec``; its signature (the options) is built from the registry entry."""
    params = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[Path], typer.Option(help="YAML file with the trainer's sections (see the fields below).")])]
    for name, (_, tp, help_) in _options(spec).items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[tp], typer.Option(help=help_)]))
    for name, table in spec.presets.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[str], typer.Option(help=f"Preset: {' | '.join(table)} (sets several fields).")]))
    params += [
        inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[bool], typer.Option("--progress/--no-progress", help="tqdm bar (loop.progress).")]),
        inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[list[str]], typer.Option("--set", help="Any field: --set SECTION.KEY=VALUE (repeatable).")]),
        inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")]),
        inspect.Parameter("resume_from", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[Path], typer.Option(help="Continue from this checkpoint file.")]),
    ]

    @report_user_errors
    def command(**kw: Any) -> None:
        from kdpipe.trainers.registry import train

        overrides = to_overrides(spec, kw, kw.get("set_"))
        if kw.get("progress") is not None:
            overrides.setdefault("loop.progress", kw["progress"])
        result = train(spec.name, kw.get("config"), overrides, resume=kw.get("resume", False),
                       resume_from=kw.get("resume_from"))
        if result.checkpoints:
            typer.echo(f"step {result.step}: checkpoint {result.checkpoints[-1]}")

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = spec.summary
    command.__name__ = spec.name.replace("-", "_")
    return command


def _mount() -> None:
    from kdpipe.trainers.registry import TRAINERS

    for spec in TRAINERS.values():
        train_app.command(spec.name, help=spec.summary, epilog=fields_help(spec))(make_train_command(spec))


_mount()


@report_user_errors
def translate_command(
    inputs: Annotated[list[Path], typer.Argument(help=(
        "Image files and/or directories, then OUT_DIR last (unconditional students: OUT_DIR only, with --seeds)."))],
    checkpoint: Annotated[Path, typer.Option(help="Training checkpoint (ckpt-*.pt).")],
    x2: Annotated[Optional[list[Path]], typer.Option(help="Triplet students: directory of same-named second images.")] = None,
    ref_dir: Annotated[Optional[list[Path]], typer.Option(help=(
        "StarGANv2: reference images (directory with one sub-folder per domain, or files with --domain); "
        "one output SOURCE__DOMAIN__ref-REF.png per source x reference."))] = None,
    domain: Annotated[Optional[list[str]], typer.Option(help=(
        "StarGANv2: target domain, name or index (repeatable); with --seeds default all domains."))] = None,
    seeds: Annotated[Optional[str], typer.Option(help=(
        "Seeds such as 0-3,10 (z = RandomState(seed).randn). StarGANv2 latent-guided: one output "
        "SOURCE__DOMAIN__seedNNNN.png per source x domain x seed; StyleGAN2 students: seedNNNN.png."))] = None,
    align: Annotated[bool, typer.Option(help="FFHQ-align each photo first (dlib landmarks), as face students "
                                             "were trained.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 8,
    size: Annotated[Optional[int], typer.Option(
        help="Resize side in px; default training size; 0 = keep size.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use G_ema / the EMA networks when present.")] = True,
) -> None:
    """Apply a trained student to images: kdpipe translate --checkpoint CKPT IN_DIR_OR_IMAGES... OUT_DIR."""
    from kdpipe.pipeline.latents import parse_seeds

    from .translate import translate

    if len(inputs) < 2 and seeds is None:
        raise KdpipeError("give at least one input (image or directory) and then OUT_DIR")
    written = translate(checkpoint, inputs[:-1], inputs[-1], x2=x2, ref=ref_dir, domains=domain,
                        seeds=parse_seeds(seeds) if seeds is not None else None, batch_size=batch_size, size=size,
                        device=device, use_ema=ema, align=align)
    typer.echo(f"wrote {len(written)} image(s) to {inputs[-1]}")
