"""Machinery every trainer shares: config, the loop (seeding, DDP, AMP, EMA, metrics), checkpoints, shard data."""
