"""StyleGAN2 generator in pure PyTorch (the kdpipe teacher), and the layers it shares with the discriminator
(:mod:`kdpipe.pipeline.teacher.discriminator`).

Class names, constructor arguments and ``state_dict`` keys/shapes mirror NVlabs stylegan2-ada-pytorch
``training/networks.py`` (identical to stylegan3 ``training/networks_stylegan2.py``), so official
weights load with ``load_state_dict`` after the format conversion in ``kdpipe.pipeline.teacher.formats.checkpoints``.
Differences from upstream, on purpose:

* no custom CUDA ops, no ``persistence`` decorator, no ``exec`` of anything;
* ``noise_mode`` defaults to ``'const'`` (upstream ``'random'``): a source image and its edit share noise;
* ``synthesis(..., return_features=True)`` also returns every block's feature map (for KD losses);
* fp16 is used only when asked for (``use_fp16=True`` on a CUDA device), never on CPU.

Reference: Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from kdpipe.pipeline.teacher.ops import (bias_act, conv2d_resample, modulated_conv2d, normalize_2nd_moment, setup_filter,
                                 upsample2d)

NOISE_MODES = ("const", "random", "none")


class FullyConnectedLayer(nn.Module):
    """Equalised-lr linear layer: ``act(x @ (W * lr/sqrt(in)).T + b * lr)``. x: ``[N, in]`` -> ``[N, out]``."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Equalised-lr conv with optional FIR up/down by 2 (discriminator and resnet skips). ``[N,in,H,W]`` -> ``[N,out,H',W']``."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = math.sqrt(2.0) if activation == "lrelu" else 1.0
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x, gain=1.0):
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w.to(x.dtype), self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z -> w mapping network (8 FC layers, lr multiplier 0.01) with the running average ``w_avg``.

    forward(z ``[N, z_dim]``, c ``[N, c_dim]`` or None, truncation_psi, truncation_cutoff) -> ws ``[N, num_ws, w_dim]``
    float32. Truncation: ``w_avg + psi * (w - w_avg)`` on all layers, or on layers ``[0, truncation_cutoff)`` only
    (matches ``MappingNetwork.forward`` upstream; psi > 1 extrapolates).
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if embed_features is None else embed_features
        embed_features = 0 if c_dim == 0 else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this mapping network is conditional (c_dim={self.c_dim}); pass c [N, {self.c_dim}]")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+ optional FIR upsampling), noise, bias, lrelu. ``[N,in,r/up,r/up]`` -> ``[N,out,r,r]``."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.activation, self.conv_clamp = (resolution, up, use_noise,
                                                                                       activation, conv_clamp)
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = math.sqrt(2.0) if activation == "lrelu" else 1.0
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="const", fused_modconv=True, gain=1.0):
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        # (conv + noise + bias) * gain inside the modulated conv: gain > 0, so lrelu(y) * gain == lrelu(y * gain)
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv, bias=self.bias, gain=self.act_gain * gain)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, act=self.activation, gain=1.0, clamp=clamp)


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation, + bias, no activation. ``[N,in,r,r]`` -> ``[N,img_channels,r,r]``."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv, bias=self.bias)
        return bias_act(x, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (const | conv0 up) -> conv1 -> toRGB, 'skip' or 'resnet' architecture."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture="skip",
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False, fp16_channels_last=False,
                 **layer_kwargs):
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"synthesis architecture {architecture!r} is not supported; use 'skip' or 'resnet'")
        self.in_channels, self.w_dim, self.resolution, self.img_channels = in_channels, w_dim, resolution, img_channels
        self.is_last, self.architecture, self.use_fp16 = is_last, architecture, use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def forward(self, x, img, ws, noise_mode="const", fused_modconv=True, dtype=torch.float32):
        """ws: ``[N, num_conv + num_torgb, w_dim]``; x: ``[N, in, r/2, r/2]`` or None; img: ``[N, 3, r/2, r/2]`` or None."""
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        elif self.architecture == "resnet":
            x = x.to(dtype)
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image ``[N, img_channels, R, R]`` float32, nominal range [-1, 1].

    Channels per resolution r: ``min(channel_base // r, channel_max)``. ``num_ws = 2 * log2(R) - 2``.
    ws index ``2k-5`` feeds conv0 of resolution ``2^k``, ``2k-4`` its conv1 and ``2k-3`` its toRGB
    (shared with the next conv0), as in all three official implementations.
    """

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        super().__init__()
        log2 = int(np.log2(img_resolution))
        if img_resolution < 4 or 2 ** log2 != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=(res == img_resolution),
                                   use_fp16=(res >= fp16_resolution), **block_kwargs)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws, noise_mode="const", fused_modconv=None, use_fp16=False, return_features=False):
        """Render images.

        Args:
            ws: ``[N, num_ws, w_dim]`` float32.
            noise_mode: ``'const'`` (stored noise buffers; default), ``'random'`` (fresh randn per call) or ``'none'``.
            fused_modconv: ``None`` picks per device (see :func:`default_fused_modconv`).
            use_fp16: run the blocks the checkpoint marks fp16 in float16 (CUDA only; ignored on CPU).
            return_features: also return ``{resolution: x [N, C_r, r, r]}`` of every block.
        Returns:
            img ``[N, img_channels, R, R]`` float32, or ``(img, features)``.
        Raises:
            ValueError: wrong ws shape or unknown noise_mode.
        """
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode {noise_mode!r} is not one of {NOISE_MODES}")
        if fused_modconv is None:
            fused_modconv = default_fused_modconv(ws.device, ws.shape[0])
        x = img = None
        features = {}
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            fp16 = use_fp16 and block.use_fp16 and ws.device.type == "cuda"
            x, img = block(x, img, block_ws, noise_mode=noise_mode, fused_modconv=fused_modconv,
                           dtype=torch.float16 if fp16 else torch.float32)
            if return_features:
                features[res] = x.contiguous()  # NCHW as documented (the CPU forward keeps NHWC inside)
        img = img.contiguous()
        return (img, features) if return_features else img


def default_fused_modconv(device: torch.device, batch_size: int | None = None) -> bool:
    """Which modulated-conv form to use by default: fused (one grouped conv) or unfused (shared weights + scaling).

    Chosen per device only, never per batch size, so output bytes do not depend on batching: unfused on CPU
    (1.1x faster at batch 8 and 1.3x at batch 16 for the 64-px built-in teacher on 2 cores:
    ``python benchmarks/generate_throughput.py --device cpu --modconv``), fused on CUDA (upstream's inference
    default; not yet timed here). The two agree to ~1e-5.
    """
    return device.type != "cpu"


class Generator(nn.Module):
    """StyleGAN2 generator ``G(z) = G.synthesis(G.mapping(z))``.

    Args mirror stylegan2-ada-pytorch ``Generator``: z_dim, c_dim, w_dim, img_resolution, img_channels,
    ``mapping_kwargs`` (num_layers, lr_multiplier, w_avg_beta, ...) and synthesis kwargs (channel_base,
    channel_max, num_fp16_res, conv_clamp, architecture, ...). Unknown kwargs raise ``TypeError``.
    """

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs or {}),
                                **synthesis_kwargs)
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const", **synthesis_kwargs):
        """z ``[N, z_dim]`` -> img ``[N, img_channels, R, R]`` float32 in ~[-1, 1]."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, **synthesis_kwargs)
