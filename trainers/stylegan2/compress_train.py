"""``kdpipe train stylegan2-compress``: distil a StyleGAN2 teacher into a narrower student (seed 003, "A Comprehensive
Overhaul of Distilling Unconditional GANs").

Per step, on fresh ``z ~ N(0, I)`` (both generators with the teacher's constant noise, so Eq. 2 can hold):

* stage 1, steps ``[0, style_mimic_steps)`` (Eq. 9, only when S is not inherited): the student's mapping S_s
  alone learns ``D(S_s(z), S_t(z))`` (Adam, batch 4096);
* stage 2 (Eq. 4 + L_LD): G_s minimises ``lambda_GAN * softplus(-D(G_s(z))) + lambda_rgb * L1(G_s(z), G_t(z)) +
  lambda_lpips * LPIPS(G_s(z), G_t(z)) + lambda_LD * L_LD`` where L_LD (Eq. 10) moves each w_i by ``alpha_i * d_j``
  (a random dictionary entry, alpha ~ N(0, ld_alpha_std^2)) on d_j's layers, in teacher and student alike (each
  with its own w), and matches the [N, N] relation softmaxes of their synthesis features; then D (the teacher's
  D when the checkpoint has one) minimises the logistic loss on real images (``--data``, or G_t(z) when none) vs
  G_s(z), with lazy R1. G_ema follows G_s (half-life ``ema_kimg``).

At every checkpoint step G_ema's L1 (and LPIPS) to the teacher on fixed seeds is logged (``Eval/*``); at the last
step G_ema is exported as ``student-<step>.pkl`` (loads as a teacher: ``kdpipe generate --teacher``) and the
speed / quality report (:mod:`kdpipe.trainers.stylegan2.compress_report`) is written and printed. Neither style
mixing nor the path-length regulariser is used (Eq. 4 has neither). Single process, fp32.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import torch

from kdpipe.errors import ConfigError
from kdpipe.pipeline.teacher.discriminator import Discriminator
from kdpipe.pipeline.teacher.networks import Generator
from kdpipe.trainers.core.data import DataPosition
from kdpipe.trainers.core.loop import EMA, DistInfo, FitResult
from kdpipe.trainers.gan.losses import d_logistic_loss, ema_beta, g_nonsaturating_loss, lazy_adam_hyperparams, r1_penalty
from kdpipe.trainers.stylegan2.compress_config import NAME, CompressConfig
from kdpipe.trainers.stylegan2.compress_losses import (load_directions, lpips_loss, make_lpips, pca_directions,
                                                       relation_kd_loss, rgb_loss, style_mimic_loss)
from kdpipe.trainers.stylegan2.compress_report import compress_report, distance_to_teacher, format_report, write_report
from kdpipe.trainers.stylegan2.compress_student import initialise_student, mapping_matches, student_kwargs


class CompressTrainer:
    """Seed 003's student trainer (see module docstring); a :class:`kdpipe.trainers.core.loop.Trainer`."""

    name = NAME

    def __init__(self, cfg: CompressConfig, dist: DistInfo, teacher_G: Generator, teacher_D: Discriminator | None):
        m, lc, self.cfg, self.dist, self.device = cfg.model, cfg.loss, cfg, dist, dist.device
        torch.manual_seed(cfg.loop.seed)
        self.G_t = teacher_G.to(self.device).eval().requires_grad_(False)
        self.G = Generator(**student_kwargs(teacher_G, m.channel_multiplier, m.mapping_layers)).to(self.device)
        initialise_student(self.G, self.G_t, m.init_style, m.init_synthesis)
        self.mimic_steps = m.style_mimic_steps
        if self.mimic_steps is None:
            self.mimic_steps = 0 if mapping_matches(self.G, self.G_t) else 1000
        if m.freeze_mapping:
            self.G.mapping.requires_grad_(False)
        self.ema = EMA(self.G, 0.0)  # decay set per step (ema_beta)
        self.G_ema = self.ema.module
        if teacher_D is not None:
            self.D = copy.deepcopy(teacher_D).to(self.device).train().requires_grad_(True)
        else:
            kw = self.G_t.init_kwargs
            self.D = Discriminator(c_dim=0, img_resolution=self.G_t.img_resolution, img_channels=self.G_t.img_channels,
                                   channel_base=kw.get("channel_base", 32768), channel_max=kw.get("channel_max", 512)
                                   ).to(self.device)
        self.opt_G = torch.optim.Adam([p for p in self.G.parameters() if p.requires_grad], lr=m.lr, betas=(0.0, 0.99),
                                      eps=1e-8)
        lr_d, betas_d = lazy_adam_hyperparams(m.lr, (0.0, 0.99), m.r1_interval if m.r1_gamma > 0 else None)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=betas_d, eps=1e-8)
        self.opt_S = torch.optim.Adam(self.G.mapping.parameters(), lr=m.style_mimic_lr, betas=(0.9, 0.999))
        self.cur_nimg = 0
        if lc.ld_directions:
            self.directions = load_directions(lc.ld_directions, self.G_t.num_ws, self.G_t.w_dim).to(self.device)
        else:
            self.directions = pca_directions(self.G_t, lc.ld_pca_components, lc.ld_pca_samples).to(self.device)
        self.ld_res = [int(r) for r in lc.ld_resolutions] or list(self.G_t.synthesis.block_resolutions)
        bad = sorted(set(self.ld_res) - set(self.G_t.synthesis.block_resolutions))
        if bad:
            raise ConfigError(f"loss.ld_resolutions={lc.ld_resolutions!r}: {bad} are not synthesis resolutions of the "
                              f"teacher ({self.G_t.synthesis.block_resolutions})")
        self.lpips = make_lpips(lc.lpips_net, lc.lpips_weights, self.device, for_training=lc.lambda_lpips > 0)
        self.sample_z = torch.randn([8, self.G.z_dim], generator=torch.Generator().manual_seed(0)).to(self.device)

    # ---------------------------------------------------------------------------------------------- step

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn([n, self.G.z_dim]).to(self.device)

    def _style_mimic_step(self) -> dict[str, torch.Tensor]:
        """Eq. 9: S_s alone mimics S_t on a fresh batch of z."""
        m = self.cfg.model
        z = self._z(m.style_mimic_batch)
        with torch.no_grad():
            w_t = self.G_t.mapping(z)[:, 0]
        loss = style_mimic_loss(self.G.mapping(z)[:, 0], w_t, m.style_mimic_distance)
        self.opt_S.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_S.step()
        self.G_ema.mapping.load_state_dict(self.G.mapping.state_dict())
        return {"Loss/style_mimic": loss.detach()}

    def generator_losses(self, z: torch.Tensor, index: torch.Tensor, alpha: torch.Tensor
                         ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The weighted terms of Eq. 4 + L_LD for latents ``z`` ``[N, z_dim]`` and direction draws (``index``
        ``[N]`` into the dictionary, ``alpha`` ``[N]``). Returns ``(terms, G_s(z), G_t(z))``; terms hold the
        unweighted ``Loss/G/gan``, ``Loss/G/rgb``, ``Loss/G/lpips``, ``Loss/G/ld`` (those with weight > 0) and the
        weighted sum ``Loss/G/total``."""
        lc = self.cfg.loss
        need_ld = lc.lambda_ld > 0
        with torch.no_grad():
            ws_t = self.G_t.mapping(z)
            img_t, f_t = self.G_t.synthesis(ws_t, noise_mode="const", return_features=True)
        ws_s = self.G.mapping(z)
        img_s, f_s = self.G.synthesis(ws_s, noise_mode="const", return_features=True)
        terms: dict[str, torch.Tensor] = {}
        if lc.lambda_gan > 0:
            terms["Loss/G/gan"] = g_nonsaturating_loss(self.D(img_s))
        if lc.lambda_rgb > 0:
            terms["Loss/G/rgb"] = rgb_loss(img_s, img_t)
        if lc.lambda_lpips > 0 and self.lpips is not None:
            terms["Loss/G/lpips"] = lpips_loss(self.lpips, img_s, img_t)
        if need_ld:
            with torch.no_grad():
                _, f_t_aug = self.G_t.synthesis(self.directions.shift(ws_t, index, alpha), noise_mode="const",
                                                return_features=True)
            _, f_s_aug = self.G.synthesis(self.directions.shift(ws_s, index, alpha), noise_mode="const",
                                          return_features=True)
            terms["Loss/G/ld"] = torch.stack([relation_kd_loss(f_t[r], f_t_aug[r], f_s[r], f_s_aug[r],
                                                               lc.ld_temperature) for r in self.ld_res]).mean()
        weights = {"Loss/G/gan": lc.lambda_gan, "Loss/G/rgb": lc.lambda_rgb, "Loss/G/lpips": lc.lambda_lpips,
                   "Loss/G/ld": lc.lambda_ld}
        terms["Loss/G/total"] = sum(weights[k] * v for k, v in terms.items())
        return terms, img_s, img_t

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor | float]:
        """One step: Eq. 9 during the first ``style_mimic_steps``, then G_s (Eq. 4 + L_LD), D, lazy R1, G_ema."""
        if step < self.mimic_steps:
            return self._style_mimic_step()
        m, n = self.cfg.model, self.cfg.data.batch_size
        z = self._z(n)
        index = torch.randint(len(self.directions), [n]).to(self.device)
        alpha = (torch.randn([n]) * self.cfg.loss.ld_alpha_std).to(self.device)
        self.D.requires_grad_(False)
        terms, img_s, img_t = self.generator_losses(z, index, alpha)
        self.opt_G.zero_grad(set_to_none=True)
        terms["Loss/G/total"].backward()
        self.opt_G.step()
        if not m.freeze_mapping:  # upstream w_avg tracking (for truncation at inference)
            with torch.no_grad():
                w = self.G.mapping(z)[:, 0].mean(dim=0)
                self.G.mapping.w_avg.copy_(w.lerp(self.G.mapping.w_avg, self.G.mapping.w_avg_beta))

        real = batch["image"].to(self.device) if batch.get("image") is not None else img_t
        self.D.requires_grad_(True)
        loss_real, loss_fake = d_logistic_loss(self.D(real), self.D(img_s.detach()))
        self.opt_D.zero_grad(set_to_none=True)
        (loss_real + loss_fake).backward()
        self.opt_D.step()
        out: dict[str, torch.Tensor | float] = {k: v.detach() for k, v in terms.items()}
        out["Loss/D/loss"] = (loss_real + loss_fake).detach()
        if m.r1_gamma > 0 and step % m.r1_interval == 0:
            real_tmp = real.detach().requires_grad_(True)
            penalty = r1_penalty(real_tmp, self.D(real_tmp))
            self.opt_D.zero_grad(set_to_none=True)
            (penalty.mean() * (m.r1_gamma / 2) * m.r1_interval).backward()
            self.opt_D.step()
            out["Loss/r1_penalty"] = penalty.detach().mean()
        self.D.requires_grad_(False)
        self._update_ema(n)
        last = step + 1 == self.cfg.loop.steps
        if (step + 1) % self.cfg.loop.ckpt_every == 0 or last:
            d = distance_to_teacher(self.G_ema, self.G_t, self.cfg.report.seeds, self.lpips)
            out["Eval/l1_to_teacher"] = d["l1"]
            if d["lpips"] is not None:
                out["Eval/lpips_to_teacher"] = d["lpips"]
        if last and self.dist.is_main:
            self.export(step + 1)
            self.write_report()
        return out | {"Progress/kimg": self.cur_nimg / 1000}

    def _update_ema(self, batch_size: int) -> None:
        self.ema.decay = ema_beta(batch_size, self.cur_nimg, self.cfg.model.ema_kimg, self.cfg.model.ema_rampup)
        self.ema.update(self.G)
        self.cur_nimg += batch_size

    def export(self, step: int) -> Path:
        """Write G_ema (and the student's D) as ``student-<step>.pkl`` in the stylegan2-ada-pytorch layout, which
        :func:`kdpipe.pipeline.teacher.load.load_teacher` reads: the compressed generator as a teacher."""
        from kdpipe.pipeline.teacher.formats.export import write_nvlabs_pytorch_pkl

        out = Path(self.cfg.loop.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return write_nvlabs_pytorch_pkl(out / f"student-{step:06d}.pkl", self.G_ema, self.D)

    def write_report(self) -> dict[str, Any]:
        """Compute :func:`compress_report` for G_ema vs the teacher, write ``compress_report.json``, print it."""
        r = self.cfg.report
        report = compress_report(self.G_ema, self.G_t, r.seeds, r.fid_samples, r.speed_batch, r.speed_repeats,
                                 self.lpips)
        path = write_report(self.cfg.loop.out_dir, report)
        print(format_report(report) + f"\nreport: {path}")
        return report

    # ------------------------------------------------------------------------------------------ protocol

    @torch.no_grad()
    def sample_rows(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Rows: the teacher on 8 fixed z, then the student's G_ema on the same z (const noise)."""
        return [self.G_t(self.sample_z).cpu(), self.G_ema(self.sample_z).cpu()]

    def state_dict(self) -> dict[str, Any]:
        """G_s, G_ema, D, the three Adam states, cur_nimg and the student's constructor kwargs."""
        return {"G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "D": self.D.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "opt_S": self.opt_S.state_dict(),
                "cur_nimg": self.cur_nimg, "G_kwargs": self.G.init_kwargs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        for key in ("G", "G_ema", "D", "opt_G", "opt_D", "opt_S"):
            getattr(self, key).load_state_dict(state[key])
        self.cur_nimg = int(state["cur_nimg"])


def setup(cfg: CompressConfig, state: dict[str, Any] | None, overrides: Mapping[str, Any]):
    """Load the teacher and the real images (if any); return ``build(dist) -> (trainer, batches)``.

    Raises:
        ConfigError: several processes, another precision than fp32, real images of another size than the teacher's.
        CheckpointError / DatasetError: the teacher or the images cannot be read.
    """
    from kdpipe.pipeline.teacher.load import load_teacher
    from kdpipe.trainers.stylegan2.data import image_batches, load_images

    if cfg.loop.precision != "fp32":
        raise ConfigError(f"loop.precision={cfg.loop.precision!r}: stylegan2-compress runs fp32 only")
    teacher = load_teacher(cfg.teacher.spec)
    res = teacher.G.img_resolution
    images = load_images(cfg.data.path, res) if cfg.data.path else None

    def build(dist: DistInfo):
        if dist.world_size > 1:
            raise ConfigError("stylegan2-compress runs in one process; start it without torchrun")
        trainer = CompressTrainer(cfg, dist, teacher.G, teacher.D)

        def batches(pos: DataPosition):
            if images is not None:
                yield from image_batches(images, cfg.data.batch_size, cfg.loop.seed, pos, xflip=cfg.data.xflip)
            while True:  # data-free: train_step uses G_t(z) as the real images
                yield {"image": None}, pos

        return trainer, batches

    return build


def run(config_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
        resume: bool = False, resume_from: str | Path | None = None) -> FitResult:
    """``kdpipe train stylegan2-compress`` as a function (see the module docstring).

    Args:
        config_path: YAML with sections teacher / data / model / loss / report / loop (optional).
        overrides: dotted keys, e.g. ``{"teacher.spec": "builtin:digits-32", "loop.out_dir": "runs/c",
            "model.channel_multiplier": 0.5}``.
        resume: continue from the newest checkpoint in ``loop.out_dir`` (bit-exact on CPU).
    Writes into ``loop.out_dir``: ``config.yaml``, ``metrics.jsonl``, ``samples/``, ``checkpoints/`` and, at the
    last step, ``student-<step>.pkl`` and ``compress_report.json``. Raises: ConfigError, DatasetError, CheckpointError (one line).
    """
    from kdpipe.trainers.registry import train

    return train(NAME, config_path, overrides, resume, resume_from)

