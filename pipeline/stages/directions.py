"""Stage ``directions`` of pair tasks (seed 002 "Dataset generation", steps 3-4): the attribute's direction in W.

Labels from :mod:`kdpipe.pipeline.attributes.labels`, then a direction in W
(:func:`kdpipe.pipeline.attributes.directions.find_direction`: mean-diff = seed 002, logreg = seed 002's released
code, svm = InterFaceGAN), optionally made orthogonal to other attributes' directions (InterFaceGAN conditional
manipulation), or per-bin "+k / -k bins" vectors for ``bins`` attributes (seed 002 age). Saved to
``directions/direction.json`` with the fingerprints of its inputs. Stops with the counts when too few samples
pass the face filter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kdpipe.errors import ConfigError, KdpipeError
from kdpipe.fsutil import atomic_write_text
from kdpipe.pipeline.attributes.age_bins import age_bin_directions
from kdpipe.pipeline.attributes.directions import find_direction, project_out
from kdpipe.pipeline.attributes.labels import continuous_thresholds, labels, usable
from kdpipe.pipeline.config import PipelineConfig
from kdpipe.pipeline.runner.stage import Context, SingleStage
from kdpipe.pipeline.stages.classify import read_classified


class NotEnoughSamplesError(KdpipeError):
    """Too few classified samples pass the filters to find a direction (e.g. the teacher draws no faces)."""


class DirectionsStage(SingleStage):
    """``directions``: the attribute's direction(s) in W (see module docstring)."""

    name = "directions"
    sections = ("attribute", "directions")
    schema_version = 1

    def revisions(self, cfg: PipelineConfig) -> dict:
        """logreg 2: seed 002's released code (``class_weight='balanced'``, 1.5 x raw ``coef_``); directions
        found by revision 1 (unit-norm, unweighted) are redone."""
        return {"logreg": 2} if cfg.directions.method == "logreg" else {}

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.out / "directions"]

    def run(self, ctx: Context, fingerprint: str) -> dict:
        cfg, dc, ac = ctx.cfg, ctx.cfg.directions, ctx.cfg.attribute
        cols = read_classified(ctx.out)
        w = np.load(ctx.out / "sample" / "w.npy")
        n, ok = len(w), usable(cols, ac)
        face_msg = (f" with face probability >= {ac.min_face_probability}"
                    if "face" in cols and ac.min_face_probability is not None else "")
        if ok.sum() < 4:
            raise NotEnoughSamplesError(
                f"only {int(ok.sum())} of {n} classified samples are usable{face_msg}: the teacher "
                f"'{ctx.teacher.name}' does not seem to draw what classifier '{ac.classifier}' expects; "
                "check the teacher, or lower attribute.min_face_probability")
        thresholds = continuous_thresholds(cols, ac) if ac.kind == "continuous" else None
        lab, conf = labels(cols, ac, thresholds)
        common = dict(method=dc.method, confidence=conf, min_confidence=ac.min_confidence,
                      test_fraction=dc.test_fraction, seed=0, attribute=ac.name)
        try:
            if ac.kind == "bins":
                found = age_bin_directions(w, lab, n_bins=len(ac.age_bin_edges) - 1, steps=dc.age_steps,
                                           min_count=dc.min_count, **common)
                doc = {"kind": "bins", **found.to_dict()}
                report = {"counts": found.report["counts"],
                          "entries": [{k: e[k] for k in ("source", "step", "target", "held_out_accuracy", "norm")}
                                      for e in found.report["entries"]]}
            else:
                found = find_direction(w, lab, source=0, target=1, **common)
                others = [_other_direction(w, cols, cfg, name) for name in dc.condition_on]
                if others:
                    found = project_out(found, others)
                doc = {"kind": "binary", **found.to_dict()}
                report = {k: found.report[k] for k in ("counts", "held_out_accuracy", "norm", "n_train", "n_test")}
        except KdpipeError as e:
            raise NotEnoughSamplesError(f"{e} ({int(ok.sum())} of {n} samples usable{face_msg})") from None
        doc.update(thresholds=thresholds, class_names=ac.class_names, layers=dc.layers,
                   made_from={k: ctx.fingerprints[k] for k in ("sample", "classify") if k in ctx.fingerprints})
        (ctx.out / "directions").mkdir(parents=True, exist_ok=True)
        atomic_write_text(ctx.out / "directions" / "direction.json", json.dumps(doc, indent=1))
        usable_count = int(ok.sum())
        return {"usable": usable_count, "classified": int(n), "report": report,
                "filters": {"sample.classified": int(n), "sample.usable": usable_count,
                            "sample.usable_rate": round(usable_count / max(n, 1), 4)}}


def _other_direction(w: np.ndarray, cols: dict, cfg: PipelineConfig, name: str):
    """Direction of another classifier output ``name`` (median split), to project out (InterFaceGAN)."""
    if name not in cols:
        raise ConfigError(f"directions.condition_on: {name!r} is not a classifier output "
                          f"({sorted(c for c in cols if not c.endswith('_confidence'))})")
    value = np.asarray(cols[name], dtype=np.float64)
    ok = usable(cols, cfg.attribute) & np.isfinite(value)
    lab = np.where(ok, (value >= np.median(value[ok])).astype(np.int64), -1)
    return find_direction(w, lab, source=0, target=1, method=cfg.directions.method, attribute=name)
