"""Pure-PyTorch StyleGAN2 operators: FIR resampling, bias+activation, modulated convolution.

Numerically these follow the reference (non-CUDA) paths of NVlabs stylegan2-ada-pytorch
``torch_utils/ops`` (``upfirdn2d._upfirdn2d_ref``, ``bias_act._bias_act_ref``,
``conv2d_resample.conv2d_resample``) and ``training/networks.modulated_conv2d``, so that weights
converted from the official checkpoints give the same images (max |diff| ~1e-6 in float32). No
custom CUDA/C++ extension is built or loaded.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

_ACT_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0)}


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR filter as a 2-D kernel, normalised to sum 1.

    Args:
        taps: 1-D filter taps; StyleGAN2 uses ``[1, 3, 3, 1]``.
    Returns:
        float32 tensor ``[len(taps), len(taps)]`` = ``outer(taps, taps) / sum(outer)``
        (matches ``upfirdn2d.setup_filter(..., normalize=True)``).
    """
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1,
              padding: Sequence[int] = (0, 0, 0, 0), flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter, downsample.

    Args:
        x: ``[N, C, H, W]`` float.
        f: 2-D filter ``[fh, fw]`` (from :func:`setup_filter`).
        up, down: integer factors (same on both axes).
        padding: ``(x0, x1, y0, y1)`` in pixels of the upsampled image; negative values crop.
        flip_filter: correlate instead of convolve.
        gain: overall gain (applied as ``gain ** (f.ndim / 2)`` per axis pair, as upstream).
    Returns:
        ``[N, C, H', W']`` with ``H' = (H*up + y0 + y1 - fh + down) // down``.
    """
    n, c, h, w = x.shape
    px0, px1, py0, py1 = padding
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip([0, 1])
    f = f[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, f, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """FIR upsampling by ``up`` keeping the image centred (``upfirdn2d.upsample2d``): ``[N,C,H,W] -> [N,C,H*up,W*up]``."""
    fw = f.shape[-1]
    p = [(fw + up - 1) // 2, (fw - up) // 2] * 2
    return upfirdn2d(x, f, up=up, padding=[p[0], p[1], p[0], p[1]], gain=up * up)


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", gain: float | None = None,
             clamp: float | None = None, dim: int = 1) -> torch.Tensor:
    """``act(x + b) * gain``, then clamp to ``[-clamp, clamp]`` (``bias_act._bias_act_ref``).

    Args:
        x: any shape; ``b`` broadcast along ``dim``.
        act: ``'linear'`` or ``'lrelu'`` (slope 0.2, default gain sqrt(2)).
        gain: ``None`` uses the activation's default gain.
        clamp: ``None`` = no clamping (``conv_clamp`` of the checkpoint times gain).
    """
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    elif act != "linear":
        raise ValueError(f"activation {act!r} is not supported; use 'linear' or 'lrelu'")
    g = _ACT_GAIN[act] if gain is None else gain
    if g != 1:
        x = x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding: int = 0, groups: int = 1, flip_weight: bool = True) -> torch.Tensor:
    """2-D convolution with optional FIR up/downsampling by 2 (``conv2d_resample.conv2d_resample``).

    Args:
        x: ``[N, C_in, H, W]``; w: ``[C_out, C_in / groups, kh, kw]``; f: FIR filter when ``up``/``down`` > 1.
        padding: symmetric padding of the convolution.
        flip_weight: ``True`` = correlation (as ``F.conv2d``); ``False`` = true convolution.
    Returns:
        ``[N, C_out, H*up/down, W*up/down]``.
    """
    c_out, c_in_g, kh, kw = w.shape
    fw = f.shape[-1] if f is not None else 1
    p0 = p1 = padding
    if up > 1:
        p0 += (fw + up - 1) // 2
        p1 += (fw - up) // 2
    if down > 1:
        p0 += (fw - down + 1) // 2
        p1 += (fw - down) // 2
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[p0, p1, p0, p1])
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[p0, p1, p0, p1], gain=up * up)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[p0, p1, p0, p1])
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, c_out // groups, c_in_g, kh, kw).transpose(1, 2)
            w = w.reshape(groups * c_in_g, c_out // groups, kh, kw)
        p0 -= kw - 1
        p1 -= kw - up
        pt = max(min(-p0, -p1), 0)
        x = _conv(x, w, stride=up, padding=pt, groups=groups, transpose=True, flip_weight=not flip_weight)
        return upfirdn2d(x, f, padding=[p0 + pt, p1 - pt, p0 + pt, p1 - pt], gain=up * up)
    if p0 == p1 and p0 >= 0:
        return _conv(x, w, padding=p0, groups=groups, flip_weight=flip_weight)
    x = upfirdn2d(x, f if f is not None else torch.ones(1, 1, device=x.device), padding=[p0, p1, p0, p1])
    return _conv(x, w, groups=groups, flip_weight=flip_weight)


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    if not flip_weight and (w.shape[-1] > 1 or w.shape[-2] > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, flip_weight: bool = True, fused_modconv: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated convolution (Karras et al. 2020, Eq. 1-3; ``networks.modulated_conv2d``).

    ``w'_ijk = s_i * w_ijk``; with ``demodulate``: ``w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + 1e-8)``.
    Noise is added after demodulation, before the bias.

    Args:
        x: ``[N, C_in, H, W]``; weight: ``[C_out, C_in, kh, kw]`` (raw, no weight gain);
        styles: ``[N, C_in]``; noise: broadcastable to the output, e.g. ``[N, 1, H', W']``.
        fused_modconv: ``True`` = one grouped convolution with per-sample weights; ``False`` = scale activations,
            convolve with the shared weight, demodulate the output. Equal up to float rounding (~1e-6);
            which one is faster depends on device and batch size.
    Returns:
        ``[N, C_out, H*up, W*up]``.
    """
    n = x.shape[0]
    c_out, c_in, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # pre-normalise to avoid fp16 overflow (upstream)
        weight = weight * (1 / math.sqrt(c_in * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, C_out, C_in, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, C_out]
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding, flip_weight=flip_weight)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    if demodulate:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, c_in, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), resample_filter, up=up, padding=padding, groups=n, flip_weight=flip_weight)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` along ``dim`` (StyleGAN pixel norm applied to ``z``)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
