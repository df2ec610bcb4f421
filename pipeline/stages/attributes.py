"""Stages ``sample``, ``classify`` and ``directions`` of pair tasks (seed 002 "Dataset generation", steps 1-4).

* ``sample``: seeds ``sample.seed + i`` for ``i < sample.n`` -> truncated ``w`` (layer 0 of ``G.mapping``),
  saved as ``sample/w.npy`` float32 ``[n, w_dim]`` and ``sample/seeds.npy`` int64 ``[n]``.
* ``classify``: renders each seed (the same uint8 image that would be stored), classifies it at
  ``sample.resolution``; resumable parquet parts ``classify/part-NNNNNN.parquet`` (one row per sample: index,
  seed, valid, face probability and box, each attribute's value and confidence).
* ``directions``: labels from :mod:`kdpipe.pipeline.attributes.labels`, then a direction in W
  (:func:`kdpipe.pipeline.attributes.directions.find_direction`: mean-diff = seed 002, logreg, svm = InterFaceGAN),
  optionally made orthogonal to other attributes' directions (InterFaceGAN conditional manipulation), or per-bin
  "+k / -k bins" vectors for ``bins`` attributes (seed 002 age). Saved to ``directions/direction.json`` with the
  fingerprints of its inputs. Stops with the counts when too few samples pass the face filter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from kdpipe.pipeline.attributes.labels import classify_images, continuous_thresholds, labels, make_classifier, usable
from kdpipe.pipeline.attributes.directions import age_bin_directions, find_direction, project_out
from kdpipe.errors import ConfigError, KdpipeError
from kdpipe.fsutil import atomic_write, atomic_write_bytes
from kdpipe.pipeline.render import Renderer
from kdpipe.pipeline.runner.sharded import ShardedStage
from kdpipe.pipeline.runner.shards import encode_npy, record_done
from kdpipe.pipeline.stages.reduce import read_parquet


CLASSIFY_BLOCK = 16  # images per classifier call in `classify`, aligned to the part start


class NotEnoughSamplesError(KdpipeError):
    """Too few classified samples pass the filters to find a direction (e.g. the teacher draws no faces)."""


def renderer_for(ctx) -> Renderer:
    """The stage's renderer: the context's teacher, device and config."""
    return Renderer.from_config(ctx.teacher().G, ctx.device, ctx.cfg)


def uint8_to_float(images: np.ndarray) -> torch.Tensor:
    """``[N, H, W, 3]`` uint8 -> ``[N, 3, H, W]`` float32 in [-1, 1] (inverse of the NVlabs uint8 mapping)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


class SampleStage:
    """``sample``: truncated w of ``sample.n`` seeds (see module docstring)."""

    name = "sample"
    sections = ("teacher", "sample")
    schema_version = 1
    device_dependent = True
    sharded = False

    def outputs(self, ctx) -> list[Path]:
        return [ctx.out / "sample"]

    def run(self, ctx) -> dict:
        sc = ctx.cfg["sample"]
        seeds = np.arange(sc["seed"], sc["seed"] + sc["n"], dtype=np.int64)
        r = renderer_for(ctx)
        w = torch.cat([r.ws_from_seeds(seeds[a:a + 4096].tolist())[:, 0].cpu() for a in range(0, len(seeds), 4096)])
        (ctx.out / "sample").mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(ctx.out / "sample" / "seeds.npy", encode_npy(seeds))
        atomic_write_bytes(ctx.out / "sample" / "w.npy", encode_npy(w.numpy().astype(np.float32)))
        return {"n": int(len(seeds)), "seed_min": int(seeds[0]), "seed_max": int(seeds[-1])}


class ClassifyStage(ShardedStage):
    """``classify``: per-sample attributes in resumable parquet parts (see module docstring)."""

    name = "classify"
    sections = ("teacher", "sample", "attribute", "classify")
    schema_version = 1
    unit = "parts"

    def shard_dir(self, ctx) -> Path:
        return ctx.out / "classify"

    def part_name(self, ctx, k: int) -> str:
        return f"part-{k:06d}.parquet"

    def n_items(self, ctx) -> int:
        return ctx.cfg["sample"]["n"]

    def shard_size(self, ctx) -> int:
        return ctx.cfg["classify"]["part_size"]

    def write_one(self, ctx, k, indices, path, progress) -> None:
        sc = ctx.cfg["sample"]
        classifier = self._classifier(ctx)
        r = renderer_for(ctx)
        seeds = [sc["seed"] + i for i in indices]
        step = CLASSIFY_BLOCK  # fixed, not runtime.batch_size: classifier output may depend on batch composition
        parts = []
        for a in range(0, len(seeds), step):
            images = uint8_to_float(r.images(r.ws_from_seeds(seeds[a:a + step])))
            parts.append(classify_images(classifier, images, sc["resolution"]))
            progress.update(len(seeds[a:a + step]))
        cols = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        table = pa.table({"index": np.asarray(list(indices), dtype=np.int64), "seed": np.asarray(seeds, np.int64),
                          **cols})
        atomic_write(path, lambda f: pq.write_table(table, f, compression="zstd"))
        record_done(path, len(seeds), ctx.fingerprint)

    def _classifier(self, ctx):
        if getattr(self, "_clf", None) is None:
            self._clf = make_classifier(ctx.cfg, ctx.device)
        return self._clf


def read_classified(out: Path) -> dict[str, np.ndarray]:
    """All classify parts concatenated, as columns (index order)."""
    parts = sorted((out / "classify").glob("part-*.parquet"))
    table = pa.concat_tables([read_parquet(p) for p in parts])
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


def layer_range(cfg: dict, num_ws: int) -> list[int]:
    """Layers the edit applies to: ``directions.layers = [start, end)`` clipped to ``num_ws`` (seed 002: 0-7)."""
    start, end = cfg["directions"]["layers"]
    return list(range(start, min(end, num_ws)))


class DirectionsStage:
    """``directions``: the attribute's direction(s) in W (see module docstring)."""

    name = "directions"
    sections = ("attribute", "directions")
    schema_version = 1
    device_dependent = False
    sharded = False

    def outputs(self, ctx) -> list[Path]:
        return [ctx.out / "directions"]

    def run(self, ctx) -> dict:
        cfg, dc, ac = ctx.cfg, ctx.cfg["directions"], ctx.cfg["attribute"]
        cols = read_classified(ctx.out)
        w = np.load(ctx.out / "sample" / "w.npy")
        n, ok = len(w), usable(cols, cfg)
        face_msg = (f" with face probability >= {ac['min_face_probability']}"
                    if "face" in cols and ac["min_face_probability"] is not None else "")
        if ok.sum() < 4:
            raise NotEnoughSamplesError(
                f"only {int(ok.sum())} of {n} classified samples are usable{face_msg}: the teacher "
                f"'{ctx.teacher().name}' does not seem to draw what classifier '{ac['classifier']}' expects; "
                "check the teacher, or lower attribute.min_face_probability")
        thresholds = continuous_thresholds(cols, cfg) if ac["kind"] == "continuous" else None
        lab, conf = labels(cols, cfg, thresholds)
        common = dict(method=dc["method"], confidence=conf, min_confidence=ac["min_confidence"],
                      test_fraction=dc["test_fraction"], seed=0, attribute=ac["name"])
        try:
            if ac["kind"] == "bins":
                n_bins = len(ac["age_bin_edges"]) - 1
                found = age_bin_directions(w, lab, n_bins=n_bins, steps=dc["age_steps"], min_count=dc["min_count"],
                                           **common)
                doc = {"kind": "bins", **found.to_dict()}
                report = {"counts": found.report["counts"],
                          "entries": [{k: e[k] for k in ("source", "step", "target", "held_out_accuracy", "norm")}
                                      for e in found.report["entries"]]}
            else:
                found = find_direction(w, lab, source=0, target=1, **common)
                others = [self._other_direction(w, cols, cfg, name) for name in dc["condition_on"]]
                if others:
                    found = project_out(found, others)
                doc = {"kind": "binary", **found.to_dict()}
                report = {k: found.report[k] for k in ("counts", "held_out_accuracy", "norm", "n_train", "n_test")}
        except KdpipeError as e:
            raise NotEnoughSamplesError(f"{e} ({int(ok.sum())} of {n} samples usable{face_msg})") from None
        doc.update(thresholds=thresholds, class_names=ac["class_names"], layers=dc["layers"],
                   made_from={k: ctx.fingerprints[k] for k in ("sample", "classify") if k in ctx.fingerprints})
        (ctx.out / "directions").mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(ctx.out / "directions" / "direction.json", json.dumps(doc, indent=1).encode())
        usable_count = int(ok.sum())
        return {"usable": usable_count, "classified": int(n), "report": report,
                "filters": {"sample.classified": int(n), "sample.usable": usable_count,
                            "sample.usable_rate": round(usable_count / max(n, 1), 4)}}

    @staticmethod
    def _other_direction(w, cols, cfg, name):
        if name not in cols:
            raise ConfigError(f"directions.condition_on: {name!r} is not a classifier output "
                              f"({sorted(c for c in cols if not c.endswith('_confidence'))})")
        value = np.asarray(cols[name], dtype=np.float64)
        ok = usable(cols, cfg) & np.isfinite(value)
        lab = np.where(ok, (value >= np.median(value[ok])).astype(np.int64), -1)
        return find_direction(w, lab, source=0, target=1, method=cfg["directions"]["method"], attribute=name)
