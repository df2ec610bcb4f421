"""Feature extraction throughput of ``kdpipe eval`` (images/s), per extractor, resolution and batch size.

Usage: python benchmarks/eval_features.py [--device cpu|cuda] [--kinds digits,inception] [--resolutions 32,256]
       [--batch 32] [-n 64] [--repeats 3] [--inception-weights PATH] [--json PATH]

Images: uint8 noise ``[n, 3, R, R]`` (throughput does not depend on content). ``inception`` runs torch-fidelity's
Inception-v3 (inputs resized to 299 inside the network, so the resolution barely matters); without
``--inception-weights`` or the official file in torch hub's cache it uses random weights in the official layout
(same graph, same cost). ``digits`` is the demo domain's classifier features (resized to 32 px). Prints a table
(kind, resolution, batch, images/s = best of --repeats after one warm-up) and the machine load; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def _inception_weights(given: str | None, tmp: Path) -> tuple[str, str]:
    from kdpipe.trainers.metrics.weights import INCEPTION_FILE, hub_checkpoint_dir

    if given:
        return given, "given"
    if (hub_checkpoint_dir() / INCEPTION_FILE).is_file():
        return str(hub_checkpoint_dir() / INCEPTION_FILE), "official (hub cache)"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from _metrics_fixtures import random_inception

    return str(random_inception(tmp)), "random (official layout)"


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns (and writes to --json) ``{"rows": [...], "machine": {...}}``."""
    from kdpipe.trainers.metrics.features import extract_features, get_extractor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kinds", default="digits,inception")
    ap.add_argument("--resolutions", default="32,256")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--inception-weights")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "eval_features-cpu.json"))
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            weights, source = _inception_weights(args.inception_weights, Path(tmp)) if kind == "inception" else (None, "")
            ext = get_extractor(kind, weights, args.device)
            for res in (int(r) for r in args.resolutions.split(",")):
                x = torch.randint(0, 256, (args.n, 3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
                extract_features(x[: args.batch], extractor=ext, batch_size=args.batch)  # warm-up
                best = 0.0
                for _ in range(args.repeats):
                    st: dict = {}
                    extract_features(x, extractor=ext, batch_size=args.batch, stats=st)
                    best = max(best, st["images_per_s"])
                rows.append({"kind": kind, "resolution": res, "batch": args.batch, "n": args.n,
                             "images_per_s": best, "weights": source})
                print(f"{kind:10s} {res:4d} px  batch {args.batch:3d}  {best:9.1f} images/s  {source}", flush=True)
    result = {"rows": rows, "machine": {"device": args.device, "cpu_count": os.cpu_count(),
                                        "torch_threads": torch.get_num_threads(), "loadavg": os.getloadavg(),
                                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    print(f"load average {result['machine']['loadavg']}, {result['machine']['cpu_count']} CPUs, "
          f"{result['machine']['torch_threads']} torch threads")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
