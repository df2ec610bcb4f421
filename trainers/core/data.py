"""Streaming reader of kdpipe webdataset shards, with a data order that is a pure function of the seed.

Shards hold pair samples (``src.png``, ``tgt.png``) or triplet samples (``x1.png``, ``x2.png``, ``y.png``),
plus ``json`` and ``latents.npy`` (see the shard format in DESIGN.md). Tars are read with webdataset
(``tar_file_expander`` + ``group_by_keys``); URLs may be local paths, ``pipe:`` commands or fsspec URLs.

Data order (why resume is exact): the training stream is the concatenation of epochs 0, 1, 2, ...
Epoch ``e`` visits the sorted shard list in the order ``default_rng([seed, e]).permutation`` and passes
the samples through a shuffle buffer driven by the same generator, so the sample sequence of an epoch
depends only on (seed, e, shard contents). The position in the stream is ``DataPosition(epoch,
offset)``: samples of epoch ``epoch`` already consumed (an offset past the epoch's end carries into the
next epoch). Resuming re-reads the skipped samples' bytes but does not decode them.

Splitting (DistributedSampler-equivalent): sample ``g`` of the stream (counted from the start or the
resume point, always a multiple of world_size apart) goes to rank ``g % world_size``; rank-local batch
``k`` is built by DataLoader worker ``k % num_workers``, and the DataLoader hands batches back
round-robin, so the batches are identical for any ``num_workers`` (each worker reads all bytes but
decodes only its own batches). Horizontal flips are drawn from ``default_rng([seed, e, index])``.
"""

from __future__ import annotations

import glob as globlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from kdpipe.errors import DatasetError, KdpipeError
from kdpipe.images import decode_image, to_float
from kdpipe.trainers.core.finished import require_finished, verify_shard

from .config import DataConfig

PAIR_KEYS = ("src.png", "tgt.png")
TRIPLET_KEYS = ("x1.png", "x2.png", "y.png")
KIND_KEYS = {"pair": PAIR_KEYS, "triplet": TRIPLET_KEYS}
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class DataPosition:
    """Where the stream resumes: ``offset`` samples of epoch ``epoch`` are consumed (may exceed its length)."""

    epoch: int = 0
    offset: int = 0

    def to_dict(self) -> dict[str, int]:
        """``{"epoch": e, "offset": o}`` as stored in checkpoints."""
        return {"epoch": self.epoch, "offset": self.offset}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataPosition":
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["epoch"]), int(d["offset"]))


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`inspect_dataset` found: shard URLs (sorted), sample kind, task name and image size."""

    urls: tuple[str, ...]
    kind: str
    """``pair`` or ``triplet``."""
    task: str | None
    """The ``task`` field of the first sample's json (e.g. ``gender``), None if absent."""
    image_hw: tuple[int, int]
    """(H, W) of the first sample's images in pixels."""

    @property
    def in_channels(self) -> int:
        """Student input channels: 3 for pairs, 6 (x1 and x2 concatenated) for triplets."""
        return 3 if self.kind == "pair" else 6


# ----------------------------------------------------------------------------------------------- shard lists

def _is_remote(s: str) -> bool:
    return "://" in s and not s.startswith("file://")


def resolve_shards(path: str | Path | Sequence[str | Path]) -> list[str]:
    """Expand a dataset location into a sorted list of shard URLs.

    Accepts ``OUT/<task>`` (uses ``shards/*.tar``; its SHA256SUMS must exist: see
    :mod:`kdpipe.trainers.core.finished`), a directory of tars (with a SHA256SUMS beside or above it),
    one tar, a glob, a brace pattern, an fsspec URL (directory, glob or braces), a ``pipe:`` command
    (brace-expanded), or a list of any of these.

    Raises:
        DatasetError: the location does not exist, holds no ``*.tar``, is unfinished (no SHA256SUMS), or a
            listed shard is missing.
    """
    if isinstance(path, (list, tuple)):
        return [u for p in path for u in resolve_shards(p)]
    s = str(path)
    if not s:
        raise DatasetError("no dataset given; pass --data OUT/<task> (the directory holding shards/)")
    if s.startswith("pipe:"):
        return wds.shardlists.expand_urls(s)
    if _is_remote(s):
        import fsspec

        fs, root = fsspec.core.url_to_fs(s)
        if "{" in s:
            urls = wds.shardlists.expand_urls(s)
        elif _GLOB_CHARS.search(root):
            urls = [fs.unstrip_protocol(p) for p in sorted(fs.glob(root))]
        elif fs.isdir(root):
            sub = root.rstrip("/") + "/shards"
            base = sub if fs.isdir(sub) else root.rstrip("/")
            urls = [fs.unstrip_protocol(p) for p in sorted(fs.glob(base + "/*.tar"))]
        elif fs.exists(root):
            urls = [s]
        else:
            raise DatasetError(f"dataset {s!r} does not exist; check the URL (expected OUT/<task> or *.tar)")
        if not urls:
            raise DatasetError(f"no *.tar shards found at {s!r}; expected OUT/<task>/shards/*.tar")
        return urls
    s = s[len("file://"):] if s.startswith("file://") else s
    if "{" in s:
        urls = wds.shardlists.expand_urls(s)
    elif _GLOB_CHARS.search(s):
        urls = sorted(globlib.glob(s))
    else:
        p = Path(s)
        if p.is_dir():
            shard_dir = p / "shards" if (p / "shards").is_dir() else p
            tars = sorted(shard_dir.glob("*.tar"))
            if tars:  # OUT/<task>, or OUT/<task>/shards whose SHA256SUMS is one level up
                require_finished(p.parent if shard_dir == p and (p.parent / "SHA256SUMS").is_file() else p)
            urls = [str(t) for t in tars]
        elif p.is_file():
            urls = [s]
        else:
            raise DatasetError(f"dataset {s!r} does not exist; pass OUT/<task> as written by `kdpipe generate`")
    if not urls:
        raise DatasetError(f"no *.tar shards found at {s!r}; expected OUT/<task>/shards/<task>-000000.tar ...")
    missing = [u for u in urls if not Path(u).is_file()]
    if missing:
        raise DatasetError(f"shard {missing[0]!r} is missing ({len(missing)} of {len(urls)}); "
                           "re-run the generate command or fix the pattern")
    return urls


# ------------------------------------------------------------------------------------------------ raw samples

def _open_url(url: str):
    if url.startswith("pipe:") or not _is_remote(url):
        return wds.gopen(url[len("file://"):] if url.startswith("file://") else url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


def shard_samples(url: str) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard: dicts ``{"__key__", "__url__", "src.png": bytes, ...}`` (nothing decoded).

    Raises:
        DatasetError: the shard cannot be opened or is not a readable tar.
    """
    verify_shard(url)  # once per file: a shard differing from SHA256SUMS is never read
    try:
        stream = _open_url(url)
    except Exception as exc:
        raise DatasetError(f"cannot open shard {url!r} ({type(exc).__name__}: {exc})") from None
    try:
        yield from group_by_keys(tar_file_expander([{"url": url, "stream": stream}]))
    except KdpipeError:
        raise
    except Exception as exc:
        reason = (str(exc).splitlines() or [""])[0][:160]
        raise DatasetError(f"shard {url!r} is corrupt or truncated ({type(exc).__name__}: {reason}); "
                           "regenerate it") from None
    finally:
        stream.close()


def _buffer_shuffle(samples: Iterator[dict], rng: np.random.Generator, bufsize: int) -> Iterator[dict]:
    """Shuffle a stream through a buffer of ``bufsize`` items, drawing only from ``rng``."""
    if bufsize <= 1:
        yield from samples
        return
    buf: list[dict] = []
    for s in samples:
        if len(buf) < bufsize:
            buf.append(s)
            continue
        j = int(rng.integers(bufsize))
        yield buf[j]
        buf[j] = s
    for j in rng.permutation(len(buf)):
        yield buf[int(j)]


def epoch_samples(urls: Sequence[str], seed: int, epoch: int, shuffle_buffer: int) -> Iterator[dict]:
    """Raw samples of one epoch in its deterministic order (shard permutation + seeded buffer shuffle)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(urls))
    chained = (s for j in order for s in shard_samples(urls[int(j)]))
    yield from _buffer_shuffle(chained, rng, shuffle_buffer)


def sample_stream(urls: Sequence[str], seed: int, shuffle_buffer: int,
                  start: DataPosition = DataPosition()) -> Iterator[tuple[int, int, dict]]:
    """Endless ``(epoch, index_in_epoch, raw_sample)`` stream starting at ``start``.

    Raises:
        DatasetError: an epoch yields no samples (empty dataset).
    """
    epoch, skip = start.epoch, start.offset
    while True:
        n = 0
        for i, sample in enumerate(epoch_samples(urls, seed, epoch, shuffle_buffer)):
            n += 1
            if i >= skip:
                yield epoch, i, sample
        if n == 0:
            raise DatasetError(f"dataset has no samples ({len(urls)} shard(s), first {urls[0]!r}); "
                               "regenerate it or point --data at a non-empty task")
        skip, epoch = max(0, skip - n), epoch + 1


# -------------------------------------------------------------------------------------------------- decoding

def _kind_of(sample: dict) -> str | None:
    for kind, keys in KIND_KEYS.items():
        if all(k in sample for k in keys):
            return kind
    return None


def inspect_dataset(path: str | Path | Sequence[str], kind: str = "auto") -> DatasetInfo:
    """Resolve shards and read the first sample to learn the sample kind, task name and image size.

    Args:
        path: any location :func:`resolve_shards` accepts.
        kind: ``auto``, or the kind the trainer expects (``pair`` / ``triplet``).
    Raises:
        DatasetError: no shards, no samples, unknown sample layout, or a kind other than ``kind``.
    """
    urls = resolve_shards(path)
    first = next((s for u in urls for s in shard_samples(u)), None)
    if first is None:
        raise DatasetError(f"dataset {str(path)!r} is empty: its {len(urls)} shard(s) hold no samples; "
                           "regenerate it")
    found = _kind_of(first)
    if found is None:
        keys = sorted(k for k in first if not k.startswith("__"))
        raise DatasetError(f"sample {first['__key__']!r} in {first['__url__']!r} has keys {keys}; expected "
                           f"{list(PAIR_KEYS)} (pairs) or {list(TRIPLET_KEYS)} (triplets)")
    if kind != "auto" and kind != found:
        raise DatasetError(f"dataset {str(path)!r} holds {found} samples {list(KIND_KEYS[found])} but this run "
                           f"expects {kind} samples {list(KIND_KEYS[kind])}; pass --kind auto or another --data")
    task = None
    if "json" in first:
        try:
            task = json.loads(first["json"]).get("task")
        except (ValueError, AttributeError):
            task = None
    img = decode_image(first[KIND_KEYS[found][0]], f"{first['__key__']!r} in {first['__url__']!r}")
    return DatasetInfo(tuple(urls), found, task, (int(img.shape[1]), int(img.shape[2])))


class ShardBatches(torch.utils.data.IterableDataset):
    """Endless batches for one rank (and, inside a DataLoader, one worker) — see the module docstring.

    Yields dicts: ``input`` float32 [B, 3|6, H, W] in [-1, 1] (pairs: src, or tgt if direction=reverse;
    triplets: cat(x1, x2) on channels), ``target`` float32 [B, 3, H, W] in [-1, 1], ``key`` list[str],
    ``epoch`` / ``index`` int64 [B] (stream position of each sample).
    """

    def __init__(self, info: DatasetInfo, cfg: DataConfig, seed: int, start: DataPosition = DataPosition(),
                 rank: int = 0, world_size: int = 1):
        super().__init__()
        self.info, self.cfg, self.seed, self.start = info, cfg, seed, start
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        wi = torch.utils.data.get_worker_info()
        worker, num_workers = (wi.id, wi.num_workers) if wi is not None else (0, 1)
        bsz, world, mine = self.cfg.batch_size, self.world_size, []
        local = 0
        stream = sample_stream(self.info.urls, self.seed, self.cfg.shuffle_buffer, self.start)
        for g, (epoch, index, sample) in enumerate(stream):
            if g % world != self.rank:
                continue
            k = local // bsz
            local += 1
            if k % num_workers == worker:
                mine.append((epoch, index, sample))
                if len(mine) == bsz:
                    yield self.collate(mine)
                    mine = []

    def _names(self) -> tuple[list[str], str]:
        if self.info.kind == "pair":
            src, tgt = PAIR_KEYS if self.cfg.direction == "forward" else PAIR_KEYS[::-1]
            return [src], tgt
        return list(TRIPLET_KEYS[:2]), TRIPLET_KEYS[2]

    def _image(self, sample: dict, name: str, flip: bool) -> torch.Tensor:
        where = f"{name} of sample {sample['__key__']!r} in {sample['__url__']!r}"
        res = self.cfg.resolution  # None: every image must have the first sample's size (checked from the header)
        img = to_float(decode_image(sample[name], where, expected_hw=None if res is not None else self.info.image_hw))
        if res is not None and tuple(img.shape[1:]) != (res, res):
            img = F.interpolate(img[None], size=(res, res), mode="bilinear", antialias=True,
                                align_corners=False)[0]
        return img.flip(-1) if flip else img

    def collate(self, items: list[tuple[int, int, dict]]) -> dict[str, Any]:
        """Decode and stack raw samples ``(epoch, index, sample)`` into one batch dict."""
        in_names, out_name = self._names()
        inputs, targets = [], []
        for epoch, index, s in items:
            if _kind_of(s) != self.info.kind:
                keys = sorted(k for k in s if not k.startswith("__"))
                raise DatasetError(f"sample {s['__key__']!r} in shard {s['__url__']!r} has keys {keys}, not the "
                                   f"{self.info.kind} keys {list(KIND_KEYS[self.info.kind])}; a shard of another "
                                   "task is mixed into this dataset")
            flip = self.cfg.flip and bool(np.random.default_rng([self.seed, epoch, index, 1]).random() < 0.5)
            inputs.append(torch.cat([self._image(s, n, flip) for n in in_names], 0))
            targets.append(self._image(s, out_name, flip))
        sizes = {tuple(t.shape[1:]) for t in inputs + targets}
        if len(sizes) > 1:
            raise DatasetError(f"images of different sizes {sorted(sizes)} in one batch "
                               f"(keys {[s['__key__'] for _, _, s in items]}); set data.resolution to resize")
        return {
            "input": torch.stack(inputs), "target": torch.stack(targets),
            "key": [s["__key__"] for _, _, s in items],
            "epoch": torch.tensor([e for e, _, _ in items], dtype=torch.int64),
            "index": torch.tensor([i for _, i, _ in items], dtype=torch.int64),
        }


def _one_line(exc: KdpipeError) -> KdpipeError:
    """DataLoader re-raises worker errors with the traceback in the message; keep the original message only."""
    last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
    return type(exc)(re.sub(r"^[\w.]*(Error|Exception): ", "", last))


def batch_iterator(info: DatasetInfo, cfg: DataConfig, seed: int, start: DataPosition = DataPosition(),
                   rank: int = 0, world_size: int = 1,
                   dataset_cls: type = None) -> Iterator[tuple[dict[str, Any], DataPosition]]:
    """Endless ``(batch, position_after_batch)`` for this rank; ``position_after_batch`` is what a
    checkpoint stores so that a resumed run continues with the next batch. Same for any num_workers.

    ``dataset_cls`` (default :class:`ShardBatches`) lets a trainer decode more of each sample (e.g. latents)
    with the same order and resume rule.

    Raises:
        DatasetError: (one line) bad samples found while streaming.
    """
    ds = (dataset_cls or ShardBatches)(info, cfg, seed, start, rank, world_size)
    if cfg.num_workers == 0:
        source: Any = iter(ds)
    else:
        source = iter(torch.utils.data.DataLoader(
            ds, batch_size=None, num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(seed)))  # keeps the global RNG untouched
    while True:
        try:
            batch = next(source)
        except KdpipeError as exc:
            raise _one_line(exc) from None
        pos = DataPosition(int(batch["epoch"][-1]), int(batch["index"][-1]) + world_size - rank)
        yield batch, pos
