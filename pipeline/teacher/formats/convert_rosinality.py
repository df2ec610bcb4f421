"""rosinality/stylegan2-pytorch state_dicts <-> NV-pytorch (stylegan2-ada-pytorch) kwargs + state_dict.

Rules (reference doc ``stylegan2-checkpoint-formats.md`` section 3, verified upstream by image equality,
max |diff| 6.7e-7; rosinality commit bef283a1c240 ``model.py``):

* ``style.{i+1}`` <-> ``mapping.fc{i}`` (``style.0`` is PixelNorm);
  ``input.input`` ``[1,C,4,4]`` <-> ``b4.const[None]``;
* modulated conv ``conv.weight`` ``[1,out,in,k,k]`` <-> NV ``weight[None]`` -- **no flip** between the two PyTorch
  ports (both flipped TF's ``Conv0_up``); ``conv.modulation`` <-> ``affine`` (both store the +1);
  ``noise.weight`` ``[1]`` <-> ``noise_strength`` ``[]``; ``activate.bias`` <-> ``bias``;
* ``convs.{2j}`` / ``convs.{2j+1}`` / ``to_rgbs.{j}`` <-> ``b{2^(j+3)}.conv0`` / ``.conv1`` / ``.torgb``;
  ``conv1`` / ``to_rgb1`` <-> ``b4.conv1`` / ``b4.torgb``; ``to_rgb*.bias`` ``[1,3,1,1]`` <-> ``torgb.bias`` ``[3]``;
* ``noises.noise_{j}`` ``[1,1,r,r]`` <-> the ``noise_const`` ``[r,r]`` of the conv fed by ``ws[j]``;
* ``latent_avg`` <-> ``mapping.w_avg``; FIR buffers are rebuilt, not transferred (rosinality's are ``x4``).
* Discriminator: ``convs.0`` (fromRGB ConvLayer) <-> ``b{R}.fromrgb``; ResBlock ``convs.{k}`` (k >= 1, resolution
  ``R / 2^(k-1)``): ``conv1`` <-> ``conv0``, ``conv2`` <-> ``conv1`` (down), ``skip`` <-> ``skip``; ``final_conv``
  <-> ``b4.conv``; ``final_linear.0`` / ``.1`` <-> ``b4.fc`` / ``b4.out``. Weights copy as is.

rosinality files carry no config: size, ``n_mlp``, ``style_dim`` and channels are read from key names and
shapes; ``lr_mlp`` cannot be and is assumed to be the default 0.01.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.pipeline.teacher.formats.convert_tf import _noise_keys, block_resolutions, nv_channels, nv_resample_filter
from kdpipe.errors import CheckpointError

ROSINALITY_LR_MLP = 0.01  # rosinality Generator(lr_mlp=0.01) default; not stored in checkpoints
_ROSI_KERNEL_X4 = nv_resample_filter() * 4  # rosinality Blur(upsample_factor=2) / Upsample kernel: outer/64 * 4


def solve_channels(channels: dict[int, int], what: str, source: str) -> tuple[int, int]:
    """Find NV ``(channel_base, channel_max)`` with ``min(channel_base // r, channel_max) == channels[r]`` for all r.

    Args:
        channels: resolution -> channel count read from the weights.
    Returns:
        ``(channel_base, channel_max)``; when every resolution has ``channel_max`` channels the base is
        ``max(32768, channel_max * R)`` (rosinality's default ``channel_multiplier=2`` is base 32768).
    Raises:
        CheckpointError: no such pair exists (e.g. rosinality ``channel_multiplier`` > 2 with 512 at 32 px).
    """
    cmax = max(channels.values())
    below = sorted(r for r, c in channels.items() if c < cmax)
    base = channels[below[0]] * below[0] if below else max(32768, cmax * max(channels))
    if any(nv_channels(base, cmax, r) != c for r, c in channels.items()):
        raise CheckpointError(f"checkpoint '{source}': {what} channels {dict(sorted(channels.items()))} cannot be "
                              "expressed as min(channel_base // res, channel_max)")
    return base, cmax


def _get(sd: dict, key: str, source: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"checkpoint '{source}': rosinality state_dict has no {key!r}")
    return sd[key].detach().to(torch.float32)


def rosinality_generator_kwargs(sd: dict, source: str = "<checkpoint>") -> dict:
    """Infer NV ``Generator`` kwargs from a rosinality ``g_ema`` state_dict (keys and shapes only).

    Returns:
        flat NV kwargs: z_dim = w_dim = style_dim, c_dim 0, img_resolution from the number of ``to_rgbs``,
        ``mapping_kwargs.num_layers`` = n_mlp (count of ``style.{i}.weight``), channel_base/channel_max from
        the conv shapes (rosinality ``channel_multiplier`` m <=> channel_base 16384*m, channel_max 512).
    Raises:
        CheckpointError: keys missing or channels not expressible.
    """
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    n_rgb = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    if n_mlp == 0 or "input.input" not in sd:
        raise CheckpointError(f"checkpoint '{source}': 'g_ema' is not a rosinality StyleGAN2 generator state_dict "
                              "(no style.*.weight / input.input)")
    style_dim = _get(sd, "style.1.weight", source).shape[1]
    w_dim = _get(sd, f"style.{n_mlp}.weight", source).shape[0]
    res = 2 ** (n_rgb + 2)
    channels = {4: _get(sd, "input.input", source).shape[1]}
    for j in range(n_rgb):
        channels[2 ** (j + 3)] = _get(sd, f"convs.{2 * j}.conv.weight", source).shape[1]
    base, cmax = solve_channels(channels, "generator", source)
    return dict(z_dim=style_dim, c_dim=0, w_dim=w_dim, img_resolution=res, img_channels=3,
                mapping_kwargs=dict(num_layers=n_mlp), channel_base=base, channel_max=cmax)


def _rosi_g_layers(res_list: list[int]):
    """Yield ``(nv_prefix, rosinality_prefix, kind)`` for generator layers in NV order."""
    for r in res_list:
        j = int(np.log2(r)) - 3
        if r == 4:
            yield "synthesis.b4.conv1.", "conv1.", "conv"
            yield "synthesis.b4.torgb.", "to_rgb1.", "torgb"
        else:
            yield f"synthesis.b{r}.conv0.", f"convs.{2 * j}.", "conv"
            yield f"synthesis.b{r}.conv1.", f"convs.{2 * j + 1}.", "conv"
            yield f"synthesis.b{r}.torgb.", f"to_rgbs.{j}.", "torgb"


def rosinality_to_nv_generator(sd_r: dict, latent_avg: torch.Tensor | None,
                               source: str = "<checkpoint>") -> tuple[dict, dict, dict]:
    """rosinality ``g_ema`` (+ optional ``latent_avg``) -> NV kwargs, state_dict, info.

    Args:
        sd_r: rosinality Generator state_dict.
        latent_avg: ``[w_dim]`` (convert_weight.py stores TF ``dlatent_avg``) or None (train.py checkpoints).
    Returns:
        ``(kwargs, state_dict, info)``; without latent_avg, ``mapping.w_avg`` is :func:`mapping_w_avg`
        (mean of the mapping over 4096 z from ``RandomState(0)``) and info says so.
    """
    kwargs = rosinality_generator_kwargs(sd_r, source)
    res_list = block_resolutions(kwargs["img_resolution"])
    fir = nv_resample_filter()
    noise_keys = _noise_keys(res_list)
    noise_idx = {key.rsplit(".", 1)[0] + ".": j for j, key in enumerate(noise_keys)}
    sd: dict[str, torch.Tensor] = {}
    for r in res_list:
        b = f"synthesis.b{r}."
        if r == 4:
            sd[b + "const"] = _get(sd_r, "input.input", source)[0]
        sd[b + "resample_filter"] = fir.clone()
        for nv, ro, kind in _rosi_g_layers([r]):
            sd[nv + "weight"] = _get(sd_r, ro + "conv.weight", source)[0]
            if kind == "conv":
                sd[nv + "noise_strength"] = _get(sd_r, ro + "noise.weight", source).reshape([])
                sd[nv + "bias"] = _get(sd_r, ro + "activate.bias", source)
                sd[nv + "resample_filter"] = fir.clone()
                sd[nv + "noise_const"] = _get(sd_r, f"noises.noise_{noise_idx[nv]}", source)[0, 0]
            else:
                sd[nv + "bias"] = _get(sd_r, ro + "bias", source).reshape(-1)
            sd[nv + "affine.weight"] = _get(sd_r, ro + "conv.modulation.weight", source)
            sd[nv + "affine.bias"] = _get(sd_r, ro + "conv.modulation.bias", source)
    info = {"lr_multiplier": f"mapping lr multiplier assumed {ROSINALITY_LR_MLP} (rosinality default lr_mlp; "
                             "not stored in the file)"}
    if kwargs["channel_max"] == 512:
        info["channel_multiplier"] = kwargs["channel_base"] / 16384  # rosinality m <=> channel_base 16384*m
    sd["mapping.w_avg"] = torch.zeros(kwargs["w_dim"])
    for i in range(kwargs["mapping_kwargs"]["num_layers"]):
        sd[f"mapping.fc{i}.weight"] = _get(sd_r, f"style.{i + 1}.weight", source)
        sd[f"mapping.fc{i}.bias"] = _get(sd_r, f"style.{i + 1}.bias", source)
    if latent_avg is not None:
        if latent_avg.numel() != kwargs["w_dim"]:
            raise CheckpointError(f"checkpoint '{source}': 'latent_avg' has {latent_avg.numel()} values, "
                                  f"expected w_dim={kwargs['w_dim']}")
        sd["mapping.w_avg"] = latent_avg.detach().to(torch.float32).reshape(-1).clone()
        info["w_avg"] = "from the file's 'latent_avg'"
    else:
        sd["mapping.w_avg"] = mapping_w_avg(sd, kwargs)
        info["w_avg"] = "computed: mean of mapping(z) over 4096 z from numpy RandomState(0) (file has no latent_avg)"
    return kwargs, sd, info


def mapping_w_avg(sd: dict, kwargs: dict, num_samples: int = 4096, seed: int = 0) -> torch.Tensor:
    """Mean W of the mapping network, in pure PyTorch from an NV state_dict.

    ``z ~ RandomState(seed).randn(num_samples, z_dim)`` (NVlabs seed convention), ``x = z / rms(z)``, then
    ``lrelu(x @ (W * lr/sqrt(in)).T + b * lr, 0.2) * sqrt(2)`` per layer (NV MappingNetwork / rosinality
    ``style``; both use lr 0.01). Returns ``[w_dim]`` float32. Unconditional mappings only.
    """
    mk = kwargs.get("mapping_kwargs") or {}
    lr = mk.get("lr_multiplier", ROSINALITY_LR_MLP)
    z = torch.from_numpy(np.random.RandomState(seed).randn(num_samples, kwargs["z_dim"]).astype(np.float32))
    x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    for i in range(mk.get("num_layers", 8)):
        w, b = sd[f"mapping.fc{i}.weight"], sd[f"mapping.fc{i}.bias"]
        x = F.leaky_relu(F.linear(x, w * (lr / math.sqrt(w.shape[1])), b * lr), 0.2) * math.sqrt(2)
    return x.mean(dim=0)


def nv_generator_to_rosinality(kwargs: dict, sd: dict) -> dict:
    """NV kwargs + state_dict -> rosinality ``Generator`` state_dict (rosinality key order, FIR buffers included).

    Raises:
        CheckpointError: things rosinality's Generator cannot represent (non-'skip' architecture,
            conditional, img_channels != 3, no noise, mapping lr multiplier != 0.01).
    """
    mk = kwargs.get("mapping_kwargs") or {}
    bad = {"architecture": kwargs.get("architecture", "skip") != "skip", "c_dim": kwargs.get("c_dim", 0) != 0,
           "img_channels": kwargs.get("img_channels", 3) != 3, "use_noise": not kwargs.get("use_noise", True),
           "lr_multiplier": mk.get("lr_multiplier", ROSINALITY_LR_MLP) != ROSINALITY_LR_MLP}
    if any(bad.values()):
        name = [k for k, v in bad.items() if v][0]
        raise CheckpointError(f"cannot write the rosinality format: generator {name} is not what rosinality supports")
    res_list = block_resolutions(kwargs["img_resolution"])
    out: dict[str, torch.Tensor] = {}
    for i in range(mk.get("num_layers", 8)):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"].clone()
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"].clone()
    out["input.input"] = sd["synthesis.b4.const"][None].clone()
    for nv, ro, kind in _rosi_g_layers(res_list):
        if kind == "torgb":
            out[ro + "bias"] = sd[nv + "bias"].reshape(1, -1, 1, 1).clone()
            if ro != "to_rgb1.":
                out[ro + "upsample.kernel"] = _ROSI_KERNEL_X4.clone()
        out[ro + "conv.weight"] = sd[nv + "weight"][None].clone()
        if kind == "conv" and nv.endswith("conv0."):
            out[ro + "conv.blur.kernel"] = _ROSI_KERNEL_X4.clone()
        out[ro + "conv.modulation.weight"] = sd[nv + "affine.weight"].clone()
        out[ro + "conv.modulation.bias"] = sd[nv + "affine.bias"].clone()
        if kind == "conv":
            out[ro + "noise.weight"] = sd[nv + "noise_strength"].reshape(1).clone()
            out[ro + "activate.bias"] = sd[nv + "bias"].clone()
    for j, key in enumerate(_noise_keys(res_list)):
        out[f"noises.noise_{j}"] = sd[key][None, None].clone()
    return {k: out[k] for k in sorted(out, key=_rosi_g_rank)}  # stable sort: rosinality's module order


def _rosi_g_rank(key: str) -> tuple[int, int]:
    """rosinality Generator registers style, input, conv1, to_rgb1, convs, to_rgbs, noises in that order."""
    head, _, rest = key.partition(".")
    group = ["style", "input", "conv1", "to_rgb1", "convs", "to_rgbs", "noises"].index(head)
    index = rest.split(".")[0]
    return group, int(index) if head in ("convs", "to_rgbs") else 0


def _rosi_d_layers(res: int):
    """Yield ``(nv_prefix, rosinality_prefix, kind)`` for discriminator layers in NV order.

    kind: 'conv' (weight + bias in a separate FusedLeakyReLU), 'skip' (weight only), 'dense'.
    """
    res_list = block_resolutions(res)[::-1][:-1]
    for k, r in enumerate(res_list, start=1):
        if r == res:
            yield f"b{r}.fromrgb.", ("convs.0.0.", "convs.0.1."), "conv"
        yield f"b{r}.conv0.", (f"convs.{k}.conv1.0.", f"convs.{k}.conv1.1."), "conv"
        yield f"b{r}.conv1.", (f"convs.{k}.conv2.1.", f"convs.{k}.conv2.2."), "conv_down"
        yield f"b{r}.skip.", (f"convs.{k}.skip.1.", None), "skip"
    yield "b4.conv.", ("final_conv.0.", "final_conv.1."), "conv"
    yield "b4.fc.", ("final_linear.0.", "final_linear.0."), "dense"
    yield "b4.out.", ("final_linear.1.", "final_linear.1."), "dense"


def rosinality_to_nv_discriminator(sd_r: dict, source: str = "<checkpoint>") -> tuple[dict, dict]:
    """rosinality ``d`` state_dict -> NV ``Discriminator`` kwargs (resnet, mbstd group 4 / 1 channel) + state_dict."""
    n_blocks = len([k for k in sd_r if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k)])
    if n_blocks == 0 or "final_conv.0.weight" not in sd_r:
        raise CheckpointError(f"checkpoint '{source}': 'd' is not a rosinality StyleGAN2 discriminator state_dict")
    res = 2 ** (n_blocks + 2)
    channels = {res: _get(sd_r, "convs.0.0.weight", source).shape[0],
                4: _get(sd_r, "final_conv.0.weight", source).shape[0]}
    for k in range(1, n_blocks + 1):
        channels[res // 2 ** k] = _get(sd_r, f"convs.{k}.conv2.1.weight", source).shape[0]
    base, cmax = solve_channels(channels, "discriminator", source)
    kwargs = dict(c_dim=0, img_resolution=res, img_channels=3, architecture="resnet", channel_base=base,
                  channel_max=cmax, epilogue_kwargs=dict(mbstd_group_size=4, mbstd_num_channels=1))
    fir = nv_resample_filter()
    sd: dict[str, torch.Tensor] = {}
    for nv, (w_key, b_key), kind in _rosi_d_layers(res):
        if nv.endswith("fromrgb.") or nv.endswith("conv0."):
            sd[nv.split(".")[0] + ".resample_filter"] = fir.clone()  # block buffer (NV order: before children)
        sd[nv + "weight"] = _get(sd_r, w_key + "weight", source)
        if kind != "skip":
            sd[nv + "bias"] = _get(sd_r, b_key + "bias", source)
        if kind != "dense":
            sd[nv + "resample_filter"] = fir.clone()
    return kwargs, {k: sd[k] for k in _nv_d_order(sd)}


def _nv_d_order(sd: dict) -> list[str]:
    """NV state_dict order: per block its own buffer first, then children (fromrgb, conv0, conv1, skip)."""
    rank = {"resample_filter": 0, "fromrgb": 1, "conv0": 2, "conv1": 3, "skip": 4, "conv": 5, "fc": 6, "out": 7}
    def key(k: str):
        block, rest = k.split(".", 1)
        return -int(block[1:]), rank[rest.split(".")[0]]
    return sorted(sd, key=key)  # stable: keeps weight/bias/resample_filter order inside a layer


def nv_discriminator_to_rosinality(kwargs: dict, sd: dict) -> dict:
    """NV Discriminator kwargs + state_dict -> rosinality ``Discriminator`` state_dict (with Blur kernels).

    Raises:
        CheckpointError: non-resnet architecture, conditional, img_channels != 3, or an mbstd setup other than
            rosinality's fixed group 4 / 1 channel.
    """
    epi = kwargs.get("epilogue_kwargs") or {}
    if (kwargs.get("architecture", "resnet") != "resnet" or kwargs.get("c_dim", 0) != 0
            or kwargs.get("img_channels", 3) != 3 or epi.get("mbstd_num_channels", 1) != 1
            or epi.get("mbstd_group_size", 4) != 4):
        raise CheckpointError("cannot write the rosinality format: discriminator must be resnet, unconditional, "
                              "RGB, minibatch-std group 4 / 1 channel")
    blur = nv_resample_filter()  # rosinality downsampling Blur kernel: outer/64, sum 1
    out: dict[str, torch.Tensor] = {}
    for nv, (w_key, b_key), kind in _rosi_d_layers(kwargs["img_resolution"]):
        if kind in ("conv_down", "skip"):
            out[w_key.rsplit(".", 2)[0] + ".0.kernel"] = blur.clone()
        out[w_key + "weight"] = sd[nv + "weight"].clone()
        if kind != "skip":
            out[b_key + "bias"] = sd[nv + "bias"].clone()
    return out
