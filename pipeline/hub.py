"""``kdpipe publish OUT/<task> hf://datasets/ORG/NAME``: a finished dataset to the Hugging Face Hub, with proof.

Through ``huggingface_hub`` (``HfApi``; token from ``HF_TOKEN`` or ``hf auth login``): the repository is created
if needed (``exist_ok``), the files of ``SHA256SUMS`` (shards, manifest, the card ``README.md``) are committed in
batches of :data:`FILES_PER_COMMIT`, ``SHA256SUMS`` in a last commit of its own, so the repository never looks
complete before it is. Resumable: every file the hub already holds with the right hash is skipped (a hub commit
is atomic, so a killed publish leaves whole batches). Verified: after the upload, every file's hash as the hub
reports it (``list_repo_tree``: the LFS sha256 of large files, the git blob sha1 of small ones) must equal the
local file's, else :class:`~kdpipe.errors.DatasetError` names the files.

A repository holding another dataset (a different ``SHA256SUMS``, or files this dataset does not have, apart
from ``.gitattributes``) is refused unless ``replace``: then one commit deletes the old ``SHA256SUMS`` and those
files first. ``hf://datasets/ORG/NAME/sub/dir`` publishes under that folder; ``@rev`` after NAME picks a branch
(created from main when missing).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kdpipe.errors import ConfigError, DatasetError
from kdpipe.fsutil import file_sha256
from kdpipe.pipeline.publish import finished_entries, local_file
from kdpipe.pipeline.stages.card import SUMS

FILES_PER_COMMIT = 50
"""Files per hub commit (one commit is the unit a killed publish keeps)."""
KEPT_REMOTE = {".gitattributes"}
"""Files a dataset repository has of its own, which publish neither needs nor deletes."""


@dataclass(frozen=True)
class HubTarget:
    """Where ``hf://datasets/ORG/NAME[@revision][/path]`` points: ``repo_id`` ``ORG/NAME``, the branch and the
    folder inside the repository (``''`` = its root, where ``README.md`` is the dataset card)."""

    repo_id: str
    revision: str
    path: str

    def remote(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name


def parse_hub_url(url: str) -> HubTarget:
    """Split ``hf://datasets/ORG/NAME[@revision][/path]``.

    Raises:
        ConfigError: not a dataset URL of that form (models and spaces are not datasets).
    """
    match = re.fullmatch(r"hf://datasets/([\w.-]+/[\w.-]+)(?:@([\w./-]+?))?(?:/(.*?))?/?", url)
    if not match:
        raise ConfigError(f"publish destination {url!r}: write hf://datasets/ORG/NAME (optionally @BRANCH and "
                          "/FOLDER); kdpipe publishes dataset repositories")
    return HubTarget(match[1], match[2] or "main", (match[3] or "").strip("/"))


def git_blob_sha1(path: Path) -> str:
    """Git's object id of a file: ``sha1(b"blob <size>\\0" + bytes)`` (what the hub reports for non-LFS files)."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def remote_hashes(api, target: HubTarget) -> dict[str, tuple[str | None, str]]:
    """``{path in the repo: (LFS sha256 or None, git blob sha1)}`` of every file the hub lists at ``target``."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        tree = api.list_repo_tree(target.repo_id, path_in_repo=target.path or None, recursive=True,
                                  repo_type="dataset", revision=target.revision)
        return {f.path: (f.lfs.sha256 if f.lfs else None, f.blob_id) for f in tree if hasattr(f, "blob_id")}
    except RevisionNotFoundError:
        return {}


def matches(remote: tuple[str | None, str] | None, local: Path, sha256: str) -> bool:
    """Whether the hub's hashes ``remote`` (see :func:`remote_hashes`) are those of ``local`` (sha256 ``sha256``)."""
    if remote is None:
        return False
    lfs_sha256, blob_sha1 = remote
    return lfs_sha256 == sha256 if lfs_sha256 else blob_sha1 == git_blob_sha1(local)


def publish_to_hub(src: str | Path, url: str, log: Callable[[str], None] = print, replace: bool = False,
                   token: str | None = None, api=None, private: bool | None = None) -> dict:
    """Upload the finished dataset ``src`` (OUT/<task>) to the dataset repository ``url``; see the module docstring.

    Args:
        token: a Hugging Face token; ``None`` = ``HF_TOKEN`` or the token saved by ``hf auth login``.
        api: an ``huggingface_hub.HfApi`` (tests); ``None`` = a new one with ``token``.
        private: visibility of a repository this call creates (``None`` = the hub's default).
    Returns:
        ``{'copied': files uploaded, 'skipped': files already on the hub}``.
    Raises:
        ConfigError: a malformed URL or no token; DatasetError: an unfinished dataset, a repository holding another
        dataset (without ``replace``), a hub error, or files whose hub hash differs after the upload.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    target = parse_hub_url(url)
    src = Path(src)
    entries = finished_entries(src)
    files = [(digest, name, local_file(src, name)) for digest, name in entries]
    for digest, name, path in files:
        if file_sha256(path) != digest:
            raise DatasetError(f"'{path}' does not match {SUMS}; run 'kdpipe verify {src}' and regenerate")
    sums_path = local_file(src, SUMS)
    files.append((file_sha256(sums_path), SUMS, sums_path))
    if api is None:
        if (token or get_token()) is None:
            raise ConfigError("no Hugging Face token: set HF_TOKEN or run 'hf auth login', then re-run publish")
        api = HfApi(token=token)

    def commit(operations, message: str) -> None:
        api.create_commit(target.repo_id, operations, commit_message=message, repo_type="dataset",
                          revision=target.revision)

    try:
        api.create_repo(target.repo_id, repo_type="dataset", exist_ok=True, private=private)
        if target.revision != "main":
            api.create_branch(target.repo_id, branch=target.revision, repo_type="dataset", exist_ok=True)
        remote = remote_hashes(api, target)
        names = {target.remote(name) for _, name, _ in files}
        extra = sorted(p for p in remote if p not in names and p.rsplit("/", 1)[-1] not in KEPT_REMOTE)
        old_sums = remote.get(target.remote(SUMS))
        other = old_sums is not None and not matches(old_sums, sums_path, files[-1][0])
        if (other or extra) and not replace:
            why = f"a different {SUMS}" if other else f"files this dataset does not have ({extra[0]!r}...)"
            raise DatasetError(f"'{url}' holds another dataset ({why}); pass --replace to publish a new version "
                               "in its place, or choose another repository")
        if other or extra:
            stale = ([target.remote(SUMS)] if other else []) + extra
            commit([CommitOperationDelete(p) for p in stale], f"kdpipe publish: remove {len(stale)} old file(s)")
            remote = {p: h for p, h in remote.items() if p not in stale}
        todo = [(name, path) for digest, name, path in files if not matches(remote.get(target.remote(name)), path,
                                                                              digest)]
        data, last = [t for t in todo if t[0] != SUMS], [t for t in todo if t[0] == SUMS]
        for start in range(0, len(data), FILES_PER_COMMIT):
            batch = data[start:start + FILES_PER_COMMIT]
            commit([CommitOperationAdd(target.remote(n), str(p)) for n, p in batch],
                   f"kdpipe publish: {start + len(batch)} of {len(data)} file(s)")
            log(f"uploaded {start + len(batch)} of {len(data)} file(s)")
        if last:
            commit([CommitOperationAdd(target.remote(SUMS), str(sums_path))], f"kdpipe publish: {SUMS}")
        remote = remote_hashes(api, target)
    except HfHubHTTPError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"publish to '{url}' failed: {first_line}; re-run publish (files already on the hub "
                           "are skipped)") from None
    bad = [name for digest, name, path in files if not matches(remote.get(target.remote(name)), path, digest)]
    if bad:
        raise DatasetError(f"after the upload the hub's hash of {len(bad)} file(s) differs from the local file "
                           f"({', '.join(bad[:3])}); re-run publish")
    log(f"verified {len(files)} file(s) against the hub's hashes")
    return {"copied": len(todo), "skipped": len(files) - len(todo)}
