"""dlib face detection and 68-point landmarks, with the model files of ``face-recognition-models``.

Shared by identity embeddings (:mod:`kdpipe.pipeline.attributes.identity`) and FFHQ alignment
(:mod:`kdpipe.pipeline.align`):

- detector: ``dlib.get_frontal_face_detector()`` (HOG + linear SVM; ships inside dlib), run with one pyramid
  upsample on a copy of the image area-downsampled to at most ``detect_side`` pixels on its longer side (this
  bounds its cost: ~0.1 s at 512 px on one CPU core). Of several faces, the highest detector score wins.
- landmarks: ``shape_predictor_68_face_landmarks.dat`` (iBUG 300-W points, as NVlabs' ffhq-dataset used), run on
  the full-resolution image inside the detection box scaled back.

The ``face_recognition_models`` package is never imported (its ``__init__`` needs ``pkg_resources``, which may be
missing); its ``models/`` folder is found with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.images import MAX_PIXELS
from kdpipe.pipeline.attributes.protocol import ClassifierError

DETECT_SIDE = 512
"""Default longest side (pixels) of the copy the face detector scans; larger images are area-downsampled."""
UPSAMPLE = 1
"""Pyramid upsamplings of the detector (dlib's examples use 1): it then finds faces from ~40 px wide."""
SHAPE_PREDICTOR = "shape_predictor_68_face_landmarks.dat"
FACE_ENCODER = "dlib_face_recognition_resnet_model_v1.dat"


def model_file(name: str) -> Path:
    """Path of ``face_recognition_models/models/<name>`` without importing the package.

    Raises:
        ClassifierError: the package or the file is missing (names the install command).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / "models" / name
        if path.is_file():
            return path
    raise ClassifierError(f"dlib model file {name!r} not found (package face-recognition-models "
                          f"{'has no such file' if roots else 'is not installed'}); "
                          "install with: pip install 'kdpipe[faces]'")


@functools.lru_cache(maxsize=None)
def dlib_model(kind: str) -> Any:
    """Load one dlib model once per process: ``'detector'``, ``'shape_predictor'`` (68 points) or ``'encoder'``
    (the 128-d ResNet face recognition model v1). Raises ClassifierError if dlib or a file is missing."""
    try:
        import dlib
    except ImportError as err:
        raise ClassifierError(f"face landmarks need dlib ({err}); install with: pip install 'kdpipe[faces]'") from err
    if kind == "detector":
        return dlib.get_frontal_face_detector()
    if kind == "shape_predictor":
        return dlib.shape_predictor(str(model_file(SHAPE_PREDICTOR)))
    if kind == "encoder":
        return dlib.face_recognition_model_v1(str(model_file(FACE_ENCODER)))
    raise ValueError(f"unknown dlib model kind {kind!r}")


@dataclass
class Face:
    """One detected face of an image.

    box: (left, top, right, bottom) in full-resolution pixels (dlib's inclusive rectangle).
    score: the detector's SVM score (higher = more certain; > 0 is a detection).
    landmarks: [68, 2] float64 (x, y) pixels, iBUG 300-W order (36-41 left eye, 42-47 right eye as seen, 48-59
        outer mouth).
    shape: the dlib ``full_object_detection`` (what the face encoder takes).
    """

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray
    shape: Any


def check_uint8_image(image: Any, where: str = "image") -> np.ndarray:
    """A contiguous uint8 ``[H, W, 3]`` RGB array with at most :data:`kdpipe.images.MAX_PIXELS` pixels.

    Raises:
        ClassifierError: naming ``where``: not a numpy array, wrong shape or dtype, empty, or too many pixels.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {list(getattr(image, 'shape', []))}"
        raise ClassifierError(f"{where} must be a uint8 numpy array [H, W, 3] RGB, got {got.strip()}")
    h, w = image.shape[:2]
    if h == 0 or w == 0 or h * w > MAX_PIXELS:
        raise ClassifierError(f"{where} is {h}x{w} (HxW); it needs 1 to {MAX_PIXELS} pixels: resize it first")
    return np.ascontiguousarray(image)


def find_face(image: np.ndarray, detect_side: int = DETECT_SIDE) -> Face | None:
    """The highest-scoring frontal face of ``image`` with its 68 landmarks, or None when there is none.

    Args:
        image: uint8 ``[H, W, 3]`` RGB (see :func:`check_uint8_image`).
        detect_side: the detector scans a copy downsampled (Pillow ``BOX``) to this longest side, >= 32 pixels.
    Deterministic. Raises ClassifierError for a bad image or missing models.
    """
    image = check_uint8_image(image)
    if detect_side < 32:
        raise ClassifierError(f"detect_side {detect_side} must be >= 32 pixels")
    import dlib
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(h, w) / detect_side if max(h, w) > detect_side else 1.0
    small = image
    if scale > 1.0:
        size = (max(1, round(w / scale)), max(1, round(h / scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.BOX))
    rects, scores, _ = dlib_model("detector").run(small, UPSAMPLE, 0.0)
    if len(rects) == 0:
        return None
    best = int(np.argmax(scores))  # first of ties: detector order
    r = rects[best]
    box = tuple(int(round(v * scale)) for v in (r.left(), r.top(), r.right(), r.bottom()))
    shape = dlib_model("shape_predictor")(image, dlib.rectangle(*box))
    landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
    return Face(box=box, score=float(scores[best]), landmarks=landmarks, shape=shape)
