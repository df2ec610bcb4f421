"""Seed 002's age directions: per-bin vectors for "k bins older / younger" (step 5), each a
:func:`kdpipe.pipeline.attributes.directions.find_direction` between a bin and its target bin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdpipe.pipeline.attributes.directions import DirectionError, _check_vec, _check_w, find_direction, select_confident


@dataclass
class AgeBinDirections:
    """Per-bin vectors for "k bins older / younger" (seed 002 step 5).

    steps: e.g. (2, -2). vectors: [n_bins, len(steps), w_dim] float32; vectors[k, j] moves a
    latent of bin k to bin targets[k, j] (zeros where targets[k, j] == -1: no populated bin
    in that direction). report: JSON-serialisable (counts per bin, per (bin, step) entries).
    """

    attribute: str
    method: str
    steps: tuple[int, ...]
    vectors: np.ndarray
    targets: np.ndarray
    report: dict[str, Any]

    def vector(self, bin_index: int, step: int) -> np.ndarray | None:
        """The vector for a latent in ``bin_index`` moving ``step`` bins; None if no target bin."""
        j = self.steps.index(step)
        return None if self.targets[bin_index, j] < 0 else self.vectors[bin_index, j]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "attribute": self.attribute,
            "method": self.method,
            "steps": list(self.steps),
            "vectors": self.vectors.tolist(),
            "targets": self.targets.tolist(),
            "report": self.report,
        }


def age_bin_directions(
    w: np.ndarray,
    bins: np.ndarray,
    *,
    n_bins: int,
    steps: Sequence[int] = (2, -2),
    confidence: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    min_confidence: float = 0.0,
    min_count: int = 10,
    method: str = "mean-diff",
    test_fraction: float = 0.2,
    seed: int = 0,
    attribute: str = "age",
) -> AgeBinDirections:
    """Seed 002's age vectors: for each source bin k and step s, delta = C_t - C_k.

    w: [N, w_dim]; bins: [N] int bin index (-1 or NaN-derived = unknown); confidence / valid
    as in find_direction. A bin is populated if it has >= min_count selected samples.
    The target t is bin k + s when populated; at the edges or next to empty bins it is the
    furthest populated bin between k (exclusive) and k + s in the step's direction, clipped
    to [0, n_bins - 1] (so the oldest-but-one bin's "+2" goes one bin up); if none exists the
    entry is absent (target -1, zero vector). Each entry is ``find_direction`` between bins k
    and t (method default 'mean-diff' as in the paper).
    Report: counts {bin: n}, min_count, steps, entries [{source, step, target, clipped,
    held_out_accuracy, norm, centre_gap, counts}].
    Raises DirectionError on bad shapes or if fewer than two bins are populated.
    """
    w = _check_w(w)
    bins = _check_vec("bins", np.nan_to_num(np.asarray(bins, dtype=np.float64), nan=-1), w.shape[0], np.int64)
    if bins.max(initial=-1) >= n_bins:
        raise DirectionError(f"bin index {int(bins.max())} >= n_bins {n_bins}; pass n_bins = len(age_bin_edges) - 1")
    steps = tuple(int(s) for s in steps)
    if not steps or 0 in steps:
        raise DirectionError(f"steps {list(steps)} must be non-zero bin offsets, e.g. (2, -2)")
    keep = select_confident(bins, confidence, valid, min_confidence=min_confidence)
    counts = np.bincount(bins[keep], minlength=n_bins)
    populated = counts >= min_count
    if populated.sum() < 2:
        raise DirectionError(
            f"{attribute!r}: fewer than 2 age bins have >= {min_count} confident samples (counts {counts.tolist()}); "
            "lower min_count / min_confidence or classify more latents"
        )
    vectors = np.zeros((n_bins, len(steps), w.shape[1]), dtype=np.float32)
    targets = np.full((n_bins, len(steps)), -1, dtype=np.int64)
    entries = []
    conf = None if confidence is None else np.asarray(confidence)
    for k in np.flatnonzero(populated):
        for j, s in enumerate(steps):
            sign = 1 if s > 0 else -1
            reach = range(int(np.clip(k + s, 0, n_bins - 1)), k, -sign)  # from k+s back toward k
            t = next((b for b in reach if populated[b]), None)
            if t is None:
                continue
            d = find_direction(
                w, bins, source=int(k), target=int(t), method=method, confidence=conf, valid=valid,
                min_confidence=min_confidence, test_fraction=test_fraction, seed=seed, attribute=attribute,
            )
            vectors[k, j], targets[k, j] = d.vector, t
            r = d.report
            entries.append({
                "source": int(k), "step": s, "target": int(t), "clipped": bool(t != k + s),
                "held_out_accuracy": r["held_out_accuracy"], "norm": r["norm"], "centre_gap": r["centre_gap"],
                "counts": r["counts"],
            })
    report = {
        "attribute": attribute, "method": method, "n_bins": int(n_bins), "steps": list(steps),
        "counts": {str(b): int(c) for b, c in enumerate(counts)}, "min_count": int(min_count),
        "min_confidence": float(min_confidence), "seed": int(seed), "entries": entries,
    }
    return AgeBinDirections(attribute, method, steps, vectors, targets, report)
