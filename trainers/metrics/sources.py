"""Image sets to evaluate and to compare against, loaded as uint8 tensors (plus class labels when known).

Sources (``spec`` strings, as ``kdpipe eval`` takes them):

* ``digits`` -- the 1,797 real digits (:func:`kdpipe.pipeline.digits.real_digits`), classes 0-9.
* ``builtin:NAME`` or a checkpoint file -- a teacher: image ``i`` from seed ``seed + i``
  (``z = RandomState(seed).randn``, NVlabs' convention), ``truncation_psi``, ``noise_mode='const'``.
* a dataset directory (``OUT/<task>`` with ``shards/`` and ``SHA256SUMS``, a directory of ``*.tar``, or shard
  files by glob / braces, e.g. a held-out shard) -- the
  images of one role (``src``, ``tgt``, ``x1``, ``x2``, ``y``), in shard order; labels from ``json[label_key]``
  when every sample has it.
* an image folder -- its images sorted by name; if it holds only sub-folders, one class per sub-folder (sorted).

:func:`translate_source` runs a student checkpoint (``RUN`` = its newest ``checkpoints/ckpt-*.pt``) over an input
set (G_ema when present). Sets are held in memory: N x H x W x 3 bytes (10k images at 256 px = 2 GB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.errors import ConfigError, DatasetError
from kdpipe.images import read_image_file, to_float, to_uint8

ROLES = ("src", "tgt", "x1", "x2", "y")


@dataclass
class ImageSet:
    """images: uint8 ``[N, 3, H, W]``; labels: int64 ``[N]`` or None; description: what it is (for the JSON);
    inputs: for translated sets, the uint8 inputs ``[N, C, H, W]`` they were made from (else None)."""

    images: torch.Tensor
    description: str
    labels: np.ndarray | None = None
    inputs: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _limit(s: ImageSet, n: int | None) -> ImageSet:
    if n is None or n >= len(s):
        return s
    return ImageSet(s.images[:n], s.description, None if s.labels is None else s.labels[:n],
                    None if s.inputs is None else s.inputs[:n], s.info)


def is_generator_spec(spec: str) -> bool:
    """``builtin:...`` or an existing checkpoint file (``.pkl``, ``.pt``, ``.pth``)."""
    return spec.startswith("builtin:") or (Path(spec).is_file() and Path(spec).suffix in (".pkl", ".pt", ".pth"))


def generator_images(spec: str, n: int, seed: int = 0, truncation_psi: float = 1.0, device="cpu") -> ImageSet:
    """``n`` teacher images for seeds ``seed .. seed + n - 1`` (module doc). Raises CheckpointError."""
    from kdpipe.pipeline.render import Renderer
    from kdpipe.pipeline.teacher.load import load_teacher

    if n < 1:
        raise ConfigError(f"--n {n}: evaluate at least one generated image")
    teacher = load_teacher(spec, device)
    renderer = Renderer(teacher.G, torch.device(device), truncation_psi=truncation_psi)
    hwc = renderer.images(renderer.ws_from_seeds(range(seed, seed + n)))
    return ImageSet(torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous(),
                    f"generator {spec} (sha256 {teacher.sha256[:12]}), seeds {seed}..{seed + n - 1}, "
                    f"truncation_psi {truncation_psi}, noise_mode const",
                    info={"generator_sha256": teacher.sha256, "seed": seed, "truncation_psi": truncation_psi})


def shard_images(path: str | Path, role: str, label_key: str | None = None) -> ImageSet:
    """The ``role`` images of a finished dataset (module doc). Raises DatasetError (unfinished, missing role)."""
    from kdpipe.images import decode_image
    from kdpipe.trainers.core.data import resolve_shards, shard_samples

    if role not in ROLES:
        raise ConfigError(f"image role {role!r} is not one of {ROLES}")
    imgs, labels = [], []
    for url in resolve_shards(str(path)):
        for s in shard_samples(url):
            key = f"{role}.png"
            if key not in s:
                keys = sorted(k for k in s if not k.startswith("__"))
                raise DatasetError(f"sample {s['__key__']!r} in {url!r} has no {key} (it has {keys}); "
                                   "pass --role/--reference-role with one of them")
            imgs.append(decode_image(s[key], f"{s['__key__']!r} in {url!r}"))
            if label_key:
                labels.append(json.loads(s.get("json", b"{}")).get(label_key))
    lab = None
    if label_key and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in labels):
        lab = np.asarray(labels, dtype=np.int64)
    return ImageSet(torch.stack(imgs), f"dataset {path} role {role}", lab)


def folder_images(path: str | Path) -> ImageSet:
    """Images of a folder (sorted names), or one class per sub-folder. Raises DatasetError when empty."""
    from kdpipe.trainers.translate import list_images

    path = Path(path)
    subdirs = sorted(p for p in path.iterdir() if p.is_dir())
    if subdirs and not any(p.is_file() for p in path.iterdir()):
        files, labels = [], []
        for c, d in enumerate(subdirs):
            found = list_images([d])
            files += found
            labels += [c] * len(found)
        info = {"classes": [d.name for d in subdirs]}
        lab: np.ndarray | None = np.asarray(labels, dtype=np.int64)
    else:
        files, lab, info = list_images([path]), None, {}
    imgs = [read_image_file(f) for f in files]
    if len({tuple(i.shape) for i in imgs}) > 1:
        raise DatasetError(f"images in {str(path)!r} differ in size; resize them to one size first")
    return ImageSet(torch.stack(imgs), f"folder {path}", lab, info=info)


def load_source(spec: str, n: int | None = None, *, role: str = "tgt", label_key: str | None = None,
                seed: int = 0, truncation_psi: float = 1.0, device="cpu") -> ImageSet:
    """Any source of the module doc, cut to its first ``n`` images (None = all; generators need ``n``)."""
    if spec == "digits":
        from kdpipe.pipeline.digits import real_digits

        images, labels = real_digits()
        return _limit(ImageSet(to_uint8(images).permute(0, 3, 1, 2).contiguous(), "real digits (sklearn load_digits, "
                               "32x32)", labels.numpy()), n)
    if is_generator_spec(spec):
        if n is None:
            raise ConfigError(f"generator {spec!r}: pass --n, the number of images to generate")
        return generator_images(spec, n, seed, truncation_psi, device)
    p = Path(spec)
    if spec.endswith(".tar") or any(c in spec for c in "*?[{"):  # shard files, a glob or braces (a split)
        return _limit(shard_images(spec, role, label_key), n)
    if not p.is_dir():
        raise DatasetError(f"image source {spec!r} is neither 'digits', a generator (builtin:NAME, .pkl, .pt), "
                           "a dataset directory nor an image folder")
    if (p / "shards").is_dir() or any(p.glob("*.tar")):
        return _limit(shard_images(p, role, label_key), n)
    return _limit(folder_images(p), n)


def latest_checkpoint(run: str | Path) -> Path:
    """``run`` itself if a file, else the newest ``run/checkpoints/ckpt-*.pt``. Raises DatasetError."""
    run = Path(run)
    if run.is_file():
        return run
    ckpts = sorted((run / "checkpoints").glob("ckpt-*.pt"))
    if not ckpts:
        raise DatasetError(f"no checkpoints/ckpt-*.pt in {str(run)!r}; pass a run directory or a checkpoint file")
    return ckpts[-1]


@torch.no_grad()
def translate_source(run: str | Path, inputs: ImageSet, device="cpu", batch_size: int = 64) -> ImageSet:
    """The student of ``run`` applied to ``inputs`` (``[N, C, H, W]`` uint8; C = 6 for triplet students), resized
    (bilinear, antialiased) to the training size. Returns the outputs, carrying ``inputs`` and its labels."""
    from kdpipe.trainers.translate import load_student

    ckpt = latest_checkpoint(run)
    G, meta = load_student(ckpt)
    G = G.to(device)
    if inputs.images.shape[1] != meta["in_channels"]:
        raise DatasetError(f"student {str(ckpt)!r} takes {meta['in_channels']}-channel inputs but the inputs have "
                           f"{inputs.images.shape[1]}; pass --inputs-role x1 (triplets) or src (pairs)")
    outs = []
    for chunk in inputs.images.split(batch_size):
        x = to_float(chunk).to(device)
        if meta["image_hw"] and tuple(x.shape[-2:]) != tuple(meta["image_hw"]):
            x = F.interpolate(x, size=tuple(meta["image_hw"]), mode="bilinear", antialias=True, align_corners=False)
        outs.append(to_uint8(G(x)).permute(0, 3, 1, 2).cpu())
    return ImageSet(torch.cat(outs).contiguous(), f"student {ckpt} (step {meta['step']}) on {inputs.description}",
                    inputs.labels, inputs.images, {"checkpoint": str(ckpt), "step": meta["step"]})


def student_images(run: str | Path, inputs: str, n: int | None = None, role: str = "src", device="cpu",
                   batch_size: int = 64) -> ImageSet:
    """A student run's outputs on ``inputs`` (any :func:`load_source` spec; its ``role`` images). Triplet
    students (6 channels) take ``x1`` and ``x2`` of a triplet dataset, whatever ``role`` says."""
    from kdpipe.trainers.translate import load_student

    _, meta = load_student(latest_checkpoint(run))
    if meta["in_channels"] == 6:
        x1, x2 = (load_source(inputs, n, role=r) for r in ("x1", "x2"))
        src = ImageSet(torch.cat([x1.images, x2.images], 1), f"{inputs} x1+x2", x1.labels)
    else:
        src = load_source(inputs, n, role=role)
    return translate_source(run, src, device, batch_size)
