"""Apply a trained student to real images: ``kdpipe translate --checkpoint CKPT IN_DIR_OR_IMAGES OUT_DIR``.

Any registered trainer whose :class:`~kdpipe.trainers.registry.TrainerSpec` fills one of two hooks:

- ``generator(trainer_state, use_ema) -> nn.Module``: an image-to-image student ``y = G(x)`` (pix2pixHD, X2I...).
  :func:`translate_images` does the rest: images are read as RGB (optionally FFHQ-aligned first, ``align``),
  resized (bilinear, antialiased) to the student's training size unless told otherwise, scaled to [-1, 1], run
  through the generator (G_ema when the checkpoint has one) in batches, and written to ``OUT_DIR`` under their
  own file names (format from the extension; PNG is lossless). Students with 6-channel input (triplet tasks:
  style-mix, morph) take a second image per input (``x2``).
- ``translate(checkpoint_state, request) -> list[Path]``: students whose output is not ``G(x)`` (StarGANv2's
  reference- and latent-guided synthesis, unconditional generators driven by seeds). They use the helpers here
  (:func:`list_images`, :func:`load_images`, :func:`save_image`, :meth:`TranslateRequest.refuse`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from kdpipe.devices import resolve_device
from kdpipe.errors import DatasetError, KdpipeError
from kdpipe.fsutil import atomic_write
from kdpipe.images import read_image_file, to_float, to_uint8
from kdpipe.trainers.core.checkpoint import TrainCheckpointError, load_checkpoint

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class TranslateRequest:
    """Everything ``kdpipe translate`` was asked, as the trainer's ``translate`` hook receives it.

    Attributes:
        checkpoint: the ``ckpt-*.pt`` file.
        inputs: image files / directories to translate (sources); empty for seed-only generators.
        out_dir: where outputs go (created; never one of the inputs' directories).
        x2: triplet students: a directory of same-named second images, or one file per input.
        ref: style-guided students: reference images (files / directories; a directory of domain sub-folders
            gives each reference the domain of its folder).
        domains: target domains by name or index (style-guided students).
        seeds: latent-guided / unconditional students: one output per seed (NVlabs ``seed -> z`` rule).
        batch_size: images per forward pass (>= 1). size: square side; None = training size; 0 = keep.
        device: ``auto``, ``cpu``, ``cuda``... use_ema: G_ema (or the EMA networks) when kept.
        align: FFHQ-align every input photo first (:func:`kdpipe.pipeline.align.align_face`).
    """

    checkpoint: Path
    inputs: tuple[Path, ...] = ()
    out_dir: Path = Path("translated")
    x2: tuple[Path, ...] = ()
    ref: tuple[Path, ...] = ()
    domains: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    batch_size: int = 8
    size: int | None = None
    device: str = "auto"
    use_ema: bool = True
    align: bool = False

    def refuse(self, trainer: str, *options: str) -> None:
        """Raise KdpipeError if any of ``options`` (field names) was given: they mean nothing to ``trainer``."""
        for name in options:
            if getattr(self, name):
                flag = {"ref": "--ref-dir", "domains": "--domain"}.get(name, f"--{name.replace('_', '-')}")
                raise KdpipeError(f"{flag} does not apply to {trainer!r} students (checkpoint "
                                  f"{str(self.checkpoint)!r}); drop it")


def load_student(checkpoint: str | Path, use_ema: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Generator of an image-to-image training checkpoint (eval mode, on CPU) and its metadata.

    Returns: ``(G, meta)`` with meta keys ``trainer``, ``step``, ``in_channels``, ``image_hw`` [H, W],
    ``kind``, ``task``, ``direction``.
    Raises:
        TrainCheckpointError: unreadable checkpoint or a trainer without a ``generator`` hook.
    """
    from .registry import TRAINERS

    state = load_checkpoint(checkpoint)
    name = state.get("trainer")
    spec = TRAINERS.get(name)
    if spec is None or spec.generator is None:
        raise TrainCheckpointError(f"checkpoint {str(checkpoint)!r} is from trainer {name!r}, which has no "
                                   f"image-to-image generator; translate supports {', '.join(translatable())}")
    return _generator_of(state, use_ema)


def _generator_of(state: dict[str, Any], use_ema: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
    from .registry import TRAINERS

    ts = state["trainer_state"]
    G = TRAINERS[state["trainer"]].generator(ts, use_ema).eval().requires_grad_(False)
    meta = {"trainer": state["trainer"], "step": int(state["step"]),
            "in_channels": int(ts.get("generator_kwargs", {}).get("input_nc", 3)),
            "image_hw": list(ts.get("image_hw") or []), "kind": ts.get("kind"), "task": ts.get("task"),
            "direction": ts.get("direction")}
    return G, meta


def translatable() -> list[str]:
    """Names of the registered trainers ``kdpipe translate`` can use (a ``generator`` or ``translate`` hook)."""
    from .registry import TRAINERS

    return sorted(n for n, s in TRAINERS.items() if s.generator is not None or s.translate is not None)


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


def unique_names(files: Sequence[Path], what: str = "inputs") -> None:
    """Raise DatasetError if two files share a stem (outputs are named after it)."""
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise DatasetError(f"two {what} are named {dup!r}; outputs are named after the inputs, so names must be "
                           "unique")


def target_hw(size: int | None, image_hw: Sequence[int] | None) -> tuple[int, int] | None:
    """Resize target: ``size`` None -> the training ``image_hw`` (None if unknown), 0 -> None (keep), else square."""
    if size is None:
        return (int(image_hw[0]), int(image_hw[1])) if image_hw else None
    return None if size == 0 else (size, size)


def load_image(path: Path, hw: tuple[int, int] | None, align: bool = False) -> torch.Tensor:
    """One image file -> float32 ``[3, H, W]`` in [-1, 1], FFHQ-aligned first if ``align``, resized to ``hw``
    (bilinear, antialiased) when given and different.

    Raises:
        DatasetError: unreadable image; NoFaceError (a DatasetError) when ``align`` finds no face.
    """
    u8 = read_image_file(path)
    if align:
        from kdpipe.pipeline.align import align_face

        side = max(hw) if hw else 1024
        try:
            u8 = torch.tensor(align_face(u8.permute(1, 2, 0).numpy(), output_size=side)).permute(2, 0, 1)
        except DatasetError as exc:
            raise type(exc)(f"{str(path)!r}: {exc}") from None
    img = to_float(u8)
    if hw is not None and tuple(img.shape[1:]) != hw:
        img = F.interpolate(img[None], size=hw, mode="bilinear", antialias=True, align_corners=False)[0]
    return img


def load_images(paths: Sequence[Path], hw: tuple[int, int] | None, align: bool = False) -> torch.Tensor:
    """:func:`load_image` for each path, stacked to ``[N, 3, H, W]`` (all must end up the same size).

    Raises:
        DatasetError: as :func:`load_image`, or images of different sizes with ``hw`` None.
    """
    imgs = [load_image(p, hw, align) for p in paths]
    sizes = {tuple(i.shape) for i in imgs}
    if len(sizes) > 1:
        raise DatasetError(f"images {[str(p) for p in paths]} differ in size {sorted(sizes)}; pass --size")
    return torch.stack(imgs)


def save_image(img_uint8_hwc: torch.Tensor, path: Path) -> None:
    """Write a uint8 ``[H, W, 3]`` image atomically; format from the suffix (JPEG at quality 95, else lossless)."""
    import PIL.Image

    fmt = PIL.Image.registered_extensions().get(path.suffix.lower(), "PNG")
    atomic_write(path, lambda f: PIL.Image.fromarray(img_uint8_hwc.numpy()).save(
        f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {})))


@torch.no_grad()
def translate(checkpoint: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, *,
              x2: Sequence[str | Path] | None = None, ref: Sequence[str | Path] | None = None,
              domains: Sequence[str | int] | None = None, seeds: Sequence[int] | None = None,
              batch_size: int = 8, size: int | None = None, device: str = "auto", use_ema: bool = True,
              align: bool = False) -> list[Path]:
    """Translate images with any registered student (the trainer's ``generator`` or ``translate`` hook).

    Args:
        checkpoint: a training checkpoint (``ckpt-*.pt``).
        inputs: image files and/or directories (for triplet students: the x1 images).
        out_dir: created if needed; image-to-image outputs keep the input file names, style-guided outputs are
            named ``<source>__<domain>__ref-<reference>`` / ``<source>__<domain>__seed<NNNN>``.
        x2, ref, domains, seeds: see :class:`TranslateRequest`; an option the student does not use is refused.
        batch_size: images per forward pass. size: square side; None = training size; 0 = keep each size.
        device: ``auto``, ``cpu``, ``cuda``... use_ema: use the EMA weights if the checkpoint keeps them.
        align: FFHQ-align input photos first (faces students were trained on aligned faces).
    Returns: written paths, in input order.
    Raises:
        DatasetError: missing/unreadable inputs, duplicate names, missing x2 / references, an output directory
            that is or contains an input (:func:`check_output_dir`), no face found with ``align``.
        TrainCheckpointError: unusable checkpoint, or a trainer translate cannot use.
        KdpipeError: an option the student does not take, ``batch_size < 1``.
    """
    from .registry import TRAINERS

    if batch_size < 1:
        raise KdpipeError(f"batch_size={batch_size} must be >= 1")
    req = TranslateRequest(Path(checkpoint), tuple(Path(i) for i in inputs), Path(out_dir),
                           tuple(Path(p) for p in x2 or ()), tuple(Path(p) for p in ref or ()),
                           tuple(str(d) for d in domains or ()), tuple(int(s) for s in seeds or ()),
                           batch_size, size, device, use_ema, align)
    state = load_checkpoint(checkpoint)
    spec = TRAINERS.get(state.get("trainer"))
    if spec is not None and spec.translate is not None:
        return spec.translate(state, req)
    if spec is None or spec.generator is None:
        raise TrainCheckpointError(f"checkpoint {str(checkpoint)!r} is from trainer {state.get('trainer')!r}; "
                                   f"translate supports {', '.join(translatable())}")
    return translate_images(state, req)


def translate_images(state: dict[str, Any], req: TranslateRequest) -> list[Path]:
    """The ``generator`` hook's translation: ``y = G(x)`` per input, written under the input's file name.

    Args: state: the loaded checkpoint; req: the request (``ref``, ``domains``, ``seeds`` are refused).
    Returns: written paths, in input order. Raises: as :func:`translate`.
    """
    req.refuse(state["trainer"], "ref", "domains", "seeds")
    G, meta = _generator_of(state, req.use_ema)
    dev = resolve_device(req.device)
    G = G.to(dev)
    files = list_images(req.inputs)
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DatasetError(f"two inputs are named {dup!r}; outputs keep file names, so names must be unique")
    if meta["in_channels"] == 6 and not req.x2:
        raise DatasetError(f"checkpoint {str(req.checkpoint)!r} is a triplet student (x1, x2 -> y); pass --x2 "
                           "with the second images")
    if meta["in_channels"] != 6:
        req.refuse(state["trainer"], "x2")
    seconds = _match_x2(files, req.x2) if meta["in_channels"] == 6 else None
    check_output_dir(req.out_dir, files + (seconds or []))
    hw = target_hw(req.size, meta["image_hw"])
    req.out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for start in range(0, len(files), req.batch_size):
        chunk = range(start, min(start + req.batch_size, len(files)))
        imgs = []
        for i in chunk:
            img = load_image(files[i], hw, req.align)
            if seconds is not None:
                img = torch.cat([img, load_image(seconds[i], tuple(img.shape[1:]), req.align)], 0)
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
            path = req.out_dir / files[i].name
            save_image(results[j], path)
            written.append(path)
    return written
