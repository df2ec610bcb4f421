"""Batched teacher rendering and the render-ahead / encode-behind sample pipeline.

Rendering is bit-identical for any batch size on CPU: every forward runs on >= 2 samples (batch 1 takes a
different BLAS/conv path, ~1e-6 off, which flips a few uint8 pixels), the modulated-conv form is chosen per
device and never per batch, and each device->host copy covers one whole batch.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from kdpipe.pipeline.latents import z_from_seeds
from kdpipe.pipeline.networks import Generator


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` float in [-1, 1] -> ``[N, H, W, 3]`` uint8 (NVlabs generate.py: ``x*127.5 + 128``, clamp)."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)


class Renderer:
    """Maps seeds to ws and ws to uint8 images with a fixed batch size on one device.

    Args:
        G: the teacher generator (eval mode).
        device: torch device the generator lives on.
        truncation_psi: ``w_avg + psi (w - w_avg)``; 1 disables truncation.
        truncation_cutoff: truncate only layers ``[0, cutoff)``; ``None`` = all layers.
        noise_mode: ``'const'`` or ``'none'`` (``'random'`` would make samples unreproducible).
        batch_size: images per synthesis forward (does not change output on CPU).
        fused_modconv: ``None`` = per-device default (:func:`kdpipe.pipeline.networks.default_fused_modconv`).
    """

    def __init__(self, G: Generator, device: torch.device, truncation_psi: float = 0.7,
                 truncation_cutoff: int | None = None, noise_mode: str = "const", batch_size: int = 16,
                 fused_modconv: bool | None = None):
        self.G, self.device = G, torch.device(device)
        self.truncation_psi, self.truncation_cutoff, self.noise_mode = truncation_psi, truncation_cutoff, noise_mode
        self.batch_size = max(2, int(batch_size))
        if fused_modconv is None:
            fused_modconv = self.device.type != "cpu"
        self.fused_modconv = fused_modconv

    def _batched(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        outs = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start:start + self.batch_size]
            single = chunk.shape[0] == 1
            if single:  # batch 1 runs other kernels: pad to 2 so results never depend on batching
                chunk = torch.cat([chunk, chunk])
            out = fn(chunk)
            outs.append(out[:1] if single else out)
        return torch.cat(outs) if outs else x.new_zeros(0)

    @torch.no_grad()
    def ws_from_seeds(self, seeds: Sequence[int]) -> torch.Tensor:
        """Truncated ws of each seed: ``[len(seeds), num_ws, w_dim]`` float32 on ``device``."""
        z = z_from_seeds(seeds, self.G.z_dim).to(self.device)
        return self._batched(z, lambda zz: self.G.mapping(zz, truncation_psi=self.truncation_psi,
                                                          truncation_cutoff=self.truncation_cutoff))

    @torch.no_grad()
    def images(self, ws: torch.Tensor) -> np.ndarray:
        """uint8 images ``[N, H, W, 3]`` (host memory) for ws ``[N, num_ws, w_dim]``; one host copy per batch."""
        ws = ws.to(self.device)
        out = self._batched(ws, lambda w: to_uint8(self.G.synthesis(w, noise_mode=self.noise_mode,
                                                                     fused_modconv=self.fused_modconv)).cpu())
        return out.numpy()


def pipelined(chunks: Iterable, render: Callable[[object], list], encode: Callable[[object], dict],
              workers: int, max_inflight: int = 64) -> Iterator[dict]:
    """Render chunk k+1 on the caller's thread while a thread pool encodes chunk k; yield in input order.

    Args:
        chunks: work units (e.g. lists of sample indices) in output order.
        render: chunk -> list of per-sample payloads (runs on the calling thread: the device work).
        encode: payload -> finished sample dict (PNG/JSON/NPY bytes); runs in the pool (Pillow's zlib releases
            the GIL, so threads encode in parallel).
        workers: pool size; 0 encodes inline (no threads).
        max_inflight: bound on encoded-but-not-yet-consumed samples (memory stays flat with dataset size).
    """
    if workers <= 0:
        for chunk in chunks:
            for item in render(chunk):
                yield encode(item)
        return
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kdpipe-encode") as pool:
        for chunk in chunks:
            for item in render(chunk):
                pending.append(pool.submit(encode, item))
            while len(pending) > max_inflight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
