"""Seeds, latents and latent operations (style mixing, morphing).

Seed convention (NVlabs ``generate.py``): ``z = np.random.RandomState(seed).randn(1, z_dim)``, so seed N
gives the same image as the official tools for the same weights, truncation and ``noise_mode='const'``.
Sample ``i`` of a triplet task uses seeds ``base_seed + 2 i`` and ``base_seed + 2 i + 1``: it depends only
on ``(base_seed, i)``, never on batch size, device count or order of work.
"""

from __future__ import annotations

import numpy as np
import torch

from kdpipe.errors import ConfigError

MAX_SEED = 2 ** 32 - 1  # numpy RandomState accepts seeds in [0, 2**32)

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


def parse_seeds(spec: str, option: str = "--seeds") -> list[int]:
    """NVlabs ``--seeds`` syntax (``gen_images.py`` ``parse_range``): ``"0-3,10"`` -> ``[0, 1, 2, 3, 10]``.

    Ranges are inclusive; order and repeats are kept as written. ``option`` names the option in messages.
    Raises:
        ConfigError: an empty spec, a part that is not ``N`` or ``A-B`` with ``A <= B``, or a seed outside
            ``[0, 2**32)``.
    """
    seeds: list[int] = []
    for part in str(spec).split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()) or (sep and int(hi) < int(lo)):
            raise ConfigError(f"{option} {spec!r}: {part!r} is not a seed N or an inclusive range A-B (A <= B); "
                              "write e.g. 0-99,200")
        last = int(hi if sep else lo)
        if last > MAX_SEED:  # checked before the range is built
            raise ConfigError(f"{option} {spec!r}: seed {last} is outside [0, {MAX_SEED}]")
        seeds += range(int(lo), last + 1)
    return seeds


def sample_seeds(base_seed: int, index: int, per_sample: int) -> list[int]:
    """Seeds of sample ``index``: ``base_seed + per_sample * index + j`` for ``j < per_sample``."""
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
