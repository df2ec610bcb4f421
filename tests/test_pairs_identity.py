"""Issue 14: per-pair identity distance in the pairs stage (json, manifest, card) and the max_identity_distance filter.

The teacher is the tiny builtin:random-32 (no faces): the real dlib path runs and finds none (null distances); the
filter is checked with a content-based stand-in for dlib's descriptors (patched into the identity module) so that
distances differ and can be recomputed from the stored PNGs. dlib itself on a real face: test_faces_identity.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from kdpipe.errors import ConfigError
from kdpipe.pipeline.config import PairsConfig

pytest.importorskip("dlib")

TINY = ["--generator", "builtin:random-32", "--no-progress", "--set", "sample.n=300", "--set", "pairs.n=20",
        "--set", "pairs.shard_size=10", "--set", "classify.part_size=100"]


def fake_embed(images: np.ndarray, detect_side: int = 512):
    """Stand-in for dlib: embedding = 4 x the mean RGB in [0, 1]; "no face" where the image is bluer than red."""
    mean = images.reshape(len(images), -1, 3).astype(np.float64).mean(axis=1) / 255  # [N, 3]
    emb = np.zeros((len(images), 128), np.float32)
    emb[:, :3] = 4 * mean
    found = mean[:, 0] >= mean[:, 2]
    emb[~found] = np.nan
    return emb, found


def samples(task):
    out = []
    for tar in sorted((task / "shards").glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            out.append((json.loads(s["json"]), *(np.asarray(Image.open(io.BytesIO(s[k])).convert("RGB"))
                                                 for k in ("src.png", "tgt.png"))))
    return out


def expected_distance(src, tgt):
    (a, b), _ = fake_embed(np.stack([src, tgt]))
    d = float(np.linalg.norm(a - b))
    return None if not np.isfinite(d) else round(d, 6)


def run(cli, out, *extra):
    res = cli("generate", "--task", "brightness", "--out", out, *TINY, *extra)
    assert res.exit_code == 0, res.output
    return [line.split()[:2] for line in res.stdout.splitlines()[:6]]


def test_pairs_record_and_filter_identity(tmp_path, cli, monkeypatch):
    task = tmp_path / "brightness"
    run(cli, tmp_path)  # auto on a non-face classifier: not measured, nothing written
    assert all("identity_distance" not in info for info, _, _ in samples(task))
    assert "identity_distance" not in pq.read_table(task / "manifest.parquet").column_names
    assert "identity" not in (task / "README.md").read_text().lower()

    actions = run(cli, tmp_path, "--set", "pairs.identity=always")  # the real dlib path: no faces at 32 px
    assert actions[:4] == [["skip", "sample"], ["skip", "classify"], ["skip", "directions"], ["run", "pairs"]]
    got = samples(task)
    assert got and all(info["identity_distance"] is None for info, _, _ in got)
    assert "dlib found no face in any of the" in (task / "README.md").read_text()

    import kdpipe.pipeline.attributes.identity as identity

    monkeypatch.setattr(identity, "embed_faces", fake_embed)
    dists = [expected_distance(s, t) for _, s, t in got]
    limit = float(np.median([d for d in dists if d is not None]))
    run(cli, tmp_path, "--set", f"pairs.max_identity_distance={limit}")  # auto: the filter turns identity on
    kept = samples(task)
    for info, s, t in kept:
        assert info["identity_distance"] == expected_distance(s, t)
        assert info["identity_distance"] <= limit
    assert len(kept) == sum(d is not None and d <= limit for d in dists) < len(got)
    manifest = pq.read_table(task / "manifest.parquet").to_pylist()
    assert [r["identity_distance"] for r in manifest] == [info["identity_distance"] for info, _, _ in kept]
    filters = json.loads((task / "stages" / "pairs.json").read_text())["summary"]["filters"]
    assert filters["pairs.identity_rejected"] == len(got) - len(kept)
    assert filters["pairs.kept"] + filters["pairs.identity_rejected"] + filters["pairs.no_valid_pair"] + \
        filters["pairs.source_unusable"] == filters["pairs.candidates"]
    card = (task / "README.md").read_text()
    assert f"measured on {len(kept)} of {len(kept)} pairs" in card and '"max_identity_distance"' in card


def test_identity_config_errors():
    with pytest.raises(ConfigError, match="pairs.identity='on' is not one of auto, always, never"):
        PairsConfig(identity="on")
    with pytest.raises(ConfigError, match="max_identity_distance=0.0 must be > 0"):
        PairsConfig(max_identity_distance=0.0)
    with pytest.raises(ConfigError, match="pairs.identity=never"):
        PairsConfig(identity="never", max_identity_distance=0.6)
