"""A StyleGAN2 generator as one ``.safetensors`` file: ``G_ema.state_dict()`` plus its constructor kwargs.

Layout: tensors under the NV state_dict keys (``mapping.fc0.weight``, ``synthesis.b4.const``, ...,
``mapping.w_avg``), stored float32 or float16; ``__metadata__`` = ``{"format": "kdpipe-stylegan2-generator",
"version": "1", "G_kwargs": <json of Generator kwargs>}``. safetensors holds only tensors and strings, so reading
one executes nothing. Used by ``kdpipe train stylegan2`` exports and the shipped ``builtin:digits-32`` weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kdpipe.errors import CheckpointError
from kdpipe.fsutil import atomic_write_bytes

FORMAT = "kdpipe-stylegan2-generator"


def write_generator_safetensors(path: str | Path, G: torch.nn.Module, dtype: torch.dtype = torch.float32,
                                G_kwargs: dict | None = None) -> Path:
    """Write ``G``'s state_dict (cast to ``dtype``: float32, or float16 to halve the size) and kwargs atomically.

    Raises: CheckpointError when G has no ``init_kwargs`` and none are given.
    """
    from safetensors.torch import save

    kwargs = G_kwargs if G_kwargs is not None else getattr(G, "init_kwargs", None)
    if kwargs is None:
        raise CheckpointError("cannot export the generator: it has no init_kwargs; pass G_kwargs")
    tensors = {k: v.detach().cpu().to(dtype).contiguous() for k, v in G.state_dict().items()}
    meta = {"format": FORMAT, "version": "1", "G_kwargs": json.dumps(kwargs, sort_keys=True)}
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def read_generator_safetensors(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(G_kwargs, state_dict float32)`` from a file written by :func:`write_generator_safetensors`.

    Raises: CheckpointError naming the file if it is missing, not safetensors, or not this format.
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{str(path)!r} is not a kdpipe generator safetensors file "
                                      f"(metadata format={meta.get('format')!r}, expected {FORMAT!r})")
            sd = {k: f.get_tensor(k).to(torch.float32) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read {str(path)!r} as safetensors ({type(exc).__name__}: {exc})") from None
    return json.loads(meta["G_kwargs"]), sd


def load_generator_safetensors(path: str | Path):
    """A :class:`~kdpipe.pipeline.teacher.networks.Generator` (eval, no grad) built and filled from ``path``."""
    from kdpipe.pipeline.teacher.networks import Generator

    kwargs, sd = read_generator_safetensors(path)
    G = Generator(**kwargs)
    G.load_state_dict(sd)
    return G.eval().requires_grad_(False)
