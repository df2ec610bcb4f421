"""Errors kdpipe reports to users as one line (the CLI prints ``str(err)`` without a traceback)."""


class KdpipeError(ValueError):
    """Base class: a user-facing problem with input, config or state; the message says what, which value, what to do."""


class CheckpointError(KdpipeError):
    """A generator checkpoint is missing, unreadable, unsafe or of an unknown layout."""


class ConfigError(KdpipeError):
    """A config field has an unknown key, a wrong type or an out-of-range value."""


class DatasetError(KdpipeError):
    """A dataset (shards, manifest, card) is missing, incomplete, corrupt or of the wrong task."""


class StorageError(KdpipeError):
    """The file system refused a read or write the user can fix: disk full, not a directory, permission..."""


_OS_HINTS = {
    "ENOSPC": "no space left on the device; free space and re-run (finished work is kept)",
    "EDQUOT": "disk quota exceeded; free space and re-run (finished work is kept)",
    "ENOTDIR": "a part of this path is a file, not a directory; pass another path",
    "EISDIR": "it is a directory; pass a file",
    "EEXIST": "it exists and is not a directory; pass another path or move the file",
    "EACCES": "permission denied; pick a location you can write to",
    "EPERM": "operation not permitted; pick a location you can write to",
    "EROFS": "the file system is read-only; pick a writable location",
    "ENOENT": "it does not exist",
}


def storage_error(exc: OSError) -> StorageError | None:
    """A user-fixable OSError (errno in ENOSPC, EDQUOT, ENOTDIR, EISDIR, EEXIST, EACCES, EPERM, EROFS, ENOENT) as
    a one-line :class:`StorageError` naming the path and what to do; ``None`` for any other OSError."""
    import errno

    name = errno.errorcode.get(exc.errno or -1, "")
    if name not in _OS_HINTS:
        return None
    paths = " -> ".join(repr(str(p)) for p in (exc.filename, exc.filename2) if p is not None) or "(no path)"
    return StorageError(f"{paths}: {exc.strerror or name} ({name}): {_OS_HINTS[name]}")


def report_user_errors(fn):
    """Decorator for CLI commands: a KdpipeError, or a user-fixable OSError (:func:`storage_error`), becomes one
    ``error: <message>`` line on stderr and exit code 2.

    ``KDPIPE_DEBUG=1`` re-raises instead (full traceback). typer is imported lazily (only when an error occurs).
    """
    import functools
    import os

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (KdpipeError, OSError) as exc:
            message = exc if isinstance(exc, KdpipeError) else storage_error(exc)
            if message is None or os.environ.get("KDPIPE_DEBUG"):
                raise
            import typer

            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None

    return wrapper
