"""A budget for untrusted checkpoints: what a file may make the loader allocate, checked before allocating it.

A pickle of a few KB can describe a network of 10^12 parameters (constructor arguments), a tensor whose strides
make a 4-byte storage read as gigabytes (expanded on dtype conversion), or a structure whose shared references
explode when copied naively. Each check here runs before the allocation it guards and raises a one-line
:class:`~kdpipe.errors.CheckpointError` naming the field and the bound:

* :func:`check_architecture`: every ``Generator`` / ``Discriminator`` constructor field within sane bounds
  (resolution a power of two in [4, 4096], channels, layers, dims);
* :func:`check_param_budget`: the parameter count the architecture implies (:func:`estimate_params`, from the
  formula, nothing built) at most :func:`max_params` (``KDPIPE_MAX_TEACHER_PARAMS``, default 250M: the largest
  official StyleGAN2 1024x1024 generator + discriminator pair has about 60M);
* :func:`tensor_layout_problem` / :func:`check_tensors`: every tensor's storage holds its logical size (no stride
  or offset tricks), and all tensors together stay within the same budget in float32;
* :func:`plain_copy`: container copies with a memo (shared references copied once) and a depth limit.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from kdpipe.errors import CheckpointError

DEFAULT_MAX_PARAMS = 250_000_000
MAX_DEPTH = 64
# field -> (min, max) for integer architecture fields (Generator, Discriminator, MappingNetwork kwargs)
INT_BOUNDS = {
    "z_dim": (0, 4096), "c_dim": (0, 4096), "w_dim": (1, 4096), "img_channels": (1, 4),
    "channel_base": (1, 1 << 20), "channel_max": (1, 4096), "num_fp16_res": (0, 16), "num_layers": (0, 32),
    "embed_features": (0, 4096), "layer_features": (1, 4096), "cmap_dim": (0, 4096), "mbstd_group_size": (0, 1024),
    "mbstd_num_channels": (0, 64), "kernel_size": (1, 7),
}
MAX_RESOLUTION = 4096


def max_params() -> int:
    """The parameter budget: ``KDPIPE_MAX_TEACHER_PARAMS`` (a positive integer) or :data:`DEFAULT_MAX_PARAMS`."""
    raw = os.environ.get("KDPIPE_MAX_TEACHER_PARAMS")
    if raw is None:
        return DEFAULT_MAX_PARAMS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise CheckpointError(f"KDPIPE_MAX_TEACHER_PARAMS={raw!r} is not a positive integer; unset it or pass e.g. "
                              f"{DEFAULT_MAX_PARAMS}")
    return value


def _fields(kwargs: dict, prefix: str = ""):
    for key, value in kwargs.items():
        if isinstance(value, dict):
            yield from _fields(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", str(key), value


def check_architecture(kwargs: dict, what: str) -> None:
    """Refuse constructor kwargs outside sane bounds before anything is built.

    Args:
        kwargs: ``Generator`` / ``Discriminator`` kwargs (nested ``mapping_kwargs`` etc. included).
        what: e.g. ``"checkpoint 'x.pkl': generator"``.
    Raises:
        CheckpointError: ``<what> field img_resolution = 3 is not a power of two in [4, 4096]`` and the like.
    """
    for path, key, value in _fields(kwargs):
        if isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{what} field {path} = {value} is not a finite number; do not trust this file")
        if key == "img_resolution":
            if not isinstance(value, int) or isinstance(value, bool) or not 4 <= value <= MAX_RESOLUTION \
                    or value & (value - 1):
                raise CheckpointError(f"{what} field {path} = {value!r} is not a power of two in "
                                      f"[4, {MAX_RESOLUTION}]; do not trust this file")
        elif key in INT_BOUNDS and value is not None:
            lo, hi = INT_BOUNDS[key]
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise CheckpointError(f"{what} field {path} = {value!r} is outside [{lo}, {hi}]; "
                                      "do not trust this file")


def estimate_params(kwargs: dict) -> int:
    """Parameters a StyleGAN2 ``Generator`` or ``Discriminator`` with these kwargs holds, estimated from the
    architecture formula without building anything (an upper estimate, within a small factor of the exact
    count): per block resolution r with ``C_r = min(channel_base // r, channel_max)`` two 3x3 convs, a 1x1
    skip, two affines from ``w_dim`` and an ``r x r`` noise constant; plus the mapping MLP; plus the 4x4 epilogue
    of a discriminator. Call :func:`check_architecture` first (the fields are then bounded ints)."""
    res = kwargs.get("img_resolution", 4)
    base, cmax = kwargs.get("channel_base", 32768), kwargs.get("channel_max", 512)
    w_dim = kwargs.get("w_dim") or 0
    mapping = kwargs.get("mapping_kwargs") or {}
    total, r = 0, 4
    while r <= res:
        c, prev = min(base // r, cmax), min(base // max(r // 2, 1), cmax)
        total += 9 * c * (c + prev) + c * prev + 2 * w_dim * max(c, prev) + 2 * r * r + 4 * c
        r *= 2
    width = max(kwargs.get("z_dim") or 0, w_dim, mapping.get("layer_features") or 0)
    total += (mapping.get("num_layers", 8) or 0) * (width * width + width)
    c4 = min(base // 4, cmax)
    total += 16 * c4 * c4 + 16 * c4 * c4  # discriminator epilogue: 3x3 conv and the 4x4 fully connected layer
    return total


def check_param_budget(kwargs: dict, what: str) -> int:
    """Refuse kwargs whose :func:`estimate_params` exceeds :func:`max_params`, before anything is built.

    Returns:
        the estimate.
    Raises:
        CheckpointError: over budget (names the estimate, the limit and ``KDPIPE_MAX_TEACHER_PARAMS``).
    """
    count = estimate_params(kwargs)
    limit = max_params()
    if count > limit:
        raise CheckpointError(f"{what} would have about {count:,} parameters, above the limit of {limit:,} "
                              "(set KDPIPE_MAX_TEACHER_PARAMS to raise it for a trusted file)")
    return count


def tensor_layout_problem(storage_numel: int, offset: int, size: tuple, stride: tuple) -> str | None:
    """Why a tensor view does not fit its storage, or ``None``. A view must lie inside its storage and not read
    any element twice (a 4-byte storage with stride 0 and size 10^9 becomes 4 GB on a dtype conversion).
    Counts elements, not bytes."""
    numel = math.prod(size)
    if offset < 0 or any(s < 0 for s in size) or any(st < 0 for st in stride) or len(size) != len(stride):
        return "a tensor has a negative offset, size or stride"
    extent = offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1 if numel else 0
    if extent > storage_numel or numel > storage_numel:
        return (f"a tensor of {numel:,} elements is backed by a storage of only {storage_numel:,} "
                "(stride or offset trick)")
    return None


def check_tensors(tensors, where: str) -> None:
    """Every tensor fits its storage (:func:`tensor_layout_problem`) and their total element count (what float32
    conversion allocates) is within :func:`max_params`.

    Raises:
        CheckpointError: naming ``where`` and the problem.
    """
    total = 0
    for t in tensors:
        storage_numel = t.untyped_storage().nbytes() // max(t.element_size(), 1)
        problem = tensor_layout_problem(storage_numel, t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if problem:
            raise CheckpointError(f"{where}: {problem}; do not trust this file")
        total += t.numel()
    limit = max_params()
    if total > limit:
        raise CheckpointError(f"{where}: its tensors hold {total:,} elements, above the limit of {limit:,} "
                              "(set KDPIPE_MAX_TEACHER_PARAMS to raise it for a trusted file)")


def iter_tensors(obj: Any, where: str):
    """Every tensor reachable from ``obj`` through dicts, lists, tuples and objects' ``__dict__`` (each object
    visited once; deeper than :data:`MAX_DEPTH` raises CheckpointError)."""
    seen: set[int] = set()
    stack = [(obj, 0)]
    while stack:
        x, depth = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{where}: nested deeper than {MAX_DEPTH} levels; do not trust this file")
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, dict):
            stack.extend((v, depth + 1) for v in x.values())
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in x)
        elif hasattr(x, "__dict__") and not isinstance(x, type):
            stack.extend((v, depth + 1) for v in vars(x).values())


def plain_copy(obj: Any, where: str, memo: dict | None = None, depth: int = 0) -> Any:
    """Dicts (EasyDict, OrderedDict) -> ``dict``, lists/tuples -> ``list``, other values as is; shared references
    are copied once (memo), so a structure that references one list 2^40 times costs one copy.

    Raises:
        CheckpointError: nested deeper than :data:`MAX_DEPTH`, or a container that contains itself.
    """
    memo = {} if memo is None else memo
    if not isinstance(obj, (dict, list, tuple)):
        return obj
    if id(obj) in memo:
        if memo[id(obj)] is None:
            raise CheckpointError(f"{where}: a container contains itself; do not trust this file")
        return memo[id(obj)]
    if depth > MAX_DEPTH:
        raise CheckpointError(f"{where}: nested deeper than {MAX_DEPTH} levels; do not trust this file")
    memo[id(obj)] = None  # in progress: a cycle back here is refused
    if isinstance(obj, dict):
        out: Any = {k: plain_copy(v, where, memo, depth + 1) for k, v in obj.items()}
    else:
        out = [plain_copy(v, where, memo, depth + 1) for v in obj]
    memo[id(obj)] = out
    return out
