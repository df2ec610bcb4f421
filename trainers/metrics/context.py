"""What a metric sees: the generated set, the reference set, options, and their features (extracted once, cached).

A metric is a function ``compute(ctx: EvalContext) -> dict[str, float]`` (names -> values) registered in
:mod:`kdpipe.trainers.metrics.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from kdpipe.errors import ConfigError
from kdpipe.images import to_float
from kdpipe.trainers.metrics.cache import FeatureCache, content_hash
from kdpipe.trainers.metrics.sources import ImageSet


@dataclass
class EvalOptions:
    """Settings of one evaluation (the CLI options of ``kdpipe eval``)."""

    features: str = "inception"
    """Feature extractor for FID/KID/PR: ``inception`` (torch-fidelity's Inception-v3) or ``digits``."""
    inception_weights: str | None = None
    """``weights-inception-2015-12-05-6726825d.pth``; None = torch hub's checkpoint cache."""
    device: str = "cpu"
    """Where features and LPIPS run (``cpu``, ``cuda:N``)."""
    batch_size: int = 64
    """Images per feature / LPIPS forward."""
    kid_subsets: int = 100
    """KID: number of random subsets (torch-fidelity's default)."""
    kid_subset_size: int = 1000
    """KID: images per subset, clamped to the smaller set's size."""
    pr_k: int = 3
    """Neighbourhood size k of precision/recall (Kynkaanniemi et al. 2019: 3)."""
    lpips_net: str = "alex"
    lpips_weights: str | None = None
    """torchvision ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``; None = torch hub's checkpoint cache."""
    classifier: str = "digit"
    """Attribute classifier: a registry name (``digit``, ``stroke``, ``gender``...) or ``module:Name``."""
    attribute: str | None = None
    """Which of the classifier's attributes (None = its first)."""
    min_confidence: float = 0.5
    """Attribute transfer counts an image only when the classifier's confidence is at least this."""
    fc_fit: str = "kdpipe.trainers.metrics.attribute:fit_digit_classifier"
    """FC (seed 000): ``module:function(images [N,3,H,W] in [-1,1], labels [N]) -> predict(images) -> labels``."""
    seed: int = 0
    """Seeds KID's subsets and anything else random in the metrics."""
    progress: bool = False


@dataclass
class EvalContext:
    """generated / reference sets, options and a feature cache; :meth:`features` extracts once per set."""

    generated: ImageSet
    reference: ImageSet | None
    options: EvalOptions
    cache: FeatureCache | None = None
    throughput: dict = field(default_factory=dict)
    _features: dict = field(default_factory=dict)
    _extractor: object = None

    def require_reference(self, metric: str) -> ImageSet:
        """The reference set. Raises ConfigError naming ``metric`` when there is none."""
        if self.reference is None:
            raise ConfigError(f"metric {metric!r} compares against a reference; pass --reference")
        return self.reference

    def extractor(self):
        """The feature extractor of ``options.features`` (built once)."""
        from kdpipe.trainers.metrics.features import get_extractor

        if self._extractor is None:
            self._extractor = get_extractor(self.options.features, self.options.inception_weights,
                                            self.options.device)
        return self._extractor

    def features(self, which: str) -> np.ndarray:
        """Features ``[N, D]`` of ``which`` ("generated" | "reference"), through the cache when there is one."""
        from kdpipe.trainers.metrics.features import extract_features

        if which not in self._features:
            images = self.generated.images if which == "generated" else self.require_reference("features").images
            ext = self.extractor()
            stats: dict = {}

            def compute() -> np.ndarray:
                return extract_features(images, extractor=ext, batch_size=self.options.batch_size,
                                        progress=self.options.progress, stats=stats)

            if self.cache is None:
                feats = compute()
            else:
                feats = self.cache.get_or_compute(content_hash(images), ext.kind, ext.sha256, compute)
            self._features[which] = feats
            self.throughput[which] = stats or {"cached": True}
        return self._features[which]

    def floats(self, which: str) -> torch.Tensor:
        """``which`` ("generated" | "reference" | "inputs") as float ``[N, C, H, W]`` in [-1, 1]."""
        if which == "inputs":
            if self.generated.inputs is None:
                raise ConfigError("this metric needs the inputs of a translation; evaluate a --student run")
            return to_float(self.generated.inputs)
        s = self.generated if which == "generated" else self.require_reference(which)
        return to_float(s.images)

    def per_class(self, fn: Callable[[np.ndarray, np.ndarray], dict[str, float]], prefix: str) -> dict[str, float]:
        """Seed 000's per-class means (mFID, mKID): ``fn`` on each class's generated and reference features,
        averaged over the classes present in both sets with >= 2 images each, as ``{prefix}<name>``;
        plus ``{prefix}classes``. Empty when either set has no labels."""
        ref = self.reference
        if ref is None or ref.labels is None or self.generated.labels is None:
            return {}
        fa, fb = self.features("generated"), self.features("reference")
        rows = []
        for c in np.intersect1d(self.generated.labels, ref.labels):
            a, b = fa[self.generated.labels == c], fb[ref.labels == c]
            if min(len(a), len(b)) >= 2:
                rows.append(fn(a, b))
        if not rows:
            return {}
        out = {f"{prefix}{k}": float(np.mean([r[k] for r in rows])) for k in rows[0]}
        out[f"{prefix}classes"] = len(rows)
        return out
