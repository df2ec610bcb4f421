"""Every metric ``kdpipe eval --metrics`` and ``--eval-metrics`` know, by name.

Adding a metric = a module with ``compute(ctx: EvalContext) -> dict[str, float]`` and one ``Metric(...)`` line
in ``_ALL`` below naming it as ``module:function`` (imported only when the metric is asked for).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from kdpipe.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """name: CLI name; summary: one line (value ranges, source); target: ``module:function``."""

    name: str
    summary: str
    target: str

    def load(self) -> Callable:
        """The compute function (imports its module)."""
        module, _, fn = self.target.partition(":")
        return getattr(importlib.import_module(module), fn)


def parse_metrics(spec: str) -> list[Metric]:
    """``"fid,kid"`` -> the registered metrics, in order. Raises ConfigError for unknown or no names."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ConfigError(f"unknown metric(s) {unknown or spec!r}; choose from {', '.join(METRICS)}")
    return [METRICS[n] for n in names]


_M = "kdpipe.trainers.metrics"
_ALL = (
    Metric("fid", "FID (Heusel et al. 2017; torch-fidelity); per-class mean mFID when both sets have classes "
                  "(seed 000 Table 1)", f"{_M}.fid:compute_fid"),
    Metric("kid", "KID mean/std over subsets, unbiased (Binkowski et al. 2018; torch-fidelity); mKID per class",
           f"{_M}.fid:compute_kid"),
    Metric("pr", "improved precision/recall, k-NN balls (Kynkaanniemi et al. 2019; torch-fidelity)",
           f"{_M}.fid:compute_pr"),
    Metric("lpips-diversity", "intra-cluster LPIPS: generated images clustered to the reference images (the k "
           "targets), mean pairwise LPIPS per cluster (seed 001 Table 2)", f"{_M}.lpips:compute_diversity"),
    Metric("lpips-pair", "mean LPIPS between generated[i] and reference[i], e.g. student vs teacher for the same "
           "seeds (seed 003)", f"{_M}.lpips:compute_pair"),
    Metric("attribute", "attribute transfer: fraction of generated images whose classifier value equals the "
           "reference's (paired) with confidence", f"{_M}.attribute:compute_transfer"),
    Metric("rc-fc", "seed 000's RC (classifier on real, tested on generated) and FC (trained on generated, tested "
           "on real) accuracies", f"{_M}.attribute:compute_rc_fc"),
    Metric("identity", "identity preservation: dlib face-descriptor distance of translated vs source image "
           "(< 0.6 = same person)", f"{_M}.identity:compute"),
)
METRICS: dict[str, Metric] = {m.name: m for m in _ALL}
"""Name -> metric, in the order ``--help`` lists them."""
if len(METRICS) != len(_ALL):
    raise ValueError("two metrics share a name")
