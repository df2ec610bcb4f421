"""Stage ``card``: the dataset card ``README.md`` (YAML front matter for dataset hubs) and ``SHA256SUMS`` over the
shards, the manifest and the card. Byte-reproducible: no timestamps, files in shard order."""

from __future__ import annotations

import json
from pathlib import Path

from kdpipe.fsutil import atomic_write_text, file_sha256
from kdpipe.pipeline.card import render_card
from kdpipe.pipeline.runner.shards import SHARD_DIR, list_shards
from kdpipe.pipeline.runner.stage import Context, SingleStage
from kdpipe.pipeline.stages.manifest import MANIFEST, read_parquet

CARD = "README.md"
SUMS = "SHA256SUMS"


class CardStage(SingleStage):
    """``card``: ``README.md`` and ``SHA256SUMS`` (see module docstring)."""

    name = "card"
    sections = ("teacher", "card")
    schema_version = 1

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.out / CARD, ctx.out / SUMS]

    def run(self, ctx: Context, fingerprint: str) -> dict:
        table = read_parquet(ctx.out / MANIFEST)
        summaries = {}
        for name in ctx.cfg.stages:
            state_path = ctx.out / "stages" / f"{name}.json"
            if state_path.exists():
                summaries[name] = json.loads(state_path.read_text()).get("summary", {})
        teacher = ctx.teacher
        card = render_card(ctx.cfg.to_dict(), table, teacher.name, teacher.sha256, teacher.format, summaries)
        atomic_write_text(ctx.out / CARD, card)
        files = [p.relative_to(ctx.out) for p in list_shards(ctx.out / SHARD_DIR)]
        files += [Path(MANIFEST), Path(CARD)]
        atomic_write_text(ctx.out / SUMS, "".join(f"{file_sha256(ctx.out / f)}  {f.as_posix()}\n" for f in files))
        return {"files": len(files)}
