"""trainers/gan: R1 and path-length terms against direct computation, lazy-Adam and EMA constants, DiffAugment."""

from __future__ import annotations

import math

import pytest
import torch

from kdpipe.trainers.gan.augment import check_policy, cutout, diff_augment, translation
from kdpipe.trainers.gan.losses import (PathLengthRegularizer, d_logistic_loss, ema_beta, g_nonsaturating_loss,
                                        lazy_adam_hyperparams, r1_penalty)


def test_r1_penalty_matches_the_analytic_gradient_norm():
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    logits = x.pow(3).sum(dim=[1, 2, 3]).unsqueeze(1)  # d/dx = 3 x^2
    got = r1_penalty(x, logits)
    want = (3 * x.detach() ** 2).square().sum(dim=[1, 2, 3])
    torch.testing.assert_close(got, want)
    got.sum().backward()  # differentiable (create_graph): d/dx sum 9 x^4 = 36 x^3
    torch.testing.assert_close(x.grad, 36 * x.detach() ** 3)


def test_path_length_matches_the_jacobian_transpose_product():
    torch.manual_seed(0)
    n, num_ws, w_dim, c, h, w = 2, 3, 4, 1, 2, 2
    M = torch.randn(num_ws * w_dim, c * h * w, dtype=torch.float64)
    ws = torch.randn(n, num_ws, w_dim, dtype=torch.float64, requires_grad=True)
    img = (ws.reshape(n, -1) @ M).reshape(n, c, h, w)
    y = torch.randn(n, c, h, w, dtype=torch.float64) / math.sqrt(h * w)
    got = PathLengthRegularizer.lengths(img, ws, y)
    jty = (y.reshape(n, -1) @ M.T).reshape(n, num_ws, w_dim)  # J^T y per sample
    want = jty.square().sum(dim=2).mean(dim=1).sqrt()
    torch.testing.assert_close(got, want)


def test_path_length_penalty_updates_the_running_mean_with_pl_decay():
    reg = PathLengthRegularizer(pl_decay=0.01, pl_weight=2.0).double()
    ws = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    img = ws.sum(dim=2, keepdim=True).unsqueeze(-1).expand(4, 2, 2, 2) * 1.0  # [N, 2, 2, 2]
    g = torch.Generator().manual_seed(5)
    penalty = reg(img, ws, generator=g)
    y = torch.randn(img.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float32).double() / 2
    lengths = PathLengthRegularizer.lengths(img, ws, y)
    pl_mean = 0.01 * lengths.mean()
    torch.testing.assert_close(reg.pl_mean, pl_mean.detach())
    torch.testing.assert_close(penalty, 2.0 * (lengths - pl_mean).square())


def test_logistic_losses_are_softplus_of_the_logits():
    logits = torch.tensor([[-2.0], [0.0], [3.0]])
    assert g_nonsaturating_loss(logits).item() == pytest.approx(
        sum(math.log1p(math.exp(-v)) for v in (-2.0, 0.0, 3.0)) / 3, rel=1e-6)
    real, fake = d_logistic_loss(logits, -logits)
    assert real.item() == pytest.approx(fake.item()) and real.item() == pytest.approx(g_nonsaturating_loss(logits).item())


def test_lazy_adam_correction_and_ema_beta_follow_upstream_formulas():
    lr, betas = lazy_adam_hyperparams(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17) and betas == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert lazy_adam_hyperparams(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))
    assert ema_beta(32, 0, 10.0, 0.05) == 0.0  # ramp-up: G_ema starts as a copy of G
    assert ema_beta(32, 10**7, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 10000))
    assert ema_beta(32, 100_000, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 5000))


def test_translation_shifts_with_zero_fill_and_cutout_zeros_a_square():
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8) + 1
    g = torch.Generator().manual_seed(3)
    dy = int(torch.randint(-1, 2, [1, 1, 1], generator=g))
    dx = int(torch.randint(-1, 2, [1, 1, 1], generator=g))
    y = translation(x, torch.Generator().manual_seed(3))
    want = torch.zeros_like(x)
    for i in range(8):
        for j in range(8):
            if 0 <= i + dy < 8 and 0 <= j + dx < 8:
                want[0, 0, i, j] = x[0, 0, i + dy, j + dx]
    assert torch.equal(y, want)
    z = cutout(torch.ones(16, 1, 8, 8), torch.Generator().manual_seed(0))
    zeros = (z == 0).sum(dim=[1, 2, 3])
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, partly outside the image at the border


def test_diff_augment_is_differentiable_and_rejects_unknown_ops():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, ""), x)
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        check_policy("translation,flip")
