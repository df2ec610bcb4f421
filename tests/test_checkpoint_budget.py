"""Issue 11 item 1: hostile checkpoints (built here, never shipped) are refused in one line before allocating."""

import re

import pytest

from conftest import load_benchmark
from kdpipe.errors import CheckpointError
from kdpipe.pipeline.teacher.formats import export
from kdpipe.pipeline.teacher.formats.budget import estimate_params, plain_copy
from kdpipe.pipeline.teacher.load import build_builtin, load_teacher


@pytest.fixture(scope="module")
def hostile():
    return load_benchmark("hostile_checkpoints")


def test_every_hostile_checkpoint_is_refused_in_one_line(hostile, tmp_path):
    cases = hostile.build_cases(tmp_path)
    assert len(cases) == 11
    for name, (path, regex) in cases.items():
        assert path.stat().st_size < 2_100_000, name  # a few KB to 2 MB on disk...
        with pytest.raises(CheckpointError) as err:
            load_teacher(str(path))  # ...that would ask for gigabytes to terabytes
        assert re.search(regex, str(err.value)) and "\n" not in str(err.value), (name, str(err.value))


def test_budget_is_configurable_and_real_sizes_pass(tmp_path, monkeypatch):
    G, D = build_builtin("random-16")
    path = export.write_nvlabs_pytorch_pkl(tmp_path / "t.pkl", G, D)
    assert load_teacher(str(path)).G.img_resolution == 16
    monkeypatch.setenv("KDPIPE_MAX_TEACHER_PARAMS", "1000")
    with pytest.raises(CheckpointError, match="its tensors hold 182,173 elements, above the limit of 1,000 \\(set "
                                              "KDPIPE_MAX_TEACHER_PARAMS"):
        load_teacher(str(path))
    monkeypatch.setenv("KDPIPE_MAX_TEACHER_PARAMS", "lots")
    with pytest.raises(CheckpointError, match="KDPIPE_MAX_TEACHER_PARAMS='lots' is not a positive integer"):
        load_teacher(str(path))
    # The official 1024x1024 config-f generator (33.2M parameters) is well within the default budget.
    ffhq = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3, channel_base=32768,
                channel_max=512, mapping_kwargs=dict(num_layers=8))
    assert 33_000_000 < estimate_params(ffhq) < 60_000_000


def test_plain_copy_uses_a_memo_and_refuses_cycles():
    x = [0]
    for _ in range(50):
        x = [x, x]  # 2**50 leaves if copied naively
    y = plain_copy({"a": x}, "w")
    assert y["a"][0] is y["a"][1]
    cyc: list = []
    cyc.append(cyc)
    with pytest.raises(CheckpointError, match="contains itself"):
        plain_copy(cyc, "w")
