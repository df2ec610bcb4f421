"""A PNG contact sheet of a generated dataset: one row per sample, its images side by side (``kdpipe preview``).

Reads the first shards of ``OUT/<task>/shards/*.tar`` in order; a row shows a sample's images in the order
``x1, x2, y`` (triplets) or ``src, tgt`` (pairs), separated by 2-px gaps, optionally upscaled (nearest) so
32-px digits stay visible. Written atomically.
"""

from __future__ import annotations

import io
import itertools
import tarfile
from pathlib import Path

import numpy as np

from kdpipe.errors import DatasetError
from kdpipe.fsutil import atomic_write_bytes

PART_ORDER = ("x1", "x2", "y", "src", "tgt")
"""Image parts of a sample in display order (triplets x1, x2, y; pairs src, tgt)."""


def _samples(task_dir: Path, n: int):
    from PIL import Image

    tars = sorted((task_dir / "shards").glob("*.tar"))
    if not tars:
        raise DatasetError(f"no shards in {str(task_dir / 'shards')!r}; run kdpipe generate first")
    got = 0
    for tar in tars:
        with tarfile.open(tar) as tf:
            rows: dict[str, dict[str, np.ndarray]] = {}
            for m in tf.getmembers():
                key, _, ext = m.name.partition(".")
                part = ext.removesuffix(".png")
                if ext.endswith(".png") and part in PART_ORDER:
                    with Image.open(io.BytesIO(tf.extractfile(m).read())) as im:
                        rows.setdefault(key, {})[part] = np.asarray(im.convert("RGB"))
            for key in rows:  # tar order = sample order
                yield [rows[key][p] for p in PART_ORDER if p in rows[key]]
                got += 1
                if got >= n:
                    return


def contact_sheet(task_dir: str | Path, png: str | Path, rows: int = 8, columns: int = 1, scale: int = 1,
                  samples=None) -> Path:
    """Write a grid of the first ``rows * columns`` samples of ``task_dir`` to ``png``.

    Args: rows / columns: samples down / across (each sample is a group of its images); scale: integer upscale;
        samples: instead of reading the shards, an iterable of samples, each a list of uint8 ``[H, W, 3]``
        arrays of one size (``kdpipe inspect`` passes its thumbnails).
    Raises: DatasetError when the directory has no shards.
    """
    from PIL import Image

    source = _samples(Path(task_dir), rows * columns) if samples is None else samples
    samples = list(itertools.islice(source, rows * columns))
    if not samples:
        raise DatasetError(f"{str(task_dir)!r} has no samples with images")
    h, w, _ = samples[0][0].shape
    k, gap = len(samples[0]), 2
    cell_w = k * w + (k - 1) * gap
    sheet = np.zeros((rows * (h + gap) - gap, columns * (cell_w + 3 * gap) - 3 * gap, 3), np.uint8)
    for i, images in enumerate(samples):
        r, c = i % rows, i // rows
        for j, img in enumerate(images):
            y0, x0 = r * (h + gap), c * (cell_w + 3 * gap) + j * (w + gap)
            sheet[y0:y0 + h, x0:x0 + w] = img
    im = Image.fromarray(sheet)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return atomic_write_bytes(png, buf.getvalue())
