"""Errors kdpipe reports to users as one line (the CLI prints ``str(err)`` without a traceback)."""


class KdpipeError(ValueError):
    """Base class: a user-facing problem with input, config or state; the message says what, which value, what to do."""


class CheckpointError(KdpipeError):
    """A generator checkpoint is missing, unreadable, unsafe or of an unknown layout."""


class ConfigError(KdpipeError):
    """A config field has an unknown key, a wrong type or an out-of-range value."""


class DatasetError(KdpipeError):
    """A dataset (shards, manifest, card) is missing, incomplete, corrupt or of the wrong task."""
