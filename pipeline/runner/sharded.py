"""Shared bookkeeping of sharded stages: which shards exist, which are done, which this rank owns.

Work item ``i`` lands in shard ``i // shard_size``; shard ``k`` belongs to rank ``k % world_size``. A shard is
done when its file exists and its done record (``.done/<name>.json``) carries the stage's fingerprint and the
file's size; anything else is redone by the next run.
"""

from __future__ import annotations

import glob
from pathlib import Path

from tqdm import tqdm

from kdpipe.pipeline.runner.shards import SHARD_DIR, read_record, shard_name, shard_state
from kdpipe.pipeline.runner.stage import Context


def shard_ranges(n: int, shard_size: int) -> list[range]:
    """Sample index ranges of each shard: ``[range(0, s), range(s, 2s), ...]`` covering ``[0, n)``."""
    return [range(a, min(a + shard_size, n)) for a in range(0, n, shard_size)]


class ShardedStage:
    """Shared shard bookkeeping for sharded stages: which shards exist, which are done, which this rank owns.

    Subclasses set ``name``, ``sections``, ``schema_version`` and implement ``n_items(ctx)``, ``shard_size(ctx)``
    and ``write_one(ctx, k, indices, path, progress, fingerprint)`` (which records the shard done under
    ``fingerprint``); they may override ``shard_dir``, ``part_name`` and ``validate``.
    """

    sharded = True
    device_dependent = True
    unit = "shards"  # what `kdpipe status` calls the pieces

    def revisions(self, cfg) -> dict:
        return {}

    def validate(self, cfg, teacher) -> None:
        return None

    def shard_dir(self, ctx) -> Path:
        return ctx.out / SHARD_DIR

    def outputs(self, ctx) -> list[Path]:
        return [self.shard_dir(ctx)]

    def part_name(self, ctx, k: int) -> str:
        return shard_name(ctx.cfg.task, k)

    def shards(self, ctx) -> list[tuple[int, range, str]]:
        return [(k, r, self.part_name(ctx, k))
                for k, r in enumerate(shard_ranges(self.n_items(ctx), self.shard_size(ctx)))]

    def shard_report(self, ctx: Context, fingerprint: str, check_hash: bool = False) -> dict:
        """``{'total', 'done', 'problems': ['<name>: missing|stale|corrupt', ...]}`` against ``fingerprint``."""
        shards = self.shards(ctx)
        states = [(name, shard_state(self.shard_dir(ctx), name, fingerprint, check_hash)) for _, _, name in shards]
        problems = [f"{name}: {s}" for name, s in states if s != "done"]
        return {"total": len(shards), "done": len(shards) - len(problems), "problems": problems}

    def check(self, ctx: Context, fingerprint: str) -> str | None:
        rep = self.shard_report(ctx, fingerprint)
        return None if not rep["problems"] else f"{len(rep['problems'])} shard(s) to redo ({rep['problems'][0]})"

    def run(self, ctx: Context, fingerprint: str) -> dict:
        shard_dir = self.shard_dir(ctx)
        shard_dir.mkdir(parents=True, exist_ok=True)
        shards = self.shards(ctx)
        for k, _, name in shards:  # leftovers of a killed run (<name>.<pid>.tmp); never mistaken for shards
            if k % ctx.world_size == ctx.rank:
                for tmp in shard_dir.glob(glob.escape(name) + ".*tmp"):
                    tmp.unlink(missing_ok=True)
        mine = [(k, r, name) for k, r, name in shards if k % ctx.world_size == ctx.rank
                and shard_state(shard_dir, name, fingerprint) != "done"]
        progress = tqdm(total=sum(len(r) for _, r, _ in mine), unit="sample", desc=f"{ctx.cfg.task} {self.name}",
                        disable=not ctx.cfg.runtime.progress)
        for k, r, name in mine:
            self.write_one(ctx, k, r, shard_dir / name, progress, fingerprint)
        progress.close()
        return self.summarize(ctx, fingerprint, written=len(mine))

    def summarize(self, ctx: Context, fingerprint: str, written: int = 0) -> dict:
        """Completion and summed shard stats: ``{'complete', 'missing', 'shards', 'filters'?}``."""
        shard_dir = self.shard_dir(ctx)
        shards = self.shards(ctx)
        rep = self.shard_report(ctx, fingerprint)
        stats: dict = {}
        for _, _, name in shards:  # e.g. filter counts of a selecting stage, summed over shards
            rec = read_record(shard_dir, name)
            for key, value in (rec.stats if rec else {}).items():
                stats[key] = stats.get(key, 0) + value
        summary = {"complete": not rep["problems"], "missing": len(rep["problems"]), "shards": rep["total"],
                   "written_by_this_rank": written}
        if stats:
            summary["filters"] = self.filter_summary(stats)
        return summary

    def filter_summary(self, stats: dict) -> dict:
        """Counts summed over shards -> what the dataset card reports (override to add rates)."""
        return stats
