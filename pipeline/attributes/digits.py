"""Attributes and features for the digits domain (the demo teacher ``builtin:digits-32``).

* :class:`DigitClassifier` -- registry name ``digit``: value = predicted class 0-9, confidence = its probability.
  A scikit-learn ``MLPClassifier`` (one hidden layer of 64 ReLU units, L-BFGS, ``random_state=0``) trained at first
  use (~1 s) on a stratified 70 % split of ``load_digits`` (:func:`kdpipe.pipeline.digits.split_indices`, seed 0)
  and scored on the other 30 % (``held_out_accuracy``). Deterministic.
* :class:`StrokeStatistics` -- registry name ``stroke``: ``ink`` = mean ink coverage in [0, 1] and ``stroke`` =
  stroke width in pixels of the 32x32 image, ``2 * sum(ink) / sum(|grad ink|)`` (a stroke of width t and length
  L has area ~ t L and perimeter ~ 2 L; the total variation of the ink map measures the perimeter).
* :func:`digit_features` -- the classifier's penultimate (hidden-layer) activations ``[N, 64]`` for FID-like
  distances on digits (:func:`frechet_distance`).

Input convention: images ``[N, 3, H, W]`` float in [-1, 1], white ink on black (as the teacher renders them);
ink = ``(luma + 1) / 2``. :func:`to_digit8` maps them back to the 8x8 0..16 space the classifier reads:
resize to 32x32 if needed, crop the central 24x24 (the digit area of :mod:`kdpipe.pipeline.digits`), average 3x3
blocks -> 8x8, times 16.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.pipeline.attributes.image_stats import REC601
from kdpipe.pipeline.attributes.protocol import ClassifierError, ClassifierOutput, check_images



def ink_map(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` in [-1, 1] -> ink ``[N, H, W]`` in [0, 1] (Rec.601 luma mapped by ``(y + 1) / 2``)."""
    x = check_images(images).detach().float().cpu()
    luma = sum(w * x[:, i] for i, w in enumerate(REC601))
    return ((luma + 1) / 2).clamp(0, 1)


def to_digit8(images: torch.Tensor) -> np.ndarray:
    """Teacher-convention digits ``[N, 3, H, W]`` -> float64 ``[N, 64]``: 8x8 intensities 0..16 (module doc)."""
    ink = ink_map(images).unsqueeze(1)
    if ink.shape[-1] != 32 or ink.shape[-2] != 32:
        ink = F.interpolate(ink, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    ink = F.avg_pool2d(ink[:, :, 4:28, 4:28], 3)
    return (ink.reshape(ink.shape[0], 64) * 16).double().numpy()


@dataclass
class DigitModel:
    """A fitted digit MLP and its held-out accuracy (fraction in [0, 1])."""

    mlp: object
    held_out_accuracy: float


def train_digit_model(train_idx: np.ndarray, test_idx: np.ndarray, seed: int = 0) -> DigitModel:
    """Fit the MLP on real digits ``train_idx`` (rendered at 32x32, read back through :func:`to_digit8`), score on
    ``test_idx``. Deterministic for a given seed."""
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    from kdpipe.pipeline.digits import real_digits

    x_tr, y_tr = real_digits(train_idx)
    x_te, y_te = real_digits(test_idx)
    mlp = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, solver="lbfgs", max_iter=300, random_state=seed)
    with threadpool_limits(1):  # one BLAS thread: ~1 s, and the same result on any machine load
        mlp.fit(to_digit8(x_tr) / 16, y_tr.numpy())
    acc = float((mlp.predict(to_digit8(x_te) / 16) == y_te.numpy()).mean())
    return DigitModel(mlp, acc)


@functools.lru_cache(maxsize=1)
def default_digit_model() -> DigitModel:
    """The shipped ``digit`` classifier: 70/30 stratified split, seed 0 (trained once per process)."""
    from kdpipe.pipeline.digits import split_indices

    return train_digit_model(*split_indices(0))


def digit_probabilities(images: torch.Tensor, model: DigitModel | None = None) -> np.ndarray:
    """Class probabilities ``[N, 10]`` float64 for teacher-convention digit images."""
    model = model or default_digit_model()
    return model.mlp.predict_proba(to_digit8(images) / 16)


def digit_features(images: torch.Tensor, model: DigitModel | None = None) -> np.ndarray:
    """Penultimate features ``[N, 64]`` float64: ``relu(x W1 + b1)`` of the digit MLP (for Fréchet distances)."""
    model = model or default_digit_model()
    mlp = model.mlp
    return np.maximum(to_digit8(images) / 16 @ mlp.coefs_[0] + mlp.intercepts_[0], 0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a [N, D]`` and ``b [M, D]`` (Heusel et al. 2017,
    the FID formula): ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, with 1e-6 added to the covariances'
    diagonals; in squared feature units."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    eps = np.eye(a.shape[1]) * 1e-6  # dead ReLU units make the covariances singular (pytorch-fid does the same)
    s_a, s_b = np.cov(a, rowvar=False) + eps, np.cov(b, rowvar=False) + eps
    covmean = linalg.sqrtm(s_a @ s_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean.real))


class DigitClassifier:
    """Attribute ``digit``: value = argmax class (float 0-9), confidence = its probability; always valid."""

    def __init__(self, attributes=("digit",)):
        if tuple(attributes) != ("digit",):
            raise ClassifierError(f"the digit classifier outputs ('digit',), not {tuple(attributes)!r}")
        self.attributes = ("digit",)

    def __call__(self, images: torch.Tensor) -> ClassifierOutput:
        p = digit_probabilities(images)
        n = p.shape[0]
        return ClassifierOutput(values={"digit": p.argmax(1).astype(np.float32)},
                                confidences={"digit": p.max(1).astype(np.float32)}, valid=np.ones(n, dtype=bool))


class StrokeStatistics:
    """Attributes ``ink`` (coverage in [0, 1]) and ``stroke`` (width in pixels); confidence 1; blank images
    (no ink edge) have stroke NaN and are not valid."""

    def __init__(self, attributes=("ink", "stroke")):
        attributes = tuple(attributes)
        if not attributes or any(a not in ("ink", "stroke") for a in attributes):
            raise ClassifierError(f"unknown stroke statistic(s) {attributes!r}; choose from ('ink', 'stroke')")
        self.attributes = attributes

    def __call__(self, images: torch.Tensor) -> ClassifierOutput:
        ink = ink_map(images)
        n = ink.shape[0]
        area = ink.sum(dim=(1, 2))
        edges = (ink[:, 1:] - ink[:, :-1]).abs().sum(dim=(1, 2)) + (ink[:, :, 1:] - ink[:, :, :-1]).abs().sum(dim=(1, 2))
        valid = (edges > 1e-6).numpy()
        values, conf = {}, {}
        if "ink" in self.attributes:
            values["ink"] = ink.mean(dim=(1, 2)).numpy().astype(np.float32)
            conf["ink"] = np.ones(n, np.float32)
        if "stroke" in self.attributes:
            width = torch.where(edges > 1e-6, 2 * area / edges.clamp_min(1e-6), torch.full_like(area, float("nan")))
            values["stroke"] = width.numpy().astype(np.float32)
            conf["stroke"] = valid.astype(np.float32)
        else:
            valid = np.ones(n, dtype=bool)
        return ClassifierOutput(values=values, confidences=conf, valid=valid)


def digit_report(images: torch.Tensor, model: DigitModel, min_prob: float = 0.8) -> dict:
    """How digit-like a batch is, for the demo teacher's quality floor (issue 13).

    Returns ``{"n", "confident": fraction with max prob >= min_prob, "class_fractions": [10 floats],
    "min_class_fraction"}`` under ``model`` (pass a classifier trained on another split than the shipped one).
    """
    p = digit_probabilities(images, model)
    counts = np.bincount(p.argmax(1), minlength=10)
    return {"n": int(p.shape[0]), "confident": float((p.max(1) >= min_prob).mean()),
            "class_fractions": (counts / p.shape[0]).round(4).tolist(), "min_class_fraction": float(counts.min() / p.shape[0])}
