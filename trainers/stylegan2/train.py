"""StyleGAN2 training as NVlabs stylegan2-ada-pytorch does it (``training/training_loop.py``, ``training/loss.py``).

Per step (one minibatch), the four upstream phases in order, each on fresh latents ``z ~ N(0, I)``:

1. ``Gmain``: G minimises the non-saturating logistic loss ``softplus(-D(aug(G(z))))``;
2. ``Greg`` (every ``pl_interval`` steps, if ``pl_weight > 0``): path-length penalty on ``batch / pl_batch_shrink``
   samples, times ``pl_interval``;
3. ``Dmain``: D minimises ``softplus(D(aug(G(z)))) + softplus(-D(aug(x)))``;
4. ``Dreg`` (every ``r1_interval`` steps): R1 ``r1_gamma / 2 * ||grad_x D(aug(x))||^2``, times ``r1_interval``.

G's mapping output gets style mixing (prob ``style_mixing_prob``: from a random cutoff layer on, ws of a second z;
the mapping's ``w_avg`` tracks ``mean(w)`` with beta 0.995 except on that second call, as upstream). Adam(0, 0.99)
per network with the lazy-regularisation correction (:func:`kdpipe.trainers.gan.losses.lazy_adam_hyperparams`).
``G_ema``: half-life ``ema_kimg`` kimg with ramp-up ``ema_rampup`` (:func:`~kdpipe.trainers.gan.losses.ema_beta`).
Equalised learning rate is in the networks (weights scaled at run time). NaN/inf gradients are zeroed/clipped to
+-1e5 as upstream. fp32 only. Under torchrun each rank takes its slice of the batch and gradients are averaged
with one all_reduce per phase (as stylegan3's training loop). Noise is ``random`` during training (upstream).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdpipe.errors import ConfigError
from kdpipe.pipeline.teacher.discriminator import Discriminator
from kdpipe.pipeline.teacher.networks import Generator
from kdpipe.trainers.core.config import LoopConfig
from kdpipe.trainers.core.loop import DistInfo
from kdpipe.trainers.gan.augment import check_policy, diff_augment
from kdpipe.trainers.gan.losses import (PathLengthRegularizer, d_logistic_loss, ema_beta, g_nonsaturating_loss,
                                        lazy_adam_hyperparams, r1_penalty)

NAME = "stylegan2"


@dataclass
class StyleGAN2DataConfig:
    """Training images (see :mod:`kdpipe.trainers.stylegan2.data`)."""

    path: str = ""
    """``digits`` (built-in real digits), an image folder, or a kdpipe shard directory / tar pattern."""
    batch_size: int = 32
    """Images per step over all processes (upstream ``--batch``)."""
    resolution: int | None = None
    """Resize every image to this square side (power of two); None keeps the stored size."""
    xflip: bool = False
    """Mirror images at random (upstream ``--mirror``); off for digits (a mirrored 2 is not a digit)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size={self.batch_size!r} must be >= 1")


@dataclass
class StyleGAN2ModelConfig:
    """Networks, losses and optimisers (upstream option names and defaults unless said)."""

    init: str | None = None
    """Start from this teacher (``builtin:...`` or a checkpoint path: G, G_ema and D if present); None = scratch."""
    z_dim: int = 64
    """Latent z size (scratch only; upstream 512)."""
    w_dim: int = 64
    """Intermediate latent w size (scratch only; upstream 512)."""
    mapping_layers: int = 2
    """Mapping network depth (upstream ``--cfg auto``: 2)."""
    channel_base: int = 2048
    """Channels at resolution r: ``min(channel_base // r, channel_max)`` (G and D; upstream 16384 for auto <512px)."""
    channel_max: int = 64
    """Upper bound on channels (upstream 512)."""
    lr: float = 0.0025
    """Adam learning rate of G and D before the lazy correction (upstream auto cfg)."""
    beta1: float = 0.0
    """Adam beta1 (upstream 0)."""
    beta2: float = 0.99
    """Adam beta2 (upstream 0.99)."""
    r1_gamma: float = 0.01
    """R1 weight gamma (upstream cifar cfg 0.01; auto: 0.0002 * R^2 / batch)."""
    r1_interval: int = 16
    """Lazy R1: every this many steps (upstream D_reg_interval)."""
    pl_weight: float = 2.0
    """Path-length weight; 0 turns it off (upstream 2; 0 in the cifar cfg)."""
    pl_interval: int = 4
    """Lazy path-length: every this many steps (upstream G_reg_interval)."""
    pl_decay: float = 0.01
    """Decay of the running mean path length (upstream)."""
    pl_batch_shrink: int = 2
    """Path-length batch = batch / this (upstream)."""
    style_mixing_prob: float = 0.9
    """Probability of mixing two latents in a batch (upstream 0.9)."""
    ema_kimg: float = 10.0
    """G_ema half-life in thousands of images (upstream auto: batch * 10 / 32)."""
    ema_rampup: float | None = 0.05
    """G_ema half-life at most ``cur_nimg * ema_rampup``; None = no ramp-up (upstream 0.05)."""
    augment: str = ""
    """DiffAugment ops applied to every image D sees: comma list of color, translation, cutout; "" = none."""

    def __post_init__(self) -> None:
        try:
            check_policy(self.augment)
        except ValueError as exc:
            raise ConfigError(f"model.augment={self.augment!r}: {exc}") from None
        for name in ("r1_interval", "pl_interval", "pl_batch_shrink", "z_dim", "w_dim", "mapping_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}={getattr(self, name)!r} must be >= 1")
        if not 0 <= self.style_mixing_prob <= 1:
            raise ConfigError(f"model.style_mixing_prob={self.style_mixing_prob!r} must be in [0, 1]")


@dataclass
class StyleGAN2TrainConfig:
    """Everything ``kdpipe train stylegan2`` needs; YAML sections ``data``, ``loop``, ``model``."""

    data: StyleGAN2DataConfig = field(default_factory=StyleGAN2DataConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(ckpt_every=500, sample_every=250))
    model: StyleGAN2ModelConfig = field(default_factory=StyleGAN2ModelConfig)


def build_networks(m: StyleGAN2ModelConfig, resolution: int) -> tuple[Generator, Discriminator]:
    """Fresh (``init=None``) or loaded G and D for ``resolution``; D is built fresh when the teacher has none.

    Raises: ConfigError when the teacher's resolution differs from the data's.
    """
    if m.init is None:
        G = Generator(z_dim=m.z_dim, c_dim=0, w_dim=m.w_dim, img_resolution=resolution, img_channels=3,
                      mapping_kwargs=dict(num_layers=m.mapping_layers), channel_base=m.channel_base,
                      channel_max=m.channel_max)
        D = None
    else:
        from kdpipe.pipeline.teacher.load import load_teacher

        teacher = load_teacher(m.init)
        G, D = teacher.G, teacher.D
        if G.img_resolution != resolution:
            raise ConfigError(f"model.init={m.init!r} renders {G.img_resolution}px but the data is {resolution}px; "
                              f"pass --resolution {G.img_resolution}")
    if D is None:
        D = Discriminator(c_dim=0, img_resolution=resolution, img_channels=3, channel_base=m.channel_base,
                          channel_max=m.channel_max)
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


class StyleGAN2Trainer:
    """StyleGAN2 as a :class:`kdpipe.trainers.core.loop.Trainer`. Batches: ``image`` float ``[B, 3, R, R]`` in [-1, 1]."""

    name = NAME

    def __init__(self, cfg: StyleGAN2TrainConfig, resolution: int, dist: DistInfo,
                 networks: tuple[Generator, Discriminator] | None = None):
        """``networks``: start from these (G, D) (trainable copies, e.g. of a loaded teacher) instead of
        :func:`build_networks`."""
        m, self.cfg, self.dist, self.device = cfg.model, cfg, dist, dist.device
        if cfg.loop.precision != "fp32":
            raise ConfigError(f"loop.precision={cfg.loop.precision!r}: the stylegan2 trainer runs fp32 only")
        torch.manual_seed(cfg.loop.seed)
        if networks is None:
            networks = build_networks(m, resolution)
        self.G, self.D = (net.train().requires_grad_(False).to(self.device) for net in networks)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.pl = PathLengthRegularizer(m.pl_decay, m.pl_weight).to(self.device)
        lr_g, betas_g = lazy_adam_hyperparams(m.lr, (m.beta1, m.beta2), m.pl_interval if m.pl_weight > 0 else None)
        lr_d, betas_d = lazy_adam_hyperparams(m.lr, (m.beta1, m.beta2), m.r1_interval if m.r1_gamma > 0 else None)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=betas_g, eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=betas_d, eps=1e-8)
        self.cur_nimg = 0
        self.sample_z = torch.randn([8, self.G.z_dim], generator=torch.Generator().manual_seed(0)).to(self.device)
        if dist.world_size > 1:  # same initial weights on every rank (seeded above), different latents per rank
            torch.manual_seed(cfg.loop.seed + 1_000_003 * dist.rank)

    # ------------------------------------------------------------------------------------------- helpers

    def _run_G(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream ``StyleGAN2Loss.run_G``: mapping (updates ``w_avg``), style mixing, synthesis (random noise)."""
        mapping = self.G.mapping
        ws = mapping(z)
        with torch.no_grad():
            mapping.w_avg.copy_(ws[:, 0].detach().mean(dim=0).lerp(mapping.w_avg, mapping.w_avg_beta))
        if self.cfg.model.style_mixing_prob > 0:
            cutoff = int(torch.randint(1, ws.shape[1], []))
            if float(torch.rand([])) >= self.cfg.model.style_mixing_prob:
                cutoff = ws.shape[1]
            ws2 = mapping(torch.randn_like(z))
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return self.G.synthesis(ws, noise_mode="random"), ws

    def _run_D(self, img: torch.Tensor) -> torch.Tensor:
        if self.cfg.model.augment:
            img = diff_augment(img, self.cfg.model.augment)
        return self.D(img)

    def _step(self, net: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Upstream phase: zero grads, backward, average grads over ranks, nan_to_num, Adam step."""
        opt.zero_grad(set_to_none=True)
        net.requires_grad_(True)
        loss.backward()
        net.requires_grad_(False)
        params = [p for p in net.parameters() if p.grad is not None]
        if self.dist.world_size > 1 and params:
            flat = torch.cat([p.grad.flatten() for p in params])
            torch.distributed.all_reduce(flat)
            flat /= self.dist.world_size
            torch.nn.utils.vector_to_parameters(flat, [p.grad for p in params])
        for p in params:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        opt.step()

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn([n, self.G.z_dim]).to(self.device)

    def _greg(self, n: int, step: int, out: dict) -> None:
        """Greg phase (every ``pl_interval`` steps when ``pl_weight > 0``): lazy path-length penalty on
        ``n / pl_batch_shrink`` fresh samples; logs ``Loss/pl_penalty`` into ``out``."""
        m = self.cfg.model
        if m.pl_weight > 0 and step % m.pl_interval == 0:
            self.G.requires_grad_(True)
            n_pl = max(n // m.pl_batch_shrink, 1)
            img, ws = self._run_G(self._z(n_pl))
            penalty = self.pl(img, ws)
            self._step(self.G, self.opt_G, (img[:, 0, 0, 0] * 0 + penalty).mean() * m.pl_interval)
            out["Loss/pl_penalty"] = penalty.detach().mean()

    def _dreg(self, real: torch.Tensor, step: int, out: dict) -> None:
        """Dreg phase (every ``r1_interval`` steps when ``r1_gamma > 0``): lazy R1 on the real images (image-level
        D); logs ``Loss/r1_penalty`` into ``out``."""
        m = self.cfg.model
        if m.r1_gamma > 0 and step % m.r1_interval == 0:
            self.D.requires_grad_(True)
            real_tmp = real.detach().requires_grad_(True)
            logits = self._run_D(real_tmp)
            penalty = r1_penalty(real_tmp, logits)
            self._step(self.D, self.opt_D, (logits * 0 + penalty.unsqueeze(1) * (m.r1_gamma / 2)).mean()
                       * m.r1_interval)
            out["Loss/r1_penalty"] = penalty.detach().mean()

    # ---------------------------------------------------------------------------------------------- step

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor | float]:
        """One minibatch through the four phases; returns upstream loss names (detached scalars)."""
        real = batch["image"].to(self.device)
        n = real.shape[0]
        out: dict[str, torch.Tensor | float] = {}

        self.G.requires_grad_(True)  # Gmain (params must require grad while the graph is built)
        fake, _ = self._run_G(self._z(n))
        loss_G = g_nonsaturating_loss(self._run_D(fake))
        self._step(self.G, self.opt_G, loss_G)
        out["Loss/G/loss"] = loss_G.detach()

        self._greg(n, step, out)

        with torch.no_grad():  # Dmain
            fake, _ = self._run_G(self._z(n))
        self.D.requires_grad_(True)
        loss_Dreal, loss_Dgen = d_logistic_loss(self._run_D(real), self._run_D(fake))
        self._step(self.D, self.opt_D, loss_Dgen + loss_Dreal)
        out["Loss/D/loss"] = (loss_Dgen + loss_Dreal).detach()

        self._dreg(real, step, out)

        self._update_ema(n * self.dist.world_size)
        if self.dist.is_main and ((step + 1) % self.cfg.loop.ckpt_every == 0 or step + 1 == self.cfg.loop.steps):
            self.export(self.cfg.loop.out_dir, step + 1)
        return out | {"Progress/kimg": self.cur_nimg / 1000}

    @torch.no_grad()
    def _update_ema(self, batch_size: int) -> None:
        beta = ema_beta(batch_size, self.cur_nimg, self.cfg.model.ema_kimg, self.cfg.model.ema_rampup)
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)
        self.cur_nimg += batch_size

    @torch.no_grad()
    def sample_rows(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Rows: G_ema on 8 fixed z (psi 1, const noise), then 8 real images of the batch."""
        return [self.G_ema(self.sample_z).cpu(), batch["image"][:8].cpu()]

    def state_dict(self) -> dict[str, Any]:
        """G, G_ema, D, both Adam states, pl_mean, cur_nimg and the networks' constructor kwargs."""
        return {"G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "D": self.D.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "pl": self.pl.state_dict(),
                "cur_nimg": self.cur_nimg, "G_kwargs": self.G.init_kwargs, "D_kwargs": self.D.init_kwargs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (kwargs are informational)."""
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.pl.load_state_dict(state["pl"])
        self.cur_nimg = int(state["cur_nimg"])

    def export(self, out_dir: str | Path, step: int) -> list[Path]:
        """Write ``network-snapshot-<step>.pkl`` (stylegan2-ada-pytorch layout: G_ema as G and G_ema, and D) and
        ``G_ema-<step>.safetensors`` (G_ema and D) into ``out_dir``."""
        from kdpipe.pipeline.teacher.formats.export import write_nvlabs_pytorch_pkl
        from kdpipe.pipeline.teacher.formats.safetensors_io import write_generator_safetensors

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        pkl = write_nvlabs_pytorch_pkl(out / f"network-snapshot-{step:06d}.pkl", self.G_ema, self.D)
        st = write_generator_safetensors(out / f"G_ema-{step:06d}.safetensors", self.G_ema, self.D)
        return [pkl, st]
