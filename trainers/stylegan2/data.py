"""Training images for ``kdpipe train stylegan2``, held in memory as uint8, and their deterministic batch order.

``--data`` is one of:

* ``digits`` -- the built-in real digits (:mod:`kdpipe.pipeline.digits`, 1,797 images, 32x32);
* a directory of image files (``*.png``, ``*.jpg``, ``*.jpeg``, ``*.webp``, searched recursively, sorted);
* a kdpipe shard directory or anything :func:`kdpipe.trainers.core.data.resolve_shards` accepts: every image
  member of every sample (``src.png``, ``tgt.png``, ``x1.png``...) is one training image.

Images must be square with a power-of-two side, or ``data.resolution`` resizes them (bilinear, antialiased).
Small-data GAN training (thousands of images) is the case this serves; the whole set is loaded once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.errors import DatasetError
from kdpipe.images import decode_image, to_float, to_uint8
from kdpipe.trainers.core.data import DataPosition, resolve_shards, shard_samples

BUILTIN_DATASETS = ("digits",)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _from_folder(root: Path) -> list[torch.Tensor]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())
    return [decode_image(p.read_bytes(), repr(str(p))) for p in files]


def _from_shards(path: str) -> list[torch.Tensor]:
    images = []
    for url in resolve_shards(path):
        for sample in shard_samples(url):
            for key in sorted(k for k in sample if k.lower().endswith(_IMAGE_SUFFIXES)):
                images.append(decode_image(sample[key], f"{sample['__key__']}.{key} in {url}"))
    return images


def load_images(path: str, resolution: int | None = None) -> torch.Tensor:
    """All training images as uint8 ``[N, 3, R, R]`` (see module doc for what ``path`` may be).

    Raises:
        DatasetError: nothing found, images of different sizes without ``resolution``, or a side that is not a
            power of two >= 4.
    """
    if path not in BUILTIN_DATASETS and not Path(path).exists() and not any(c in path for c in "*?[{:"):
        raise DatasetError(f"--data {path!r} does not exist; pass an image folder, a kdpipe shard directory or "
                           f"one of {', '.join(BUILTIN_DATASETS)}")
    if path == "digits":
        from kdpipe.pipeline.digits import real_digits

        images = list(to_uint8(real_digits()[0]).permute(0, 3, 1, 2))  # [3, 32, 32] uint8 each
    elif Path(path).is_dir() and not any(Path(path).glob("*.tar")) and not (Path(path) / "shards").is_dir():
        images = _from_folder(Path(path))
    else:
        images = _from_shards(path)
    if not images:
        raise DatasetError(f"no images found in {path!r}; pass an image folder, a kdpipe shard directory or 'digits'")
    if resolution is not None:
        images = [F.interpolate(im[None].float(), size=(resolution, resolution), mode="bilinear",
                                antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)[0]
                  for im in images]
    sizes = {tuple(im.shape[1:]) for im in images}
    if len(sizes) != 1:
        raise DatasetError(f"images in {path!r} have {len(sizes)} different sizes (e.g. {sorted(sizes)[:2]}); "
                           "pass --resolution R to resize them all")
    h, w = sizes.pop()
    if h != w or h < 4 or h & (h - 1):
        raise DatasetError(f"images in {path!r} are {h}x{w}; StyleGAN2 needs square power-of-two sides >= 4: "
                           "pass --resolution R")
    return torch.stack(images)


def image_batches(images: torch.Tensor, batch_size: int, seed: int, start: DataPosition = DataPosition(),
                  rank: int = 0, world_size: int = 1, xflip: bool = False
                  ) -> Iterator[tuple[dict[str, torch.Tensor], DataPosition]]:
    """Endless ``({"image": float [batch_size / world, 3, R, R] in [-1, 1]}, position_after)``.

    Epoch ``e`` visits the images in ``np.random.default_rng([seed, e]).permutation``; a global batch of
    ``batch_size`` consecutive indices is cut ``[rank::world_size]`` across processes; a batch may span two
    epochs. ``xflip``: mirror each image with probability 1/2 (drawn from the same per-epoch RNG).
    """
    n = images.shape[0]
    epoch, offset = start.epoch, start.offset
    while True:
        idx, flips = [], []
        e, o = epoch, offset
        while len(idx) < batch_size:
            rng = np.random.default_rng([seed, e])
            perm, flip = rng.permutation(n), rng.random(n) < 0.5
            take = min(batch_size - len(idx), n - o)
            idx += perm[o:o + take].tolist()
            flips += flip[o:o + take].tolist()
            o += take
            if o >= n:
                e, o = e + 1, 0
        epoch, offset = e, o
        idx, flips = idx[rank::world_size], flips[rank::world_size]
        x = to_float(images[idx])
        if xflip:
            mask = torch.tensor(flips).view(-1, 1, 1, 1)
            x = torch.where(mask, x.flip(3), x)
        yield {"image": x}, DataPosition(epoch, offset)
