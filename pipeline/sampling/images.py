"""Seed images as NVlabs ``gen_images.py`` writes them, and the shared pieces of ``kdpipe sample``.

Official rule (stylegan3 ``gen_images.py``, stylegan2-ada-pytorch ``generate.py``): for each seed,
``z = np.random.RandomState(seed).randn(1, z_dim)``, ``img = G(z, c, truncation_psi, noise_mode)`` one image per
forward, ``(img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(uint8)`` saved as ``seed{seed:04d}.png``;
``c`` = one-hot of ``--class`` for a conditional generator; defaults ``truncation_psi = 1``,
``noise_mode = 'const'``. kdpipe renders in that form too (:func:`official_renderer`: batch 1, fused modulated
convolution), through the pipeline's :class:`~kdpipe.pipeline.render.Renderer` and seed->z rule
(:func:`~kdpipe.pipeline.latents.z_from_seeds`). One difference: with ``noise_mode='random'`` the official tools
draw noise from torch's unseeded global RNG; kdpipe seeds it with the image's seed, so a re-run repeats it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from kdpipe.errors import ConfigError
from kdpipe.images import save_png
from kdpipe.pipeline.render import Renderer
from kdpipe.pipeline.teacher.networks import Generator

NOISE_MODES = ("const", "random", "none")


def class_label(G: Generator, class_idx: int | None, log: Callable[[str], None] = print) -> torch.Tensor | None:
    """``c`` for ``G``: one-hot ``[1, c_dim]`` float32 of ``class_idx`` (``gen_images.py --class``).

    Returns ``None`` for an unconditional ``G`` (a given ``class_idx`` is then ignored, with a warning through
    ``log``, as the official tool does).
    Raises:
        ConfigError: ``G`` is conditional and ``class_idx`` is missing or outside ``[0, c_dim)``.
    """
    if G.c_dim == 0:
        if class_idx is not None:
            log(f"warning: --class {class_idx} ignored: the generator is unconditional (c_dim=0)")
        return None
    if class_idx is None or not 0 <= class_idx < G.c_dim:
        raise ConfigError(f"--class {class_idx}: this generator is conditional with c_dim={G.c_dim}; "
                          f"pass --class K with 0 <= K < {G.c_dim}")
    c = torch.zeros(1, G.c_dim)
    c[0, class_idx] = 1
    return c


def official_renderer(G: Generator, device: torch.device, truncation_psi: float = 1.0,
                      noise_mode: str = "const") -> Renderer:
    """A :class:`Renderer` in ``gen_images.py``'s form: one image per forward, fused modulated convolution,
    truncation of every layer (``truncation_cutoff=None``).

    Raises:
        ConfigError: ``noise_mode`` not in :data:`NOISE_MODES`.
    """
    if noise_mode not in NOISE_MODES:
        raise ConfigError(f"--noise-mode {noise_mode!r} is not one of {', '.join(NOISE_MODES)}")
    return Renderer(G, device, truncation_psi, None, noise_mode, fused_modconv=True, rows=1)


def render_ws(renderer: Renderer, ws: torch.Tensor, noise_seed: int) -> np.ndarray:
    """uint8 image ``[H, W, C]`` of one ws ``[1, num_ws, w_dim]``; ``noise_mode='random'`` noise is drawn from
    torch's RNG seeded with ``noise_seed`` (the caller's RNG state is restored afterwards)."""
    if renderer.noise_mode != "random":
        return renderer.images(ws)[0]
    cuda = [renderer.device.index or 0] if renderer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(noise_seed)
        return renderer.images(ws)[0]


def render_seeds(renderer: Renderer, seeds: Iterable[int], c: torch.Tensor | None = None
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """``(seed, uint8 image [H, W, C])`` per seed, in order (the official per-seed loop)."""
    for seed in seeds:
        yield seed, render_ws(renderer, renderer.ws_from_seeds([seed], c), seed)


def tile(images: np.ndarray) -> np.ndarray:
    """Grid of ``images [rows, cols, H, W, C]`` uint8 -> ``[rows * H, cols * W, C]`` (gen_video.py ``layout_grid``)."""
    rows, cols, h, w, ch = images.shape
    return images.transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, ch)


def sample_images(renderer: Renderer, seeds: Sequence[int], outdir: str | Path, c: torch.Tensor | None = None,
                  grid: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    """Write ``outdir/seed{seed:04d}.png`` per seed (``gen_images.py``), or with ``grid`` one contact sheet
    ``outdir/grid.png``: the seeds in reading order, ``ceil(sqrt(N))`` columns, unused cells black.

    Returns the files written. Re-running overwrites them (each write is atomic).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written, images = [], []
    for k, (seed, image) in enumerate(render_seeds(renderer, seeds, c)):
        log(f"seed {seed} ({k + 1}/{len(seeds)})")
        if grid:
            images.append(image)
        else:
            written.append(save_png(outdir / f"seed{seed:04d}.png", image))
    if grid and images:
        cols = math.ceil(math.sqrt(len(images)))
        rows = math.ceil(len(images) / cols)
        cells = np.zeros((rows * cols, *images[0].shape), np.uint8)
        cells[:len(images)] = np.stack(images)
        written.append(save_png(outdir / "grid.png", tile(cells.reshape(rows, cols, *images[0].shape))))
    return written
