"""pix2pixHD networks (Wang et al. 2018, "High-Resolution Image Synthesis and Semantic Manipulation with
Conditional GANs"), matching NVIDIA/pix2pixHD ``models/networks.py``: GlobalGenerator, LocalEnhancer,
ResnetBlock, NLayerDiscriminator (with intermediate features) and MultiscaleDiscriminator.

Layer order, kernel sizes, paddings and ``weights_init`` (conv weights ~ N(0, 0.02), conv biases left at
PyTorch's default init) follow upstream, so module indices inside each ``nn.Sequential`` are the same.
Norm is InstanceNorm2d(affine=False) (upstream ``--norm instance``, the default); no buffers, no running stats.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn as nn

NormLayer = Callable[[int], nn.Module]


def get_norm_layer(norm: str = "instance") -> NormLayer:
    """``instance`` -> InstanceNorm2d(affine=False) (upstream default); ``batch`` -> BatchNorm2d(affine=True)."""
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True)
    raise ValueError(f"normalization layer {norm!r} is not one of instance, batch")


def weights_init(m: nn.Module) -> None:
    """Upstream ``weights_init``: Conv*/ConvTranspose* weight ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02), bias 0."""
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        m.weight.data.normal_(0.0, 0.02)
    elif name.find("BatchNorm2d") != -1:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)


class ResnetBlock(nn.Module):
    """x + [reflect-pad 1, conv3x3, norm, ReLU, reflect-pad 1, conv3x3, norm](x); shape [N, dim, H, W] kept."""

    def __init__(self, dim: int, norm_layer: NormLayer):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0), norm_layer(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0), norm_layer(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _global_layers(input_nc: int, output_nc: int, ngf: int, n_downsampling: int, n_blocks: int,
                   norm_layer: NormLayer) -> list[nn.Module]:
    act = nn.ReLU(True)
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0),
                               norm_layer(ngf), act]
    for i in range(n_downsampling):
        mult = 2**i
        layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1),
                   norm_layer(ngf * mult * 2), act]
    mult = 2**n_downsampling
    layers += [ResnetBlock(ngf * mult, norm_layer) for _ in range(n_blocks)]
    for i in range(n_downsampling):
        mult = 2**(n_downsampling - i)
        layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                                      output_padding=1), norm_layer(ngf * mult // 2), act]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
    return layers


class GlobalGenerator(nn.Module):
    """G1 of pix2pixHD: c7s1-ngf, n_downsampling x d(2x), n_blocks x R, n_downsampling x u(2x), c7s1-3, tanh.

    forward: x [N, input_nc, H, W] float in [-1, 1] -> [N, output_nc, H, W] in (-1, 1);
    H and W must be divisible by ``2**n_downsampling``. Upstream defaults: ngf=64, n_downsampling=4 (the
    ``--n_downsample_global`` option), n_blocks=9.
    """

    def __init__(self, input_nc: int, output_nc: int = 3, ngf: int = 64, n_downsampling: int = 4,
                 n_blocks: int = 9, norm_layer: NormLayer = get_norm_layer("instance")):
        super().__init__()
        self.model = nn.Sequential(*_global_layers(input_nc, output_nc, ngf, n_downsampling, n_blocks, norm_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LocalEnhancer(nn.Module):
    """G = {G1, G2}: a global generator at 1/2**n_local_enhancers resolution whose last feature map is added
    to each local enhancer's downsampled features (upstream ``LocalEnhancer``; ngf is the finest branch's).

    forward: x [N, input_nc, H, W] in [-1, 1] -> [N, output_nc, H, W]; H, W divisible by
    ``2**(n_downsample_global + n_local_enhancers)``.
    """

    def __init__(self, input_nc: int, output_nc: int = 3, ngf: int = 32, n_downsample_global: int = 3,
                 n_blocks_global: int = 9, n_local_enhancers: int = 1, n_blocks_local: int = 3,
                 norm_layer: NormLayer = get_norm_layer("instance")):
        super().__init__()
        self.n_local_enhancers = n_local_enhancers
        ngf_global = ngf * 2**n_local_enhancers
        g1 = _global_layers(input_nc, output_nc, ngf_global, n_downsample_global, n_blocks_global, norm_layer)
        self.model = nn.Sequential(*g1[:-3])  # drop the final reflect-pad, conv, tanh
        for n in range(1, n_local_enhancers + 1):
            ngf_g = ngf * 2**(n_local_enhancers - n)
            down = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf_g, kernel_size=7, padding=0), norm_layer(ngf_g),
                    nn.ReLU(True), nn.Conv2d(ngf_g, ngf_g * 2, kernel_size=3, stride=2, padding=1),
                    norm_layer(ngf_g * 2), nn.ReLU(True)]
            up: list[nn.Module] = [ResnetBlock(ngf_g * 2, norm_layer) for _ in range(n_blocks_local)]
            up += [nn.ConvTranspose2d(ngf_g * 2, ngf_g, kernel_size=3, stride=2, padding=1, output_padding=1),
                   norm_layer(ngf_g), nn.ReLU(True)]
            if n == n_local_enhancers:
                up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
            setattr(self, f"model{n}_1", nn.Sequential(*down))
            setattr(self, f"model{n}_2", nn.Sequential(*up))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [x]
        for _ in range(self.n_local_enhancers):
            pyramid.append(self.downsample(pyramid[-1]))
        out = self.model(pyramid[-1])
        for n in range(1, self.n_local_enhancers + 1):
            x_n = pyramid[self.n_local_enhancers - n]
            out = getattr(self, f"model{n}_2")(getattr(self, f"model{n}_1")(x_n) + out)
        return out


class NLayerDiscriminator(nn.Module):
    """70x70-style PatchGAN with ``n_layers`` stride-2 convs (k4, pad 2), LeakyReLU(0.2), then two stride-1 convs.

    forward: x [N, input_nc, H, W] -> list of n_layers + 2 tensors: the intermediate features (used by the
    feature-matching loss) and, last, the patch logits [N, 1, h, w] (no sigmoid: LSGAN).
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3,
                 norm_layer: NormLayer = get_norm_layer("instance")):
        super().__init__()
        self.n_layers = n_layers
        kw, padw = 4, 2
        seq: list[list[nn.Module]] = [[nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
                                       nn.LeakyReLU(0.2, True)]]
        nf = ndf
        for _ in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            seq += [[nn.Conv2d(nf_prev, nf, kernel_size=kw, stride=2, padding=padw), norm_layer(nf),
                     nn.LeakyReLU(0.2, True)]]
        nf_prev, nf = nf, min(nf * 2, 512)
        seq += [[nn.Conv2d(nf_prev, nf, kernel_size=kw, stride=1, padding=padw), norm_layer(nf),
                 nn.LeakyReLU(0.2, True)]]
        seq += [[nn.Conv2d(nf, 1, kernel_size=kw, stride=1, padding=padw)]]
        for n, layers in enumerate(seq):
            setattr(self, f"model{n}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]
        for n in range(self.n_layers + 2):
            feats.append(getattr(self, f"model{n}")(feats[-1]))
        return feats[1:]


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs on the image downsampled by 1, 2, 4, ... (AvgPool 3, stride 2).

    forward: x [N, input_nc, H, W] (condition and image concatenated on channels) -> list over scales
    (finest first) of the per-scale feature lists of :class:`NLayerDiscriminator`.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, num_D: int = 2,
                 norm_layer: NormLayer = get_norm_layer("instance")):
        super().__init__()
        self.num_D, self.n_layers = num_D, n_layers
        for i in range(num_D):
            net = NLayerDiscriminator(input_nc, ndf, n_layers, norm_layer)
            for j in range(n_layers + 2):
                setattr(self, f"scale{i}_layer{j}", getattr(net, f"model{j}"))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        result = []
        for i in range(self.num_D):
            scale = self.num_D - 1 - i  # upstream order: scale{num_D-1} sees full resolution
            feats = [x]
            for j in range(self.n_layers + 2):
                feats.append(getattr(self, f"scale{scale}_layer{j}")(feats[-1]))
            result.append(feats[1:])
            if i != self.num_D - 1:
                x = self.downsample(x)
        return result


def build_generator(input_nc: int, output_nc: int = 3, netG: str = "global", ngf: int = 64,
                    n_downsample_global: int = 4, n_blocks_global: int = 9, n_local_enhancers: int = 1,
                    n_blocks_local: int = 3, norm: str = "instance") -> nn.Module:
    """Upstream ``define_G`` for ``netG`` in {global, local}, with ``weights_init`` applied (seed torch first)."""
    norm_layer = get_norm_layer(norm)
    if netG == "global":
        net: nn.Module = GlobalGenerator(input_nc, output_nc, ngf, n_downsample_global, n_blocks_global, norm_layer)
    elif netG == "local":
        net = LocalEnhancer(input_nc, output_nc, ngf, n_downsample_global, n_blocks_global, n_local_enhancers,
                            n_blocks_local, norm_layer)
    else:
        raise ValueError(f"netG {netG!r} is not one of global, local")
    net.apply(weights_init)
    return net


def build_discriminator(input_nc: int, ndf: int = 64, n_layers_D: int = 3, num_D: int = 2,
                        norm: str = "instance") -> MultiscaleDiscriminator:
    """Upstream ``define_D`` (getIntermFeat=True, no sigmoid), with ``weights_init`` applied."""
    net = MultiscaleDiscriminator(input_nc, ndf, n_layers_D, num_D, get_norm_layer(norm))
    net.apply(weights_init)
    return net


def downsample_factor(netG: str, n_downsample_global: int, n_local_enhancers: int) -> int:
    """Image sides must be multiples of this for the generator to return the input size."""
    return 2**(n_downsample_global + (n_local_enhancers if netG == "local" else 0))
