"""Tiny webdataset shards in the kdpipe shard format, for trainer tests (no teacher needed).

Pairs: ``tgt = colour_edit(src)`` — a fixed per-pixel edit (channels rotated and inverted), so a student
can learn it and the identity mapping is far from the target. Triplets: ``y = (x1 + x2) / 2``.
Layout as written by the pipeline: ``<root>/<task>/shards/<task>-%06d.tar``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import PIL.Image
import webdataset as wds

# Tiny pix2pixHD: 32 px, a few thousand parameters; runs a step in ~10 ms on a CPU core.
TINY_P2P = {
    "model.ngf": 8, "model.n_downsample_global": 2, "model.n_blocks_global": 1, "model.ndf": 8,
    "model.n_layers_D": 2, "model.num_D": 2, "data.num_workers": 0, "data.shuffle_buffer": 8,
    "loop.device": "cpu", "loop.deterministic": True, "loop.progress": False, "loop.log_every": 1,
    "loop.sample_every": 0, "model.vgg_loss": False,
}


def smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: a colour gradient plus three Gaussian blobs, each channel at mean 0.5, std 0.18."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.zeros((size, size, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-1, 1, 2)
        img[..., c] = 0.5 + 0.25 * (a * xx + b * yy)
        for _ in range(3):
            cx, cy, s, amp = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3), rng.uniform(-0.4, 0.4)
            img[..., c] += amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    # Same per-channel mean and std in every image: pix2pixHD's instance norm discards per-image colour
    # statistics after the first conv, so only an edit that preserves them is learnable.
    img = 0.5 + 0.18 * (img - img.mean(axis=(0, 1))) / (img.std(axis=(0, 1)) + 1e-6)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def colour_edit(src: np.ndarray) -> np.ndarray:
    """The 'teacher edit' of the pair fixtures: rotate RGB -> BRG and invert. uint8 [H, W, 3] -> same."""
    return (255 - src[..., [2, 0, 1]]).astype(np.uint8)


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _write(root: Path, task: str, samples: list[dict], per_shard: int) -> Path:
    shard_dir = root / task / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for k in range(0, len(samples), per_shard):
        with wds.TarWriter(str(shard_dir / f"{task}-{k // per_shard:06d}.tar")) as w:
            for s in samples[k:k + per_shard]:
                w.write(s)
    write_sums(root / task)
    return root / task


def write_sums(task_dir: Path) -> None:
    """``SHA256SUMS`` over ``shards/*.tar``, as ``kdpipe generate`` finishes a dataset (trainers require it)."""
    from kdpipe.fsutil import file_sha256

    tars = sorted((task_dir / "shards").glob("*.tar"))
    (task_dir / "SHA256SUMS").write_text("".join(f"{file_sha256(t)}  shards/{t.name}\n" for t in tars))


def make_pair_shards(root: str | Path, n: int = 16, size: int = 32, per_shard: int = 8, seed: int = 0,
                     task: str = "brightness") -> Path:
    """Write ``n`` pair samples (src.png, tgt.png = colour_edit(src), json, latents.npy); returns OUT/<task>."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        src = smooth_image(rng, size)
        meta = {"task": task, "index": i, "seed": seed + i, "direction": "forward"}
        samples.append({"__key__": f"{i:08d}", "src.png": png(src), "tgt.png": png(colour_edit(src)),
                        "json": json.dumps(meta).encode(), "latents.npy": np.zeros((2, 4, 8), np.float32)})
    return _write(Path(root), task, samples, per_shard)


def make_triplet_shards(root: str | Path, n: int = 8, size: int = 32, per_shard: int = 4, seed: int = 1,
                        task: str = "style-mix") -> Path:
    """Write ``n`` triplet samples (x1.png, x2.png, y.png = mean, json, latents.npy); returns OUT/<task>."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        x1, x2 = smooth_image(rng, size), smooth_image(rng, size)
        y = ((x1.astype(np.uint16) + x2) // 2).astype(np.uint8)
        meta = {"task": task, "index": i, "seed": seed + i}
        samples.append({"__key__": f"{i:08d}", "x1.png": png(x1), "x2.png": png(x2), "y.png": png(y),
                        "json": json.dumps(meta).encode(), "latents.npy": np.zeros((3, 4, 8), np.float32)})
    return _write(Path(root), task, samples, per_shard)


def p2p_overrides(data: Path, out: Path, steps: int, **extra) -> dict:
    """TINY_P2P plus data/out/steps and any ``{"section.field": value}`` extras."""
    return {**TINY_P2P, "data.path": str(data), "loop.out_dir": str(out), "loop.steps": steps, **extra}
