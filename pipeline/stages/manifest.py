"""Stage ``manifest``: ``manifest.parquet``, one row per sample in shard order (byte-reproducible: no timestamps)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kdpipe.errors import DatasetError
from kdpipe.fsutil import atomic_write_bytes
from kdpipe.pipeline.runner.shards import SHARD_DIR, list_shards, read_record
from kdpipe.pipeline.runner.stage import Context, SingleStage

MANIFEST = "manifest.parquet"


def manifest_table(out: Path) -> pa.Table:
    """All shard records' rows of ``OUT/<task>``, in shard order, as one flat table.

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


class ManifestStage(SingleStage):
    """``manifest``: ``manifest.parquet`` with one row per sample (key, shard, index, seeds, attributes...)."""

    name = "manifest"
    sections = ()
    schema_version = 1

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.out / MANIFEST]

    def run(self, ctx: Context, fingerprint: str) -> dict:
        table = manifest_table(ctx.out)
        atomic_write_bytes(ctx.out / MANIFEST, write_parquet_bytes(table))
        return {"rows": table.num_rows, "columns": table.column_names}
