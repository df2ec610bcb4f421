"""Real handwritten digits at StyleGAN resolution: scikit-learn's ``load_digits`` upsampled to 32x32.

Source: the UCI "Optical Recognition of Handwritten Digits" test set as shipped inside scikit-learn
(``sklearn.datasets.load_digits``; 1,797 images of 8x8 pixels, 17 intensity levels 0..16, classes 0-9;
licence CC BY 4.0; no download). Used to train the demo teacher ``builtin:digits-32`` and the digit
classifier of :mod:`kdpipe.pipeline.attributes.digits`.

Upsampling (deterministic, CPU): intensities ``v / 16`` in [0, 1] (ink = 1) -> bicubic
(``torch.nn.functional.interpolate``, ``align_corners=False``) from 8x8 to 24x24 -> clamp to [0, 1] ->
zero pad of 4 pixels on every side (black border, so digits do not touch the frame, as in MNIST) -> 32x32 ->
``x * 2 - 1`` in [-1, 1], white ink on black, copied to 3 channels (grey as RGB, what every teacher renders).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

DIGITS_LEVELS = 16  # load_digits intensities are integers 0..16
DIGITS_RESOLUTION = 32
_INNER = 24  # upsampled digit side; (32 - 24) / 2 = 4 px border


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def upsample_digits(images8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """8x8 digits with intensities 0..16 ``[N, 8, 8]`` -> float32 ``[N, 3, 32, 32]`` in [-1, 1] (module doc)."""
    x = torch.as_tensor(np.asarray(images8, dtype=np.float32)).reshape(-1, 1, 8, 8) / DIGITS_LEVELS
    x = F.interpolate(x, size=(_INNER, _INNER), mode="bicubic", align_corners=False).clamp(0, 1)
    pad = (DIGITS_RESOLUTION - _INNER) // 2
    x = F.pad(x, [pad, pad, pad, pad], value=0.0)
    return (x * 2 - 1).repeat(1, 3, 1, 1)


def real_digits(indices: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All (or the selected) real digits as ``(images float32 [N, 3, 32, 32] in [-1, 1], labels int64 [N])``."""
    images, labels = _load()
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return upsample_digits(images), torch.from_numpy(labels.copy())


def split_indices(seed: int, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified ``(train, test)`` index split of the 1,797 digits (sklearn train_test_split)."""
    from sklearn.model_selection import train_test_split

    _, labels = _load()
    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(test)
