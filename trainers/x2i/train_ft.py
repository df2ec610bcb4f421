"""Stage two: finetune the conditional student on a small paired dataset (seed 000 Sec. 3, "standard finetuning").

``init`` = a distilled x2i run: G_S and D_S start from its weights; the teacher-feature input is dropped (footnote 4:
"the student generator has two inputs: the noise and the condition c"); D_S gains its projection head (zero-init:
an untrained projection starts as the distilled unconditional D). The condition encoder is new (random), or for
``label`` conditions with ``model.label_init=semantic-encoder`` class k's embedding is the mean distilled SE embedding
of the class's finetuning images (resized to the teacher's resolution). Without
``init`` every network starts at random: the from-scratch baseline of seed 000 Table 2, from the same command.

Per step: one D_S step (non-saturating logistic loss + R1 on real images, matching-aware with ``loss.mismatch``:
real images under shifted conditions count as fake; DiffAugment if ``loss.augment``), one
G_S + encoder step (``lambda_adv`` x non-saturating loss), then the EMA (``loop.ema_decay``) of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdpipe.errors import ConfigError
from kdpipe.pipeline.teacher.discriminator import Discriminator
from kdpipe.trainers.core.checkpoint import TrainCheckpointError, latest_checkpoint, load_checkpoint
from kdpipe.trainers.core.loop import EMA, DistInfo, autocast, wrap_objective
from kdpipe.trainers.gan.augment import diff_augment
from kdpipe.trainers.x2i import losses as L
from kdpipe.trainers.x2i.config import X2IConfig
from kdpipe.trainers.x2i.data import PairedData, resize_images
from kdpipe.trainers.x2i.networks import ConditionalDiscriminator, ConditionEncoder, SemanticEncoder
from kdpipe.trainers.x2i.train_kd import TRAINER, build_generator

EMA_NETS = ("generator", "condition_encoder")


def load_init(path: str) -> dict[str, Any]:
    """The ``--init`` checkpoint (a ``ckpt-*.pt`` or a run directory: its newest). Raises TrainCheckpointError."""
    p = Path(path)
    if p.is_dir():
        found = latest_checkpoint(p)
        if found is None:
            raise TrainCheckpointError(f"--init {path!r} has no checkpoints/ckpt-*.pt; pass a distilled x2i run")
        p = found
    return load_checkpoint(p, trainer=TRAINER)


def scratch_architecture(cfg: X2IConfig, data: PairedData) -> dict[str, Any]:
    """Sizes of a from-scratch student: ``model.*`` with 0 = the data's resolution, z_dim 64, cond_dim 128."""
    m, kind = cfg.model, cfg.condition.kind
    return {"kind": kind, "img_size": m.img_size or data.img_size, "z_dim": m.z_dim or 64,
            "cond_dim": 0 if kind == "seg" else (m.cond_dim or 128),
            "seg_classes": cfg.condition.num_classes if kind == "seg" else 0, "channel_base": m.channel_base,
            "channel_max": m.channel_max, "spade_hidden": m.spade_hidden, "teacher_channels": 0, "se_kwargs": None}


def check_init_arch(cfg: X2IConfig, arch: dict[str, Any]) -> None:
    """An explicit ``model.*`` / ``condition.kind`` that disagrees with the init checkpoint -> ConfigError."""
    if arch["kind"] != cfg.condition.kind:
        raise ConfigError(f"condition.kind={cfg.condition.kind} differs from the init run's {arch['kind']}")
    for key in ("img_size", "z_dim", "cond_dim", "channel_base", "channel_max", "spade_hidden"):
        given = getattr(cfg.model, key)
        if given and given != arch[key] and not (key in ("channel_base", "channel_max", "spade_hidden")
                                                 and given == getattr(type(cfg.model)(), key)):
            raise ConfigError(f"model.{key}={given} differs from the init checkpoint's {arch[key]}; drop it (the "
                              "architecture comes from --init)")


def _load_partial(net: nn.Module, state: dict[str, torch.Tensor], may_miss: str, may_drop: str) -> None:
    """load_state_dict(strict=False) allowing only missing keys under ``may_miss`` and unexpected ones under
    ``may_drop``."""
    res = net.load_state_dict(state, strict=False)
    bad = [k for k in res.missing_keys if not k.startswith(may_miss)] + \
          [k for k in res.unexpected_keys if not k.startswith(may_drop)]
    if bad:
        raise TrainCheckpointError(f"init checkpoint does not fit the student: keys {bad[:4]}")


class FinetuneTrainer:
    """Conditional GAN finetuning of G_S(z, c) (a :class:`kdpipe.trainers.core.loop.Trainer`).

    Args:
        cfg: resolved config (stage ``finetune``). data: the paired dataset. init: the distilled checkpoint or None.
        arch: the sizes of a resumed run (its checkpoint's ``arch``); None = from ``init`` or the config.
    Attributes:
        arch: student sizes (from ``init`` or :func:`scratch_architecture`); nets: generator / condition_encoder /
        discriminator.
    """

    name = TRAINER

    def __init__(self, cfg: X2IConfig, data: PairedData, init: dict[str, Any] | None = None,
                 dist: DistInfo = DistInfo(), arch: dict[str, Any] | None = None):
        if cfg.loop.precision == "fp16":
            raise ConfigError("loop.precision=fp16 is not supported by the x2i trainer; use bf16 or fp32")
        self.cfg, self.data, self.dist, self.device = cfg, data, dist, dist.device
        if arch is None:  # resume passes the checkpoint's arch
            arch = dict(init["trainer_state"]["arch"]) if init is not None else scratch_architecture(cfg, data)
        if init is not None:
            check_init_arch(cfg, arch)
        arch.update(teacher_channels=0, se_kwargs=None)
        if data.img_size != arch["img_size"]:
            data.images = resize_images(data.images, arch["img_size"])
            data.img_size = arch["img_size"]
        self.arch = a = arch
        in_dim = data.cond_in_dim
        self.nets = nn.ModuleDict({
            "generator": build_generator(a, 0),
            "condition_encoder": ConditionEncoder(a["kind"], in_dim, a["cond_dim"]),
            "discriminator": ConditionalDiscriminator(a["img_size"], in_dim, a["seg_classes"], a["channel_base"],
                                                      a["channel_max"])})
        if init is not None:
            models = init["trainer_state"]["models"]
            _load_partial(self.nets["generator"], models["generator"], "\0", "teacher_adaptor.")
            _load_partial(self.nets["discriminator"], models["discriminator"], "proj.", "\0")
            if self.nets["discriminator"].proj is not None:
                nn.init.zeros_(self.nets["discriminator"].proj.weight)
            if a["kind"] == "label" and "semantic_encoder" in models and cfg.model.label_init == "semantic-encoder":
                self._label_embeddings_from_se(init["trainer_state"]["arch"]["se_kwargs"], models["semantic_encoder"])
        self.nets.to(self.device)
        # DDP: the student's gradients are averaged in the G step's backward, D_S's in the D step's
        self.gen = wrap_objective(nn.ModuleDict({k: self.nets[k] for k in EMA_NETS}), dist)
        self.disc = wrap_objective(nn.ModuleDict({"discriminator": self.nets["discriminator"]}), dist)
        self.ema = {k: EMA(self.nets[k], cfg.loop.ema_decay) for k in EMA_NETS} if cfg.loop.ema_decay > 0 else {}
        o = cfg.optim
        g_params = list(self.nets["generator"].parameters()) + list(self.nets["condition_encoder"].parameters())
        self.optims = {"generator": torch.optim.Adam(g_params, lr=o.lr, betas=(o.beta1, o.beta2)),
                       "discriminator": torch.optim.Adam(self.nets["discriminator"].parameters(), lr=o.d_lr,
                                                         betas=(o.beta1, o.beta2))}
        self._last: list[torch.Tensor] = []

    @torch.no_grad()
    def _label_embeddings_from_se(self, se_kwargs: dict, se_state: dict) -> None:
        """Column k of the label embedding = mean distilled ``SE(x)`` over class k's finetuning images."""
        se = SemanticEncoder(Discriminator(**se_kwargs))
        se.load_state_dict(se_state)
        x = resize_images(self.data.images, se_kwargs["img_resolution"])
        emb = torch.cat([se(x[i:i + 64]) for i in range(0, len(x), 64)])
        labels = self.data.conditions
        weight = self.nets["condition_encoder"].linear.weight  # [cond_dim, K]
        for k in range(weight.shape[1]):
            if (labels == k).any():
                weight[:, k] = emb[labels == k].mean(0)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """DiffAugment ``loss.augment`` on images D_S sees (identity when empty)."""
        return diff_augment(x, self.cfg.loss.augment) if self.cfg.loss.augment else x

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """One D_S step and one G_S + encoder step, then the EMA."""
        x, c, z = (batch[k].to(self.device) for k in ("image", "condition", "z"))
        amp = autocast(self.device, self.cfg.loop.precision)
        with amp:
            fake = self.gen(generate, z, c)
            d_loss, parts = self.disc(_d_objective, self, x, fake.detach(), c)
        self.optims["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.optims["discriminator"].step()
        D = self.nets["discriminator"].requires_grad_(False)
        with amp:
            adv = L.generator_adv_loss(D(self.augment(fake), c))
        D.requires_grad_(True)
        g_loss = self.cfg.loss.lambda_adv * adv
        self.optims["generator"].zero_grad(set_to_none=True)
        g_loss.backward()
        self.optims["generator"].step()
        for k, e in self.ema.items():
            e.update(self.nets[k])
        self._last = [x.detach(), fake.detach().float()]
        return {"loss/d": d_loss.detach(), "loss/g_adv": adv.detach(),
                **{f"d/{k}": torch.tensor(v) for k, v in parts.items()}}

    def eval_nets(self) -> dict[str, nn.Module]:
        """EMA generator and encoder where kept, else the trained ones."""
        return {k: (self.ema[k].module if k in self.ema else self.nets[k]) for k in EMA_NETS}

    def state_dict(self) -> dict[str, Any]:
        return {"models": {k: v.state_dict() for k, v in self.nets.items()},
                "ema": {k: e.state_dict() for k, e in self.ema.items()},
                "optimizers": {k: v.state_dict() for k, v in self.optims.items()},
                "arch": self.arch, "stage": "finetune", "cond_in_dim": self.data.cond_in_dim}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for section, parts in (("models", self.nets), ("ema", self.ema), ("optimizers", self.optims)):
            for k, v in parts.items():
                v.load_state_dict(state[section][k])

    @torch.no_grad()
    def sample_rows(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Grid rows: real images, their conditions through the (EMA) student."""
        nets = self.eval_nets()
        c, z = batch["condition"].to(self.device), batch["z"].to(self.device)
        return [self._last[0], nets["generator"](z, nets["condition_encoder"](c))]


def generate(nets: nn.ModuleDict, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``G_S(z, E(c))``: z ``[N, z_dim]``, c the encoded condition (data module doc) -> ``[N, 3, R, R]``."""
    return nets["generator"](z, nets["condition_encoder"](c))


def _d_objective(nets: nn.ModuleDict, trainer: FinetuneTrainer, real: torch.Tensor, fake: torch.Tensor,
                 c: torch.Tensor):
    D = nets["discriminator"]
    mismatch = mismatched(c) if trainer.cfg.loss.mismatch else None
    return L.discriminator_loss(lambda img, cond: D(trainer.augment(img), cond), real, fake, c, c,
                                trainer.cfg.loss.r1_gamma, mismatch)


def mismatched(c: torch.Tensor) -> torch.Tensor:
    """Wrong conditions for the matching-aware D: the batch's conditions shifted by one row (``roll(1, 0)``)."""
    return c.roll(1, 0)
