"""Stage one of seed 000: data-free KD from a StyleGAN2 teacher into a StarGANv2 student (Sec. 3.2, Eq. 1-5).

Per step: a minibatch of style-mixed triplets (x1 content, x2 reference, y = G'_T(Phi(s1, s2))) comes from the
teacher (online) or from style-mix shards; the frozen teacher gives D_T(x1)_l, D_T(x2)_l and the synthesis
features of y's latents; then D_S takes one Adam step on Eq. 4 (real = y, fake = the student's y_s), and the
student (E_S, E_R and/or the mapping network, G_S, the hint adaptors) one Adam step on Eq. 5 with lambda_adv and
lambda_kdl. Only one domain is learnt (the teacher is unconditional): y = 0 everywhere.

The loop, checkpoints, metrics and grids are :func:`kdpipe.trainers.core.loop.fit`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdpipe.errors import CheckpointError, ConfigError
from kdpipe.pipeline.latents import parse_mix
from kdpipe.pipeline.render import Renderer
from kdpipe.pipeline.teacher.load import Teacher, load_teacher
from kdpipe.trainers.core.loop import DistInfo, FitResult, autocast, wrap_objective
from kdpipe.trainers.stargan2 import losses_kd as L
from kdpipe.trainers.stargan2.config import KDConfig, KDLossConfig
from kdpipe.trainers.stargan2.data import (TeacherTriplets, online_batches, online_triplets, resize_to,
                                           shard_batches, shard_triplets)
from kdpipe.trainers.stargan2.losses_ft import r1_reg
from kdpipe.trainers.stargan2.networks import build_nets

TRAINER = "stargan2-kd"


class ResolutionMismatchError(ConfigError):
    """The student resolution cannot be distilled from this teacher (larger than the teacher's, or no common
    feature sizes)."""


def check_resolutions(student_size: int, teacher_size: int) -> None:
    """Student R must be <= teacher R_T (teacher images are box-downsampled by ``R_T / R``; features pair by size).

    Raises:
        ResolutionMismatchError: ``student_size > teacher_size``.
    """
    if student_size > teacher_size:
        raise ResolutionMismatchError(
            f"student model.img_size={student_size} is larger than the teacher's {teacher_size} px output; set "
            f"model.img_size to {teacher_size} or less (a power of two), or use a larger teacher")


class KDTrainer:
    """Seed 000 KD for StarGANv2 (a :class:`kdpipe.trainers.core.loop.Trainer`).

    Args:
        cfg: resolved :class:`KDConfig`.
        teacher: loaded :class:`Teacher` (frozen; needs both G and D).
        dist: process placement.
    Attributes:
        nets: ``ModuleDict`` generator / mapping_network / style_encoder / discriminator (one domain).
        adaptors: ``ModuleDict`` encoder / reference / generator of :class:`losses_kd.HintAdaptors`.
    Raises:
        CheckpointError: the teacher has no discriminator. ResolutionMismatchError: see :func:`check_resolutions`.
    """

    name = TRAINER

    def __init__(self, cfg: KDConfig, teacher: Teacher, dist: DistInfo = DistInfo()):
        if teacher.D is None:
            raise CheckpointError(f"teacher {teacher.name!r} has no discriminator; seed 000 KD distils D_T into the "
                                  "content and reference encoders (Eq. 1-2): use a checkpoint with D (NVlabs .pkl)")
        G_T = teacher.G
        check_resolutions(cfg.model.img_size, G_T.img_resolution)
        if cfg.loop.precision == "fp16":
            raise ConfigError("loop.precision=fp16 is not supported by the StarGANv2 trainers (several optimisers "
                              "and the R1 double backward); use bf16 or fp32")
        if cfg.loop.ema_decay > 0:
            raise ConfigError(f"loop.ema_decay={cfg.loop.ema_decay} is not used by the KD stage (finetuning keeps the "
                              "StarGANv2 EMA); leave it at 0")
        G_T.requires_grad_(False)
        teacher.D.requires_grad_(False)
        self.cfg, self.teacher, self.dist, self.device = cfg, teacher, dist, dist.device
        self.mix_layers = parse_mix(cfg.teacher.mix, G_T.num_ws)
        self.branches = {"reference": ["ref"], "latent": ["lat"], "both": ["ref", "lat"]}[cfg.loss.mode]
        m = cfg.model
        latent_dim = G_T.z_dim if m.latent_dim is None else m.latent_dim
        if "lat" in self.branches and latent_dim != G_T.z_dim:
            raise ConfigError(f"model.latent_dim={latent_dim} must equal the teacher's z_dim={G_T.z_dim} for "
                              "latent-guided KD (the student's mapping network takes the teacher's z2)")
        self.nets = build_nets(m.img_size, 1, m.style_dim, latent_dim, m.max_conv_dim, m.dim_in, m.num_down,
                               m.hidden_dim).to(self.device)
        self.adaptors = self._build_adaptors().to(self.device)
        # mapping and synthesis in the pipeline's fixed-row forwards: online triplets == style-mix shards
        self.renderer = Renderer(G_T, self.device, cfg.teacher.truncation_psi, None, "const")
        student = nn.ModuleDict({k: self.nets[k] for k in ("generator", "mapping_network", "style_encoder")})
        student["adaptors"] = self.adaptors
        # DDP: one gradient average per step over these (the mapping network is unused in mode=reference, ...)
        self.student = wrap_objective(student, dist, find_unused_parameters=cfg.loss.mode != "both")
        self.disc = wrap_objective(self.nets["discriminator"], dist, find_unused_parameters=False)
        o = cfg.optim

        def adam(params, lr):
            return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)

        self.optims = {
            "generator": adam(list(self.nets["generator"].parameters()) + list(self.adaptors.parameters()), o.lr),
            "mapping_network": adam(self.nets["mapping_network"].parameters(), o.f_lr),
            "style_encoder": adam(self.nets["style_encoder"].parameters(), o.lr),
            "discriminator": adam(self.nets["discriminator"].parameters(), o.lr),
        }
        self._last: list[torch.Tensor] = []

    @torch.no_grad()
    def _build_adaptors(self) -> nn.ModuleDict:
        """Size the 1x1 hint adaptors from one dummy forward of student and teacher (channels per spatial size)."""
        G_T, D_T, R = self.teacher.G, self.teacher.D, self.cfg.model.img_size
        x_t = torch.zeros(1, 3, G_T.img_resolution, G_T.img_resolution, device=self.device)
        d_ch = L.channels_of(L.disc_features_by_size(D_T(x_t, return_features=True)[1]))
        g_ch = L.channels_of(G_T.synthesis(G_T.mapping.w_avg.expand(1, G_T.num_ws, -1), return_features=True)[1])
        x = torch.zeros(1, 3, R, R, device=self.device)
        y0 = torch.zeros(1, dtype=torch.int64, device=self.device)
        h, e_feats = self.nets["generator"].encode_content(x, return_features=True)
        s, r_feats = self.nets["style_encoder"](x, y0, return_features=True)
        _, s_feats = self.nets["generator"].synthesize(h, s, return_features=True)
        side = self.cfg.loss.adaptor_side
        ad = nn.ModuleDict({"encoder": L.HintAdaptors(L.channels_of(e_feats), d_ch, side),
                            "reference": L.HintAdaptors(L.channels_of(r_feats), d_ch, side),
                            "generator": L.HintAdaptors(L.channels_of(s_feats), g_ch, side)})
        for name, a in ad.items():
            if not a.sizes:
                raise ResolutionMismatchError(f"no common feature sizes for the {name} KD term (student "
                                              f"{self.cfg.model.img_size} px vs teacher {G_T.img_resolution} px); "
                                              "use a student resolution closer to the teacher's")
        return ad

    # ---------------------------------------------------------------------------------------- one step

    def teacher_triplets(self, batch: dict[str, Any]) -> TeacherTriplets:
        """The minibatch's triplets (online from ``batch['index']`` or decoded shard tensors)."""
        identity = self.cfg.loss.triplets == "identity"
        if "index" in batch and "x1" not in batch:
            return online_triplets(self.renderer, batch["index"], self.cfg.data.base_seed, self.mix_layers, identity)
        return shard_triplets(self.renderer, batch, self.teacher.sha256, identity, need_z="lat" in self.branches)

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """One D_S step (Eq. 4) and one student step (Eq. 5). Returns detached scalars named after the paper.

        Order as pix2pixHD / most GAN code: the student's forward once, D_S steps on the detached output, then
        the student's adversarial term is taken through the updated D_S (whose weights get no gradient).
        """
        cfg, D_T, R = self.cfg.loss, self.teacher.D, self.cfg.model.img_size
        t = self.teacher_triplets(batch)
        with torch.no_grad():
            d_x1 = L.disc_features_by_size(D_T(t.x1, return_features=True)[1])
            d_x2 = d_x1 if t.x2 is t.x1 else L.disc_features_by_size(D_T(t.x2, return_features=True)[1])
        x1, x2, y_t = resize_to(t.x1, R), resize_to(t.x2, R), resize_to(t.y, R)
        y0 = torch.zeros(len(x1), dtype=torch.int64, device=self.device)
        amp = autocast(self.device, self.cfg.loop.precision)

        with amp:
            losses, outs = self.student(student_kd_losses, cfg, self.branches, x1, x2, t.z2, y_t, t.y_features,
                                        d_x1, d_x2, y0)
        out = {f"loss/{k}": v.detach() for k, v in losses.items() if k in ("ekdl", "rkdl", "gkdl")}
        out.update({f"loss/image_l1_{b}": losses[f"image_l1_{b}"].detach() for b in outs})

        if cfg.lambda_adv > 0:  # Eq. 4, discriminator side: real = teacher's y_t, fake = student outputs
            with amp:
                fakes = torch.cat([y_s.detach() for y_s in outs.values()])
                d_loss = self.disc(discriminator_kd_loss, y_t, fakes, y0, cfg.lambda_r1)
            self.optims["discriminator"].zero_grad(set_to_none=True)
            d_loss.backward()
            self.optims["discriminator"].step()
            out["loss/d_adv"] = d_loss.detach()

        adv = torch.zeros((), device=self.device)
        D = self.nets["discriminator"].requires_grad_(False)  # the student's adversarial term: no gradient into D_S
        if cfg.lambda_adv > 0:
            with amp:
                adv = sum(L.kd_adversarial_g_loss(D(y_s, y0)) for y_s in outs.values())
        D.requires_grad_(True)
        total = L.kd_total(cfg.lambda_adv, cfg.lambda_kdl, adv, losses["ekdl"], losses["rkdl"], losses["gkdl"])
        student = [k for k in self.optims if k != "discriminator"]
        for k in student:
            self.optims[k].zero_grad(set_to_none=True)
        total.backward()
        for k in student:
            self.optims[k].step()
        out.update({"loss/g_adv": adv.detach(), "loss/total": total.detach()})
        first = next(iter(outs.values()))
        self._last = [x1.detach(), x2.detach(), y_t.detach(), first.detach().float()]
        return out

    # ------------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"models": {k: v.state_dict() for k, v in self.nets.items()},
                "adaptors": self.adaptors.state_dict(),
                "optimizers": {k: v.state_dict() for k, v in self.optims.items()},
                "teacher": {"name": self.teacher.name, "sha256": self.teacher.sha256}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("teacher", {}).get("sha256") not in (None, self.teacher.sha256):
            raise CheckpointError(f"this KD run was made with teacher {state['teacher']['name']!r} "
                                  f"(sha256 {state['teacher']['sha256'][:12]}...); resume it with the same teacher")
        for k, v in self.nets.items():
            v.load_state_dict(state["models"][k])
        self.adaptors.load_state_dict(state["adaptors"])
        for k, v in self.optims.items():
            v.load_state_dict(state["optimizers"][k])

    def sample_rows(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Grid rows: x1 (content), x2 (reference), y_t (teacher mix), y_s (student)."""
        return self._last


def student_kd_losses(student: nn.ModuleDict, cfg: KDLossConfig, branches: list[str], x1: torch.Tensor,
                      x2: torch.Tensor, z2: torch.Tensor | None, y_t: torch.Tensor, y_features: dict,
                      d_x1: dict, d_x2: dict, y0: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Everything of Eq. 1-3 that trains the student, in one call (so DDP can wrap it, see ``core.loop.Objective``).

    Args:
        student: ``generator``, ``mapping_network``, ``style_encoder``, ``adaptors`` (encoder/reference/generator).
        branches: ``"ref"`` (style from E_R(x2)) and/or ``"lat"`` (style from the mapping network of z2).
        x1, x2, y_t: ``[N, 3, R, R]`` at the student's resolution; z2 ``[N, z_dim]`` (``"lat"`` only).
        y_features / d_x1 / d_x2: teacher features ``{size: [N, C, size, size]}`` (frozen).
        y0: ``[N]`` int64 domain labels (all 0: the teacher is unconditional).
    Returns:
        ``({"ekdl", "rkdl", "gkdl", "image_l1_<branch>"}: scalars, {branch: y_s [N, 3, R, R]})``.
    """
    G, ad = student["generator"], student["adaptors"]
    content, e_feats = G.encode_content(x1, return_features=True)
    ekdl, _ = L.encoder_kd_loss(e_feats, d_x1, ad["encoder"], cfg.gamma)
    losses = {"ekdl": ekdl, "rkdl": torch.zeros((), device=x1.device), "gkdl": torch.zeros((), device=x1.device)}
    outs = {}
    for b in branches:
        if b == "ref":
            s, r_feats = student["style_encoder"](x2, y0, return_features=True)
            losses["rkdl"], _ = L.reference_kd_loss(r_feats, d_x2, ad["reference"], cfg.tau)
        else:
            s = student["mapping_network"](z2, y0)
        y_s, g_feats = G.synthesize(content, s, return_features=True)
        g_b, parts = L.generator_kd_loss(g_feats, y_features, ad["generator"], y_s, y_t, cfg.alpha, cfg.beta)
        losses["gkdl"] = losses["gkdl"] + g_b
        losses[f"image_l1_{b}"] = torch.tensor(parts["image"])
        outs[b] = y_s
    return losses, outs


def discriminator_kd_loss(D: nn.Module, y_t: torch.Tensor, fakes: torch.Tensor, y0: torch.Tensor,
                          lambda_r1: float) -> torch.Tensor:
    """Eq. 4, D_S side: ``BCE(D_S(y_t), 1) + BCE(D_S(y_s), 0)`` (+ ``lambda_r1`` R1 on y_t; not in Eq. 4).

    ``fakes``: the detached student outputs of every branch, ``[k N, 3, R, R]``.
    """
    y_real = y_t.detach().requires_grad_(lambda_r1 > 0)
    d_real = D(y_real, y0)
    loss = L.kd_adversarial_d_loss(d_real, D(fakes, y0.repeat(len(fakes) // len(y0))))
    return loss + lambda_r1 * r1_reg(d_real, y_real) if lambda_r1 > 0 else loss


def setup(cfg: KDConfig, state: dict | None, overrides: Any = None):
    """Checks made before training; returns ``build(dist) -> (KDTrainer, batches)`` (loads the teacher there).

    Raises:
        ConfigError: no teacher, or ``data.source=shards`` without ``data.path``.
    """
    if not cfg.teacher.spec:
        raise ConfigError("teacher.spec is empty; pass --teacher builtin:random-64 or a StyleGAN2 checkpoint path")
    d = cfg.data
    if d.source == "shards" and not d.path:
        raise ConfigError("data.source=shards needs data.path (OUT/style-mix written by `kdpipe generate`)")

    def build(dist: DistInfo):
        trainer = KDTrainer(cfg, load_teacher(cfg.teacher.spec, dist.device), dist)
        if d.source == "online":
            return trainer, lambda pos: online_batches(d.batch_size, pos, dist.rank, dist.world_size)
        return trainer, lambda pos: shard_batches(d.path, d.batch_size, cfg.loop.seed, d.num_workers,
                                                  d.shuffle_buffer, pos, dist.rank, dist.world_size)

    return build


def run_kd(config_path: str | Path | None = None, overrides: dict[str, Any] | None = None, resume: bool = False,
           resume_from: str | Path | None = None) -> FitResult:
    """``kdpipe train stargan2-kd`` as a function: see :func:`kdpipe.trainers.registry.train`."""
    from kdpipe.trainers.registry import train

    return train(TRAINER, config_path, overrides, resume, resume_from)
