"""Speed of seed 003 students vs their teacher (``kdpipe train stylegan2-compress``), before any training: the
channel multiplier alone sets parameters, MACs and img/s, so random-C students are timed.

    python benchmarks/compress_speed.py [--teacher builtin:digits-32] [--multipliers 0.5 0.25] [--batch 16]
                                        [--repeats 20] [--threads N] [--device cpu]

Generators are timed interleaved (teacher, student 1, student 2, ... per round; medians), so load from other
processes hits all alike. Prints one line per generator and the JSON of every figure.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from kdpipe.pipeline.teacher.load import load_teacher
from kdpipe.pipeline.teacher.networks import Generator
from kdpipe.trainers.stylegan2.compress_report import generator_macs, images_per_second
from kdpipe.trainers.stylegan2.compress_student import initialise_student, param_count, student_kwargs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="builtin:digits-32")
    ap.add_argument("--multipliers", type=float, nargs="+", default=[0.5, 0.25])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = load_teacher(args.teacher, args.device).G
    gens = {"teacher": teacher}
    for m in args.multipliers:
        torch.manual_seed(0)
        G = Generator(**student_kwargs(teacher, m)).to(args.device)
        initialise_student(G, teacher, "inherit", "random")
        gens[f"x{m:g}"] = G.eval().requires_grad_(False)
    speed = images_per_second(list(gens.values()), args.batch, args.repeats)
    rows = {name: {"params": param_count(G), "macs_per_image": generator_macs(G), "img_per_s": s}
            for (name, G), s in zip(gens.items(), speed)}
    t = rows["teacher"]
    for name, r in rows.items():
        print(f"{name:8s} params {r['params']:>9,}  MACs/img {r['macs_per_image']:>12,} "
              f"({t['macs_per_image'] / r['macs_per_image']:.2f}x fewer)  {r['img_per_s']:8.1f} img/s "
              f"({r['img_per_s'] / t['img_per_s']:.2f}x)")
    print(json.dumps({"teacher": args.teacher, "device": args.device, "batch": args.batch, "repeats": args.repeats,
                      "threads": torch.get_num_threads(), "loadavg": os.getloadavg(), "generators": rows}))


if __name__ == "__main__":
    main()
