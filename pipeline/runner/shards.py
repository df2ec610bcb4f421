"""Byte-reproducible webdataset shards, written atomically, with per-shard done records.

A shard ``shards/<task>-<k:06d>.tar`` is written as ``<name>.tar.<pid>.tmp``, flushed and fsync'd, then renamed
(:func:`kdpipe.fsutil.atomic_write`);
only then is its record ``shards/.done/<name>.json`` written (sample count, bytes, sha256, stage fingerprint and
the manifest rows of its samples). A shard without a matching record is not done and is redone by a re-run.

Tars are reproducible: members sorted per sample (webdataset ``TarWriter``'s bytes, written by
:class:`~kdpipe.pipeline.runner.tarwrite.SampleTarWriter`), mtime 0, uid/gid 0, fixed user
and group names and mode, PNGs encoded by :func:`encode_png` with a fixed encoder (and level), JSON with sorted
keys, ``.npy`` via ``np.save``. Anything that reads webdataset reads these shards without kdpipe.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from kdpipe.errors import ConfigError, DatasetError
from kdpipe.fsutil import atomic_write, atomic_write_bytes, file_sha256
from kdpipe.pipeline.runner.tarwrite import SampleTarWriter

SHARD_DIR = "shards"
DONE_DIR = ".done"


PNG_ENCODERS = ("fpng", "pillow")


def fpng_available() -> bool:
    """Whether the ``fpng`` package (PyPI ``fpng``, a binding of richgel999/fpng) imports here."""
    try:
        import fpng  # noqa: F401
    except ImportError:
        return False
    return True


def encode_png(image: np.ndarray, compress_level: int = 1, encoder: str = "fpng") -> bytes:
    """PNG bytes of an RGB image, lossless; deterministic for a given encoder build (and level for Pillow).

    ``fpng`` (the default) is 12-26x faster than Pillow level 1 and its files are ~20 % larger
    (benchmarks/README.md); both decode to exactly ``image``. The bytes differ between encoders, so the encoder
    is part of a stage's config and fingerprint.

    Args:
        image: ``[H, W, 3]`` uint8.
        compress_level: zlib level 0-9, Pillow only (1 = fast with most of the size gain).
        encoder: ``'fpng'`` or ``'pillow'``.
    Raises:
        ConfigError: unknown ``encoder``.
        ImportError: ``encoder='fpng'`` where fpng is not installed (``generate`` falls back to Pillow first).
    """
    if encoder == "fpng":
        import fpng
        return fpng.from_ndarray(np.ascontiguousarray(image))
    if encoder != "pillow":
        raise ConfigError(f"png encoder {encoder!r} is not one of {', '.join(PNG_ENCODERS)}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def resolve_png_encoder(cfg, log=print) -> str | None:
    """Fall back to Pillow where ``fpng`` is asked for but cannot be imported; edits ``cfg`` in place.

    Every section with a ``png_encoder`` field (``render``, ``pairs``) that says ``'fpng'`` becomes ``'pillow'``,
    so the stage fingerprints name the encoder that really writes the bytes. Logs once.
    Args:
        cfg: the resolved :class:`kdpipe.pipeline.config.PipelineConfig`.
    Returns:
        a one-line note of the fallback (for ``run.json``), or ``None`` when nothing changed.
    """
    asked = [s for s in ("render", "pairs") if cfg.section(s).png_encoder == "fpng"]
    if not asked or fpng_available():
        return None
    for section in asked:
        cfg.section(section).png_encoder = "pillow"
    note = (f"fpng is not installed: {', '.join(s + '.png_encoder' for s in asked)} fall back to Pillow "
            f"(slower, other bytes, same pixels); 'pip install fpng' to use it")
    log(note)
    return note


def encode_npy(array: np.ndarray) -> bytes:
    """``np.save`` bytes of an array (e.g. latents ``[k, num_ws, w_dim]`` float32)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_json(obj: dict) -> bytes:
    """Canonical JSON bytes (sorted keys, no whitespace variance)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def shard_name(task: str, k: int) -> str:
    """``<task>-<k:06d>.tar``; the name webdataset brace patterns expect (``<task>-{000000..000123}.tar``)."""
    return f"{task}-{k:06d}.tar"


@dataclass(frozen=True)
class ShardRecord:
    """What a finished shard holds: ``count`` samples, ``bytes`` size, ``sha256`` of the file, the ``fingerprint``
    of the stage that wrote it, the manifest ``rows`` (one flat dict per sample) and free ``stats`` (e.g. filter
    counts of a selecting stage)."""

    name: str
    count: int
    bytes: int
    sha256: str
    fingerprint: str
    rows: list
    stats: dict = field(default_factory=dict)


def write_shard(path: Path, samples: Iterable[dict], fingerprint: str, rows: list,
                stats: dict | None = None) -> ShardRecord:
    """Write samples to ``path`` atomically and record it as done.

    Args:
        path: final ``.tar`` path (its directory must exist).
        samples: dicts ``{"__key__": str, "<ext>": bytes, ...}``.
        fingerprint: stage fingerprint stored in the done record.
        rows: manifest rows for these samples (JSON-serialisable flat dicts).
        stats: extra counts kept in the record.
    Returns:
        The :class:`ShardRecord`, also saved to ``<dir>/.done/<name>.json``.
    """
    count = 0

    def write(f) -> None:
        nonlocal count
        writer = SampleTarWriter(f, user="kdpipe", group="kdpipe", mode=0o644, mtime=0)  # webdataset's bytes
        for sample in samples:
            writer.write(sample)
            count += 1
        writer.close()

    atomic_write(path, write)
    return record_done(path, count, fingerprint, rows, stats)


def record_done(path: Path, count: int, fingerprint: str, rows: list | None = None,
                stats: dict | None = None) -> ShardRecord:
    """Record the finished file ``path`` (any format) as done: ``<dir>/.done/<name>.json`` with its sha256."""
    record = ShardRecord(path.name, count, path.stat().st_size, file_sha256(path), fingerprint, rows or [],
                         stats or {})
    done = path.parent / DONE_DIR
    done.mkdir(exist_ok=True)
    atomic_write_bytes(done / (path.name + ".json"), encode_json(record.__dict__))
    return record


def read_record(shard_dir: Path, name: str) -> ShardRecord | None:
    """The done record of shard ``name``, or ``None`` if absent or unreadable."""
    p = shard_dir / DONE_DIR / (name + ".json")
    try:
        return ShardRecord(**json.loads(p.read_bytes()))
    except (OSError, ValueError, TypeError):
        return None


def shard_state(shard_dir: Path, name: str, fingerprint: str, check_hash: bool = False) -> str:
    """``'done'``, ``'missing'`` (no file or no record), ``'stale'`` (other fingerprint) or ``'corrupt'``
    (size differs from the record, or with ``check_hash`` the sha256 differs)."""
    rec = read_record(shard_dir, name)
    path = shard_dir / name
    if rec is None or not path.exists():
        return "missing"
    if rec.fingerprint != fingerprint:
        return "stale"
    if path.stat().st_size != rec.bytes or (check_hash and file_sha256(path) != rec.sha256):
        return "corrupt"
    return "done"


def list_shards(shard_dir: Path) -> list[Path]:
    """Finished shard files in ``shard_dir`` (sorted), excluding temporaries.

    Raises:
        DatasetError: the directory does not exist.
    """
    if not shard_dir.is_dir():
        raise DatasetError(f"no shard directory at '{shard_dir}'; run 'kdpipe generate' first")
    return sorted(p for p in shard_dir.glob("*.tar"))
