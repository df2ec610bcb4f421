"""Load StyleGAN2 checkpoints in the three official layouts without executing anything from the file.

:func:`load_checkpoint` detects the layout from the file's *content* (never its extension) and converts it to
kdpipe's canonical form: stylegan2-ada-pytorch ``Generator`` kwargs (flat synthesis kwargs, as stylegan3's
``networks_stylegan2.Generator(..., mapping_kwargs={}, **synthesis_kwargs)``) and an NV-style ``state_dict``
for ``G_ema`` (and ``D`` when present). :func:`build_networks` turns that into
:mod:`kdpipe.pipeline.teacher.networks` modules.

=================  =========================================  =================================================
format             how it is recognised                      how it is read
=================  =========================================  =================================================
``nvlabs-tf``      pickle -> tuple of 3 ``dnnlib.tflib.       :mod:`~kdpipe.pipeline.teacher.formats.safe_pickle`, then
                   network.Network`` (G, D, Gs), or one        :mod:`~kdpipe.pipeline.teacher.formats.convert_tf` (matches ada
                   Network                                     ``legacy.convert_tf_generator``); ``Gs`` is G_ema
``nvlabs-pytorch`` pickle -> dict with ``G_ema`` persistent    :mod:`~kdpipe.pipeline.teacher.formats.safe_pickle`; state_dict
                   object (stylegan2-ada-pytorch, stylegan3    rebuilt from ``_parameters``/``_buffers``/
                   ``--cfg=stylegan2``)                        ``_modules`` like ``nn.Module.state_dict``
``rosinality``     torch zip (or legacy torch.save) -> dict    ``torch.load(weights_only=True)`` (argparse
                   with ``g_ema``, or a bare ``g_ema``          ``Namespace`` allow-listed for train.py files),
                   state_dict                                  then :mod:`~kdpipe.pipeline.teacher.formats.convert_rosinality`
=================  =========================================  =================================================

Reference: ``../shared/reference/stylegan2-checkpoint-formats.md`` (sections 1-3).
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdpipe.pipeline.teacher.formats.convert_rosinality import rosinality_to_nv_discriminator, rosinality_to_nv_generator
from kdpipe.pipeline.teacher.formats.convert_tf import tf_to_nv_discriminator, tf_to_nv_generator
from kdpipe.fsutil import file_sha256
from kdpipe.errors import CheckpointError
from kdpipe.pipeline.teacher.formats.budget import (MAX_DEPTH, check_architecture, check_param_budget, check_tensors,
                                                    iter_tensors, plain_copy)
from kdpipe.pipeline.teacher.formats.safe_pickle import PersistentObject, TFNetworkStub, safe_load

FORMATS = ("nvlabs-tf", "nvlabs-pytorch", "rosinality")
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # pickled torch.save magic number (pre-zip format)
_EXPECTED = ("expected an NVlabs TF pickle (tuple G, D, Gs), a stylegan2-ada-pytorch / stylegan3 pickle (dict with "
             "'G_ema') or a rosinality .pt (dict with 'g_ema')")
# stylegan2-ada-pytorch Generator / Discriminator positional parameter names (for _init_args)
_G_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
_D_ARGS = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max", "num_fp16_res",
           "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")
_SG3_DEFAULTS = {"num_fp16_res": 4, "conv_clamp": 256}  # stylegan3 networks_stylegan2 class defaults
_SG3_ONLY_KWARGS = ("fused_modconv_default",)  # accepted by stylegan3's class, not by ada's / kdpipe's


@dataclass
class LoadedTeacher:
    """A checkpoint converted to kdpipe's canonical (NV-pytorch) form.

    Attributes:
        format: ``'nvlabs-tf'``, ``'nvlabs-pytorch'`` or ``'rosinality'``.
        path: the file read.
        sha256: hex digest of the file's bytes.
        G_kwargs: ``Generator`` kwargs (z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, and flat
            synthesis kwargs such as channel_base, channel_max, num_fp16_res, conv_clamp, architecture).
        G_state_dict: NV ``G_ema.state_dict()`` keys -> float32 CPU tensors (``mapping.w_avg`` included).
        D_kwargs / D_state_dict: the discriminator, or None when the file has none or it could not be used
            (``info['D']`` says why).
        info: notes: ``flavor``, ``num_fp16_res``, ``conv_clamp``, ``w_avg`` (where it came from), ``D``, ...
    """

    format: str
    path: Path
    sha256: str
    G_kwargs: dict
    G_state_dict: dict
    D_kwargs: dict | None = None
    D_state_dict: dict | None = None
    info: dict = field(default_factory=dict)

    @property
    def w_avg(self) -> torch.Tensor:
        """``[w_dim]`` float32: the W centre used by truncation (``mapping.w_avg``)."""
        return self.G_state_dict["mapping.w_avg"]


def load_checkpoint(path: str | Path) -> LoadedTeacher:
    """Read a StyleGAN2 checkpoint of any of the three official layouts (detected from content).

    Args:
        path: NVlabs TF ``.pkl``, stylegan2-ada-pytorch / stylegan3 ``.pkl`` or rosinality ``.pt``.
    Returns:
        :class:`LoadedTeacher` (CPU float32 tensors).
    Raises:
        CheckpointError: one line naming the file: missing path, not a checkpoint (text, image, ...), truncated
            or corrupt file, unknown layout, unsafe content (names the refused class), unsupported network
            (StyleGAN3 alias-free, progressive-growing TF configs a-d, ...).
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint '{path}' {what}; pass a StyleGAN2 .pkl (NVlabs TF, stylegan2-ada-pytorch, "
                              "stylegan3) or rosinality .pt file")
    with open(path, "rb") as f:
        head = f.read(32)
    if head.startswith(b"PK\x03\x04") or head.startswith(_TORCH_LEGACY_MAGIC):
        data = _torch_load(path)
        check_tensors(iter_tensors(data, f"checkpoint '{name}'"), f"checkpoint '{name}'")  # before any conversion
        loaded = _from_torch_file(data, path)
    elif len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        with open(path, "rb") as f:
            data = safe_load(f, name)
        check_tensors(iter_tensors(data, f"checkpoint '{name}'"), f"checkpoint '{name}'")
        loaded = _from_pickle(data, path)
    else:
        raise CheckpointError(f"checkpoint '{name}' is not a checkpoint: it {_describe(head)}; {_EXPECTED}")
    loaded.sha256 = file_sha256(path)
    return loaded


def _describe(head: bytes) -> str:
    """Say what a file that is not a checkpoint looks like, from its first bytes."""
    if not head:
        return "is empty"
    for magic, kind in [(b"\x89PNG", "is a PNG image"), (b"\xff\xd8\xff", "is a JPEG image"),
                        (b"\x1f\x8b", "is gzip-compressed (decompress it first)"), (b"GIF8", "is a GIF image")]:
        if head.startswith(magic):
            return kind
    if all(b >= 32 or b in (9, 10, 13) for b in head):
        return f"is text starting {head[:16].decode('utf-8', 'replace')!r}"
    return f"starts with bytes {head[:8]!r}"


@contextlib.contextmanager
def _allow_namespace():
    """Allow-list ``argparse.Namespace`` for ``torch.load(weights_only=True)`` (rosinality train.py ``args``)."""
    ctx = getattr(torch.serialization, "safe_globals", None)
    if ctx is not None:
        with ctx([argparse.Namespace]):
            yield
    else:  # torch 2.4: process-wide allow-list
        torch.serialization.add_safe_globals([argparse.Namespace])
        yield


def _torch_load(path: Path) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with one-line CheckpointErrors."""
    try:
        with _allow_namespace():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        match = re.search(r"GLOBAL ([\w.]+)", str(err))
        if match:
            raise CheckpointError(f"checkpoint '{path.name}' asks for {match.group(1)}, which kdpipe refuses to load "
                                  "(torch.load weights_only=True allows only tensors and plain containers); do not "
                                  "trust this file") from None
        raise CheckpointError(f"checkpoint '{path.name}' is truncated or corrupt ({_one_line(err)}); "
                              "download or copy it again") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"checkpoint '{path.name}' is truncated or corrupt ({_one_line(err)}); "
                              "download or copy it again") from None


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: " + " ".join(str(err).split())[:160]


def _unknown_layout(data: Any, path: Path) -> CheckpointError:
    if isinstance(data, dict):
        keys = ", ".join(repr(k) for k in list(data)[:8])
        what = f"a dict with keys [{keys}]"
    else:
        what = f"a {type(data).__name__}"
    return CheckpointError(f"checkpoint '{path.name}' has an unknown layout: {what}; {_EXPECTED}")


# ---------------------------------------------------------------------------------------------- rosinality

def _from_torch_file(data: Any, path: Path) -> LoadedTeacher:
    """rosinality ``convert_weight.py`` output ({g_ema, latent_avg[, g, d]}), ``train.py`` checkpoint, or bare g_ema."""
    if isinstance(data, dict) and "g_ema" in data:
        g_sd, latent_avg, d_sd = data["g_ema"], data.get("latent_avg"), data.get("d")
    elif isinstance(data, dict) and "style.1.weight" in data and "input.input" in data:
        g_sd, latent_avg, d_sd = data, None, None
    else:
        raise _unknown_layout(data, path)
    if not isinstance(g_sd, dict) or not all(isinstance(v, torch.Tensor) for v in g_sd.values()):
        raise CheckpointError(f"checkpoint '{path.name}': 'g_ema' is not a state_dict of tensors")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(f"checkpoint '{path.name}': 'latent_avg' is a {type(latent_avg).__name__}, not a tensor")
    kwargs, sd, info = rosinality_to_nv_generator(g_sd, latent_avg, path.name)
    if "args" in data and isinstance(data["args"], argparse.Namespace):
        info["training_checkpoint"] = "rosinality train.py checkpoint (has 'args'); using 'g_ema'"
    loaded = LoadedTeacher("rosinality", path, "", kwargs, sd, info=info)
    if isinstance(d_sd, dict) and d_sd:
        try:
            loaded.D_kwargs, loaded.D_state_dict = rosinality_to_nv_discriminator(d_sd, path.name)
        except CheckpointError as err:
            info["D"] = f"discriminator skipped: {err}"
    else:
        info["D"] = "file has no discriminator ('d')"
    return loaded


# ---------------------------------------------------------------------------------------------- pickles

def _from_pickle(data: Any, path: Path) -> LoadedTeacher:
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetworkStub) for n in data):
        return _from_tf(data[2], data[1], path)
    if isinstance(data, TFNetworkStub):
        return _from_tf(data, None, path)
    if isinstance(data, dict) and isinstance(data.get("G_ema"), PersistentObject):
        return _from_nv_pytorch(data, path)
    if isinstance(data, dict) and "G_ema" in data:
        raise CheckpointError(f"checkpoint '{path.name}': 'G_ema' is a {type(data['G_ema']).__name__}, not a "
                              "stylegan2-ada-pytorch persistent network")
    raise _unknown_layout(data, path)


def collect_tf_params(net: TFNetworkStub, source: str = "<checkpoint>") -> dict:
    """Flat TF variables of a network and its components (matches ada ``legacy._collect_tf_params``).

    Names: own variables as is, component variables prefixed with ``'<component key>/'``
    (``dlatent_avg``, ``mapping/Dense0/weight``, ``synthesis/4x4/Conv/weight``).
    Raises:
        CheckpointError: version < 4 (legacy: 'TensorFlow pickle version too low') or malformed network state.
    """
    params: dict[str, Any] = {}

    def recurse(prefix: str, n: Any, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise CheckpointError(f"checkpoint '{source}': TensorFlow components nested deeper than {MAX_DEPTH} "
                                  "levels; do not trust this file")
        if not isinstance(n, TFNetworkStub) or not isinstance(getattr(n, "variables", None), list):
            raise CheckpointError(f"checkpoint '{source}': TensorFlow network state lacks its variables list")
        if not isinstance(getattr(n, "version", None), int) or n.version < 4:
            raise CheckpointError(f"checkpoint '{source}': TensorFlow pickle version {getattr(n, 'version', None)} "
                                  "is too low (need 4, StyleGAN2)")
        for item in n.variables:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise CheckpointError(f"checkpoint '{source}': malformed TensorFlow variable entry")
            params[prefix + item[0]] = item[1]
        for key, comp in dict(getattr(n, "components", None) or {}).items():
            recurse(prefix + key + "/", comp, depth + 1)

    recurse("", net)
    return params


def _from_tf(Gs: TFNetworkStub, D: TFNetworkStub | None, path: Path) -> LoadedTeacher:
    """TF ``Gs`` (and ``D``) -> canonical form (ada ``legacy.load_network_pkl``: Gs becomes G_ema)."""
    kwargs, sd = tf_to_nv_generator(collect_tf_params(Gs, path.name), getattr(Gs, "static_kwargs", {}), path.name)
    info = {"flavor": "NVlabs/stylegan2 TensorFlow", "num_fp16_res": kwargs["num_fp16_res"],
            "conv_clamp": kwargs["conv_clamp"], "w_avg": "from the file's 'dlatent_avg'"}
    loaded = LoadedTeacher("nvlabs-tf", path, "", kwargs, sd, info=info)
    if D is None:
        info["D"] = "file holds only Gs (no discriminator)"
        return loaded
    try:
        loaded.D_kwargs, loaded.D_state_dict = tf_to_nv_discriminator(
            collect_tf_params(D, path.name), getattr(D, "static_kwargs", {}), path.name)
    except CheckpointError as err:
        info["D"] = f"discriminator skipped: {err}"
    return loaded


def _init_kwargs(obj: PersistentObject, arg_names: tuple, source: str) -> dict:
    """Constructor kwargs a persistent object was built with (``_init_args`` named + ``_init_kwargs``)."""
    args = obj.state.get("_init_args") or ()
    kwargs = obj.state.get("_init_kwargs") or {}
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict) or len(args) > len(arg_names):
        raise CheckpointError(f"checkpoint '{source}': {obj.class_name} has malformed init arguments")
    out = dict(zip(arg_names, args))
    out.update(kwargs)
    return plain_copy(out, f"checkpoint '{source}': {obj.class_name} init arguments")


def persistent_state_dict(obj: PersistentObject, source: str = "<checkpoint>", prefix: str = "",
                          depth: int = 0) -> dict:
    """``nn.Module.state_dict()`` of a pickled persistent module, without building it.

    Order as torch: own ``_parameters`` (None skipped), own ``_buffers`` (None and
    ``_non_persistent_buffers_set`` skipped), then each child in ``_modules`` with ``name.`` prefixed.
    Values: detached float tensors (Parameters unwrapped).
    """
    if depth > MAX_DEPTH:
        raise CheckpointError(f"checkpoint '{source}': modules nested deeper than {MAX_DEPTH} levels "
                              f"(at {prefix[:80]!r}); do not trust this file")
    st = obj.state
    out: dict[str, torch.Tensor] = {}
    skip = st.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, t in dict(st.get(group) or {}).items():
            if t is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise CheckpointError(f"checkpoint '{source}': {prefix}{name} is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t.detach()
    for name, child in dict(st.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(f"checkpoint '{source}': sub-module {prefix}{name} is not a persistent object")
        out.update(persistent_state_dict(child, source, prefix + name + ".", depth + 1))
    return out


def _check_stylegan2(G: PersistentObject, source: str) -> None:
    """Refuse StyleGAN3 (alias-free) generators: their synthesis has 'input' and 'L{idx}_{size}_{ch}' layers."""
    syn = (G.state.get("_modules") or {}).get("synthesis")
    children = list((syn.state.get("_modules") or {}) if isinstance(syn, PersistentObject) else [])
    odd = [c for c in children if not re.fullmatch(r"b\d+", c)]
    if G.class_name != "Generator" or odd or "class SynthesisInput" in G.module_src:
        shown = ", ".join(odd[:3]) or G.class_name
        raise CheckpointError(f"checkpoint '{source}' holds a StyleGAN3 (alias-free) or other non-StyleGAN2 generator "
                              f"({shown}); kdpipe supports StyleGAN2 only (stylegan3 --cfg=stylegan2 pickles load)")


def _from_nv_pytorch(data: dict, path: Path) -> LoadedTeacher:
    """stylegan2-ada-pytorch / stylegan3 snapshot dict -> canonical form (uses ``G_ema``, like generate.py)."""
    G = data["G_ema"]
    _check_stylegan2(G, path.name)
    kwargs = _init_kwargs(G, _G_ARGS, path.name)
    info: dict[str, Any] = {}
    is_sg3 = "synthesis_kwargs" not in kwargs
    if not is_sg3:  # stylegan2-ada-pytorch: Generator(..., mapping_kwargs, synthesis_kwargs)
        kwargs.update(kwargs.pop("synthesis_kwargs") or {})
        info["flavor"] = "stylegan2-ada-pytorch"
    else:  # stylegan3 networks_stylegan2: Generator(..., mapping_kwargs, **synthesis_kwargs), other defaults
        for key, default in _SG3_DEFAULTS.items():
            kwargs.setdefault(key, default)
        dropped = [k for k in _SG3_ONLY_KWARGS if kwargs.pop(k, None) is not None]
        info["flavor"] = "stylegan3 (--cfg=stylegan2)" + (f"; ignored {', '.join(dropped)}" if dropped else "")
    kwargs.setdefault("mapping_kwargs", {})
    info.update(num_fp16_res=kwargs.get("num_fp16_res", 0), conv_clamp=kwargs.get("conv_clamp"),
                w_avg="from the file's 'mapping.w_avg' (running average kept during training)")
    sd = {k: v.to(torch.float32) for k, v in persistent_state_dict(G, path.name).items()}
    if "mapping.w_avg" not in sd:
        raise CheckpointError(f"checkpoint '{path.name}': G_ema has no mapping.w_avg buffer")
    loaded = LoadedTeacher("nvlabs-pytorch", path, "", kwargs, sd, info=info)
    D = data.get("D")
    if not isinstance(D, PersistentObject):
        info["D"] = "file has no discriminator (D is None)"
        return loaded
    d_kwargs = _init_kwargs(D, _D_ARGS, path.name)
    if d_kwargs.get("c_dim", 0):
        info["D"] = f"discriminator skipped: conditional (c_dim={d_kwargs['c_dim']}) discriminators are not supported"
        return loaded
    if is_sg3:  # stylegan3's Discriminator has the same 4 / 256 class defaults
        for key, default in _SG3_DEFAULTS.items():
            d_kwargs.setdefault(key, default)
    loaded.D_kwargs = d_kwargs
    loaded.D_state_dict = {k: v.to(torch.float32) for k, v in persistent_state_dict(D, path.name).items()}
    return loaded


# ---------------------------------------------------------------------------------------------- networks

def build_networks(loaded: LoadedTeacher) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """Build :mod:`kdpipe.pipeline.teacher.networks` ``Generator`` (and ``Discriminator``) and load the weights.

    Returns:
        ``(G, D)`` in eval mode with ``requires_grad_(False)``, on CPU; D is None when the checkpoint has no
        usable discriminator (``loaded.info['D']`` then says why). The global torch RNG is left untouched.
    Raises:
        CheckpointError: the generator's settings or weights do not fit kdpipe's network (names the file).
    """
    from kdpipe.pipeline.teacher.discriminator import Discriminator
    from kdpipe.pipeline.teacher.networks import Generator

    name = loaded.path.name
    G = _build(Generator, loaded.G_kwargs, loaded.G_state_dict, f"checkpoint '{name}': generator")
    D = None
    if loaded.D_kwargs is not None and loaded.D_state_dict is not None:
        try:
            D = _build(Discriminator, loaded.D_kwargs, loaded.D_state_dict, f"checkpoint '{name}': discriminator")
        except CheckpointError as err:
            loaded.info["D"] = f"discriminator skipped: {err}"
    return G, D


def _build(cls: type, kwargs: dict, sd: dict, what: str) -> torch.nn.Module:
    check_architecture(kwargs, what)  # bounds first: nothing below allocates for an absurd field
    check_param_budget(kwargs, what)
    try:
        with torch.random.fork_rng(devices=[]):  # constructors draw random init weights; keep the caller's RNG
            net = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{what} settings are not supported by kdpipe's network ({_one_line(err)})") from None
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{what} weights do not fit kdpipe's network ({_one_line(err)})") from None
    return net.eval().requires_grad_(False)
