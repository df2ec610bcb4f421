"""Feature cache: features of an image set stored once per (content, extractor), so comparing many students
against one reference extracts the reference's features once.

Key: sha256 of the extractor kind, its weights' sha256 and :func:`content_hash` of the uint8 images (shape and
bytes, in order). Value: ``<root>/<key>.npy`` (the ``[N, D]`` array), written atomically (a crash never leaves
a truncated file that later reads as features). Default root: ``$KDPIPE_CACHE/features``, else
``~/.cache/kdpipe/features``.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kdpipe.fsutil import atomic_write_bytes


def default_cache_dir() -> Path:
    """``$KDPIPE_CACHE/features`` if set, else ``~/.cache/kdpipe/features``."""
    root = os.environ.get("KDPIPE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "kdpipe") / "features"


def content_hash(images_u8: torch.Tensor) -> str:
    """Hex sha256 of a uint8 image tensor's shape and bytes (order matters)."""
    h = hashlib.sha256(repr(tuple(images_u8.shape)).encode())
    h.update(images_u8.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """Features on disk under ``root`` (None = :func:`default_cache_dir`); ``hits``/``misses`` count lookups."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = self.misses = 0

    def path(self, images_hash: str, kind: str, extractor_sha256: str) -> Path:
        """Cache file of (image content, extractor kind, extractor weights)."""
        key = hashlib.sha256(f"{kind}\n{extractor_sha256}\n{images_hash}".encode()).hexdigest()
        return self.root / f"{key}.npy"

    def get_or_compute(self, images_hash: str, kind: str, extractor_sha256: str,
                       compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached features, or ``compute()`` stored then returned. An unreadable cache file is recomputed."""
        p = self.path(images_hash, kind, extractor_sha256)
        if p.is_file():
            try:
                feats = np.load(p, allow_pickle=False)
                self.hits += 1
                return feats
            except (OSError, ValueError):
                pass  # corrupt entry (disk trouble): recompute and overwrite
        self.misses += 1
        feats = compute()
        p.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, feats, allow_pickle=False)
        atomic_write_bytes(p, buf.getvalue())
        return feats
