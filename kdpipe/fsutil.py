"""Small file helpers shared by the pipeline and the trainers: content hashes and atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Callable


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on ``<path>.<pid>.tmp``, fsync, then ``os.replace`` it onto ``path``.

    Readers see the old file or the whole new one, never a prefix; processes writing the same file at once
    (ranks) do not collide on the temporary name; if ``write`` or the file system fails (ENOSPC...), the
    temporary file is removed and the exception propagates, leaving ``path`` as it was.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
