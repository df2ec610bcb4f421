"""Stage ``render`` for triplet tasks (style-mix, morph): sharded, resumable, rank-splittable.

Sample ``i``: seeds ``s1 = seed + 2i`` (x1, content) and ``s2 = seed + 2i + 1`` (x2, style/reference), or
entries ``2i`` and ``2i + 1`` of ``render.seeds`` when a seed list is given;
``w1, w2`` = truncated ``G.mapping`` outputs; ``x1 = G.synthesis(w1)``, ``x2 = G.synthesis(w2)``;
target ``y = G.synthesis(mix_ws(w1, w2, layers))`` (style-mix, seed 000 Sec. 3.1: w1 on the first layers)
or ``G.synthesis((w1 + w2) / 2)`` (morph, seed 002 Sec. 5). Shard ``k`` holds samples
``[k * shard_size, min((k + 1) * shard_size, n))``.

Sample layout (webdataset key ``%08d`` of i): ``x1.png``, ``x2.png``, ``y.png`` (RGB uint8),
``json`` (task, index, seeds, op, mix layers, truncation, noise mode, teacher), ``latents.npy`` float32
``[3, num_ws, w_dim]`` = (w1, w2, w_y) as fed to the synthesis network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kdpipe.pipeline.latents import mix_ws, morph_ws, parse_mix, sample_seeds
from kdpipe.pipeline.render import Renderer, default_encode_workers, pipelined
from kdpipe.pipeline.runner.sharded import ShardedStage
from kdpipe.pipeline.runner.shards import encode_json, encode_npy, encode_png, write_shard
from kdpipe.pipeline.runner.stage import Context

SCHEMA_VERSION = 1


class TripletRender(ShardedStage):
    """The ``render`` stage of triplet tasks (see module docstring)."""

    name = "render"
    sections = ("teacher", "render")
    schema_version = SCHEMA_VERSION

    def validate(self, cfg, teacher) -> None:
        """Checks that need the teacher (before anything is written). Raises ConfigError."""
        if cfg.render.op == "style-mix":
            parse_mix(cfg.render.mix, teacher.G.num_ws)

    def n_items(self, ctx: Context) -> int:
        return ctx.cfg.render.n

    def shard_size(self, ctx: Context) -> int:
        return ctx.cfg.render.shard_size

    def write_one(self, ctx: Context, k: int, indices: range, path: Path, progress, fingerprint: str) -> None:
        cfg, teacher = ctx.cfg, ctx.teacher
        G = teacher.G
        rc, tc, rt = cfg.render, cfg.teacher, cfg.runtime
        renderer = Renderer.from_config(G, ctx.device, tc, rt.batch_size)
        layers = parse_mix(rc.mix, G.num_ws) if rc.op == "style-mix" else None
        per_forward = max(1, renderer.batch_size // 3)  # 3 images per sample, one forward per chunk
        chunks = [indices[a:a + per_forward] for a in range(0, len(indices), per_forward)]
        meta = {"task": cfg.task, "op": rc.op, "mix_layers_from_x2": layers,
                "truncation_psi": tc.truncation_psi, "truncation_cutoff": tc.truncation_cutoff,
                "noise_mode": tc.noise_mode, "teacher": teacher.name, "teacher_sha256": teacher.sha256}

        def render(chunk):
            seeds = [sample_seeds(rc.seed, i, 2, rc.seeds) for i in chunk]
            ws = renderer.ws_from_seeds([s for pair in seeds for s in pair]).reshape(len(chunk), 2, G.num_ws, -1)
            w1, w2 = ws[:, 0], ws[:, 1]
            wy = mix_ws(w1, w2, layers) if layers is not None else morph_ws(w1, w2)
            lat = torch.stack([w1, w2, wy], dim=1)  # [B, 3, num_ws, w_dim]
            imgs = renderer.images(lat.reshape(-1, *lat.shape[2:]))
            imgs = imgs.reshape(len(chunk), 3, *imgs.shape[1:])  # [B, 3, H, W, C]
            lat = lat.cpu().numpy().astype(np.float32)
            progress.update(len(chunk))
            return [(i, s, imgs[j], lat[j]) for j, (i, s) in enumerate(zip(chunk, seeds))]

        level, encoder = rc.png_compress_level, rc.png_encoder

        def encode(item):
            i, seeds, imgs, lat = item
            info = dict(meta, index=i, seeds=seeds)
            x1, x2, y = (encode_png(im, level, encoder) for im in imgs)
            return {"__key__": f"{i:08d}", "x1.png": x1, "x2.png": x2, "y.png": y, "json": encode_json(info),
                    "latents.npy": encode_npy(lat)}

        rows = [{"key": f"{i:08d}", "shard": path.name, "index": i, "seed_x1": s1, "seed_x2": s2}
                for i in indices for s1, s2 in [sample_seeds(rc.seed, i, 2, rc.seeds)]]
        workers = rt.encode_workers if rt.encode_workers is not None else default_encode_workers(ctx.device)
        write_shard(path, pipelined(chunks, render, encode, workers, device=ctx.device), fingerprint, rows)
