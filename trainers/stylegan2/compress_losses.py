"""Losses of seed 003 ("A Comprehensive Overhaul of Distilling Unconditional GANs") beyond the GAN loss:
the mimicking terms of Eq. 3, the style-module mimicking of Eq. 9 and the latent-direction relation loss of Eq. 10
with its dictionary of latent directions (Sec. 3.5). The non-saturating GAN loss and R1 are
:mod:`kdpipe.trainers.gan.losses`'.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.errors import ConfigError
from kdpipe.pipeline.teacher.networks import Generator


def rgb_loss(img_s: torch.Tensor, img_t: torch.Tensor) -> torch.Tensor:
    """L_rgb of Eq. 3: ``mean |G_s(z) - G_t(z)|`` over every pixel and channel (images ``[N, 3, H, W]`` in [-1, 1]);
    scalar."""
    return (img_s - img_t).abs().mean()


def style_mimic_loss(ws_s: torch.Tensor, ws_t: torch.Tensor, distance: str = "l1") -> torch.Tensor:
    """Eq. 9: ``D(S_s(z), S_t(z))`` averaged over the batch and w entries; ``distance`` ``l1`` (mean |.|, the
    paper's better choice, Table 2) or ``l2`` (mean squared). ws: ``[N, w_dim]`` or ``[N, num_ws, w_dim]``."""
    diff = ws_s - ws_t
    return diff.abs().mean() if distance == "l1" else diff.square().mean()


def relation_kd_loss(f_t: torch.Tensor, f_t_aug: torch.Tensor, f_s: torch.Tensor, f_s_aug: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
    """Eq. 10: latent-direction relation distillation for one feature layer; scalar >= 0.

    Args:
        f_t, f_t_aug: teacher features of C_t(w_i) and of C_t(w_i, w_i + alpha d_j; k), ``[N, C_t, H, W]``.
        f_s, f_s_aug: the student's, ``[N, C_s, H, W]`` (channel counts may differ from the teacher's).
        temperature: divides the similarities.
    Each feature is flattened and L2-normalised; ``A_ij = <f_i, f'_j> / temperature`` (``[N, N]``); ``M = softmax_j
    A``; returns ``KL(M^t || M^s) = sum_j M^t_ij (log M^t_ij - log M^s_ij)`` averaged over i. It differs from the
    paper's ``-sum M^t log M^s`` by the teacher's entropy (no gradient), so it is 0 when the relations agree.
    Normalising is kdpipe's choice: the paper writes a plain dot product, whose size grows with C * H * W and
    saturates the softmax to one-hot rows (cosine similarity as in Tung & Mori's similarity-preserving KD).
    """
    def log_relation(f: torch.Tensor, f_aug: torch.Tensor) -> torch.Tensor:
        a = F.normalize(f.flatten(1).float(), dim=1) @ F.normalize(f_aug.flatten(1).float(), dim=1).t()
        return F.log_softmax(a / temperature, dim=1)

    log_m_t, log_m_s = log_relation(f_t, f_t_aug), log_relation(f_s, f_s_aug)
    return (log_m_t.exp() * (log_m_t - log_m_s)).sum(dim=1).mean()


@dataclass
class DirectionDictionary:
    """Seed 003's dictionary {d_j} of latent directions, each tied to ws layers (Sec. 3.5).

    vectors: ``[M, w_dim]`` float32 (added to w as ``w + alpha * d``); layers: ``[M, num_ws]`` bool, the ws layers
    the direction acts on (``C(w_i, w_i + alpha d_j; k)``).
    """

    vectors: torch.Tensor
    layers: torch.Tensor

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def to(self, device: torch.device) -> DirectionDictionary:
        return DirectionDictionary(self.vectors.to(device), self.layers.to(device))

    def shift(self, ws: torch.Tensor, index: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """``ws`` ``[N, num_ws, w_dim]`` with ``alpha[i] * d_index[i]`` added on the layers of ``d_index[i]``;
        index ``[N]`` long, alpha ``[N]`` float."""
        mask = self.layers[index].to(ws.dtype)[:, :, None]  # [N, num_ws, 1]
        return ws + alpha[:, None, None] * mask * self.vectors[index][:, None, :]


def pca_directions(G: Generator, n_components: int, n_samples: int) -> DirectionDictionary:
    """The top ``n_components`` principal directions of W = G.mapping(z) over seeds ``0..n_samples-1`` (NVlabs
    seed -> z), each scaled to one standard deviation of W along it, and each tied to one ws layer: ``M =
    n_components * num_ws`` entries (the dictionary when no pipeline directions are given)."""
    from kdpipe.pipeline.latents import z_from_seeds

    device = G.mapping.w_avg.device
    with torch.no_grad():
        w = G.mapping(z_from_seeds(range(n_samples), G.z_dim).to(device))[:, 0].double().cpu()
    w = w - w.mean(dim=0)
    _, s, vh = torch.linalg.svd(w, full_matrices=False)
    k = min(n_components, vh.shape[0])
    vecs = (vh[:k] * (s[:k, None] / (n_samples - 1) ** 0.5)).float()  # [k, w_dim], length = std along it
    num_ws = G.num_ws
    eye = torch.eye(num_ws, dtype=torch.bool)
    return DirectionDictionary(vecs.repeat_interleave(num_ws, dim=0), eye.repeat(k, 1))


def load_directions(paths: list, num_ws: int, w_dim: int) -> DirectionDictionary:
    """Directions from pipeline ``directions/direction.json`` files (binary: its ``vector``; bins: every populated
    per-bin vector), each on that file's ``layers`` ``[start, end)`` (clipped to ``num_ws``).

    Raises: ConfigError naming a file that is missing, unreadable, or whose vectors are not ``[w_dim]``.
    """
    vectors, layers = [], []
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text())
            if doc.get("kind") == "bins":
                vecs = np.asarray(doc["vectors"], np.float32).reshape(-1, w_dim)
                vecs = vecs[np.asarray(doc["targets"]).reshape(-1) >= 0]
            else:
                vecs = np.asarray(doc["vector"], np.float32).reshape(1, w_dim)
            start, end = (doc.get("layers") or [0, num_ws])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"loss.ld_directions: {str(p)!r} is not a readable kdpipe direction.json with "
                              f"{w_dim}-d vectors ({type(exc).__name__}: {exc}); pass OUT/<task>/directions/"
                              "direction.json") from None
        mask = torch.zeros(num_ws, dtype=torch.bool)
        mask[start:min(end, num_ws)] = True
        vectors.append(torch.from_numpy(vecs))
        layers.append(mask.expand(len(vecs), num_ws))
    if not vectors or sum(len(v) for v in vectors) == 0:
        raise ConfigError(f"loss.ld_directions={paths!r} holds no direction vectors")
    return DirectionDictionary(torch.cat(vectors), torch.cat(layers))


def make_lpips(net: str, weights: str | None, device: torch.device, for_training: bool = True):
    """The LPIPS metric of :func:`kdpipe.trainers.metrics.lpips.load_lpips`, or None when its backbone weights are
    unavailable: with a warning when ``for_training`` (``lambda_lpips`` is then ignored), silently otherwise (the
    report then shows no LPIPS)."""
    from kdpipe.trainers.metrics.lpips import MissingWeightsError, load_lpips

    try:
        return load_lpips(net, weights, device=device)
    except MissingWeightsError as exc:
        if for_training:
            warnings.warn(f"{exc}; training without the LPIPS term", stacklevel=2)
        return None


def lpips_loss(metric, img_s: torch.Tensor, img_t: torch.Tensor) -> torch.Tensor:
    """L_lpips of Eq. 3, differentiable in ``img_s``: mean LPIPS of ``metric``'s network (an
    :class:`~kdpipe.trainers.metrics.lpips.LPIPSMetric`, whose ``__call__`` has no gradient) over the batch, with its
    upsampling of images below ``MIN_SIDE`` px. img_s, img_t: ``[N, 3, H, W]`` in [-1, 1]; scalar."""
    from kdpipe.trainers.metrics.lpips import MIN_SIDE

    factor = math.ceil(MIN_SIDE / min(img_s.shape[-2:]))
    if factor > 1:
        img_s, img_t = (F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)
                        for t in (img_s, img_t))
    return metric.net(img_s, img_t).mean()
