"""FID, KID and precision/recall on feature arrays, computed by torch-fidelity's own feature-level functions.

kdpipe only extracts features (:mod:`kdpipe.trainers.metrics.features`) and checks inputs; the formulas are
torch-fidelity 0.4's, so a value here equals ``torch_fidelity.calculate_metrics`` on the same features:

* FID (Heusel et al. 2017): ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, the trace of the square
  root from the eigenvalues of ``S_a S_b`` (torch-fidelity ``fid_statistics_to_metric``).
* KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel ``(x.y / D + 1)^3`` over
  ``subsets`` random subsets of ``subset_size`` rows of each set (numpy ``RandomState(seed)``); mean and std.
* Precision/recall (Kynkaanniemi et al. 2019): k-NN balls, ``a`` = generated, ``b`` = real.
"""

from __future__ import annotations

import numpy as np
import torch

from kdpipe.errors import ConfigError


def _check(a: np.ndarray, b: np.ndarray, min_rows: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(f"{what} needs two [N, D] feature arrays with the same D, got {a.shape} and {b.shape}; "
                          "extract both with the same feature extractor")
    if min(len(a), len(b)) < min_rows:
        raise ConfigError(f"{what} needs at least {min_rows} images per set, got {len(a)} and {len(b)}; "
                          "evaluate more images (--n)")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError(f"{what}: the features contain NaN or inf; check the images and the extractor's weights")
    return torch.from_numpy(a), torch.from_numpy(b)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between feature sets ``a [N, D]`` and ``b [M, D]`` (N, M >= 2), in squared feature units; 0 for a set
    against itself (up to float error). Raises ConfigError on mismatched shapes, too few rows or non-finite values."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    ta, tb = _check(a, b, 2, "FID")
    if ta.dtype != tb.dtype:
        ta, tb = ta.double(), tb.double()
    return float(fid_statistics_to_metric(fid_features_to_statistics(ta), fid_features_to_statistics(tb),
                                          verbose=False)["frechet_inception_distance"])


def kid_from_features(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over ``subsets``) between ``a [N, D]`` (generated) and ``b [M, D]`` (reference).

    ``subset_size`` is clamped to ``min(N, M)`` (torch-fidelity refuses instead); the clamped size is what the
    evaluation JSON records as ``n``. Seed 000 reports it x100 ("mKID x 100").
    """
    from torch_fidelity.metric_kid import kid_features_to_metric

    ta, tb = _check(a, b, 2, "KID")
    if subsets < 1:
        raise ConfigError(f"KID subsets must be >= 1, got {subsets}")
    size = min(int(subset_size), len(ta), len(tb))
    out = kid_features_to_metric(ta, tb, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False)
    return float(out["kernel_inception_distance_mean"]), float(out["kernel_inception_distance_std"])


def precision_recall(a: np.ndarray, b: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (fractions in [0, 1]) of generated features ``a [N, D]`` against reference
    features ``b [M, D]`` with ``k``-nearest-neighbour balls; needs N, M > k."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    ta, tb = _check(a, b, k + 1, "precision/recall")
    if ta.dtype != tb.dtype:
        ta, tb = ta.double(), tb.double()
    out = prc_features_to_metric(ta, tb, prc_neighborhood=k, verbose=False)
    return float(out["precision"]), float(out["recall"])


# ------------------------------------------------------------------------- registry entries (kdpipe eval)

def compute_fid(ctx) -> dict[str, float]:
    """``fid`` (and ``mfid``, ``mfid_classes`` per class) of ctx's generated vs reference features."""
    a, b = ctx.features("generated"), ctx.features("reference")
    out = {"fid": fid_from_features(a, b)}
    out.update(ctx.per_class(lambda x, y: {"fid": fid_from_features(x, y)}, "m"))
    return out


def compute_kid(ctx) -> dict[str, float]:
    """``kid``, ``kid_std`` (and per class ``mkid``, ``mkid_std``); seed 000 reports KID x 100."""
    o = ctx.options

    def kid(x, y):
        mean, std = kid_from_features(x, y, o.kid_subsets, o.kid_subset_size, o.seed)
        return {"kid": mean, "kid_std": std}

    out = kid(ctx.features("generated"), ctx.features("reference"))
    out.update(ctx.per_class(kid, "m"))
    return out


def compute_pr(ctx) -> dict[str, float]:
    """``precision``, ``recall`` of generated (a) against reference (b)."""
    p, r = precision_recall(ctx.features("generated"), ctx.features("reference"), ctx.options.pr_k)
    return {"precision": p, "recall": r}
