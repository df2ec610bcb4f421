"""The Stage protocol: every registered stage declares everything the runner calls; a task's sections."""

from __future__ import annotations

import pytest

from kdpipe.errors import ConfigError
from kdpipe.pipeline.runner.stage import Stage
from kdpipe.pipeline.stages.tasks import STAGES, build_stages, used_sections


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_satisfies_the_protocol(name):
    stage = STAGES[name]()
    assert isinstance(stage, Stage)
    assert stage.name == name and isinstance(stage.schema_version, int)
    assert stage.sharded == bool(stage.unit)  # sharded stages name their pieces for `kdpipe status`
    assert set(stage.sections) <= {"teacher", "render", "sample", "attribute", "classify", "directions", "pairs",
                                   "card", "runtime"}


def test_sections_a_task_reads():
    assert used_sections(["render", "manifest", "card"]) == {"teacher", "render", "card", "runtime"}
    assert "render" not in used_sections(["sample", "classify", "directions", "pairs", "manifest", "card"])
    with pytest.raises(ConfigError, match="names unknown stage 'paint'"):
        build_stages("t", ["render", "paint"])
