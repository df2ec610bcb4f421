"""The classifier interface every attribute classifier follows, and the checks wrapped around each one.

A classifier maps teacher images ``[N, 3, H, W]`` float in ``[-1, 1]`` to per-attribute values and confidences
plus a ``valid`` mask (seed 002, "Dataset generation" step 2: ``c(w_i) = f(g(w_i))``). Classifier modules
(faces, image statistics, a user's ``module:Class``) import this module only; the registry
(:mod:`kdpipe.pipeline.attributes.registry`) imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from kdpipe.errors import KdpipeError
from kdpipe.images import to_uint8


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
    return np.ascontiguousarray(to_uint8(check_images(images)).cpu().numpy())


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


