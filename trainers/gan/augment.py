"""Differentiable augmentation for small datasets: DiffAugment's colour, translation and cutout
(Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020, Sec. 3).

Why DiffAugment and not ADA's adaptive pipeline: it has three fixed, cheap, fully differentiable ops and no
controller state, so a CPU run stays fast and resume stays exact; it is applied to every image D sees (real
and generated, in G's and D's steps alike), so nothing of it leaks into G's outputs. Ops and default strengths
follow the paper's reference implementation:

* ``color``: per sample, brightness ``x + (u - 0.5)``, saturation ``(x - mean_c) * 2u + mean_c``, contrast
  ``(x - mean_chw) * (u + 0.5) + mean_chw``, ``u ~ U[0, 1)``;
* ``translation``: integer shift of up to ``1/8`` of the side in each axis, vacated pixels 0 (zero padding
  as the reference; 0 is mid-grey in [-1, 1]);
* ``cutout``: one square of half the side at a random position set to 0.
"""

from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")


def _u(n: int, g: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand([n, 1, 1, 1], generator=g).to(device)


def color(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, saturation, contrast per sample. ``[N, C, H, W]`` -> same."""
    n = x.shape[0]
    x = x + (_u(n, g, x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_u(n, g, x.device) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_u(n, g, x.device) + 0.5) + mean


def translation(x: torch.Tensor, g: torch.Generator | None = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each sample by integers in ``[-ratio*H, ratio*H]`` x ``[-ratio*W, ratio*W]``, zero fill."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, [n, 1, 1], generator=g).to(x.device)
    dx = torch.randint(-sw, sw + 1, [n, 1, 1], generator=g).to(x.device)
    yy = torch.arange(h, device=x.device).view(1, h, 1) + dy  # source row for each output row
    xx = torch.arange(w, device=x.device).view(1, 1, w) + dx
    valid = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)).unsqueeze(1)
    idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    out = x.flatten(2).gather(2, idx).view_as(x)
    return out * valid.to(x.dtype)


def cutout(x: torch.Tensor, g: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one ``ratio*H x ratio*W`` square per sample, centred uniformly at random (may cross the border)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), [n, 1, 1], generator=g).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), [n, 1, 1], generator=g).to(x.device)
    yy = torch.arange(h, device=x.device).view(1, h, 1) - oy + ch // 2
    xx = torch.arange(w, device=x.device).view(1, 1, w) - ox + cw // 2
    keep = ~((yy >= 0) & (yy < ch) & (xx >= 0) & (xx < cw))
    return x * keep.unsqueeze(1).to(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str | tuple[str, ...], g: torch.Generator | None = None) -> torch.Tensor:
    """Apply the ops named in ``policy`` (``"color,translation,cutout"`` or a tuple; ``""`` = identity), in that
    order. x ``[N, C, H, W]`` float in ~[-1, 1]; differentiable w.r.t. x. g: RNG (None = torch's global)."""
    names = [p for p in (policy.split(",") if isinstance(policy, str) else policy) if p]
    for name in names:
        x = _OPS[name](x, g)
    return x


def check_policy(policy: str) -> str:
    """Return ``policy`` if every name is known, else raise ValueError naming the bad one."""
    for name in filter(None, policy.split(",")):
        if name not in _OPS:
            raise ValueError(f"unknown augmentation {name!r}; use a comma list of {', '.join(POLICIES)}")
    return policy
