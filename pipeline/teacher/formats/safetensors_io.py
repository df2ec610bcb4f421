"""A StyleGAN2 generator as one ``.safetensors`` file: ``G_ema.state_dict()`` plus its constructor kwargs.

Layout: tensors under the NV state_dict keys (``mapping.fc0.weight``, ``synthesis.b4.const``, ...,
``mapping.w_avg``), optionally the discriminator's under ``D.<key>``, stored float32 or float16;
``__metadata__`` = ``{"format": "kdpipe-stylegan2-generator", "version": "1", "G_kwargs": <json of Generator
kwargs>[, "D_kwargs": <json>]}``. safetensors holds only tensors and strings, so reading
one executes nothing. Used by ``kdpipe train stylegan2`` exports and the shipped ``builtin:digits-32`` weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kdpipe.errors import CheckpointError
from kdpipe.fsutil import atomic_write_bytes

FORMAT = "kdpipe-stylegan2-generator"


def write_generator_safetensors(path: str | Path, G: torch.nn.Module, D: torch.nn.Module | None = None,
                                dtype: torch.dtype = torch.float32) -> Path:
    """Write ``G``'s state_dict (cast to ``dtype``: float32, or float16 to halve the size) and kwargs atomically;
    with ``D``, also the discriminator under keys ``D.<key>`` and ``D_kwargs`` in the metadata.

    Raises: CheckpointError when a network has no ``init_kwargs``.
    """
    from safetensors.torch import save

    tensors, meta = {}, {"format": FORMAT, "version": "1"}
    for prefix, net, what in (("", G, "G"), ("D.", D, "D")):
        if net is None:
            continue
        kwargs = getattr(net, "init_kwargs", None)
        if kwargs is None:
            raise CheckpointError(f"cannot export {what}: it has no init_kwargs")
        meta[f"{what}_kwargs"] = json.dumps(kwargs, sort_keys=True)
        tensors |= {prefix + k: v.detach().cpu().to(dtype).contiguous() for k, v in net.state_dict().items()}
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def read_generator_safetensors(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(metadata with G_kwargs [and D_kwargs] parsed, all tensors float32)`` from a file written by
    :func:`write_generator_safetensors`.

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
    meta = {k: json.loads(v) if k.endswith("_kwargs") else v for k, v in meta.items()}
    return meta, sd


def load_generator_safetensors(path: str | Path, with_D: bool = False):
    """The :class:`~kdpipe.pipeline.teacher.networks.Generator` (eval, no grad) stored in ``path``; with ``with_D``
    ``(G, D)`` where D is None when the file has none."""
    from kdpipe.pipeline.teacher.discriminator import Discriminator
    from kdpipe.pipeline.teacher.networks import Generator

    meta, sd = read_generator_safetensors(path)
    G = Generator(**meta["G_kwargs"])
    G.load_state_dict({k: v for k, v in sd.items() if not k.startswith("D.")})
    G = G.eval().requires_grad_(False)
    if not with_D:
        return G
    D = None
    if "D_kwargs" in meta:
        D = Discriminator(**meta["D_kwargs"])
        D.load_state_dict({k[2:]: v for k, v in sd.items() if k.startswith("D.")})
        D = D.eval().requires_grad_(False)
    return G, D
