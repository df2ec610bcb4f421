"""Trainer configuration: the sections every trainer shares (``data``, ``loop``) and what may change on resume.

The generic machinery (YAML loading, dotted ``--set`` overrides, type checks, error messages) is
:mod:`kdpipe.config`, shared with the pipeline; this module re-exports its names for trainer code
(``load_config``, ``parse_overrides``, ``flatten``, ``merge``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from kdpipe.config import (check_choice, check_min, config_to_dict, flatten, load_config, merge,
                           parse_set, save_config, section_field)
from kdpipe.errors import ConfigError

__all__ = ["PRECISIONS", "RESUME_MAY_CHANGE", "ConfigError", "DataConfig", "LoopConfig", "config_diff",
           "config_to_dict", "flatten", "load_config", "merge", "parse_overrides", "save_config", "section_field"]

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
        check_choice("data.kind", self.kind, ("auto", "pair", "triplet"))
        check_choice("data.direction", self.direction, ("forward", "reverse"))
        check_min("data.batch_size", self.batch_size, 1)
        check_min("data.num_workers", self.num_workers, 0)
        check_min("data.shuffle_buffer", self.shuffle_buffer, 0)
        if self.resolution is not None:
            check_min("data.resolution", self.resolution, 4)


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
    eval_every: int = 0
    """Every this many steps, append ``eval/<metric>`` values to ``metrics.jsonl`` (kdpipe.trainers.metrics.training);
    0 = never."""
    eval_metrics: str = "fid,kid"
    """Metrics of ``eval_every`` (``kdpipe eval --metrics`` names)."""
    eval_features: str = "inception"
    """Feature extractor of ``eval_every``: ``inception`` (needs ``eval_inception_weights`` or the hub cache) or
    ``digits``."""
    eval_inception_weights: str = ""
    """``weights-inception-2015-12-05-6726825d.pth`` for ``eval_every``; empty = torch hub's checkpoint cache."""
    eval_images: int = 256
    """Images per ``eval_every`` evaluation: the first samples of the data order."""

    def __post_init__(self) -> None:
        check_min("loop.steps", self.steps, 1)
        check_choice("loop.precision", self.precision, PRECISIONS)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"loop.ema_decay={self.ema_decay!r} must be in [0, 1); use 0 to disable the EMA")
        for name in ("ckpt_every", "keep_checkpoints", "log_every"):
            check_min(f"loop.{name}", getattr(self, name), 1)
        check_min("loop.sample_every", self.sample_every, 0)
        check_min("loop.eval_every", self.eval_every, 0)
        check_min("loop.eval_images", self.eval_images, 2)
        if self.stop_after is not None:
            check_min("loop.stop_after", self.stop_after, 1)


# Fields that may differ between a run and its resumption (they do not change the trained weights).
RESUME_MAY_CHANGE = frozenset({
    "data.path", "data.num_workers", "loop.out_dir", "loop.steps", "loop.ckpt_every", "loop.keep_checkpoints",
    "loop.sample_every", "loop.log_every", "loop.stop_after", "loop.device", "loop.progress",
    "loop.eval_every", "loop.eval_metrics", "loop.eval_features", "loop.eval_inception_weights", "loop.eval_images",
})


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["model.ngf=8", "loop.precision=bf16"]`` -> ``{"model.ngf": 8, ...}`` (:func:`kdpipe.config.parse_set`)."""
    return parse_set(items)


def config_diff(old: Any, new: Any, allowed: frozenset[str] = RESUME_MAY_CHANGE) -> list[str]:
    """Dotted names of fields that differ between two configs and are not in ``allowed``."""
    a, b = flatten(config_to_dict(old)), flatten(config_to_dict(new))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in allowed)
