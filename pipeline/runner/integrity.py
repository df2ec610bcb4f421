"""Output integrity of finished stages: what a stage wrote is recorded (size + sha256) and re-checked before skip.

A state file saying ``done`` is a claim; the files are the truth. When a non-sharded stage finishes, the runner
stores :func:`record_outputs` (every file under its outputs, relative path -> ``{"bytes", "sha256"}``) in the
stage's state; :func:`output_problem` compares the files on disk with that record, so a deleted, truncated or
edited ``manifest.parquet``, ``README.md``, ``SHA256SUMS``, ``sample/w.npy`` or ``directions/direction.json``
makes the stage run again instead of being skipped. Sharded stages keep per-shard records with their own sha256
(:mod:`kdpipe.pipeline.runner.shards`), re-hashed only by ``kdpipe status --deep`` (it reads every byte).
Model taken from DVC: a stage is changed when its outputs changed, checked cheapest first (existence, size, hash).
"""

from __future__ import annotations

from pathlib import Path

from kdpipe.fsutil import file_sha256


def _files(paths: list[Path], root: Path) -> list[Path]:
    """Files under ``paths`` (files themselves, or every file below a directory), temporaries excluded, sorted."""
    found = []
    for p in paths:
        if p.is_dir():
            found.extend(q for q in p.rglob("*") if q.is_file() and not q.name.endswith(".tmp"))
        elif p.is_file():
            found.append(p)
    return sorted(found, key=lambda q: q.relative_to(root).as_posix())


def record_outputs(stage, ctx) -> dict:
    """``{relative path: {"bytes": int, "sha256": hex}}`` of every file a non-sharded stage wrote.

    Sharded stages return ``{}``: their shards carry per-shard done records with size and sha256.
    """
    if stage.sharded:
        return {}
    return {p.relative_to(ctx.out).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in _files(stage.outputs(ctx), ctx.out)}


def output_problem(stage, ctx, state: dict | None, fingerprint: str) -> str | None:
    """Why a stage whose state says ``done`` must run again, or ``None`` when its outputs are intact.

    Checks, cheapest first: every declared output exists; every file recorded at completion exists with the
    recorded size and sha256 (non-sharded stages; their outputs are small); for sharded stages the per-shard
    done records (``stage.check``: file present, size as recorded).
    Returns:
        e.g. ``'output missing: manifest.parquet'``, ``'output changed: README.md (sha256 differs)'``,
        ``'2 shard(s) to redo (x-000001.tar: corrupt)'``.
    """
    for p in stage.outputs(ctx):
        if not p.exists():
            return f"output missing: {p.relative_to(ctx.out).as_posix()}"
    if stage.sharded:
        return stage.check(ctx, fingerprint)
    recorded = (state or {}).get("outputs")
    if recorded is None:  # a state written before outputs were recorded: existence is all we can check
        return None
    for rel, want in sorted(recorded.items()):
        p = ctx.out / rel
        if not p.is_file():
            return f"output missing: {rel}"
        if p.stat().st_size != want["bytes"]:
            return f"output changed: {rel} (size differs)"
        if file_sha256(p) != want["sha256"]:
            return f"output changed: {rel} (sha256 differs)"
    return None
