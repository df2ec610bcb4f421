"""Data for both StarGANv2 stages: style-mixed teacher triplets (online or from shards) and a domain-folder dataset.

Every batch is a pure function of the seed and its position, so a resumed run sees the same batches:

* online triplets: batch ``k`` of rank ``r`` holds triplets ``i = (k * world + r) * B + b``; triplet ``i`` uses
  teacher seeds ``base_seed + 2i`` (content, x1) and ``base_seed + 2i + 1`` (style, x2), z from the NVlabs
  seed convention (:func:`kdpipe.pipeline.latents.z_from_seeds`) -- the pipeline's style-mix shards use the same
  rule and the same fixed-row forwards (:class:`kdpipe.pipeline.render.Renderer`), so online triplets equal the
  shards' for the same base seed and truncation (on CPU; on CUDA also the same ``runtime.batch_size``, 16);
* shard triplets: :class:`kdpipe.trainers.core.data.ShardBatches` order (seeded shard permutation + shuffle buffer),
  with the latents kept and no flips (a flip would no longer match the latents);
* domain folders: step ``k`` of rank ``r`` draws from ``numpy.random.default_rng([seed, k, r])``.

Images are float32 ``[N, 3, H, W]`` in [-1, 1].
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.errors import DatasetError
from kdpipe.pipeline.latents import mix_ws, sample_seeds, z_from_seeds
from kdpipe.pipeline.render import Renderer
from kdpipe.trainers.core.config import DataConfig
from kdpipe.images import read_image_file, to_float
from kdpipe.trainers.core.data import TRIPLET_KEYS, DataPosition, ShardBatches, batch_iterator, inspect_dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class DomainFolderError(DatasetError):
    """The finetuning folder is missing, has fewer than two domains, an empty domain or an undecodable image."""


def resize_to(img: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 3, H, H]`` -> ``[N, 3, size, size]`` by box averaging (``mode="area"``, exact 2^k pooling)."""
    return img if img.shape[-1] == size else F.interpolate(img, size=(size, size), mode="area")


# ------------------------------------------------------------------------------------------- teacher triplets

@dataclass
class TeacherTriplets:
    """One minibatch of style-mixed triplets at the teacher's resolution R_T.

    Attributes:
        x1: content images ``[N, 3, R_T, R_T]``; x2: reference images; y: style-mixed targets ``G'_T(Phi(s1, s2))``.
        ws_y: the target's latents ``[N, num_ws, w_dim]`` (its synthesis features are the Eq. 3 targets).
        y_features: ``{res: [N, C, res, res]}`` teacher synthesis features of ``ws_y`` (None until computed).
        z2: the style image's z ``[N, z_dim]`` (online only; the latent-guided student maps it), else None.
        x1_features: ``{res: [N, C, res, res]}`` teacher synthesis features of x1's latents (online always; shards
            with ``need_x1``; the X2I student's Eq. 6 targets), else None.
        z1: the content image's z ``[N, z_dim]`` (online always; shards with ``need_x1`` and json seeds), else None.
    With ``identity`` (the KD* ablation) x2 and y are x1 and ws_y is x1's latents.
    """

    x1: torch.Tensor
    x2: torch.Tensor
    y: torch.Tensor
    ws_y: torch.Tensor
    y_features: dict | None = None
    z2: torch.Tensor | None = None
    x1_features: dict | None = None
    z1: torch.Tensor | None = None


def triplet_indices(step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Triplet indices of batch ``step`` on ``rank``: ``(step * world + rank) * B + arange(B)``, int64 ``[B]``."""
    first = (step * world_size + rank) * batch_size
    return torch.arange(first, first + batch_size, dtype=torch.int64)


def online_batches(batch_size: int, start: DataPosition = DataPosition(), rank: int = 0,
                   world_size: int = 1) -> Iterator[tuple[dict[str, Any], DataPosition]]:
    """Endless ``({"index": [B] int64}, position)``; position offset = batches consumed (epoch stays 0)."""
    k = start.offset
    while True:
        yield {"index": triplet_indices(k, batch_size, rank, world_size)}, DataPosition(0, k + 1)
        k += 1


@torch.no_grad()
def triplet_latents(renderer: Renderer, index: torch.Tensor, base_seed: int, mix_layers):
    """Latents of triplets ``index``: ``(z1, z2)`` ``[N, z_dim]`` and ``(ws1, ws2, ws_y)`` ``[N, num_ws, w_dim]``.

    z from seeds ``base_seed + 2i`` / ``+ 2i + 1`` (NVlabs convention), ws by ``renderer.ws_from_seeds`` (the
    truncated mapping in fixed-row forwards, exactly as the pipeline's style-mix stage draws them);
    ``ws_y = mix_ws(ws1, ws2, mix_layers)``: ws1 on the content layers, ws2 on ``mix_layers`` (seed 000 Sec. 3.1).
    """
    G = renderer.G
    seeds = [s for i in index.tolist() for s in sample_seeds(base_seed, i, 2)]
    z = z_from_seeds(seeds, G.z_dim).to(renderer.device).view(len(index), 2, G.z_dim)
    ws = renderer.ws_from_seeds(seeds).view(len(index), 2, G.num_ws, G.w_dim)
    ws1, ws2 = ws[:, 0], ws[:, 1]
    return z[:, 0], z[:, 1], ws1, ws2, mix_ws(ws1, ws2, mix_layers)


@torch.no_grad()
def online_triplets(renderer: Renderer, index: torch.Tensor, base_seed: int, mix_layers,
                    identity: bool = False) -> TeacherTriplets:
    """Generate triplets ``index`` with the teacher (seed 000 Sec. 3.1, footnote 2: online per minibatch).

    Args:
        renderer: :class:`kdpipe.pipeline.render.Renderer` of the frozen teacher (truncation, noise mode 'const').
            Mapping and synthesis run in its fixed-row forwards, the code path of ``kdpipe generate``'s style-mix
            shards, so triplets equal the shards' for the same seeds and truncation by construction.
        index: triplet indices ``[N]`` int64 (see :func:`triplet_indices`).
        mix_layers: layers taken from w2 (:func:`kdpipe.pipeline.latents.parse_mix`).
        identity: the KD* ablation (x1, x1, x1).
    Returns:
        :class:`TeacherTriplets` with ``y_features`` filled.
    """
    z1, z2, ws1, ws2, ws_y = triplet_latents(renderer, index, base_seed, mix_layers)
    n = len(index)
    if identity:  # x2 = y = x1, so the latent-guided student maps x1's z
        img, feats = renderer.synthesize(ws1)
        return TeacherTriplets(img, img, img, ws1, feats, z1, feats, z1)
    img, feats = renderer.synthesize(torch.cat([ws1, ws2, ws_y]))
    return TeacherTriplets(img[:n], img[n:2 * n], img[2 * n:], ws_y, {r: f[2 * n:] for r, f in feats.items()}, z2,
                           {r: f[:n] for r, f in feats.items()}, z1)


class TripletShardBatches(ShardBatches):
    """:class:`ShardBatches` for style-mix shards that keeps each sample's latents and teacher hash.

    Batch dict: ``x1``, ``x2``, ``y`` float32 ``[B, 3, H, W]``, ``latents`` float32 ``[B, 3, num_ws, w_dim]``,
    ``teacher_sha256`` list[str | None], ``seeds`` list[[seed_x1, seed_x2] | None], ``truncation_psi``
    list[float | None] (json), ``key``, ``epoch``, ``index``.
    """

    def collate(self, items: list[tuple[int, int, dict]]) -> dict[str, Any]:
        out: dict[str, list] = {"x1": [], "x2": [], "y": [], "latents": [], "teacher_sha256": [], "seeds": [],
                                "truncation_psi": [], "key": []}
        for _, _, s in items:
            where = f"sample {s['__key__']!r} in {s['__url__']!r}"
            if "latents.npy" not in s or not all(k in s for k in TRIPLET_KEYS):
                keys = sorted(k for k in s if not k.startswith("__"))
                raise DatasetError(f"{where} has keys {keys}; KD needs {list(TRIPLET_KEYS)} and latents.npy "
                                   "(style-mix shards from `kdpipe generate --task style-mix`)")
            for name, k in zip(("x1", "x2", "y"), TRIPLET_KEYS):
                out[name].append(self._image(s, k, False))
            out["latents"].append(torch.from_numpy(_load_npy(s["latents.npy"], where)))
            meta = json.loads(s["json"]) if "json" in s else {}
            out["teacher_sha256"].append(meta.get("teacher_sha256"))
            out["seeds"].append(meta.get("seeds"))
            out["truncation_psi"].append(meta.get("truncation_psi"))
            out["key"].append(s["__key__"])
        shapes = {tuple(t.shape) for t in out["latents"]}
        if len(shapes) > 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[0] != 3:
            raise DatasetError(f"latents.npy of {out['key']} have shapes {sorted(shapes)}; expected [3, num_ws, w_dim]")
        batch = {k: torch.stack(v) for k, v in out.items() if k in ("x1", "x2", "y", "latents")}
        batch.update(teacher_sha256=out["teacher_sha256"], seeds=out["seeds"], key=out["key"],
                     truncation_psi=out["truncation_psi"],
                     epoch=torch.tensor([e for e, _, _ in items]), index=torch.tensor([i for _, i, _ in items]))
        return batch


def _load_npy(data: bytes, where: str) -> np.ndarray:
    import io

    try:
        return np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
    except Exception as exc:
        raise DatasetError(f"latents.npy of {where} cannot be read ({type(exc).__name__}: {exc})") from None


def shard_batches(path: str, batch_size: int, seed: int, num_workers: int = 0, shuffle_buffer: int = 256,
                  start: DataPosition = DataPosition(), rank: int = 0,
                  world_size: int = 1) -> Iterator[tuple[dict[str, Any], DataPosition]]:
    """Endless ``(batch, position_after_batch)`` of style-mix shard triplets (see :class:`TripletShardBatches`).

    Same order and resume rule as :func:`kdpipe.trainers.core.data.batch_iterator`. Raises :class:`DatasetError`
    (one line) for a missing/empty dataset, pair shards, or samples without latents.
    """
    info = inspect_dataset(path, kind="triplet")
    cfg = DataConfig(path=path, kind="triplet", batch_size=batch_size, num_workers=num_workers,
                     shuffle_buffer=shuffle_buffer, flip=False, resolution=None)
    return batch_iterator(info, cfg, seed, start, rank, world_size, dataset_cls=TripletShardBatches)


@torch.no_grad()
def shard_triplets(renderer: Renderer, batch: dict[str, Any], teacher_sha256: str | None, identity: bool = False,
                   need_z: bool = False, need_x1: bool = False) -> TeacherTriplets:
    """Turn a shard batch into :class:`TeacherTriplets`, re-synthesising y's features from its latents.

    The features come from ``renderer.synthesize`` (the fixed-row forwards of :func:`online_triplets`). With
    ``need_z`` (latent-guided KD) the style image's z is rebuilt from the json ``seeds`` (NVlabs seed convention,
    as the pipeline drew it); shards store ws, which the student's mapping network does not take. With ``need_x1``
    (the X2I student) x1's features are synthesised too and, where the json has ``seeds``, its z1 rebuilt.

    Raises:
        DatasetError: the shards were made by another teacher (``json.teacher_sha256`` differs) or with another
            truncation than ``renderer.truncation_psi`` (``json.truncation_psi``), their images are not at the
            teacher's resolution, their latents do not fit the teacher's ``[num_ws, w_dim]``, or ``need_z`` and a
            sample's json has no ``seeds``.
    """
    G, device = renderer.G, renderer.device
    for key, sha in zip(batch["key"], batch["teacher_sha256"]):
        if sha is not None and teacher_sha256 is not None and sha != teacher_sha256:
            raise DatasetError(f"shard sample {key!r} was made by teacher {sha[:12]}..., not the loaded teacher "
                               f"{teacher_sha256[:12]}...; pass the teacher that generated the shards")
    for key, psi in zip(batch["key"], batch.get("truncation_psi") or [None] * len(batch["key"])):
        if psi is not None and float(psi) != renderer.truncation_psi:
            raise DatasetError(f"shard sample {key!r} was rendered with truncation_psi={psi}, but this run uses "
                               f"teacher.truncation_psi={renderer.truncation_psi}; set --set "
                               f"teacher.truncation_psi={psi} or regenerate the shards")
    lat = batch["latents"].to(device)
    if tuple(lat.shape[2:]) != (G.num_ws, G.w_dim):
        raise DatasetError(f"shard latents are [3, {lat.shape[2]}, {lat.shape[3]}] but the teacher needs "
                           f"[3, {G.num_ws}, {G.w_dim}]; these shards come from another teacher")
    if batch["x1"].shape[-1] != G.img_resolution:
        raise DatasetError(f"shard images are {batch['x1'].shape[-1]} px but the teacher renders "
                           f"{G.img_resolution} px; these shards come from another teacher")
    x1, x2, y = (batch[k].to(device) for k in ("x1", "x2", "y"))
    z = None
    if need_z:
        seeds = batch["seeds"]
        if any(s is None or len(s) != 2 for s in seeds):
            raise DatasetError(f"shard samples {batch['key']} have no json 'seeds' [seed_x1, seed_x2], so their z "
                               "cannot be rebuilt for latent-guided KD; use loss.mode=reference or data.source=online")
        z = z_from_seeds([s[0] if identity else s[1] for s in seeds], G.z_dim).to(device)
    ws_y = lat[:, 0] if identity else lat[:, 2]
    n = len(ws_y)
    _, feats = renderer.synthesize(torch.cat([lat[:, 0], ws_y]) if need_x1 and not identity else ws_y)
    x1_feats = {r: f[:n] for r, f in feats.items()} if need_x1 else None
    feats = {r: f[-n:] for r, f in feats.items()}
    z1 = None
    if need_x1 and all(s is not None and len(s) == 2 for s in batch["seeds"]):
        z1 = z_from_seeds([s[0] for s in batch["seeds"]], G.z_dim).to(device)
    if identity:
        return TeacherTriplets(x1, x1, x1, ws_y, feats, z, x1_feats, z1)
    return TeacherTriplets(x1, x2, y, ws_y, feats, z, x1_feats, z1)


# ---------------------------------------------------------------------------------------------- domain folders

class DomainFolder:
    """A finetuning dataset ``root/<domain>/<image files>``; domain labels follow sorted folder names.

    Every image is decoded once when the folder is opened. Undecodable files are skipped and counted
    (``on_bad_image='skip'``; a warning names them and :attr:`skipped` lists them) or raise (``'error'``).

    Raises:
        DomainFolderError: missing root, fewer than two domains, or a domain without decodable images.
    """

    def __init__(self, root: str | Path, img_size: int, on_bad_image: str = "skip"):
        root = Path(root)
        if not root.is_dir():
            raise DomainFolderError(f"target dataset {str(root)!r} is not a directory; pass --data DIR with one "
                                    "sub-folder of images per domain (class)")
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(dirs) < 2:
            raise DomainFolderError(f"target dataset {str(root)!r} has {len(dirs)} domain folder(s) "
                                    f"{[d.name for d in dirs]}; StarGANv2 translates between domains, so give at "
                                    "least two sub-folders of images")
        self.root, self.img_size = root, img_size
        self.domains = [d.name for d in dirs]
        self.files: list[list[Path]] = []
        self.skipped: list[str] = []
        for d in dirs:
            good = []
            for p in sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
                try:
                    read_image_file(p)
                    good.append(p)
                except DatasetError as exc:
                    if on_bad_image == "error":
                        raise DomainFolderError(f"{exc}; fix or remove the file, or set data.on_bad_image=skip") \
                            from None
                    self.skipped.append(str(p))
            if not good:
                raise DomainFolderError(f"domain folder {str(d)!r} has no decodable images "
                                        f"({IMAGE_SUFFIXES}); add images or remove the folder")
            self.files.append(good)
        if self.skipped:
            warnings.warn(f"skipped {len(self.skipped)} undecodable image(s) in {str(root)!r}: "
                          f"{', '.join(self.skipped[:5])}{' ...' if len(self.skipped) > 5 else ''}", stacklevel=2)

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def summary(self) -> dict[str, Any]:
        """``{"root", "domains", "counts", "skipped"}`` (written beside the run as ``data.json``)."""
        return {"root": str(self.root), "domains": self.domains, "counts": [len(f) for f in self.files],
                "skipped": self.skipped}

    def _load(self, path: Path, rng: np.random.Generator, augment: bool) -> torch.Tensor:
        img = to_float(read_image_file(path))[None]
        if augment and rng.random() < 0.5:
            top, left, h, w = random_resized_crop_params(rng, img.shape[-2], img.shape[-1])
            img = img[..., top:top + h, left:left + w]
        if img.shape[-2:] != (self.img_size, self.img_size):
            img = F.interpolate(img, size=(self.img_size, self.img_size), mode="bilinear", antialias=True,
                                align_corners=False)
        if augment and rng.random() < 0.5:
            img = img.flip(-1)
        return img[0]

    def batch(self, seed: int, step: int, batch_size: int, latent_dim: int, augment: bool = True, rank: int = 0,
              world_size: int = 1) -> dict[str, torch.Tensor]:
        """StarGANv2 inputs of one step: balanced source images, same-domain reference pairs, two z per sample.

        Returns ``x_src, x_ref, x_ref2`` ``[B, 3, R, R]``, ``y_src, y_ref`` ``[B]`` int64, ``z_trg, z_trg2``
        ``[B, latent_dim]`` float32. Domains are drawn uniformly (StarGANv2's class-balanced sampler), then an
        image uniformly within the domain; ``x_ref2`` comes from ``x_ref``'s domain.
        """
        rng = np.random.default_rng([seed, step * world_size + rank])
        k = self.num_domains
        y_src, y_ref = rng.integers(k, size=batch_size), rng.integers(k, size=batch_size)
        pick = [[self.files[d][rng.integers(len(self.files[d]))] for d in ys] for ys in (y_src, y_ref, y_ref)]
        x = [torch.stack([self._load(p, rng, augment) for p in paths]) for paths in pick]
        z = torch.from_numpy(rng.standard_normal((2, batch_size, latent_dim)).astype(np.float32))
        return {"x_src": x[0], "y_src": torch.from_numpy(y_src), "x_ref": x[1], "x_ref2": x[2],
                "y_ref": torch.from_numpy(y_ref), "z_trg": z[0], "z_trg2": z[1]}


def random_resized_crop_params(rng: np.random.Generator, height: int, width: int, scale=(0.8, 1.0),
                               ratio=(0.9, 1.1)) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` as torchvision ``RandomResizedCrop.get_params`` (10 tries, then a centre crop)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def folder_batches(folder: DomainFolder, seed: int, batch_size: int, latent_dim: int, augment: bool,
                   start: DataPosition = DataPosition(), rank: int = 0,
                   world_size: int = 1) -> Iterator[tuple[dict[str, Any], DataPosition]]:
    """Endless ``(batch, position)`` of :meth:`DomainFolder.batch`; position offset = steps consumed."""
    k = start.offset
    while True:
        yield folder.batch(seed, k, batch_size, latent_dim, augment, rank, world_size), DataPosition(0, k + 1)
        k += 1
