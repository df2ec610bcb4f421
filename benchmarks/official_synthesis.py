"""kdpipe's teacher forward vs the official stylegan2-ada-pytorch synthesis, same weights, one process.

Used by ``generate_throughput.py --official-src PATH``: PATH is a checkout of NVlabs/stylegan2-ada-pytorch that the
user provides (kdpipe never vendors it). Its ``training.networks.Generator`` is built with the teacher's
constructor arguments and loads kdpipe's ``state_dict`` (the names are upstream's). On CPU its custom ops fall back
to their reference implementations, as they do for any user without a compiled plugin.

Timed on the same ws: kdpipe's ``G.synthesis`` in the form kdpipe renders with on that device
(:func:`default_fused_modconv`), against the official ``G.synthesis`` unfused (its fastest form on CPU) and fused
(its default), ``noise_mode='const'``, fp32. The forms run interleaved, the order reversed every repeat, so load
from other processes hits all of them alike; medians are reported with min and max.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch


class OfficialSourceError(RuntimeError):
    """``--official-src`` does not hold an importable stylegan2-ada-pytorch checkout."""


def load_official_generator(src: Path, G: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The official ``Generator`` with kdpipe teacher ``G``'s weights (eval, no grad).

    Raises:
        OfficialSourceError: no ``training/networks.py`` under ``src``, or it fails to import.
    """
    src = Path(src).resolve()
    if not (src / "training" / "networks.py").is_file():
        raise OfficialSourceError(f"--official-src {src}: no training/networks.py there; pass a checkout of "
                                  "https://github.com/NVlabs/stylegan2-ada-pytorch")
    sys.path.insert(0, str(src))
    try:
        from training.networks import Generator as OfficialGenerator
    except ImportError as e:
        raise OfficialSourceError(f"--official-src {src}: importing training.networks failed ({e}); "
                                  "install what it needs (e.g. pip install click requests)") from None
    kwargs = dict(G.init_kwargs)
    base = {k: kwargs.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
    mapping_kwargs = kwargs.pop("mapping_kwargs")
    official = OfficialGenerator(**base, mapping_kwargs=mapping_kwargs, synthesis_kwargs=kwargs)
    official.load_state_dict(G.state_dict(), strict=True)
    return official.to(device).eval().requires_grad_(False)


def compare(G: torch.nn.Module, official: torch.nn.Module, device: torch.device, batch_size: int, repeats: int,
            fused_modconv: bool, truncation_psi: float = 0.7) -> dict:
    """Interleaved timing of kdpipe vs official synthesis at one batch size; ms per forward and ratios.

    Returns ``{'batch_size', 'max_abs_diff', '<form>_ms' (median), '<form>_min_max_ms', 'ratio_vs_unfused',
    'ratio_vs_fused'}`` where a ratio > 1 means kdpipe is faster; ``max_abs_diff`` compares kdpipe with the
    official unfused output (images in [-1, 1]).
    """
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ws = G.mapping(torch.randn(batch_size, G.z_dim, generator=gen).to(device), truncation_psi=truncation_psi)
        forms = {
            "kdpipe": lambda: G.synthesis(ws, noise_mode="const", fused_modconv=fused_modconv),
            "official_unfused": lambda: official.synthesis(ws, noise_mode="const", fused_modconv=False,
                                                           force_fp32=True),
            "official_fused": lambda: official.synthesis(ws, noise_mode="const", fused_modconv=True, force_fp32=True),
        }
        outs = {name: fn() for name, fn in forms.items()}  # warm-up, and the outputs to compare
        times = {name: [] for name in forms}
        for rep in range(repeats):
            for name in (list(forms) if rep % 2 == 0 else list(forms)[::-1]):
                sync()
                t0 = time.perf_counter()
                forms[name]()
                sync()
                times[name].append(time.perf_counter() - t0)
    out = {"batch_size": batch_size, "repeats": repeats, "kdpipe_fused_modconv": fused_modconv,
           "max_abs_diff": float((outs["kdpipe"] - outs["official_unfused"]).abs().max())}
    for name, ts in times.items():
        out[f"{name}_ms"] = round(statistics.median(ts) * 1e3, 2)
        out[f"{name}_min_max_ms"] = [round(min(ts) * 1e3, 2), round(max(ts) * 1e3, 2)]
    out["ratio_vs_unfused"] = round(out["official_unfused_ms"] / out["kdpipe_ms"], 2)
    out["ratio_vs_fused"] = round(out["official_fused_ms"] / out["kdpipe_ms"], 2)
    # Per-repeat ratios (same repeat, adjacent in time): their spread says how much the load moved the median.
    per_rep = [o / k for o, k in zip(times["official_unfused"], times["kdpipe"])]
    out["ratio_vs_unfused_min_max"] = [round(min(per_rep), 2), round(max(per_rep), 2)]
    out["ratio_vs_unfused_per_repeat_median"] = round(statistics.median(per_rep), 2)
    return out


def study(generator: str, src: Path, device: torch.device, batch_sizes: list[int], repeats: int) -> list[dict]:
    """Load teacher ``generator`` and the official code at ``src``; :func:`compare` per batch size, printed."""
    from kdpipe.pipeline.render import tune_host_allocator
    from kdpipe.pipeline.teacher.load import load_teacher
    from kdpipe.pipeline.teacher.networks import default_fused_modconv

    if device.type == "cpu":
        tune_host_allocator()  # for both: the official code gains from it as much as kdpipe
    G = load_teacher(generator, device).G
    official = load_official_generator(src, G, device)
    rows = []
    for batch_size in batch_sizes:
        r = compare(G, official, device, batch_size, repeats, default_fused_modconv(device))
        rows.append(r)
        print(f"batch {batch_size}: kdpipe {r['kdpipe_ms']} ms, official unfused {r['official_unfused_ms']} ms, "
              f"fused {r['official_fused_ms']} ms -> kdpipe x{r['ratio_vs_unfused']} vs official's fastest form "
              f"(per repeat: median {r['ratio_vs_unfused_per_repeat_median']}, min/max {r['ratio_vs_unfused_min_max']}), x{r['ratio_vs_fused']} vs fused; "
              f"max |diff| {r['max_abs_diff']:.1e}")
    return rows
