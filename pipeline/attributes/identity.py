"""Identity of faces: dlib's 128-d face descriptors and the distance between two images' faces.

Seed 002 names identity drift between a source face and its edit as a weakness nobody measures; kdpipe measures it
in the pairs stage (src vs tgt) and in evaluation (source vs translated image).

Model: dlib's ResNet face recognition model v1 (``dlib_face_recognition_resnet_model_v1.dat`` from
``face-recognition-models``; 99.38 % on LFW), on the face found by
:func:`kdpipe.pipeline.attributes.landmarks.find_face` (HOG detector + 68 landmarks), through
``compute_face_descriptor(image, shape)`` with dlib's defaults (150x150 chip, padding 0.25, no jitter) -- the same
descriptor as the ``face_recognition`` package's ``face_encodings``. Euclidean distances below
:data:`SAME_PERSON_DISTANCE` (0.6) are the usual "same person" decision (dlib, face_recognition).
"""

from __future__ import annotations

import numpy as np
import torch

from kdpipe.pipeline.attributes.landmarks import DETECT_SIDE, dlib_model, find_face
from kdpipe.pipeline.attributes.protocol import ClassifierError, check_images, images_to_uint8

EMBEDDING_DIM = 128
SAME_PERSON_DISTANCE = 0.6
"""Euclidean distance under which dlib's descriptors are taken as the same person (dlib's documented threshold)."""


def face_embeddings(images: torch.Tensor, detect_side: int = DETECT_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """128-d dlib face descriptors of a batch of images.

    Args:
        images: ``[N, 3, H, W]`` float in [-1, 1] (NVlabs convention; any device), at most 4096x4096 pixels each.
        detect_side: longest side (pixels) of the copy the face detector scans (cost bound; see ``landmarks``).
    Returns:
        ``(embeddings [N, 128] float32, found [N] bool)``; rows without a face are NaN (dlib's descriptors are
        not unit vectors; their norms are ~1.4-1.5).
    Deterministic (same image, same row) and independent of batch composition. Cost: ~0.25 s of one CPU core
    per image at 512-1024 px (detection on the 512 px copy, then the descriptor; ~0.16 s at 256 px).
    Raises:
        ClassifierError: a bad batch (type, dtype, shape), too many pixels, or missing dlib / model files.
    """
    return embed_faces(images_to_uint8(images), detect_side)


def embed_faces(images: np.ndarray, detect_side: int = DETECT_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """:func:`face_embeddings` of uint8 ``[N, H, W, 3]`` RGB images (what the teacher renderer returns)."""
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ClassifierError(f"images must be a uint8 array [N, H, W, 3], got {type(images).__name__} "
                              f"{list(getattr(images, 'shape', []))}")
    n = images.shape[0]
    out = np.full((n, EMBEDDING_DIM), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    for i in range(n):
        face = find_face(images[i], detect_side)
        if face is None:
            continue
        image = np.ascontiguousarray(images[i])
        out[i] = np.asarray(dlib_model("encoder").compute_face_descriptor(image, face.shape), dtype=np.float32)
        found[i] = True
    return out, found


def embedding_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance ``[N]`` float32 of embeddings ``a, b: [N, 128]``; NaN where either row is NaN.

    Raises:
        ClassifierError: the two arrays differ in shape or are not ``[N, 128]``.
    """
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != EMBEDDING_DIM:
        raise ClassifierError(f"face embeddings must both be [N, {EMBEDDING_DIM}], got {list(a.shape)} and "
                              f"{list(b.shape)}")
    return np.linalg.norm(a - b, axis=1).astype(np.float32)


def identity_distance(a: torch.Tensor, b: torch.Tensor, detect_side: int = DETECT_SIDE) -> np.ndarray:
    """Identity distance between image ``a[i]`` and image ``b[i]``: Euclidean distance of their dlib descriptors.

    Args:
        a, b: ``[N, 3, H, W]`` float in [-1, 1], same N (H, W may differ between a and b).
    Returns:
        ``[N]`` float32 >= 0; NaN where either image has no face. < 0.6 (:data:`SAME_PERSON_DISTANCE`): the same
        person by dlib's usual threshold.
    Raises:
        ClassifierError: bad batches or different N.
    """
    if check_images(a).shape[0] != check_images(b).shape[0]:
        raise ClassifierError(f"identity_distance needs as many images in a ({len(a)}) as in b ({len(b)})")
    ea, _ = face_embeddings(a, detect_side)
    eb, _ = face_embeddings(b, detect_side)
    return embedding_distance(ea, eb)
