"""Errors kdpipe reports to users as one line (the CLI prints ``str(err)`` without a traceback)."""


class KdpipeError(ValueError):
    """Base class: a user-facing problem with input, config or state; the message says what, which value, what to do."""


class CheckpointError(KdpipeError):
    """A generator checkpoint is missing, unreadable, unsafe or of an unknown layout."""


class ConfigError(KdpipeError):
    """A config field has an unknown key, a wrong type or an out-of-range value."""


class DatasetError(KdpipeError):
    """A dataset (shards, manifest, card) is missing, incomplete, corrupt or of the wrong task."""


def report_user_errors(fn):
    """Decorator for CLI commands: a KdpipeError becomes one ``error: <message>`` line on stderr and exit code 2.

    ``KDPIPE_DEBUG=1`` re-raises instead (full traceback). typer is imported lazily (only when an error occurs).
    """
    import functools
    import os

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KdpipeError as exc:
            if os.environ.get("KDPIPE_DEBUG"):
                raise
            import typer

            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper
