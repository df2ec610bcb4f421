"""``kdpipe generate --seeds`` / ``render.seeds`` / ``pairs.seeds``: a seed list instead of a base seed and a count.

Sample i depends only on (list, i); a single run is the same config, fingerprint and bytes as --seed/-n; any
spelling of the same list fingerprints alike; other lists reach the samples' json and the manifest."""

from __future__ import annotations

import json
import tarfile

import pyarrow.parquet as pq
import pytest

from conftest import dataset_bytes
from kdpipe.errors import ConfigError
from kdpipe.pipeline.config import PairsConfig, RenderConfig
from kdpipe.pipeline.latents import format_seeds, parse_seeds, sample_seeds

BASE = ["generate", "--task", "style-mix", "--generator", "builtin:random-16", "--no-progress",
        "--set", "render.shard_size=2"]


def gen(cli, out, *extra):
    res = cli(*BASE, "--out", out, *extra)
    assert res.exit_code == 0, res.output
    return [line.split()[0] for line in res.stdout.splitlines() if line.split()[0] in ("skip", "run", "resume")]


def test_seed_list_config_is_canonical():
    run = RenderConfig(seeds="10-19")
    assert (run.seed, run.n, run.seeds) == (10, 5, None)  # == --seed 10 -n 5
    listed = RenderConfig(seeds="0,1,2,3,100-101")
    assert (listed.seed, listed.n, listed.seeds) == (0, 3, "0-3,100-101")
    assert [sample_seeds(listed.seed, i, 2, listed.seeds) for i in range(3)] == [[0, 1], [2, 3], [100, 101]]
    assert (PairsConfig(seeds="7,3").n, PairsConfig(seeds="7,3").seeds) == (2, "7,3")
    with pytest.raises(ConfigError, match="multiple of 2"):
        RenderConfig(seeds="0-2")
    assert parse_seeds(format_seeds([5, 6, 7, 9, 11, 12, 4])) == [5, 6, 7, 9, 11, 12, 4]


def test_a_seed_run_is_the_same_dataset_as_seed_and_n(tmp_path, cli):
    assert gen(cli, tmp_path / "a", "--seeds", "6-13") == ["run"] * 3
    assert gen(cli, tmp_path / "b", "--seed", "6", "-n", "4") == ["run"] * 3
    assert dataset_bytes(tmp_path / "a" / "style-mix") == dataset_bytes(tmp_path / "b" / "style-mix")
    assert gen(cli, tmp_path / "a", "--seed", "6", "-n", "4") == ["skip"] * 3  # same fingerprint


def test_a_seed_list_reaches_the_samples_and_resumes_by_its_canonical_form(tmp_path, cli):
    assert gen(cli, tmp_path, "--seeds", "0-3,100-101") == ["run"] * 3
    task = tmp_path / "style-mix"
    with tarfile.open(task / "shards" / "style-mix-000001.tar") as tf:
        meta = json.loads(tf.extractfile("00000002.json").read())
    assert meta["seeds"] == [100, 101] and meta["index"] == 2
    manifest = pq.read_table(task / "manifest.parquet").to_pydict()
    assert manifest["seed_x1"] == [0, 2, 100] and manifest["seed_x2"] == [1, 3, 101]
    assert gen(cli, tmp_path, "--seeds", "0,1,2,3,100,101") == ["skip"] * 3
    assert gen(cli, tmp_path, "--seeds", "0-3,100,102") == ["run"] * 3


def test_seeds_with_seed_or_n_is_refused(tmp_path, cli):
    for extra in (["-n", "3"], ["--seed", "4"]):
        res = cli(*BASE, "--out", tmp_path, "--seeds", "0-5", *extra)
        assert res.exit_code == 2 and "replaces --seed and -n" in res.stderr
    res = cli(*BASE, "--out", tmp_path, "--seeds", "0-4")
    assert res.exit_code == 2 and "multiple of 2" in res.stderr
    assert not (tmp_path / "style-mix").exists()
