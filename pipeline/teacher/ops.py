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

FORWARD_REVISION = 3
"""Revision of the teacher forward's float arithmetic (order of operations, fused ops, memory formats). Bump it
when a change can move output values by rounding: it enters the fingerprint of every device-dependent stage, so a
dataset is never resumed with shards rendered by another revision. 2: fused epilogue / matmul demodulation /
one-pass upsampling (issue 12). 3: on CPU, channels-last activations in the unfused modulated conv and image
skip upsampling as bilinear interpolation (issue 12, second pass; CUDA's arithmetic is unchanged)."""

_BINOMIAL_4 = None  # setup_filter([1, 3, 3, 1]), made on first use


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
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip([0, 1])
    f = f[None, None].expand(c, 1, *f.shape)
    if px0 == px1 == py0 == py1 >= 0:  # symmetric: the conv pads (no padded copy of x)
        x = F.conv2d(x, f, padding=px0, groups=c)
    else:
        x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
        x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
        x = F.conv2d(x, f, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """FIR upsampling by ``up`` keeping the image centred (``upfirdn2d.upsample2d``): ``[N,C,H,W] -> [N,C,H*up,W*up]``.

    On CPU, for StyleGAN2's ``[1, 3, 3, 1]`` filter and ``up=2``, this is bilinear interpolation of the zero-padded
    image (per axis, outputs ``2i`` and ``2i+1`` are ``x[i-1]/4 + 3x[i]/4`` and ``3x[i]/4 + x[i+1]/4``): one
    ``F.interpolate`` pass, ~1.5x faster than the convolution for the 3-channel image skip (the filter check
    would cost a device sync on CUDA, so CUDA keeps the convolution). Otherwise one
    depthwise transposed convolution with stride ``up`` (no zero-inserted copy, no padding pass). Both equal
    ``upfirdn2d(x, f, up=up, padding=..., gain=up**2)`` up to float rounding (tests/test_ops.py).
    """
    global _BINOMIAL_4
    if _BINOMIAL_4 is None:
        _BINOMIAL_4 = setup_filter([1, 3, 3, 1])
    if up == 2 and x.device.type == "cpu" and f.shape == (4, 4) and torch.equal(f.detach().float(), _BINOMIAL_4):
        y = F.interpolate(F.pad(x, [1, 1, 1, 1]), scale_factor=2, mode="bilinear", align_corners=False)
        return y[:, :, 2:-2, 2:-2]
    c, fw = x.shape[1], f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    k = (f * (up * up)).to(x.dtype)[None, None].expand(c, 1, fw, fw)
    a, b = fw - 1 - p0, fw - up - p1  # crop to upfirdn2d's window (1 and 1 for the 4-tap filter)
    if a == b >= 0:
        return F.conv_transpose2d(x, k, stride=up, padding=a, groups=c)  # true convolution of zero-inserted x with f
    x = F.conv_transpose2d(x, k, stride=up, groups=c)
    return x[:, :, a:x.shape[2] - b, a:x.shape[3] - b]


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
        if x.device.type == "cpu":  # oneDNN's deconvolution needs NHWC input and a dense weight (8x faster here)
            x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous()
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, flip_weight: bool = True, fused_modconv: bool = True,
                     bias: torch.Tensor | None = None, gain: float = 1.0) -> torch.Tensor:
    """StyleGAN2 modulated convolution (Karras et al. 2020, Eq. 1-3; ``networks.modulated_conv2d``).

    ``w'_ijk = s_i * w_ijk``; with ``demodulate``: ``w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + 1e-8)``.
    Noise is added after demodulation, before the bias. Returns ``(conv + noise + bias) * gain``; ``bias`` and
    ``gain`` are the first half of upstream's ``bias_act`` (a positive ``gain`` commutes with lrelu), taken in
    here so that demodulation, noise, bias and gain cost one pass over the activations, not four.

    Args:
        x: ``[N, C_in, H, W]``; weight: ``[C_out, C_in, kh, kw]`` (raw, no weight gain);
        styles: ``[N, C_in]``; noise: broadcastable to the output, e.g. ``[N, 1, H', W']`` or ``[H', W']``.
        fused_modconv: ``True`` = one grouped convolution with per-sample weights; ``False`` = scale activations,
            convolve with the shared weight, demodulate the output. Equal up to float rounding (~1e-6);
            which one is faster depends on device and batch size. A 1x1 kernel without demodulation (toRGB)
            is one batched matmul in both forms.
        bias: ``[C_out]`` or None; gain: positive scale applied last.
    Returns:
        ``[N, C_out, H*up, W*up]``.
    """
    n = x.shape[0]
    c_out, c_in, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # pre-normalise to avoid fp16 overflow (upstream)
        weight = weight * (1 / math.sqrt(c_in * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    shift = _shift(noise, bias, gain, x.dtype)
    if kh == kw == 1 and up == 1 and not demodulate:  # toRGB: per-sample [C_out, C_in] weights, one bmm
        w = (weight.reshape(1, c_out, c_in) * styles.reshape(n, 1, c_in) * gain).to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last):  # [N, HW, C_in] @ [N, C_in, C_out], no copy
            y, w, b = x.permute(0, 2, 3, 1).reshape(n, -1, c_in), w.transpose(1, 2), None if shift is None else \
                shift.reshape(-1, 1, c_out)
            out = torch.bmm(y, w) if b is None else torch.baddbmm(b, y, w)
            return out.reshape(n, *x.shape[2:], c_out).permute(0, 3, 1, 2)
        y = x.reshape(n, c_in, -1)
        out = torch.bmm(w, y) if shift is None else torch.baddbmm(shift.reshape(-1, c_out, 1), w, y)
        return out.reshape(n, c_out, *x.shape[2:])
    if not fused_modconv:
        if x.device.type == "cpu":  # oneDNN's convolutions are up to 3.7x faster on NHWC at 16-32 channels
            x = x.contiguous(memory_format=torch.channels_last)
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding, flip_weight=flip_weight)
        scale = None
        if demodulate:  # sum_ik (s_i w_ijk)^2 = s^2 @ sum_k w_ijk^2: a [N, C_in] x [C_in, C_out] matmul
            scale = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt() * gain
        return _epilogue(x, scale, shift, gain)
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, C_out, C_in, kh, kw]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, c_in, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), resample_filter, up=up, padding=padding, groups=n, flip_weight=flip_weight)
    return _epilogue(x.reshape(n, -1, *x.shape[2:]), None, shift, gain)


def _shift(noise: torch.Tensor | None, bias: torch.Tensor | None, gain: float, dtype) -> torch.Tensor | None:
    """``(noise + bias) * gain`` as one small tensor broadcastable to the output (``[C]``, ``[C, H, W]`` or 4-D)."""
    shift = noise.to(dtype) if noise is not None else None
    if bias is not None:
        b = bias.to(dtype)
        shift = b if shift is None else shift + (b if shift.dim() == 1 else b.reshape(-1, 1, 1))
    return shift * gain if shift is not None and gain != 1 else shift


def _epilogue(x: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None, gain: float) -> torch.Tensor:
    """``x * scale + shift`` in one op: scale ``[N, C]`` (demodulation x gain) or None (then ``gain``)."""
    if shift is not None and shift.dim() == 1:
        shift = shift.reshape(-1, 1, 1)
    if scale is not None:
        scale = scale.to(x.dtype).reshape(*scale.shape, 1, 1)
        if shift is None:
            return x * scale
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # keep NHWC (TensorIterator would pick NCHW from a [C, H, W] shift): shift laid out [H, W, C] too
            if shift.dim() == 3:
                shift = shift.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        return torch.addcmul(shift, x, scale)
    if shift is None:
        return x * gain if gain != 1 else x
    return torch.add(shift, x, alpha=gain) if gain != 1 else x + shift


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` along ``dim`` (StyleGAN pixel norm applied to ``z``)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
