"""Attribute metrics with kdpipe's classifiers (:func:`kdpipe.pipeline.attributes.registry.build_classifier`).

* ``attribute`` (issue 14 "attribute transfer"): the classifier's attribute on generated[i] vs reference[i]
  (paired, e.g. a student's output vs the teacher's target): ``attribute_transfer`` = fraction with the same
  rounded value (a class: digit, gender, age_bin) and confidence >= ``min_confidence``; for translated sets also
  ``attribute_moved`` = fraction whose value moved from the input's towards the reference's (continuous
  attributes such as stroke width: thin -> bold). Means of the attribute on each set are reported too.
* ``rc-fc`` (seed 000 Sec. 4, after Shmelkov et al. 2018): RC = accuracy on the generated images (labels =
  their intended classes) of a classifier trained on real data (``classifier``); FC = accuracy on the real
  reference images of a classifier fit on the generated images (``fc_fit``, default: the digit MLP recipe of
  :mod:`kdpipe.pipeline.attributes.digits`). Both need class labels on both sets.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Callable

import numpy as np
import torch

from kdpipe.errors import ConfigError


def _classify(ctx, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    from kdpipe.pipeline.attributes.registry import build_classifier

    clf = build_classifier(ctx.options.classifier)
    attr = ctx.options.attribute or clf.attributes[0]
    if attr not in clf.attributes:
        raise ConfigError(f"classifier {ctx.options.classifier!r} outputs {tuple(clf.attributes)}, not {attr!r}; "
                          "pass --attribute with one of them")
    out = clf(images)
    return (np.asarray(out.values[attr], np.float64), np.asarray(out.confidences[attr], np.float64),
            np.asarray(out.valid, bool), attr)


def compute_transfer(ctx) -> dict[str, float]:
    """``attribute_transfer``, ``attribute_moved`` (translated sets), per-set means and ``attribute_valid``."""
    gen, ref = ctx.floats("generated"), ctx.floats("reference")
    n = min(len(gen), len(ref))
    v_g, c_g, ok_g, attr = _classify(ctx, gen[:n])
    v_r, _, ok_r, _ = _classify(ctx, ref[:n])
    ok = ok_g & ok_r
    if not ok.any():
        raise ConfigError(f"attribute {attr!r}: the classifier found no valid image pair among {n}")
    same = (np.round(v_g) == np.round(v_r)) & (c_g >= ctx.options.min_confidence) & ok
    out = {"attribute_transfer": float(same[ok].mean()), "attribute_valid": float(ok.mean()),
           "attribute_mean_generated": float(v_g[ok].mean()), "attribute_mean_reference": float(v_r[ok].mean())}
    if ctx.generated.inputs is not None and ctx.generated.inputs.shape[1] == 3:
        v_i, _, ok_i, _ = _classify(ctx, ctx.floats("inputs")[:n])
        both = ok & ok_i
        moved = np.sign(v_g - v_i) == np.sign(v_r - v_i)
        out.update(attribute_moved=float(moved[both].mean()), attribute_mean_input=float(v_i[both].mean()))
    return out


def fit_digit_classifier(images: torch.Tensor, labels: np.ndarray) -> Callable[[torch.Tensor], np.ndarray]:
    """The ``digit`` classifier's recipe (MLP, 64 ReLU units, L-BFGS, seed 0) fit on ``images`` ``[N, 3, H, W]``
    in [-1, 1] with ``labels`` ``[N]``; returns ``predict(images) -> labels [N]``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    from kdpipe.pipeline.attributes.digits import to_digit8

    mlp = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, solver="lbfgs", max_iter=300, random_state=0)
    with threadpool_limits(1), warnings.catch_warnings():  # L-BFGS stopping at max_iter is the recipe
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(to_digit8(images) / 16, np.asarray(labels))
    return lambda x: mlp.predict(to_digit8(x) / 16)


def _load_fit(path: str) -> Callable:
    module, sep, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"FC classifier fit {path!r} is not an importable 'module:function'") from None


def compute_rc_fc(ctx) -> dict[str, float]:
    """``rc`` and ``fc`` accuracies in [0, 1] (module doc). Raises ConfigError when a set has no labels."""
    ref = ctx.require_reference("rc-fc")
    if ctx.generated.labels is None or ref.labels is None:
        raise ConfigError("rc-fc needs class labels on both sets: generated labels from --label-key (shards), "
                          "class sub-folders, or --label-classifier; the reference's likewise ('digits' has them)")
    pred, _, _, _ = _classify(ctx, ctx.floats("generated"))
    rc = float((np.round(pred) == ctx.generated.labels).mean())
    predict = _load_fit(ctx.options.fc_fit)(ctx.floats("generated"), ctx.generated.labels)
    fc = float((np.asarray(predict(ctx.floats("reference"))) == ref.labels).mean())
    return {"rc": rc, "fc": fc}
