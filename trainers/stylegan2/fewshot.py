"""``kdpipe train stylegan2-fewshot``: adapt a StyleGAN2 teacher to ~10 target images (seed 001; CDC; finetuning).

Seed 001 ("Exploiting knowledge distillation for few-shot image generation"), Eq. 10::

    L = L*_adv(G_T, D_T, D_P) + alpha * L_dist(G_T, G_S) + beta * L_dist(G_S, D_P)

* G_T (trained) and D_T start from the source teacher's G and D; a frozen copy of G is the source G_S; G_T's EMA
  (StyleGAN2's G_ema) is the momentum generator G_M.
* ``L*_adv`` (Eq. 4, CDC's anchors and patch discriminator): ``num_anchors`` latents Z* fixed at the start; every
  ``anchor_interval``-th step G_T renders anchors (``z* + anchor_std * N(0, I)``) judged by the image-level D_T,
  the other steps random latents judged by the patch-level D_P (a 3x3 conv on D_T's block output at
  ``patch_res``). Non-saturating logistic loss, lazy R1 on the image-level D, path length, as ``kdpipe train
  stylegan2`` (:mod:`kdpipe.trainers.stylegan2.train`).
* ``L_dist(G_T, G_S)`` (Eq. 5-8): momentum relation distillation over the synthesis blocks' outputs on
  ``dist_batch`` fresh latents (noise ``const``, the same for G_S, G_T and G_M), SSIM-A similarities to the other
  samples and to a queue of the last ``queue_size`` G_M activations (:mod:`.fewshot_losses`).
* ``L_dist(G_S, D_P)`` (Eq. 9, source discrimination distillation): D_P also learns real source-domain images
  (``source_data``) against G_S's images.

``method``: ``kd`` (all of the above, alpha 1e4, beta 0.1, k 16, batch 4: the paper's defaults), ``cdc`` (Ojha et
al. 2021: cosine similarities within the batch, alpha 1e3 (CDC's ``kl_wt``), anchors + patch D, no queue, no SDD)
or ``finetune`` (plain StyleGAN2 training from the teacher: image-level D only, no distillation).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from kdpipe.config import check_choice, check_min
from kdpipe.errors import ConfigError
from kdpipe.images import to_float
from kdpipe.pipeline.teacher.networks import Conv2dLayer
from kdpipe.trainers.core.config import LoopConfig
from kdpipe.trainers.core.loop import DistInfo, FitResult
from kdpipe.trainers.gan.losses import d_logistic_loss, g_nonsaturating_loss, lazy_adam_hyperparams
from kdpipe.trainers.stylegan2.data import load_images
from kdpipe.trainers.stylegan2.fewshot_losses import (MomentumQueue, cosine_similarity, relation_distillation_loss,
                                                      ssim_a)
from kdpipe.trainers.stylegan2.run import build_on_images
from kdpipe.trainers.stylegan2.train import StyleGAN2DataConfig, StyleGAN2ModelConfig, StyleGAN2Trainer

NAME = "stylegan2-fewshot"
METHODS = ("kd", "cdc", "finetune")
DEFAULT_ALPHA = {"kd": 1e4, "cdc": 1e3, "finetune": 0.0}
"""``loss.alpha`` when left None: seed 001 Sec. 4 (1e4); CDC's ``--kl_wt`` default (1e3)."""


@dataclass
class FewShotLossConfig:
    """Few-shot objective (seed 001 Eq. 10) and its baselines."""

    method: str = "kd"
    """``kd`` (seed 001: SSIM-A momentum relation + source discrimination distillation), ``cdc`` (cross-domain
    correspondence: cosine relations in the batch, anchors + patch D) or ``finetune`` (plain GAN finetuning)."""
    alpha: float | None = None
    """Weight of L_dist(G_T, G_S); None = the method's default (kd 1e4, seed 001 Sec. 4; cdc 1e3, CDC's kl_wt)."""
    beta: float = 0.1
    """Weight of the source discrimination distillation L_dist(G_S, D_P) (Eq. 9; kd only; seed 001: 0.1)."""
    source_data: str = ""
    """Real source-domain images for Eq. 9 (as --data: ``digits``, a folder or shards); needed when beta > 0."""
    queue_size: int = 16
    """k, the momentum queue's length in activations (Eq. 7; seed 001 Table 4: 16); 0 = batch keys only."""
    dist_batch: int = 4
    """Latents per step for the relation loss (CDC's feat_const_batch 4; >= 2)."""
    layers: list[int] | None = None
    """Synthesis block resolutions whose outputs are distilled; None = every block."""
    ssim_win_size: int = 11
    """SSIM-A window side (Eq. 5; shrunk to the map size for smaller maps; Wang et al. 2004: 11)."""
    ssim_win_sigma: float | None = 1.5
    """Gaussian window std (Wang et al. 2004: 1.5); None = uniform window."""
    ssim_c1: float = 0.01 ** 2
    """Eq. 5's c1 = (K1 L)^2 with K1 = 0.01, L = 1."""
    ssim_c2: float = 0.03 ** 2
    """Eq. 5's c2 = (K2 L)^2 with K2 = 0.03, L = 1."""
    num_anchors: int | None = None
    """|Z*|, the anchor latents (Eq. 4); None = the number of target images (CDC)."""
    anchor_interval: int = 4
    """Every this many steps the anchors and the image-level D are used, else the patch D (CDC subspace_freq 4)."""
    anchor_std: float = 0.05
    """Std of the Gaussian added to an anchor latent (CDC subspace_std 0.05)."""
    patch_res: int | None = None
    """Side of D_P's logit map (a D block's output resolution, 4 .. R/2); None = R/4."""

    def __post_init__(self) -> None:
        check_choice("loss.method", self.method, METHODS)
        for name in ("queue_size", "beta", "anchor_std", "ssim_c1", "ssim_c2"):
            check_min(f"loss.{name}", getattr(self, name), 0)
        for name in ("anchor_interval", "ssim_win_size"):
            check_min(f"loss.{name}", getattr(self, name), 1)
        check_min("loss.dist_batch", self.dist_batch, 2)
        if self.alpha is not None:
            check_min("loss.alpha", self.alpha, 0)
        if self.num_anchors is not None:
            check_min("loss.num_anchors", self.num_anchors, 1)

    @property
    def weight(self) -> float:
        """alpha, resolved (see :data:`DEFAULT_ALPHA`)."""
        return DEFAULT_ALPHA[self.method] if self.alpha is None else float(self.alpha)


@dataclass
class FewShotTrainConfig:
    """Everything ``kdpipe train stylegan2-fewshot`` needs; YAML sections ``data``, ``loop``, ``model``, ``loss``.
    ``model.init`` (``--teacher``) is the source model; the model section's scratch fields are unused."""

    data: StyleGAN2DataConfig = field(default_factory=lambda: StyleGAN2DataConfig(batch_size=4))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=1000, ckpt_every=250, sample_every=100))
    model: StyleGAN2ModelConfig = field(default_factory=lambda: StyleGAN2ModelConfig(
        lr=0.002, ema_kimg=1.25, ema_rampup=None))
    loss: FewShotLossConfig = field(default_factory=FewShotLossConfig)


class PatchHead(torch.nn.Module):
    """D_P's classifier (CDC's ``Extra``): D's block output ``[N, C, r, r]`` -> patch logits ``[N, 1, r, r]``
    (one equalised-lr 3x3 conv, linear)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = Conv2dLayer(in_channels, 1, kernel_size=3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)


class FewShotTrainer(StyleGAN2Trainer):
    """Seed 001 / CDC / finetuning as a :class:`kdpipe.trainers.core.loop.Trainer` (module doc). Batches: ``image``
    float ``[B, 3, R, R]`` in [-1, 1] (target images). Reuses the StyleGAN2 trainer's phases, EMA and export."""

    name = NAME

    def __init__(self, cfg: FewShotTrainConfig, teacher, num_targets: int, source_images: torch.Tensor | None,
                 dist: DistInfo):
        L = cfg.loss
        super().__init__(cfg, teacher.G.img_resolution, dist, (copy.deepcopy(teacher.G), copy.deepcopy(teacher.D)))
        self.G_S = copy.deepcopy(teacher.G).eval().requires_grad_(False).to(self.device)
        self.patch_key = 2 * (L.patch_res or self.G.img_resolution // 4)  # D feature key = block input side
        if self.patch_key not in self.D.block_resolutions:
            raise ConfigError(f"loss.patch_res={L.patch_res!r}: D blocks output "
                              f"{sorted(r // 2 for r in self.D.block_resolutions)} px maps; pick one of those")
        with torch.random.fork_rng(devices=[]):  # the same head on every rank (the parent reseeds per rank)
            torch.manual_seed(cfg.loop.seed)
            channels = getattr(self.D, f"b{self.patch_key}").conv1.weight.shape[0]
            self.P = PatchHead(channels).train().requires_grad_(False).to(self.device)
        self.D_and_P = torch.nn.ModuleList([self.D, self.P])
        m = cfg.model
        lr_d, betas_d = lazy_adam_hyperparams(m.lr, (m.beta1, m.beta2), m.r1_interval if m.r1_gamma > 0 else None)
        self.opt_D = torch.optim.Adam(self.D_and_P.parameters(), lr=lr_d, betas=betas_d, eps=1e-8)
        self.layers = L.layers or list(self.G.synthesis.block_resolutions)
        bad = sorted(set(self.layers) - set(self.G.synthesis.block_resolutions))
        if bad:
            raise ConfigError(f"loss.layers={L.layers!r}: {bad} are not synthesis blocks "
                              f"({self.G.synthesis.block_resolutions})")
        self.similarity = (partial(ssim_a, win_size=L.ssim_win_size, win_sigma=L.ssim_win_sigma, c1=L.ssim_c1,
                                   c2=L.ssim_c2) if L.method == "kd" else cosine_similarity)
        self.queue = MomentumQueue(L.queue_size if L.method == "kd" else 0)
        self.anchors = torch.randn([L.num_anchors or num_targets, self.G.z_dim],
                                   generator=torch.Generator().manual_seed(cfg.loop.seed)).to(self.device)
        self.source_images = source_images

    # ------------------------------------------------------------------------------------------- helpers

    def _run_D_patch(self, img: torch.Tensor) -> torch.Tensor:
        """D_P(img): patch logits ``[N, 1, r, r]`` from D's block output (augmented as the image-level D)."""
        if self.cfg.model.augment:
            from kdpipe.trainers.gan.augment import diff_augment

            img = diff_augment(img, self.cfg.model.augment)
        return self.P(self.D(img, return_features=True)[1][self.patch_key])

    def _features(self, G: torch.nn.Module, z: torch.Tensor) -> dict[int, torch.Tensor]:
        """Outputs of the distilled synthesis blocks, noise ``const`` (the same for G_S, G_T and G_M)."""
        _, feats = G.synthesis(G.mapping(z), noise_mode="const", return_features=True)
        return {r: feats[r] for r in self.layers}

    def _relation_loss(self) -> torch.Tensor:
        """L_dist(G_T, G_S) on ``dist_batch`` fresh latents; kd pushes G_M's activations into the queue after."""
        z = self._z(self.cfg.loss.dist_batch)
        with torch.no_grad():
            source = self._features(self.G_S, z)
        loss = relation_distillation_loss(source, self._features(self.G, z), self.similarity,
                                          self.queue if self.queue.k else None)
        if self.queue.k:
            with torch.no_grad():
                self.queue.push(z, source, self._features(self.G_ema, z))
        return loss

    def _anchor_z(self, n: int) -> torch.Tensor:
        """``n`` latents from the anchor region: random anchors + ``anchor_std`` Gaussian noise (CDC)."""
        idx = torch.randint(len(self.anchors), [n]).to(self.device)
        return self.anchors[idx] + self.cfg.loss.anchor_std * self._z(n)

    def _fake(self, n: int, anchor: bool) -> torch.Tensor:
        """G_T's images for the adversarial terms: anchors (no style mixing) or the StyleGAN2 sampling."""
        if anchor:
            return self.G.synthesis(self.G.mapping(self._anchor_z(n)), noise_mode="random")
        return self._run_G(self._z(n))[0]

    def _source_batch(self, n: int, step: int) -> torch.Tensor:
        """``n`` real source images, drawn from ``(seed, step)`` alone (so resume is exact without extra state)."""
        idx = np.random.default_rng([self.cfg.loop.seed, 1, step]).integers(0, len(self.source_images), n)
        return to_float(self.source_images[torch.from_numpy(idx)]).to(self.device)

    # ---------------------------------------------------------------------------------------------- step

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor | float]:
        """Gmain (+ alpha L_dist), Greg, Dmain (+ beta SDD), Dreg; returns detached scalars."""
        L = self.cfg.loss
        real = batch["image"].to(self.device)
        n = real.shape[0]
        anchor = L.method == "finetune" or step % L.anchor_interval == 0  # image-level D (finetune: always)
        disc = self._run_D if anchor else self._run_D_patch
        out: dict[str, torch.Tensor | float] = {}

        self.G.requires_grad_(True)  # Gmain: L*_adv (Eq. 4) + alpha L_dist(G_T, G_S) (Eq. 8)
        loss_G = g_nonsaturating_loss(disc(self._fake(n, anchor and L.method != "finetune")).flatten(1))
        loss = loss_G
        if L.method != "finetune":
            loss_dist = self._relation_loss()
            loss = loss + L.weight * loss_dist
            out["Loss/G/dist"] = loss_dist.detach()
        self._step(self.G, self.opt_G, loss)
        out["Loss/G/loss"] = loss_G.detach()

        self._greg(n, step, out)

        with torch.no_grad():  # Dmain: L*_adv + beta L_dist(G_S, D_P) (Eq. 9)
            fake = self._fake(n, anchor and L.method != "finetune")
        self.D_and_P.requires_grad_(True)
        loss_Dreal, loss_Dgen = d_logistic_loss(disc(real).flatten(1), disc(fake).flatten(1))
        loss_D = loss_Dreal + loss_Dgen
        out["Loss/D/loss"] = loss_D.detach()
        if L.method == "kd" and L.beta > 0:
            with torch.no_grad():
                source_fake = self.G_S(self._z(n), noise_mode="random")
            sdd_real, sdd_fake = d_logistic_loss(self._run_D_patch(self._source_batch(n, step)).flatten(1),
                                                 self._run_D_patch(source_fake).flatten(1))
            loss_D = loss_D + L.beta * (sdd_real + sdd_fake)
            out["Loss/D/sdd"] = (sdd_real + sdd_fake).detach()
        self._step(self.D_and_P, self.opt_D, loss_D)

        self._dreg(real, step, out)

        self._update_ema(n * self.dist.world_size)
        if self.dist.is_main and ((step + 1) % self.cfg.loop.ckpt_every == 0 or step + 1 == self.cfg.loop.steps):
            self.export(self.cfg.loop.out_dir, step + 1)
        return out | {"Progress/kimg": self.cur_nimg / 1000, "Progress/queue": float(len(self.queue))}

    @torch.no_grad()
    def sample_rows(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Rows: the source G_S, then the adapted G_ema, on the same 8 fixed z (psi 1, const noise); 8 targets."""
        return [self.G_S(self.sample_z).cpu(), self.G_ema(self.sample_z).cpu(), batch["image"][:8].cpu()]

    def state_dict(self) -> dict[str, Any]:
        """The StyleGAN2 trainer's state (opt_D covers D and D_P) + G_S, D_P, the queue and the anchors."""
        return super().state_dict() | {"G_S": self.G_S.state_dict(), "P": self.P.state_dict(),
                                       "queue": self.queue.state_dict(), "anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        super().load_state_dict(state)
        self.G_S.load_state_dict(state["G_S"])
        self.P.load_state_dict(state["P"])
        self.queue.load_state_dict(state["queue"], self.device)
        self.anchors = state["anchors"].to(self.device)


# ------------------------------------------------------------------------------------------------ set-up

def setup(cfg: FewShotTrainConfig, state: dict[str, Any] | None, overrides: Mapping[str, Any]):
    """Load the teacher (G and D), the target images (resized to the teacher's resolution) and, for kd with
    beta > 0, the source images; return ``build(dist) -> (trainer, batches)``.

    Raises:
        ConfigError: no ``--teacher`` / ``--data``, a teacher without a discriminator, kd with beta > 0 and no
            ``--source-data``, ``data.resolution`` other than the teacher's, or a batch that does not split.
        DatasetError: unreadable images.
    """
    from kdpipe.pipeline.teacher.load import load_teacher

    L, m = cfg.loss, cfg.model
    if not m.init:
        raise ConfigError("no source model; pass --teacher (a StyleGAN2 checkpoint with D, or builtin:digits-32)")
    if not cfg.data.path:
        raise ConfigError("no target images; pass --data (a folder of ~10 images, shards or 'digits')")
    teacher = load_teacher(m.init)
    if teacher.D is None:
        raise ConfigError(f"teacher {m.init!r} has no discriminator; few-shot adaptation starts D from the source D "
                          "(seed 001): pass a checkpoint with D (stylegan2-ada / NVlabs .pkl, a kdpipe snapshot)")
    res = teacher.G.img_resolution
    if cfg.data.resolution not in (None, res):
        raise ConfigError(f"data.resolution={cfg.data.resolution} but teacher {m.init!r} renders {res}px; drop it "
                          "(target images are resized to the teacher's resolution)")
    targets = load_images(cfg.data.path, res)
    source = None
    if L.method == "kd" and L.beta > 0:
        if not L.source_data:
            raise ConfigError("loss.beta > 0 (source discrimination distillation, Eq. 9) needs real source-domain "
                              "images: pass --source-data (e.g. 'digits' for builtin:digits-32) or --beta 0")
        source = load_images(L.source_data, res)

    return build_on_images(cfg, targets, lambda dist: FewShotTrainer(cfg, teacher, len(targets), source, dist))


def run(config_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
        resume: bool = False, resume_from: str | Path | None = None) -> FitResult:
    """Adapt (or resume adapting) a teacher: ``kdpipe train stylegan2-fewshot`` as a function.

    Args: as :func:`kdpipe.trainers.stylegan2.run.run`; overrides e.g. ``{"model.init": "builtin:digits-32",
        "data.path": "target/", "loss.method": "kd", "loss.source_data": "digits", "loop.out_dir": "runs/fs"}``.
    Writes: as ``kdpipe train stylegan2`` (checkpoints hold the queue, so resume is exact); the snapshots
    ``network-snapshot-<step>.pkl`` (adapted G_ema and D) load as teachers.
    """
    from kdpipe.trainers.registry import train

    return train(NAME, config_path, overrides, resume, resume_from)
