"""Finetuning data of the X2I student: small paired (condition, image) datasets held in memory, and their batches.

Two layouts (seed 000 Sec. 3, stage two: "finetuning with the real target data"):

* a folder of class sub-folders ``root/<class>/<images>`` (condition kind ``label``; sorted folder names give
  labels 0..K-1, as :class:`kdpipe.trainers.stargan2.data.DomainFolder`, which lists and checks them);
* webdataset shards (``kdpipe.trainers.core.data.resolve_shards`` locations) whose samples hold an image
  (``png`` / ``jpg`` / ``jpeg`` / ``img.png``) and the condition: ``cls`` (label, decimal text), ``cond.npy``
  (text / audio vector ``[D]`` float) or ``seg.png`` (segmentation: class index = the PNG's first channel).

Batch ``k`` of rank ``r`` is drawn by ``numpy.random.default_rng([seed, k * world + r])``: ``batch_size`` sample
indices uniformly with replacement, then the student's z ``[B, z_dim]`` (standard normal), so a resumed run sees
the same batches. Conditions as tensors: label one-hot float32 ``[B, K]``, vector float32 ``[B, D]``, seg one-hot
float32 ``[B, K, R, R]``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.errors import DatasetError
from kdpipe.images import decode_image, read_image_file, to_float
from kdpipe.trainers.core.data import DataPosition, resolve_shards, shard_samples
from kdpipe.trainers.stargan2.data import DomainFolder

IMAGE_KEYS = ("png", "jpg", "jpeg", "img.png")
COND_KEYS = {"label": "cls", "text": "cond.npy", "audio": "cond.npy", "seg": "seg.png"}


def resize_images(img: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 3, H, W]`` float -> ``[N, 3, size, size]`` (bilinear, antialiased; unchanged if already that size)."""
    if img.shape[-2:] == (size, size):
        return img
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def one_hot_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 ``[N]`` -> float32 ``[N, K]``. Raises DatasetError for a label outside [0, K)."""
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DatasetError(f"label {int(bad[0])} is outside [0, {num_classes}); set condition.num_classes")
    return F.one_hot(labels, num_classes).float()


def one_hot_maps(seg: torch.Tensor, num_classes: int, size: int) -> torch.Tensor:
    """Class-index maps int64 ``[N, H, W]`` -> one-hot float32 ``[N, K, size, size]`` (nearest resize)."""
    maps = one_hot_labels(seg.flatten(), num_classes).view(*seg.shape, num_classes).permute(0, 3, 1, 2)
    return F.interpolate(maps, size=(size, size), mode="nearest") if maps.shape[-1] != size else maps


class PairedData:
    """A small paired dataset in memory: ``images`` float32 ``[N, 3, R, R]`` in [-1, 1] and ``conditions``
    (label: int64 ``[N]``; text/audio: float32 ``[N, D]``; seg: int64 ``[N, H, W]``).

    Args:
        path: class-folder root or shard location (module doc). kind / num_classes: the condition.
        img_size: R; 0 = the first image's size. limit: refuse more samples than this.
    Raises:
        DatasetError: missing data, wrong layout for the kind, a condition of the wrong shape, too many samples.
    """

    def __init__(self, path: str, kind: str, num_classes: int, img_size: int = 0, limit: int = 100000,
                 on_bad_image: str = "skip"):
        self.path, self.kind, self.num_classes, self.skipped = str(path), kind, num_classes, []
        self.classes: list[str] | None = None
        if Path(path).is_dir() and not any(Path(path).glob("*.tar")) and not (Path(path) / "shards").is_dir():
            images, conds = self._from_folder(path, img_size, limit, on_bad_image)
        else:
            images, conds = self._from_shards(path, limit)
        size = img_size or images[0].shape[-1]
        self.images = torch.cat([resize_images(to_float(x)[None], size) for x in images])
        self.conditions = torch.stack(conds) if kind != "seg" else torch.stack(conds).long()
        if kind == "label":
            one_hot_labels(self.conditions, num_classes)  # range check
        if kind == "seg":
            one_hot_labels(self.conditions.flatten(), num_classes)
        self.img_size = size

    def _from_folder(self, root: str, img_size: int, limit: int, on_bad_image: str):
        if self.kind != "label":
            raise DatasetError(f"{root!r} is a folder of class sub-folders, which gives label conditions, but "
                               f"condition.kind={self.kind}; pass shards with {COND_KEYS[self.kind]!r} per sample")
        folder = DomainFolder(root, img_size or 8, on_bad_image)
        self.classes, self.skipped = folder.domains, folder.skipped
        if len(folder.domains) != self.num_classes:
            raise DatasetError(f"{root!r} has {len(folder.domains)} class folders but condition.num_classes="
                               f"{self.num_classes}; set --set condition.num_classes={len(folder.domains)}")
        files = [(p, k) for k, paths in enumerate(folder.files) for p in paths]
        if len(files) > limit:
            raise DatasetError(f"{root!r} has {len(files)} images, more than data.limit={limit} held in memory")
        return [read_image_file(p) for p, _ in files], [torch.tensor(k) for _, k in files]

    def _from_shards(self, path: str, limit: int):
        images, conds, key = [], [], COND_KEYS[self.kind]
        for url in resolve_shards(path):
            for s in shard_samples(url):
                where = f"sample {s['__key__']!r} in {url!r}"
                img_key = next((k for k in IMAGE_KEYS if k in s), None)
                if img_key is None or key not in s:
                    keys = sorted(k for k in s if not k.startswith("__"))
                    raise DatasetError(f"{where} has keys {keys}; condition.kind={self.kind} needs an image "
                                       f"({'/'.join(IMAGE_KEYS)}) and {key!r}")
                images.append(decode_image(s[img_key], where))
                conds.append(self._condition(s[key], where))
                if len(images) > limit:
                    raise DatasetError(f"{path!r} has more than data.limit={limit} samples (held in memory)")
        if not images:
            raise DatasetError(f"{path!r} holds no samples")
        return images, conds

    def _condition(self, data: bytes, where: str) -> torch.Tensor:
        try:
            if self.kind == "label":
                return torch.tensor(int(data.decode().strip()))
            if self.kind == "seg":
                return decode_image(data, where)[0].long()
            vec = np.load(io.BytesIO(data), allow_pickle=False)
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetError(f"condition of {where} cannot be read ({type(exc).__name__}: {exc})") from None
        if vec.ndim != 1:
            raise DatasetError(f"cond.npy of {where} has shape {list(vec.shape)}; expected one vector [D]")
        return torch.from_numpy(vec.astype(np.float32))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def cond_in_dim(self) -> int:
        """Length of a vector condition (K for labels, D for text/audio); 0 for seg."""
        return {"label": self.num_classes, "seg": 0}.get(self.kind, int(self.conditions.shape[-1]))

    def encode(self, cond: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Stored conditions -> the tensors G_S / D_S take (module doc)."""
        if self.kind == "label":
            return one_hot_labels(cond, self.num_classes)
        if self.kind == "seg":
            return one_hot_maps(cond, self.num_classes, size or self.img_size)
        return cond

    def batch(self, seed: int, step: int, batch_size: int, z_dim: int, rank: int = 0,
              world_size: int = 1) -> dict[str, torch.Tensor]:
        """``{"image": [B, 3, R, R], "condition": encoded [B, ...], "z": [B, z_dim]}`` of step ``step`` (module doc)."""
        rng = np.random.default_rng([seed, step * world_size + rank])
        idx = torch.from_numpy(rng.integers(len(self), size=batch_size))
        z = torch.from_numpy(rng.standard_normal((batch_size, z_dim)).astype(np.float32))
        return {"image": self.images[idx], "condition": self.encode(self.conditions[idx]), "z": z}

    def summary(self) -> dict[str, Any]:
        """``{"path", "kind", "samples", "classes", "skipped"}`` (written beside the run as ``data.json``)."""
        return {"path": self.path, "kind": self.kind, "samples": len(self), "classes": self.classes,
                "skipped": self.skipped}


def paired_batches(data: PairedData, seed: int, batch_size: int, z_dim: int, start: DataPosition = DataPosition(),
                   rank: int = 0, world_size: int = 1) -> Iterator[tuple[dict[str, Any], DataPosition]]:
    """Endless ``(batch, position)`` of :meth:`PairedData.batch`; position offset = steps consumed."""
    k = start.offset
    while True:
        yield data.batch(seed, k, batch_size, z_dim, rank, world_size), DataPosition(0, k + 1)
        k += 1
