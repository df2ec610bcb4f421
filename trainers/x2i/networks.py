"""Networks of the conditional (X2I) student: G_S(z, c), its condition encoders, D_S and the semantic encoder SE.

* :class:`ConditionalGenerator` -- ``z [N, z_dim]`` -> fully connected -> ``[N, C_4, 4, 4]`` (+ the teacher's
  first synthesis feature while distilling, seed 000 Sec. 3.3) -> residual blocks that double the resolution up to
  R, each normalised by a condition-adaptive normalisation -> ``tanh`` RGB. The condition enters only through
  :class:`CondNorm`: an embedding ``e [N, cond_dim]`` (labels, text, audio, or SE's output) gives a per-channel
  scale and shift (conditional instance norm, as the affine blocks of SSA-GAN / S2IGAN), a segmentation map
  ``[N, K, H, W]`` gives per-pixel ones (SPADE, Park et al. CVPR 2019, Eq. 1).
* :class:`ConditionEncoder` -- the pluggable condition -> embedding step: one-hot label / stored vector
  ``[N, D]`` -> ``[N, cond_dim]`` by a linear layer (an embedding table for one-hot labels); identity for ``seg``.
* :class:`SemanticEncoder` -- SE of Sec. 3.3: a copy of the teacher's StyleGAN2 discriminator without its last
  fully connected layer (``b4.out``), so ``SE(x) [N, C]`` is the D's last hidden layer; trained with the student.
* :class:`ConditionalDiscriminator` -- StarGANv2's ResBlk trunk, then a projection head (Miyato & Koyama 2018):
  ``logit = w^T h + <P c, h>`` for vector conditions; ``seg`` maps are concatenated to the image instead. A zero
  condition (distillation, Sec. 3.3: "0 in the student discriminator") leaves the unconditional logit.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from kdpipe.pipeline.teacher.ops import normalize_2nd_moment
from kdpipe.trainers.stargan2.networks import ResBlk


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Channels at resolution ``res``: ``min(channel_base // res, channel_max)``, at least 1."""
    return max(1, min(channel_base // res, channel_max))


class CondNorm(nn.Module):
    """Instance norm (no affine) modulated by the condition: ``(1 + gamma(c)) * IN(x) + beta(c)``.

    Args:
        channels: C of ``x [N, C, H, W]``.
        cond_dim: embedding size (vector kinds); ``seg_classes``: K of a ``[N, K, H', W']`` map (SPADE); one of the
            two is > 0. gamma and beta start at 0, so a fresh block ignores the condition.
    """

    def __init__(self, channels: int, cond_dim: int = 0, seg_classes: int = 0, hidden: int = 32):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.seg = seg_classes > 0
        if self.seg:
            self.shared = nn.Sequential(nn.Conv2d(seg_classes, hidden, 3, padding=1), nn.ReLU())
            self.affine = nn.Conv2d(hidden, 2 * channels, 3, padding=1)
        else:
            self.affine = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.seg:
            c = F.interpolate(c, size=x.shape[-2:], mode="nearest")
            gamma, beta = self.affine(self.shared(c)).chunk(2, dim=1)
        else:
            gamma, beta = (t[:, :, None, None] for t in self.affine(c).chunk(2, dim=1))
        return (1 + gamma) * self.norm(x) + beta


class CondResBlock(nn.Module):
    """``norm-lrelu-[up]-conv-norm-lrelu-conv`` + ``[up]-1x1`` shortcut, scaled by ``1/sqrt(2)``. ``[N, C_in, r, r]``
    -> ``[N, C_out, 2r, 2r]`` (``up``) or ``[N, C_out, r, r]``."""

    def __init__(self, c_in: int, c_out: int, up: bool, **norm_kw):
        super().__init__()
        self.up = up
        self.norm1, self.norm2 = CondNorm(c_in, **norm_kw), CondNorm(c_out, **norm_kw)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.norm1(x, c), 0.2)
        if self.up:
            h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv2(F.leaky_relu(self.norm2(self.conv1(h), c), 0.2))
        return (self.skip(x) + h) / math.sqrt(2)


class ConditionalGenerator(nn.Module):
    """G_S(z, c): noise and condition embedding (or segmentation map) to an image.

    Args:
        img_size: R (power of two >= 8). z_dim: noise size. cond_dim: embedding size (vector kinds, else 0).
        seg_classes: K for ``seg`` (else 0). teacher_channels: channels of the teacher's 4x4 feature added while
            distilling (0 = none: the finetuning architecture; a 1x1 conv maps it when channels differ).
    forward(z ``[N, z_dim]``, c ``[N, cond_dim]`` or ``[N, K, H, W]``, teacher_feature ``[N, C_T, 4, 4]`` or None,
    return_features) -> image ``[N, 3, R, R]`` in (-1, 1) [, ``{r: [N, C_r, r, r]}`` for r = 4 .. R].
    """

    def __init__(self, img_size: int, z_dim: int, cond_dim: int = 0, seg_classes: int = 0, channel_base: int = 4096,
                 channel_max: int = 256, spade_hidden: int = 32, teacher_channels: int = 0):
        super().__init__()
        self.img_size, self.z_dim, self.cond_dim, self.seg_classes = img_size, z_dim, cond_dim, seg_classes
        self.resolutions = [2 ** k for k in range(2, int(math.log2(img_size)) + 1)]
        ch = {r: channels_at(r, channel_base, channel_max) for r in self.resolutions}
        self.fc = nn.Linear(z_dim, ch[4] * 16)
        self.teacher_adaptor = None
        if teacher_channels:
            self.teacher_adaptor = (nn.Identity() if teacher_channels == ch[4]
                                    else nn.Conv2d(teacher_channels, ch[4], 1))
        kw = dict(cond_dim=cond_dim, seg_classes=seg_classes, hidden=spade_hidden)
        self.blocks = nn.ModuleDict({str(r): CondResBlock(ch[r // 2] if r > 4 else ch[4], ch[r], r > 4, **kw)
                                     for r in self.resolutions})
        self.to_rgb = nn.Conv2d(ch[img_size], 3, 3, padding=1)

    def forward(self, z: torch.Tensor, c: torch.Tensor, teacher_feature: torch.Tensor | None = None,
                return_features: bool = False):
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {list(z.shape)}")
        if not self.seg_classes:
            c = normalize_2nd_moment(c)  # labels, stored vectors and SE outputs on one scale
        x = self.fc(z).view(len(z), -1, 4, 4)
        if teacher_feature is not None:
            if self.teacher_adaptor is None:
                raise ValueError("this generator was built without a teacher feature input (finetuning architecture)")
            x = x + self.teacher_adaptor(teacher_feature)
        feats = {}
        for r in self.resolutions:
            x = self.blocks[str(r)](x, c)
            feats[r] = x
        img = torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))
        return (img, feats) if return_features else img


class ConditionEncoder(nn.Module):
    """The pluggable condition -> embedding step. ``vector``: ``[N, in_dim]`` -> ``[N, cond_dim]`` (linear, no bias: an
    embedding table for one-hot labels); ``seg``: identity on ``[N, K, H, W]`` one-hot maps (SPADE reads them)."""

    def __init__(self, kind: str, in_dim: int = 0, cond_dim: int = 0):
        super().__init__()
        self.kind = kind
        self.linear = None if kind == "seg" else nn.Linear(in_dim, cond_dim, bias=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return c if self.linear is None else self.linear(c.float())


class SemanticEncoder(nn.Module):
    """SE (seed 000 Sec. 3.3): the teacher discriminator without its last FC layer, initialised from it.

    forward(img ``[N, 3, R_T, R_T]`` in [-1, 1]) -> ``[N, C]`` (the output of ``b4.fc``, lrelu; C = ``out_dim``).
    The copy is trainable; the teacher's D is untouched.
    """

    def __init__(self, teacher_d: nn.Module):
        super().__init__()
        d = copy.deepcopy(teacher_d).requires_grad_(True)
        self.block_resolutions = list(d.block_resolutions)
        self.blocks = nn.ModuleDict({str(r): getattr(d, f"b{r}") for r in self.block_resolutions})
        epi = d.b4
        self.mbstd, self.conv, self.fc = epi.mbstd, epi.conv, epi.fc
        self.out_dim = int(epi.fc.out_features)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = None
        for r in self.block_resolutions:
            x = self.blocks[str(r)](x, img)
        if self.mbstd is not None:
            x = self.mbstd(x)
        return self.fc(self.conv(x).flatten(1))


class ConditionalDiscriminator(nn.Module):
    """D_S(x, c): ``x [N, 3, R, R]``, c ``[N, in_dim]`` (vector kinds; 0 = none) or ``[N, K, H, W]`` (seg) -> ``[N, 1]``.

    Trunk: 3x3 conv, then StarGANv2 ``ResBlk`` downsampling to 4x4, lrelu, sum over space -> ``h [N, C]``.
    Head: ``w^T h + b + <P c, h>`` (projection; P has no bias, so ``c = 0`` is the unconditional logit). ``seg``:
    the one-hot map (resized to R) is concatenated to the image. ``in_dim`` 0 builds no projection (distillation).
    """

    def __init__(self, img_size: int, in_dim: int = 0, seg_classes: int = 0, channel_base: int = 4096,
                 channel_max: int = 256):
        super().__init__()
        self.seg_classes, self.in_dim = seg_classes, in_dim
        res = [2 ** k for k in range(int(math.log2(img_size)), 2, -1)]
        ch = {r: channels_at(r, channel_base, channel_max) for r in res + [4]}
        self.from_rgb = nn.Conv2d(3 + seg_classes, ch[img_size], 3, padding=1)
        self.trunk = nn.Sequential(*[ResBlk(ch[r], ch[r // 2], downsample=True) for r in res])
        self.out = nn.Linear(ch[4], 1)
        self.proj = nn.Linear(in_dim, ch[4], bias=False) if in_dim and not seg_classes else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if self.seg_classes:
            seg = torch.zeros(len(x), self.seg_classes, *x.shape[-2:], device=x.device, dtype=x.dtype) if c is None \
                else F.interpolate(c.to(x.dtype), size=x.shape[-2:], mode="nearest")
            x = torch.cat([x, seg], 1)
        h = F.leaky_relu(self.trunk(self.from_rgb(x)), 0.2).sum(dim=(2, 3))
        logit = self.out(h)
        if self.proj is not None and c is not None:
            logit = logit + (self.proj(c.to(h.dtype)) * h).sum(1, keepdim=True)
        return logit
