"""Hostile StyleGAN2 checkpoints: each is a few KB and asks the loader for gigabytes to terabytes.

Builds every case with :func:`build_cases` (in a temporary directory; nothing is shipped), then loads each one in
a fresh subprocess (``kdpipe.pipeline.teacher.load.load_teacher``) and reports the exit, the one-line error, the
load time (imports excluded) and the peak RSS (torch's import alone is most of it). Done when every case fails with a one-line CheckpointError under 1 GiB and 5 s.

    .venv/bin/python benchmarks/hostile_checkpoints.py [--json result.json]

``tests/test_checkpoint_budget.py`` imports :func:`build_cases` and checks the errors in-process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RSS_LIMIT_MIB = 1024
TIME_LIMIT_S = 5.0


def _nested_shared(levels: int) -> list:
    """``[x, x]`` nested ``levels`` deep, every level the same object: 2**levels leaves if copied naively."""
    x: list = [0]
    for _ in range(levels):
        x = [x, x]
    return x


def build_cases(root: Path) -> dict[str, tuple[Path, str]]:
    """Write the hostile checkpoints into ``root``; returns ``{name: (path, regex the error must match)}``."""
    from kdpipe.pipeline.teacher.formats import export
    from kdpipe.pipeline.teacher.load import build_builtin

    G, D = build_builtin("random-16")
    kw = dict(G.init_kwargs)
    cases: dict[str, tuple[Path, str]] = {}

    def ada(name: str, regex: str, **changes) -> None:
        mapping = dict(kw["mapping_kwargs"], **changes.pop("mapping_kwargs", {}))
        path = export.write_nvlabs_pytorch_pkl(root / f"{name}.pkl", G, None,
                                               G_kwargs=dict(kw, mapping_kwargs=mapping, **changes))
        cases[name] = (path, regex)

    ada("resolution-2^20", r"field img_resolution = 1048576 is not a power of two in \[4, 4096\]",
        img_resolution=2 ** 20)
    ada("resolution-not-power-of-two", r"field img_resolution = 48 is not a power of two", img_resolution=48)
    ada("mapping-layers-10^9", r"field mapping_kwargs.num_layers = 1000000000 is outside \[0, 32\]",
        mapping_kwargs={"num_layers": 10 ** 9})
    ada("w_dim-10^7", r"field w_dim = 10000000 is outside \[1, 4096\]", w_dim=10 ** 7)
    ada("channels-10^6", r"field channel_max = 1000000 is outside", channel_max=10 ** 6)
    ada("params-over-budget", r"would have about [\d,]+ parameters, above the limit of 250,000,000",
        img_resolution=4096, channel_base=1 << 20, channel_max=4096, w_dim=4096, z_dim=4096)
    ada("shared-references-2^40", r"settings are not supported .*unexpected keyword argument 'junk'",
        mapping_kwargs={"junk": _nested_shared(40)})
    ada("nested-150", r"nested deeper than 64 levels", mapping_kwargs={"junk": _deep(150)})

    # Stride trick: one float of storage viewed as 40000 x 40000 (6.4 GB once converted to a real tensor).
    huge = torch.zeros(1).as_strided((40_000, 40_000), (0, 0))
    trick = r"a tensor of 1,600,000,000 elements is backed by a storage of only 1 "
    cases["stride-trick-rosinality"] = (_torch_save(root / "stride-trick-rosinality.pt", {"g_ema": {
        "style.1.weight": huge, "input.input": torch.zeros(1, 8, 4, 4)}}), trick)
    G_ema = export._persistent(G, export.PLACEHOLDER_SRC, export._ada_generator_kwargs(kw, "ada"))
    fc0 = G_ema.meta["state"]["_modules"]["mapping"].meta["state"]["_modules"]["fc0"]
    fc0.meta["state"]["_parameters"]["weight"] = huge  # pickled as (1-element storage, size, stride 0)
    (root / "stride-trick-ada.pkl").write_bytes(export.dumps_official({"G_ema": G_ema, "D": None}))
    cases["stride-trick-ada"] = (root / "stride-trick-ada.pkl", trick)
    # Shared storage: 10^4 distinct views of one 1 MB storage (10 GB once each is copied to float32).
    block = torch.zeros(256, 1024)
    many = {"g_ema": {f"style.{i}.weight": block[:] for i in range(10_000)}}
    cases["shared-storage-10^4-views"] = (_torch_save(root / "shared-storage.pt", many),
                                          r"its tensors hold 2,621,440,000 elements, above the limit")
    return cases


def _deep(levels: int) -> list:
    x: list = []
    for _ in range(levels):
        x = [x]
    return x


def _torch_save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _load_one(path: str) -> int:
    """Child process: load ``path``; print the error line; exit 2 on a CheckpointError."""
    from kdpipe.errors import CheckpointError
    from kdpipe.pipeline.teacher.load import load_teacher

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB, after importing torch
    t0 = time.perf_counter()
    try:
        load_teacher(path)
        code = 0
        print("loaded")
    except CheckpointError as err:
        print(str(err))
        code = 2
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load_s": seconds, "rss_import_mib": rss_before, "peak_rss_mib": peak}), file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--load-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_one:
        sys.exit(_load_one(args.load_one))
    import re

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, regex) in build_cases(Path(tmp)).items():
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, __file__, "--load-one", str(path)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            out, err = proc.communicate()
            wall = time.perf_counter() - t0
            child = json.loads(err.strip().splitlines()[-1]) if proc.returncode in (0, 2) else \
                {"load_s": float("nan"), "rss_import_mib": float("nan"), "peak_rss_mib": float("nan")}
            rows[name] = {"file_kib": round(path.stat().st_size / 1024, 1), "exit": proc.returncode,
                          "seconds": round(child["load_s"], 3), "wall_s_with_imports": round(wall, 2),
                          "rss_after_import_mib": round(child["rss_import_mib"], 1),
                          "peak_rss_mib": round(child["peak_rss_mib"], 1),
                          "error": out.strip() or err.strip()[-300:],
                          "one_line": len(out.strip().splitlines()) == 1,
                          "expected": bool(re.search(regex, out))}
    peak = max(r["peak_rss_mib"] for r in rows.values())
    ok = all(r["exit"] == 2 and r["one_line"] and r["expected"] and r["seconds"] < TIME_LIMIT_S
             and r["peak_rss_mib"] < RSS_LIMIT_MIB for r in rows.values())
    result = {"cases": rows, "peak_rss_mib": round(peak, 1), "ok": ok,
              "limits": {"rss_mib": RSS_LIMIT_MIB, "seconds": TIME_LIMIT_S}}
    for name, r in rows.items():
        print(f"{name:<26} exit={r['exit']} load {r['seconds']:5.2f}s peak {r['peak_rss_mib']:4.0f} MiB "
              f"(torch imported: {r['rss_after_import_mib']:4.0f}) {r['file_kib']:7.1f} KiB  {r['error'][:90]}")
    print(f"peak RSS {peak:.0f} MiB; all refused in one line within {RSS_LIMIT_MIB} MiB and {TIME_LIMIT_S} s: {ok}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
