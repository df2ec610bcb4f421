"""What the runner (:mod:`kdpipe.pipeline.runner.dag`) needs from a stage, and what a stage sees.

A stage is a small class in ``pipeline/stages/`` (one per module) that satisfies :class:`Stage`. Non-sharded
stages derive from :class:`SingleStage`, sharded ones from :class:`kdpipe.pipeline.runner.sharded.ShardedStage`;
both give every method the runner calls, so the runner never probes with ``hasattr``. The stage's own
fingerprint (:func:`kdpipe.pipeline.runner.dag.fingerprint`) is passed to each call that writes or checks
outputs; the teacher is loaded once, before any stage runs, and handed over in :class:`Context`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:  # annotations only: the runner does not depend on what a config or a teacher holds
    from kdpipe.pipeline.config import PipelineConfig
    from kdpipe.pipeline.teacher.load import Teacher


@dataclass
class Context:
    """Everything a stage sees of a run.

    Attributes:
        cfg: the resolved, validated config of the task.
        out: the task's output directory ``OUT/<task>``.
        device: torch device the teacher lives on.
        teacher: the loaded teacher (``teacher.sha256`` enters every fingerprint).
        rank, world_size: this process's place among ranks (torchrun / SLURM); shard k belongs to rank
            ``k % world_size``.
        fingerprints: ``{stage name: fingerprint}`` of every stage of the task, filled by ``dag.plan`` (a stage
            may record its inputs' fingerprints, e.g. ``directions`` records ``sample`` and ``classify``).
        log: one-line progress messages (stderr in the CLI).
    """

    cfg: "PipelineConfig"
    out: Path
    device: torch.device
    teacher: "Teacher"
    rank: int = 0
    world_size: int = 1
    fingerprints: dict = field(default_factory=dict)
    log: Callable[[str], None] = print


@runtime_checkable
class Stage(Protocol):
    """Everything the runner reads or calls on a stage."""

    name: str
    sections: tuple[str, ...]      # config sections whose values change this stage's output
    schema_version: int            # bump when the output format changes (changes every fingerprint)
    device_dependent: bool         # output bytes depend on the device (teacher float maths)
    sharded: bool                  # work split in shards over ranks, each with a done record
    unit: str                      # what `kdpipe status` calls its pieces ('shards', 'parts'; '' if unsharded)

    def validate(self, cfg: "PipelineConfig", teacher: "Teacher") -> None:
        """Checks that need the teacher, before anything is written. Raises ConfigError."""

    def revisions(self, cfg: "PipelineConfig") -> dict:
        """Revisions of the algorithm this config selects, when its output changed without a config change
        (e.g. ``{'logreg': 2}``); ``{}`` leaves the fingerprint as it was before any revision."""

    def outputs(self, ctx: Context) -> list[Path]:
        """Files / directories the stage writes (removed when its fingerprint changes)."""

    def run(self, ctx: Context, fingerprint: str) -> dict:
        """Do this rank's work; return a JSON-able summary (sharded: ``{'complete', 'missing', ...}``)."""

    def check(self, ctx: Context, fingerprint: str) -> str | None:
        """Why finished-looking outputs must be redone (a shard missing or stale), or None if they are fine."""

    def summarize(self, ctx: Context, fingerprint: str) -> dict:
        """The summary :meth:`run` returns, recomputed from what is on disk (a rank waiting for its peers)."""

    def shard_report(self, ctx: Context, fingerprint: str, check_hash: bool = False) -> dict | None:
        """``{'total', 'done', 'problems'}`` of sharded stages for ``kdpipe status``; None when not sharded.
        ``check_hash`` re-hashes every shard against its done record (reads every byte)."""


class SingleStage:
    """Base of stages that run once over their inputs (not sharded): the :class:`Stage` methods that only
    sharded stages need, as no-ops."""

    sharded = False
    device_dependent = False
    unit = ""

    def validate(self, cfg, teacher) -> None:
        return None

    def revisions(self, cfg) -> dict:
        return {}

    def check(self, ctx: Context, fingerprint: str) -> str | None:
        return None

    def summarize(self, ctx: Context, fingerprint: str) -> dict:
        return {"complete": True}

    def shard_report(self, ctx: Context, fingerprint: str, check_hash: bool = False) -> dict | None:
        return None
