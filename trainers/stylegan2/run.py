"""``kdpipe train stylegan2``: the registry's set-up (images loaded once, checks before any process group) and
``run(...)`` as a function. Start, resume, config freezing and torchrun come from
:mod:`kdpipe.trainers.core.run` like every trainer's."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from kdpipe.errors import ConfigError
from kdpipe.trainers.core.loop import DistInfo, FitResult
from kdpipe.trainers.stylegan2.data import image_batches, load_images
from kdpipe.trainers.stylegan2.train import NAME, StyleGAN2TrainConfig, StyleGAN2Trainer


def setup(cfg: StyleGAN2TrainConfig, state: dict[str, Any] | None, overrides: Mapping[str, Any]):
    """Load the training images (uint8, in memory) and return ``build(dist) -> (trainer, batches)``.

    Raises:
        ConfigError: no ``--data``, or a batch that does not split over the processes.
        DatasetError: the images cannot be read, or are not square powers of two (without data.resolution).
    """
    if not cfg.data.path:
        raise ConfigError("no training images; pass --data (an image folder, a kdpipe shard directory or 'digits')")
    images = load_images(cfg.data.path, cfg.data.resolution)
    return build_on_images(cfg, images, lambda dist: StyleGAN2Trainer(cfg, images.shape[-1], dist))


def build_on_images(cfg: Any, images: torch.Tensor, make_trainer: Callable[[DistInfo], Any]):
    """``build(dist) -> (make_trainer(dist), batches)`` with batches of the in-memory uint8 ``images``
    (:func:`kdpipe.trainers.stylegan2.data.image_batches`, ``cfg.data``'s batch size and xflip, ``cfg.loop.seed``).
    ``build`` raises ConfigError when the batch does not split over the processes."""

    def build(dist: DistInfo):
        if cfg.data.batch_size % dist.world_size:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} is not divisible by {dist.world_size} processes")
        trainer = make_trainer(dist)

        def batches(pos):
            return image_batches(images, cfg.data.batch_size, cfg.loop.seed, pos, dist.rank, dist.world_size,
                                 cfg.data.xflip)

        return trainer, batches

    return build


def run(config_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
        resume: bool = False, resume_from: str | Path | None = None) -> FitResult:
    """Train (or resume) a StyleGAN2 generator: ``kdpipe train stylegan2`` as a function.

    Args:
        config_path: YAML with sections data / loop / model (optional).
        overrides: dotted keys, e.g. ``{"data.path": "digits", "loop.out_dir": "runs/d", "model.r1_gamma": 0.05}``.
        resume: continue from the latest checkpoint in ``loop.out_dir`` (bit-exact on CPU).
    Writes into ``loop.out_dir``: ``config.yaml``, ``metrics.jsonl``, ``samples/``, ``checkpoints/`` (exact
    resume) and, every ``loop.ckpt_every`` steps and at the last step, ``network-snapshot-<step>.pkl``
    (stylegan2-ada-pytorch layout) and ``G_ema-<step>.safetensors``.
    Returns: :class:`FitResult`. Raises: ConfigError, DatasetError, TrainCheckpointError (one line).
    """
    from kdpipe.trainers.registry import train

    return train(NAME, config_path, overrides, resume, resume_from)
