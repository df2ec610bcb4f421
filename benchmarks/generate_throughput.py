"""Generation throughput: the teacher's bare forward (the limit) vs ``kdpipe generate`` vs the anchors' serial loop.

Usage (defaults: builtin:random-64, device auto, stages.yaml batch size and encoder count)::

    python benchmarks/generate_throughput.py [--generator builtin:random-64] [--device cpu] [-n 256]
        [--batch-size B] [--workers W] [--repeats 3] [--gender] [--json PATH]
    python benchmarks/generate_throughput.py --modconv      # fused vs unfused synthesis, batch 8
    python benchmarks/generate_throughput.py --png-levels   # PNG size / speed per zlib level
    python benchmarks/generate_throughput.py --rss-check    # RSS after 1,000 vs 10,000 samples
    python benchmarks/generate_throughput.py --official-src PATH  # teacher forward vs stylegan2-ada-pytorch

What is timed, all in this process, on one device, teacher and truncation (interpreter start-up excluded):

* ``bare``: ``G.synthesis`` alone on ws already on the device, at the pipeline's batch size and modulated-conv
  form, ``3 n`` images (CUDA synchronised). Images/s; the limit the pipeline can reach.
* ``kdpipe``: ``kdpipe.pipeline.generate.generate(task, fresh_tmp_dir, progress off)`` end to end: teacher
  load, render + PNG/JSON/NPY encoding + tar writing, manifest, card. Images/s counts every image rendered
  (3 per style-mix sample; for pair tasks ``sample.n + pairs.n * len(pairs.steps)``).
* ``baseline``: the loop of NVlabs ``generate.py`` / seed 002's scripts for the same style-mix samples: per seed
  ``G.mapping`` at batch 1, then ``G.synthesis`` at batch 1 for x1, x2 and y, each PNG encoded (Pillow's default
  level, as upstream) and saved before the next image is rendered. Teacher load included, like ``kdpipe``.

Repeats run the modes round-robin (bare, kdpipe, baseline, bare, ...) so that load from other processes hits all
of them alike; the medians are reported, with every run, the load average and the peak RSS of each phase
(``VmHWM`` reset per phase through ``/proc/self/clear_refs``). Results: a JSON file and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

TRIPLET_IMAGES = 3  # x1, x2, y per triplet sample


# ------------------------------------------------------------------------------------------------ machine / memory
def _proc_status(key: str) -> float | None:
    """A ``/proc/self/status`` memory field in MiB (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mib() -> float | None:
    """Current resident set size of this process, MiB."""
    return _proc_status("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) of this process; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss` (or process start), MiB."""
    hwm = _proc_status("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def machine_info(device: torch.device) -> dict:
    """Where the numbers came from: CPU model and cores, torch threads, GPU name, versions, load average."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"host": platform.node(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------ the three modes
def measure_bare(G, device: torch.device, batch_size: int, n_images: int, truncation_psi: float,
                 fused_modconv: bool) -> dict:
    """``G.synthesis`` alone: ``ceil(n_images / batch_size)`` forwards on ws prepared beforehand. Returns images/s."""
    n_batches = max(1, -(-n_images // batch_size))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ws = G.mapping(torch.randn(batch_size * n_batches, G.z_dim, generator=gen).to(device),
                       truncation_psi=truncation_psi)
        batches = list(ws.split(batch_size))
        G.synthesis(batches[0], noise_mode="const", fused_modconv=fused_modconv)  # warm-up (kernels, allocator)
        _sync(device)
        t0 = time.perf_counter()
        for w in batches:
            G.synthesis(w, noise_mode="const", fused_modconv=fused_modconv)
        _sync(device)
        seconds = time.perf_counter() - t0
    images = batch_size * n_batches
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds}


def images_rendered(cfg) -> int:
    """Images the teacher renders for a resolved task config (when no stage summary reports ``images_rendered``).

    Triplet tasks: ``3 * render.n``. Pair tasks: ``sample.n`` (direction finding) + ``pairs.n * len(pairs.steps)``
    (an upper bound for ``bins`` attributes, which render fewer edits per candidate).
    """
    stages = cfg.stages
    if "render" in stages:
        return TRIPLET_IMAGES * cfg.render.n
    total = cfg.sample.n if "sample" in stages else 0
    if "pairs" in stages:
        total += cfg.pairs.n * len(cfg.pairs.steps)
    return total


def measure_kdpipe(task: str, generator: str, n: int, device: str, batch_size: int | None, workers: int | None,
                   sets: list[str]) -> dict:
    """``generate(task)`` into a fresh temporary directory with progress off; time of the call, images/s.

    ``n`` is ``render.n`` of triplet tasks, ``pairs.n`` and ``sample.n`` of pair tasks.

    Raises:
        KdpipeError: the task is not defined (or its config is invalid) - the caller reports it as skipped.
    """
    from kdpipe.pipeline.config import resolve_config
    from kdpipe.pipeline.generate import generate

    counts = {"render": {"n": n}} if task in ("style-mix", "morph") else {"sample": {"n": max(n, 4)}, "pairs": {"n": n}}
    cli = {"teacher": {"generator": generator}, **counts,
           "runtime": {"device": device, "batch_size": batch_size, "encode_workers": workers, "progress": False}}
    cfg = resolve_config(task, overrides=sets, cli=cli)
    root = Path(tempfile.mkdtemp(prefix="kdpipe-bench-"))
    try:
        t0 = time.perf_counter()
        generate(task, root, overrides=sets, cli=cli, log=lambda msg: None)
        seconds = time.perf_counter() - t0
        shard_bytes = sum(p.stat().st_size for p in (root / task).rglob("*.tar"))
        run = json.loads((root / task / "run.json").read_text())
        for stage in run["stages"]:
            if (stage.get("summary") or {}).get("images_rendered"):
                images = stage["summary"]["images_rendered"]
                break
        else:
            images = images_rendered(cfg)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds, "shard_bytes": shard_bytes,
            "batch_size": cfg.runtime.batch_size, "encode_workers": cfg.runtime.encode_workers}


def measure_baseline(generator: str, n: int, device: torch.device, truncation_psi: float, mix: str,
                     seed: int = 0) -> dict:
    """The anchors' serial loop for ``n`` style-mix samples (batch 1, each PNG saved before the next render)."""
    from PIL import Image

    from kdpipe.pipeline.latents import mix_ws, parse_mix, z_from_seeds
    from kdpipe.images import to_uint8
    from kdpipe.pipeline.teacher.load import load_teacher

    out = Path(tempfile.mkdtemp(prefix="kdpipe-baseline-"))
    try:
        t0 = time.perf_counter()
        G = load_teacher(generator, device).G
        layers = parse_mix(mix, G.num_ws)
        with torch.no_grad():
            for i in range(n):
                w1, w2 = (G.mapping(z_from_seeds([s], G.z_dim).to(device), truncation_psi=truncation_psi)
                          for s in (seed + 2 * i, seed + 2 * i + 1))
                for name, ws in (("x1", w1), ("x2", w2), ("y", mix_ws(w1, w2, layers))):
                    img = to_uint8(G.synthesis(ws, noise_mode="const"))
                    Image.fromarray(img[0].cpu().numpy(), "RGB").save(out / f"{i:08d}.{name}.png")
        seconds = time.perf_counter() - t0
        png_bytes = sum(p.stat().st_size for p in out.iterdir())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    images = TRIPLET_IMAGES * n
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds, "png_bytes": png_bytes}


# ------------------------------------------------------------------------------------------------ side studies
def measure_modconv(G, device: torch.device, batch_size: int, repeats: int) -> dict:
    """Median ms per ``G.synthesis`` forward at ``batch_size``, fused vs unfused, and their max |difference|.

    The two forms alternate (fused, unfused, unfused, fused, ...) so that drifting load hits both alike.
    """
    gen = torch.Generator().manual_seed(0)
    out = {"batch_size": batch_size, "repeats": repeats}
    times = {True: [], False: []}
    with torch.no_grad():
        ws = G.mapping(torch.randn(batch_size, G.z_dim, generator=gen).to(device), truncation_psi=0.7)
        imgs = {fused: G.synthesis(ws, fused_modconv=fused) for fused in (True, False)}  # warm-up
        for rep in range(repeats):
            for fused in ((True, False) if rep % 2 == 0 else (False, True)):
                _sync(device)
                t0 = time.perf_counter()
                G.synthesis(ws, fused_modconv=fused)
                _sync(device)
                times[fused].append(time.perf_counter() - t0)
    for fused, key in ((True, "fused"), (False, "unfused")):
        out[f"{key}_ms"] = round(statistics.median(times[fused]) * 1e3, 2)
        out[f"{key}_runs_ms"] = [round(t * 1e3, 2) for t in times[fused]]
    out["max_abs_diff"] = float((imgs[True] - imgs[False]).abs().max())
    out["unfused_speedup"] = round(out["fused_ms"] / out["unfused_ms"], 2)
    return out


def _photo(resolution: int) -> np.ndarray | None:
    """scikit-image's astronaut photo at ``resolution`` (uint8 ``[H, W, 3]``), or None without scikit-image."""
    try:
        from PIL import Image
        from skimage import data
    except ImportError:
        return None
    return np.asarray(Image.fromarray(data.astronaut()).resize((resolution, resolution), Image.LANCZOS))


def measure_png_levels(images: dict[str, np.ndarray], levels=(0, 1, 3, 6, 9), repeats: int = 3) -> list[dict]:
    """Per image set: encode speed (images/s and ms/image, one thread) and mean PNG size (bytes) of fpng and of
    Pillow at each zlib level. ``cpu_ms_per_image`` is this process's CPU time (``time.process_time``) per
    image: the per-core cost, which load from other processes does not inflate the way it inflates wall time;
    it is also the number of cores needed per 1,000 images/s.

    Args:
        images: name -> uint8 ``[N, H, W, 3]``.
    """
    from kdpipe.pipeline.runner.shards import encode_png, fpng_available

    encoders = ([("fpng", None)] if fpng_available() else []) + [("pillow", level) for level in levels]
    rows = []
    for name, batch in images.items():
        for encoder, level in encoders:
            times, cpu_times = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                sizes = [len(encode_png(im, level or 0, encoder)) for im in batch]
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)
            seconds = statistics.median(times)
            rows.append({"images": name, "resolution": batch.shape[1], "encoder": encoder, "level": level,
                         "images_per_s": round(len(batch) / seconds, 1),
                         "ms_per_image": round(seconds / len(batch) * 1e3, 3),
                         "cpu_ms_per_image": round(statistics.median(cpu_times) / len(batch) * 1e3, 3),
                         "mean_bytes": int(np.mean(sizes)), "raw_bytes": int(batch[0].nbytes)})
    return rows


def rss_check(generator: str, n: int, at: int, device: str, batch_size: int | None, workers: int | None,
              sets: list[str] | None = None, interval_s: float = 0.2) -> dict:
    """RSS after generating ``at`` style-mix samples vs after ``n``, in this process (64 px, CPU by default).

    Two runs into fresh directories, ``at`` samples then ``n``; after each, the RSS (``VmRSS``) and the peak RSS
    of the run (``VmHWM``, reset before it). During the second run a thread samples RSS against the number of
    samples in finished shards (``shards/.done/*.json``), so the trace shows whether memory grows while
    rendering. ``ratio`` = RSS after ``n`` / RSS after ``at``.
    """
    from kdpipe.pipeline.generate import generate

    runtime = {"device": device, "batch_size": batch_size, "encode_workers": workers, "progress": False}
    out, trace = {"n": n, "at": at}, []
    for count in (at, n):
        root = Path(tempfile.mkdtemp(prefix="kdpipe-rss-"))
        done_dir = root / "style-mix" / "shards" / ".done"
        stop, t_start = threading.Event(), time.perf_counter()

        def reading() -> tuple[float, int, float]:
            """(seconds since start, samples in finished shards, RSS MiB)."""
            done = sum(json.loads(p.read_text())["count"] for p in done_dir.glob("*.json")) if done_dir.exists() else 0
            return round(time.perf_counter() - t_start, 2), done, round(rss_mib() or 0.0, 1)

        def sample():
            while not stop.is_set():
                trace.append(reading())
                stop.wait(interval_s)

        thread = threading.Thread(target=sample, daemon=True)
        if count == n:
            thread.start()
        reset_peak_rss()
        try:
            generate("style-mix", root, overrides=sets, cli={"teacher": {"generator": generator},
                                                             "render": {"n": count}, "runtime": runtime},
                     log=lambda msg: None)
            out[f"seconds_{count}"] = round(time.perf_counter() - t_start, 1)
            out[f"rss_mib_after_{count}"] = round(rss_mib() or 0.0, 1)
            out[f"peak_rss_mib_{count}"] = round(peak_rss_mib(), 1)
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()
            shutil.rmtree(root, ignore_errors=True)
    out["ratio"] = out[f"rss_mib_after_{n}"] / out[f"rss_mib_after_{at}"]
    out["peak_ratio"] = out[f"peak_rss_mib_{n}"] / out[f"peak_rss_mib_{at}"]
    out["within_10_percent"] = abs(out["ratio"] - 1) <= 0.1 and abs(out["peak_ratio"] - 1) <= 0.1
    rendering = [rss for _, done, rss in trace if at <= done < n]
    out["rss_mib_while_rendering_min_max"] = [min(rendering), max(rendering)] if rendering else None
    out["trace_s_done_rssmib"] = trace[::max(1, len(trace) // 200)]
    return out


def official_study(args, device: torch.device) -> list[dict]:
    """``--official-src``: kdpipe vs official synthesis per batch size (benchmarks/official_synthesis.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("official_synthesis", Path(__file__).with_name("official_synthesis.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.study(args.generator, args.official_src, device, args.official_batch or [8, 16],
                        args.official_repeats)


# ------------------------------------------------------------------------------------------------ driver
def _median_row(runs: list[dict]) -> dict:
    rates = [r["images_per_s"] for r in runs]
    return {"images_per_s": statistics.median(rates), "runs_images_per_s": [round(x, 2) for x in rates],
            "images": runs[0]["images"], "seconds_median": statistics.median(r["seconds"] for r in runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            **{k: runs[0][k] for k in ("shard_bytes", "png_bytes", "batch_size", "encode_workers") if k in runs[0]}}


def _phase(fn, *args, **kwargs) -> dict:
    """Run one measurement with the peak-RSS mark reset before it; adds ``peak_rss_mib`` and the load average."""
    reset_peak_rss()
    out = fn(*args, **kwargs)
    out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    out["load_avg"] = load_average()
    return out


def throughput(args, device: torch.device) -> dict:
    """bare / kdpipe (per task) / baseline, round-robin over ``args.repeats``; medians and ratios."""
    from kdpipe.pipeline.config import resolve_config
    from kdpipe.errors import KdpipeError
    from kdpipe.pipeline.teacher.networks import default_fused_modconv
    from kdpipe.pipeline.render import Renderer, tune_host_allocator
    from kdpipe.pipeline.teacher.load import load_teacher

    if device.type == "cpu":
        tune_host_allocator()  # what kdpipe's Renderer does; done first so that every mode runs with it
    cfg = resolve_config("style-mix", overrides=args.set, cli={
        "teacher": {"generator": args.generator},
        "runtime": {"device": str(device), "batch_size": args.batch_size, "encode_workers": args.workers}})
    psi = cfg.teacher.truncation_psi
    G = load_teacher(args.generator, device).G
    fused = default_fused_modconv(device)
    # The rows of every forward kdpipe runs (fixed on CPU, runtime.batch_size on CUDA): bare uses the same.
    batch_size = Renderer(G, device, batch_size=cfg.runtime.batch_size).batch_size
    tasks = ["style-mix"] + (["gender"] if args.gender else [])
    runs: dict[str, list] = {"bare": [], **{f"kdpipe {t}": [] for t in tasks}, "baseline": []}
    skipped = {}
    for rep in range(args.repeats):
        runs["bare"].append(_phase(measure_bare, G, device, batch_size, TRIPLET_IMAGES * args.n, psi, fused))
        for task in tasks:
            if task in skipped:
                continue
            try:
                runs[f"kdpipe {task}"].append(_phase(measure_kdpipe, task, args.generator, args.n, str(device),
                                                     args.batch_size, args.workers, args.set))
            except KdpipeError as e:  # e.g. the task is not defined yet, or needs a face teacher
                skipped[task] = f"{type(e).__name__}: {e}"
        runs["baseline"].append(_phase(measure_baseline, args.generator, args.baseline_n, device, psi,
                                       cfg.render.mix, cfg.render.seed))
        print(f"repeat {rep + 1}/{args.repeats}: " + ", ".join(
            f"{k} {v[-1]['images_per_s']:.1f}" for k, v in runs.items() if v), file=sys.stderr)
    result = {"modes": {k: _median_row(v) for k, v in runs.items() if v}, "runs": runs, "skipped": skipped,
              "settings": {"generator": args.generator, "n": args.n, "baseline_n": args.baseline_n,
                           "batch_size": batch_size, "encode_workers": cfg.runtime.encode_workers,
                           "fused_modconv": fused, "truncation_psi": psi, "repeats": args.repeats,
                           "png_encoder": cfg.render.png_encoder,
                           "png_compress_level": cfg.render.png_compress_level, "set": args.set}}
    bare, base = result["modes"]["bare"]["images_per_s"], result["modes"]["baseline"]["images_per_s"]
    result["ratios"] = {f"kdpipe {t}/{ref}": round(result["modes"][f"kdpipe {t}"]["images_per_s"] / v, 3)
                        for t in tasks if t not in skipped for ref, v in (("bare", bare), ("baseline", base))}
    result["ratios_per_repeat"] = repeat_ratios(runs, [t for t in tasks if t not in skipped])
    return result


def repeat_ratios(runs: dict[str, list], tasks: list[str]) -> dict:
    """kdpipe/bare and kdpipe/baseline per repeat (modes of one repeat run back to back, so under load from other
    processes these are steadier than ratios of medians): median, min, max and every value."""
    out = {}
    for t in tasks:
        for ref in ("bare", "baseline"):
            vals = [k["images_per_s"] / r["images_per_s"] for k, r in zip(runs[f"kdpipe {t}"], runs[ref])]
            out[f"kdpipe {t}/{ref}"] = {"median": round(statistics.median(vals), 3), "min": round(min(vals), 3),
                                        "max": round(max(vals), 3), "runs": [round(v, 3) for v in vals]}
    return out


def print_table(result: dict) -> None:
    print(f"{'mode':<18} {'images':>7} {'s (median)':>10} {'images/s':>9} {'peak RSS MiB':>13}  runs (images/s)")
    for name, row in result["modes"].items():
        print(f"{name:<18} {row['images']:>7} {row['seconds_median']:>10.2f} {row['images_per_s']:>9.1f} "
              f"{row['peak_rss_mib']:>13.0f}  {row['runs_images_per_s']}")
    for name, value in result["ratios"].items():
        r = result.get("ratios_per_repeat", {}).get(name)
        print(f"{name} = {value:.2f}" + (f" (per repeat: median {r['median']:.2f}, min {r['min']:.2f}, max "
                                         f"{r['max']:.2f})" if r else ""))
    for task, why in result["skipped"].items():
        print(f"skipped kdpipe {task}: {why}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="builtin:random-64", help="teacher (builtin:NAME or checkpoint path)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("-n", "--n", type=int, default=256, help="samples per kdpipe run (3 images each)")
    parser.add_argument("--baseline-n", type=int, default=None,
                        help="samples of the serial baseline (default min(n, 64))")
    parser.add_argument("--batch-size", type=int, default=None, help="runtime.batch_size (default: stages.yaml)")
    parser.add_argument("--workers", type=int, default=None, help="runtime.encode_workers (default: stages.yaml)")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin repeats; medians are reported")
    parser.add_argument("--gender", action="store_true", help="also time kdpipe generate --task gender")
    parser.add_argument("--set", action="append", default=[], help="config override SECTION.KEY=VALUE (repeatable)")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None,
                        help="result file (default benchmarks/results/generate_throughput-<study>-<device>.json)")
    parser.add_argument("--modconv", action="store_true", help="only: fused vs unfused synthesis time")
    parser.add_argument("--modconv-batch", type=int, default=8)
    parser.add_argument("--png-levels", action="store_true", help="only: PNG size/speed per zlib level")
    parser.add_argument("--png-level", type=int, action="append", default=None,
                        help="Pillow levels of --png-levels (repeatable; default 0 1 3 6 9)")
    parser.add_argument("--rss-check", action="store_true", help="only: RSS after --rss-at vs after --rss-n samples")
    parser.add_argument("--official-src", type=Path, default=None,
                        help="only: kdpipe synthesis vs the stylegan2-ada-pytorch checkout at PATH (same weights)")
    parser.add_argument("--official-batch", type=int, action="append", default=None,
                        help="batch sizes of --official-src (repeatable; default 8 and 16)")
    parser.add_argument("--official-repeats", type=int, default=41, help="interleaved repeats of --official-src")
    parser.add_argument("--rss-n", type=int, default=10000)
    parser.add_argument("--rss-at", type=int, default=1000)
    args = parser.parse_args(argv)
    args.baseline_n = args.baseline_n or min(args.n, 64)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    from kdpipe.pipeline.generate import resolve_device
    from kdpipe.pipeline.teacher.load import load_teacher

    device = resolve_device(args.device)
    result = {"machine": machine_info(device), "load_avg_start": load_average(),
              "command": " ".join(["python benchmarks/generate_throughput.py", *(argv if argv is not None
                                                                                 else sys.argv[1:])])}
    if args.modconv:
        study = "modconv"
        G = load_teacher(args.generator, device).G
        result["modconv"] = measure_modconv(G, device, args.modconv_batch, max(args.repeats, 25))
        m = result["modconv"]
        print(f"G.synthesis {args.generator} batch {m['batch_size']} on {device}: fused {m['fused_ms']} ms, "
              f"unfused {m['unfused_ms']} ms (unfused speed-up x{m['unfused_speedup']}), "
              f"max |diff| {m['max_abs_diff']:.2e}")
    elif args.official_src:
        study = "official"
        result["official"] = official_study(args, device)
    elif args.png_levels:
        study = "png"
        from kdpipe.pipeline.render import Renderer

        G = load_teacher(args.generator, device).G
        sets = {"teacher": Renderer(G, device).images(Renderer(G, device).ws_from_seeds(range(32)))}
        for res in sorted({G.img_resolution, 256, 512, 1024}):
            photo = _photo(res)
            if photo is not None:
                sets[f"photo-{res}"] = photo[None].repeat(8 if res >= 1024 else 32, axis=0)
        result["png_levels"] = measure_png_levels(sets, tuple(args.png_level or (0, 1, 3, 6, 9)))
        print(f"{'images':<12} {'res':>5} {'encoder':>8} {'level':>5} {'images/s':>9} {'ms/img':>8} {'cpu ms':>8} {'bytes':>9} "
              f"{'of raw':>7}")
        for r in result["png_levels"]:
            print(f"{r['images']:<12} {r['resolution']:>5} {r['encoder']:>8} {str(r['level']):>5} "
                  f"{r['images_per_s']:>9.1f} {r['ms_per_image']:>8.3f} {r['cpu_ms_per_image']:>8.3f} {r['mean_bytes']:>9} "
                  f"{r['mean_bytes'] / r['raw_bytes']:>7.2f}")
    elif args.rss_check:
        study = "rss"
        result["rss_check"] = rss_check(args.generator, args.rss_n, args.rss_at, str(device), args.batch_size,
                                        args.workers, args.set)
        r = result["rss_check"]
        print(f"RSS after {args.rss_at} samples {r[f'rss_mib_after_{args.rss_at}']} MiB (peak "
              f"{r[f'peak_rss_mib_{args.rss_at}']}), after {args.rss_n} samples {r[f'rss_mib_after_{args.rss_n}']} MiB "
              f"(peak {r[f'peak_rss_mib_{args.rss_n}']}): ratio {r['ratio']:.3f}, peak ratio {r['peak_ratio']:.3f} "
              f"({'within' if r['within_10_percent'] else 'NOT within'} 10 %); while rendering samples "
              f"{args.rss_at}..{args.rss_n}: {r['rss_mib_while_rendering_min_max']} MiB")
    else:
        study = "throughput"
        result.update(throughput(args, device))
        print_table(result)
    result["load_avg_end"] = load_average()
    path = args.json or Path(__file__).resolve().parent / "results" / f"generate_throughput-{study}-{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()
