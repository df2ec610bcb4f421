"""Stage one: data-free distillation of a StyleGAN2 teacher into the conditional student (seed 000 Sec. 3.3).

Per step, with a minibatch of style-mixed triplets (x1, x2, y) from the teacher -- online, or from style-mix shards,
the StarGANv2 student's code path (:mod:`kdpipe.trainers.stargan2.data`):

1. pseudo-conditions ``c_x = SE(x1)``, ``c_y = SE(y)`` (``condition.pseudo=encoder``; SE = the teacher's D without
   its last FC, initialised from it, trained with the student) or ``c = 1`` (``ones``, the fallback for one-hot
   spatial maps; then D_S gets 0);
2. student outputs ``x1_s = G_S(z, G'_T(s1)_1, c_x)`` and ``y_s = G_S(z, G'_T(Phi(s1, s2))_1, c_y)`` for one z;
3. D_S takes one Adam step on Eq. 4 (real = x1, y; fake = x1_s, y_s; condition 0);
4. G_S, SE and the hint adaptors one Adam step on Eq. 8: ``lambda_adv L_adv + lambda_kdl L_kdl (Eq. 6) +
   lambda_srl L_srl (Eq. 7)``.

The teacher (G_T, D_T) is frozen and gets no gradient. Logged: ``loss/kdl``, ``loss/srl``, ``loss/g_adv``,
``loss/d``, ``loss/total`` and ``delta_c`` = mean |x1_s - y_s| (how much the condition changes the image).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from kdpipe.errors import CheckpointError, ConfigError
from kdpipe.pipeline.latents import parse_mix
from kdpipe.pipeline.render import Renderer
from kdpipe.pipeline.teacher.load import Teacher
from kdpipe.trainers.core.loop import DistInfo, autocast, wrap_objective
from kdpipe.trainers.stargan2.data import TeacherTriplets, online_triplets, resize_to, shard_triplets
from kdpipe.trainers.stargan2.losses_kd import HintAdaptors, channels_of
from kdpipe.trainers.stargan2.train_kd import check_resolutions
from kdpipe.trainers.x2i import losses as L
from kdpipe.trainers.x2i.config import X2IConfig
from kdpipe.trainers.x2i.networks import ConditionalDiscriminator, ConditionalGenerator, SemanticEncoder

TRAINER = "x2i"


def kd_architecture(cfg: X2IConfig, teacher: Teacher) -> dict[str, Any]:
    """The student's sizes for this teacher (saved in checkpoints as ``arch``; finetuning rebuilds from it).

    Raises:
        CheckpointError: ``condition.pseudo=encoder`` but the teacher has no discriminator.
        ConfigError: student larger than the teacher, or ``kd.student_z=teacher`` with another z_dim.
    """
    G_T, m, c = teacher.G, cfg.model, cfg.condition
    if c.pseudo == "encoder" and teacher.D is None:
        raise CheckpointError(f"teacher {teacher.name!r} has no discriminator, which the semantic encoder is made "
                              "from (seed 000 Sec. 3.3); use a checkpoint with D or condition.pseudo=ones")
    img_size = m.img_size or G_T.img_resolution
    check_resolutions(img_size, G_T.img_resolution)
    z_dim = m.z_dim or G_T.z_dim
    if cfg.kd.student_z == "teacher" and z_dim != G_T.z_dim:
        raise ConfigError(f"model.z_dim={z_dim} must equal the teacher's z_dim={G_T.z_dim} with "
                          "kd.student_z=teacher (the student takes the content image's z); use kd.student_z=random")
    se_dim = int(teacher.D.b4.fc.out_features) if teacher.D is not None else 128
    cond_dim = 0 if c.kind == "seg" else (m.cond_dim or se_dim)
    if c.pseudo == "encoder" and cond_dim != se_dim:
        raise ConfigError(f"model.cond_dim={cond_dim} must equal the semantic encoder's output width {se_dim} "
                          "(the teacher D's last hidden layer); leave model.cond_dim=0")
    with torch.no_grad():
        t_ch = G_T.synthesis(G_T.mapping.w_avg.expand(1, G_T.num_ws, -1), return_features=True)[1][4].shape[1]
    return {"kind": c.kind, "img_size": img_size, "z_dim": z_dim, "cond_dim": cond_dim,
            "seg_classes": c.num_classes if c.kind == "seg" else 0, "channel_base": m.channel_base,
            "channel_max": m.channel_max, "spade_hidden": m.spade_hidden,
            "teacher_channels": int(t_ch) if m.teacher_feature else 0,
            "se_kwargs": dict(teacher.D.init_kwargs) if c.pseudo == "encoder" else None}


def build_generator(arch: dict[str, Any], teacher_channels: int | None = None) -> ConditionalGenerator:
    """:class:`ConditionalGenerator` of an ``arch`` dict (``teacher_channels`` overrides arch's: 0 = finetuning)."""
    return ConditionalGenerator(arch["img_size"], arch["z_dim"], arch["cond_dim"], arch["seg_classes"],
                                arch["channel_base"], arch["channel_max"], arch["spade_hidden"],
                                arch["teacher_channels"] if teacher_channels is None else teacher_channels)


class DistillTrainer:
    """Seed 000 Sec. 3.3 distillation (a :class:`kdpipe.trainers.core.loop.Trainer`).

    Args:
        cfg: resolved :class:`X2IConfig` (stage ``distill``). teacher: loaded, frozen here. dist: placement.
    Attributes:
        arch: :func:`kd_architecture`. nets: ``ModuleDict`` generator / discriminator / semantic_encoder (encoder
            pseudo-conditions only) / adaptors (1x1 hint convs per feature size, :class:`HintAdaptors`).
    """

    name = TRAINER

    def __init__(self, cfg: X2IConfig, teacher: Teacher, dist: DistInfo = DistInfo()):
        if cfg.loop.precision == "fp16":
            raise ConfigError("loop.precision=fp16 is not supported by the x2i trainer (R1 double backward); "
                              "use bf16 or fp32")
        G_T = teacher.G.requires_grad_(False)
        if teacher.D is not None:
            teacher.D.requires_grad_(False)
        self.cfg, self.teacher, self.dist, self.device = cfg, teacher, dist, dist.device
        self.arch = kd_architecture(cfg, teacher)
        self.mix_layers = parse_mix(cfg.teacher.mix, G_T.num_ws)
        self.renderer = Renderer(G_T, self.device, cfg.teacher.truncation_psi, None, "const")
        a = self.arch
        nets = nn.ModuleDict({"generator": build_generator(a),
                              "discriminator": ConditionalDiscriminator(a["img_size"], 0, a["seg_classes"],
                                                                        a["channel_base"], a["channel_max"])})
        if cfg.condition.pseudo == "encoder":
            nets["semantic_encoder"] = SemanticEncoder(teacher.D)
        nets["adaptors"] = self._build_adaptors(nets["generator"])
        self.nets = nets.to(self.device)
        self.alphas = L.feature_weights(self._teacher_channels, cfg.loss.alpha_small, cfg.loss.alpha_large)
        student = nn.ModuleDict({k: v for k, v in self.nets.items() if k != "discriminator"})
        self.student = wrap_objective(student, dist)
        self.disc = wrap_objective(self.nets["discriminator"], dist, find_unused_parameters=False)
        o = cfg.optim
        self.optims = {"student": torch.optim.Adam(student.parameters(), lr=o.lr, betas=(o.beta1, o.beta2)),
                       "discriminator": torch.optim.Adam(self.nets["discriminator"].parameters(), lr=o.d_lr,
                                                         betas=(o.beta1, o.beta2))}
        self._last: list[torch.Tensor] = []

    @torch.no_grad()
    def _build_adaptors(self, G: ConditionalGenerator) -> HintAdaptors:
        G_T, a = self.teacher.G, self.arch
        t_feats = G_T.synthesis(G_T.mapping.w_avg.expand(1, G_T.num_ws, -1), return_features=True)[1]
        self._teacher_channels = channels_of(t_feats)
        c = self.pseudo_condition(torch.zeros(1, 3, G_T.img_resolution, G_T.img_resolution), None)
        f = t_feats[4] if a["teacher_channels"] else None
        _, s_feats = G(torch.zeros(1, a["z_dim"]), c, f, return_features=True)
        return HintAdaptors(channels_of(s_feats), self._teacher_channels, "student")

    def pseudo_condition(self, images: torch.Tensor, se: nn.Module | None) -> torch.Tensor:
        """The distillation condition of teacher images ``[N, 3, R_T, R_T]``: ``SE(images)`` ``[N, cond_dim]`` or
        ones (``[N, cond_dim]``, or ``[N, K, R, R]`` for seg)."""
        a, n = self.arch, len(images)
        if se is not None:
            return se(images)
        shape = (n, a["seg_classes"], a["img_size"], a["img_size"]) if a["seg_classes"] else (n, a["cond_dim"])
        return torch.ones(shape, device=images.device)

    def teacher_triplets(self, batch: dict[str, Any]) -> TeacherTriplets:
        """The minibatch's triplets with x1's features and z1 (online from ``batch['index']``, or a shard batch)."""
        if "index" in batch and "x1" not in batch:
            return online_triplets(self.renderer, batch["index"], self.cfg.kd.base_seed, self.mix_layers)
        return shard_triplets(self.renderer, batch, self.teacher.sha256, need_x1=True)

    def student_z(self, t: TeacherTriplets, step: int) -> torch.Tensor:
        """z_s ``[N, z_dim]``: the teacher's z1 (``kd.student_z=teacher``) or N(0, I) from ``[loop.seed, step]``."""
        if self.cfg.kd.student_z == "teacher":
            if t.z1 is None:
                raise ConfigError("these shards have no json 'seeds', so z1 cannot be rebuilt; use "
                                  "kd.student_z=random or kd.source=online")
            return t.z1.to(self.device)
        rng = np.random.default_rng([self.cfg.loop.seed, step])
        return torch.from_numpy(rng.standard_normal((len(t.x1), self.arch["z_dim"])).astype(np.float32)).to(
            self.device)

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """One D_S step (Eq. 4), then one student step (Eq. 8). Returns detached scalars."""
        cfg, R = self.cfg.loss, self.arch["img_size"]
        t = self.teacher_triplets(batch)
        z = self.student_z(t, step)
        amp = autocast(self.device, self.cfg.loop.precision)
        with amp:
            losses, parts, (x1_s, y_s) = self.student(distill_losses, self, t, z)
        real = torch.cat([resize_to(t.x1, R), resize_to(t.y, R)])
        fake = torch.cat([x1_s, y_s])
        with amp:
            d_loss, d_parts = self.disc(L.discriminator_loss, real, fake.detach(), None, None, cfg.r1_gamma)
        self.optims["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.optims["discriminator"].step()
        D = self.nets["discriminator"].requires_grad_(False)  # the student's adversarial term: no gradient into D_S
        with amp:
            adv = L.generator_adv_loss(D(fake, None))
        D.requires_grad_(True)
        total = L.total_loss(adv, losses["kdl"], losses["srl"], cfg.lambda_adv, cfg.lambda_kdl, cfg.lambda_srl)
        self.optims["student"].zero_grad(set_to_none=True)
        total.backward()
        self.optims["student"].step()
        self._last = [t.x1.detach(), t.y.detach(), x1_s.detach().float(), y_s.detach().float()]
        out = {"loss/kdl": losses["kdl"].detach(), "loss/srl": losses["srl"].detach(), "loss/g_adv": adv.detach(),
               "loss/d": d_loss.detach(), "loss/total": total.detach(), "delta_c": -losses["srl"].detach()}
        out.update({f"kd/{k}": torch.tensor(v) for k, v in parts.items() if k.endswith("image")})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"models": {k: v.state_dict() for k, v in self.nets.items()},
                "optimizers": {k: v.state_dict() for k, v in self.optims.items()},
                "arch": self.arch, "stage": "distill",
                "teacher": {"name": self.teacher.name, "sha256": self.teacher.sha256}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("teacher", {}).get("sha256") not in (None, self.teacher.sha256):
            raise CheckpointError(f"this x2i run was distilled from teacher {state['teacher']['name']!r}; resume it "
                                  "with the same teacher")
        for k, v in self.nets.items():
            v.load_state_dict(state["models"][k])
        for k, v in self.optims.items():
            v.load_state_dict(state["optimizers"][k])

    def sample_rows(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Grid rows: teacher x1, teacher y, student x1_s (condition c_x), student y_s (c_y), at the student's R."""
        R = self.arch["img_size"]
        return [resize_to(x, R) for x in self._last]


def distill_losses(nets: nn.ModuleDict, trainer: DistillTrainer, t: TeacherTriplets, z: torch.Tensor):
    """Eq. 6 and Eq. 7 of one minibatch (inside one call, so DDP can wrap it; see ``core.loop.Objective``).

    Args:
        nets: ``generator``, ``adaptors`` and ``semantic_encoder`` (if used). t: triplets with ``x1_features``.
        z: the student's noise ``[N, z_dim]``.
    Returns:
        ``({"kdl", "srl"}: scalars, {unweighted parts}, (x1_s, y_s) [N, 3, R, R])``.
    """
    a, w, R = trainer.arch, trainer.cfg.loss, trainer.arch["img_size"]
    G, se = nets["generator"], nets["semantic_encoder"] if "semantic_encoder" in nets else None
    c_x, c_y = trainer.pseudo_condition(t.x1, se), trainer.pseudo_condition(t.y, se)
    f1, fy = (t.x1_features[4], t.y_features[4]) if a["teacher_channels"] else (None, None)
    x1_s, s1 = G(z, c_x, f1, return_features=True)
    y_s, sy = G(z, c_y, fy, return_features=True)
    kdl, parts = L.kd_loss((s1, t.x1_features, x1_s, resize_to(t.x1, R)), (sy, t.y_features, y_s, resize_to(t.y, R)),
                           nets["adaptors"], trainer.alphas, w.beta)
    return {"kdl": kdl, "srl": L.semantic_diversity_loss(x1_s, y_s)}, parts, (x1_s, y_s)
