"""``kdpipe publish`` and ``kdpipe verify``: copy a finished dataset anywhere fsspec reaches, with proof.

publish: refuses unless every stage is done; copies each file listed in ``SHA256SUMS`` to a temporary name, moves
it into place, re-reads it from the destination and checks its sha256; files already there with the right sum are
skipped; ``SHA256SUMS`` goes last, so a half-published directory never looks complete. A destination holding
another dataset is refused unless ``--replace`` (a new version swapped in). Names in ``SHA256SUMS`` must be
relative paths inside the dataset, reached without symlinks.
verify: every file in ``SHA256SUMS`` exists with that sum, the manifest's rows match the shards' samples, and the
card's YAML front matter parses (:func:`kdpipe.pipeline.card.check_card`).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import fsspec

from kdpipe.errors import DatasetError, StorageError, storage_error
from kdpipe.fsutil import file_sha256
from kdpipe.pipeline.card import check_card
from kdpipe.pipeline.stages.card import CARD, SUMS
from kdpipe.pipeline.stages.manifest import MANIFEST, read_parquet


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


def check_name(name: str, where: str) -> str:
    """A ``SHA256SUMS`` entry must name a file inside the dataset: relative, no ``..``, no empty parts.

    Raises:
        DatasetError: naming ``where`` and the entry (a ``../`` entry would make publish write, and verify read,
            outside the dataset).
    """
    parts = name.split("/")
    if not name or name.startswith(("/", "\\")) or "\\" in name or ":" in parts[0] \
            or any(p in ("", ".", "..") for p in parts):
        raise DatasetError(f"'{where}' lists {name!r}, which is not a relative path inside the dataset; "
                           "this SHA256SUMS was not written by kdpipe: regenerate the dataset")
    return name


def parse_sums(text: str, where: str) -> list[tuple[str, str]]:
    """``[(sha256, relative path), ...]`` of the text of a ``SHA256SUMS`` file (``sha256sum`` format, two spaces).

    Raises:
        DatasetError: a malformed line, or a name outside the dataset (see :func:`check_name`), naming ``where``.
    """
    entries = []
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise DatasetError(f"malformed line in '{where}': {line[:80]!r}; regenerate the dataset")
        entries.append((digest, check_name(name, where)))
    return entries


def read_sums(fs, root: str) -> list[tuple[str, str]]:
    """``[(sha256, relative path), ...]`` from ``root/SHA256SUMS`` on any fsspec file system.

    Raises:
        DatasetError: absent, malformed, or a name outside the dataset (see :func:`parse_sums`).
    """
    path = f"{root.rstrip('/')}/{SUMS}"
    if not fs.exists(path):
        raise DatasetError(f"no {SUMS} in '{root}': not a finished kdpipe dataset (run 'kdpipe generate' to the end)")
    return parse_sums(fs.cat_file(path).decode(errors="replace"), path)


def local_file(src: Path, name: str) -> Path:
    """``src/name`` if it is a regular file inside ``src`` reached without symlinks, else DatasetError."""
    path = src / name
    for part in [path, *path.parents]:
        if part == src:
            break
        if part.is_symlink():
            raise DatasetError(f"'{part}' is a symlink; publish copies only regular files inside '{src}' "
                               "(replace the link by the file, or regenerate)")
    if not path.is_file():
        raise DatasetError(f"'{path}' listed in {SUMS} is missing; run 'kdpipe verify {src}' and regenerate")
    return path


def _check_destination(fs, root: str, dest: str, names: set[str], sums: bytes, replace: bool) -> bool:
    """Whether ``root`` already holds files. Refuses one that holds another dataset (unless ``replace``).

    Another dataset: a different ``SHA256SUMS``, or any file publish would not write (stale shards a glob
    reader would read). A partial copy of this same dataset (a killed publish) is resumed.
    """
    if fs.exists(root) and not fs.isdir(root):
        raise DatasetError(f"publish destination '{dest}' is a file; pass a directory (new or holding this dataset)")
    if not fs.exists(root):
        return False
    present = {p[len(root.rstrip("/")) + 1:] for p in fs.find(root)}
    other_sums = SUMS in present and fs.cat_file(f"{root.rstrip('/')}/{SUMS}") != sums
    extra = sorted(p for p in present - names - {SUMS} if not p.endswith(".partial"))
    if (other_sums or extra) and not replace:
        why = "a different SHA256SUMS" if other_sums else f"files this dataset does not have ({extra[0]!r}...)"
        raise DatasetError(f"publish destination '{dest}' holds another dataset ({why}); pass --replace to "
                           "publish a new version in its place, or choose an empty destination")
    return bool(present)


def finished_entries(src: Path) -> list[tuple[str, str]]:
    """``SHA256SUMS`` entries ``[(sha256, relative path)]`` of the finished dataset ``src`` (OUT/<task>).

    Raises:
        DatasetError: a stage is not done, or SHA256SUMS is missing or malformed.
    """
    from kdpipe.pipeline.generate import status

    not_done = [r for r in status(src) if r["state"] != "done"]
    if not_done:
        r = not_done[0]
        raise DatasetError(f"'{src}' is not finished: stage {r['stage']} is {r['state']} ({r['detail']}); "
                           "re-run 'kdpipe generate' first")
    return read_sums(fsspec.filesystem("file"), str(src))


def publish(src: Path, dest: str, log=print, replace: bool = False) -> dict:
    """Copy a finished dataset ``src`` (OUT/<task>) to ``dest`` (path or fsspec URL), verifying every checksum.

    A destination holding another dataset is refused unless ``replace``: then a local destination is written
    as a fresh sibling directory and swapped in with two renames (readers see the old or the new dataset);
    on object stores the old ``SHA256SUMS`` is deleted first, stale files removed, and ``SHA256SUMS`` written
    last. ``hf://datasets/ORG/NAME`` goes to the Hugging Face Hub instead (:func:`kdpipe.pipeline.hub.publish_to_hub`).
    Returns ``{'copied': int, 'skipped': int}``.
    Raises:
        DatasetError: empty destination, a stage not done, a source file not matching SHA256SUMS or outside the
            dataset, a destination that is a file or holds another dataset, a copy that does not verify, or an
            OSError (disk full, permission) naming the path.
    """
    if not str(dest).strip():
        raise DatasetError("publish destination is empty; pass a directory or an fsspec URL (s3://bucket/name)")
    if str(dest).startswith("hf://"):
        from kdpipe.pipeline.hub import publish_to_hub

        return publish_to_hub(src, str(dest), log=log, replace=replace)
    src = Path(src)
    entries = finished_entries(src)
    sums_bytes = (src / SUMS).read_bytes()
    fs, root = _fs(dest)
    try:
        held = _check_destination(fs, root, dest, {n for _, n in entries}, sums_bytes, replace)
        if replace and held and _is_local(fs):
            return _swap_in(src, entries, fs, root, dest, log)
        if replace and held:  # object store: the old SHA256SUMS goes first, so the prefix never looks complete
            names = {n for _, n in entries}
            stale = [p for p in fs.find(root) if p[len(root.rstrip("/")) + 1:] not in names]
            for p in sorted(stale, key=lambda p: not p.endswith("/" + SUMS)):
                fs.rm_file(p)
        return _copy_all(src, entries, fs, root, dest, log)
    except OSError as exc:
        err = storage_error(exc)
        if err is None:
            raise
        raise StorageError(f"publish to '{dest}' failed: {err}; re-run publish after fixing it (good files are "
                           "skipped)") from None


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _swap_in(src: Path, entries, fs, root: str, dest: str, log) -> dict:
    """Publish into ``<root>.kdpipe-new``, then rename ``root`` away and the new directory into its place."""
    import shutil

    new, old = root.rstrip("/") + ".kdpipe-new", root.rstrip("/") + ".kdpipe-old"
    for leftover in (new, old):  # of a killed --replace
        shutil.rmtree(leftover, ignore_errors=True)
    report = _copy_all(src, entries, fs, new, dest, log)
    os.replace(root, old)
    os.replace(new, root)
    shutil.rmtree(old)
    return report


def _copy_all(src: Path, entries, fs, root: str, dest: str, log) -> dict:
    """Copy every listed file then ``SHA256SUMS`` (last) into ``root``, each via ``.partial`` and re-hashed."""
    fs.makedirs(root, exist_ok=True)
    copied = skipped = 0
    for digest, name in entries + [(None, SUMS)]:
        source = local_file(src, name)
        if digest is not None and file_sha256(source) != digest:
            raise DatasetError(f"'{source}' does not match {SUMS}; run 'kdpipe verify {src}' and regenerate")
        if digest is None:
            digest = file_sha256(source)
        target = f"{root.rstrip('/')}/{name}"
        if _sha256_remote(fs, target) == digest:
            skipped += 1
            continue
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        tmp = target + ".partial"
        try:
            fs.put_file(str(source), tmp)
            fs.mv(tmp, target)
        finally:
            if fs.exists(tmp):
                fs.rm_file(tmp)
        if _sha256_remote(fs, target) != digest:
            raise DatasetError(f"copy of '{name}' to '{dest}' does not verify (sha256 differs); re-run publish")
        copied += 1
        log(f"published {name}")
    return {"copied": copied, "skipped": skipped}


def verify(path: str) -> list[str]:
    """Problems found in a dataset directory (empty list = OK): each names the file and what is wrong.

    Checks every ``SHA256SUMS`` entry, then that the manifest has one row per sample in each shard.
    """
    if not str(path).strip():
        raise DatasetError("no dataset given to verify; pass a directory or an fsspec URL")
    fs, root = _fs(path)
    problems = []
    for digest, name in read_sums(fs, root):
        if _is_local(fs) and os.path.lexists(Path(root) / name):  # a missing file is reported below
            try:
                local_file(Path(root), name)
            except DatasetError as err:
                problems.append(f"{name}: {err}")
                continue
        actual = _sha256_remote(fs, f"{root.rstrip('/')}/{name}")
        if actual is None:
            problems.append(f"{name}: missing")
        elif actual != digest:
            problems.append(f"{name}: sha256 mismatch (expected {digest[:12]}…, got {actual[:12]}…)")
    if problems:
        return problems
    if any(name == CARD for _, name in read_sums(fs, root)):
        try:
            check_card(fs.cat_file(f"{root.rstrip('/')}/{CARD}").decode("utf-8", "replace"), CARD)
        except DatasetError as err:
            problems.append(f"{CARD}: {err}")
    manifest = read_parquet(fs.cat_file(f"{root.rstrip('/')}/{MANIFEST}"))  # no Arrow threads alive at exit
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
