"""``kdpipe translate`` for StarGANv2 students (``stargan2`` and ``stargan2-kd`` checkpoints).

As clovaai/stargan-v2 ``--mode sample`` (``Solver.sample``): every source image is translated

- reference-guided: ``G(x_src, E(x_ref, y_ref))`` for every reference image (``--ref-dir``; a directory of domain
  sub-folders, like the official ``ref_dir``, gives each reference the domain of its folder; a flat directory
  uses ``--domain``), written as ``<source>__<domain>__ref-<reference>.png``;
- latent-guided: ``G(x_src, F(z, y))`` for every ``--seeds`` seed and every ``--domain`` (default: all), with
  ``z = RandomState(seed).randn(1, latent_dim)`` (kdpipe's NVlabs seed rule, so a seed is the same style in every
  call), written as ``<source>__<domain>__seed<NNNN>.png``.

EMA networks are used when the checkpoint keeps them (finetuning; StarGANv2 samples with ``nets_ema``).
Domain names come from the checkpoint (``trainer_state["domains"]``), else the run's ``data.json``, else their
indices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kdpipe.devices import resolve_device
from kdpipe.errors import KdpipeError
from kdpipe.images import to_uint8
from kdpipe.pipeline.latents import z_from_seeds
from kdpipe.trainers.stargan2.networks import Generator, MappingNetwork, StyleEncoder
from kdpipe.trainers.translate import (IMAGE_EXTS, TranslateRequest, check_output_dir, list_images, load_images,
                                       save_image, unique_names)


class StarGAN2Student:
    """The three inference networks of a StarGANv2 checkpoint (eval mode, frozen, on ``device``).

    Attributes:
        generator, mapping_network, style_encoder: the networks (EMA weights when kept and ``use_ema``).
        img_size: input/output side R in pixels. latent_dim: z size. domains: names, index = label.
    Raises:
        KdpipeError: the checkpoint lacks a network (not a StarGANv2 checkpoint).
    """

    def __init__(self, state: dict[str, Any], use_ema: bool = True, device: str | torch.device = "cpu",
                 checkpoint: Path | None = None):
        ts, m = state["trainer_state"], dict(state.get("config", {}).get("model", {}))
        nets = dict(ts.get("models") or {})
        if not {"generator", "mapping_network", "style_encoder"} <= set(nets) or "img_size" not in m:
            raise KdpipeError(f"checkpoint {str(checkpoint)!r} lacks the StarGANv2 networks or model.img_size; pass "
                              "a ckpt-*.pt written by 'kdpipe train stargan2' or 'stargan2-kd'")
        if use_ema:
            nets.update(ts.get("ema") or {})
        mapping = nets["mapping_network"]
        self.latent_dim = int(mapping["shared.0.weight"].shape[1])
        num_domains = len({k.split(".")[1] for k in mapping if k.startswith("unshared.")})
        self.img_size = int(m["img_size"])
        style_dim = int(m.get("style_dim", 64))
        self.generator = Generator(self.img_size, style_dim, m.get("max_conv_dim", 512), m.get("dim_in"),
                                   m.get("num_down"))
        self.mapping_network = MappingNetwork(self.latent_dim, style_dim, num_domains, m.get("hidden_dim", 512))
        self.style_encoder = StyleEncoder(self.img_size, style_dim, num_domains, m.get("max_conv_dim", 512),
                                          m.get("dim_in"))
        for name in ("generator", "mapping_network", "style_encoder"):
            net = getattr(self, name)
            net.load_state_dict(nets[name])
            net.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.domains = domain_names(state, num_domains, checkpoint)

    def domain_index(self, name: str) -> int:
        """Label of a domain given by name or index. Raises KdpipeError naming the known domains."""
        if name in self.domains:
            return self.domains.index(name)
        if name.isdigit() and int(name) < len(self.domains):
            return int(name)
        raise KdpipeError(f"--domain {name!r} is not a domain of this student; choose one of "
                          f"{', '.join(self.domains)} (or an index 0-{len(self.domains) - 1})")

    @torch.no_grad()
    def reference_styles(self, refs: torch.Tensor, labels: list[int]) -> torch.Tensor:
        """Style codes ``[K, style_dim]`` of reference images ``[K, 3, R, R]`` in [-1, 1] for their domains."""
        y = torch.tensor(labels, dtype=torch.int64, device=self.device)
        return self.style_encoder(refs.to(self.device), y)

    @torch.no_grad()
    def latent_styles(self, seeds: list[int], label: int) -> torch.Tensor:
        """Style codes ``[len(seeds), style_dim]``: ``F(z_seed, label)`` with z from the NVlabs seed rule."""
        z = z_from_seeds(seeds, self.latent_dim).to(self.device)
        return self.mapping_network(z, torch.full((len(seeds),), label, dtype=torch.int64, device=self.device))

    @torch.no_grad()
    def synthesize(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``G(x, s)`` for sources x ``[N, 3, R, R]`` and one style s ``[style_dim]`` -> ``[N, 3, R, R]``."""
        x = x.to(self.device)
        return self.generator(x, s.expand(x.shape[0], -1))


def domain_names(state: dict[str, Any], num_domains: int, checkpoint: Path | None) -> list[str]:
    """Domain names: ``trainer_state["domains"]``, else ``<run>/data.json`` beside ``checkpoints/``, else indices."""
    names = state["trainer_state"].get("domains")
    if not names and checkpoint is not None:
        data_json = Path(checkpoint).resolve().parent.parent / "data.json"
        try:
            names = json.loads(data_json.read_text()).get("domains")
        except (OSError, ValueError, AttributeError):
            names = None
    if not names or len(names) != num_domains:
        names = [str(k) for k in range(num_domains)]
    return [str(n) for n in names]


def _references(student: StarGAN2Student, req: TranslateRequest) -> list[tuple[Path, int]]:
    """``[(reference file, domain label)]``: domain sub-folders of ``--ref-dir`` give the label, flat files take
    the single ``--domain`` (or domain 0 of a one-domain student)."""
    pairs: list[tuple[Path, int]] = []
    flat: list[Path] = []
    for item in req.ref:
        sub = sorted(d for d in item.iterdir() if d.is_dir() and d.name in student.domains) if item.is_dir() else []
        for d in sub:
            pairs += [(f, student.domains.index(d.name)) for f in list_images([d])]
        if not sub and item.is_dir() and any(d.is_dir() for d in item.iterdir()) and \
                not any(f.suffix.lower() in IMAGE_EXTS for f in item.iterdir()):
            raise KdpipeError(f"--ref-dir {str(item)!r} has sub-folders but none named after a domain "
                              f"({', '.join(student.domains)}); name them so, or pass image files with --domain")
        if not sub:
            flat.append(item)
    if flat:
        if len(req.domains) != 1 and len(student.domains) > 1:
            raise KdpipeError(f"reference images {[str(f) for f in flat]} are not in domain sub-folders "
                              f"({', '.join(student.domains)}); give exactly one --domain for them")
        label = student.domain_index(req.domains[0]) if req.domains else 0
        pairs += [(f, label) for f in list_images(flat)]
    return pairs


def translate_stargan2(state: dict[str, Any], req: TranslateRequest) -> list[Path]:
    """The ``translate`` hook of the StarGANv2 trainers: reference-guided and/or latent-guided outputs.

    Args:
        state: a loaded ``stargan2`` / ``stargan2-kd`` checkpoint. req: ``inputs`` (sources), ``ref`` and/or
            ``seeds`` (+ ``domains``); ``x2`` is refused.
    Returns: written paths: per source (input order), reference outputs (reference order), then seed outputs
        (domain, then seed order).
    Raises:
        KdpipeError: no ``--ref-dir`` and no ``--seeds``, an unknown domain, ``--size`` other than the training
            size. DatasetError: missing / unreadable / same-named images, an output directory holding an input.
    """
    req.refuse(state["trainer"], "x2")
    if not req.ref and not req.seeds:
        raise KdpipeError("a StarGANv2 student needs a style: --ref-dir DIR (reference-guided) and/or --seeds "
                          "0-3 --domain NAME (latent-guided)")
    student = StarGAN2Student(state, req.use_ema, resolve_device(req.device), req.checkpoint)
    R = student.img_size
    if req.size not in (None, R):
        raise KdpipeError(f"--size {req.size}: this StarGANv2 student works at {R}x{R} px only; drop --size")
    sources = list_images(req.inputs)
    unique_names(sources, "source images")
    refs = _references(student, req) if req.ref else []
    for label in range(len(student.domains)):
        unique_names([f for f, y in refs if y == label], f"references of domain {student.domains[label]!r}")
    check_output_dir(req.out_dir, sources + [f for f, _ in refs])
    jobs: list[tuple[str, torch.Tensor]] = []  # (output name suffix, style [style_dim])
    for start in range(0, len(refs), req.batch_size):
        chunk = refs[start:start + req.batch_size]
        styles = student.reference_styles(load_images([f for f, _ in chunk], (R, R), req.align), [y for _, y in chunk])
        jobs += [(f"{student.domains[y]}__ref-{f.stem}", s) for (f, y), s in zip(chunk, styles)]
    if req.seeds:
        labels = [student.domain_index(d) for d in req.domains] if req.domains else range(len(student.domains))
        for label in labels:
            styles = student.latent_styles(list(req.seeds), label)
            jobs += [(f"{student.domains[label]}__seed{seed:04d}", s) for seed, s in zip(req.seeds, styles)]
    req.out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for start in range(0, len(sources), req.batch_size):
        chunk = sources[start:start + req.batch_size]
        x = load_images(chunk, (R, R), req.align)
        outputs = [to_uint8(student.synthesize(x, s)).cpu() for _, s in jobs]  # [job][N, R, R, 3]
        for n, src in enumerate(chunk):
            for (suffix, _), out in zip(jobs, outputs):
                path = req.out_dir / f"{src.stem}__{suffix}.png"
                save_image(out[n], path)
                written.append(path)
    return written
