"""Quality floor of the demo teacher builtin:digits-32 (issue 13 "Done when"), and how long its tasks take.

    python benchmarks/digits_teacher.py [--generator builtin:digits-32] [--n 1000] [--tasks] [--json PATH]

1. Samples of seeds 0..n-1 (psi = 1, const noise; NVlabs seed convention) are classified by a FRESH digit MLP
   trained on a different split of the real digits than the shipped ``digit`` classifier (split seed 1 instead
   of 0): fraction with probability >= 0.8, class fractions (each should be >= 4 %).
2. Fréchet distance in that MLP's 64-d penultimate features between the samples and all 1,797 real digits,
   next to the distance between two random halves of the real digits.
3. ``--tasks``: wall time of ``kdpipe generate --task style-mix -n 256`` and ``--task stroke`` (default sizes of
   stages.yaml but ``pairs.n=256``) on this machine, and the same classifier check on their output images.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings

import numpy as np
import torch


def _images_from_shards(task_dir: str) -> dict[str, torch.Tensor]:
    from kdpipe.images import decode_image, to_float

    out: dict[str, list] = {}
    for tar in sorted(glob.glob(os.path.join(task_dir, "shards", "*.tar"))):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".png"):
                    key = m.name.rsplit(".", 2)[-2]
                    out.setdefault(key, []).append(decode_image(tf.extractfile(m).read(), m.name))
    return {k: to_float(torch.stack(v)) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", default="builtin:digits-32")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--tasks", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from kdpipe.pipeline.attributes.digits import digit_features, digit_report, frechet_distance, train_digit_model
    from kdpipe.pipeline.digits import real_digits, split_indices
    from kdpipe.pipeline.latents import z_from_seeds
    from kdpipe.pipeline.teacher.load import load_teacher

    G = load_teacher(args.generator).G
    with torch.no_grad():
        fake = torch.cat([G(z) for z in z_from_seeds(range(args.n), G.z_dim).split(250)])
    model = train_digit_model(*split_indices(1))
    real, _ = real_digits()
    f_fake, f_real = digit_features(fake, model), digit_features(real, model)
    perm = np.random.default_rng(0).permutation(len(real))
    half = len(real) // 2
    result = {"generator": args.generator, "fresh_classifier_held_out_accuracy": model.held_out_accuracy,
              "samples": digit_report(fake, model),
              "fd_samples_vs_real": frechet_distance(f_fake, f_real),
              "fd_real_half_vs_half": frechet_distance(f_real[perm[:half]], f_real[perm[half:]]),
              "real_check": digit_report(real, model)}
    if args.tasks:
        for task, n_key in (("style-mix", "render.n"), ("stroke", "pairs.n")):
            with tempfile.TemporaryDirectory() as out:
                cmd = [sys.executable, "-m", "kdpipe.cli", "generate", "--task", task, "--generator", args.generator,
                       "--out", out, "--no-progress", "--set", f"{n_key}=256", "--set", "runtime.device=cpu"]
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                entry = {"command": " ".join(cmd[2:]), "wall_s": round(wall, 1), "rc": proc.returncode}
                if proc.returncode:
                    entry["stderr"] = proc.stderr[-500:]
                else:
                    entry["images"] = {k: digit_report(v, model) for k, v in _images_from_shards(
                        os.path.join(out, task)).items()}
                result[f"task_{task}"] = entry
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
