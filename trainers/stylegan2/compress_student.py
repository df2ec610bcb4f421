"""The compressed student of seed 003 ("A Comprehensive Overhaul of Distilling Unconditional GANs", Sec. 3.3-3.4,
Table 1): the teacher's StyleGAN2 generator with a channel multiplier on every synthesis layer, its style module S
(mapping) inherited or random, its convolution backbone C random, inherited (first channels) or pruned-inherited
(channels with the largest filter L1 norms, Li et al. 2017, "Pruning filters for efficient ConvNets").

The teacher's constant noise maps (``noise_const``, ``[r, r]`` per layer, independent of the channel count) are
always copied, so G_s(z) and G_t(z) see the same noise (seed 003's consistency condition, Eq. 2).
"""

from __future__ import annotations

import copy
import inspect
import re

import torch

from kdpipe.errors import ConfigError
from kdpipe.pipeline.teacher.networks import Generator, SynthesisNetwork

_SYNTH_DEFAULTS = {k: p.default for k, p in inspect.signature(SynthesisNetwork).parameters.items()}
_KEY = re.compile(r"^synthesis\.b(\d+)\.(const|conv0|conv1|torgb|skip)\.?(.*)$")


def synthesis_channels(kwargs: dict, resolution: int) -> int:
    """Channels of the synthesis block at ``resolution`` for Generator kwargs (``min(channel_base // r, channel_max)``)."""
    base = kwargs.get("channel_base", _SYNTH_DEFAULTS["channel_base"])
    cmax = kwargs.get("channel_max", _SYNTH_DEFAULTS["channel_max"])
    return min(base // resolution, cmax)


def student_kwargs(teacher: Generator, channel_multiplier: float, mapping_layers: int | None = None) -> dict:
    """Generator kwargs of the student: the teacher's with ``channel_base`` and ``channel_max`` times
    ``channel_multiplier`` (rounded) and, if given, another mapping depth.

    Raises: ConfigError when some block would be left with no channels.
    """
    kw = copy.deepcopy(teacher.init_kwargs)
    base = kw.get("channel_base", _SYNTH_DEFAULTS["channel_base"])
    cmax = kw.get("channel_max", _SYNTH_DEFAULTS["channel_max"])
    kw["channel_base"] = int(round(base * channel_multiplier))
    kw["channel_max"] = int(round(cmax * channel_multiplier))
    if mapping_layers is not None:
        kw["mapping_kwargs"] = dict(kw.get("mapping_kwargs") or {}, num_layers=mapping_layers)
    for r in teacher.synthesis.block_resolutions:
        if synthesis_channels(kw, r) < 1:
            raise ConfigError(f"model.channel_multiplier={channel_multiplier} leaves the {r}px block of the "
                              f"teacher ({synthesis_channels(teacher.init_kwargs, r)} channels) with none; "
                              "use a larger multiplier")
    return kw


def mapping_matches(student: Generator, teacher: Generator) -> bool:
    """True when the two mapping networks have the same parameter names and shapes (S can be inherited)."""
    a, b = student.mapping.state_dict(), teacher.mapping.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def kept_channels(teacher: Generator, student: Generator, how: str) -> dict[int, torch.Tensor]:
    """Teacher channel indices kept per synthesis resolution, ``{r: LongTensor[C_s(r)]}`` in increasing order.

    how: ``inherit`` = the first ``C_s(r)`` channels; ``pruned`` = the ``C_s(r)`` channels whose output filters
    (conv0 and conv1 of block r, or the constant of the 4 px block) have the largest summed L1 norm (Li et al. 2017).
    """
    kept = {}
    for r in teacher.synthesis.block_resolutions:
        n = synthesis_channels(student.init_kwargs, r)
        block = getattr(teacher.synthesis, f"b{r}")
        if how == "inherit":
            kept[r] = torch.arange(n)
            continue
        score = block.conv1.weight.abs().sum(dim=[1, 2, 3])
        score = score + (block.conv0.weight.abs().sum(dim=[1, 2, 3]) if hasattr(block, "conv0")
                         else block.const.abs().sum(dim=[1, 2]))
        kept[r] = torch.topk(score, n).indices.sort().values
    return kept


def _dims(key: str, kept: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Which dims of synthesis parameter ``key`` are indexed by which kept-channel set."""
    m = _KEY.match(key)
    if m is None:
        return {}
    r, layer, param = int(m.group(1)), m.group(2), m.group(3)
    out_idx = kept[r]
    in_idx = kept[r // 2] if layer in ("conv0", "skip") else kept[r]
    if layer == "const":
        return {0: out_idx}
    if param.startswith("affine."):
        return {0: in_idx}  # the affine layer emits one style per input channel
    if param == "weight":
        return {1: in_idx} if layer == "torgb" else {0: out_idx, 1: in_idx}
    if param == "bias" and layer != "torgb":
        return {0: out_idx}
    return {}


@torch.no_grad()
def initialise_student(student: Generator, teacher: Generator, init_style: str, init_synthesis: str) -> None:
    """Initialise ``student`` in place from ``teacher`` (seed 003, Table 1).

    init_style ``inherit``: copy the mapping (weights and ``w_avg``); ``random``: keep the fresh weights, set
    ``w_avg`` to the mean of the student's own w. init_synthesis ``random`` | ``inherit`` | ``pruned``: see
    :func:`kept_channels`. Noise maps are always the teacher's.

    Raises: ConfigError when S is to be inherited but the mapping architectures differ.
    """
    if init_style == "inherit":
        if not mapping_matches(student, teacher):
            raise ConfigError("model.init_style=inherit needs the teacher's mapping architecture; with "
                              "model.mapping_layers set to another depth use model.init_style=random (Eq. 9 then "
                              "trains S first)")
        student.mapping.load_state_dict(teacher.mapping.state_dict())
    else:
        z = torch.randn([4096, student.z_dim], generator=torch.Generator().manual_seed(0))
        student.mapping.w_avg.copy_(student.mapping(z.to(student.mapping.w_avg.device))[:, 0].mean(dim=0))
    t_state, s_state = teacher.synthesis.state_dict(), student.synthesis.state_dict()
    kept = kept_channels(teacher, student, init_synthesis) if init_synthesis != "random" else None
    for key, value in s_state.items():
        src = t_state[key]
        if key.endswith("noise_const") or (kept is not None and not key.endswith("resample_filter")):
            for dim, idx in (_dims(f"synthesis.{key}", kept) if kept is not None else {}).items():
                src = src.index_select(dim, idx.to(src.device))
            if src.shape != value.shape:
                raise AssertionError(f"{key}: inherited {list(src.shape)} != student {list(value.shape)}")
            value.copy_(src)


def param_count(module: torch.nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
