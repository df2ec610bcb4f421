"""What compression bought (seed 003's point): parameters, MACs per image and measured img/s of the student vs
the teacher on the same device, the student's L1 / LPIPS to the teacher on fixed seeds, and (32 px digit
teachers) the FID of both against the real digits with the digit classifier's features.

Written by ``kdpipe train stylegan2-compress`` at its last step as ``compress_report.json`` in the run directory,
and printed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from kdpipe.fsutil import atomic_write_text
from kdpipe.pipeline.latents import z_from_seeds
from kdpipe.pipeline.teacher.networks import Generator
from kdpipe.trainers.stylegan2.compress_student import param_count


@torch.no_grad()
def generator_macs(G: Generator) -> int:
    """Multiply-accumulates of one image ``G(z)`` (mapping + synthesis, ``noise_mode='const'``), counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` over the matmuls and convolutions that actually run (FLOPs / 2;
    element-wise ops such as modulation, bias and activation are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    z = torch.zeros([1, G.z_dim], device=G.mapping.w_avg.device)
    with FlopCounterMode(display=False) as counter:
        G(z, noise_mode="const")
    return int(counter.get_total_flops()) // 2


@torch.no_grad()
def images_per_second(generators: list[Generator], batch: int, repeats: int) -> list[float]:
    """Measured ``G(z)`` throughput of each generator in images per second: median over ``repeats`` rounds, each
    timing one forward of ``batch`` images (``noise_mode='const'``) of every generator in turn (interleaved, so a
    change of machine load hits all alike), after 2 warm-up rounds; CUDA is synchronised around each forward."""
    device = generators[0].mapping.w_avg.device
    z = torch.randn([batch, generators[0].z_dim], generator=torch.Generator().manual_seed(0)).to(device)
    times: list[list[float]] = [[] for _ in generators]
    for i in range(repeats + 2):
        for G, t in zip(generators, times):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            G(z, noise_mode="const")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                t.append(time.perf_counter() - t0)
    return [batch / float(np.median(t)) for t in times]


@torch.no_grad()
def render_seeds(G: Generator, seeds: range, batch: int = 64) -> torch.Tensor:
    """``G(z(seed))`` for every seed (NVlabs seed -> z, psi 1, const noise), ``[N, 3, R, R]`` float32 on the CPU."""
    device = G.mapping.w_avg.device
    z = z_from_seeds(seeds, G.z_dim)
    return torch.cat([G(z[i:i + batch].to(device), noise_mode="const").cpu() for i in range(0, len(z), batch)])


@torch.no_grad()
def distance_to_teacher(student: Generator, teacher: Generator, seeds: int,
                        lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Mean L1 (pixels in [-1, 1]) and, when an LPIPS metric is given, mean LPIPS between student and teacher
    images of seeds ``0..seeds-1``: ``{"l1": ..., "lpips": ... or None}``."""
    img_s, img_t = render_seeds(student, range(seeds)), render_seeds(teacher, range(seeds))
    out: dict[str, float | None] = {"l1": float((img_s - img_t).abs().mean()), "lpips": None}
    if lpips is not None:
        device = student.mapping.w_avg.device
        out["lpips"] = float(torch.cat([lpips(img_s[i:i + 64].to(device), img_t[i:i + 64].to(device)).flatten().cpu()
                                        for i in range(0, seeds, 64)]).mean())
    return out


def digits_fid(images: list[torch.Tensor]) -> list[float]:
    """Fréchet distance of each image set ``[N, 3, 32, 32]`` in [-1, 1] to all 1,797 real digits, on the digit
    classifier's penultimate features (:func:`kdpipe.pipeline.attributes.digits.digit_features`)."""
    from kdpipe.pipeline.attributes.digits import digit_features, frechet_distance
    from kdpipe.pipeline.digits import real_digits

    real = digit_features(real_digits()[0])
    return [frechet_distance(digit_features(x), real) for x in images]


def compress_report(student: Generator, teacher: Generator, seeds: int, fid_samples: int, speed_batch: int,
                    speed_repeats: int, lpips=None) -> dict[str, Any]:
    """The report (JSON-serialisable): ``params``, ``macs_per_image``, ``img_per_s`` (each ``{"student",
    "teacher", "ratio"}``, ratio = teacher / student for costs and student / teacher for speed), ``to_teacher``
    (:func:`distance_to_teacher`), ``fid_digits`` (``{"student", "teacher"}`` or None unless the teacher renders
    32 px and ``fid_samples > 0``), ``device``, ``threads``."""
    params = {"student": param_count(student), "teacher": param_count(teacher)}
    macs = {"student": generator_macs(student), "teacher": generator_macs(teacher)}
    speed = dict(zip(("student", "teacher"), images_per_second([student, teacher], speed_batch, speed_repeats)))
    report: dict[str, Any] = {
        "params": params | {"ratio": params["teacher"] / params["student"]},
        "macs_per_image": macs | {"ratio": macs["teacher"] / macs["student"]},
        "img_per_s": speed | {"ratio": speed["student"] / speed["teacher"], "batch": speed_batch},
        "to_teacher": distance_to_teacher(student, teacher, seeds, lpips) | {"seeds": seeds},
        "fid_digits": None,
        "device": str(student.mapping.w_avg.device), "threads": torch.get_num_threads(),
    }
    if fid_samples and teacher.img_resolution == 32:
        seeds_fid = range(10_000, 10_000 + fid_samples)  # not the L1 seeds
        fid_s, fid_t = digits_fid([render_seeds(student, seeds_fid), render_seeds(teacher, seeds_fid)])
        report["fid_digits"] = {"student": fid_s, "teacher": fid_t, "samples": fid_samples}
    return report


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines of :func:`compress_report`'s dict."""
    p, m, s, d = report["params"], report["macs_per_image"], report["img_per_s"], report["to_teacher"]
    lines = [f"params      student {p['student']:,}  teacher {p['teacher']:,}  ({p['ratio']:.2f}x fewer)",
             f"MACs/image  student {m['student']:,}  teacher {m['teacher']:,}  ({m['ratio']:.2f}x fewer)",
             f"img/s       student {s['student']:.1f}  teacher {s['teacher']:.1f}  ({s['ratio']:.2f}x faster, "
             f"batch {s['batch']}, {report['device']}, {report['threads']} threads)",
             f"to teacher  L1 {d['l1']:.4f}  LPIPS {'n/a' if d['lpips'] is None else format(d['lpips'], '.4f')} "
             f"({d['seeds']} seeds)"]
    if report["fid_digits"]:
        f = report["fid_digits"]
        lines.append(f"FID digits  student {f['student']:.3f}  teacher {f['teacher']:.3f}  ({f['samples']} images)")
    return "\n".join(lines)


def write_report(run_dir: str | Path, report: dict[str, Any]) -> Path:
    """Write ``<run_dir>/compress_report.json`` atomically."""
    path = Path(run_dir) / "compress_report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=1))
    return path
