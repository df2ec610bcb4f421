"""Attribute directions in W from classified latents (seed 002 step 4; InterFaceGAN).

Inputs are ``w`` [N, w_dim] float32 numpy (one w per sample; pass ``ws[:, 0]``) and integer
class labels [N] from a classifier, optionally with confidences [N] in [0, 1] and a valid
mask [N] bool. Methods for moving from class ``source`` to class ``target``:

- ``mean-diff`` (default; seed 002, step 4): class centres C_k = mean of the confidently
  classified w of class k; delta = C_target - C_source (not normalised: its length is the
  step from one class centre to the other, applied as w + delta, w + delta / 2, ...).
- ``logreg``: logistic regression as in seed 002's released code: scikit-learn
  ``LogisticRegression(class_weight='balanced')`` on the same samples; the vector is the raw
  (unnormalised) ``coef_`` times :data:`LOGREG_STEP` = 1.5, the released code's edit step, so
  ``t = 1`` in ``pairs.steps`` is its edit ``w + 1.5 coef_``.
- ``svm``: linear SVM (scikit-learn ``LinearSVC``; InterFaceGAN, Shen et al. CVPR 2020,
  ``train_boundary`` used ``SVC(kernel='linear')`` on the most confident samples, which
  gives the same hyperplane but scales quadratically in N); unit normal pointing to ``target``.

``project_out`` is InterFaceGAN's conditional manipulation (Sec. 2.2, Eq. 4 / its
``project_boundary``): remove the components along other attributes' directions so the
result is orthogonal to them. Seed 002's per-bin age vectors ("two bins older / younger", step 5) are
:mod:`kdpipe.pipeline.attributes.age_bins`.

Every direction carries a JSON-serialisable report: class counts, held-out accuracy of the
linear separation (the same method fit on a stratified train split with a fixed seed and
tested on the rest), the vector norm and the centre gap along the unit direction. The
returned vector itself is fit on all selected samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdpipe.errors import KdpipeError

__all__ = [
    "LOGREG_STEP",
    "METHODS",
    "Direction",
    "DirectionError",
    "binary_labels",
    "find_direction",
    "project_out",
    "select_confident",
]

METHODS = ("mean-diff", "logreg", "svm")
LOGREG_STEP = 1.5  # seed 002's released code moved latents by 1.5 * coef_ of its balanced logistic regression


class DirectionError(KdpipeError):
    """Latents, labels or options cannot give a direction (wrong shapes, too few samples)."""


@dataclass
class Direction:
    """A direction in W for one attribute.

    vector: [w_dim] float32; move a latent from class ``source`` to ``target`` by adding it.
    report: JSON-serialisable dict (counts, held_out_accuracy, norm, centre_gap, options).
    """

    attribute: str
    method: str
    source: int
    target: int
    vector: np.ndarray
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (vector as a list of floats)."""
        return {
            "attribute": self.attribute,
            "method": self.method,
            "source": self.source,
            "target": self.target,
            "vector": [float(v) for v in self.vector],
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Direction:
        """Inverse of to_dict."""
        return cls(
            attribute=d["attribute"],
            method=d["method"],
            source=int(d["source"]),
            target=int(d["target"]),
            vector=np.asarray(d["vector"], dtype=np.float32),
            report=dict(d["report"]),
        )


def binary_labels(probability: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Probability of class 1 [N] (e.g. p_male) -> (labels [N] int64 in {0, 1}, confidence [N]).

    label = p >= threshold; confidence = max(p, 1 - p). NaN probabilities give label -1 and
    confidence 0 (never selected).
    """
    p = np.asarray(probability, dtype=np.float64)
    labels = np.where(np.isnan(p), -1, (p >= threshold).astype(np.int64))
    conf = np.where(np.isnan(p), 0.0, np.maximum(p, 1 - p))
    return labels.astype(np.int64), conf.astype(np.float32)


def _check_w(w: Any) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] == 0:
        hint = "; pass ws[:, 0] for [N, num_ws, w_dim] latents" if w.ndim == 3 else ""
        raise DirectionError(f"w must be a [N, w_dim] array, got shape {list(w.shape)}{hint}")
    if not np.isfinite(w).all():
        raise DirectionError("w contains NaN or inf; check the latents file")
    return w.astype(np.float32, copy=False)


def _check_vec(name: str, x: Any, n: int, dtype: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.shape != (n,):
        raise DirectionError(f"{name} must have shape [{n}] to match w, got {list(x.shape)}")
    return x.astype(dtype, copy=False)


def select_confident(
    labels: np.ndarray,
    confidence: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    *,
    min_confidence: float = 0.0,
    max_per_class: int | None = None,
) -> np.ndarray:
    """Mask [N] bool of samples to use (seed 002 step 3; InterFaceGAN's most confident samples).

    Keeps valid samples with label >= 0 and confidence >= min_confidence; then, if
    max_per_class is set, only the max_per_class most confident of each class (ties by index).
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    keep = labels >= 0
    if valid is not None:
        keep &= _check_vec("valid", valid, n, bool)
    conf = np.ones(n, np.float32) if confidence is None else _check_vec("confidence", confidence, n, np.float32)
    keep &= conf >= min_confidence
    if max_per_class is not None:
        for k in np.unique(labels[keep]):
            idx = np.flatnonzero(keep & (labels == k))
            order = idx[np.argsort(-conf[idx], kind="stable")]
            keep[order[max_per_class:]] = False
    return keep


def _fit(method: str, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Fit on x [M, D], y [M] in {0, 1}. Returns (vector [D], offset, unit normal [D]) such that
    the decision is ``x @ unit - offset > 0`` -> class 1."""
    if method == "mean-diff":
        c0, c1 = x[y == 0].mean(axis=0, dtype=np.float64), x[y == 1].mean(axis=0, dtype=np.float64)
        delta = c1 - c0
        norm = np.linalg.norm(delta)
        unit = delta / norm if norm > 0 else delta
        return delta, float(unit @ (c0 + c1) / 2), unit
    if method == "logreg":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed).fit(x, y)
    elif method == "svm":
        from sklearn.svm import LinearSVC

        model = LinearSVC(C=1.0, dual="auto", max_iter=20000, random_state=seed).fit(x, y)
    else:
        raise DirectionError(f"unknown direction method {method!r}; choose from {METHODS}")
    coef = model.coef_[0].astype(np.float64)
    norm = np.linalg.norm(coef)
    unit = coef / norm if norm > 0 else coef
    offset = float(-model.intercept_[0] / norm) if norm > 0 else 0.0
    return (LOGREG_STEP * coef if method == "logreg" else unit), offset, unit


def find_direction(
    w: np.ndarray,
    labels: np.ndarray,
    *,
    source: int = 0,
    target: int = 1,
    method: str = "mean-diff",
    confidence: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    min_confidence: float = 0.0,
    max_per_class: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    attribute: str = "attribute",
) -> Direction:
    """Direction in W from class ``source`` to class ``target``.

    w: [N, w_dim] float32; labels: [N] int class per sample (-1 = unknown); confidence: [N]
    in [0, 1] (None = all 1); valid: [N] bool (None = all). Samples are chosen by
    ``select_confident`` and only classes source/target are used. method: 'mean-diff'
    (vector = C_target - C_source, seed 002), 'logreg' (1.5 * raw coef_ of a class-balanced
    logistic regression, seed 002's released code) or 'svm' (unit normal toward target).
    Held-out accuracy: the method refit on a stratified (1 - test_fraction) split
    (scikit-learn train_test_split, random_state=seed) and tested on the rest; the returned
    vector is fit on all selected samples.
    Report keys: attribute, method, source, target, counts {class: n}, n_train, n_test,
    held_out_accuracy, norm, centre_gap (= (C_target - C_source) . unit vector), min_confidence,
    max_per_class, test_fraction, seed, w_dim.
    Raises DirectionError on bad shapes, an unknown method, or fewer than 2 selected samples
    in a class (the message gives the counts and what to change).
    """
    if method not in METHODS:
        raise DirectionError(f"unknown direction method {method!r}; choose from {METHODS}")
    if not 0.0 < test_fraction < 1.0:
        raise DirectionError(f"test_fraction {test_fraction} must be in (0, 1)")
    w = _check_w(w)
    labels = _check_vec("labels", labels, w.shape[0], np.int64)
    keep = select_confident(labels, confidence, valid, min_confidence=min_confidence, max_per_class=max_per_class)
    keep &= (labels == source) | (labels == target)
    x, y = w[keep].astype(np.float64), (labels[keep] == target).astype(np.int64)
    counts = {str(source): int((y == 0).sum()), str(target): int((y == 1).sum())}
    if min(counts.values()) < 2:
        raise DirectionError(
            f"attribute {attribute!r}: too few confident samples per class for a direction ({counts}, "
            f"min_confidence={min_confidence}); lower min_confidence or classify more latents"
        )
    from sklearn.model_selection import train_test_split

    n_test = max(2, int(round(test_fraction * len(y))))
    tr, te = train_test_split(np.arange(len(y)), test_size=n_test, stratify=y, random_state=seed)
    _, offset, unit = _fit(method, x[tr], y[tr], seed)
    accuracy = float(((x[te] @ unit - offset > 0).astype(np.int64) == y[te]).mean())
    vector, _, unit = _fit(method, x, y, seed)
    gap = float((x[y == 1].mean(axis=0) - x[y == 0].mean(axis=0)) @ unit)
    report = {
        "attribute": attribute,
        "method": method,
        "source": int(source),
        "target": int(target),
        "counts": counts,
        "n_train": int(len(tr)),
        "n_test": int(len(te)),
        "held_out_accuracy": accuracy,
        "norm": float(np.linalg.norm(vector)),
        "centre_gap": gap,
        "min_confidence": float(min_confidence),
        "max_per_class": max_per_class,
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "w_dim": int(w.shape[1]),
    }
    return Direction(attribute, method, int(source), int(target), vector.astype(np.float32), report)


def project_out(
    direction: Direction, others: Sequence[Direction | np.ndarray], *, keep_norm: bool = True
) -> Direction:
    """Conditional direction: remove the components along other attributes' directions.

    InterFaceGAN (Shen et al., CVPR 2020, Sec. 2.2 "conditional manipulation"): n1 - (n1 . n2) n2
    for one condition; for several, the projection onto the orthogonal complement of their
    span (least squares, so the conditions need not be orthogonal). The result is orthogonal
    to every removed direction. keep_norm=True rescales it to the original length (InterFaceGAN
    renormalises unit normals; for a mean-diff delta this keeps the step length).
    Report adds: conditioned_on (attributes or 'vector<i>'), cosine_with_original,
    residual_cosines (with each removed direction, ~0), norm.
    Raises DirectionError for w_dim mismatch or if the direction lies in the removed span.
    """
    v = direction.vector.astype(np.float64)
    names, cols = [], []
    for i, o in enumerate(others):
        vec = o.vector if isinstance(o, Direction) else np.asarray(o)
        names.append(o.attribute if isinstance(o, Direction) else f"vector{i}")
        if vec.shape != v.shape:
            raise DirectionError(
                f"cannot project {direction.attribute!r} (shape {v.shape}) against {names[-1]} (shape {vec.shape})"
            )
        cols.append(vec.astype(np.float64))
    if not cols:
        return direction
    basis = np.stack(cols, axis=1)  # [w_dim, k]
    coef, *_ = np.linalg.lstsq(basis, v, rcond=None)
    out = v - basis @ coef
    out_norm = np.linalg.norm(out)
    if out_norm < 1e-8 * max(np.linalg.norm(v), 1e-30):
        raise DirectionError(
            f"direction {direction.attribute!r} lies in the span of {names}; nothing is left after projection"
        )
    if keep_norm:
        out *= np.linalg.norm(v) / out_norm
    unit = out / np.linalg.norm(out)
    report = dict(direction.report)
    report.update(
        conditioned_on=names,
        cosine_with_original=float(unit @ v / np.linalg.norm(v)),
        residual_cosines={n: float(unit @ c / np.linalg.norm(c)) for n, c in zip(names, cols)},
        norm=float(np.linalg.norm(out)),
    )
    d = direction
    return Direction(d.attribute, d.method, d.source, d.target, out.astype(np.float32), report)
