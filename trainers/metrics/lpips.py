"""LPIPS (Zhang et al. 2018) through the ``lpips`` package, and seed 001's intra-cluster LPIPS diversity.

The linear calibration layers (v0.1) ship in the ``lpips`` wheel; the backbone (torchvision AlexNet or VGG16
ImageNet weights) is read from a file (:mod:`kdpipe.trainers.metrics.weights`), never downloaded.

Small images: AlexNet's first conv (11x11, stride 4) and its two 3x3/2 max-pools leave a 1x1 map at 32 px, so
inputs whose shorter side is below ``MIN_SIDE`` = 64 px are upsampled bilinearly (``align_corners=False``) by the
smallest integer factor that reaches 64 px, for both backbones, before the network sees them. Distances of images
of different sizes are therefore not comparable; both inputs of one call always get the same factor.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.errors import ConfigError
from kdpipe.trainers.metrics.weights import LPIPS_BACKBONES, MissingWeightsError, resolve_weights

__all__ = ["MIN_SIDE", "LPIPSMetric", "MissingWeightsError", "cluster_lpips", "intra_cluster_lpips", "load_lpips"]

MIN_SIDE = 64
"""Shorter side (pixels) below which images are upsampled before LPIPS (module doc)."""


class LPIPSMetric:
    """A frozen ``lpips.LPIPS`` network; call it on two image batches to get per-pair distances."""

    def __init__(self, net, name: str, weights_path: Path, device: torch.device, batch_size: int = 32):
        self.net, self.name, self.weights_path, self.device = net, name, weights_path, device
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: ``[N, 3, H, W]`` float in [-1, 1], same shape -> LPIPS ``[N]`` float32 on CPU (0 = identical).

        Raises:
            ConfigError: shapes differ or are not ``[N, 3, H, W]``.
        """
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ConfigError(f"LPIPS needs two [N, 3, H, W] batches of the same shape, got {tuple(a.shape)} and "
                              f"{tuple(b.shape)}; resize or stack the images first")
        factor = math.ceil(MIN_SIDE / min(a.shape[-2:]))
        out = []
        for start in range(0, a.shape[0], self.batch_size):  # batches of pairs: bounded memory for N*K pairs
            x, y = (t[start:start + self.batch_size].to(self.device, torch.float32) for t in (a, b))
            if factor > 1:
                x, y = (F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False) for t in (x, y))
            out.append(self.net(x, y).reshape(x.shape[0]).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)


def load_lpips(net: str = "alex", backbone_weights: str | Path | None = None, device="cpu") -> LPIPSMetric:
    """LPIPS v0.1 with backbone ``net`` ("alex" | "vgg"): linear layers from the ``lpips`` wheel, backbone from
    ``backbone_weights`` (a torchvision ``alexnet``/``vgg16`` state_dict file) or torch hub's checkpoint cache.

    Raises:
        ConfigError: unknown ``net``.
        MissingWeightsError: the backbone file is absent (names the file and where to put it).
    """
    import lpips
    import torchvision

    if net not in LPIPS_BACKBONES:
        raise ConfigError(f"unknown LPIPS backbone {net!r}; choose from {sorted(LPIPS_BACKBONES)}")
    filename = LPIPS_BACKBONES[net]
    path = resolve_weights(backbone_weights, filename, f"https://download.pytorch.org/models/{filename}",
                           "--lpips-weights")
    tv = (torchvision.models.alexnet if net == "alex" else torchvision.models.vgg16)(weights=None)
    try:
        tv.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # wrong file: missing keys, shapes, not a state_dict
        raise MissingWeightsError(f"{str(path)!r} is not a torchvision {filename} state_dict "
                                  f"({type(exc).__name__}); download the official file") from None
    with warnings.catch_warnings():  # lpips calls torchvision with the deprecated pretrained=False
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
    # lpips splits torchvision's `features` into slices keeping the child indices: sliceK.<i>.weight = features.<i>.weight
    features = tv.features.state_dict()
    model.net.load_state_dict({k: features[k.split(".", 1)[1]] for k in model.net.state_dict()})
    device = torch.device(device)
    return LPIPSMetric(model.to(device).eval().requires_grad_(False), net, path, device)


def cluster_lpips(generated: torch.Tensor, targets: torch.Tensor, metric: LPIPSMetric) -> np.ndarray:
    """Per-cluster mean pairwise LPIPS ``[K]`` float64 (seed 001, following CDC, Ojha et al. 2021): each generated
    image joins the cluster of its nearest target by LPIPS; a cluster's value is the mean LPIPS over its member
    pairs, NaN for clusters with fewer than 2 members.

    generated: ``[N, 3, H, W]``, targets: ``[K, 3, H, W]``, float in [-1, 1], same H, W.
    Cost: N*K + sum(n_c (n_c - 1) / 2) LPIPS evaluations.
    """
    k = targets.shape[0]
    dist = torch.stack([metric(generated, targets[j:j + 1].expand_as(generated)) for j in range(k)], dim=1)
    assign = dist.argmin(dim=1)
    out = np.full(k, np.nan)
    for c in range(k):
        members = generated[assign == c]
        if members.shape[0] >= 2:
            i, j = torch.triu_indices(members.shape[0], members.shape[0], offset=1)
            out[c] = metric(members[i], members[j]).double().mean().item()
    return out


def intra_cluster_lpips(generated: torch.Tensor, targets: torch.Tensor, metric: LPIPSMetric) -> float:
    """Intra-cluster LPIPS diversity (seed 001, Sec. 4 "Diversity evaluation"; Table 2): the mean over clusters
    of :func:`cluster_lpips` (clusters with >= 2 members). 0 when every cluster holds copies of one image; higher
    = more diverse. Shapes as in :func:`cluster_lpips`.

    Raises:
        ConfigError: no cluster has two members (nothing to measure).
    """
    per_cluster = cluster_lpips(generated, targets, metric)
    if np.isnan(per_cluster).all():
        raise ConfigError(f"intra-cluster LPIPS: no cluster of the {targets.shape[0]} targets got 2 of the "
                          f"{generated.shape[0]} generated images; generate more images (seed 001 uses 1000)")
    return float(np.nanmean(per_cluster))


# ------------------------------------------------------------------------- registry entries (kdpipe eval)

def _metric(ctx) -> LPIPSMetric:
    o = ctx.options
    return load_lpips(o.lpips_net, o.lpips_weights, o.device)


def compute_diversity(ctx) -> dict[str, float]:
    """``lpips_diversity`` (mean over clusters) and ``lpips_diversity_std`` (across clusters, as seed 001's Table 2
    reports it); the reference set holds the k target images."""
    per_cluster = cluster_lpips(ctx.floats("generated"), ctx.floats("reference"), _metric(ctx))
    if np.isnan(per_cluster).all():
        raise ConfigError("intra-cluster LPIPS: no cluster got 2 generated images; generate more (--n)")
    return {"lpips_diversity": float(np.nanmean(per_cluster)), "lpips_diversity_std": float(np.nanstd(per_cluster)),
            "lpips_clusters": int((~np.isnan(per_cluster)).sum())}


def compute_pair(ctx) -> dict[str, float]:
    """``lpips_pair``: mean LPIPS of generated[i] vs reference[i] over the first min(N, M) pairs (same seeds /
    same inputs), ``lpips_pair_std`` their std."""
    a, b = ctx.floats("generated"), ctx.floats("reference")
    n = min(len(a), len(b))
    if a.shape[1:] != b.shape[1:]:
        raise ConfigError(f"lpips-pair needs images of one size, got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    d = _metric(ctx)(a[:n], b[:n]).double()
    return {"lpips_pair": float(d.mean()), "lpips_pair_std": float(d.std()) if n > 1 else 0.0}
