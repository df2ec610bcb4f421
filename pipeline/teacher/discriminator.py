"""StyleGAN2 discriminator in pure PyTorch (the teacher's D: the KD, compression and few-shot students reuse it).

Class names, constructor arguments and ``state_dict`` keys/shapes mirror NVlabs stylegan2-ada-pytorch
``training/networks.py`` (``DiscriminatorBlock``, ``MinibatchStdLayer``, ``DiscriminatorEpilogue``,
``Discriminator``), resnet architecture by default; ``forward(..., return_features=True)`` also returns every
block's feature map. Reference: Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from kdpipe.pipeline.teacher.networks import Conv2dLayer, FullyConnectedLayer
from kdpipe.pipeline.teacher.ops import setup_filter


class DiscriminatorBlock(nn.Module):
    """Discriminator block at resolution r: [fromRGB] -> conv0 -> conv1 (down 2), resnet skip. ``[N,tmp,r,r]`` -> ``[N,out,r/2,r/2]``."""

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx=0,
                 architecture="resnet", activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None,
                 use_fp16=False, fp16_channels_last=False, freeze_layers=0):
        super().__init__()
        if architecture not in ("orig", "resnet"):
            raise ValueError(f"discriminator architecture {architecture!r} is not supported; use 'resnet' or 'orig'")
        self.in_channels, self.architecture = in_channels, architecture
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        if self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            return y + x
        return self.conv1(self.conv0(x))


class MinibatchStdLayer(nn.Module):
    """Appends the per-group standard deviation as extra channels (``networks.MinibatchStdLayer``)."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            g = math.gcd(n, g)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)
        return torch.cat([x, y.repeat(g, 1, h, w)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch-std, conv, fc, out. ``[N, C4, 4, 4]`` -> logits ``[N, 1]``."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture="resnet", mbstd_group_size=4,
                 mbstd_num_channels=1, activation="lrelu", conv_clamp=None):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x):
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: img ``[N, img_channels, R, R]`` in [-1, 1] -> logits ``[N, 1]``.

    Unconditional only (``c_dim=0``). ``forward(img, return_features=True)`` also returns
    ``{resolution r: output of block b{r} [N, C_{r/2}, r/2, r/2]}`` (the per-resblock features seed 000 distils).
    """

    def __init__(self, c_dim, img_resolution, img_channels, architecture="resnet", channel_base=32768,
                 channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None, block_kwargs=None,
                 mapping_kwargs=None, epilogue_kwargs=None):
        super().__init__()
        if c_dim != 0:
            raise ValueError(f"conditional discriminators (c_dim={c_dim}) are not supported")
        log2 = int(np.log2(img_resolution))
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.init_kwargs = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                                architecture=architecture, channel_base=channel_base, channel_max=channel_max,
                                num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                                block_kwargs=dict(block_kwargs or {}), epilogue_kwargs=dict(epilogue_kwargs or {}))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res], channels[res // 2],
                                       resolution=res, img_channels=img_channels, architecture=architecture,
                                       use_fp16=(res >= fp16_resolution), conv_clamp=conv_clamp,
                                       **(block_kwargs or {}))
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=0, resolution=4, img_channels=img_channels,
                                        conv_clamp=conv_clamp, **(epilogue_kwargs or {}))

    def forward(self, img, c=None, return_features=False):
        x = None
        features = {}
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
            features[res] = x
        out = self.b4(x)
        return (out, features) if return_features else out
