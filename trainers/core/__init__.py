"""Machinery every trainer shares: config, run set-up and launch (`run`), the loop (seeding, DDP, AMP, EMA, metrics,
sample grids), checkpoints, shard data."""
