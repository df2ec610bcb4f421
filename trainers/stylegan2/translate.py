"""``kdpipe translate`` for unconditional StyleGAN2 students: one image per seed, as NVlabs ``gen_images.py``.

``kdpipe translate --checkpoint ckpt-*.pt --seeds 0-7 OUT_DIR`` writes ``OUT_DIR/seed0000.png``... with
``z = RandomState(seed).randn(1, z_dim)``, ``truncation_psi = 1`` and ``noise_mode = "const"`` (the official
script's defaults), so a snapshot gives the same images here as through ``kdpipe sample`` or the official tool.
Other StyleGAN2-shaped students (compression, few-shot) reuse :func:`translate_seeds` with their own loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdpipe.devices import resolve_device
from kdpipe.errors import KdpipeError
from kdpipe.images import to_uint8
from kdpipe.pipeline.latents import z_from_seeds
from kdpipe.pipeline.teacher.networks import Generator
from kdpipe.trainers.translate import TranslateRequest, save_image


def load_generator(trainer_state: dict[str, Any], use_ema: bool = True) -> Generator:
    """The ``stylegan2`` trainer's generator (``G_ema`` when ``use_ema``), built from its saved kwargs."""
    G = Generator(**trainer_state["G_kwargs"])
    G.load_state_dict(trainer_state["G_ema"] if use_ema else trainer_state["G"])
    return G.eval().requires_grad_(False)


@torch.no_grad()
def translate_seeds(G: Generator, req: TranslateRequest, trainer: str) -> list[Path]:
    """``OUT_DIR/seed<NNNN>.png`` for every ``req.seeds``: ``G(z_seed, truncation_psi=1, noise_mode="const")``.

    Args:
        G: an unconditional StyleGAN2 generator (``c_dim == 0``). req: ``seeds``, ``out_dir``, ``batch_size``,
            ``device``; input images, references, domains, ``x2``, ``size`` and ``align`` are refused.
        trainer: the checkpoint's trainer name (for messages).
    Returns: written paths in seed order.
    Raises:
        KdpipeError: no seeds, input images given, a conditional generator.
    """
    req.refuse(trainer, "x2", "ref", "domains", "size", "align")
    if req.inputs:
        raise KdpipeError(f"{trainer!r} students are unconditional: they take no input images; pass only OUT_DIR "
                          "and --seeds (e.g. --seeds 0-7)")
    if not req.seeds:
        raise KdpipeError(f"{trainer!r} students draw one image per seed; pass --seeds (e.g. --seeds 0-7)")
    if G.c_dim:
        raise KdpipeError(f"this generator is conditional (c_dim={G.c_dim}); translate draws unconditional seeds only")
    dev = resolve_device(req.device)
    G = G.to(dev)
    req.out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    seeds = list(req.seeds)
    for start in range(0, len(seeds), req.batch_size):
        chunk = seeds[start:start + req.batch_size]
        images = to_uint8(G(z_from_seeds(chunk, G.z_dim).to(dev), None, truncation_psi=1.0, noise_mode="const"))
        for seed, img in zip(chunk, images.cpu()):
            path = req.out_dir / f"seed{seed:04d}.png"
            save_image(img, path)
            written.append(path)
    return written


def translate_stylegan2(state: dict[str, Any], req: TranslateRequest) -> list[Path]:
    """The ``translate`` hook of the ``stylegan2`` trainer (:func:`translate_seeds` on its G_ema)."""
    return translate_seeds(load_generator(state["trainer_state"], req.use_ema), req, state["trainer"])
