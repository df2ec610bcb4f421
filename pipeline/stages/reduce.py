"""Reduce stages that run once over all shards: ``manifest`` (manifest.parquet) and ``card`` (README.md dataset
card + SHA256SUMS). Both are byte-reproducible: rows in shard order, no timestamps, canonical encodings."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kdpipe.pipeline.card import render_card
from kdpipe.errors import DatasetError
from kdpipe.fsutil import atomic_write_bytes, file_sha256
from kdpipe.pipeline.runner.shards import SHARD_DIR, list_shards, read_record

MANIFEST = "manifest.parquet"
CARD = "README.md"
SUMS = "SHA256SUMS"


def manifest_table(out: Path) -> pa.Table:
    """All shard records' rows, in shard order, as one flat table.

    Raises:
        DatasetError: a shard has no done record (the render stage is not finished).
    """
    rows = []
    shard_dir = out / SHARD_DIR
    for path in list_shards(shard_dir):
        rec = read_record(shard_dir, path.name)
        if rec is None:
            raise DatasetError(f"shard '{path}' has no done record; re-run 'kdpipe generate' to finish it")
        rows.extend(rec.rows)
    return pa.Table.from_pylist(rows)


def write_parquet_bytes(table: pa.Table) -> bytes:
    """Parquet bytes of ``table`` (zstd, no statistics timestamps; deterministic for one pyarrow version)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_parquet(source) -> pa.Table:
    """A whole parquet file (path, or bytes-like / file object) as a table, read on the calling thread.

    ``pq.read_table`` goes through Arrow's dataset scanner, whose worker threads can still be alive when the
    interpreter exits; under CPU load that aborts the process with exit 134 ("terminate called without an
    active exception", apache/arrow#34314, #39862) after the work is done. ``ParquetFile.read(use_threads=False)``
    starts no scanner and no thread pool.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = pa.BufferReader(source)
    with pq.ParquetFile(source, pre_buffer=False) as f:
        return f.read(use_threads=False)


class ManifestStage:
    """``manifest``: ``manifest.parquet`` with one row per sample (key, shard, index, seeds, attributes...)."""

    name = "manifest"
    sections = ()
    schema_version = 1
    device_dependent = False
    sharded = False

    def outputs(self, ctx) -> list[Path]:
        return [ctx.out / MANIFEST]

    def run(self, ctx) -> dict:
        table = manifest_table(ctx.out)
        atomic_write_bytes(ctx.out / MANIFEST, write_parquet_bytes(table))
        return {"rows": table.num_rows, "columns": table.column_names}


class CardStage:
    """``card``: the dataset card ``README.md`` (YAML front matter for dataset hubs) and ``SHA256SUMS`` over the
    shards, the manifest and the card."""

    name = "card"
    sections = ("teacher", "card")
    schema_version = 1
    device_dependent = False
    sharded = False

    def outputs(self, ctx) -> list[Path]:
        return [ctx.out / CARD, ctx.out / SUMS]

    def run(self, ctx) -> dict:
        table = read_parquet(ctx.out / MANIFEST)
        summaries = {}
        for name in ctx.cfg["stages"]:
            state_path = ctx.out / "stages" / f"{name}.json"
            if state_path.exists():
                summaries[name] = json.loads(state_path.read_text()).get("summary", {})
        teacher = ctx.teacher()
        card = render_card(ctx.cfg, table, teacher.name, teacher.sha256, teacher.format, summaries)
        atomic_write_bytes(ctx.out / CARD, card.encode())
        files = [p.relative_to(ctx.out) for p in list_shards(ctx.out / SHARD_DIR)]
        files += [Path(MANIFEST), Path(CARD)]
        sums = "".join(f"{file_sha256(ctx.out / f)}  {f.as_posix()}\n" for f in files)
        atomic_write_bytes(ctx.out / SUMS, sums.encode())
        return {"files": len(files)}
