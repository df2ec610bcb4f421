"""Stage ``sample`` of pair tasks (seed 002 "Dataset generation", step 1): the latents to classify.

Seeds ``sample.seed + i`` for ``i < sample.n`` -> truncated ``w`` (layer 0 of ``G.mapping``), saved as
``sample/w.npy`` float32 ``[n, w_dim]`` and ``sample/seeds.npy`` int64 ``[n]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kdpipe.fsutil import atomic_write_bytes
from kdpipe.pipeline.render import Renderer
from kdpipe.pipeline.runner.shards import encode_npy
from kdpipe.pipeline.runner.stage import Context, SingleStage

MAPPING_CHUNK = 4096  # seeds per ws_from_seeds call (bounds memory; every forward has a fixed shape anyway)


class SampleStage(SingleStage):
    """``sample``: truncated w of ``sample.n`` seeds (see module docstring)."""

    name = "sample"
    sections = ("teacher", "sample")
    schema_version = 1
    device_dependent = True

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.out / "sample"]

    def run(self, ctx: Context, fingerprint: str) -> dict:
        sc = ctx.cfg.sample
        seeds = np.arange(sc.seed, sc.seed + sc.n, dtype=np.int64)
        r = Renderer.from_config(ctx.teacher.G, ctx.device, ctx.cfg.teacher, ctx.cfg.runtime.batch_size)
        w = torch.cat([r.ws_from_seeds(seeds[a:a + MAPPING_CHUNK].tolist())[:, 0].cpu()
                       for a in range(0, len(seeds), MAPPING_CHUNK)])
        (ctx.out / "sample").mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(ctx.out / "sample" / "seeds.npy", encode_npy(seeds))
        atomic_write_bytes(ctx.out / "sample" / "w.npy", encode_npy(w.numpy().astype(np.float32)))
        return {"n": int(len(seeds)), "seed_min": int(seeds[0]), "seed_max": int(seeds[-1])}
