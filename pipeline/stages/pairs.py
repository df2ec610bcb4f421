"""Stage ``pairs`` (render/select) of attribute-pair tasks (seed 002 "Dataset generation", steps 5-7).

For candidate ``i`` (seed ``pairs.seed + i``, or entry ``i`` of ``pairs.seeds``; truncated ws):

* binary attributes (gender, brightness): render ``G(w + t * scale * delta)`` on the direction's layers for each
  ``t`` in ``pairs.steps`` (default -1, -1/2, 0, 1/2, 1), classify every image, and keep the pair (a, b),
  ``t_a < t_b``, whose images are class 0 and class 1 with confidence >= ``attribute.min_confidence`` and pass
  the face filter; among several, the one closest to the unedited latent (smallest ``|t_a| + |t_b|``, then the
  shorter edit). ``src`` is the class-0 image, ``tgt`` the class-1 image (e.g. female -> male); train the other
  direction by swapping them.
* bins (age): classify ``G(w)``; for its bin k and each step s of ``directions.age_steps`` (+2, -2), render
  ``G(w + scale * delta_{k,s})`` and keep it if it is classified in the target bin; ``src`` is the younger image,
  ``tgt`` the older. With both steps valid, even indices keep +s, odd ones -s (balance).

Candidates without a valid pair are dropped and counted (``stats`` of each shard, the card's filter table).

Identity (issue 14; seed 002 names identity drift as a weakness): when :func:`identity_enabled`, each kept pair's
``identity_distance`` (dlib 128-d descriptors of src and tgt, Euclidean, :mod:`kdpipe.pipeline.attributes.identity`;
null where dlib finds no face) goes into its json and manifest row, and ``pairs.max_identity_distance`` drops pairs
above it (or unmeasured), counted as ``pairs.identity_rejected``. Otherwise nothing of it is computed or written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from kdpipe.errors import ConfigError
from kdpipe.images import hwc_to_float
from kdpipe.pipeline.attributes.labels import FACE_CLASSIFIERS, classify_images, labels, make_classifier, usable
from kdpipe.pipeline.latents import sample_seeds
from kdpipe.pipeline.render import Renderer
from kdpipe.pipeline.runner.sharded import ShardedStage
from kdpipe.pipeline.runner.shards import encode_json, encode_npy, encode_png, write_shard
from kdpipe.pipeline.runner.stage import Context


def layer_range(layers: list[int], num_ws: int) -> list[int]:
    """Layers the edit applies to: ``directions.layers = [start, end)`` clipped to ``num_ws`` (seed 002: 0-7)."""
    start, end = layers
    return list(range(start, min(end, num_ws)))


def choose_pair(lab: np.ndarray, conf: np.ndarray, ok: np.ndarray, steps: list[float], min_conf: float):
    """Index pair ``(a, b)`` into ``steps`` (class 0 at a, class 1 at b, a before b) or None.

    Args:
        lab, conf, ok: ``[len(steps)]`` labels {-1, 0, 1}, confidences, usable mask of one candidate's images.
    """
    best = None
    for a in range(len(steps)):
        for b in range(a + 1, len(steps)):
            if not (ok[a] and ok[b] and lab[a] == 0 and lab[b] == 1 and conf[a] >= min_conf and conf[b] >= min_conf):
                continue
            key = (abs(steps[a]) + abs(steps[b]), steps[b] - steps[a])
            if best is None or key < best[0]:
                best = (key, a, b)
    return None if best is None else best[1:]


IDENTITY_REVISION = 1


def identity_enabled(cfg) -> bool:
    """Whether the pairs stage measures identity: ``pairs.identity`` always, or auto with a built-in face classifier
    (``attribute.classifier`` in face, gender, age, face-attributes) or a ``pairs.max_identity_distance`` filter."""
    pc = cfg.pairs
    if pc.identity == "auto":
        return cfg.attribute.classifier in FACE_CLASSIFIERS or pc.max_identity_distance is not None
    return pc.identity == "always"


def identity_distances(picked: list) -> list[float | None]:
    """Identity distance (rounded to 1e-6) of each picked ``(info, (src, tgt), latents)``; None where there is no
    pair or dlib finds no face in src or tgt. src/tgt: uint8 ``[H, W, 3]``."""
    from kdpipe.pipeline.attributes.identity import embed_faces, embedding_distance

    kept = [p for p in picked if p is not None]
    if not kept:
        return [None] * len(picked)
    src, _ = embed_faces(np.stack([p[1][0] for p in kept]))
    tgt, _ = embed_faces(np.stack([p[1][1] for p in kept]))
    dist = iter(embedding_distance(src, tgt).tolist())
    per_candidate = [None if p is None else next(dist) for p in picked]
    return [None if d is None or not np.isfinite(d) else round(d, 6) for d in per_candidate]


class PairsStage(ShardedStage):
    """``pairs``: filtered attribute pairs in webdataset shards (see module docstring)."""

    name = "pairs"
    sections = ("teacher", "attribute", "pairs")
    schema_version = 1

    def validate(self, cfg, teacher) -> None:
        """``directions.layers`` must start inside the teacher's ws (the rest is checked by the config)."""
        layers = cfg.directions.layers
        if layers[0] >= teacher.G.num_ws:
            raise ConfigError(f"directions.layers: start {layers[0]} >= num_ws {teacher.G.num_ws}")

    def revisions(self, cfg) -> dict:
        """Identity settings, only when identity is measured (:func:`identity_enabled`; ``dag.VIA_REVISIONS``): tasks
        without it keep their fingerprints from before identity existed."""
        if not identity_enabled(cfg):
            return {}
        return {"identity": IDENTITY_REVISION, "max_identity_distance": cfg.pairs.max_identity_distance}

    def n_items(self, ctx: Context) -> int:
        return ctx.cfg.pairs.n

    def shard_size(self, ctx: Context) -> int:
        return ctx.cfg.pairs.shard_size

    def filter_summary(self, stats: dict) -> dict:
        out = dict(stats)
        out["pairs.pass_rate"] = round(stats.get("pairs.kept", 0) / max(stats.get("pairs.candidates", 0), 1), 4)
        return out

    def write_one(self, ctx: Context, k: int, indices: range, path: Path, progress, fingerprint: str) -> None:
        cfg, teacher = ctx.cfg, ctx.teacher
        G, pc, ac = teacher.G, cfg.pairs, cfg.attribute
        direction = json.loads((ctx.out / "directions" / "direction.json").read_text())
        self._clf = getattr(self, "_clf", None) or make_classifier(ac, ctx.device)
        r = Renderer.from_config(G, ctx.device, cfg.teacher, cfg.runtime.batch_size)
        layers = layer_range(cfg.directions.layers, G.num_ws)
        stats = {"pairs.candidates": 0, "pairs.kept": 0, "pairs.no_valid_pair": 0, "pairs.source_unusable": 0}
        identity = identity_enabled(cfg)
        if identity:
            stats["pairs.identity_rejected"] = 0
        samples, rows = [], []
        step = max(1, r.batch_size // max(2, len(pc.steps)))  # candidates per forward
        for a in range(0, len(indices), step):
            chunk = list(indices[a:a + step])
            seeds = {i: sample_seeds(pc.seed, i, 1, pc.seeds)[0] for i in chunk}
            ws = r.ws_from_seeds([seeds[i] for i in chunk]).cpu()
            picked = (self._pick_binary if direction["kind"] == "binary" else self._pick_bins)(
                ctx, r, ws, layers, direction, stats)
            dist = identity_distances(picked) if identity else [None] * len(picked)
            for j, i in enumerate(chunk):
                stats["pairs.candidates"] += 1
                if picked[j] is None:
                    continue
                if identity and pc.max_identity_distance is not None and (
                        dist[j] is None or dist[j] > pc.max_identity_distance):
                    stats["pairs.identity_rejected"] += 1
                    continue
                stats["pairs.kept"] += 1
                info, imgs, lat = picked[j]
                info = dict(info, task=cfg.task, index=i, seed=seeds[i], attribute=ac.name,
                            truncation_psi=cfg.teacher.truncation_psi, teacher=teacher.name,
                            teacher_sha256=teacher.sha256, layers=layers)
                identity_col = {"identity_distance": dist[j]} if identity else {}
                info.update(identity_col)
                lvl, enc = pc.png_compress_level, pc.png_encoder
                samples.append({"__key__": f"{i:08d}", "src.png": encode_png(imgs[0], lvl, enc),
                                "tgt.png": encode_png(imgs[1], lvl, enc), "json": encode_json(info),
                                "latents.npy": encode_npy(lat)})
                rows.append({"key": f"{i:08d}", "shard": path.name, "index": i, "seed": seeds[i],
                             "direction": info["direction"], "src_t": info["src"]["t"], "tgt_t": info["tgt"]["t"],
                             **{f"src_{n}": v for n, v in info["src"]["attributes"].items()},
                             **{f"tgt_{n}": v for n, v in info["tgt"]["attributes"].items()}, **identity_col})
            progress.update(len(chunk))
        stats["pairs.no_valid_pair"] = (stats["pairs.candidates"] - stats["pairs.kept"] - stats["pairs.source_unusable"]
                                        - stats.get("pairs.identity_rejected", 0))
        write_shard(path, samples, fingerprint, rows, stats)

    def _classify(self, ctx: Context, images: np.ndarray, groups: int):
        return classify_images(self._clf, hwc_to_float(images), ctx.cfg.sample.resolution, groups)

    @staticmethod
    def _attrs(cols, idx):
        return {n: (None if not np.isfinite(cols[n][idx]) else round(float(cols[n][idx]), 6))
                for n in cols if n != "valid" and not n.startswith("face_box")}

    def _pick_binary(self, ctx, r, ws, layers, direction, stats):
        steps, scale = ctx.cfg.pairs.steps, ctx.cfg.pairs.scale
        delta = torch.as_tensor(direction["vector"], dtype=torch.float32)
        K, B = len(steps), ws.shape[0]
        edits = ws.unsqueeze(1).repeat(1, K, 1, 1)  # [B, K, num_ws, w_dim]
        for kk, t in enumerate(steps):
            edits[:, kk, layers] += t * scale * delta
        images = r.images(edits.reshape(B * K, *ws.shape[1:]))
        cols = self._classify(ctx, images, groups=B)  # one classifier batch per candidate
        lab, conf = labels(cols, ctx.cfg.attribute, direction.get("thresholds"))
        ok = usable(cols, ctx.cfg.attribute)
        names = direction["class_names"]
        out = []
        for b in range(B):
            sl = slice(b * K, (b + 1) * K)
            pair = choose_pair(lab[sl], conf[sl], ok[sl], steps, ctx.cfg.attribute.min_confidence)
            if pair is None:
                out.append(None)
                continue
            ia, ib = b * K + pair[0], b * K + pair[1]
            info = {"direction": f"{names[0]}->{names[1]}",
                    "src": {"t": steps[pair[0]], "class": names[0], "confidence": float(conf[ia]),
                            "attributes": self._attrs(cols, ia)},
                    "tgt": {"t": steps[pair[1]], "class": names[1], "confidence": float(conf[ib]),
                            "attributes": self._attrs(cols, ib)},
                    "steps": steps, "scale": scale}
            lat = torch.stack([edits[b, pair[0]], edits[b, pair[1]]]).numpy().astype(np.float32)
            out.append((info, (images[ia], images[ib]), lat))
        return out

    def _pick_bins(self, ctx, r, ws, layers, direction, stats):
        ac, scale = ctx.cfg.attribute, ctx.cfg.pairs.scale
        steps_bins, vectors, targets = direction["steps"], np.asarray(direction["vectors"]), direction["targets"]
        base = r.images(ws)
        cols0 = self._classify(ctx, base, groups=len(base))
        lab0, conf0 = labels(cols0, ac)
        ok0 = usable(cols0, ac)
        jobs = []  # (b, step index) candidates to render
        for b in range(ws.shape[0]):
            if not ok0[b] or lab0[b] < 0 or conf0[b] < ac.min_confidence:
                stats["pairs.source_unusable"] += 1
                continue
            jobs += [(b, j) for j in range(len(steps_bins)) if targets[lab0[b]][j] >= 0]
        out = [None] * ws.shape[0]
        if not jobs:
            return out
        edits = torch.stack([ws[b] for b, _ in jobs])
        for n, (b, j) in enumerate(jobs):
            edits[n, layers] += scale * torch.as_tensor(vectors[lab0[b], j], dtype=torch.float32)
        images = r.images(edits)
        cols = self._classify(ctx, images, groups=len(images))
        lab, conf = labels(cols, ac)
        ok = usable(cols, ac)
        passing: dict[int, list[int]] = {}
        for n, (b, j) in enumerate(jobs):
            if ok[n] and lab[n] == targets[lab0[b]][j] and conf[n] >= ac.min_confidence:
                passing.setdefault(b, []).append(n)
        for b, ns in passing.items():
            n = ns[0] if len(ns) == 1 else ns[b % len(ns)]
            j = jobs[n][1]
            older_is_edit = steps_bins[j] > 0
            src_img, tgt_img = (base[b], images[n]) if older_is_edit else (images[n], base[b])
            src_lat, tgt_lat = (ws[b], edits[n]) if older_is_edit else (edits[n], ws[b])
            b0, b1 = int(lab0[b]), int(lab[n])
            base_info = {"t": 0, "bin": b0, "confidence": float(conf0[b]), "attributes": self._attrs(cols0, b)}
            edit_info = {"t": 1, "bin": b1, "confidence": float(conf[n]), "attributes": self._attrs(cols, n),
                         "step_bins": steps_bins[j]}
            info = {"direction": "younger->older", "src": base_info if older_is_edit else edit_info,
                    "tgt": edit_info if older_is_edit else base_info, "scale": scale}
            out[b] = (info, (src_img, tgt_img), torch.stack([src_lat, tgt_lat]).numpy().astype(np.float32))
        return out
