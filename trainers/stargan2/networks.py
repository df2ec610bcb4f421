"""StarGANv2 networks (Choi et al., "StarGAN v2: Diverse Image Synthesis for Multiple Domains", CVPR 2020).

Layer structure, module names and ``state_dict`` keys follow clovaai/stargan-v2 ``core/model.py`` (so an official
checkpoint without the high-pass/FAN branch loads with ``load_state_dict``). Differences, on purpose:

* sizes are configurable (``dim_in``, ``num_down``, ``hidden_dim``) so tests run 16 px models with 8 channels;
  ``None`` gives the official values (``dim_in = 2**14 // img_size``, ``num_down = log2(img_size) - 4``,
  ``hidden_dim = 512``);
* no high-pass filter / FAN masks (``w_hpf = 0``, the AFHQ setting): the face landmark network is a pretrained
  model that cannot ship;
* the generator is split in the two halves seed 000 names: the content encoder ``E_S``
  (:meth:`Generator.encode_content`) and the AdaIN decoder ``G_S`` (:meth:`Generator.synthesize`), each of which
  can return its per-resolution features for the KD losses (seed 000 Eq. 1 and 3); the style encoder ``E_R`` does
  the same (Eq. 2).

Images are ``[N, 3, H, W]`` float32 in [-1, 1]; domain labels ``y`` are int64 ``[N]`` in ``[0, num_domains)``;
styles ``s`` are ``[N, style_dim]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdpipe.errors import ConfigError

NET_NAMES = ("generator", "mapping_network", "style_encoder", "discriminator")


def default_dim_in(img_size: int) -> int:
    """Official base channel count ``2**14 // img_size`` (64 at 256 px)."""
    return 2 ** 14 // img_size


def check_img_size(img_size: int) -> int:
    """Return ``log2(img_size)``; raises :class:`ConfigError` unless ``img_size`` is a power of two >= 8."""
    log2 = int(round(math.log2(img_size))) if img_size > 0 else 0
    if img_size < 8 or 2 ** log2 != img_size:
        raise ConfigError(f"model.img_size={img_size} must be a power of two >= 8 (e.g. 256; 16 for tests)")
    return log2


class ResBlk(nn.Module):
    """Pre-activation residual block, optional instance norm and 2x average-pool downsampling.

    ``[N, dim_in, H, W]`` -> ``[N, dim_out, H/2 or H, W/2 or W]``; output = (shortcut + residual) / sqrt(2).
    """

    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False, downsample: bool = False):
        super().__init__()
        self.actv = nn.LeakyReLU(0.2)
        self.normalize, self.downsample, self.learned_sc = normalize, downsample, dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x):
        if self.learned_sc:
            x = self.conv1x1(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def _residual(self, x):
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(self.actv(x))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(self.actv(x))

    def forward(self, x):
        return (self._shortcut(x) + self._residual(x)) / math.sqrt(2)


class AdaIN(nn.Module):
    """Adaptive instance norm: ``(1 + gamma(s)) * IN(x) + beta(s)``. x ``[N, C, H, W]``, s ``[N, style_dim]``."""

    def __init__(self, style_dim: int, num_features: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, num_features * 2)

    def forward(self, x, s):
        h = self.fc(s)[:, :, None, None]
        gamma, beta = torch.chunk(h, chunks=2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """Residual block with AdaIN, optional nearest 2x upsampling. ``[N, dim_in, H, W]`` -> ``[N, dim_out, 2H|H, .]``."""

    def __init__(self, dim_in: int, dim_out: int, style_dim: int = 64, upsample: bool = False):
        super().__init__()
        self.actv = nn.LeakyReLU(0.2)
        self.upsample, self.learned_sc = upsample, dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x):
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv1x1(x) if self.learned_sc else x

    def _residual(self, x, s):
        x = self.actv(self.norm1(x, s))
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv1(x)
        return self.conv2(self.actv(self.norm2(x, s)))

    def forward(self, x, s):
        return (self._residual(x, s) + self._shortcut(x)) / math.sqrt(2)


class Generator(nn.Module):
    """StarGANv2 generator = content encoder ``E_S`` (from_rgb + encode) and AdaIN decoder ``G_S`` (decode + to_rgb).

    Args:
        img_size: input/output resolution R (power of two).
        style_dim: style code size (64 in StarGANv2).
        max_conv_dim: channel cap (512).
        dim_in: channels after ``from_rgb``; None -> ``2**14 // img_size``.
        num_down: downsampling blocks; None -> ``log2(R) - 4`` (bottleneck 16x16, official ``w_hpf=0``).
    Channels double per downsampling block up to ``max_conv_dim``; two bottleneck blocks follow.
    """

    def __init__(self, img_size: int = 256, style_dim: int = 64, max_conv_dim: int = 512, dim_in: int | None = None,
                 num_down: int | None = None):
        super().__init__()
        log2 = check_img_size(img_size)
        dim_in = default_dim_in(img_size) if dim_in is None else dim_in
        num_down = log2 - 4 if num_down is None else num_down
        if not 0 <= num_down <= log2 - 2:
            raise ConfigError(f"model.num_down={num_down} must be in [0, {log2 - 2}] for img_size={img_size}")
        self.img_size, self.style_dim = img_size, style_dim
        self.bottleneck_res = img_size >> num_down
        self.from_rgb = nn.Conv2d(3, dim_in, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(nn.InstanceNorm2d(dim_in, affine=True), nn.LeakyReLU(0.2),
                                    nn.Conv2d(dim_in, 3, 1, 1, 0))
        dim_out = dim_in
        for _ in range(num_down):
            dim_out = min(dim_in * 2, max_conv_dim)
            self.encode.append(ResBlk(dim_in, dim_out, normalize=True, downsample=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_in, style_dim, upsample=True))  # stack-like
            dim_in = dim_out
        for _ in range(2):  # bottleneck
            self.encode.append(ResBlk(dim_out, dim_out, normalize=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_out, style_dim))

    def encode_content(self, x: torch.Tensor, return_features: bool = False):
        """Content encoder ``E_S``: x ``[N, 3, R, R]`` -> content code ``[N, C_b, R_b, R_b]`` (R_b = bottleneck_res).

        With ``return_features``: also ``{res: output of the last encode block at res}`` for every block
        resolution R/2 .. R_b (the per-ResBlock features of seed 000 Eq. 1).
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            raise ValueError(f"generator input must be [N, 3, {self.img_size}, {self.img_size}], got {list(x.shape)}")
        h = self.from_rgb(x)
        feats = {}
        for block in self.encode:
            h = block(h)
            feats[h.shape[-1]] = h
        return (h, feats) if return_features else h

    def synthesize(self, h: torch.Tensor, s: torch.Tensor, return_features: bool = False):
        """AdaIN decoder ``G_S``: content ``[N, C_b, R_b, R_b]`` and style ``[N, style_dim]`` -> image ``[N, 3, R, R]``.

        With ``return_features``: also ``{res: output of the last decode block at res}`` for R_b .. R (Eq. 3).
        """
        feats = {}
        for block in self.decode:
            h = block(h, s)
            feats[h.shape[-1]] = h
        img = self.to_rgb(h)
        return (img, feats) if return_features else img

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Translate x ``[N, 3, R, R]`` to the style s ``[N, style_dim]``: ``G_S(E_S(x), s)`` ``[N, 3, R, R]``."""
        return self.synthesize(self.encode_content(x), s)


def _pick_domain(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``out[i, y[i]]`` for out ``[N, K, ...]`` and y ``[N]`` int64."""
    if y.shape != (out.shape[0],):
        raise ValueError(f"domain labels y must be [N]={[out.shape[0]]}, got {list(y.shape)}")
    return out[torch.arange(out.shape[0], device=out.device), y]


class MappingNetwork(nn.Module):
    """Latent code z ``[N, latent_dim]`` and domain y ``[N]`` -> style ``[N, style_dim]``.

    4 shared ReLU layers, then one 4-layer head per domain (``unshared``), as in StarGANv2.
    """

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 2, hidden_dim: int = 512):
        super().__init__()
        layers = [nn.Linear(latent_dim, hidden_dim), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList()
        for _ in range(num_domains):
            self.unshared.append(nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                               nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                               nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                               nn.Linear(hidden_dim, style_dim)))
        self.latent_dim, self.num_domains = latent_dim, num_domains

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"mapping network input z must be [N, {self.latent_dim}], got {list(z.shape)}")
        h = self.shared(z)
        return _pick_domain(torch.stack([head(h) for head in self.unshared], dim=1), y)


def _downsampling_trunk(img_size: int, max_conv_dim: int, dim_in: int | None) -> tuple[list[nn.Module], int]:
    """Shared trunk of the style encoder and discriminator: conv, ResBlk down to 4x4, lrelu, 4x4 conv, lrelu."""
    log2 = check_img_size(img_size)
    dim_in = default_dim_in(img_size) if dim_in is None else dim_in
    blocks: list[nn.Module] = [nn.Conv2d(3, dim_in, 3, 1, 1)]
    dim_out = dim_in
    for _ in range(log2 - 2):
        dim_out = min(dim_in * 2, max_conv_dim)
        blocks.append(ResBlk(dim_in, dim_out, downsample=True))
        dim_in = dim_out
    blocks += [nn.LeakyReLU(0.2), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(0.2)]
    return blocks, dim_out


def _run_trunk(seq: nn.Sequential, x: torch.Tensor, img_size: int, return_features: bool):
    """Run ``seq`` on x; features ``{res: ResBlk output}`` (res R/2 .. 4) when asked."""
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != img_size or x.shape[-2] != img_size:
        raise ValueError(f"input images must be [N, 3, {img_size}, {img_size}], got {list(x.shape)}")
    feats = {}
    for layer in seq:
        x = layer(x)
        if return_features and isinstance(layer, ResBlk):
            feats[x.shape[-1]] = x
    return x, feats


class StyleEncoder(nn.Module):
    """Reference encoder ``E_R``: image ``[N, 3, R, R]`` and domain y ``[N]`` -> style ``[N, style_dim]``.

    ``forward(x, y, return_features=True)`` also returns ``{res: ResBlk output}`` for res R/2 .. 4 (Eq. 2).
    """

    def __init__(self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2, max_conv_dim: int = 512,
                 dim_in: int | None = None):
        super().__init__()
        blocks, dim_out = _downsampling_trunk(img_size, max_conv_dim, dim_in)
        self.shared = nn.Sequential(*blocks)
        self.unshared = nn.ModuleList([nn.Linear(dim_out, style_dim) for _ in range(num_domains)])
        self.img_size, self.num_domains = img_size, num_domains

    def forward(self, x: torch.Tensor, y: torch.Tensor, return_features: bool = False):
        h, feats = _run_trunk(self.shared, x, self.img_size, return_features)
        h = h.flatten(1)
        s = _pick_domain(torch.stack([head(h) for head in self.unshared], dim=1), y)
        return (s, feats) if return_features else s


class Discriminator(nn.Module):
    """Multi-task discriminator ``D_S``: image ``[N, 3, R, R]`` and domain y ``[N]`` -> logits ``[N]`` of domain y."""

    def __init__(self, img_size: int = 256, num_domains: int = 2, max_conv_dim: int = 512, dim_in: int | None = None):
        super().__init__()
        blocks, dim_out = _downsampling_trunk(img_size, max_conv_dim, dim_in)
        blocks.append(nn.Conv2d(dim_out, num_domains, 1, 1, 0))
        self.main = nn.Sequential(*blocks)
        self.img_size, self.num_domains = img_size, num_domains

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out, _ = _run_trunk(self.main, x, self.img_size, False)
        return _pick_domain(out.flatten(1), y)


def he_init(module: nn.Module) -> None:
    """StarGANv2 init (``core/utils.py he_init``): Kaiming-normal fan_in weights, zero biases, for Conv2d/Linear."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.constant_(module.bias, 0)


def build_nets(img_size: int = 256, num_domains: int = 2, style_dim: int = 64, latent_dim: int = 16,
               max_conv_dim: int = 512, dim_in: int | None = None, num_down: int | None = None,
               hidden_dim: int = 512) -> nn.ModuleDict:
    """The four trainable StarGANv2 networks, He-initialised, in a ``ModuleDict`` keyed by :data:`NET_NAMES`.

    Seeds: uses the global torch RNG (seed it first). Raises :class:`ConfigError` on impossible sizes.
    """
    if num_domains < 1:
        raise ConfigError(f"num_domains={num_domains} must be >= 1")
    nets = nn.ModuleDict({
        "generator": Generator(img_size, style_dim, max_conv_dim, dim_in, num_down),
        "mapping_network": MappingNetwork(latent_dim, style_dim, num_domains, hidden_dim),
        "style_encoder": StyleEncoder(img_size, style_dim, num_domains, max_conv_dim, dim_in),
        "discriminator": Discriminator(img_size, num_domains, max_conv_dim, dim_in),
    })
    nets.apply(he_init)
    return nets


def load_expanding_domains(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``net``, duplicating single-domain heads to all of ``net``'s domains (seed 000 A.4).

    The KD stage learns one domain; finetuning needs one head per class: ``unshared.0.*`` is copied into every
    ``unshared.k.*`` (mapping network, style encoder) and the discriminator's 1-channel output conv is repeated
    K times. Tensors whose shapes already match are copied as they are.

    Raises:
        ConfigError: a key is missing or a shape cannot be expanded (the checkpoint is another architecture).
    """
    own = net.state_dict()
    new = {}
    for key, target in own.items():
        src_key = key
        if key not in state and ".unshared." in f".{key}":
            parts = key.split(".")
            i = parts.index("unshared")
            src_key = ".".join(parts[:i + 1] + ["0"] + parts[i + 2:])
        if src_key not in state:
            raise ConfigError(f"init checkpoint lacks '{key}'; it was trained with another architecture "
                              "(compare the model.* settings)")
        value = state[src_key]
        if value.shape != target.shape:
            if value.shape[0] == 1 and value.shape[1:] == target.shape[1:]:
                value = value.repeat(target.shape[0], *([1] * (value.ndim - 1)))
            else:
                raise ConfigError(f"init checkpoint '{key}' has shape {list(value.shape)}, this model needs "
                                  f"{list(target.shape)}; use the same model.* settings as the KD run")
        new[key] = value
    net.load_state_dict(new)
