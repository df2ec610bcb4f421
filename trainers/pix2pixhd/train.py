"""pix2pixHD student trained on kdpipe pair / triplet shards (the paper's feed-forward student, seed 002).

Objective (Wang et al. 2018, Eq. 5, upstream ``Pix2PixHDModel``):
  min_G [ sum_k L_GAN(G, D_k) + lambda_feat * L_FM(G, D_k) + lambda_vgg * L_VGG(G(s), x) ]
  max_D  0.5 * (L_GAN real + L_GAN fake), LSGAN, num_D=2 scales, lambda_feat = lambda_vgg = 10.
Per step, as upstream: G(s) once; D losses and G losses both use the current D; G steps, then D steps.
Adam(lr 2e-4, betas (0.5, 0.999)); lr constant, then linearly to 0 over the last ``decay_steps``
(upstream: niter=100 constant epochs + niter_decay=100 decaying epochs -> default: the second half).
Pairs learn src->tgt (or tgt->src with ``data.direction=reverse``); triplets learn cat(x1, x2) -> y (6 channels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from kdpipe.errors import ConfigError
from kdpipe.trainers.core.config import DataConfig, LoopConfig
from kdpipe.trainers.core.data import DatasetInfo, batch_iterator, inspect_dataset
from kdpipe.trainers.core.loop import EMA, DistInfo, FitResult, autocast, make_grad_scaler, unwrap, wrap_ddp
from .losses import build_vgg_loss, feature_matching_loss, gan_loss
from .networks import build_discriminator, build_generator, downsample_factor

NAME = "pix2pixhd"


@dataclass
class Pix2PixHDModelConfig:
    """Networks, loss weights and optimiser (upstream option names; defaults = upstream defaults)."""

    netG: str = "global"
    """``global`` (G1 only) or ``local`` (G1 + local enhancer G2, upstream ``--netG local``)."""
    ngf: int = 64
    """Generator filters in the first conv layer (of the finest branch for ``local``)."""
    n_downsample_global: int = 4
    """Stride-2 convs in the global generator; image sides must be multiples of 2**this (x2 per enhancer)."""
    n_blocks_global: int = 9
    """Residual blocks in the global generator."""
    n_local_enhancers: int = 1
    """Local enhancers (``netG=local`` only)."""
    n_blocks_local: int = 3
    """Residual blocks per local enhancer."""
    norm: str = "instance"
    """``instance`` (upstream default) or ``batch``."""
    ndf: int = 64
    """Discriminator filters in the first conv layer."""
    n_layers_D: int = 3
    """Stride-2 layers per PatchGAN."""
    num_D: int = 2
    """Discriminator scales."""
    lambda_feat: float = 10.0
    """Weight of the discriminator feature-matching loss (Eq. 4)."""
    lambda_vgg: float = 10.0
    """Weight of the VGG19 perceptual loss (upstream uses lambda_feat for both)."""
    gan_feat_loss: bool = True
    """Use the feature-matching loss (upstream ``--no_ganFeat_loss`` turns it off)."""
    vgg_loss: bool = True
    """Use the VGG loss when weights are available (upstream ``--no_vgg_loss`` turns it off)."""
    vgg_weights: str | None = None
    """torchvision vgg19 state_dict file; None -> ``$KDPIPE_VGG19``; neither -> loss off with a warning."""
    lr: float = 2e-4
    """Adam learning rate for G and D."""
    beta1: float = 0.5
    """Adam beta1."""
    beta2: float = 0.999
    """Adam beta2."""
    decay_steps: int | None = None
    """Steps over which lr falls linearly to 0 at the end of the run; None = half of ``loop.steps``."""

    def __post_init__(self) -> None:
        if self.netG not in ("global", "local"):
            raise ConfigError(f"model.netG={self.netG!r} is not one of global, local")
        if self.norm not in ("instance", "batch"):
            raise ConfigError(f"model.norm={self.norm!r} is not one of instance, batch")
        for name in ("ngf", "ndf", "n_layers_D", "num_D", "n_local_enhancers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}={getattr(self, name)!r} must be >= 1")
        if self.decay_steps is not None and self.decay_steps < 0:
            raise ConfigError(f"model.decay_steps={self.decay_steps!r} must be >= 0")


@dataclass
class Pix2PixHDTrainConfig:
    """Everything ``kdpipe train pix2pixhd`` needs; YAML sections ``data``, ``loop``, ``model``."""

    data: DataConfig = field(default_factory=DataConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    model: Pix2PixHDModelConfig = field(default_factory=Pix2PixHDModelConfig)


def lr_at(step: int, lr: float, steps: int, decay_steps: int | None) -> float:
    """Learning rate for the step after ``step`` steps: constant, then linear to 0 over the last ``decay_steps``."""
    decay = steps // 2 if decay_steps is None else decay_steps
    start = steps - decay
    return lr if step < start or decay == 0 else lr * (steps - step) / decay


class Pix2PixHDTrainer:
    """The pix2pixHD student as a :class:`kdpipe.trainers.core.loop.Trainer`.

    Batches: ``input`` [B, 3|6, H, W], ``target`` [B, 3, H, W], float in [-1, 1].
    """

    name = NAME

    def __init__(self, cfg: Pix2PixHDTrainConfig, info: DatasetInfo, dist: DistInfo):
        m, self.cfg, self.dist = cfg.model, cfg, dist
        self.device = dist.device
        self.generator_kwargs = dict(input_nc=info.in_channels, output_nc=3, netG=m.netG, ngf=m.ngf,
                                     n_downsample_global=m.n_downsample_global, n_blocks_global=m.n_blocks_global,
                                     n_local_enhancers=m.n_local_enhancers, n_blocks_local=m.n_blocks_local,
                                     norm=m.norm)
        torch.manual_seed(cfg.loop.seed)
        G = build_generator(**self.generator_kwargs).to(self.device)
        D = build_discriminator(info.in_channels + 3, m.ndf, m.n_layers_D, m.num_D, m.norm).to(self.device)
        self.G, self.D = wrap_ddp(G, dist), wrap_ddp(D, dist)
        betas = (m.beta1, m.beta2)
        self.opt_G = torch.optim.Adam(G.parameters(), lr=m.lr, betas=betas)
        self.opt_D = torch.optim.Adam(D.parameters(), lr=m.lr, betas=betas)
        self.ema = EMA(G, cfg.loop.ema_decay) if cfg.loop.ema_decay > 0 else None
        self.scaler = make_grad_scaler(self.device, cfg.loop.precision)
        vgg = build_vgg_loss(m.vgg_weights, m.vgg_loss)
        self.vgg = vgg.to(self.device) if vgg is not None else None
        self.meta = {"kind": info.kind, "task": info.task, "direction": cfg.data.direction,
                     "image_hw": list(info.image_hw) if cfg.data.resolution is None else [cfg.data.resolution] * 2}

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor | float]:
        """One upstream pix2pixHD iteration; returns the upstream loss names (detached scalars)."""
        m = self.cfg.model
        lr = lr_at(step, m.lr, self.cfg.loop.steps, m.decay_steps)
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr
        inp = batch["input"].to(self.device, non_blocking=True)
        real = batch["target"].to(self.device, non_blocking=True)
        n = inp.shape[0]
        D_raw = unwrap(self.D)
        zero = torch.zeros((), device=self.device)
        with autocast(self.device, self.cfg.loop.precision):
            fake = self.G(inp)
            # D on (s, G(s).detach()) and (s, x) in one batch: instance norm makes this per-sample exact.
            both = self.D(torch.cat([torch.cat([inp, fake.detach()], 1), torch.cat([inp, real], 1)], 0))
            pred_fake_pool = [[t[:n] for t in scale] for scale in both]
            pred_real = [[t[n:] for t in scale] for scale in both]
            loss_D_fake, loss_D_real = gan_loss(pred_fake_pool, False), gan_loss(pred_real, True)
            D_raw.requires_grad_(False)  # G's adversarial pass: gradients to G only
            pred_fake = D_raw(torch.cat([inp, fake], 1))
            D_raw.requires_grad_(True)
            loss_G_GAN = gan_loss(pred_fake, True)
            loss_G_GAN_Feat = (feature_matching_loss(pred_fake, pred_real, m.n_layers_D, m.lambda_feat)
                               if m.gan_feat_loss else zero)
            loss_G_VGG = self.vgg(fake, real) * m.lambda_vgg if self.vgg is not None else zero
        loss_G = loss_G_GAN + loss_G_GAN_Feat + loss_G_VGG
        loss_D = (loss_D_fake + loss_D_real) * 0.5
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler.scale(loss_G).backward()
        self.scaler.step(self.opt_G)
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler.scale(loss_D).backward()
        self.scaler.step(self.opt_D)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.G)
        out = {"loss_G_GAN": loss_G_GAN, "loss_G_GAN_Feat": loss_G_GAN_Feat, "loss_G_VGG": loss_G_VGG,
               "loss_D_real": loss_D_real, "loss_D_fake": loss_D_fake, "loss_G": loss_G, "loss_D": loss_D}
        return {k: v.detach() for k, v in out.items()} | {"lr": lr}

    @torch.no_grad()
    def sample_rows(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Rows: input (x1 and x2 for triplets), output of G_ema (or G), target."""
        G = self.ema.module if self.ema is not None else unwrap(self.G)
        inp = batch["input"][:8].to(self.device)
        out = G(inp).float()
        rows = [inp[:, i:i + 3] for i in range(0, inp.shape[1], 3)]
        return [r.cpu() for r in rows + [out, batch["target"][:8].to(self.device)]]

    def state_dict(self) -> dict[str, Any]:
        """G, D, both Adam states, G_ema (or None), grad scaler, generator kwargs and data metadata
        (kind, task, direction, image_hw) — what resume and ``kdpipe translate`` need."""
        return {"G": unwrap(self.G).state_dict(), "D": unwrap(self.D).state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "G_ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict(), "generator_kwargs": dict(self.generator_kwargs), **self.meta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (metadata is informational and not restored)."""
        unwrap(self.G).load_state_dict(state["G"])
        unwrap(self.D).load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        if self.ema is not None and state.get("G_ema") is not None:
            self.ema.load_state_dict(state["G_ema"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def setup(cfg: Pix2PixHDTrainConfig, state: dict[str, Any] | None, overrides: Mapping[str, Any]):
    """Checks made before training (dataset present, image sides fit the generator); returns ``build(dist)``.

    Raises:
        ConfigError: no ``--data``, or image sides not divisible by the generator's downsampling factor.
        DatasetError: the dataset cannot be read.
    """
    if not cfg.data.path:
        raise ConfigError("no dataset; pass --data OUT/<task> (a directory written by `kdpipe generate`)")
    info = inspect_dataset(cfg.data.path, cfg.data.kind)
    hw = (cfg.data.resolution,) * 2 if cfg.data.resolution is not None else info.image_hw
    factor = downsample_factor(cfg.model.netG, cfg.model.n_downsample_global, cfg.model.n_local_enhancers)
    if hw[0] % factor or hw[1] % factor:
        raise ConfigError(f"images are {hw[0]}x{hw[1]} but this generator needs sides divisible by {factor}; "
                          "lower model.n_downsample_global or set data.resolution")

    def build(dist: DistInfo):
        def batches(pos):
            return batch_iterator(info, cfg.data, cfg.loop.seed, pos, dist.rank, dist.world_size)

        return Pix2PixHDTrainer(cfg, info, dist), batches

    return build


def load_generator(trainer_state: dict[str, Any], use_ema: bool) -> torch.nn.Module:
    """The checkpoint's generator (G_ema when kept and ``use_ema``), for ``kdpipe translate``."""
    G = build_generator(**trainer_state["generator_kwargs"])
    ema = trainer_state.get("G_ema")
    G.load_state_dict(ema if use_ema and ema is not None else trainer_state["G"])
    return G


def run(config_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
        resume: bool = False, resume_from: str | Path | None = None) -> FitResult:
    """``kdpipe train pix2pixhd`` as a function: see :func:`kdpipe.trainers.registry.train`."""
    from kdpipe.trainers.registry import train

    return train(NAME, config_path, overrides, resume, resume_from)
