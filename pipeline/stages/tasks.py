"""Which stage object implements each stage name declared in ``stages.yaml``."""

from __future__ import annotations

from kdpipe.errors import ConfigError
from kdpipe.pipeline.stages.attributes import ClassifyStage, DirectionsStage, SampleStage
from kdpipe.pipeline.stages.pairs import PairsStage
from kdpipe.pipeline.stages.reduce import CardStage, ManifestStage
from kdpipe.pipeline.stages.triplets import TripletRender

STAGES = {
    "render": TripletRender,
    "sample": SampleStage,
    "classify": ClassifyStage,
    "directions": DirectionsStage,
    "pairs": PairsStage,
    "manifest": ManifestStage,
    "card": CardStage,
}


def register_stage(name: str, cls) -> None:
    """Make a stage class available to ``stages.yaml`` under ``name``."""
    STAGES[name] = cls


def build_stages(cfg: dict) -> list:
    """Stage objects for ``cfg['stages']`` in order. Raises ConfigError for an unknown stage name."""
    out = []
    for name in cfg["stages"]:
        if name not in STAGES:
            raise ConfigError(f"task {cfg['task']!r} names unknown stage {name!r}; known: {', '.join(STAGES)}")
        out.append(STAGES[name]())
    return out
