"""Training checkpoints: atomic writes, safe loads, discovery of the latest one, RNG state capture.

A checkpoint is one ``torch.save`` file ``<run_dir>/checkpoints/ckpt-<step:08d>.pt`` holding a dict::

    {"format": "kdpipe-train", "version": 1, "trainer": "pix2pixhd", "step": int,
     "config": nested dict (resolved config), "trainer_state": {"models", "optimizers", "ema", ...},
     "rng": capture_rng_state(), "data": {"epoch": int, "offset": int}, "scaler": dict | None}

Everything is tensors, numbers, strings and containers, so it loads with ``torch.load(weights_only=True)``:
nothing in a checkpoint is ever executed. Written with :func:`kdpipe.fsutil.atomic_write` (temporary file, fsync,
``os.replace``), so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdpipe.errors import CheckpointError
from kdpipe.fsutil import atomic_write

FORMAT = "kdpipe-train"
VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


class TrainCheckpointError(CheckpointError):
    """A training checkpoint is missing, unreadable, of another trainer, or of an unknown format."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """``<run_dir>/checkpoints/ckpt-<step:08d>.pt``."""
    return checkpoint_dir(run_dir) / f"ckpt-{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest step first (``*.tmp`` leftovers are ignored)."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``run_dir``, or None if there is none."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(state: dict[str, Any], path: str | Path, keep: int | None = None) -> Path:
    """Write ``state`` atomically to ``path`` (:func:`kdpipe.fsutil.atomic_write`: temporary file, fsync, rename).

    Args:
        state: the checkpoint dict (see module docstring); "format"/"version" are added.
        path: destination, normally :func:`checkpoint_path`.
        keep: if given, delete all but the ``keep`` newest ``ckpt-*.pt`` files in the same directory.
    Returns:
        ``path`` as a Path.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, lambda f: torch.save({"format": FORMAT, "version": VERSION, **state}, f))
    if keep is not None:
        for old in list_checkpoints(p.parent.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return p


def load_checkpoint(path: str | Path, trainer: str | None = None) -> dict[str, Any]:
    """Load a training checkpoint safely (``weights_only=True``, tensors mapped to CPU).

    Args:
        path: a ``ckpt-*.pt`` file written by :func:`save_checkpoint`.
        trainer: if given, the checkpoint must have been written by this trainer (e.g. ``"pix2pixhd"``).
    Raises:
        TrainCheckpointError: file missing, unreadable/truncated/corrupt, not a kdpipe training
            checkpoint, a newer format version, or written by another trainer.
    """
    p = Path(path)
    if p.is_dir():
        raise TrainCheckpointError(f"checkpoint {str(p)!r} is a directory (a training run?); pass one of its "
                                   "ckpt-*.pt files")
    if not p.is_file():
        raise TrainCheckpointError(f"checkpoint {str(p)!r} does not exist; pass an existing ckpt-*.pt file")
    try:
        with warnings.catch_warnings():  # a plain pickle (e.g. a teacher .pkl) warns about its protocol first
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, unsafe global: all mean "cannot use this file"
        teacher = _teacher_format(p)
        if teacher:
            raise TrainCheckpointError(f"{str(p)!r} is a StyleGAN2 teacher ({teacher}), not a trainer checkpoint; "
                                       "pass a ckpt-*.pt written by 'kdpipe train'") from None
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TrainCheckpointError(
            f"checkpoint {str(p)!r} is unreadable or corrupt ({type(exc).__name__}: {reason}); pass another "
            "ckpt-*.pt (to resume an interrupted run from the previous one, move this file out of the run "
            "directory)") from None
    if isinstance(state, dict) and ("g_ema" in state or "style.1.weight" in state):
        raise TrainCheckpointError(f"{str(p)!r} is a StyleGAN2 teacher (rosinality), not a trainer checkpoint; "
                                   "pass a ckpt-*.pt written by 'kdpipe train'")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainCheckpointError(f"{str(p)!r} is not a kdpipe training checkpoint (no format={FORMAT!r} field)")
    if int(state.get("version", 0)) > VERSION:
        raise TrainCheckpointError(
            f"checkpoint {str(p)!r} has format version {state['version']}, newer than this kdpipe ({VERSION}); "
            "upgrade kdpipe")
    if trainer is not None and state.get("trainer") != trainer:
        raise TrainCheckpointError(
            f"checkpoint {str(p)!r} was written by trainer {state.get('trainer')!r}, not {trainer!r}")
    for key in ("step", "config", "trainer_state"):
        if key not in state:
            raise TrainCheckpointError(f"checkpoint {str(p)!r} lacks the {key!r} entry; it cannot be resumed")
    return state


def _teacher_format(path: Path) -> str | None:
    """The StyleGAN2 checkpoint format of ``path`` ('nvlabs-tf', ...) if the teacher loader reads it, else None
    (used only to word an error: a teacher pickle passed where a training checkpoint belongs)."""
    from kdpipe.errors import KdpipeError
    from kdpipe.pipeline.teacher.formats.checkpoints import load_checkpoint as load_teacher_checkpoint

    try:
        return load_teacher_checkpoint(path).format
    except KdpipeError:
        return None


def capture_rng_state() -> dict[str, Any]:
    """RNG states of Python ``random``, NumPy's global RNG, torch CPU and all CUDA devices.

    Returns a dict of tensors/ints/lists that survives ``torch.load(weights_only=True)``.
    """
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states restored only if the device count matches)."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
