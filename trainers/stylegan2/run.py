"""``run(...)``: resolve the stylegan2 config, load the images, train with :func:`kdpipe.trainers.core.loop.fit`,
export snapshots. Works in one process and under torchrun (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from kdpipe.errors import ConfigError
from kdpipe.trainers.core.checkpoint import TrainCheckpointError, latest_checkpoint, load_checkpoint
from kdpipe.trainers.core.config import (RESUME_MAY_CHANGE, config_diff, config_to_dict, flatten, load_config, merge,
                                         save_config)
from kdpipe.trainers.core.loop import FitResult, fit, run_distributed, seed_everything
from kdpipe.trainers.stylegan2.data import image_batches, load_images
from kdpipe.trainers.stylegan2.train import NAME, StyleGAN2TrainConfig, StyleGAN2Trainer


def resolve_config(config_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                   resume: bool = False) -> tuple[StyleGAN2TrainConfig, dict[str, Any] | None]:
    """Resolved config and, when resuming, the latest checkpoint of ``loop.out_dir``.

    Fresh: defaults < YAML < overrides. Resume: the checkpoint's config (``loop.stop_after`` cleared) < YAML <
    overrides; only RESUME_MAY_CHANGE fields may differ.

    Raises:
        ConfigError: no --out / --data, a fresh run into a directory with checkpoints, or a changed field.
        TrainCheckpointError: nothing to resume, or a corrupt / foreign checkpoint.
    """
    cfg = load_config(StyleGAN2TrainConfig, config_path, overrides)
    if not cfg.loop.out_dir:
        raise ConfigError("no run directory; pass --out RUN_DIR (checkpoints, snapshots, samples go there)")
    state = None
    if resume:
        path = latest_checkpoint(cfg.loop.out_dir)
        if path is None:
            raise TrainCheckpointError(f"--resume: no checkpoints in {cfg.loop.out_dir}/checkpoints; "
                                       "drop --resume to start a new run")
        state = load_checkpoint(path, trainer=NAME)
        saved = load_config(StyleGAN2TrainConfig, None, None, base=state["config"])
        cfg = load_config(StyleGAN2TrainConfig, config_path, overrides,
                          base=merge(state["config"], {"loop.stop_after": None}))
        changed = config_diff(saved, cfg, RESUME_MAY_CHANGE)
        if changed:
            old, new = flatten(config_to_dict(saved))[changed[0]], flatten(config_to_dict(cfg))[changed[0]]
            raise ConfigError(f"cannot resume {str(path)!r}: {changed[0]} was {old!r} in that run, now {new!r}; "
                              "keep it or start a new run in another --out")
    elif latest_checkpoint(cfg.loop.out_dir) is not None:
        raise ConfigError(f"{cfg.loop.out_dir!r} already holds checkpoints; pass --resume to continue that run, "
                          "or another --out")
    if not cfg.data.path:
        raise ConfigError("no training images; pass --data (an image folder, a kdpipe shard directory or 'digits')")
    return cfg, state


def run(config_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
        resume: bool = False) -> FitResult:
    """Train (or resume) a StyleGAN2 generator.

    Args:
        config_path: YAML with sections data / loop / model (optional).
        overrides: dotted keys, e.g. ``{"data.path": "digits", "loop.out_dir": "runs/d", "model.r1_gamma": 0.05}``.
        resume: continue from the latest checkpoint in ``loop.out_dir`` (bit-exact on CPU).
    Writes into ``loop.out_dir``: ``config.yaml``, ``metrics.jsonl``, ``samples/``, ``checkpoints/`` (exact
    resume) and, at every checkpoint and at the end, ``network-snapshot-<step>.pkl`` (stylegan2-ada-pytorch
    layout) and ``G_ema-<step>.safetensors``.
    Returns: :class:`FitResult`. Raises: ConfigError, DatasetError, TrainCheckpointError (one line).
    """
    cfg, state = resolve_config(config_path, overrides, resume)
    images = load_images(cfg.data.path, cfg.data.resolution)
    out = Path(cfg.loop.out_dir)

    def body(dist):
        if cfg.data.batch_size % dist.world_size:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} is not divisible by {dist.world_size} processes")
        seed_everything(cfg.loop.seed + dist.rank, cfg.loop.deterministic)
        trainer = StyleGAN2Trainer(cfg, images.shape[-1], dist)
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")

        def batches(pos):
            return image_batches(images, cfg.data.batch_size, cfg.loop.seed, pos, dist.rank, dist.world_size,
                                 cfg.data.xflip)

        result = fit(trainer, cfg.loop, batches, dist, config_to_dict(cfg), state)
        if dist.is_main:
            trainer.export(out, result.step)
        return result

    return run_distributed(cfg.loop.device, body)
