"""One-off check: ``kdpipe sample`` vs the official NVlabs scripts run on the same weights (CPU).

``python benchmarks/official_sample_check.py --official-src /tmp/sg2ada [--generator builtin:digits-32]``

PATH is a checkout of NVlabs/stylegan2-ada-pytorch the user provides (``git archive`` of it; never vendored). The
teacher is exported by kdpipe's exporter as a stylegan2-ada-pytorch pickle and loaded back by kdpipe; the
official ``training.networks.Generator`` gets the same weights (``official_synthesis.load_official_generator``).
Then the official ``generate.py`` and ``style_mixing.py`` commands run unmodified but for two seams: their
pickle loader returns that official generator (the exported pickle's embedded source is a placeholder, which
kdpipe never executes and the official loader would), and their hard-coded ``torch.device('cuda')`` is CPU.
Every PNG the official scripts write is compared pixel by pixel with kdpipe's file of the same name.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_synthesis import load_official_generator  # noqa: E402


class _CpuTorch:
    """The ``torch`` module as the official scripts see it: ``torch.device(...)`` is always the CPU."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def device(*_args, **_kwargs):
        return torch.device("cpu")


def run_official(script: str, official_G, args: list[str]) -> None:
    """Run ``script``'s click command (``generate`` / ``style_mixing``) in-process on ``official_G``."""
    module = importlib.import_module(script)
    module.torch = _CpuTorch()
    module.legacy.load_network_pkl = lambda f: {"G_ema": official_G}
    module.dnnlib.util.open_url = lambda url: open(url, "rb")
    command = module.generate_images if hasattr(module, "generate_images") else module.generate_style_mix
    command.main(args, standalone_mode=False)


def compare_dirs(official: Path, ours: Path) -> dict:
    """Pixel comparison of every official PNG with kdpipe's same-named file."""
    out = {"files": 0, "identical": 0, "max_abs_diff": 0, "pixels_differing": 0}
    for path in sorted(official.glob("*.png")):
        a = np.asarray(Image.open(path).convert("RGB")).astype(int)
        b = np.asarray(Image.open(ours / path.name).convert("RGB")).astype(int)
        out["files"] += 1
        out["identical"] += int(np.array_equal(a, b))
        out["max_abs_diff"] = max(out["max_abs_diff"], int(np.abs(a - b).max()))
        out["pixels_differing"] += int((a != b).any(-1).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-src", type=Path, required=True)
    parser.add_argument("--generator", default="builtin:digits-32")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from kdpipe.pipeline.sampling.command import sample
    from kdpipe.pipeline.teacher.formats.export import write_nvlabs_pytorch_pkl
    from kdpipe.pipeline.teacher.load import load_teacher

    sys.path.insert(0, str(args.official_src.resolve()))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher = load_teacher(args.generator)
        pkl = write_nvlabs_pytorch_pkl(tmp / "teacher.pkl", teacher.G, teacher.D)
        official_G = load_official_generator(args.official_src, load_teacher(str(pkl)).G, torch.device("cpu"))
        quiet = lambda m: None  # noqa: E731
        cases = {
            "generate --seeds 0-3 --trunc 1 --noise-mode const": (
                "generate", ["--seeds", "0-3", "--trunc", "1", "--noise-mode", "const"],
                dict(seeds=[0, 1, 2, 3], truncation_psi=1.0)),
            "generate --seeds 600-605 --trunc 0.7": (
                "generate", ["--seeds", "600-605", "--trunc", "0.7"], dict(seeds=list(range(600, 606)),
                                                                          truncation_psi=0.7)),
            "style_mixing --rows 85,100 --cols 55,821 --styles 0-6": (
                "style_mixing", ["--rows", "85,100", "--cols", "55,821", "--styles", "0-6"],
                dict(style_mixing=True, rows=[85, 100], cols=[55, 821], styles=list(range(7)))),
        }
        for name, (script, official_args, ours_kwargs) in cases.items():
            off, ours = tmp / f"official-{script}-{len(results)}", tmp / f"kdpipe-{len(results)}"
            run_official(script, official_G, ["--network", str(pkl), "--outdir", str(off), *official_args])
            sample(str(pkl), ours, device="cpu", log=quiet, **ours_kwargs)
            results[name] = compare_dirs(off, ours)
            print(f"{name}: {results[name]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"generator": args.generator, "results": results}, indent=1))


if __name__ == "__main__":
    main()
