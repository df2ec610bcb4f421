"""Image conventions shared by the pipeline and the trainers: uint8 <-> float, decoding files and bytes, shapes.

The float convention is NVlabs' (stylegan2-ada-pytorch ``gen_images.py``): images are ``[N, 3, H, W]`` float in
[-1, 1]; uint8 is ``(x * 127.5 + 128).clamp(0, 255)``, and its inverse ``u / 127.5 - 1``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from kdpipe.errors import DatasetError
from kdpipe.fsutil import atomic_write_bytes


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` float in [-1, 1] -> ``[N, H, W, 3]`` uint8 on the same device (NVlabs: ``x * 127.5 + 128``,
    clamped to [0, 255], truncated)."""
    return (img.detach().float().permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def to_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` in [0, 255] -> float32 in [-1, 1] (inverse of :func:`to_uint8` up to rounding)."""
    return img.to(torch.float32) / 127.5 - 1.0


def hwc_to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 numpy ``[N, H, W, 3]`` -> float32 ``[N, 3, H, W]`` in [-1, 1]."""
    return to_float(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))


MAX_PIXELS = 4096 * 4096
"""Largest image :func:`decode_image` decodes (pixels): StyleGAN2 teachers stop at 4096x4096. A 12000x12000 PNG
(a decompression bomb of a few hundred KB) is refused from its header, before any pixel is decoded."""


def decode_image(data: bytes, where: str, expected_hw: tuple[int, int] | None = None,
                 max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """PNG/JPEG/... bytes -> uint8 ``[3, H, W]`` RGB.

    The header is read first (Pillow's lazy ``Image.open``): its size must be ``expected_hw`` (H, W) when given,
    and at most ``max_pixels`` pixels, else nothing is decoded.
    Raises:
        DatasetError: naming ``where``: undecodable bytes, an unexpected size, or too many pixels.
    """
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # Pillow warns above 89M pixels; the limit below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            w, h = im.size
            if expected_hw is not None and (h, w) != tuple(expected_hw):
                raise DatasetError(f"image {where} is {h}x{w} (HxW) but this dataset's images are "
                                   f"{expected_hw[0]}x{expected_hw[1]}; regenerate the shard or set data.resolution")
            if w * h > max_pixels:
                raise DatasetError(f"image {where} is {h}x{w} = {w * h} pixels, above the limit of {max_pixels} "
                                   "(a decompression bomb or not a kdpipe image); regenerate the shard")
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except DatasetError:
        raise
    except Exception as exc:  # Pillow raises many types for bad bytes
        raise DatasetError(f"image {where} cannot be decoded ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_image_file(path: str | Path) -> torch.Tensor:
    """Image file -> uint8 ``[3, H, W]`` RGB. Raises DatasetError naming the file if missing or undecodable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"image {str(path)!r} cannot be read ({exc.strerror or exc}); pass a PNG/JPEG file") from None
    return decode_image(data, repr(str(path)))


def assert_shape(tensor: torch.Tensor, shape: Sequence[int | None], name: str = "tensor") -> None:
    """Check ``tensor.shape`` against ``shape`` (``None`` = any size), as NVlabs' ``misc.assert_shape``.

    Raises:
        ValueError: naming ``name``, the expected and the actual shape.
    """
    if tensor.ndim != len(shape) or any(s is not None and int(t) != s for t, s in zip(tensor.shape, shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name}: expected shape {want}, got {list(tensor.shape)}")


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``[H, W, 3]`` (RGB) or ``[H, W, 1]`` (grayscale) image (Pillow, default level).

    For files a user looks at (seed images, grids, aligned photos, translations); dataset shards use
    :func:`kdpipe.pipeline.runner.shards.encode_png` (fixed encoder and level, part of the fingerprint)."""
    from PIL import Image

    im = Image.fromarray(image[..., 0], "L") if image.shape[-1] == 1 else Image.fromarray(image, "RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` (see :func:`png_bytes`) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, png_bytes(image))
