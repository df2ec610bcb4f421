"""``kdpipe inspect OUT/<task>``: a static, browsable HTML page of a dataset (and a PNG contact sheet).

Written to ``OUT/<task>/inspect/`` (or ``out_dir``)::

    index.html            the page (template ``pipeline/templates/inspect.html``: plain JS and CSS, no CDN)
    data/meta.js          columns (kind, min / max, distinct values), image parts, chunk count
    data/rows-NNNN.js     the manifest, ``chunk_rows`` samples per file, one JSON array per row
    thumbs/<shard>/<key>.<part>.png   thumbnails (longest side <= ``thumb_size`` px; never upscaled)
    contact_sheet.png     the first samples side by side (:func:`kdpipe.pipeline.preview.contact_sheet`)

Every ``manifest.parquet`` column is shown, sortable and filterable: attributes and their confidences, identity
distance when the manifest has it, latent steps (``src_t`` / ``tgt_t``), seeds... The browser pages through
the rows (50 per page by default) and loads only the thumbnails of the page it shows, so 50,000 samples stay
responsive. Data files are JSON wrapped in one function call (``KDPIPE_INSPECT.rows(k, [...])``) so the page
works opened straight from disk (``file://``, where browsers refuse ``fetch`` of local JSON) as well as
served over HTTP.

Thumbnails are made once: each shard's folder records the shard's sha256 (from ``SHA256SUMS``, else its size
and mtime) and is rebuilt only when the shard changes. A folder is written under a temporary name and renamed
when complete, so an interrupted run never leaves a folder that looks done.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any, Callable

from kdpipe.errors import ConfigError, DatasetError
from kdpipe.fsutil import atomic_write_text
from kdpipe.pipeline.preview import PART_ORDER

INSPECT_DIR = "inspect"
THUMB_DIR = "thumbs"
STAMP = ".source"
MAX_DISTINCT = 50
"""String columns with at most this many distinct values get a drop-down filter; others a text filter."""
TEMPLATE = Path(__file__).with_name("templates") / "inspect.html"


def _shard_stamps(task_dir: Path) -> dict[str, str]:
    """``{shard file name: sha256}`` from ``SHA256SUMS`` (empty if absent)."""
    from kdpipe.pipeline.publish import parse_sums

    sums = task_dir / "SHA256SUMS"
    if not sums.is_file():
        return {}
    return {Path(name).name: digest for digest, name in parse_sums(sums.read_text(), str(sums))
            if name.startswith("shards/")}


def _stamp(shard: Path, sums: dict[str, str]) -> str:
    st = shard.stat()
    return sums.get(shard.name) or f"size={st.st_size} mtime_ns={st.st_mtime_ns}"


def _thumbnail(data: bytes, where: str, side: int) -> bytes:
    """PNG bytes of the image shrunk to a longest side of ``side`` px (Lanczos); an image already that small
    keeps its own bytes (after decoding them once, so a broken image is reported here, not in the browser)."""
    from PIL import Image

    from kdpipe.images import decode_image

    rgb = decode_image(data, where).permute(1, 2, 0).numpy()
    if max(rgb.shape[:2]) <= side and data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    img = Image.fromarray(rgb)
    img.thumbnail((side, side), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def shard_thumbnails(shard: Path, dest: Path, side: int, stamp: str) -> list[str]:
    """Thumbnails of every ``<key>.<part>.png`` of one shard into ``dest/<key>.<part>.png``, unless ``dest``
    already holds them for ``stamp``.

    Returns: the image part names found (e.g. ``["src", "tgt"]``).
    Raises:
        DatasetError: the shard cannot be read or holds an undecodable image.
    """
    stamp_file = dest / STAMP
    if stamp_file.is_file():
        saved = json.loads(stamp_file.read_text())
        if saved.get("stamp") == stamp and saved.get("side") == side:
            return saved["parts"]
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    parts: set[str] = set()
    try:
        with tarfile.open(shard) as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                if not m.isfile() or not ext.endswith(".png") or "/" in m.name:
                    continue
                part = ext[:-len(".png")]
                (tmp / m.name).write_bytes(_thumbnail(tf.extractfile(m).read(), f"{shard.name}:{m.name}", side))
                parts.add(part)
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"shard {str(shard)!r} cannot be read ({exc}); re-run 'kdpipe generate' to repair it") \
            from None
    ordered = [p for p in PART_ORDER if p in parts] + sorted(parts - set(PART_ORDER))  # other parts follow, sorted
    (tmp / STAMP).write_text(json.dumps({"stamp": stamp, "side": side, "parts": ordered}))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return ordered


def _cell(value: Any) -> Any:
    """A JSON-able table cell: numbers stay numbers (NaN / inf -> None), lists and dicts -> compact JSON text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (int, str)):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def describe_columns(names: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    """Per column: ``{"name", "kind": "number" | "string", "min", "max"}`` (numbers) or ``"values"`` (strings with
    at most :data:`MAX_DISTINCT` distinct values, sorted; else None)."""
    out = []
    for j, name in enumerate(names):
        vals = [r[j] for r in rows if r[j] is not None]
        if all(isinstance(v, (int, float)) for v in vals):
            out.append({"name": name, "kind": "number", "min": min(vals, default=None),
                        "max": max(vals, default=None)})
        else:
            distinct = sorted({str(v) for v in vals})
            out.append({"name": name, "kind": "string",
                        "values": distinct if len(distinct) <= MAX_DISTINCT else None})
    return out


def _js_call(fn: str, *args: Any) -> str:
    return f"KDPIPE_INSPECT.{fn}({', '.join(json.dumps(a, separators=(',', ':'), allow_nan=False) for a in args)});\n"


def build_inspect(task_dir: str | Path, out_dir: str | Path | None = None, *, thumb_size: int = 96,
                  chunk_rows: int = 1000, page_size: int = 50, sheet_rows: int = 8, sheet_columns: int = 4,
                  log: Callable[[str], None] | None = None) -> Path:
    """Write the inspection page of a finished dataset ``task_dir`` (see the module docstring).

    Args:
        task_dir: ``OUT/<task>`` with ``manifest.parquet`` and ``shards/*.tar``.
        out_dir: where to write; None = ``task_dir/inspect``.
        thumb_size: longest thumbnail side in pixels (>= 8); images are shrunk (Lanczos), never enlarged.
        chunk_rows: manifest rows per data file (>= 1). page_size: samples per page in the browser (>= 1).
        sheet_rows, sheet_columns: samples down / across in ``contact_sheet.png``.
        log: progress messages (one per shard whose thumbnails are made).
    Returns: the path of ``index.html``.
    Raises:
        DatasetError: no manifest (the dataset is unfinished), a manifest row naming a shard that is missing,
            an unreadable shard. ConfigError: a size argument out of range.
    """
    from kdpipe.pipeline.preview import contact_sheet
    from kdpipe.pipeline.runner.shards import SHARD_DIR
    from kdpipe.pipeline.stages.manifest import MANIFEST, read_parquet

    for name, value, low in (("thumb_size", thumb_size, 8), ("chunk_rows", chunk_rows, 1),
                             ("page_size", page_size, 1)):
        if value < low:
            raise ConfigError(f"{name}={value} must be >= {low}")
    task = Path(task_dir)
    manifest = task / MANIFEST
    if not manifest.is_file():
        raise DatasetError(f"no {MANIFEST} in {str(task)!r}: not a finished dataset; run 'kdpipe generate' to the "
                           "end (or pass OUT/<task>)")
    out = task / INSPECT_DIR if out_dir is None else Path(out_dir)
    table = read_parquet(manifest)
    names = table.column_names
    for needed in ("key", "shard"):
        if needed not in names:
            raise DatasetError(f"{str(manifest)!r} has no {needed!r} column; regenerate the dataset")
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    shard_col = names.index("shard")
    sums = _shard_stamps(task)
    parts: list[str] = []
    shard_names = list(dict.fromkeys(r[shard_col] for r in rows))
    for shard_name in shard_names:
        if not isinstance(shard_name, str) or Path(shard_name).name != shard_name or not shard_name.endswith(".tar"):
            raise DatasetError(f"manifest row names shard {shard_name!r}, not a file name in shards/; regenerate "
                               "the dataset")
        shard = task / SHARD_DIR / shard_name
        if not shard.is_file():
            raise DatasetError(f"manifest row names shard {str(shard)!r}, which is missing; re-run 'kdpipe generate'")
        dest = out / THUMB_DIR / Path(shard_name).stem
        if log and not (dest / STAMP).is_file():
            log(f"thumbnails of {shard_name}")
        for p in shard_thumbnails(shard, dest, thumb_size, _stamp(shard, sums)):
            if p not in parts:
                parts.append(p)
    keep = {Path(n).stem for n in shard_names}
    for stale in (out / THUMB_DIR).glob("*") if (out / THUMB_DIR).is_dir() else []:
        if stale.name not in keep:  # shards gone from the dataset, or a run interrupted mid-shard (*.tmp)
            shutil.rmtree(stale, ignore_errors=True)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    n_chunks = math.ceil(len(rows) / chunk_rows)
    for k in range(n_chunks):
        atomic_write_text(data / f"rows-{k:04d}.js", _js_call("rows", k, rows[k * chunk_rows:(k + 1) * chunk_rows]))
    for stale in data.glob("rows-*.js"):
        if int(stale.stem.split("-")[1]) >= n_chunks:
            stale.unlink()
    meta = {"task": task.name, "total": len(rows), "columns": describe_columns(names, rows), "parts": parts,
            "chunks": n_chunks, "page_size": page_size, "thumb_dir": THUMB_DIR, "thumb_size": thumb_size}
    atomic_write_text(data / "meta.js", _js_call("meta", meta))
    page = TEMPLATE.read_text().replace("{{TITLE}}", _html_escape(f"kdpipe inspect: {task.name}"))
    index = atomic_write_text(out / "index.html", page)
    if rows and parts:
        first = [(r[names.index("key")], r[shard_col]) for r in rows[:sheet_rows * sheet_columns]]
        thumbs = [[_read_rgb(out / THUMB_DIR / Path(shard).stem / f"{key}.{p}.png") for p in parts]
                  for key, shard in first]
        contact_sheet(task, out / "contact_sheet.png", sheet_rows, sheet_columns,
                      scale=max(1, 64 // thumbs[0][0].shape[0]), samples=thumbs)
    return Path(index)


def _read_rgb(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)
