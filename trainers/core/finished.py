"""Trainers read only finished datasets: ``SHA256SUMS`` present, and every shard read matches it.

``kdpipe generate`` writes ``OUT/<task>/SHA256SUMS`` last (card stage), so its absence means the run was
interrupted or is still going; a shard whose sha256 differs from its line was modified or corrupted after.
:func:`require_finished` is called when a dataset directory is resolved; :func:`verify_shard` when a local shard
is first opened, hashing it once per process (cached by path, size and mtime, so a rewritten file is hashed again).
"""

from __future__ import annotations

import os
from pathlib import Path

from kdpipe.errors import DatasetError
from kdpipe.fsutil import file_sha256
from kdpipe.pipeline.publish import parse_sums

SUMS = "SHA256SUMS"
_sums_cache: dict[tuple[str, int, int], dict[str, str]] = {}
_verified: set[tuple[str, int, int]] = set()


def _key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _read_sums(sums: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of a ``SHA256SUMS`` file (:func:`kdpipe.pipeline.publish.parse_sums`, the one
    parser; cached by size and mtime)."""
    key = _key(sums)
    if key not in _sums_cache:
        text = sums.read_text(errors="replace")
        _sums_cache[key] = {name: digest for digest, name in parse_sums(text, str(sums))}
    return _sums_cache[key]


def require_finished(root: Path) -> None:
    """Refuse a dataset directory ``root`` (``OUT/<task>``) whose generation did not finish.

    Raises:
        DatasetError: no ``SHA256SUMS`` in ``root``, or a shard it lists is missing; the message names the
            command that finishes the dataset.
    """
    sums = root / SUMS
    if not sums.is_file():
        raise DatasetError(f"dataset '{root}' is unfinished: it has no {SUMS} (generation was interrupted or is "
                           f"still running); re-run the same 'kdpipe generate' command to finish it "
                           f"('kdpipe status {root}' shows what is missing)")
    missing = [n for n in _read_sums(sums) if n.endswith(".tar") and not (root / n).is_file()]
    if missing:
        raise DatasetError(f"dataset '{root}' is incomplete: {len(missing)} shard(s) listed in {SUMS} are missing "
                           f"(first: {missing[0]!r}); re-run the 'kdpipe generate' command to rebuild them")


def _sums_for(shard: Path) -> tuple[Path, str] | None:
    """The ``SHA256SUMS`` governing a local shard (beside it, or in the dataset dir above ``shards/``) and the
    shard's name in it; ``None`` when there is none (a loose tar the user pointed at)."""
    for root in (shard.parent, shard.parent.parent):
        sums = root / SUMS
        if sums.is_file():
            return sums, os.path.relpath(shard, root).replace(os.sep, "/")
    return None


def verify_shard(url: str) -> None:
    """Check a local shard against its dataset's ``SHA256SUMS`` once per (path, size, mtime) per process.

    Remote (``s3://``...) and ``pipe:`` URLs, and loose tars with no ``SHA256SUMS`` above them, are not checked
    (``kdpipe verify`` does that). Raises:
        DatasetError: the shard is not listed, or its sha256 differs (names the file and how to repair it).
    """
    if url.startswith("pipe:") or ("://" in url and not url.startswith("file://")):
        return
    path = Path(url[len("file://"):] if url.startswith("file://") else url)
    if not path.is_file():
        return  # opening it reports the missing file
    key = _key(path)
    if key in _verified:
        return
    found = _sums_for(path)
    if found is None:
        return
    sums, name = found
    digest = _read_sums(sums).get(name)
    if digest is None:
        raise DatasetError(f"shard '{path}' is not listed in '{sums}': it is not part of this finished dataset; "
                           "remove it, or re-run 'kdpipe generate' if the dataset changed")
    if file_sha256(path) != digest:
        raise DatasetError(f"shard '{path}' is corrupt: its sha256 differs from '{sums}'; delete it and re-run "
                           f"the 'kdpipe generate' command to rebuild it ('kdpipe status --deep {sums.parent}')")
    _verified.add(key)
