"""Shared trainer machinery: config loading, checkpoints, RNG capture, EMA, metrics, grids, shard reader."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import webdataset as wds

from _p2p_fixtures import make_pair_shards, make_triplet_shards, write_sums
from kdpipe.errors import ConfigError, DatasetError
from kdpipe.trainers.core.checkpoint import (TrainCheckpointError, capture_rng_state, checkpoint_path, latest_checkpoint,
                                        list_checkpoints, load_checkpoint, restore_rng_state, save_checkpoint)
from kdpipe.trainers.core.config import (DataConfig, LoopConfig, config_diff, load_config, parse_overrides)
from kdpipe.trainers.core.data import (DataPosition, batch_iterator, inspect_dataset, resolve_shards, sample_stream)
from kdpipe.trainers.core.loop import EMA, MetricsWriter, autocast, read_metrics, save_image_grid


@dataclass
class _Cfg:
    data: DataConfig = field(default_factory=DataConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return make_pair_shards(tmp_path_factory.mktemp("pairs"), n=10, per_shard=4)  # shards of 4, 4, 2


# ------------------------------------------------------------------------------------------------ config

def test_config_yaml_then_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("data:\n  batch_size: 4\n  path: a\nloop:\n  steps: 50\n  precision: bf16\n")
    cfg = load_config(_Cfg, y, {"loop.steps": 7, "data.resolution": 64, "loop.seed": None})
    assert (cfg.data.batch_size, cfg.data.path, cfg.loop.steps, cfg.loop.precision) == (4, "a", 7, "bf16")
    assert cfg.data.resolution == 64 and cfg.loop.seed == 0  # None override = "not given"
    assert parse_overrides(["loop.ema_decay=0.99", "data.path=x/y"]) == {"loop.ema_decay": 0.99, "data.path": "x/y"}


@pytest.mark.parametrize("overrides, match", [
    ({"loop.stepz": 3}, "unknown config key 'loop.stepz'"),
    ({"data.batch_size": "four"}, "data.batch_size='four' must be an integer"),
    ({"loop.precision": "fp8"}, "loop.precision='fp8' is not one of"),
    ({"loop.ema_decay": 1.0}, "must be in \\[0, 1\\)"),
])
def test_config_errors_name_field_and_value(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_Cfg, None, overrides)


def test_config_diff_ignores_fields_that_may_change_on_resume():
    a = load_config(_Cfg, None, {"loop.steps": 10})
    b = load_config(_Cfg, None, {"loop.steps": 20, "data.num_workers": 5, "data.batch_size": 3})
    assert config_diff(a, b) == ["data.batch_size"]


# ------------------------------------------------------------------------------------------- checkpoints

def test_checkpoint_roundtrip_prunes_and_rejects_corrupt_or_foreign(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint({"trainer": "t", "step": step, "config": {}, "trainer_state": {"w": torch.ones(2) * step}},
                        checkpoint_path(tmp_path, step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000002.pt", "ckpt-00000003.pt"]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    state = load_checkpoint(latest_checkpoint(tmp_path), trainer="t")
    assert state["step"] == 3 and torch.equal(state["trainer_state"]["w"], torch.full((2,), 3.0))
    with pytest.raises(TrainCheckpointError, match="written by trainer 't', not 'other'"):
        load_checkpoint(latest_checkpoint(tmp_path), trainer="other")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(latest_checkpoint(tmp_path).read_bytes()[:300])
    with pytest.raises(TrainCheckpointError, match="unreadable or corrupt") as err:
        load_checkpoint(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(TrainCheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rng_state_survives_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint({"trainer": "t", "step": 0, "config": {}, "trainer_state": {}, "rng": capture_rng_state()},
                    tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


# ------------------------------------------------------------------------------- EMA, metrics, images

def test_ema_blends_weights():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    old = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.9 * old + 0.1 * model.weight)
    assert not ema.module.weight.requires_grad


def test_metrics_drop_lines_after_the_resumed_step(tmp_path):
    m = MetricsWriter(tmp_path / "metrics.jsonl")
    for s in range(1, 6):
        m.write({"step": s, "loss": float(s)})
    MetricsWriter(tmp_path / "metrics.jsonl", resume_step=3).write({"step": 4, "loss": -4.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, -4.0)]


def test_image_grid_layout(tmp_path):
    rows = [torch.full((3, 3, 8, 8), v) for v in (-1.0, 0.0, 1.0)]
    img = np.asarray(PIL.Image.open(save_image_grid(tmp_path / "g.png", rows)))
    assert img.shape == (3 * 10 + 2, 3 * 10 + 2, 3)
    assert img[2 + 4, 2 + 4].tolist() == [0, 0, 0] and img[12 + 4, 2 + 4].tolist() == [128] * 3
    assert img[22 + 4, 2 + 4].tolist() == [255] * 3


def test_bf16_autocast_on_cpu():
    with autocast(torch.device("cpu"), "bf16"):
        y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert y.dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert torch.nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.float32


# ------------------------------------------------------------------------------------------ shard reader

def test_resolve_shards_accepts_task_dir_glob_brace_file_url_and_pipe(pairs):
    tars = sorted(str(p) for p in (pairs / "shards").glob("*.tar"))
    assert len(tars) == 3
    assert resolve_shards(pairs) == tars
    assert resolve_shards(pairs / "shards") == tars
    assert resolve_shards(str(pairs / "shards" / "*.tar")) == tars
    assert resolve_shards(str(pairs / "shards" / "brightness-{000000..000002}.tar")) == tars
    assert resolve_shards(f"file://{pairs}") == tars
    assert resolve_shards(f"pipe:cat {pairs}/shards/brightness-{{000000..000001}}.tar") == [
        f"pipe:cat {t}" for t in tars[:2]]
    keys = [s["__key__"] for _, _, s in _take(sample_stream(tars, 0, 4), 10)]
    via_pipe = [s["__key__"] for _, _, s in _take(sample_stream([f"pipe:cat {t}" for t in tars], 0, 4), 10)]
    assert keys == via_pipe and sorted(keys) == [f"{i:08d}" for i in range(10)]


def test_fsspec_urls_stream_like_local_paths(pairs):
    import fsspec

    fs = fsspec.filesystem("memory")
    for t in sorted((pairs / "shards").glob("*.tar")):
        fs.pipe(f"/p2p_ds/shards/{t.name}", t.read_bytes())
    urls = resolve_shards("memory://p2p_ds")
    assert urls == [f"memory:///p2p_ds/shards/brightness-00000{i}.tar" for i in range(3)]
    local = [s["__key__"] for _, _, s in _take(sample_stream(resolve_shards(pairs), 3, 4), 10)]
    assert [s["__key__"] for _, _, s in _take(sample_stream(urls, 3, 4), 10)] == local


def _take(it, n):
    return [x for _, x in zip(range(n), it)]


def test_missing_and_empty_datasets_give_one_line_errors(tmp_path, pairs):
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_shards(tmp_path / "nothing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DatasetError, match="no \\*.tar shards"):
        resolve_shards(tmp_path / "empty_dir")
    with pytest.raises(DatasetError, match="brightness-000003.tar' is missing \\(7 of 10\\)"):
        resolve_shards(str(pairs / "shards" / "brightness-{000000..000009}.tar"))
    copy = tmp_path / "copy"
    shutil.copytree(pairs, copy)
    (copy / "SHA256SUMS").write_text("".join(f"{'0' * 64}  shards/brightness-00000{i}.tar\n" for i in range(4)))
    with pytest.raises(DatasetError, match="1 shard\\(s\\) listed in SHA256SUMS are missing"):
        resolve_shards(copy)
    empty = tmp_path / "empty" / "shards"
    empty.mkdir(parents=True)
    wds.TarWriter(str(empty / "e-000000.tar")).close()
    write_sums(empty.parent)
    with pytest.raises(DatasetError, match="is empty") as err:
        inspect_dataset(empty.parent)
    assert "\n" not in str(err.value)


def test_kind_detection_and_wrong_kind(tmp_path, pairs):
    info = inspect_dataset(pairs)
    assert (info.kind, info.task, info.image_hw, info.in_channels) == ("pair", "brightness", (32, 32), 3)
    trip = make_triplet_shards(tmp_path, n=2)
    assert inspect_dataset(trip).in_channels == 6
    with pytest.raises(DatasetError, match="holds pair samples .* but this run expects triplet"):
        inspect_dataset(pairs, kind="triplet")


def test_mixed_task_shard_is_reported_while_streaming(tmp_path):
    pairs = make_pair_shards(tmp_path, n=4, per_shard=4)
    trip = make_triplet_shards(tmp_path, n=4, per_shard=4)
    shutil.copy(trip / "shards" / "style-mix-000000.tar", pairs / "shards" / "zz-000000.tar")
    write_sums(pairs)  # listed, so only the sample keys betray it
    info = inspect_dataset(pairs)
    with pytest.raises(DatasetError, match="a shard of another task is mixed into this dataset"):
        _take(batch_iterator(info, DataConfig(batch_size=8, num_workers=0), 0), 1)


def _keys(info, cfg, seed=0, start=DataPosition(), rank=0, world=1, n=12):
    return [(tuple(b["key"]), pos) for b, pos in _take(batch_iterator(info, cfg, seed, start, rank, world), n)]


def test_data_order_is_seeded_and_independent_of_workers(pairs):
    info = inspect_dataset(pairs)
    cfg = DataConfig(batch_size=3, num_workers=0, shuffle_buffer=4)
    ref = _keys(info, cfg)
    assert _keys(info, cfg) == ref
    assert _keys(info, cfg, seed=1) != ref
    assert _keys(info, DataConfig(batch_size=3, num_workers=2, shuffle_buffer=4)) == ref
    # 12 batches of 3 over a 10-sample dataset: each epoch is a permutation of all keys
    flat = [k for keys, _ in ref for k in keys]
    assert sorted(flat[:10]) == [f"{i:08d}" for i in range(10)] and flat[:10] != sorted(flat[:10])
    assert sorted(flat[10:20]) == sorted(flat[:10]) and flat[10:20] != flat[:10]


def test_resume_position_continues_the_same_stream(pairs):
    info = inspect_dataset(pairs)
    cfg = DataConfig(batch_size=3, num_workers=0, shuffle_buffer=4)
    ref = _keys(info, cfg, n=12)
    for k in (1, 3, 4, 7):  # positions inside epoch 0, on, and past epoch boundaries
        assert _keys(info, cfg, start=ref[k - 1][1], n=12 - k) == ref[k:]


def test_ranks_split_the_single_process_stream(pairs):
    info = inspect_dataset(pairs)
    cfg = DataConfig(batch_size=2, num_workers=0, shuffle_buffer=4)
    single = [k for keys, _ in _keys(info, DataConfig(batch_size=1, num_workers=0, shuffle_buffer=4), n=16)
              for k in keys]
    r0, r1 = (_keys(info, cfg, rank=r, world=2, n=4) for r in (0, 1))
    for step in range(4):
        assert r0[step][0] == tuple(single[step * 4 + j] for j in (0, 2))
        assert r1[step][0] == tuple(single[step * 4 + j] for j in (1, 3))
        assert r0[step][1] == r1[step][1]  # every rank stores the same resume position
    assert _keys(info, cfg, start=r0[1][1], rank=1, world=2, n=2) == r1[2:4]


def test_batches_are_images_in_range_with_consistent_flips(pairs, tmp_path):
    info = inspect_dataset(pairs)
    b, _ = next(batch_iterator(info, DataConfig(batch_size=4, num_workers=0), 0))
    assert b["input"].shape == (4, 3, 32, 32) and b["target"].shape == (4, 3, 32, 32)
    assert b["input"].dtype == torch.float32 and -1 <= b["input"].min() and b["input"].max() <= 1
    # the fixture's edit is per-pixel: target == edit(input) holds whether or not the pair was flipped
    edit = -b["input"][:, [2, 0, 1]]
    assert torch.allclose(b["target"], edit, atol=1e-5)
    rev, _ = next(batch_iterator(info, DataConfig(batch_size=4, num_workers=0, direction="reverse"), 0))
    assert torch.equal(rev["input"], b["target"]) and torch.equal(rev["target"], b["input"])
    trip = inspect_dataset(make_triplet_shards(tmp_path, n=4))
    t, _ = next(batch_iterator(trip, DataConfig(batch_size=2, num_workers=0, resolution=16), 0))
    assert t["input"].shape == (2, 6, 16, 16) and t["target"].shape == (2, 3, 16, 16)
