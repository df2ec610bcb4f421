"""Feature extractors for FID/KID/precision-recall, batched on a chosen device with a progress bar.

* ``inception`` -- torch-fidelity's ``FeatureExtractorInceptionV3`` (the TF-2015 Inception-v3 graph; 2048-d
  pool features, the layer FID/KID/PR use). Resize protocol: torch-fidelity's own -- uint8 images at their
  native size are resized to 299x299 inside the network with TF1-compatible bilinear interpolation; nothing is
  resized before (seed 002 evaluates at 256 px: pass 256 px images). Float images are first quantised to uint8
  with NVlabs' convention (:func:`kdpipe.images.to_uint8`), as a saved PNG would be, so features of a tensor and
  of its PNG files agree. Weights: ``weights-inception-2015-12-05-6726825d.pth`` from a path or torch hub's cache
  (:mod:`kdpipe.trainers.metrics.weights`).
* ``digits`` -- the demo domain's digit-classifier penultimate activations ``[N, 64]``
  (:func:`kdpipe.pipeline.attributes.digits.digit_features`), meaningful offline on ``builtin:digits-32``.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from kdpipe.errors import ConfigError
from kdpipe.images import to_float, to_uint8
from kdpipe.trainers.metrics.weights import INCEPTION_FILE, INCEPTION_URL, MissingWeightsError, resolve_weights

KINDS = ("digits", "inception")


@dataclass(frozen=True)
class FeatureExtractor:
    """A feature network: ``fn`` maps a batch ``[B, 3, H, W]`` (uint8, or float in [-1, 1]) to ``[B, dim]``.

    ``sha256`` identifies its weights (the weights file's sha256 for inception; of the fitted MLP's parameters
    for digits): results JSON and the feature cache key name it.
    """

    kind: str
    dim: int
    sha256: str
    fn: Callable[[torch.Tensor], np.ndarray]


def _digits_extractor() -> FeatureExtractor:
    from kdpipe.pipeline.attributes.digits import default_digit_model, digit_features

    model = default_digit_model()
    h = hashlib.sha256()
    for arr in (*model.mlp.coefs_, *model.mlp.intercepts_):
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())

    def fn(batch: torch.Tensor) -> np.ndarray:
        return digit_features(to_float(batch) if batch.dtype == torch.uint8 else batch, model)

    return FeatureExtractor("digits", int(model.mlp.coefs_[0].shape[1]), h.hexdigest(), fn)


@functools.lru_cache(maxsize=4)
def _inception_extractor(path: Path, device: str) -> FeatureExtractor:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from kdpipe.fsutil import file_sha256

    try:  # refuse pickled code before torch-fidelity's own torch.load(weights_only=False) reads the file
        torch.load(path, map_location="cpu", weights_only=True)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    except Exception as exc:
        raise MissingWeightsError(f"{str(path)!r} is not torch-fidelity's {INCEPTION_FILE} "
                                  f"({type(exc).__name__}: {str(exc)[:120]}); download {INCEPTION_URL}") from None
    net = net.to(device)

    @torch.no_grad()
    def fn(batch: torch.Tensor) -> np.ndarray:
        u8 = batch if batch.dtype == torch.uint8 else to_uint8(batch).permute(0, 3, 1, 2)
        return net(u8.to(device))[0].cpu().numpy()

    return FeatureExtractor("inception", 2048, file_sha256(path), fn)


def get_extractor(kind: str = "digits", weights_path: str | Path | None = None, device="cpu") -> FeatureExtractor:
    """The extractor ``kind`` ("digits" | "inception") on ``device``; inception is built once per (file, device).

    Raises:
        ConfigError: unknown kind.
        MissingWeightsError: inception weights absent or not the official file.
    """
    if kind == "digits":
        return _digits_extractor()
    if kind == "inception":
        path = resolve_weights(weights_path, INCEPTION_FILE, INCEPTION_URL, "--inception-weights")
        return _inception_extractor(path.resolve(), str(torch.device(device)))
    raise ConfigError(f"unknown feature extractor {kind!r}; choose from {KINDS}")


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        yield from images.split(batch_size)
    else:
        yield from images


def extract_features(images: torch.Tensor | Iterable[torch.Tensor], kind: str = "digits",
                     weights_path: str | Path | None = None, device="cpu", batch_size: int = 64,
                     progress: bool = False, total: int | None = None,
                     extractor: FeatureExtractor | None = None, stats: dict | None = None) -> np.ndarray:
    """Features ``[N, D]`` (float32 for inception, float64 for digits) of ``images``.

    images: ``[N, 3, H, W]`` float in [-1, 1] or uint8 in [0, 255], or an iterable of such batches (then
        ``total`` = N sizes the progress bar). A tensor is cut into batches of ``batch_size``.
    extractor: reuse one from :func:`get_extractor` (else built from ``kind``, ``weights_path``, ``device``).
    stats: if given, filled with ``images``, ``seconds`` and ``images_per_s`` (throughput of this call).
    Raises ConfigError for non-``[B, 3, H, W]`` batches or an empty set; see :func:`get_extractor`.
    """
    from tqdm import tqdm

    extractor = extractor or get_extractor(kind, weights_path, device)
    if isinstance(images, torch.Tensor):
        total = images.shape[0]
    out, t0 = [], time.perf_counter()
    with tqdm(total=total, disable=not progress, unit="img", desc=f"{extractor.kind} features") as bar:
        for batch in _batches(images, batch_size):
            if batch.ndim != 4 or batch.shape[1] != 3:
                raise ConfigError(f"features need [B, 3, H, W] image batches, got {tuple(batch.shape)}; "
                                  "convert grayscale/RGBA images to RGB")
            out.append(np.asarray(extractor.fn(batch)))
            bar.update(batch.shape[0])
    if not out:
        raise ConfigError("no images to extract features from; check the image source")
    feats = np.concatenate(out)
    seconds = time.perf_counter() - t0
    if stats is not None:
        stats.update(images=len(feats), seconds=seconds, images_per_s=len(feats) / max(seconds, 1e-9))
    return feats
