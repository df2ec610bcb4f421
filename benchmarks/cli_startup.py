"""How long ``kdpipe --help`` (and ``--version``, ``generate --help``) take, interpreter start-up included.

``python benchmarks/cli_startup.py [--repeats 11] [--json PATH]``: runs each command in a fresh interpreter
(``python -m kdpipe ...``, as a user's shell would start the ``kdpipe`` script), prints the median, min and max
wall time in seconds, and whether each stayed under the 0.5 s target (issue 17 item 6). Also reports the time of
a bare ``python -c pass`` for reference. Not a test: timing on shared machines is for people to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "kdpipe --help": ["-m", "kdpipe", "--help"],
    "kdpipe --version": ["-m", "kdpipe", "--version"],
    "kdpipe generate --help": ["-m", "kdpipe", "generate", "--help"],
    "kdpipe sample --help": ["-m", "kdpipe", "sample", "--help"],
}
TARGET_S = 0.5


def time_command(args: list[str], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` fresh ``python ARGS`` runs (output discarded; a failure raises)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args()
    results = {}
    for name, argv in COMMANDS.items():
        times = time_command(argv, args.repeats)
        median = statistics.median(times)
        results[name] = {"median_s": round(median, 4), "min_s": round(min(times), 4), "max_s": round(max(times), 4)}
        verdict = "" if name.startswith("python") else ("  < 0.5 s: met" if median < TARGET_S else "  >= 0.5 s: MISSED")
        print(f"{name:<24} median {median:.3f} s  (min {min(times):.3f}, max {max(times):.3f}){verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"repeats": args.repeats, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
