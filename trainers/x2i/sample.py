"""Conditions -> images with a trained X2I student (``kdpipe translate --checkpoint X2I_CKPT INPUTS... OUT_DIR``).

Inputs, by condition kind: ``label`` -- ``.npy`` files of int labels ``[N]`` or ``.txt`` files of whitespace-separated
labels; ``text`` / ``audio`` -- ``.npy`` vectors ``[D]`` or ``[N, D]``; ``seg`` -- PNG class-index maps (first
channel) or ``.npy`` int maps ``[H, W]`` / ``[N, H, W]``. Condition ``i`` of input ``f`` is written to
``OUT_DIR/<f stem>-<i:04d>.png`` from z of seed ``i`` (NVlabs seed convention, :func:`kdpipe.pipeline.latents.
z_from_seeds`), so a file and its row give the same image at any batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from kdpipe.errors import DatasetError
from kdpipe.images import read_image_file, save_png, to_uint8
from kdpipe.pipeline.latents import z_from_seeds
from kdpipe.trainers.x2i.data import one_hot_labels, one_hot_maps

SUFFIXES = {"label": (".npy", ".txt"), "text": (".npy",), "audio": (".npy",), "seg": (".png", ".npy")}


def read_conditions(path: Path, kind: str, num_classes: int, img_size: int) -> torch.Tensor:
    """One input file -> the tensors the student takes (``[N, K]`` one-hot, ``[N, D]``, ``[N, K, R, R]``).

    Raises:
        DatasetError: missing file, wrong suffix for the kind, unreadable content or a label out of range.
    """
    if not path.is_file() or path.suffix.lower() not in SUFFIXES[kind]:
        raise DatasetError(f"condition input {str(path)!r} is not an existing {'/'.join(SUFFIXES[kind])} file "
                           f"(condition kind {kind})")
    if path.suffix.lower() == ".png":
        return one_hot_maps(read_image_file(path)[0].long()[None], num_classes, img_size)
    try:
        arr = (np.array(path.read_text().split(), dtype=np.int64) if path.suffix.lower() == ".txt"
               else np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"condition input {str(path)!r} cannot be read ({exc})") from None
    t = torch.from_numpy(np.asarray(arr))
    if kind == "label":
        return one_hot_labels(t.reshape(-1).long(), num_classes)
    if kind == "seg":
        return one_hot_maps(t.long().reshape(-1, *t.shape[-2:]), num_classes, img_size)
    return t.float().reshape(-1, t.shape[-1])


@torch.no_grad()
def translate_conditions(G: torch.nn.Module, inputs: Sequence[str | Path], out_dir: str | Path, batch_size: int = 8,
                         device: torch.device | str = "cpu") -> list[Path]:
    """Render every condition of ``inputs`` with the student ``G`` (:class:`kdpipe.trainers.x2i.run.X2IStudent`).

    Returns the written PNG paths, in input order. Raises DatasetError (see :func:`read_conditions`), or when the
    student has no condition encoder (a distilled-only checkpoint: finetune it first).
    """
    if G.encoder is None:
        raise DatasetError("this x2i checkpoint is distilled only (no condition encoder); finetune it with "
                           "`kdpipe train x2i --init RUN --data PAIRS` before translating conditions")
    num_classes = G.cond_in_dim if G.kind == "label" else G.generator.seg_classes
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for f in map(Path, inputs):
        cond = read_conditions(f, G.kind, num_classes, G.img_size)
        for start in range(0, len(cond), batch_size):
            rows = range(start, min(start + batch_size, len(cond)))
            z = z_from_seeds(list(rows), G.z_dim).to(device)
            imgs = to_uint8(G(z, cond[start:rows.stop].to(device))).cpu()
            for i, img in zip(rows, imgs):
                path = out / f"{f.stem}-{i:04d}.png"
                save_png(path, img.numpy())
                written.append(path)
    return written


def translate_x2i(state: dict, req) -> list[Path]:
    """The ``translate`` hook of the ``x2i`` trainer: condition files (``req.inputs``) -> images in ``req.out_dir``.

    ``req`` is a :class:`kdpipe.trainers.translate.TranslateRequest`; references, domains, seeds, ``x2``, ``size``
    and ``align`` mean nothing to a conditional student and are refused. Raises DatasetError as
    :func:`translate_conditions`, KdpipeError for a refused option.
    """
    from kdpipe.devices import resolve_device
    from kdpipe.trainers.x2i.run import load_generator

    req.refuse("x2i", "x2", "ref", "domains", "seeds", "size", "align")
    G = load_generator(state["trainer_state"], req.use_ema).eval().requires_grad_(False)
    dev = resolve_device(req.device)
    return translate_conditions(G.to(dev), req.inputs, req.out_dir, req.batch_size, dev)
