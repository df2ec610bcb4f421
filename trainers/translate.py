"""Apply a trained student to real images: ``kdpipe translate --checkpoint CKPT IN_DIR_OR_IMAGES OUT_DIR``.

Images are read as RGB, resized (bilinear, antialiased) to the student's training size unless told
otherwise, scaled to [-1, 1], run through the generator (G_ema when the checkpoint has one) in batches,
and written to ``OUT_DIR`` under their own file names (format from the extension; PNG is lossless).
Students with 6-channel input (triplet tasks: style-mix, morph) take a second image per input (``x2``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from kdpipe.errors import DatasetError, KdpipeError

from kdpipe.trainers.core.checkpoint import TrainCheckpointError, load_checkpoint
from kdpipe.devices import resolve_device
from kdpipe.fsutil import atomic_write
from kdpipe.images import read_image_file, to_float, to_uint8

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_student(checkpoint: str | Path, use_ema: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Generator of a training checkpoint (eval mode, on CPU) and its metadata.

    Returns: ``(G, meta)`` with meta keys ``trainer``, ``step``, ``in_channels``, ``image_hw`` [H, W],
    ``kind``, ``task``, ``direction``.
    Raises:
        TrainCheckpointError: unreadable checkpoint or a trainer with no generator loader.
    """
    from .registry import TRAINERS

    state = load_checkpoint(checkpoint)
    name = state.get("trainer")
    loaders = {n: spec.generator for n, spec in TRAINERS.items() if spec.generator is not None}
    if name not in loaders:
        raise TrainCheckpointError(f"checkpoint {str(checkpoint)!r} is from trainer {name!r}; translate supports "
                                   f"{', '.join(sorted(loaders))}")
    ts = state["trainer_state"]
    G = loaders[name](ts, use_ema).eval().requires_grad_(False)
    meta = {"trainer": name, "step": int(state["step"]),
            "in_channels": int(ts.get("generator_kwargs", {}).get("input_nc", 0)),  # 0: conditions (x2i)
            "image_hw": list(ts.get("image_hw") or []), "kind": ts.get("kind"), "task": ts.get("task"),
            "direction": ts.get("direction")}
    return G, meta


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand directories (non-recursive, sorted, image extensions only) and keep explicit files in order.

    Raises:
        DatasetError: an input does not exist, is not an image file, or no images were found.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTS:
                raise DatasetError(f"{str(p)!r} is not an image ({', '.join(IMAGE_EXTS)})")
            files.append(p)
        else:
            raise DatasetError(f"input {str(p)!r} does not exist; pass image files or a directory of images")
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTS)}) found in {[str(i) for i in inputs]}")
    return files


def _match_x2(files: list[Path], x2: Sequence[str | Path]) -> list[Path]:
    if len(x2) == 1 and Path(x2[0]).is_dir():
        pairs = [Path(x2[0]) / f.name for f in files]
        missing = [p for p in pairs if not p.is_file()]
        if missing:
            raise DatasetError(f"second image {str(missing[0])!r} is missing; --x2 DIR needs a file of the same "
                               "name for every input")
        return pairs
    second = list_images(x2)
    if len(second) != len(files):
        raise DatasetError(f"{len(files)} input images but {len(second)} --x2 images; give one second image each")
    return second


def check_output_dir(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output directory that is, or contains, one of the inputs (outputs keep input names: writing
    there would overwrite the user's images).

    Raises:
        DatasetError: naming the output directory and the first input it would overwrite.
    """
    target = out.resolve()
    for f in inputs:
        src = Path(f).resolve()
        if src == target or target in src.parents:
            raise DatasetError(f"output directory {str(out)!r} contains the input {str(f)!r}: translate would "
                               "overwrite your images; pass a new or different OUT_DIR")


def _load(path: Path, hw: tuple[int, int] | None) -> torch.Tensor:
    img = to_float(read_image_file(path))
    if hw is not None and tuple(img.shape[1:]) != hw:
        img = F.interpolate(img[None], size=hw, mode="bilinear", antialias=True, align_corners=False)[0]
    return img


def _save(img_uint8_hwc: torch.Tensor, path: Path) -> None:
    import PIL.Image

    fmt = PIL.Image.registered_extensions().get(path.suffix.lower(), "PNG")
    atomic_write(path, lambda f: PIL.Image.fromarray(img_uint8_hwc.numpy()).save(
        f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {})))


@torch.no_grad()
def translate(checkpoint: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, *,
              x2: Sequence[str | Path] | None = None, batch_size: int = 8, size: int | None = None,
              device: str = "auto", use_ema: bool = True) -> list[Path]:
    """Translate images with a trained student, writing ``OUT_DIR/<same file name>``.

    Args:
        checkpoint: a training checkpoint (``ckpt-*.pt``).
        inputs: image files and/or directories (for triplet students: the x1 images); for conditional x2i
            students, condition files instead (:mod:`kdpipe.trainers.x2i.sample`: labels, vectors, seg maps).
        out_dir: created if needed; outputs keep the input file names.
        x2: triplet students only: a directory with same-named second images, or one file per input.
        batch_size: images per forward pass.
        size: square side to resize to; None = the training size; 0 = keep each image's size (must suit
            the generator's downsampling).
        device: ``auto``, ``cpu``, ``cuda``...
        use_ema: use G_ema if the checkpoint has one.
    Returns: written paths, in input order.
    Raises:
        DatasetError: missing/unreadable inputs, duplicate output names, missing x2 for a 6-channel student,
            an output directory that is or contains an input (:func:`check_output_dir`).
        TrainCheckpointError: unusable checkpoint.
    """
    if batch_size < 1:
        raise KdpipeError(f"batch_size={batch_size} must be >= 1")
    G, meta = load_student(checkpoint, use_ema)
    dev = resolve_device(device)
    G = G.to(dev)
    if meta["trainer"] == "x2i":  # conditions -> images
        from .x2i.sample import translate_conditions

        return translate_conditions(G, inputs, out_dir, batch_size, dev)
    files = list_images(inputs)
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DatasetError(f"two inputs are named {dup!r}; outputs keep file names, so names must be unique")
    if meta["in_channels"] == 6 and not x2:
        raise DatasetError(f"checkpoint {str(checkpoint)!r} is a triplet student (x1, x2 -> y); pass --x2 with "
                           "the second images")
    seconds = _match_x2(files, x2) if meta["in_channels"] == 6 else None
    check_output_dir(Path(out_dir), files + (seconds or []))
    if size is None:
        hw: tuple[int, int] | None = tuple(meta["image_hw"]) if meta["image_hw"] else None  # type: ignore[assignment]
    else:
        hw = None if size == 0 else (size, size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for start in range(0, len(files), batch_size):
        chunk = range(start, min(start + batch_size, len(files)))
        imgs = []
        for i in chunk:
            img = _load(files[i], hw)
            if seconds is not None:
                other = _load(seconds[i], tuple(img.shape[1:]))
                img = torch.cat([img, other], 0)
            imgs.append(img)
        groups: dict[tuple[int, ...], list[int]] = {}
        for j, img in enumerate(imgs):
            groups.setdefault(tuple(img.shape), []).append(j)
        results: dict[int, torch.Tensor] = {}
        for idx in groups.values():
            x = torch.stack([imgs[j] for j in idx]).to(dev)
            y = G(x)
            if y.shape[-2:] != x.shape[-2:]:
                raise DatasetError(f"{str(files[chunk[idx[0]]])!r} is {x.shape[-1]}x{x.shape[-2]} px, a size this "
                                   "student cannot keep; pass --size (e.g. its training size)")
            for j, u8 in zip(idx, to_uint8(y).cpu()):
                results[j] = u8
        for j, i in enumerate(chunk):
            path = out / files[i].name
            _save(results[j], path)
            written.append(path)
    return written
