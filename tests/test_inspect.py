"""Issue 17 item 5: ``kdpipe inspect`` writes a static page that renders in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow as pa
import pytest

from kdpipe.errors import ConfigError, DatasetError
from kdpipe.pipeline.inspect import build_inspect
from kdpipe.pipeline.stages.manifest import MANIFEST, write_parquet_bytes

from _p2p_fixtures import make_pair_shards, make_triplet_shards, write_sums

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
N = 120


def _manifest(task_dir: Path, n: int, per_shard: int) -> dict[str, list]:
    """A manifest like a face pairs task's: attributes, confidences, identity distance (NaN = no face), steps."""
    rng = np.random.default_rng(0)
    cols = {
        "key": [f"{i:08d}" for i in range(n)], "index": list(range(n)),
        "shard": [f"{task_dir.name}-{i // per_shard:06d}.tar" for i in range(n)],
        "direction": ["female->male" if i % 3 else "male->female" for i in range(n)],
        "src_gender_confidence": rng.uniform(0.5, 1, n).round(4).tolist(),
        "identity_distance": [float("nan") if i % 10 == 0 else float(v)
                              for i, v in enumerate(rng.uniform(0, 0.8, n).round(4))],
        "src_t": rng.choice([-1.0, -0.5, 0.0], n).tolist(), "tgt_t": rng.choice([0.5, 1.0], n).tolist(),
    }
    (task_dir / MANIFEST).write_bytes(write_parquet_bytes(pa.table(cols)))
    return cols


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("insp")
    task = make_pair_shards(root, n=N, size=32, per_shard=50, task="gender")
    return task, _manifest(task, N, 50)


def _stamp_mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_page_data_thumbnails_once_and_contact_sheet(dataset, tmp_path):
    task, cols = dataset
    out = tmp_path / "page"
    index = build_inspect(task, out, thumb_size=16, chunk_rows=50)
    assert index == out / "index.html" and "kdpipe inspect: gender" in index.read_text()
    assert sorted(p.name for p in (out / "data").iterdir()) == ["meta.js", "rows-0000.js", "rows-0001.js",
                                                                "rows-0002.js"]
    meta = json.loads(re.fullmatch(r"KDPIPE_INSPECT\.meta\((.*)\);\n", (out / "data/meta.js").read_text()).group(1))
    assert meta["total"] == N and meta["parts"] == ["src", "tgt"] and meta["chunks"] == 3
    kinds = {c["name"]: c for c in meta["columns"]}
    assert kinds["identity_distance"]["kind"] == "number" and kinds["direction"]["values"] == ["female->male",
                                                                                              "male->female"]
    assert kinds["src_t"]["min"] == min(cols["src_t"]) and kinds["key"]["values"] is None  # 120 distinct keys
    k, rows = json.loads("[" + re.fullmatch(r"KDPIPE_INSPECT\.rows\((.*)\);\n",
                                            (out / "data/rows-0002.js").read_text()).group(1) + "]")
    assert k == 2 and len(rows) == 20 and rows[0][0] == "00000100"
    assert rows[10][5] is None and rows[11][5] == cols["identity_distance"][111]  # NaN -> null
    thumbs = sorted((out / "thumbs").iterdir())
    assert [t.name for t in thumbs] == ["gender-000000", "gender-000001", "gender-000002"]
    assert sum(1 for t in thumbs for f in t.iterdir() if f.suffix == ".png") == 2 * N
    with PIL.Image.open(thumbs[1] / "00000060.tgt.png") as im, PIL.Image.open(
            _member(task / "shards/gender-000001.tar", "00000060.tgt.png")) as full:
        assert im.size == (16, 16)
        assert np.array_equal(np.asarray(im), np.asarray(full.resize((16, 16), PIL.Image.LANCZOS)))
    with PIL.Image.open(out / "contact_sheet.png") as sheet:  # 8 x 4 samples of 2 thumbnails, upscaled 4x
        assert sheet.size == (4 * (4 * (2 * 16 + 2 + 6) - 6), 4 * (8 * (16 + 2) - 2))
        assert np.array_equal(np.asarray(sheet.convert("RGB"))[:64:4, 64 + 8:128 + 8:4],
                              np.asarray(PIL.Image.open(thumbs[0] / "00000000.tgt.png").convert("RGB")))

    before = {t.name: _stamp_mtimes(t) for t in thumbs}
    build_inspect(task, out, thumb_size=16, chunk_rows=50)  # nothing changed: no thumbnail rewritten
    assert {t.name: _stamp_mtimes(t) for t in thumbs} == before
    # a changed shard (new sha256 in SHA256SUMS) gets new thumbnails; the others are kept
    changed = tmp_path / "changed"
    shutil.copytree(task, changed / "gender")
    make_pair_shards(changed / "other", n=50, size=32, per_shard=50, seed=5, task="gender")
    shutil.copy(changed / "other/gender/shards/gender-000000.tar", changed / "gender/shards/gender-000000.tar")
    write_sums(changed / "gender")
    shutil.copytree(out, changed / "page")
    build_inspect(changed / "gender", changed / "page", thumb_size=16, chunk_rows=50)
    assert _stamp_mtimes(changed / "page/thumbs/gender-000001") == before["gender-000001"]
    a = np.asarray(PIL.Image.open(changed / "page/thumbs/gender-000000/00000000.src.png"))
    assert not np.array_equal(a, np.asarray(PIL.Image.open(thumbs[0] / "00000000.src.png")))
    assert not list((changed / "page/thumbs").glob("*.tmp"))
    # thumbnails of shards no longer in the dataset, and leftovers of an interrupted run, are removed
    (changed / "page/thumbs/gender-000001.tmp").mkdir()
    (changed / "gender/shards/gender-000002.tar").unlink()
    (changed / "gender" / MANIFEST).write_bytes(write_parquet_bytes(pa.table(
        {k: v[:100] for k, v in cols.items()})))
    build_inspect(changed / "gender", changed / "page", thumb_size=16, chunk_rows=50)
    assert sorted(p.name for p in (changed / "page/thumbs").iterdir()) == ["gender-000000", "gender-000001"]
    assert sorted(p.name for p in (changed / "page/data").iterdir()) == ["meta.js", "rows-0000.js", "rows-0001.js"]


def _member(tar: Path, name: str):
    import io
    import tarfile

    with tarfile.open(tar) as tf:
        return io.BytesIO(tf.extractfile(name).read())


def test_triplets_with_the_cli_and_bad_input(tmp_path, cli):
    task = make_triplet_shards(tmp_path, n=6, per_shard=4)
    (task / MANIFEST).write_bytes(write_parquet_bytes(pa.table({
        "key": [f"{i:08d}" for i in range(6)], "shard": [f"style-mix-{i // 4:06d}.tar" for i in range(6)],
        "seed_x1": list(range(0, 12, 2)), "seed_x2": list(range(1, 12, 2))})))
    r = cli("inspect", task, "--thumb-size", "8")
    assert r.exit_code == 0, r.output
    assert (task / "inspect/index.html").resolve().as_uri() in r.output
    meta = (task / "inspect/data/meta.js").read_text()
    assert '"parts":["x1","x2","y"]' in meta and '"total":6' in meta
    assert len(list((task / "inspect/thumbs/style-mix-000001").glob("*.png"))) == 2 * 3

    r = cli("inspect", tmp_path / "nothing")
    assert r.exit_code == 2 and "no manifest.parquet" in r.output
    (task / "shards/style-mix-000001.tar").unlink()
    with pytest.raises(DatasetError, match="style-mix-000001.tar', which is missing"):
        build_inspect(task, tmp_path / "p2")
    (task / MANIFEST).write_bytes(write_parquet_bytes(pa.table({"key": ["a"], "shard": ["../../x.tar"]})))
    with pytest.raises(DatasetError, match="not a file name in shards/"):
        build_inspect(task, tmp_path / "p2")
    with pytest.raises(ConfigError, match="thumb_size=4 must be >= 8"):
        build_inspect(task, tmp_path / "p2", thumb_size=4)


# ------------------------------------------------------------------------------------------- browser

def _chromium(url: str, profile: Path, *extra: str) -> str:
    """Headless Chromium on ``url`` (virtual time lets the page's scripts and images finish); stdout."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--virtual-time-budget=10000", *extra, url]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _status(dom: str) -> dict[str, str]:
    tag = re.search(r'<span id="status"([^>]*)>([^<]*)<', dom)
    assert tag, dom[:2000]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', tag.group(1)))
    attrs["text"] = tag.group(2)
    return attrs


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package 'chromium'); CI installs it")
def test_page_renders_in_headless_chromium_and_filters_change_the_count(dataset, tmp_path):
    task, cols = dataset
    out = tmp_path / "page"
    build_inspect(task, out, thumb_size=32, chunk_rows=50)
    url = (out / "index.html").resolve().as_uri()
    dom = _chromium(url, tmp_path / "p1", "--dump-dom")
    s = _status(dom)
    assert (s["total"], s["filtered"], s["page"]) == (str(N), str(N), "1") and s["text"] == f"1–50 of {N} samples"
    imgs = re.findall(r'<img alt="([^"]+)" src="([^"]+)"', dom)
    assert len(imgs) == 100 and imgs[0] == ("00000000.src", "thumbs/gender-000000/00000000.src.png")
    assert s["images"] == s["images-loaded"] == "100"  # every thumbnail of the page decoded in the browser

    close = sum(1 for v in cols["identity_distance"] if v == v and v <= 0.3)
    s = _status(_chromium(url + "#f.identity_distance=..0.3", tmp_path / "p2", "--dump-dom"))
    assert 0 < close < N and s["filtered"] == str(close) and f"of {close} samples (filtered from {N})" in s["text"]
    male = cols["direction"].count("female->male")
    dom = _chromium(url + "#f.direction=female-%3Emale&sort=-src_gender_confidence&page=2", tmp_path / "p3",
                    "--dump-dom")
    s = _status(dom)
    assert s["filtered"] == str(male) and s["page"] == "2"
    conf = sorted((c for c, d in zip(cols["src_gender_confidence"], cols["direction"]) if d == "female->male"),
                  reverse=True)
    first = re.search(r"<tbody><tr>(.*?)</tr>", dom).group(1)
    assert f"<td>{float(f'{conf[50]:.4g}'):g}</td>" in first  # page 2 starts at the 51st highest confidence

    shot = Path(os.environ.get("KDPIPE_INSPECT_SCREENSHOT", tmp_path / "inspect.png"))
    _chromium(url, tmp_path / "p4", "--window-size=1400,1000", f"--screenshot={shot}")
    with PIL.Image.open(shot) as im:
        assert im.size == (1400, 1000) and np.asarray(im.convert("L")).std() > 10  # not a blank page
