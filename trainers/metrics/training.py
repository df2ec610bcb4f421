"""``kdpipe train ... --eval-every N --eval-metrics fid,kid``: the same metrics during training (off by default).

Eval set: the first ``loop.eval_images`` samples of the data order (``batches(DataPosition())``, a separate
iterator; the training stream, its position and the RNG states are untouched, so resume stays exact). It is a
training-distribution check, not a held-out score -- run ``kdpipe eval --student`` on held-out data for that.
Each evaluation writes one ``metrics.jsonl`` record ``{"step", "eval/<name>": value}`` (rank 0 only). The
reference's features are extracted once per run.

Per trainer, what is generated and what it is compared with:

* ``pix2pixhd``: G_ema (or G) on ``batch["input"]`` vs ``batch["target"]``;
* ``stylegan2``: G_ema on fixed z (``Generator().manual_seed(loop.seed)``, psi 1) vs ``batch["image"]``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from kdpipe.errors import ConfigError


def _pix2pixhd(trainer, batch, z_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    from kdpipe.trainers.core.loop import unwrap

    G = trainer.ema.module if trainer.ema is not None else unwrap(trainer.G)
    return G(batch["input"].to(trainer.device)).float().cpu(), batch["target"].float()


def _stylegan2(trainer, batch, z_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    real = batch["image"].float()
    z = torch.randn([real.shape[0], trainer.G_ema.z_dim], generator=z_gen).to(trainer.device)
    return trainer.G_ema(z).float().cpu(), real


PAIRS: dict[str, Callable[[Any, dict, torch.Generator], tuple[torch.Tensor, torch.Tensor]]] = {
    "pix2pixhd": _pix2pixhd,
    "stylegan2": _stylegan2,
}
"""Trainer name -> ``(trainer, batch, z_gen) -> (generated [B,3,H,W], reference [B,3,H,W])`` in [-1, 1]; ``z_gen``
is a CPU generator reseeded at every evaluation (latents are the same at every step)."""


class TrainingEval:
    """Callable ``(trainer, step) -> {"eval/<name>": value}``; built once per :func:`fit` when eval_every > 0."""

    def __init__(self, trainer, loop, batches: Callable):
        from kdpipe.trainers.metrics.context import EvalOptions
        from kdpipe.trainers.metrics.registry import parse_metrics

        if trainer.name not in PAIRS:
            raise ConfigError(f"loop.eval_every: in-training evaluation supports {', '.join(PAIRS)}, not "
                              f"{trainer.name!r}; set loop.eval_every=0 and run `kdpipe eval --student` instead")
        parse_metrics(loop.eval_metrics)  # unknown names fail before training starts
        self.loop, self.batches, self.pair = loop, batches, PAIRS[trainer.name]
        self.options = EvalOptions(features=loop.eval_features, inception_weights=loop.eval_inception_weights or None,
                                   device="cpu", seed=loop.seed, progress=False)
        self._eval_batches: list | None = None
        self._reference = None
        self._reference_features = None

    def _collect(self) -> list:
        from kdpipe.trainers.core.data import DataPosition

        out, n, it = [], 0, self.batches(DataPosition())
        while n < self.loop.eval_images:
            batch, _ = next(it)
            out.append(batch)
            n += next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor))
        return out

    @torch.no_grad()
    def __call__(self, trainer, step: int) -> dict[str, float]:
        from kdpipe.images import to_uint8
        from kdpipe.trainers.metrics.context import EvalContext
        from kdpipe.trainers.metrics.evaluate import run_metrics
        from kdpipe.trainers.metrics.sources import ImageSet

        if self._eval_batches is None:
            self._eval_batches = self._collect()
        devices = [trainer.device] if torch.device(trainer.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # evaluation leaves the training RNG streams as they were
            z_gen = torch.Generator().manual_seed(self.loop.seed)
            pairs = [self.pair(trainer, b, z_gen) for b in self._eval_batches]
        n = self.loop.eval_images
        u8 = lambda x: to_uint8(x).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        if self._reference is None:
            self._reference = ImageSet(u8(torch.cat([r for _, r in pairs])[:n]), "first training samples")
        ctx = EvalContext(ImageSet(u8(torch.cat([g for g, _ in pairs])[:n]), f"step {step}"), self._reference,
                          self.options)
        if self._reference_features is not None:
            ctx._features["reference"] = self._reference_features
        rows = run_metrics(ctx, self.loop.eval_metrics)
        self._reference_features = ctx._features.get("reference")
        return {f"eval/{k}": v for r in rows for k, v in r["values"].items()}
