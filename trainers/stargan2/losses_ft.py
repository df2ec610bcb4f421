"""StarGANv2 objective for the finetuning stage (Choi et al. CVPR 2020, Sec. 3.2, Eq. 1-5).

Matches clovaai/stargan-v2 ``core/solver.py`` (``compute_d_loss``, ``compute_g_loss``, ``adv_loss``, ``r1_reg``,
without the FAN/high-pass masks. All image tensors are ``[N, 3, R, R]`` in [-1, 1], domain
labels ``[N]`` int64, latent codes ``[N, latent_dim]``, styles ``[N, style_dim]``. Losses are scalar float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdpipe.trainers.stargan2.config import FTLossConfig


def adv_loss(logits: torch.Tensor, target: int) -> torch.Tensor:
    """Non-saturating GAN loss ``BCE(sigmoid(logits), target)``, mean over the batch (StarGANv2 Eq. 1; seed 000 Eq. 4).

    logits: ``[N]`` raw discriminator outputs; target: 1 (real) or 0 (fake).
    """
    if target not in (0, 1):
        raise ValueError(f"adv_loss target must be 0 or 1, got {target!r}")
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def r1_reg(d_out: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
    """Zero-centred gradient penalty on real images: ``0.5 * mean_i ||d D(x_i) / d x_i||^2`` (Mescheder et al. 2018).

    d_out: ``[N]`` logits computed from ``x_in`` ``[N, 3, R, R]`` (which must require grad). Differentiable.
    """
    grad = torch.autograd.grad(outputs=d_out.sum(), inputs=x_in, create_graph=True, retain_graph=True)[0]
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean(0)


def compute_d_loss(nets: nn.ModuleDict, w: FTLossConfig, x_real, y_org, y_trg, z_trg=None, x_ref=None):
    """Discriminator loss ``L_adv(real) + L_adv(fake) + lambda_reg * R1`` for one latent- or reference-guided batch.

    Exactly one of ``z_trg`` ``[N, latent_dim]`` / ``x_ref`` ``[N, 3, R, R]`` is given (the target style source).
    Returns ``(loss, {"real", "fake", "reg"} floats)``.
    """
    if (z_trg is None) == (x_ref is None):
        raise ValueError("give exactly one of z_trg (latent-guided) or x_ref (reference-guided)")
    x_real = x_real.detach().requires_grad_(True)
    out = nets["discriminator"](x_real, y_org)
    loss_real = adv_loss(out, 1)
    loss_reg = r1_reg(out, x_real)
    with torch.no_grad():
        s_trg = nets["mapping_network"](z_trg, y_trg) if z_trg is not None else nets["style_encoder"](x_ref, y_trg)
        x_fake = nets["generator"](x_real, s_trg)
    loss_fake = adv_loss(nets["discriminator"](x_fake, y_trg), 0)
    loss = loss_real + loss_fake + w.lambda_reg * loss_reg
    return loss, {"real": loss_real.item(), "fake": loss_fake.item(), "reg": loss_reg.item()}


def compute_g_loss(nets: nn.ModuleDict, w: FTLossConfig, x_real, y_org, y_trg, z_trgs=None, x_refs=None,
                   lambda_ds: float | None = None):
    """Generator loss ``L_adv + lambda_sty L_sty - lambda_ds L_ds + lambda_cyc L_cyc`` (StarGANv2 Eq. 5).

    Args:
        z_trgs: ``(z_trg, z_trg2)`` each ``[N, latent_dim]`` (latent-guided) or
        x_refs: ``(x_ref, x_ref2)`` each ``[N, 3, R, R]`` from domain ``y_trg`` (reference-guided).
        lambda_ds: the current (linearly decayed) diversity weight; None -> ``w.lambda_ds``.
    Returns:
        ``(loss, {"adv", "sty", "ds", "cyc"} floats)``. ``L_ds`` uses the second output detached, as upstream.
    """
    if (z_trgs is None) == (x_refs is None):
        raise ValueError("give exactly one of z_trgs (latent-guided) or x_refs (reference-guided)")
    lambda_ds = w.lambda_ds if lambda_ds is None else lambda_ds
    G, M, E = nets["generator"], nets["mapping_network"], nets["style_encoder"]

    def style(i):
        return M(z_trgs[i], y_trg) if z_trgs is not None else E(x_refs[i], y_trg)

    s_trg = style(0)
    x_fake = G(x_real, s_trg)
    loss_adv = adv_loss(nets["discriminator"](x_fake, y_trg), 1)
    loss_sty = torch.mean(torch.abs(E(x_fake, y_trg) - s_trg))
    x_fake2 = G(x_real, style(1)).detach()
    loss_ds = torch.mean(torch.abs(x_fake - x_fake2))
    x_rec = G(x_fake, E(x_real, y_org))
    loss_cyc = torch.mean(torch.abs(x_rec - x_real))
    loss = loss_adv + w.lambda_sty * loss_sty - lambda_ds * loss_ds + w.lambda_cyc * loss_cyc
    return loss, {"adv": loss_adv.item(), "sty": loss_sty.item(), "ds": loss_ds.item(), "cyc": loss_cyc.item()}
