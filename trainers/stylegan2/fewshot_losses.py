"""Relation distillation losses of few-shot adaptation: SSIM-A, momentum queue, relation KL (seed 001; CDC).

Seed 001 ("Exploiting knowledge distillation for few-shot image generation"), Sec. 3.2:

* :func:`ssim_a` -- Eq. 5, SSIM between activation maps ``A [C, H, W]`` (windowed means, variances and
  covariance per channel; the map averaged over channels and positions);
* :func:`relation_logits` -- the similarities of Eq. 6 of query ``G^l(z_i)`` to its keys ``K^{i,l}`` (Eq. 7: the
  other samples of the batch, then a queue of earlier momentum activations);
* :class:`MomentumQueue` -- the queue of Eq. 7: the last ``k`` activations of the momentum generator ``G_M`` (and,
  for the source side, the frozen source ``G_S``'s activations of the same latents);
* :func:`relation_kl` -- Eq. 8 (and CDC's Eq. 3): ``KL(softmax(source) || softmax(target))``.

The CDC baseline (Ojha et al. 2021, seed 001's Eq. 2-3) is the same KL over cosine similarities
(:func:`cosine_similarity`) of flattened activations, with the batch only as keys.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ssim_window(size: int, sigma: float | None) -> torch.Tensor:
    """1-D window ``[size]`` float32 summing to 1: Gaussian of std ``sigma`` centred on ``size // 2`` (as
    pytorch-msssim's ``_fspecial_gauss_1d``), or uniform (box) when ``sigma`` is None."""
    if size < 1:
        raise ValueError(f"SSIM window size must be >= 1, got {size}")
    if sigma is None:
        return torch.full([size], 1.0 / size)
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _filter(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Separable depthwise ``valid`` filtering of ``x [N, C, H, W]`` by ``win [k]`` along H then W."""
    c, k = x.shape[1], win.numel()
    w = win.to(x.device, x.dtype)
    x = F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim_a(queries: torch.Tensor, keys: torch.Tensor, win_size: int = 11, win_sigma: float | None = 1.5,
           c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> torch.Tensor:
    """SSIM-A (seed 001 Eq. 5) of every query against every key: ``[B, K]`` float, in [-1, 1].

    ``(2 mu_1 mu_2 + c1)(2 sigma_12 + c2) / ((mu_1^2 + mu_2^2 + c1)(sigma_1^2 + sigma_2^2 + c2))`` with the means,
    variances and covariance taken over a window at each position of each channel (``valid`` positions only, the
    window shrunk to ``min(win_size, H, W)`` for maps smaller than it), averaged over channels and positions.
    With a Gaussian window of ``win_size`` 11, ``win_sigma`` 1.5 and ``c1, c2 = (0.01 L)^2, (0.03 L)^2`` this is
    pytorch-msssim's ``ssim(..., data_range=L, size_average=False)`` (Wang et al. 2004 SSIM) on maps >= 11 px;
    ``win_sigma=None`` is a uniform window (the paper's "mean of a fixed window centered at each pixel").

    Args:
        queries: activations ``[B, C, H, W]`` float. keys: ``[K, C, H, W]`` (same C, H, W).
        win_size, win_sigma: the window (sigma None = box). c1, c2: Eq. 5's stabilising constants (L = 1).
    Raises: ValueError on mismatched shapes.
    """
    if queries.ndim != 4 or keys.ndim != 4 or queries.shape[1:] != keys.shape[1:]:
        raise ValueError(f"SSIM-A needs queries [B, C, H, W] and keys [K, C, H, W] of the same C, H, W; got "
                         f"{list(queries.shape)} and {list(keys.shape)}")
    b, k = queries.shape[0], keys.shape[0]
    win = ssim_window(min(win_size, *queries.shape[2:]), win_sigma)
    both = torch.cat([queries, keys])
    mu = _filter(both, win)
    var = _filter(both * both, win) - mu ** 2
    mu_q, mu_k, var_q, var_k = mu[:b, None], mu[None, b:], var[:b, None], var[None, b:]  # [B, 1, ...], [1, K, ...]
    prod = (queries[:, None] * keys[None]).flatten(0, 1)  # [B * K, C, H, W]
    cov = _filter(prod, win).unflatten(0, (b, k)) - mu_q * mu_k
    ssim_map = ((2 * mu_q * mu_k + c1) * (2 * cov + c2)) / ((mu_q ** 2 + mu_k ** 2 + c1) * (var_q + var_k + c2))
    return ssim_map.flatten(2).mean(-1)


def cosine_similarity(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """CDC's similarity (seed 001 Eq. 2): cosine between flattened activations, ``[B, K]`` float in [-1, 1].

    Args: queries ``[B, ...]``, keys ``[K, ...]`` (same trailing shape).
    """
    return F.normalize(queries.flatten(1), dim=1) @ F.normalize(keys.flatten(1), dim=1).T


def relation_logits(queries: torch.Tensor, similarity: Similarity, queue: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Similarities of each query to its keys (seed 001 Eq. 7): ``[B, B - 1 + Q]``.

    Row ``i`` holds ``sim(q_i, q_j)`` for ``j != i`` in batch order, then ``sim(q_i, queue_m)`` for the ``Q``
    queued activations, oldest first. Args: queries ``[B, C, H, W]``; queue ``[Q, C, H, W]`` or None (CDC: the
    batch only). Raises: ValueError when there are no keys (B = 1 and no queue).
    """
    b = queries.shape[0]
    keys = queries if queue is None or len(queue) == 0 else torch.cat([queries, queue.to(queries.dtype)])
    if keys.shape[0] < 2:
        raise ValueError("relation distillation needs at least one key: a batch of >= 2 or a non-empty queue")
    sims = similarity(queries, keys)  # [B, B + Q]
    off_diagonal = ~torch.eye(b, keys.shape[0], dtype=torch.bool, device=sims.device)
    return sims[off_diagonal].view(b, keys.shape[0] - 1)


def relation_kl(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """``KL(P_S || P_T)`` of seed 001 Eq. 6 + 8 (CDC Eq. 2-3): softmax over the keys of each row, scalar.

    ``P = softmax(logits, dim=1)`` (no temperature, as the paper); the sum ``P_S (log P_S - log P_T)`` is divided by
    the number of query-key pairs (``torch.nn.KLDivLoss``'s default ``reduction='mean'``, CDC's implementation,
    which the weights alpha = 1e4 of seed 001 and 1e3 of CDC are set for). Zero iff the two rows' softmaxes agree.
    Args: logits ``[B, K]`` float (source side constant, target side differentiable).
    """
    log_p_s = F.log_softmax(source_logits, dim=1)
    log_p_t = F.log_softmax(target_logits, dim=1)
    return F.kl_div(log_p_t, log_p_s, reduction="sum", log_target=True) / log_p_s.numel()


class MomentumQueue:
    """The key queue of seed 001 Eq. 7: per layer, the last ``k`` activations of the momentum generator G_M and
    the source G_S's activations of the same latents, oldest first (MoCo's FIFO; a batch is pushed after the loss
    that used the queue). ``k = 0`` disables it. State (for exact resume): :meth:`state_dict`."""

    def __init__(self, k: int):
        if k < 0:
            raise ValueError(f"queue size must be >= 0, got {k}")
        self.k = int(k)
        self.z: torch.Tensor | None = None
        self.momentum: dict[int, torch.Tensor] = {}
        self.source: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return 0 if self.z is None else self.z.shape[0]

    def push(self, z: torch.Tensor, source: dict[int, torch.Tensor], momentum: dict[int, torch.Tensor]) -> None:
        """Append a batch: ``z [N, z_dim]``; ``source`` / ``momentum``: layer -> ``[N, C, r, r]`` (detached)."""
        if self.k == 0:
            return
        keep = lambda old, new: (new if old is None else torch.cat([old, new]))[-self.k:]  # noqa: E731
        self.z = keep(self.z, z.detach())
        self.source = {l: keep(self.source.get(l), a.detach()) for l, a in source.items()}
        self.momentum = {l: keep(self.momentum.get(l), a.detach()) for l, a in momentum.items()}

    def keys(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(source keys, momentum keys)`` of ``layer``, ``[len, C, r, r]`` each, or ``(None, None)`` if empty."""
        return self.source.get(layer), self.momentum.get(layer)

    def state_dict(self) -> dict[str, Any]:
        """Tensors only (``torch.load(weights_only=True)`` reads it back); layer keys as strings."""
        return {"k": self.k, "z": self.z, "source": {str(l): a for l, a in self.source.items()},
                "momentum": {str(l): a for l, a in self.momentum.items()}}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        """Inverse of :meth:`state_dict`. Raises ValueError when the saved ``k`` differs."""
        if int(state["k"]) != self.k:
            raise ValueError(f"queue state holds k={state['k']}, this queue k={self.k}")
        self.z = None if state["z"] is None else state["z"].to(device)
        self.source = {int(l): a.to(device) for l, a in state["source"].items()}
        self.momentum = {int(l): a.to(device) for l, a in state["momentum"].items()}


def relation_distillation_loss(source: dict[int, torch.Tensor], target: dict[int, torch.Tensor],
                               similarity: Similarity, queue: MomentumQueue | None = None) -> torch.Tensor:
    """``L_dist(G_T, G_S)`` (seed 001 Eq. 8; CDC Eq. 3 when ``queue`` is None): sum over layers of
    :func:`relation_kl` between the source's and the target's :func:`relation_logits`.

    Args:
        source: layer -> ``G_S^l(z) [B, C, r, r]`` (no grad). target: layer -> ``G_T^l(z)``, same keys and shapes.
        similarity: :func:`ssim_a` (seed 001) or :func:`cosine_similarity` (CDC).
        queue: keys beyond the batch: source side from ``queue.source``, target side from ``queue.momentum``.
    Returns: scalar (differentiable w.r.t. ``target``).
    """
    total = torch.zeros([], device=next(iter(target.values())).device)
    for layer, t in target.items():
        q_s, q_m = queue.keys(layer) if queue is not None else (None, None)
        total = total + relation_kl(relation_logits(source[layer], similarity, q_s),
                                    relation_logits(t, similarity, q_m))
    return total
