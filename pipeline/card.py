"""Dataset card (``README.md`` with YAML front matter as dataset hubs expect): the front matter from
``yaml.safe_dump`` (:func:`front_matter`), the body from ``data_cards/template.md`` plus the task's own notes
``data_cards/<task>.md``. Deterministic: no dates, sorted settings. :func:`check_card` parses it back."""

from __future__ import annotations

import json
import math
from pathlib import Path
from string import Template

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

import kdpipe
from kdpipe.errors import DatasetError

CARD_DIR = Path(__file__).resolve().parent.parent / "data_cards"


# Hugging Face hub ``size_categories`` values (huggingface_hub ``DatasetCardData``; hub validation rejects others).
SIZE_CATEGORIES = (
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T"),
)


def _size_category(n: int) -> str:
    """The hub's size category of a dataset with ``n`` samples (``'n<1K'`` ... ``'n>1T'``)."""
    return next((name for limit, name in SIZE_CATEGORIES if n < limit), "n>1T")


def front_matter(values: dict) -> str:
    """The card's YAML front matter (``---`` ... ``---``), written with ``yaml.safe_dump`` so any licence text or
    teacher file name (quotes, backslashes, colons, newlines) stays valid YAML; keys in a fixed order."""
    meta = {
        "license": "other", "license_name": "teacher-licence", "license_details": values["license"],
        "pretty_name": f"kdpipe {values['task']} dataset", "task_categories": ["image-to-image"],
        "tags": ["synthetic", "stylegan2", "knowledge-distillation", "kdpipe"],
        "size_categories": [values["size_category"]],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "shards/*.tar"}]}],
        "kdpipe": {k: values[k] for k in ("task", "samples", "shards", "seed_min", "seed_max", "teacher",
                                          "teacher_sha256", "teacher_format", "truncation_psi", "truncation_cutoff",
                                          "noise_mode")} | {"kdpipe_version": values["version"]},
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120) + "---\n"


def check_card(text: str, where: str) -> dict:
    """Parse a card's YAML front matter as dataset hubs do; returns it.

    Raises:
        DatasetError: naming ``where``: no front matter, unparseable YAML, not a mapping, or a
            ``size_categories`` value the hub does not accept.
    """
    if not text.startswith("---\n") or "\n---\n" not in text[3:]:
        raise DatasetError(f"card '{where}' has no YAML front matter (--- ... ---); regenerate the card stage")
    head = text[4:text.index("\n---\n", 3) + 1]
    try:
        meta = yaml.safe_load(head)
    except yaml.YAMLError as exc:
        raise DatasetError(f"card '{where}' front matter is not valid YAML ({' '.join(str(exc).split())[:160]}); "
                           "regenerate the card stage") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"card '{where}' front matter is a {type(meta).__name__}, not a mapping")
    valid = {name for _, name in SIZE_CATEGORIES} | {"n>1T"}
    bad = [c for c in meta.get("size_categories") or [] if c not in valid]
    if bad:
        raise DatasetError(f"card '{where}' has size category {bad[0]!r}, which the hub rejects; "
                           f"valid: {', '.join(sorted(valid))}")
    return meta


def _distributions(table: pa.Table) -> str:
    lines = ["| column | mean | std | min | max |", "|---|---|---|---|---|"]
    skip = {"index", "seed", "seed_x1", "seed_x2"}
    for name in table.column_names:
        col = table[name]
        if name in skip or not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            continue
        mean = pc.mean(col).as_py()
        std = pc.stddev(col).as_py()
        lo, hi = pc.min(col).as_py(), pc.max(col).as_py()
        fmt = (lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}")
        lines.append(f"| {name} | {fmt(mean)} | {fmt(std)} | {fmt(lo)} | {fmt(hi)} |")
    for name in table.column_names:  # categorical columns (e.g. class labels, directions)
        col = table[name]
        if pa.types.is_string(col.type) and name not in ("key", "shard") and table.num_rows:
            counts = pc.value_counts(col).to_pylist()
            if len(counts) <= 20:
                parts = ", ".join(f"{c['values']}: {c['counts']}" for c in sorted(counts, key=lambda c: str(c["values"])))
                lines.append(f"\n`{name}`: {parts}")
    return ("\n".join(lines) if len(lines) > 2 else "No per-sample attributes (unfiltered task).") + _identity(table)


IDENTITY_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Histogram edges of the card's identity distances (dlib descriptors; 0.6 = same person); the last bin is open."""


def _identity(table: pa.Table) -> str:
    """The card's identity paragraph for pair datasets with an ``identity_distance`` column, '' for others:
    pairs measured, median and 10/90 % quantiles, the share under 0.6 and a histogram."""
    if "identity_distance" not in table.column_names:
        return ""
    values = [v for v in table["identity_distance"].to_pylist() if v is not None and math.isfinite(v)]
    head = ("\n\nIdentity distance src vs tgt (dlib 128-d face descriptors, Euclidean; < 0.6 = the same person): ")
    if not values:
        return head + f"dlib found no face in any of the {table.num_rows} pairs."
    d = np.asarray(values, dtype=np.float64)
    q10, q50, q90 = np.quantile(d, [0.1, 0.5, 0.9])
    edges = list(IDENTITY_BINS) + [math.inf]
    counts = np.histogram(d, bins=edges)[0]
    hist = ", ".join(f"[{a:g}, {b:g}): {c}" for a, b, c in zip(edges, edges[1:], counts))
    return head + (f"measured on {len(d)} of {table.num_rows} pairs; median {q50:.3f} (10 % {q10:.3f}, 90 % "
                   f"{q90:.3f}); {np.mean(d < 0.6):.1%} under 0.6. Histogram: {hist}.")


def _filters(summaries: dict) -> str:
    rows = []
    for stage, summary in summaries.items():
        for key, value in sorted((summary or {}).get("filters", {}).items()):
            rows.append(f"| {stage} | {key} | {value} |")
    if not rows:
        return "No filters: every rendered sample is kept."
    return "\n".join(["| stage | filter | value |", "|---|---|---|"] + rows)


def render_card(cfg: dict, table: pa.Table, teacher: str, teacher_sha256: str, teacher_format: str,
                summaries: dict) -> str:
    """The card text for a finished dataset.

    Args:
        cfg: the resolved config as a plain dict (``PipelineConfig.to_dict()``); printed in the card.
        table: the manifest (one row per sample).
        summaries: ``{stage: summary dict}`` from the stage states; ``summary['filters']`` feeds the filter table.
    """
    task = cfg["task"]
    seeds = [c for c in table.column_names if c.startswith("seed")]
    seed_min = min((pc.min(table[c]).as_py() for c in seeds), default=None) if table.num_rows else None
    seed_max = max((pc.max(table[c]).as_py() for c in seeds), default=None) if table.num_rows else None
    shards = sorted(set(table["shard"].to_pylist())) if "shard" in table.column_names else []
    settings = {k: v for k, v in cfg.items() if k not in ("runtime", "description", "card")}
    # The checkpoint's local path stays private (and out of the bytes): name and sha256 identify the teacher.
    settings["teacher"] = {k: v for k, v in settings["teacher"].items() if k != "generator"}
    if "identity_distance" not in table.column_names and "pairs" in settings:  # not measured: the card is as
        settings["pairs"] = {k: v for k, v in settings["pairs"].items()  # it was before these settings existed
                             if k not in ("identity", "max_identity_distance")}
    task_doc_path = CARD_DIR / f"{task}.md"
    tc = cfg["teacher"]
    values = dict(
        task=task, samples=table.num_rows, shards=len(shards), size_category=_size_category(table.num_rows),
        seed_min=seed_min, seed_max=seed_max, teacher=teacher, teacher_sha256=teacher_sha256,
        teacher_format=teacher_format, truncation_psi=tc["truncation_psi"],
        truncation_cutoff=tc["truncation_cutoff"],  # YAML null in the front matter, "null" in the body
        noise_mode=tc["noise_mode"], version=kdpipe.__version__,
        license=cfg["card"]["license"],
        description=(cfg["card"]["description"] or cfg.get("description") or "").strip(),
        teacher_note=(" **This teacher is an untrained built-in network: the data are for tests only.**"
                      if teacher_format == "builtin" else ""),
        settings=json.dumps(settings, indent=2, sort_keys=True), filters=_filters(summaries),
        distributions=_distributions(table),
        task_doc=task_doc_path.read_text().strip() if task_doc_path.exists() else "",
        last_shard=shards[-1].rsplit("-", 1)[-1].removesuffix(".tar") if shards else "000000",
    )
    body_values = dict(values, truncation_cutoff="null" if tc["truncation_cutoff"] is None else tc["truncation_cutoff"],
                       front_matter=front_matter(values))
    return Template((CARD_DIR / "template.md").read_text()).substitute(body_values)
