"""``kdpipe publish`` and ``kdpipe verify``: copy a finished dataset anywhere fsspec reaches, with proof.

publish: refuses unless every stage is done; copies each file listed in ``SHA256SUMS`` to a temporary name, moves
it into place, re-reads it from the destination and checks its sha256; files already there with the right sum are
skipped; ``SHA256SUMS`` goes last, so a half-published directory never looks complete.
verify: every file in ``SHA256SUMS`` exists with that sum, and the manifest's rows match the shards' samples.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import fsspec
import pyarrow.parquet as pq

from kdpipe.errors import DatasetError
from kdpipe.fsutil import file_sha256
from kdpipe.pipeline.stages.card import SUMS
from kdpipe.pipeline.stages.manifest import MANIFEST


def _fs(url: str):
    try:
        return fsspec.core.url_to_fs(str(url))
    except (ImportError, ValueError) as e:
        raise DatasetError(f"cannot open '{url}': {e} (install the fsspec backend for that protocol)") from None


def _sha256_remote(fs, path: str) -> str | None:
    if not fs.exists(path):
        return None
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_sums(fs, root: str) -> list[tuple[str, str]]:
    """``[(sha256, relative path), ...]`` from ``root/SHA256SUMS``. Raises DatasetError if absent or malformed."""
    path = f"{root.rstrip('/')}/{SUMS}"
    if not fs.exists(path):
        raise DatasetError(f"no {SUMS} in '{root}': not a finished kdpipe dataset (run 'kdpipe generate' to the end)")
    entries = []
    for line in fs.cat_file(path).decode().splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise DatasetError(f"malformed line in '{path}': {line!r}")
        entries.append((digest, name))
    return entries


def publish(src: Path, dest: str, log=print) -> dict:
    """Copy a finished dataset ``src`` (OUT/<task>) to ``dest`` (path or fsspec URL), verifying every checksum.

    Returns ``{'copied': int, 'skipped': int}``.
    Raises:
        DatasetError: a stage is not done, a source file does not match SHA256SUMS, or a copy does not verify.
    """
    from kdpipe.pipeline.generate import status

    src = Path(src)
    not_done = [r for r in status(src) if r["state"] != "done"]
    if not_done:
        r = not_done[0]
        raise DatasetError(f"'{src}' is not finished: stage {r['stage']} is {r['state']} ({r['detail']}); "
                           "re-run 'kdpipe generate' first")
    local = fsspec.filesystem("file")
    entries = read_sums(local, str(src))
    fs, root = _fs(dest)
    fs.makedirs(root, exist_ok=True)
    copied = skipped = 0
    for digest, name in entries + [(None, SUMS)]:
        source = src / name
        if digest is not None and _sha256_remote(local, str(source)) != digest:
            raise DatasetError(f"'{source}' does not match {SUMS}; run 'kdpipe verify {src}' and regenerate")
        if digest is None:
            digest = file_sha256(source)
        target = f"{root.rstrip('/')}/{name}"
        if _sha256_remote(fs, target) == digest:
            skipped += 1
            continue
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        tmp = target + ".partial"
        fs.put_file(str(source), tmp)
        fs.mv(tmp, target)
        if _sha256_remote(fs, target) != digest:
            raise DatasetError(f"copy of '{name}' to '{dest}' does not verify (sha256 differs); re-run publish")
        copied += 1
        log(f"published {name}")
    return {"copied": copied, "skipped": skipped}


def verify(path: str) -> list[str]:
    """Problems found in a dataset directory (empty list = OK): each names the file and what is wrong.

    Checks every ``SHA256SUMS`` entry, then that the manifest has one row per sample in each shard.
    """
    fs, root = _fs(path)
    problems = []
    for digest, name in read_sums(fs, root):
        actual = _sha256_remote(fs, f"{root.rstrip('/')}/{name}")
        if actual is None:
            problems.append(f"{name}: missing")
        elif actual != digest:
            problems.append(f"{name}: sha256 mismatch (expected {digest[:12]}…, got {actual[:12]}…)")
    if problems:
        return problems
    manifest = pq.read_table(io.BytesIO(fs.cat_file(f"{root.rstrip('/')}/{MANIFEST}")))
    per_shard: dict[str, int] = {}
    for shard in manifest["shard"].to_pylist():
        per_shard[shard] = per_shard.get(shard, 0) + 1
    for digest, name in read_sums(fs, root):
        if not name.endswith(".tar"):
            continue
        with fs.open(f"{root.rstrip('/')}/{name}", "rb") as f, tarfile.open(fileobj=f) as tar:
            keys = {m.name.split(".", 1)[0] for m in tar.getmembers()}
        shard = name.rsplit("/", 1)[-1]
        if len(keys) != per_shard.get(shard, 0):
            problems.append(f"{name}: {len(keys)} samples but {per_shard.get(shard, 0)} manifest rows")
    return problems
