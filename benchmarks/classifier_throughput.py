"""Throughput of the classifiers (images/s) on a batch of real 256 px face photos.

Usage: python benchmarks/classifier_throughput.py [--device cpu|cuda] [--resolution 256]
       [--batch 32] [--repeats 3] [--detect-resolution 256]

Images: scikit-image's astronaut photo resized to the resolution, with flips and small
shifts so the batch is not one image repeated. Prints a table: stage, batch, images/s
(best of --repeats). Stages: MTCNN detection; dlib landmarks + chip extraction; gender and
age ONNX models (1 and 2 intra-op threads); the whole face-attributes classifier; image
statistics.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F


def _faces(resolution: int, n: int) -> torch.Tensor:
    from skimage import data

    base = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    base = F.interpolate(base, size=(resolution, resolution), mode="area")
    out = []
    for i in range(n):
        img = base.roll(shifts=(i % 5 - 2) * resolution // 64, dims=3)
        out.append(img.flip(3) if i % 2 else img)
    return torch.cat(out)


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detect-resolution", type=int, default=None, help="MTCNN on a downsampled copy")
    args = parser.parse_args()

    from kdpipe.pipeline.attributes.classifiers import build_classifier, images_to_uint8
    from kdpipe.pipeline.attributes.faces import AgeGenderModels, FaceClassifier, _dlib_box

    images = _faces(args.resolution, args.batch).to(args.device)
    n = len(images)
    rows = []
    face = FaceClassifier(["face"], device=args.device, detect_resolution=args.detect_resolution)
    for bs in (1, 8, n):
        sec = _best(lambda: [face.detect(images[i : i + bs]) for i in range(0, n, bs)], args.repeats)
        rows.append((f"MTCNN detect ({args.device})", bs, n / sec))
    u8, prob, box, _ = face.detect(images)
    found = int((prob > 0).sum())
    models = AgeGenderModels()

    def extract() -> list[dict]:
        return [models.chips(u8[i], _dlib_box(box[i])) for i in range(n) if prob[i] > 0]

    sec = _best(extract, args.repeats)
    chips = extract()
    rows.append(("dlib landmarks + 2 chips (CPU)", 1, found / sec))
    for threads in (1, 2):
        m = AgeGenderModels(onnx_threads=threads)
        for task in ("gender", "age"):
            stack = np.stack([c[task] for c in chips])
            sec = _best(lambda: m.probabilities(task, stack), args.repeats)
            rows.append((f"{task} ONNX, {threads} thread(s)", len(stack), len(stack) / sec))
    full = build_classifier("face-attributes", device=args.device, detect_resolution=args.detect_resolution)
    sec = _best(lambda: full(images), args.repeats)
    rows.append((f"face-attributes end to end ({args.device})", n, n / sec))
    stats = build_classifier("image-stats")
    sec = _best(lambda: stats(images), args.repeats)
    rows.append(("image-stats", n, n / sec))
    sec = _best(lambda: images_to_uint8(images), args.repeats)
    rows.append(("images_to_uint8", n, n / sec))

    print(f"resolution {args.resolution} px (MTCNN at {args.detect_resolution or args.resolution}), {n} images, "
          f"faces found {found}/{n}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'stage':44s} {'batch':>6s} {'images/s':>10s}")
    for name, bs, ips in rows:
        print(f"{name:44s} {bs:6d} {ips:10.1f}")


if __name__ == "__main__":
    main()
