"""Smoke test of benchmarks/generate_throughput.py on CPU: every mode runs and reports numbers (no timing bars)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "generate_throughput.py"
TINY = ["--generator", "builtin:random-16", "--device", "cpu"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("generate_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_throughput_run_reports_ratios_rss_and_machine(bench, tmp_path):
    out = tmp_path / "result.json"
    result = bench.main([*TINY, "-n", "4", "--baseline-n", "2", "--repeats", "1", "--batch-size", "4",
                         "--workers", "1", "--json", str(out)])
    assert set(result["ratios"]) == {"kdpipe style-mix/bare", "kdpipe style-mix/baseline"}
    assert all(_positive_number(v) for v in result["ratios"].values())
    modes = result["modes"]
    assert modes["kdpipe style-mix"]["images"] == 12 and modes["baseline"]["images"] == 6
    assert all(_positive_number(m["images_per_s"]) and _positive_number(m["peak_rss_mib"]) for m in modes.values())
    assert modes["kdpipe style-mix"]["encode_workers"] == 1 and modes["kdpipe style-mix"]["batch_size"] == 4
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["device"] == "cpu"
    assert json.loads(out.read_text())["ratios"] == result["ratios"]


def test_modconv_and_rss_modes(bench, tmp_path):
    m = bench.main([*TINY, "--modconv", "--repeats", "1", "--json", str(tmp_path / "m.json")])["modconv"]
    assert _positive_number(m["fused_ms"]) and _positive_number(m["unfused_ms"]) and m["max_abs_diff"] < 1e-4
    r = bench.main([*TINY, "--rss-check", "--rss-n", "8", "--rss-at", "4", "--set", "render.shard_size=4",
                    "--json", str(tmp_path / "r.json")])["rss_check"]
    keys = ("rss_mib_after_4", "rss_mib_after_8", "peak_rss_mib_8", "ratio", "peak_ratio")
    assert all(_positive_number(r[k]) for k in keys)


# ------------------------------------------------------------------ the render/encode pipeline the benchmark times
# (kdpipe.pipeline.render.pipelined; "cuda" only selects the render-thread path, no GPU is used)
PATHS = [("cpu", 0), ("cpu", 1), ("cpu", 3), ("cuda", 1), ("cuda", 3)]


def _stream(n_chunks: int, log: list, fail_render_at: int | None = None, fail_encode_at: int | None = None):
    """``n_chunks`` chunks of 3 items; ``render`` logs each chunk and maps i to 10 i; either step can fail."""
    chunks = [list(range(3 * k, 3 * k + 3)) for k in range(n_chunks)]

    def render(chunk):
        if chunk[0] // 3 == fail_render_at:
            raise RuntimeError("render failed")
        log.append(("render", chunk[0] // 3))
        return [i * 10 for i in chunk]

    def encode(item):
        if item // 30 == fail_encode_at:
            raise OSError("encode failed")
        return {"__key__": f"{item // 10:08d}", "v": item}

    return chunks, render, encode


@pytest.mark.parametrize("device,workers", PATHS)
def test_pipelined_keeps_order_and_bounds_chunks_in_flight(device, workers):
    from kdpipe.pipeline.render import pipelined

    log = []
    chunks, render, encode = _stream(40, log)
    out = []
    for sample in pipelined(chunks, render, encode, workers, render_ahead=2, device=device):
        out.append(sample["v"])
        rendered = sum(1 for kind, _ in log if kind == "render")
        assert rendered - len(out) // 3 <= 2 + 2, "render ran too far ahead of the consumer"
    assert out == [i * 10 for i in range(120)]


@pytest.mark.parametrize("device,workers", PATHS)
def test_pipelined_raises_render_and_encode_errors_and_stops_early(device, workers):
    from kdpipe.pipeline.render import pipelined

    chunks, render, encode = _stream(10, [], fail_render_at=4)
    got = []
    with pytest.raises(RuntimeError, match="render failed"):
        for sample in pipelined(chunks, render, encode, workers, device=device):
            got.append(sample["v"])
    assert got == [i * 10 for i in range(len(got))] and len(got) <= 12  # an in-order prefix, nothing after it
    chunks, render, encode = _stream(10, [], fail_encode_at=2)
    with pytest.raises(OSError, match="encode failed"):
        list(pipelined(chunks, render, encode, workers, device=device))
    log = []
    chunks, render, encode = _stream(100, log)
    gen = pipelined(chunks, render, encode, workers, render_ahead=1, device=device)
    assert [next(gen)["v"] for _ in range(4)] == [0, 10, 20, 30]
    gen.close()
    assert len(log) <= 2 + 3 and not any(t.name == "kdpipe-render" for t in threading.enumerate())


def test_png_study_has_fpng_and_official_mode_times_a_checkout(bench, tmp_path, monkeypatch):
    images = {"noise": np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)}
    rows = bench.measure_png_levels(images, levels=(1,), repeats=1)
    assert {(r["encoder"], r["level"]) for r in rows} == {("fpng", None), ("pillow", 1)}
    assert all(_positive_number(r["cpu_ms_per_image"]) for r in rows)
    with pytest.raises(RuntimeError, match="no training/networks.py"):
        bench.main([*TINY, "--official-src", str(tmp_path / "nowhere"), "--json", str(tmp_path / "o.json")])
    # A stand-in checkout with upstream's Generator signature (the real one is never vendored).
    (tmp_path / "sg2" / "training").mkdir(parents=True)
    (tmp_path / "sg2" / "training" / "__init__.py").write_text("")
    (tmp_path / "sg2" / "training" / "networks.py").write_text(
        "from kdpipe.pipeline.teacher.networks import Generator as _G\n"
        "class Generator(_G):\n"
        "    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={},"
        " synthesis_kwargs={}):\n"
        "        super().__init__(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs,"
        " **synthesis_kwargs)\n"
        "        run = self.synthesis.forward\n"
        "        self.synthesis.forward = lambda ws, force_fp32=False, **kw: run(ws, **kw)\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "training", raising=False)
    monkeypatch.delitem(sys.modules, "training.networks", raising=False)
    out = bench.main([*TINY, "--official-src", str(tmp_path / "sg2"), "--official-batch", "2", "--official-repeats", "1",
                      "--json", str(tmp_path / "o.json")])["official"]
    assert [r["batch_size"] for r in out] == [2] and out[0]["max_abs_diff"] < 1e-4
    assert _positive_number(out[0]["ratio_vs_unfused"]) and _positive_number(out[0]["kdpipe_ms"])
