"""How a task's attribute turns classifier outputs into binary classes (seed 002 "Dataset generation" step 3).

Kinds (``attribute.kind`` in stages.yaml):

* ``probability`` (gender): ``value`` = P(class 1) (p_male); label = value >= 0.5, confidence = max(p, 1 - p).
* ``continuous`` (brightness, any scalar): label 0 below the ``quantiles[0]`` quantile of the classified sample,
  1 above ``quantiles[1]``, -1 (unused) between; confidence = the classifier's.
* ``bins`` (age): value = bin index (``age_bin``); used with per-bin "+k / -k bins" vectors.

A sample is usable only if it is valid for the classifier and, for face teachers, its face probability reaches
``attribute.min_face_probability`` (seed 002: drop low-confidence detections instead of lowering truncation).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.errors import ConfigError
from kdpipe.pipeline.attributes.classifiers import build_classifier
from kdpipe.pipeline.config import AttributeConfig

FACE_CLASSIFIERS = ("face", "gender", "age", "face-attributes")  # take a device and age bin edges


def make_classifier(attribute: AttributeConfig, device: torch.device):
    """The classifier named by ``attribute.classifier`` (registry name or ``module:Class``) on ``device``."""
    spec = attribute.classifier
    kwargs = {}
    if spec in FACE_CLASSIFIERS:
        kwargs = {"device": device, "age_bin_edges": attribute.age_bin_edges}
    return build_classifier(spec, **kwargs)


def classify_images(classifier, images: torch.Tensor, resolution: int, groups: int = 1) -> dict[str, np.ndarray]:
    """Run ``classifier`` on teacher images ``[N, 3, H, W]`` in [-1, 1], area-resized to ``resolution`` if larger.

    Args:
        groups: the images are classified in ``groups`` equal consecutive batches. Callers fix the grouping by
            what the data are (one candidate's edits, a fixed block of a part), never by the runtime batch size:
            MTCNN's boxes move by ~1e-5 px with batch composition, which could flip a threshold decision.
    Returns flat columns ``{'valid': bool [N], '<attr>': float32 [N], '<attr>_confidence': float32 [N],
    'face_box_x0'.. (if a face classifier)}``.
    """
    if images.shape[-1] > resolution:
        images = F.interpolate(images, size=(resolution, resolution), mode="area")
    outs = [classifier(chunk) for chunk in images.chunk(groups)] if images.shape[0] else [classifier(images)]
    out = outs[0]
    if len(outs) > 1:
        cat = lambda dicts: {k: np.concatenate([d[k] for d in dicts]) for k in dicts[0]}  # noqa: E731
        out = type(out)(values=cat([o.values for o in outs]), confidences=cat([o.confidences for o in outs]),
                        valid=np.concatenate([o.valid for o in outs]), extra=cat([o.extra for o in outs]))
    cols = {"valid": np.asarray(out.valid, dtype=bool)}
    for name in out.values:
        cols[name] = np.asarray(out.values[name], dtype=np.float32)
        cols[f"{name}_confidence"] = np.asarray(out.confidences[name], dtype=np.float32)
    if "face_box" in out.extra:
        for j, c in enumerate(("x0", "y0", "x1", "y1")):
            cols[f"face_box_{c}"] = np.asarray(out.extra["face_box"][:, j], dtype=np.float32)
    return cols


def usable(cols: dict, attribute: AttributeConfig) -> np.ndarray:
    """[N] bool: valid for the classifier and (face teachers) face probability >= min_face_probability."""
    keep = np.asarray(cols["valid"], dtype=bool).copy()
    min_face = attribute.min_face_probability
    if "face" in cols and min_face is not None:
        keep &= np.nan_to_num(cols["face"], nan=0.0) >= min_face
    return keep


def labels(cols: dict, attribute: AttributeConfig,
           thresholds: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels [N] int64 in {-1, 0, 1} and confidences [N] float32 of the task's attribute.

    Args:
        thresholds: ``[lo, hi]`` for ``continuous`` attributes (from :func:`continuous_thresholds`).
    Raises:
        ConfigError: the classifier does not output ``attribute.name``.
    """
    a = attribute
    if a.name not in cols:
        raise ConfigError(f"attribute.name: classifier {a.classifier!r} has no output {a.name!r}; "
                          f"it gives {sorted(k for k in cols if not k.endswith('_confidence'))}")
    value = np.asarray(cols[a.name], dtype=np.float64)
    conf = np.asarray(cols[f"{a.name}_confidence"], dtype=np.float32)
    lab = np.full(value.shape, -1, dtype=np.int64)
    if a.kind == "probability":
        ok = np.isfinite(value)
        lab[ok] = (value[ok] >= 0.5).astype(np.int64)
        conf = np.where(ok, np.maximum(value, 1 - value), 0).astype(np.float32)
    elif a.kind == "continuous":
        lo, hi = thresholds
        lab[value <= lo] = 0
        lab[value >= hi] = 1
    else:  # bins: the bin index itself
        ok = np.isfinite(value)
        lab[ok] = value[ok].astype(np.int64)
    lab[~usable(cols, a)] = -1
    return lab, conf


def continuous_thresholds(cols: dict, attribute: AttributeConfig) -> list[float]:
    """``[lo, hi]`` = the ``attribute.quantiles`` of the usable samples' values (continuous attributes)."""
    value = np.asarray(cols[attribute.name], dtype=np.float64)[usable(cols, attribute)]
    q = attribute.quantiles
    return [float(np.quantile(value, q[0])), float(np.quantile(value, q[1]))]
