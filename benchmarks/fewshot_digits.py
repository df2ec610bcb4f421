"""Few-shot adaptation of builtin:digits-32 to 10 colour-inverted digits: seed 001 (kd) vs CDC vs finetuning.

    python benchmarks/fewshot_digits.py --out runs/fewshot [--steps 400] [--methods kd,cdc,finetune]
                                        [--n 1000] [--lpips-weights alexnet.pth] [--json PATH] [--eval-only]

Target domain (built offline, like FFHQ -> sketches): the 1,797 real digits with ink and background swapped
(``-x``: black ink on white). 10 of them (a seeded choice) are the training set, written as PNGs into
``OUT/target``; all 1,797 are the full target pool the paper's FID is measured against.
Each method is ``kdpipe train stylegan2-fewshot --teacher builtin:digits-32 --data OUT/target --method M
--source-data digits --set model.r1_gamma=1 --set model.pl_weight=0`` (the teacher's own r1 / pl settings,
data card), same seed; an interrupted run is resumed.
``--eval-only --step S`` evaluates the snapshots of step S without training. Metrics on ``--n`` samples of
the final G_ema (seeds 0..n-1, psi 1, const noise):

* FID: Fréchet distance in the digit MLP's 64-d features (:func:`kdpipe.pipeline.attributes.digits.digit_features`)
  between the re-inverted samples and the re-inverted pool (inversion is a bijection; the MLP knows white ink);
* intra-cluster diversity (seed 001 Sec. 4.2 / CDC): each sample is assigned to its nearest training image and
  the mean pairwise distance within clusters is averaged over clusters; distance = Euclidean in digit-MLP
  features (always) and LPIPS with AlexNet (``--lpips-weights FILE``; ``random`` = a seeded random-weight
  AlexNet, since ImageNet weights cannot be downloaded here: a random-feature distance, not calibrated LPIPS).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

TEACHER = "builtin:digits-32"


def target_pool() -> torch.Tensor:
    """All 1,797 real digits colour-inverted: float ``[N, 3, 32, 32]`` in [-1, 1], black ink on white."""
    from kdpipe.pipeline.digits import real_digits

    return -real_digits()[0]


def write_targets(out: Path, n: int = 10, seed: int = 0) -> Path:
    """Write ``n`` seeded pool images as ``OUT/target/NN.png`` (uint8 RGB); returns the folder."""
    import PIL.Image

    from kdpipe.images import to_uint8

    pool = target_pool()
    idx = np.random.default_rng(seed).permutation(len(pool))[:n]
    folder = out / "target"
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(to_uint8(pool[idx])):
        PIL.Image.fromarray(im.numpy()).save(folder / f"{i:02d}.png")
    return folder


def train(out: Path, method: str, steps: int, seed: int) -> Path:
    """Train (or finish) one method; returns its run directory."""
    from kdpipe.trainers.core.checkpoint import latest_checkpoint
    from kdpipe.trainers.stylegan2.fewshot import run

    run_dir = out / method
    overrides = {"model.init": TEACHER, "data.path": str(out / "target"), "loss.method": method,
                 "loss.source_data": "digits", "model.r1_gamma": 1.0, "model.pl_weight": 0.0,
                 "loop.out_dir": str(run_dir), "loop.steps": steps, "loop.seed": seed, "loop.device": "cpu",
                 "loop.progress": False, "loop.ckpt_every": 50, "loop.sample_every": 50}
    resume = latest_checkpoint(run_dir) is not None
    run(None, {"loop.out_dir": str(run_dir), "loop.steps": steps} if resume else overrides, resume=resume)
    return run_dir


@torch.no_grad()
def samples(snapshot: Path, n: int) -> torch.Tensor:
    """``n`` images of a snapshot's G_ema, seeds 0..n-1 (NVlabs convention), psi 1, const noise."""
    from kdpipe.pipeline.teacher.load import load_teacher

    G = load_teacher(str(snapshot)).G
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in range(n)])).float()
    return torch.cat([G(z[i:i + 250]) for i in range(0, n, 250)]).clamp(-1, 1)


def evaluate(images: torch.Tensor, targets: torch.Tensor, pool: torch.Tensor, lpips_weights: str | None,
             lpips_n: int | None = None) -> dict:
    """FID (digit features, re-inverted) vs the pool; intra-cluster diversity to the training images in digit
    features and, with ``lpips_weights``, in LPIPS on the first ``lpips_n`` images (``random``: a seeded
    random-weight AlexNet, see the doc)."""
    from kdpipe.pipeline.attributes.digits import digit_features, frechet_distance

    feats, pool_feats = digit_features(-images), digit_features(-pool)
    out = {"fid_digits": frechet_distance(feats, pool_feats),
           "intra_cluster_feature_distance": intra_cluster_distance(feats, digit_features(-targets))}
    if lpips_weights:
        from kdpipe.trainers.metrics.lpips import intra_cluster_lpips, load_lpips

        out["intra_cluster_lpips"] = intra_cluster_lpips(images[:lpips_n], targets,
                                                        load_lpips("alex", lpips_weights))
    return out


def random_alexnet(path: Path) -> Path:
    """A torchvision AlexNet with seeded random weights saved as a state_dict (no ImageNet weights offline)."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # parallel evaluations share the file
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp)
    os.replace(tmp, path)
    return path


def intra_cluster_distance(feats: np.ndarray, target_feats: np.ndarray) -> float:
    """CDC's intra-cluster diversity with Euclidean feature distance: assign each sample to its nearest target,
    mean pairwise distance inside each cluster of >= 2 members, averaged over those clusters."""
    d = np.linalg.norm(feats[:, None] - target_feats[None], axis=2)
    label = d.argmin(1)
    means = []
    for k in range(len(target_feats)):
        f = feats[label == k]
        if len(f) >= 2:
            pd = np.linalg.norm(f[:, None] - f[None], axis=2)
            means.append(pd[np.triu_indices(len(f), 1)].mean())
    return float(np.mean(means)) if means else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/fewshot"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--methods", default="kd,cdc,finetune")
    ap.add_argument("--no-source", action="store_true", help="skip evaluating the unadapted teacher")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--lpips-weights", default=None, help="torchvision alexnet state_dict, or 'random'")
    ap.add_argument("--lpips-n", type=int, default=None, help="LPIPS on the first N samples only (cost ~N^2)")
    ap.add_argument("--step", type=int, default=None, help="evaluate network-snapshot-<step>.pkl (default: last)")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--grid", type=Path, default=None, help="PNG: rows source, each method (seeds 0-11), targets")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from kdpipe.images import decode_image, to_float

    folder = write_targets(args.out)
    targets = to_float(torch.stack([decode_image(p.read_bytes(), p.name) for p in sorted(folder.glob("*.png"))]))
    pool = target_pool()
    if args.lpips_weights == "random":
        args.lpips_weights = str(random_alexnet(args.out / "alexnet-random.pth"))
    results = {}
    if not args.no_source:
        results["source (no adaptation)"] = evaluate(samples(Path(TEACHER), args.n), targets, pool,
                                                     args.lpips_weights, args.lpips_n)
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        run_dir = args.out / method if args.eval_only else train(args.out, method, args.steps, args.seed)
        wall = time.perf_counter() - t0
        snapshot = (run_dir / f"network-snapshot-{args.step:06d}.pkl" if args.step else
                    sorted(run_dir.glob("network-snapshot-*.pkl"))[-1])
        timing = {} if args.eval_only else {"train_wall_s": round(wall, 1)}
        results[method] = {"snapshot": snapshot.name, "path": str(snapshot), **timing,
                           **evaluate(samples(snapshot, args.n), targets, pool, args.lpips_weights, args.lpips_n)}
        print(method, json.dumps({k: v for k, v in results[method].items() if k != "path"}), flush=True)
    if args.grid:
        from kdpipe.trainers.core.loop import save_image_grid

        rows = [samples(Path(TEACHER), 12)] + [samples(Path(results[m]["path"]), 12) for m in args.methods.split(",")]
        save_image_grid(args.grid, rows + [torch.cat([targets, targets[:2]])], max_items=12)
    for r in results.values():
        r.pop("path", None)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
