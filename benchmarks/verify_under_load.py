"""Run ``kdpipe verify`` many times on a valid attribute-pair dataset while busy loops load the CPUs; count exits.

Issue 11 item 8: ``verify`` sometimes aborted with exit 134 ("terminate called without an active exception")
after printing OK — Arrow's parquet reader threads torn down at interpreter exit. Done when every run exits 0.

    .venv/bin/python benchmarks/verify_under_load.py [--runs 30] [--busy 2] [--json result.json]

Builds a tiny ``brightness`` dataset (builtin:random-16 teacher) in a temporary directory first.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = "while True:\n    pass\n"


def make_dataset(root: Path) -> Path:
    """A finished tiny ``brightness`` pair dataset under ``root``; returns OUT/brightness."""
    cmd = [sys.executable, "-m", "kdpipe.cli", "generate", "--task", "brightness", "--out", str(root),
           "--generator", "builtin:random-16", "--no-progress", "--set", "sample.n=200", "--set", "pairs.n=8",
           "--set", "pairs.shard_size=4", "--set", "classify.part_size=100"]
    subprocess.run(cmd, check=True, capture_output=True)
    return root / "brightness"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes loading the CPUs")
    parser.add_argument("--data", type=Path, help="an existing dataset (default: build a tiny one)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_dataset(Path(tmp))
        busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
        codes: collections.Counter = collections.Counter()
        stderr_tails = []
        t0 = time.perf_counter()
        try:
            for i in range(args.runs):
                proc = subprocess.run([sys.executable, "-m", "kdpipe.cli", "verify", str(data)], capture_output=True,
                                      text=True)
                codes[proc.returncode] += 1
                if proc.returncode != 0:
                    stderr_tails.append(proc.stderr.strip()[-200:])
                print(f"run {i + 1}/{args.runs}: exit {proc.returncode}", flush=True)
        finally:
            for p in busy:
                p.kill()
                p.wait()
    result = {"runs": args.runs, "busy_loops": args.busy, "exit_codes": {str(k): v for k, v in sorted(codes.items())},
              "failures_stderr": stderr_tails[:5], "seconds": round(time.perf_counter() - t0, 1),
              "ok": set(codes) == {0}}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
