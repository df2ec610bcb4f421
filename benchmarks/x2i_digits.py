"""Class-conditional digits from the demo teacher (issue 16): data-free distillation, then finetuning on 10 real
digits per class, KD-initialised vs from scratch (seed 000's claim in miniature).

    python benchmarks/x2i_digits.py --out runs/x2i-digits [--kd-steps 300] [--ft-steps 400] [--json PATH]

1. ``kdpipe train x2i --teacher builtin:digits-32 --condition label`` twice: lambda_srl = ``--srl`` and 0 (for the
   semantic diversity figure: ``delta_c`` = mean |G_S(z, f, c_x) - G_S(z, f, c_y)| per logged step).
2. A class-folder dataset of the first 10 digits per class of the shipped classifier's TRAIN split
   (:func:`kdpipe.pipeline.digits.split_indices` seed 0), rendered at 32 px.
3. ``kdpipe train x2i --init KD --data PAIRS`` and the same without ``--init`` (same seed, steps, sizes).
4. Per student (EMA weights): 100 samples per class (z of seeds 0..99, NVlabs convention); class accuracy = the
   shipped digit classifier's argmax equals the condition; FID = Fréchet distance in the classifier's 64-d
   penultimate features (:func:`kdpipe.pipeline.attributes.digits.digit_features`) to the 540 real digits of the
   TEST split; reference rows: the 100 finetuning digits themselves and the teacher's unconditional samples.
Writes ``OUT/figure-samples.png`` (rows = classes 0-9; left KD-init, right scratch), ``OUT/figure-delta.png``
(delta_c vs step, with and without L_srl) and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from kdpipe.fsutil import atomic_write
from kdpipe.config import parse_set
from kdpipe.images import to_uint8
from kdpipe.pipeline.attributes.digits import digit_features, digit_probabilities, frechet_distance
from kdpipe.pipeline.digits import real_digits, split_indices
from kdpipe.pipeline.latents import z_from_seeds
from kdpipe.trainers.core.checkpoint import latest_checkpoint, load_checkpoint
from kdpipe.trainers.x2i.run import load_generator, run_x2i

SIZES = {"model.channel_base": 512, "model.channel_max": 64, "model.img_size": 16}
COMMON = {**SIZES, "loop.device": "cpu", "loop.progress": False, "loop.log_every": 10, "loop.sample_every": 100,
          "loop.ckpt_every": 50}


def train(out: Path, steps: int, **overrides) -> Path:
    """Run (or resume, or skip when finished) one ``kdpipe train x2i``; returns its newest checkpoint."""
    ckpt = latest_checkpoint(out)
    if ckpt is not None and load_checkpoint(ckpt)["step"] >= steps:
        return ckpt
    run_x2i(None, {**COMMON, **overrides, "loop.out_dir": str(out), "loop.steps": steps}, resume=ckpt is not None)
    return latest_checkpoint(out)


def class_folder(root: Path, per_class: int) -> Path:
    """``root/<digit>/<index>.png``: the first ``per_class`` digits of each class in the train split."""
    train_idx, _ = split_indices(0)
    images, labels = real_digits(train_idx)
    for k in range(10):
        (root / str(k)).mkdir(parents=True, exist_ok=True)
        for j in np.flatnonzero(labels.numpy() == k)[:per_class]:
            path = root / str(k) / f"{train_idx[j]}.png"
            if not path.is_file():  # parallel --only runs share the folder: write once, atomically
                atomic_write(path, lambda f, x=images[j:j + 1]: PIL.Image.fromarray(to_uint8(x)[0].numpy()).save(
                    f, format="PNG"))
    return root


@torch.no_grad()
def class_samples(ckpt: Path, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [10 * per_class, 3, 32, 32], labels)`` of the EMA student: z of seeds 0..per_class-1 per class."""
    G = load_generator(load_checkpoint(ckpt)["trainer_state"], use_ema=True)
    z = z_from_seeds(range(per_class), G.z_dim)
    imgs = [G(z, torch.nn.functional.one_hot(torch.full((per_class,), k), 10).float()) for k in range(10)]
    return torch.cat(imgs), torch.arange(10).repeat_interleave(per_class)


def scores(images: torch.Tensor, labels: torch.Tensor | None, ref_features: np.ndarray) -> dict[str, float]:
    """Class accuracy (when labels are given) and FID in digit features against ``ref_features``."""
    out = {"fid_digits": round(frechet_distance(digit_features(images), ref_features), 3)}
    if labels is not None:
        out["class_accuracy"] = float((digit_probabilities(images).argmax(1) == labels.numpy()).mean())
    return out


def grid(images: torch.Tensor, rows: int) -> np.ndarray:
    """``[rows * cols, 3, H, W]`` (row-major) -> one uint8 image ``[rows H, cols W, 3]``."""
    u8 = to_uint8(images).numpy()
    cols = len(u8) // rows
    return np.concatenate([np.concatenate(list(u8[r * cols:(r + 1) * cols]), 1) for r in range(rows)], 0)


def delta_figure(curves: dict[str, list[tuple[int, float]]], path: Path, size=(480, 240)) -> None:
    """A bare line plot (PIL) of delta_c against step, one colour per curve, with a legend and the y maximum."""
    w, h = size
    img = PIL.Image.new("RGB", (w, h + 30), "white")
    draw = PIL.ImageDraw.Draw(img)
    x_max = max(s for c in curves.values() for s, _ in c)
    y_max = max(max(v for _, v in c) for c in curves.values()) or 1.0
    for (name, c), colour in zip(curves.items(), ("red", "blue")):
        pts = [(10 + (w - 20) * s / x_max, h - 10 - (h - 20) * v / y_max) for s, v in c]
        draw.line(pts, fill=colour, width=2)
        draw.text((10, h + 2 + 14 * list(curves).index(name)), f"{name}", fill=colour)
    draw.text((w - 200, 5), f"delta_c max {y_max:.3f}, step {x_max}", fill="black")
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--kd-steps", type=int, default=600)
    ap.add_argument("--ft-steps", type=int, default=600)
    ap.add_argument("--srl", type=float, default=1.0, help="lambda_srl of the distillation used as init")
    ap.add_argument("--per-class", type=int, default=10, help="real finetuning digits per class")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--kd-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra distillation fields, e.g. kd.student_z=random (both KD runs)")
    ap.add_argument("--only", choices=("kd", "kd-no-srl", "ft-kd", "ft-scratch"),
                    help="train just this run and stop (to run several in parallel; the full call skips finished runs)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out
    kd_common = {"teacher.spec": "builtin:digits-32", "condition.kind": "label", "data.batch_size": 4,
                 "optim.lr": 1e-3, **parse_set(args.kd_set)}
    ft = {"data.path": str(out / "pairs"), "condition.kind": "label", "data.batch_size": 16, "loop.ema_decay": 0.99,
          "loss.augment": "translation"}
    runs = {"kd": lambda: train(out / "kd", args.kd_steps, **kd_common, **{"loss.lambda_srl": args.srl}),
            "kd-no-srl": lambda: train(out / "kd-no-srl", args.kd_steps, **kd_common, **{"loss.lambda_srl": 0.0}),
            "ft-kd": lambda: train(out / "ft-kd", args.ft_steps, **ft, init=str(runs["kd"]())),
            "ft-scratch": lambda: train(out / "ft-scratch", args.ft_steps, **ft,
                                        **{"model.z_dim": 64, "model.cond_dim": 32, "model.img_size": 16})}
    pairs = class_folder(out / "pairs", args.per_class)
    if args.only:
        runs[args.only]()
        return
    students = {"kd_init": runs["ft-kd"](), "scratch": runs["ft-scratch"]()}
    runs["kd-no-srl"]()
    _, test_idx = split_indices(0)
    ref = digit_features(real_digits(test_idx)[0])
    results = {"per_class_finetune": args.per_class, "kd_steps": args.kd_steps, "ft_steps": args.ft_steps,
               "lambda_srl": args.srl, "kd_set": args.kd_set}
    figs = []
    for name, ckpt in students.items():
        imgs, labels = class_samples(ckpt, 100)
        results[name] = scores(imgs, labels, ref)
        r = imgs.shape[-1]
        figs.append(grid(imgs.view(10, 100, 3, r, r)[:, :10].reshape(-1, 3, r, r), 10))
    train_imgs = torch.cat([torch.from_numpy(np.array(PIL.Image.open(p))).permute(2, 0, 1)[None]
                            for p in sorted(pairs.glob("*/*.png"))]).float() / 127.5 - 1
    results["finetune_data_itself"] = scores(train_imgs, None, ref)
    from kdpipe.pipeline.teacher.load import load_teacher

    G_T = load_teacher("builtin:digits-32").G
    with torch.no_grad():
        results["teacher_unconditional"] = scores(G_T(z_from_seeds(range(1000), G_T.z_dim)), None, ref)
    sep = np.full((figs[0].shape[0], 4, 3), 255, np.uint8)
    both = PIL.Image.fromarray(np.concatenate([figs[0], sep, figs[1]], 1))
    both.resize((both.width * 3, both.height * 3), PIL.Image.NEAREST).save(out / "figure-samples.png")
    curves = {}
    for name, run in (("with L_srl", out / "kd"), ("without L_srl", out / "kd-no-srl")):
        rec = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        curves[name] = [(r["step"], r["delta_c"]) for r in rec]
        results[f"delta_c_last_{'srl' if run.name == 'kd' else 'no_srl'}"] = round(curves[name][-1][1], 5)
    delta_figure(curves, out / "figure-delta.png")
    text = json.dumps(results, indent=1)
    (out / "results.json").write_text(text)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
