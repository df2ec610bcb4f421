"""``kdpipe eval``: run registered metrics on a generated set against a reference, and record the results.

Outputs in ``out_dir``: ``eval-<UTC time>.json`` (one file per evaluation; atomic), one row appended to
``metrics.jsonl`` (``{"step"?, "eval/<name>": value, ...}``; the run's own log for students), and
``eval-<UTC time>.png``, a grid of the first 8 inputs (translations), generated and reference images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import kdpipe
from kdpipe.errors import ConfigError
from kdpipe.fsutil import atomic_write_text
from kdpipe.images import to_float
from kdpipe.trainers.metrics.cache import FeatureCache, content_hash
from kdpipe.trainers.metrics.context import EvalContext, EvalOptions
from kdpipe.trainers.metrics.registry import parse_metrics
from kdpipe.trainers.metrics.sources import ImageSet

FEATURE_METRICS = ("fid", "kid", "pr")
"""Metrics computed on extracted features (their JSON rows name the extractor and its sha256)."""


def assign_labels(s: ImageSet, classifier: str) -> ImageSet:
    """``s`` with labels = the rounded value of ``classifier``'s first attribute (e.g. ``digit``), when it has none."""
    if s.labels is not None:
        return s
    from kdpipe.pipeline.attributes.registry import build_classifier

    clf = build_classifier(classifier)
    values = clf(to_float(s.images)).values[clf.attributes[0]]
    return ImageSet(s.images, s.description + f", classes by {classifier}", np.round(values).astype(np.int64),
                    s.inputs, {**s.info, "labels_from": classifier})


def run_metrics(ctx: EvalContext, metrics: str) -> list[dict]:
    """One row per metric: ``{"metric", "value" (its first number), "values", "n", "reference", ...}``."""
    rows = []
    for metric in parse_metrics(metrics):
        values = metric.load()(ctx)
        row = {"metric": metric.name, "value": next(iter(values.values())), "values": values,
               "n": len(ctx.generated), "n_reference": len(ctx.reference) if ctx.reference is not None else None,
               "reference": ctx.reference.description if ctx.reference is not None else None, "seed": ctx.options.seed}
        if metric.name in FEATURE_METRICS:
            ext = ctx.extractor()
            row.update(feature_extractor=ext.kind, feature_extractor_sha256=ext.sha256)
        rows.append(row)
    return rows


def _grid(path: Path, ctx: EvalContext) -> None:
    from kdpipe.trainers.core.loop import save_image_grid

    hw = ctx.generated.images.shape[-2:]
    rows = []
    if ctx.generated.inputs is not None and ctx.generated.inputs.shape[-2:] == hw:
        rows += [to_float(ctx.generated.inputs[:8, i:i + 3]) for i in range(0, ctx.generated.inputs.shape[1], 3)]
    rows.append(to_float(ctx.generated.images[:8]))
    if ctx.reference is not None and ctx.reference.images.shape[-2:] == hw:  # other sizes: not in the grid
        rows.append(to_float(ctx.reference.images[:8]))
    k = min(r.shape[0] for r in rows)
    save_image_grid(path, [r[:k] for r in rows])


def evaluate(generated: ImageSet, reference: ImageSet | None, metrics: str, options: EvalOptions,
             out_dir: str | Path | None = None, cache: FeatureCache | None = None,
             label_classifier: str | None = None, step: int | None = None) -> dict:
    """Compute ``metrics`` ("fid,kid,pr,...") of ``generated`` against ``reference``.

    label_classifier: give unlabelled sets classes from this classifier (per-class mFID/mKID, rc-fc).
    out_dir: where the JSON, the ``metrics.jsonl`` row and the PNG grid go (None = nothing written).
    step: the student's training step, recorded in the ``metrics.jsonl`` row.
    Returns the result document (also the JSON file's content). Raises ConfigError / MissingWeightsError /
    DatasetError from the metrics and sources.
    """
    if len(generated) == 0:
        raise ConfigError("the generated set is empty; check --n or the source")
    if label_classifier:
        generated = assign_labels(generated, label_classifier)
        reference = assign_labels(reference, label_classifier) if reference is not None else None
    ctx = EvalContext(generated, reference, options, cache)
    t0 = time.perf_counter()
    rows = run_metrics(ctx, metrics)
    doc = {
        "kdpipe_version": kdpipe.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "generated": {"description": generated.description, "n": len(generated),
                      "sha256": content_hash(generated.images), **generated.info},
        "reference": None if reference is None else {"description": reference.description, "n": len(reference),
                                                     "sha256": content_hash(reference.images), **reference.info},
        "options": {k: v for k, v in vars(options).items() if k != "progress"},
        "results": rows, "feature_throughput": ctx.throughput, "seconds": time.perf_counter() - t0,
        "cache": None if cache is None else {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses},
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        now = time.time()  # names sort in time order: UTC second, then microseconds within it
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{int(now * 1e6) % 1_000_000:06d}"
        doc["json"] = str(out / f"eval-{stamp}.json")
        atomic_write_text(out / f"eval-{stamp}.json", json.dumps(doc, indent=1, default=float) + "\n")
        _grid(out / f"eval-{stamp}.png", ctx)
        record = {**({"step": step} if step is not None else {}),
                  **{f"eval/{k}": v for r in rows for k, v in r["values"].items()}, "eval/json": doc["json"]}
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
    return doc


def summary_lines(doc: dict) -> list[str]:
    """Human lines: ``name = value`` per value, then the feature throughput."""
    lines = [f"generated: {doc['generated']['description']} (n={doc['generated']['n']})"]
    if doc["reference"]:
        lines.append(f"reference: {doc['reference']['description']} (n={doc['reference']['n']})")
    for r in doc["results"]:
        lines += [f"  {k} = {v:.6g}" if isinstance(v, float) else f"  {k} = {v}" for k, v in r["values"].items()]
    for which, st in doc["feature_throughput"].items():
        if "images_per_s" in st:
            lines.append(f"features ({which}): {st['images']} images in {st['seconds']:.2f} s = "
                         f"{st['images_per_s']:.1f} images/s")
        else:
            lines.append(f"features ({which}): from the cache")
    if doc.get("json"):
        lines.append(f"wrote {doc['json']}")
    return lines
