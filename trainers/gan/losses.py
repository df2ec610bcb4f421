"""StyleGAN2 losses and lazy regularisers, as NVlabs stylegan2-ada-pytorch ``training/loss.py`` and
``training/training_loop.py`` compute them (Karras et al., "Analyzing and Improving the Image Quality of
StyleGAN", CVPR 2020, Sec. 3.1 and 4.1; "Training Generative Adversarial Networks with Limited Data", 2020).

* non-saturating logistic loss (Goodfellow et al. 2014): G minimises ``softplus(-D(G(z)))``; D minimises
  ``softplus(D(G(z))) + softplus(-D(x))``;
* R1 (Mescheder et al. 2018, Eq. 9): ``gamma / 2 * ||d D(x) / d x||^2`` on real images;
* path-length regulariser (Karras et al. 2020, Eq. 4): ``pl_weight * (||J_w^T y||_2 - a)^2`` with
  ``y ~ N(0, I) / sqrt(H * W)`` and ``a`` the running mean of the lengths (decay ``pl_decay``);
* lazy regularisation (Karras et al. 2020, Sec. 3.1): a regulariser runs every ``interval`` minibatches with
  its loss multiplied by ``interval``, and Adam's lr and betas are corrected by
  ``mb_ratio = interval / (interval + 1)`` (:func:`lazy_adam_hyperparams`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss ``mean(softplus(-D(G(z))))`` = ``-log sigmoid(D(G(z)))`` (upstream ``loss_Gmain``).

    Args: fake_logits ``[N, 1]`` float. Returns: scalar.
    """
    return F.softplus(-fake_logits).mean()


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator losses ``(mean softplus(-D(x)), mean softplus(D(G(z))))`` (upstream ``loss_Dreal``,
    ``loss_Dgen``). Args: logits ``[N, 1]``. Returns: two scalars; the D loss is their sum."""
    return F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()


def r1_penalty(real_img: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||d sum(D(x)) / d x||^2`` ``[N]`` (upstream ``r1_penalty``), differentiable (create_graph).

    Args:
        real_img: ``[N, C, H, W]`` with ``requires_grad=True``, the tensor ``real_logits`` was computed from.
        real_logits: ``[N, 1]``.
    The loss is ``r1_penalty(...) * (gamma / 2)``, averaged, times the lazy interval.
    """
    grads, = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img], create_graph=True)
    return grads.square().sum(dim=[1, 2, 3])


class PathLengthRegularizer(torch.nn.Module):
    """Path-length penalty (Karras et al. 2020, Eq. 4; upstream ``StyleGAN2Loss`` ``Gpl`` phase).

    ``pl_mean`` (a buffer, part of the state_dict so resume is exact) follows
    ``pl_mean <- pl_mean + pl_decay * (mean(lengths) - pl_mean)``.

    Args:
        pl_decay: 0.01 upstream. pl_weight: 2 upstream.
    """

    def __init__(self, pl_decay: float = 0.01, pl_weight: float = 2.0):
        super().__init__()
        self.pl_decay, self.pl_weight = float(pl_decay), float(pl_weight)
        self.register_buffer("pl_mean", torch.zeros([]))

    @staticmethod
    def lengths(img: torch.Tensor, ws: torch.Tensor, pl_noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(mean_layers sum_w (d sum(img * y) / d ws)^2)`` ``[N]``, differentiable.

        Args: img ``[N, C, H, W]`` computed from ws ``[N, num_ws, w_dim]``; pl_noise ``y`` like img, already
        divided by ``sqrt(H * W)``.
        """
        grads, = torch.autograd.grad(outputs=[(img * pl_noise).sum()], inputs=[ws], create_graph=True)
        return grads.square().sum(dim=2).mean(dim=1).sqrt()

    def forward(self, img: torch.Tensor, ws: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The weighted penalty ``pl_weight * (lengths - pl_mean)^2`` ``[N]`` (updates ``pl_mean``).

        Args: img from ws (``ws.requires_grad``); generator: RNG for the noise ``y`` (None = global).
        """
        pl_noise = torch.randn(img.shape, generator=generator, device=img.device) / (img.shape[2] * img.shape[3]) ** 0.5
        lengths = self.lengths(img, ws, pl_noise)
        pl_mean = self.pl_mean.lerp(lengths.mean().detach(), self.pl_decay)
        self.pl_mean.copy_(pl_mean)
        return (lengths - pl_mean).square() * self.pl_weight


def lazy_adam_hyperparams(lr: float, betas: tuple[float, float], interval: int | None) -> tuple[float, tuple[float, float]]:
    """Adam lr and betas for a network whose regulariser runs every ``interval`` minibatches.

    ``mb_ratio = interval / (interval + 1)``; returns ``(lr * mb_ratio, (b1 ** mb_ratio, b2 ** mb_ratio))``
    (upstream training_loop.py); ``interval`` None or 0 (no lazy regulariser) returns the inputs.
    """
    if not interval:
        return lr, tuple(betas)
    mb_ratio = interval / (interval + 1)
    return lr * mb_ratio, tuple(b ** mb_ratio for b in betas)


def ema_beta(batch_size: int, cur_nimg: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """G_ema decay per step: ``0.5 ** (batch_size / ema_nimg)`` with ``ema_nimg = ema_kimg * 1000``, capped at
    ``cur_nimg * ema_rampup`` when a ramp-up is set (upstream training_loop.py; half-life ``ema_kimg`` kimg)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))
