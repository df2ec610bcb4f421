"""Which stage class implements each stage name of ``stages.yaml``, and which config sections a task reads."""

from __future__ import annotations

from kdpipe.errors import ConfigError
from kdpipe.pipeline.runner.stage import Stage
from kdpipe.pipeline.stages.card import CardStage
from kdpipe.pipeline.stages.classify import ClassifyStage
from kdpipe.pipeline.stages.directions import DirectionsStage
from kdpipe.pipeline.stages.manifest import ManifestStage
from kdpipe.pipeline.stages.pairs import PairsStage
from kdpipe.pipeline.stages.sample import SampleStage
from kdpipe.pipeline.stages.triplets import TripletRender

# A new stage: a module in pipeline/stages/ with a class satisfying kdpipe.pipeline.runner.stage.Stage, one line here.
STAGES: dict[str, type] = {
    "render": TripletRender,
    "sample": SampleStage,
    "classify": ClassifyStage,
    "directions": DirectionsStage,
    "pairs": PairsStage,
    "manifest": ManifestStage,
    "card": CardStage,
}

# Read by every task whatever its stages: the teacher is loaded and the runtime knobs apply to all of them.
ALWAYS_USED = ("teacher", "runtime", "card")


def _stage_class(task: str, name: str) -> type:
    if name not in STAGES:
        raise ConfigError(f"task {task!r} names unknown stage {name!r}; known: {', '.join(STAGES)}")
    return STAGES[name]


def build_stages(task: str, names: list[str]) -> list[Stage]:
    """Stage objects for the stage ``names`` of ``task``, in order. Raises ConfigError for an unknown name."""
    return [_stage_class(task, name)() for name in names]


def used_sections(names: list[str]) -> set[str]:
    """Config sections the stages ``names`` read: their ``sections`` plus :data:`ALWAYS_USED`."""
    used = set(ALWAYS_USED)
    for name in names:
        used.update(_stage_class("?", name).sections)
    return used
