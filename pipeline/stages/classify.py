"""Stage ``classify`` of pair tasks (seed 002 "Dataset generation", step 2): attributes of the sampled latents.

Renders each seed of ``sample`` (the same uint8 image that would be stored), classifies it at
``sample.resolution``; resumable parquet parts ``classify/part-NNNNNN.parquet`` (one row per sample: index,
seed, valid, face probability and box, each attribute's value and confidence).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kdpipe.fsutil import atomic_write
from kdpipe.images import hwc_to_float
from kdpipe.pipeline.attributes.labels import classify_images, make_classifier
from kdpipe.pipeline.render import Renderer
from kdpipe.pipeline.runner.sharded import ShardedStage
from kdpipe.pipeline.runner.shards import record_done
from kdpipe.pipeline.runner.stage import Context
from kdpipe.pipeline.stages.manifest import read_parquet

CLASSIFY_BLOCK = 16  # images per classifier call in `classify`, aligned to the part start


class ClassifyStage(ShardedStage):
    """``classify``: per-sample attributes in resumable parquet parts (see module docstring)."""

    name = "classify"
    sections = ("teacher", "sample", "attribute", "classify")
    schema_version = 1
    unit = "parts"

    def shard_dir(self, ctx: Context) -> Path:
        return ctx.out / "classify"

    def part_name(self, ctx: Context, k: int) -> str:
        return f"part-{k:06d}.parquet"

    def n_items(self, ctx: Context) -> int:
        return ctx.cfg.sample.n

    def shard_size(self, ctx: Context) -> int:
        return ctx.cfg.classify.part_size

    def write_one(self, ctx: Context, k: int, indices: range, path: Path, progress, fingerprint: str) -> None:
        sc = ctx.cfg.sample
        if getattr(self, "_clf", None) is None:
            self._clf = make_classifier(ctx.cfg.attribute, ctx.device)
        r = Renderer.from_config(ctx.teacher.G, ctx.device, ctx.cfg.teacher, ctx.cfg.runtime.batch_size)
        seeds = [sc.seed + i for i in indices]
        step = CLASSIFY_BLOCK  # fixed, not runtime.batch_size: classifier output may depend on batch composition
        parts = []
        for a in range(0, len(seeds), step):
            images = hwc_to_float(r.images(r.ws_from_seeds(seeds[a:a + step])))
            parts.append(classify_images(self._clf, images, sc.resolution))
            progress.update(len(seeds[a:a + step]))
        cols = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        table = pa.table({"index": np.asarray(list(indices), dtype=np.int64), "seed": np.asarray(seeds, np.int64),
                          **cols})
        atomic_write(path, lambda f: pq.write_table(table, f, compression="zstd"))
        record_done(path, len(seeds), fingerprint)


def read_classified(out: Path) -> dict[str, np.ndarray]:
    """All classify parts of ``OUT/<task>`` concatenated, as columns (index order)."""
    parts = sorted((out / "classify").glob("part-*.parquet"))
    table = pa.concat_tables([read_parquet(p) for p in parts])
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
