"""FFHQ alignment of real photos, so they reach a face student the way its teacher's training data looked.

The recipe is NVlabs ffhq-dataset ``download_ffhq.py`` ``recreate_aligned_images`` (defaults: ``rotate_level``,
``enable_padding``, no random shift), on the 68 dlib landmarks of the photo's highest-scoring face
(:func:`kdpipe.pipeline.attributes.landmarks.find_face`):

1. eye centres = means of landmarks 36-41 and 42-47; mouth centre = mean of the mouth corners 48 and 54;
   an oriented square quad centred at ``eye_avg + 0.1 * eye_to_mouth`` whose half side is
   ``max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|)``, turned so the eyes are level;
2. shrink the photo (Lanczos) by ``floor(qsize / output_size / 2)`` when that is > 1;
3. crop to the quad plus a border of 10 % of its size;
4. where the quad leaves the photo, reflect-pad by at least 30 % of its size, blur the padding (Gaussian,
   sigma 2 % of the quad) and fade it to the median colour;
5. map the quad to ``transform_size`` pixels (Pillow ``QUAD``, bilinear), then Lanczos down to ``output_size``.

Upstream's ``PIL.Image.ANTIALIAS`` is ``LANCZOS`` (the name was removed in Pillow 10). In the output the eyes are
level and their midpoint sits at x = 0.5, y in [0.472, 0.5] of the side (exactly 0.5 - 0.05 * |eye_to_mouth| /
half side, for a face whose eye-to-mouth line is perpendicular to the eye line), at most a quarter side apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpipe.errors import ConfigError, DatasetError
from kdpipe.pipeline.attributes.landmarks import check_uint8_image, find_face

ALIGN_DETECT_SIDE = 1024
"""Longest side (pixels) the face detector scans for alignment: real photos have smaller faces than teacher
images, so more than the identity default."""


class NoFaceError(DatasetError):
    """The photo has no face the detector finds, so it cannot be aligned."""


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The FFHQ crop quad of one face.

    Args:
        landmarks: ``[68, 2]`` (x, y) pixels, iBUG 300-W order.
    Returns:
        ``(quad [4, 2] float64, qsize)``: corners top-left, bottom-left, bottom-right, top-right of the output
        (Pillow ``QUAD`` order) and the side length in pixels.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y]), float(np.hypot(*x) * 2)


def _pad_blur(img: np.ndarray, pad: np.ndarray, qsize: float) -> np.ndarray:
    """Upstream's padding: reflect-pad uint8 ``img`` by ``pad`` = (left, top, right, bottom), blur and fade the
    padded band towards the median colour; returns uint8 ``[H', W', 3]``."""
    import scipy.ndimage

    f = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    h, w, _ = f.shape
    y, x, _ = np.ogrid[:h, :w, :1]
    mask = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                      1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
    blur = qsize * 0.02
    f += (scipy.ndimage.gaussian_filter(f, [blur, blur, 0]) - f) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    f += (np.median(f, axis=(0, 1)) - f) * np.clip(mask, 0.0, 1.0)
    return np.uint8(np.clip(np.rint(f), 0, 255))


def align_with_landmarks(image: np.ndarray, landmarks: np.ndarray, output_size: int = 1024,
                         transform_size: int = 4096) -> np.ndarray:
    """Steps 2-5 of the module docstring for given landmarks: uint8 ``[H, W, 3]`` -> uint8 ``[S, S, 3]``,
    ``S = output_size``."""
    from PIL import Image

    quad, qsize = ffhq_quad(landmarks)
    img = Image.fromarray(check_uint8_image(image))
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        img = img.resize((int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink))), Image.LANCZOS)
        quad /= shrink
        qsize /= shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.size[0]),
            min(hi[1] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pad = np.array([max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.size[0] + border, 0),
                    max(hi[1] - img.size[1] + border, 0)])
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        img = Image.fromarray(_pad_blur(np.asarray(img), pad, qsize), "RGB")
        quad += pad[:2]
    img = img.transform((transform_size, transform_size), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def align_face(image: np.ndarray, output_size: int = 1024, transform_size: int = 4096) -> np.ndarray:
    """FFHQ-align the highest-scoring face of a photo (module docstring).

    Args:
        image: uint8 ``[H, W, 3]`` RGB, at most 4096x4096 pixels.
        output_size: side of the result in pixels, 8 to 4096 (FFHQ: 1024; match the student's resolution).
        transform_size: side of the intermediate quad transform, >= output_size, <= 8192 (upstream: 4096).
    Returns:
        uint8 ``[output_size, output_size, 3]`` RGB. Deterministic.
    Raises:
        NoFaceError: no face found. ConfigError: bad sizes. ClassifierError: a bad image or missing dlib models.
    """
    if not 8 <= output_size <= 4096:
        raise ConfigError(f"output_size {output_size} must be in [8, 4096] pixels (FFHQ: 1024)")
    if not output_size <= transform_size <= 8192:
        raise ConfigError(f"transform_size {transform_size} must be in [output_size={output_size}, 8192] pixels "
                          "(upstream: 4096)")
    face = find_face(image, ALIGN_DETECT_SIDE)
    if face is None:
        raise NoFaceError(f"no face found in the {image.shape[0]}x{image.shape[1]} image; pass a photo with a "
                          "frontal face at least ~40 px wide")
    return align_with_landmarks(image, face.landmarks, output_size, transform_size)


def align_files(paths: list[Path], out_dir: Path, output_size: int = 1024, log=print) -> list[Path]:
    """``kdpipe align``: FFHQ-align each image file into ``out_dir/<stem>.png`` (written atomically).

    Files without a face are reported through ``log`` and skipped; the others are still written.
    Returns the written paths. Raises ConfigError (two inputs with one stem; nothing written), DatasetError (an
    unreadable image; the files before it are written) or NoFaceError (no file had a face).
    """
    from kdpipe.images import read_image_file, save_png

    stems = [Path(p).stem for p in paths]
    if dup := sorted({s for s in stems if stems.count(s) > 1}):
        raise ConfigError(f"several input images are named {dup[0]!r} (extension aside); each output is "
                          "<stem>.png, so rename them or align them into separate --out folders")
    out_dir.mkdir(parents=True, exist_ok=True)
    written, missing = [], []
    for path in paths:
        image = read_image_file(path).permute(1, 2, 0).numpy()
        try:
            aligned = align_face(image, output_size=output_size, transform_size=max(4096, output_size))
        except NoFaceError:
            missing.append(str(path))
            log(f"{path}: no face found, skipped")
            continue
        written.append(save_png(out_dir / f"{Path(path).stem}.png", aligned))
        log(f"{path} -> {written[-1]}")
    if missing and not written:
        raise NoFaceError(f"no face found in any of the {len(missing)} image(s) ({', '.join(missing[:3])}); "
                          "nothing written")
    return written
