"""Advisory file locks (``fcntl.flock``): released by the kernel when the holder dies, so a crash never leaves
a stale lock behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from kdpipe.errors import KdpipeError


class LockedError(KdpipeError):
    """Another live process holds the run lock of this output directory."""


@contextlib.contextmanager
def hold_run_lock(out: Path, rank: int = 0):
    """One run per output directory and rank: fail at once if another live process holds it.

    Raises:
        LockedError: naming the directory and the holder's pid.
    """
    path = Path(out) / (".run.lock" if rank == 0 else f".run.rank{rank}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise LockedError(f"another kdpipe run (pid {holder}) is writing '{out}'; wait for it to finish or "
                              "stop it (the lock is released when that process exits)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(path: Path):
    """Blocking exclusive lock on ``path`` (serialises exclusive stages across ranks)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
