"""Trainer configuration: dataclasses shared by every trainer, loaded from YAML with dotted CLI overrides.

A trainer's config is a dataclass whose fields are section dataclasses (``data``, ``loop``, ``model``...).
Values come, last one wins, from: the dataclass defaults, a YAML file with the same nesting, and
overrides ``{"model.ngf": 8}`` / ``["model.ngf=8"]`` (the CLI's options and ``--set`` strings).
Every field is type-checked; an unknown key or a wrong type raises :class:`ConfigError` naming the
field and the value (litgpt-style: each field documented, each section checks itself in ``__post_init__``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from kdpipe.errors import ConfigError

T = TypeVar("T")

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class DataConfig:
    """Where the webdataset shards are and how batches are made from them."""

    path: str = ""
    """Dataset: ``OUT/<task>`` (reads ``shards/*.tar``), a directory of tars, one tar, a glob, a brace
    pattern (``a-{000000..000009}.tar``), an fsspec URL (``s3://...``) or a ``pipe:`` command."""
    kind: str = "auto"
    """``auto`` (detect from the first sample's keys), ``pair`` (src/tgt) or ``triplet`` (x1, x2 -> y)."""
    direction: str = "forward"
    """Pairs only: ``forward`` learns src->tgt, ``reverse`` learns tgt->src."""
    batch_size: int = 1
    """Samples per step on each process (pix2pixHD default ``batchSize=1``)."""
    num_workers: int = 2
    """DataLoader worker processes; 0 decodes in the main process. Does not change the data order."""
    shuffle_buffer: int = 256
    """Samples held in the seeded shuffle buffer (0 or 1: no buffer, shards still shuffled per epoch)."""
    flip: bool = True
    """Random horizontal flip applied to input and target together (pix2pixHD default ``no_flip=False``)."""
    resolution: int | None = None
    """Resize images to ``resolution`` x ``resolution`` (bilinear, antialiased); None keeps the stored size."""

    def __post_init__(self) -> None:
        _check_choice("data.kind", self.kind, ("auto", "pair", "triplet"))
        _check_choice("data.direction", self.direction, ("forward", "reverse"))
        _check_min("data.batch_size", self.batch_size, 1)
        _check_min("data.num_workers", self.num_workers, 0)
        _check_min("data.shuffle_buffer", self.shuffle_buffer, 0)
        if self.resolution is not None:
            _check_min("data.resolution", self.resolution, 4)


@dataclass
class LoopConfig:
    """The training loop: length, seed, precision, EMA, and how often to log / sample / checkpoint."""

    out_dir: str = ""
    """Run directory: ``checkpoints/``, ``samples/``, ``metrics.jsonl``, ``config.yaml``."""
    steps: int = 10000
    """Total optimiser steps of the run (the learning-rate schedule is defined over these)."""
    seed: int = 0
    """Seeds model init and the data order; the same seed gives the same run at any worker count."""
    precision: str = "fp32"
    """``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast + gradient scaler)."""
    ema_decay: float = 0.0
    """EMA of generator weights per step (e.g. 0.999); 0 keeps no EMA copy."""
    ckpt_every: int = 1000
    """Write a checkpoint every this many steps (and always at the last step of an invocation)."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep (older ones are deleted)."""
    sample_every: int = 500
    """Write ``samples/step-XXXXXXXX.png`` (input / output / target rows) every this many steps; 0 = never."""
    log_every: int = 10
    """Append a line to ``metrics.jsonl`` every this many steps."""
    stop_after: int | None = None
    """Stop this invocation after this many more steps (time-limited jobs); the schedule still uses ``steps``.
    Per invocation: ``--resume`` clears it, so a resumed run goes on to ``steps`` unless given again."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda`` or ``cuda:N``. Under torchrun: cuda:LOCAL_RANK."""
    deterministic: bool = False
    """``torch.use_deterministic_algorithms(True)`` (bitwise-repeatable on CPU; slower on GPU)."""
    progress: bool = True
    """Show a tqdm progress bar (rank 0)."""

    def __post_init__(self) -> None:
        _check_min("loop.steps", self.steps, 1)
        _check_choice("loop.precision", self.precision, PRECISIONS)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"loop.ema_decay={self.ema_decay!r} must be in [0, 1); use 0 to disable the EMA")
        for name in ("ckpt_every", "keep_checkpoints", "log_every"):
            _check_min(f"loop.{name}", getattr(self, name), 1)
        _check_min("loop.sample_every", self.sample_every, 0)
        if self.stop_after is not None:
            _check_min("loop.stop_after", self.stop_after, 1)


# Fields that may differ between a run and its resumption (they do not change the trained weights).
RESUME_MAY_CHANGE = frozenset({
    "data.path", "data.num_workers", "loop.out_dir", "loop.steps", "loop.ckpt_every", "loop.keep_checkpoints",
    "loop.sample_every", "loop.log_every", "loop.stop_after", "loop.device", "loop.progress",
})


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _check_min(name: str, value: int, lo: int) -> None:
    if value < lo:
        raise ConfigError(f"{name}={value!r} must be >= {lo}")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check/convert ``value`` to annotation ``tp`` (bool, int, float, str, Optional[...] and dataclasses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}={value!r} has the wrong type")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping of fields, got {value!r}")
        return _build(tp, value, prefix=name + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}={value!r} must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}={value!r} must be an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}={value!r} must be a number")
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{name}={value!r} must be a string")
    return value


def _build(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; known keys: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (YAML/JSON/``torch.load(weights_only=True)`` safe)."""
    return dataclasses.asdict(cfg)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``["model.ngf=8", "loop.precision=bf16"]`` into ``{"model.ngf": 8, ...}`` (values read as YAML).

    Raises:
        ConfigError: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. model.ngf=32)")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of nested ``base`` with dotted ``overrides`` applied."""
    out = yaml.safe_load(yaml.safe_dump(dict(base))) or {}
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                base: Mapping[str, Any] | None = None) -> T:
    """Build config dataclass ``cls`` from defaults < ``base`` dict < YAML file ``path`` < dotted ``overrides``.

    Args:
        cls: the trainer's top-level config dataclass (fields are section dataclasses).
        path: YAML file with the same nesting as ``cls`` (optional).
        overrides: ``{"section.field": value}``; None values are ignored (= "not given on the CLI").
        base: nested dict applied before the file (used on resume: the checkpoint's saved config).

    Raises:
        ConfigError: missing/unparsable file, unknown key, wrong type or out-of-range value.
    """
    values: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist; pass an existing YAML file to --config")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections, got {type(loaded).__name__}")
        values = merge(values, flatten(loaded))
    values = merge(values, {k: v for k, v in (overrides or {}).items() if v is not None})
    return _build(cls, values)


def config_diff(old: Any, new: Any, allowed: frozenset[str] = RESUME_MAY_CHANGE) -> list[str]:
    """Dotted names of fields that differ between two configs and are not in ``allowed``."""
    a, b = flatten(config_to_dict(old)), flatten(config_to_dict(new))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in allowed)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (:func:`kdpipe.fsutil.atomic_write_text`)."""
    from kdpipe.fsutil import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def section_field(default_factory: Any) -> Any:
    """``dataclasses.field(default_factory=...)`` for config sections."""
    return field(default_factory=default_factory)
