"""Losses of the X2I student: seed 000 Eq. 6 (KD), Eq. 7 (semantic diversity), Eq. 8 (total) and the GAN terms.

``||a - b||_1`` is the mean absolute difference (``F.l1_loss``), as in seed 000's I2I losses
(:mod:`kdpipe.trainers.stargan2.losses_kd`, whose 1x1 hint adaptors pair student and teacher features by size).
The adversarial terms are the non-saturating logistic loss and R1 of :mod:`kdpipe.trainers.gan.losses`
(Eq. 4 written as a loss to minimise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdpipe.trainers.gan.losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty
from kdpipe.trainers.stargan2.losses_kd import HintAdaptors

WIDE_CHANNELS = 128
"""A.1 / A.3: alpha_l is 0.1 for features "of which the dimension is less than 128", 0.01 otherwise."""


def feature_weights(teacher_channels: dict[int, int], alpha_small: float, alpha_large: float) -> dict[int, float]:
    """alpha_l per spatial size: ``alpha_small`` if the teacher feature has < 128 channels, else ``alpha_large``."""
    return {r: alpha_small if c < WIDE_CHANNELS else alpha_large for r, c in teacher_channels.items()}


def feature_image_kd(student_feats: dict[int, torch.Tensor], teacher_feats: dict[int, torch.Tensor],
                     adaptors: HintAdaptors, alphas: dict[int, float], image_s: torch.Tensor, image_t: torch.Tensor,
                     beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """One half of Eq. 6: ``sum_l alpha_l ||G'_T(s)_l - G_S(z, G'_T(s)_1, c)_l||_1 + beta ||x_t - x_s||_1``.

    Args:
        student_feats / teacher_feats: ``{r: [N, C, r, r]}``; paired over ``adaptors.sizes`` (teacher detached).
        alphas: ``{r: alpha_l}`` (:func:`feature_weights`). image_s: student output ``[N, 3, R, R]``; image_t: the
            teacher image at R (detached here).
    Returns:
        ``(loss, {"feat<r>": unweighted term, ..., "image": unweighted image L1})``.
    Raises:
        ValueError: no common feature size.
    """
    pairs = adaptors.pairs(student_feats, teacher_feats)
    if not pairs:
        raise ValueError(f"no common feature sizes between student {sorted(student_feats)} and teacher "
                         f"{sorted(teacher_feats)}")
    terms = {r: F.l1_loss(s, t) for r, s, t in pairs}
    image = F.l1_loss(image_s, image_t.detach())
    loss = sum(alphas[r] * v for r, v in terms.items()) + beta * image
    return loss, {**{f"feat{r}": v.item() for r, v in terms.items()}, "image": image.item()}


def kd_loss(x1_parts: tuple, y_parts: tuple, adaptors: HintAdaptors, alphas: dict[int, float],
            beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 6 ``L_kdl``: :func:`feature_image_kd` for the content image x1 (condition c_x) plus for the style-mixed
    target y (condition c_y). ``x1_parts`` / ``y_parts`` = ``(student_feats, teacher_feats, image_s, image_t)``.
    Returns ``(loss, {"x1_image", "y_image", ...})``."""
    l1, p1 = feature_image_kd(x1_parts[0], x1_parts[1], adaptors, alphas, x1_parts[2], x1_parts[3], beta)
    l2, p2 = feature_image_kd(y_parts[0], y_parts[1], adaptors, alphas, y_parts[2], y_parts[3], beta)
    return l1 + l2, {**{f"x1_{k}": v for k, v in p1.items()}, **{f"y_{k}": v for k, v in p2.items()}}


def semantic_diversity_loss(x1_s: torch.Tensor, y_s: torch.Tensor) -> torch.Tensor:
    """Eq. 7 ``L_srl = -||G_S(z, G'_T(s1)_1, c_x) - G_S(z, G'_T(s1)_1, c_y)||_1``: the student outputs for the same
    z and teacher feature under the two pseudo-conditions, ``[N, 3, R, R]`` each. Minimising it pushes them apart.
    """
    return -F.l1_loss(x1_s, y_s)


def total_loss(adv: torch.Tensor, kdl: torch.Tensor, srl: torch.Tensor, lambda_adv: float, lambda_kdl: float,
               lambda_srl: float) -> torch.Tensor:
    """Eq. 8 (student side): ``lambda_adv L_adv + lambda_kdl L_kdl + lambda_srl L_srl``."""
    return lambda_adv * adv + lambda_kdl * kdl + lambda_srl * srl


def generator_adv_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of Eq. 4, non-saturating: ``mean softplus(-D_S(x_s))``. fake_logits ``[N, 1]``."""
    return g_nonsaturating_loss(fake_logits)


def discriminator_loss(D, real: torch.Tensor, fake: torch.Tensor, c_real, c_fake, r1_gamma: float,
                       c_mismatch=None) -> tuple[torch.Tensor, dict[str, float]]:
    """D_S side of Eq. 4, ``softplus(-D(x)) + softplus(D(x_s))``, plus ``r1_gamma / 2 * ||grad_x D(x)||^2``.

    With ``c_mismatch`` (finetuning), the matching-aware loss of text-to-image GANs (Reed et al. ICML 2016, GAN-CLS;
    as SSA-GAN / DF-GAN train their D): real images under a wrong condition count as fake,
    ``softplus(-D(x, c)) + (softplus(D(x_s, c)) + softplus(D(x, c_mismatch))) / 2``.

    Args:
        D: the student discriminator (``D(x, c) -> [N, 1]``). real ``[N, 3, R, R]``; fake detached ``[M, 3, R, R]``.
        c_real / c_fake: their conditions (None or zeros while distilling). c_mismatch: other conditions for real.
    Returns ``(loss, {"d_real", "d_fake", "r1"[, "d_mismatch"]})``.
    """
    real = real.detach().requires_grad_(r1_gamma > 0)
    real_logits = D(real, c_real)
    loss_real, loss_fake = d_logistic_loss(real_logits, D(fake.detach(), c_fake))
    parts = {"d_real": loss_real.item(), "d_fake": loss_fake.item()}
    if c_mismatch is not None:
        loss_mis = F.softplus(D(real.detach(), c_mismatch)).mean()
        loss_fake = (loss_fake + loss_mis) / 2
        parts["d_mismatch"] = loss_mis.item()
    r1 = r1_penalty(real, real_logits).mean() if r1_gamma > 0 else torch.zeros((), device=real.device)
    loss = loss_real + loss_fake + r1_gamma / 2 * r1
    return loss, {**parts, "r1": r1.item()}
