"""``kdpipe train x2i``: set-up of both stages, and the trained student as one module (``kdpipe translate``).

Distil: ``kdpipe train x2i --teacher builtin:digits-32 --condition label --out RUN``.
Finetune: ``kdpipe train x2i --init RUN --data PAIRS --out RUN2`` (without ``--init``: from scratch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdpipe.errors import ConfigError
from kdpipe.fsutil import atomic_write_text
from kdpipe.pipeline.teacher.load import load_teacher
from kdpipe.trainers.core.loop import DistInfo, FitResult
from kdpipe.trainers.stargan2.data import online_batches, shard_batches
from kdpipe.trainers.x2i.config import X2IConfig
from kdpipe.trainers.x2i.data import PairedData, paired_batches
from kdpipe.trainers.x2i.networks import ConditionEncoder
from kdpipe.trainers.x2i.train_ft import FinetuneTrainer, load_init
from kdpipe.trainers.x2i.train_kd import TRAINER, DistillTrainer, build_generator


def setup(cfg: X2IConfig, state: dict | None, overrides: Any = None):
    """Checks made before training; returns ``build(dist) -> (trainer, batches)`` for the config's stage.

    Raises:
        ConfigError: distillation without ``teacher.spec`` or shards without ``kd.shards``; ``init`` without data.
        DatasetError / TrainCheckpointError: unusable finetuning data or init checkpoint.
    """
    if cfg.stage == "distill":
        if cfg.init:
            raise ConfigError("--init is for finetuning; also pass --data PAIRS (class folders or shards)")
        if not cfg.teacher.spec:
            raise ConfigError("teacher.spec is empty; pass --teacher builtin:digits-32 or a StyleGAN2 checkpoint to "
                              "distil, or --data PAIRS to finetune")
        if cfg.kd.source == "shards" and not cfg.kd.shards:
            raise ConfigError("kd.source=shards needs kd.shards (OUT/style-mix written by `kdpipe generate`)")

        def build_kd(dist: DistInfo):
            trainer = DistillTrainer(cfg, load_teacher(cfg.teacher.spec, dist.device), dist)
            B, kd = cfg.data.batch_size, cfg.kd
            if kd.source == "online":
                return trainer, lambda pos: online_batches(B, pos, dist.rank, dist.world_size)
            return trainer, lambda pos: shard_batches(kd.shards, B, cfg.loop.seed, 0, kd.shuffle_buffer, pos,
                                                      dist.rank, dist.world_size)

        return build_kd
    c = cfg.condition
    data = PairedData(cfg.data.path, c.kind, c.num_classes, cfg.model.img_size, cfg.data.limit,
                      cfg.data.on_bad_image)
    init = load_init(cfg.init) if cfg.init and state is None else None

    def build_ft(dist: DistInfo):
        trainer = FinetuneTrainer(cfg, data, init, dist, state["trainer_state"]["arch"] if state else None)
        if dist.is_main:
            Path(cfg.loop.out_dir).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(cfg.loop.out_dir) / "data.json", json.dumps(data.summary(), indent=1))
        z_dim = trainer.arch["z_dim"]
        return trainer, lambda pos: paired_batches(data, cfg.loop.seed, cfg.data.batch_size, z_dim, pos,
                                                   dist.rank, dist.world_size)

    return build_ft


class X2IStudent(nn.Module):
    """A trained student as one module: ``forward(z [N, z_dim], c) -> [N, 3, R, R]`` in (-1, 1).

    c: label one-hot ``[N, K]``, text/audio vector ``[N, D]`` or seg one-hot ``[N, K, R, R]``
    (:mod:`kdpipe.trainers.x2i.data`). A distilled-only checkpoint has no condition encoder: c is then the
    embedding itself (``[N, cond_dim]``, e.g. SE's output), and the generator runs without the teacher feature.
    Attributes: ``kind``, ``z_dim``, ``img_size``, ``cond_in_dim`` (0 = embedding / seg).
    """

    def __init__(self, generator: nn.Module, encoder: nn.Module | None, arch: dict[str, Any], cond_in_dim: int):
        super().__init__()
        self.generator, self.encoder = generator, encoder
        self.kind, self.z_dim, self.img_size, self.cond_in_dim = arch["kind"], arch["z_dim"], arch["img_size"], \
            cond_in_dim

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.generator(z, self.encoder(c) if self.encoder is not None else c)


def load_generator(trainer_state: dict[str, Any], use_ema: bool = True) -> X2IStudent:
    """Registry ``generator`` hook: the student of an x2i checkpoint (EMA weights where kept and ``use_ema``)."""
    arch, models = trainer_state["arch"], trainer_state["models"]
    ema = trainer_state.get("ema") or {}
    pick = (lambda k: ema[k] if use_ema and k in ema else models[k])
    G = build_generator(arch, 0)
    G.load_state_dict({k: v for k, v in pick("generator").items() if not k.startswith("teacher_adaptor.")})
    encoder = None
    if "condition_encoder" in models:
        in_dim = int(trainer_state.get("cond_in_dim", 0))
        encoder = ConditionEncoder(arch["kind"], in_dim, arch["cond_dim"])
        encoder.load_state_dict(pick("condition_encoder"))
    return X2IStudent(G, encoder, arch, int(trainer_state.get("cond_in_dim", 0)))


def run_x2i(config_path: str | Path | None = None, overrides: dict[str, Any] | None = None, resume: bool = False,
            resume_from: str | Path | None = None) -> FitResult:
    """``kdpipe train x2i`` as a function: see :func:`kdpipe.trainers.registry.train`."""
    from kdpipe.trainers.registry import train

    return train(TRAINER, config_path, overrides, resume, resume_from)
