"""NVlabs TensorFlow StyleGAN2 variables <-> NV-pytorch (stylegan2-ada-pytorch) kwargs + state_dict.

The TF -> NV direction matches stylegan2-ada-pytorch ``legacy.convert_tf_generator`` /
``convert_tf_discriminator`` (commit d72cc7d041b4; reference doc ``stylegan2-checkpoint-formats.md`` section 1):

* ``mapping/Dense{i}/weight`` ``[in, out]`` -> ``mapping.fc{i}.weight`` ``[out, in]`` (``.T``), biases as is;
* conv ``weight`` ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]`` (``.transpose(3, 2, 0, 1)``); the up-sampling
  ``Conv0_up`` and generator ``Skip`` weights are spatially flipped first (``[::-1, ::-1]``);
* ``mod_weight`` ``[w_dim, in]`` -> ``affine.weight`` ``[in, w_dim]``; ``mod_bias`` -> ``affine.bias`` **+ 1**
  (TF adds the 1 at run time, NV stores it);
* ``synthesis/noise{j}`` ``[1, 1, r, r]`` -> ``noise_const`` ``[r, r]`` of the conv fed by ``ws[j]``;
* ``synthesis/4x4/Const/const`` ``[1, C, 4, 4]`` -> ``synthesis.b4.const`` ``[C, 4, 4]``; ``dlatent_avg`` -> ``w_avg``;
* FIR buffers (``resample_filter``) are not stored by TF: they are ``outer([1,3,3,1]) / 64``.

TF variable names are the ones ``legacy._collect_tf_params`` builds: own variables of a network, then each
component's with ``'<component key>/'`` prefixed (``dlatent_avg``, ``mapping/Dense0/weight``,
``synthesis/4x4/Conv/weight``; discriminator names have no prefix: ``32x32/Conv0/weight``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kdpipe.errors import CheckpointError

FIR_TAPS = [1, 3, 3, 1]


def nv_resample_filter(taps=FIR_TAPS) -> torch.Tensor:
    """NV ``upfirdn2d.setup_filter(taps)``: ``outer(taps, taps) / sum``, float32 ``[4, 4]`` for StyleGAN2."""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def nv_channels(channel_base: int, channel_max: int, resolution: int) -> int:
    """Channels of the block at ``resolution``: ``min(channel_base // resolution, channel_max)`` (NV networks.py)."""
    return min(channel_base // resolution, channel_max)


def block_resolutions(img_resolution: int) -> list[int]:
    """``[4, 8, ..., img_resolution]``; raises CheckpointError unless a power of two >= 4."""
    log2 = int(np.log2(img_resolution)) if img_resolution > 0 else 0
    if img_resolution < 4 or 2 ** log2 != img_resolution:
        raise CheckpointError(f"image resolution {img_resolution} is not a power of two >= 4")
    return [2 ** k for k in range(2, log2 + 1)]


def _t(value: Any) -> torch.Tensor:
    """numpy array / numpy scalar / python float -> contiguous float32 CPU tensor (0-d stays 0-d)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(value, dtype=np.float32)))


def _n(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().to(torch.float32).numpy())


def _conv_tf_to_nv(w: Any, flip: bool = False) -> torch.Tensor:
    w = np.asarray(w)
    if flip:
        w = w[::-1, ::-1]
    return _t(w.transpose(3, 2, 0, 1))


def _conv_nv_to_tf(w: torch.Tensor, flip: bool = False) -> np.ndarray:
    w = _n(w).transpose(2, 3, 1, 0)  # inverse of .transpose(3, 2, 0, 1)
    return np.ascontiguousarray(w[::-1, ::-1] if flip else w)


class _Kwargs:
    """Reads TF ``static_kwargs`` with legacy.py defaults and remembers which names were consulted."""

    def __init__(self, static_kwargs: dict, what: str, source: str):
        self.tf, self.known, self.what, self.source = dict(static_kwargs or {}), set(), what, source

    def __call__(self, name: str, default: Any = None, none: Any = None) -> Any:
        self.known.add(name)
        value = self.tf.get(name, default)
        return value if value is not None else none

    def check_unknown(self, *ignored: str) -> None:
        self.known.update(ignored)
        unknown = sorted(set(self.tf) - self.known)
        if unknown:
            raise CheckpointError(f"checkpoint '{self.source}': TensorFlow {self.what} kwarg {unknown[0]!r} is not "
                                  "supported (stylegan2-ada-pytorch legacy.py refuses it too)")


class _Params:
    """Flat TF variable dict with a clear error for a missing name."""

    def __init__(self, params: dict, what: str, source: str):
        self.params, self.what, self.source = params, what, source

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.params:
            raise CheckpointError(f"checkpoint '{self.source}': TensorFlow {self.what} has no variable {name!r} "
                                  "(expected a StyleGAN2 config-e/f network)")
        return np.asarray(self.params[name], dtype=np.float32)


def tf_generator_kwargs(static_kwargs: dict, source: str = "<checkpoint>") -> dict:
    """NV ``Generator`` kwargs (flat synthesis kwargs) from TF ``G``/``Gs`` static_kwargs, as legacy.py does.

    Raises:
        CheckpointError: an unknown TF kwarg (legacy raises ``ValueError('Unknown TensorFlow kwarg')``).
    """
    kw = _Kwargs(static_kwargs, "generator", source)
    kwargs = dict(
        z_dim=kw("latent_size", 512), c_dim=kw("label_size", 0), w_dim=kw("dlatent_size", 512),
        img_resolution=kw("resolution", 1024), img_channels=kw("num_channels", 3),
        mapping_kwargs=dict(num_layers=kw("mapping_layers", 8), embed_features=kw("label_fmaps", None),
                            layer_features=kw("mapping_fmaps", None),
                            activation=kw("mapping_nonlinearity", "lrelu"),
                            lr_multiplier=kw("mapping_lrmul", 0.01), w_avg_beta=kw("w_avg_beta", 0.995, none=1)),
        channel_base=kw("fmap_base", 16384) * 2, channel_max=kw("fmap_max", 512),
        num_fp16_res=kw("num_fp16_res", 0), conv_clamp=kw("conv_clamp", None),
        architecture=kw("architecture", "skip"), resample_filter=list(kw("resample_kernel", FIR_TAPS)),
        use_noise=kw("use_noise", True), activation=kw("nonlinearity", "lrelu"),
    )
    kw.check_unknown("truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure")
    return kwargs


def tf_to_nv_generator(tf_params: dict, static_kwargs: dict, source: str = "<checkpoint>") -> tuple[dict, dict]:
    """Convert a TF generator (``Gs``) to NV kwargs + state_dict (matches ada ``legacy.convert_tf_generator``).

    Args:
        tf_params: ``legacy._collect_tf_params`` names -> float32 arrays / numpy scalars.
        static_kwargs: the TF network's ``static_kwargs``.
    Returns:
        ``(kwargs, state_dict)``; state_dict has every NV key (``resample_filter`` rebuilt), float32 tensors.
    Raises:
        CheckpointError: unknown kwarg, progressive-growing (``ToRGB_lod*``) or ``LabelConcat`` networks,
            missing variables.
    """
    if any("ToRGB_lod" in name for name in tf_params):
        raise CheckpointError(f"checkpoint '{source}' is a progressive-growing StyleGAN2 (configs a-d, ToRGB_lod*); "
                              "only configs e/f are supported (stylegan2-ada-pytorch legacy.py fails on them too)")
    if "mapping/LabelConcat/weight" in tf_params:
        raise CheckpointError(f"checkpoint '{source}' is a conditional NVlabs/stylegan2 generator (LabelConcat); "
                              "its label embedding has no stylegan2-ada-pytorch equivalent")
    kwargs = tf_generator_kwargs(static_kwargs, source)
    p = _Params(tf_params, "generator", source)
    arch, use_noise = kwargs["architecture"], kwargs["use_noise"]
    fir = nv_resample_filter(kwargs["resample_filter"])
    res_list = block_resolutions(kwargs["img_resolution"])
    sd: dict[str, torch.Tensor] = {}

    def layer(prefix: str, scope: str, noise_idx: int, flip: bool) -> None:
        sd[prefix + "weight"] = _conv_tf_to_nv(p[scope + "weight"], flip=flip)
        if use_noise:
            sd[prefix + "noise_strength"] = _t(p[scope + "noise_strength"]).reshape([])
        sd[prefix + "bias"] = _t(p[scope + "bias"])
        sd[prefix + "resample_filter"] = fir.clone()
        if use_noise:
            sd[prefix + "noise_const"] = _t(p[f"synthesis/noise{noise_idx}"][0, 0])
        sd[prefix + "affine.weight"] = _t(p[scope + "mod_weight"].T)
        sd[prefix + "affine.bias"] = _t(p[scope + "mod_bias"] + 1)

    for r in res_list:
        b, s = f"synthesis.b{r}.", f"synthesis/{r}x{r}/"
        k = int(np.log2(r))
        if r == 4:
            sd[b + "const"] = _t(p["synthesis/4x4/Const/const"][0])
        sd[b + "resample_filter"] = fir.clone()
        if r > 4:
            layer(b + "conv0.", s + "Conv0_up/", 2 * k - 5, flip=True)
        layer(b + "conv1.", s + ("Conv/" if r == 4 else "Conv1/"), 0 if r == 4 else 2 * k - 4, flip=False)
        if r == res_list[-1] or arch == "skip":
            sd[b + "torgb.weight"] = _conv_tf_to_nv(p[s + "ToRGB/weight"])
            sd[b + "torgb.bias"] = _t(p[s + "ToRGB/bias"])
            sd[b + "torgb.affine.weight"] = _t(p[s + "ToRGB/mod_weight"].T)
            sd[b + "torgb.affine.bias"] = _t(p[s + "ToRGB/mod_bias"] + 1)
        if r > 4 and arch == "resnet":
            sd[b + "skip.weight"] = _conv_tf_to_nv(p[s + "Skip/weight"], flip=True)
            sd[b + "skip.resample_filter"] = fir.clone()
    sd["mapping.w_avg"] = _t(p["dlatent_avg"])
    if kwargs["c_dim"] > 0:
        sd["mapping.embed.weight"] = _t(p["mapping/LabelEmbed/weight"].T)
        sd["mapping.embed.bias"] = _t(p["mapping/LabelEmbed/bias"])
    for i in range(kwargs["mapping_kwargs"]["num_layers"]):
        sd[f"mapping.fc{i}.weight"] = _t(p[f"mapping/Dense{i}/weight"].T)
        sd[f"mapping.fc{i}.bias"] = _t(p[f"mapping/Dense{i}/bias"])
    return kwargs, sd


# NV kwarg -> (TF static kwarg, TF/legacy default); used to write only what differs from the defaults,
# as official pickles do (config-f Gs static_kwargs: num_channels, resolution, label_size).
_G_TOP = [("z_dim", "latent_size", 512), ("w_dim", "dlatent_size", 512)]
_G_MAPPING = [("num_layers", "mapping_layers", 8), ("embed_features", "label_fmaps", None),
              ("layer_features", "mapping_fmaps", None), ("activation", "mapping_nonlinearity", "lrelu"),
              ("lr_multiplier", "mapping_lrmul", 0.01), ("w_avg_beta", "w_avg_beta", 0.995)]
_G_SYNTHESIS = [("channel_max", "fmap_max", 512), ("num_fp16_res", "num_fp16_res", 0),
                ("conv_clamp", "conv_clamp", None), ("architecture", "architecture", "skip"),
                ("resample_filter", "resample_kernel", FIR_TAPS), ("use_noise", "use_noise", True),
                ("activation", "nonlinearity", "lrelu")]


def _put(static: dict, src: dict, table: list, what: str) -> None:
    src = dict(src)
    for nv_name, tf_name, default in table:
        if nv_name in src:
            value = src.pop(nv_name)
            if isinstance(value, tuple):
                value = list(value)
            if value != default:
                static[tf_name] = value
    if src:
        raise CheckpointError(f"cannot write the TensorFlow format: {what} kwarg {sorted(src)[0]!r} "
                              "has no TF equivalent")


def nv_generator_to_tf(kwargs: dict, sd: dict) -> tuple[dict, dict]:
    """Inverse of :func:`tf_to_nv_generator`: NV kwargs + state_dict -> TF static_kwargs + flat TF variables.

    Returns:
        ``(static_kwargs, tf_params)``; tf_params is ordered as TF creates the variables (``lod``,
        ``dlatent_avg``, ``synthesis/noise*``, ``synthesis/4x4/...``, ..., ``mapping/Dense*``); 0-d variables
        are numpy float32 scalars like ``session.run`` returns; others float32 ndarrays.
    Raises:
        CheckpointError: kwargs that TF cannot express (odd channel_base, unknown kwargs).
    """
    kwargs = dict(kwargs)
    static = dict(num_channels=kwargs.pop("img_channels"), resolution=kwargs.pop("img_resolution"),
                  label_size=kwargs.pop("c_dim"))
    channel_base = kwargs.pop("channel_base", 32768)
    if channel_base % 2:
        raise CheckpointError(f"cannot write the TensorFlow format: channel_base {channel_base} is odd (fmap_base*2)")
    if channel_base != 32768:
        static["fmap_base"] = channel_base // 2
    _put(static, dict(kwargs.pop("mapping_kwargs", None) or {}), _G_MAPPING, "mapping")
    top = {k: kwargs.pop(k) for k in [name for name, _, _ in _G_TOP] if k in kwargs}
    _put(static, top, _G_TOP, "generator")
    _put(static, kwargs, _G_SYNTHESIS, "synthesis")
    nv = tf_generator_kwargs(static)  # defaults filled exactly as the reader will see them
    arch, use_noise, res_list = nv["architecture"], nv["use_noise"], block_resolutions(static["resolution"])

    tf: dict[str, Any] = {"lod": np.float32(0.0), "dlatent_avg": _n(sd["mapping.w_avg"])}
    if use_noise:
        tf.update({f"synthesis/noise{j}": _n(sd[name])[None, None] for j, name in enumerate(_noise_keys(res_list))})

    def layer(prefix: str, scope: str, flip: bool, noise: bool) -> None:
        tf[scope + "weight"] = _conv_nv_to_tf(sd[prefix + "weight"], flip=flip)
        tf[scope + "mod_weight"] = np.ascontiguousarray(_n(sd[prefix + "affine.weight"]).T)
        tf[scope + "mod_bias"] = _n(sd[prefix + "affine.bias"]) - 1
        if noise:
            tf[scope + "noise_strength"] = np.float32(_n(sd[prefix + "noise_strength"]))
        tf[scope + "bias"] = _n(sd[prefix + "bias"])

    for r in res_list:
        b, s = f"synthesis.b{r}.", f"synthesis/{r}x{r}/"
        if r == 4:
            tf[s + "Const/const"] = _n(sd[b + "const"])[None]
            layer(b + "conv1.", s + "Conv/", flip=False, noise=use_noise)
        else:
            layer(b + "conv0.", s + "Conv0_up/", flip=True, noise=use_noise)
            layer(b + "conv1.", s + "Conv1/", flip=False, noise=use_noise)
            if arch == "resnet":
                tf[s + "Skip/weight"] = _conv_nv_to_tf(sd[b + "skip.weight"], flip=True)
        if r == res_list[-1] or arch == "skip":
            layer(b + "torgb.", s + "ToRGB/", flip=False, noise=False)
    if nv["c_dim"] > 0:  # stylegan2-ada TF naming (what legacy.py reads)
        tf["mapping/LabelEmbed/weight"] = np.ascontiguousarray(_n(sd["mapping.embed.weight"]).T)
        tf["mapping/LabelEmbed/bias"] = _n(sd["mapping.embed.bias"])
    for i in range(nv["mapping_kwargs"]["num_layers"]):
        tf[f"mapping/Dense{i}/weight"] = np.ascontiguousarray(_n(sd[f"mapping.fc{i}.weight"]).T)
        tf[f"mapping/Dense{i}/bias"] = _n(sd[f"mapping.fc{i}.bias"])
    return static, tf


def _noise_keys(res_list: list[int]) -> list[str]:
    """NV ``noise_const`` keys in ws order: noise j belongs to the conv that uses ``ws[j]``."""
    keys = ["synthesis.b4.conv1.noise_const"]
    for r in res_list[1:]:
        keys += [f"synthesis.b{r}.conv0.noise_const", f"synthesis.b{r}.conv1.noise_const"]
    return keys


def tf_discriminator_kwargs(static_kwargs: dict, source: str = "<checkpoint>") -> dict:
    """NV ``Discriminator`` kwargs from TF ``D`` static_kwargs (matches ada ``legacy.convert_tf_discriminator``)."""
    kw = _Kwargs(static_kwargs, "discriminator", source)
    kwargs = dict(
        c_dim=kw("label_size", 0), img_resolution=kw("resolution", 1024), img_channels=kw("num_channels", 3),
        architecture=kw("architecture", "resnet"), channel_base=kw("fmap_base", 16384) * 2,
        channel_max=kw("fmap_max", 512), num_fp16_res=kw("num_fp16_res", 0), conv_clamp=kw("conv_clamp", None),
        cmap_dim=kw("mapping_fmaps", None),
        block_kwargs=dict(activation=kw("nonlinearity", "lrelu"), resample_filter=list(kw("resample_kernel", FIR_TAPS)),
                          freeze_layers=kw("freeze_layers", 0)),
        mapping_kwargs=dict(num_layers=kw("mapping_layers", 0), embed_features=kw("mapping_fmaps", None),
                            layer_features=kw("mapping_fmaps", None), activation=kw("nonlinearity", "lrelu"),
                            lr_multiplier=kw("mapping_lrmul", 0.1)),
        epilogue_kwargs=dict(mbstd_group_size=kw("mbstd_group_size", None),
                             mbstd_num_channels=kw("mbstd_num_features", 1), activation=kw("nonlinearity", "lrelu")),
    )
    kw.check_unknown("structure")
    return kwargs


def _d_layout(kwargs: dict):
    """Yield ``(nv_prefix, tf_scope, kind)`` for every discriminator layer in NV state_dict order."""
    res_list = block_resolutions(kwargs["img_resolution"])[::-1]
    arch = kwargs.get("architecture", "resnet")
    for r in res_list[:-1]:
        b, s = f"b{r}.", f"{r}x{r}/"
        yield b, None, "filter"
        if r == res_list[0] or arch == "skip":
            yield b + "fromrgb.", s + "FromRGB/", "conv"
        yield b + "conv0.", s + "Conv0/", "conv"
        yield b + "conv1.", s + "Conv1_down/", "conv"
        if arch == "resnet":
            yield b + "skip.", s + "Skip/", "conv_nobias"
    if arch == "skip":
        yield "b4.fromrgb.", "4x4/FromRGB/", "conv"
    yield "b4.conv.", "4x4/Conv/", "conv"
    yield "b4.fc.", "4x4/Dense0/", "dense"
    yield "b4.out.", "Output/", "dense"


def tf_to_nv_discriminator(tf_params: dict, static_kwargs: dict, source: str = "<checkpoint>") -> tuple[dict, dict]:
    """TF ``D`` -> NV kwargs + state_dict (matches ada ``legacy.convert_tf_discriminator``; no weight flips).

    Raises:
        CheckpointError: conditional D (label_size > 0; kdpipe's Discriminator is unconditional), progressive
            growing (``FromRGB_lod*``), unknown kwargs or missing variables.
    """
    kwargs = tf_discriminator_kwargs(static_kwargs, source)
    if kwargs["c_dim"] > 0:
        raise CheckpointError(f"checkpoint '{source}': conditional discriminators (label_size="
                              f"{kwargs['c_dim']}) are not supported")
    if any("FromRGB_lod" in name for name in tf_params):
        raise CheckpointError(f"checkpoint '{source}': progressive-growing discriminator (FromRGB_lod*) not supported")
    p = _Params(tf_params, "discriminator", source)
    fir = nv_resample_filter(kwargs["block_kwargs"]["resample_filter"])
    sd: dict[str, torch.Tensor] = {}
    for prefix, scope, kind in _d_layout(kwargs):
        if kind == "filter":
            sd[prefix + "resample_filter"] = fir.clone()
        elif kind == "dense":
            sd[prefix + "weight"] = _t(p[scope + "weight"].T)
            sd[prefix + "bias"] = _t(p[scope + "bias"])
        else:
            sd[prefix + "weight"] = _conv_tf_to_nv(p[scope + "weight"])
            if kind == "conv":
                sd[prefix + "bias"] = _t(p[scope + "bias"])
            sd[prefix + "resample_filter"] = fir.clone()
    return kwargs, sd


def nv_discriminator_to_tf(kwargs: dict, sd: dict) -> tuple[dict, dict]:
    """Inverse of :func:`tf_to_nv_discriminator`: returns ``(static_kwargs, tf_params)`` in TF creation order.

    Raises:
        CheckpointError: conditional D, odd channel_base, or kwargs TF cannot express.
    """
    if kwargs.get("c_dim", 0) != 0:
        raise CheckpointError("cannot write the TensorFlow format: conditional discriminator")
    channel_base = kwargs.get("channel_base", 32768)
    if channel_base % 2:
        raise CheckpointError(f"cannot write the TensorFlow format: channel_base {channel_base} is odd (fmap_base*2)")
    static = dict(num_channels=kwargs["img_channels"], resolution=kwargs["img_resolution"], label_size=0)
    if channel_base != 32768:
        static["fmap_base"] = channel_base // 2
    simple = [("channel_max", "fmap_max", 512), ("architecture", "architecture", "resnet"),
              ("num_fp16_res", "num_fp16_res", 0), ("conv_clamp", "conv_clamp", None)]
    for nv_name, tf_name, default in simple:
        if kwargs.get(nv_name, default) != default:
            static[tf_name] = kwargs[nv_name]
    block = dict(kwargs.get("block_kwargs") or {})
    epi = dict(kwargs.get("epilogue_kwargs") or {})
    if list(block.get("resample_filter", FIR_TAPS)) != FIR_TAPS:
        static["resample_kernel"] = list(block["resample_filter"])
    static["mbstd_group_size"] = epi.get("mbstd_group_size", 4)  # NV default 4; legacy's TF default is None
    if epi.get("mbstd_num_channels", 1) != 1:
        static["mbstd_num_features"] = epi["mbstd_num_channels"]
    for name, value in [("activation", block.get("activation")), ("activation", epi.get("activation"))]:
        if value not in (None, "lrelu"):
            raise CheckpointError(f"cannot write the TensorFlow format: discriminator activation {value!r}")
    tf: dict[str, Any] = {}
    for prefix, scope, kind in _d_layout(kwargs):
        if kind == "dense":
            tf[scope + "weight"] = np.ascontiguousarray(_n(sd[prefix + "weight"]).T)
            tf[scope + "bias"] = _n(sd[prefix + "bias"])
        elif kind != "filter":
            tf[scope + "weight"] = _conv_nv_to_tf(sd[prefix + "weight"])
            if kind == "conv":
                tf[scope + "bias"] = _n(sd[prefix + "bias"])
    return static, tf
