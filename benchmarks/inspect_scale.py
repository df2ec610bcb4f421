"""``kdpipe inspect`` on a 50,000-sample dataset: thumbnail time (first run, cached re-run), page size, and
how long headless Chromium takes to show the first page, a filtered view and a sorted last page.

    python benchmarks/inspect_scale.py [-n 50000] [--size 64] [--thumb-size 96] [--work DIR] [--json PATH]

The dataset is synthetic (pair shards, 1,000 samples per shard, whose PNGs cycle through 500 distinct smooth
images of tests/_p2p_fixtures.py, so writing it is fast; a face-task-like manifest with confidences, identity
distance and latent steps), so the page, not the teacher, is measured; every thumbnail is still decoded and
resized. Chromium times are wall-clock for the whole ``chromium --headless --dump-dom`` process, start-up
included; ``blank_page_s`` is the same for an empty page, to subtract.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _p2p_fixtures import colour_edit, png, smooth_image  # noqa: E402

from kdpipe.pipeline.inspect import build_inspect  # noqa: E402
from kdpipe.pipeline.stages.manifest import MANIFEST, write_parquet_bytes  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=60000", "--dump-dom"]


def chromium(url: str, profile: Path) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([shutil.which("chromium"), *FLAGS, f"--user-data-dir={profile}", url],
                         capture_output=True, text=True, timeout=600).stdout
    status = re.search(r'<span id="status"[^>]*>([^<]*)<', out)
    return time.perf_counter() - t, status.group(1) if status else "(no status)"


def write_shards(task: Path, n: int, size: int, per_shard: int = 1000, distinct: int = 500) -> None:
    """``task/shards/gender-%06d.tar``: pair samples (src.png, tgt.png, json) cycling through ``distinct`` images."""
    import webdataset as wds

    rng = np.random.default_rng(0)
    pool = []
    for _ in range(distinct):
        src = smooth_image(rng, size)
        pool.append((png(src), png(colour_edit(src))))
    (task / "shards").mkdir(parents=True, exist_ok=True)
    for k in range(0, n, per_shard):
        with wds.TarWriter(str(task / "shards" / f"gender-{k // per_shard:06d}.tar")) as w:
            for i in range(k, min(k + per_shard, n)):
                src, tgt = pool[i % distinct]
                w.write({"__key__": f"{i:08d}", "src.png": src, "tgt.png": tgt, "json": b"{}"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--thumb-size", type=int, default=96)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="inspect-scale-"))
    task = work / "gender"
    t = time.perf_counter()
    if not (task / MANIFEST).is_file():
        write_shards(task, a.n, a.size)
        rng = np.random.default_rng(0)
        (task / MANIFEST).write_bytes(write_parquet_bytes(pa.table({
            "key": [f"{i:08d}" for i in range(a.n)], "index": list(range(a.n)),
            "shard": [f"gender-{i // 1000:06d}.tar" for i in range(a.n)],
            "direction": ["female->male" if i % 2 else "male->female" for i in range(a.n)],
            "src_gender_confidence": rng.uniform(0.5, 1, a.n), "tgt_gender_confidence": rng.uniform(0.5, 1, a.n),
            "identity_distance": rng.uniform(0, 0.9, a.n), "src_t": rng.choice([-1.0, -0.5, 0.0], a.n),
            "tgt_t": rng.choice([0.5, 1.0], a.n)})))
    res = {"n": a.n, "image_px": a.size, "thumb_size": a.thumb_size, "dataset_s": time.perf_counter() - t}
    page = work / "page"
    t = time.perf_counter()
    index = build_inspect(task, page, thumb_size=a.thumb_size)
    res["inspect_first_s"] = time.perf_counter() - t
    t = time.perf_counter()
    build_inspect(task, page, thumb_size=a.thumb_size)
    res["inspect_cached_s"] = time.perf_counter() - t
    res["data_bytes"] = sum(p.stat().st_size for p in (page / "data").iterdir())
    res["thumb_bytes"] = sum(p.stat().st_size for p in (page / "thumbs").rglob("*.png"))
    if shutil.which("chromium"):
        blank = work / "blank.html"
        blank.write_text("<html><body><span id=\"status\">blank</span></body></html>")
        url = index.resolve().as_uri()
        for name, u in (("blank_page", blank.resolve().as_uri()), ("first_page", url),
                        ("filtered", url + "#f.identity_distance=..0.1&f.direction=female-%3Emale"),
                        ("sorted_last_page", url + "#sort=-identity_distance&page=1000")):
            seconds, status = chromium(u, work / f"profile-{name}")
            res[f"{name}_s"], res[f"{name}_status"] = seconds, status
    print(json.dumps(res, indent=1))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
