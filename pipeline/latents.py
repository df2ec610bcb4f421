"""Seeds, latents and latent operations (style mixing, morphing).

Seed convention (NVlabs ``generate.py``): ``z = np.random.RandomState(seed).randn(1, z_dim)``, so seed N
gives the same image as the official tools for the same weights, truncation and ``noise_mode='const'``.
Sample ``i`` of a triplet task uses seeds ``base_seed + 2 i`` and ``base_seed + 2 i + 1``: it depends only
on ``(base_seed, i)``, never on batch size, device count or order of work.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from kdpipe.errors import ConfigError

MAX_SEED = 2 ** 32 - 1  # numpy RandomState accepts seeds in [0, 2**32)
MAX_LISTED_SEEDS = 10 ** 7  # a seed list longer than this is a typo (or a job for --seed and -n)

# StyleGAN (Karras et al. 2019, Sec. 3.1; seed 002 Sec. 5): coarse = 4^2-8^2, middle = 16^2-32^2, fine = 64^2+.
MIX_GROUPS = {"coarse": (0, 4), "middle": (4, 8), "fine": (8, None)}


def z_from_seeds(seeds, z_dim: int) -> torch.Tensor:
    """z for each seed: ``[len(seeds), z_dim]`` float32 (``RandomState(seed).randn(1, z_dim)``, NVlabs convention).

    Raises:
        ConfigError: a seed outside ``[0, 2**32)``.
    """
    seeds = [int(seed) for seed in seeds]
    z = np.empty((len(seeds), z_dim))
    rng = np.random.RandomState(0)  # re-seeded per seed: the numbers of RandomState(seed), ~10x faster
    for row, seed in enumerate(seeds):
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed {seed} is outside [0, {MAX_SEED}]; choose a smaller base seed or fewer samples")
        rng.seed(seed)
        z[row] = rng.randn(z_dim)
    return torch.from_numpy(z.astype(np.float32))


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """Seeds from ``'0-99,200'`` (NVlabs ``parse_range``: comma-separated integers and inclusive ``A-B`` ranges),
    in the order given, duplicates kept (as the official tools do).

    Raises:
        ConfigError: an empty list, a part that is not ``N`` or ``A-B``, ``A > B``, or a seed outside
            ``[0, 2**32)``; the message names ``option`` and the part.
    """
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ConfigError(f"{option} {text!r}: part {part!r} is not a seed N or a range A-B (e.g. 0-99,200)")
        first, last = int(lo), int(hi) if dash else int(lo)
        if first > last:
            raise ConfigError(f"{option} {text!r}: range {part!r} runs backwards; write {last}-{first}")
        if last > MAX_SEED:
            raise ConfigError(f"{option} {text!r}: seed {last} is outside [0, {MAX_SEED}]")
        if len(seeds) + last - first + 1 > MAX_LISTED_SEEDS:
            raise ConfigError(f"{option} {text!r} lists more than {MAX_LISTED_SEEDS} seeds; use a base seed and a "
                              "count for larger runs")
        seeds.extend(range(first, last + 1))
    return seeds


def format_seeds(seeds) -> str:
    """The shortest :func:`parse_seeds` text of ``seeds`` (runs of consecutive seeds as ``A-B``), e.g.
    ``[0, 1, 2, 7]`` -> ``'0-2,7'``; ``parse_seeds(format_seeds(s)) == list(s)``."""
    parts, seeds = [], [int(x) for x in seeds]
    start = 0
    for k in range(1, len(seeds) + 1):
        if k == len(seeds) or seeds[k] != seeds[k - 1] + 1:
            a, b = seeds[start], seeds[k - 1]
            parts.append(str(a) if a == b else f"{a}-{b}")
            start = k
    return ",".join(parts)


def apply_seed_list(name: str, section: Any, per_sample: int) -> None:
    """Apply ``section.seeds`` (a seed list, :func:`parse_seeds` text) to ``n`` and
    ``seed``: ``n = len(seeds) / per_sample``; a list that is one run ``a, a+1, ...`` becomes ``seed = a`` and
    ``seeds = None`` (the same config, fingerprint and bytes as ``--seed a -n N``); any other list is kept in its
    shortest form (:func:`format_seeds`, so ``0,1,2`` and ``0-2`` fingerprint alike) with ``seed`` = its first.

    Raises:
        ConfigError: a malformed list, or a length that is not a multiple of ``per_sample``.
    """
    if section.seeds is None:
        return
    seeds = parse_seeds(str(section.seeds), f"{name}.seeds")
    if len(seeds) % per_sample:
        raise ConfigError(f"{name}.seeds lists {len(seeds)} seeds but every sample takes {per_sample} (x1, x2); "
                          f"give a multiple of {per_sample}")
    section.n, section.seed = len(seeds) // per_sample, seeds[0]
    contiguous = seeds[-1] - seeds[0] == len(seeds) - 1 and all(b == a + 1 for a, b in zip(seeds, seeds[1:]))
    section.seeds = None if contiguous else format_seeds(seeds)


@functools.lru_cache(maxsize=4)
def _seed_array(text: str) -> np.ndarray:
    return np.asarray(parse_seeds(text), dtype=np.int64)


def sample_seeds(base_seed: int, index: int, per_sample: int, seeds: str | None = None) -> list[int]:
    """Seeds of sample ``index``: ``base_seed + per_sample * index + j`` for ``j < per_sample``; with a seed list
    ``seeds`` (:func:`parse_seeds` text, e.g. ``render.seeds``) its entries ``per_sample * index + j`` instead.
    Either way they depend only on ``(base_seed or seeds, index)``."""
    if seeds is not None:
        return [int(x) for x in _seed_array(seeds)[per_sample * index:per_sample * (index + 1)]]
    first = base_seed + per_sample * index
    return [first + j for j in range(per_sample)]


def parse_mix(spec: str | int, num_ws: int) -> list[int]:
    """Layers of the style-mixed target that take their ws from the *second* (reference/style) latent.

    Args:
        spec: ``'crossover:K'`` or int ``K`` -> layers ``[K, num_ws)`` come from w2 (seed 000: the content latent
            w1 feeds the first four layers, K=4); ``'coarse' | 'middle' | 'fine'`` -> that group of layers comes
            from w2 (seed 002 / StyleGAN Fig. 3: coarse = ws 0-3 (4^2-8^2), middle = 4-7, fine = 8+).
        num_ws: the generator's ``num_ws``.
    Returns:
        Sorted layer indices.
    Raises:
        ConfigError: unknown spec, or a crossover outside ``[1, num_ws - 1]`` (that would copy one image).
    """
    if isinstance(spec, str) and spec in MIX_GROUPS:
        lo, hi = MIX_GROUPS[spec]
        layers = list(range(lo, num_ws if hi is None else min(hi, num_ws)))
        if not layers:
            raise ConfigError(f"mix group {spec!r} is empty for a generator with num_ws={num_ws}")
        return layers
    text = str(spec)
    if text.startswith("crossover:"):
        text = text[len("crossover:"):]
    try:
        k = int(text)
    except ValueError:
        raise ConfigError(f"style-mix layers {spec!r} not understood; use 'crossover:K', 'coarse', 'middle' "
                          "or 'fine'") from None
    if not 1 <= k <= num_ws - 1:
        raise ConfigError(f"crossover {k} is outside [1, {num_ws - 1}] for num_ws={num_ws}")
    return list(range(k, num_ws))


def mix_ws(ws1: torch.Tensor, ws2: torch.Tensor, layers) -> torch.Tensor:
    """Style mixing: ``ws1`` with the listed layers replaced by ``ws2``'s. ws: ``[N, num_ws, w_dim]``."""
    out = ws1.clone()
    out[:, list(layers)] = ws2[:, list(layers)]
    return out


def morph_ws(ws1: torch.Tensor, ws2: torch.Tensor) -> torch.Tensor:
    """Face morphing target (seed 002 Sec. 5): ``(w1 + w2) / 2``. ws: ``[N, num_ws, w_dim]``."""
    return (ws1 + ws2) / 2
