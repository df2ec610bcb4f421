"""Write kdpipe networks in the three official StyleGAN2 checkpoint layouts.

These writers exist so that tests (and users who want to hand a kdpipe teacher/student to other tools) get
files with the *real* container structure: the same pickle globals, object layout and tensor encoding as the
official tools write (reference doc ``stylegan2-checkpoint-formats.md``). They differ from official files in
one documented way: the network source code that official pickles embed (TF ``build_module_src``,
ada/stylegan3 ``module_src``) is replaced by a short placeholder comment, so the *official* loaders, which
``exec`` that source, cannot rebuild networks from these pickles; kdpipe's loader (which never executes it)
and any reader that only reads weights can. rosinality ``.pt`` files are complete (plain state_dicts) and
load with rosinality's own ``Generator.load_state_dict``.

* :func:`write_nvlabs_tf_pkl` -- ``pickle`` protocol 4 tuple ``(G, D, Gs)`` of objects that unpickle as
  ``dnnlib.tflib.network.Network`` with its ``__getstate__`` fields (version 4, name, static_kwargs,
  components, build_module_src, build_func_name, variables) -- as ``training/misc.py save_pkl``.
* :func:`write_nvlabs_pytorch_pkl` -- stylegan2-ada-pytorch ``training_loop.py`` snapshot
  ``dict(training_set_kwargs, G, D, G_ema, augment_pipe)`` (or stylegan3's key order / flat kwargs) of
  ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` objects.
* :func:`write_rosinality_pt` -- ``convert_weight.py`` output ``{'g_ema', 'latent_avg'[, 'd']}`` or a
  ``train.py`` checkpoint ``{'g', 'd', 'g_ema', 'g_optim', 'd_optim', 'args', 'ada_aug_p'}``.

All writers are atomic (:func:`kdpipe.fsutil.atomic_write`: a temporary file, fsync, ``os.replace``).
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdpipe.pipeline.teacher.formats.convert_rosinality import nv_discriminator_to_rosinality, nv_generator_to_rosinality
from kdpipe.pipeline.teacher.formats.convert_tf import nv_discriminator_to_tf, nv_generator_to_tf
from kdpipe.errors import CheckpointError
from kdpipe.fsutil import atomic_write
from kdpipe.pipeline.teacher.formats.safe_pickle import _np_multiarray

PLACEHOLDER_SRC = ("# Written by kdpipe.pipeline.teacher.formats.export: the original network source is not embedded.\n"
                   "# kdpipe reads these weights without executing any code from the file.\n")
_PERSISTENCE_VERSION = 6  # torch_utils/persistence.py _version in stylegan2-ada-pytorch and stylegan3


class _TFNetwork:
    """Pickles as ``dnnlib.tflib.network.Network`` with the state ``Network.__getstate__`` returns."""

    def __init__(self, name: str, func: str, static_kwargs: dict, variables: list, components: dict | None = None):
        self.state = {"version": 4, "name": name, "static_kwargs": dict(static_kwargs),
                      "components": dict(components or {}), "build_module_src": PLACEHOLDER_SRC,
                      "build_func_name": func, "variables": list(variables)}

    def __getstate__(self) -> dict:
        return self.state


class _EasyDict(dict):
    """Pickles as ``dnnlib.util.EasyDict``."""


def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called; pickled by name only
    raise NotImplementedError


class PersistentOut:
    """Pickles (with :func:`dumps_official`) as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``,
    with no BUILD state, as upstream ``persistent_class.__reduce__`` does. ``meta``: ``{'type': 'class',
    'version': 6, 'module_src': str, 'class_name': str, 'state': dict}``."""

    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


_OFFICIAL_NAMES = {
    _np_multiarray._reconstruct: ("numpy.core.multiarray", "_reconstruct"),  # numpy 1.x names, as official files
    _np_multiarray.scalar: ("numpy.core.multiarray", "scalar"),
    _TFNetwork: ("dnnlib.tflib.network", "Network"),
    _EasyDict: ("dnnlib.util", "EasyDict"),
    _reconstruct_persistent_obj: ("torch_utils.persistence", "_reconstruct_persistent_obj"),
}


class _OfficialNamesPickler(pickle._Pickler):
    """Pure-Python pickler that writes the stand-ins above under the official global names.

    ``save_global`` emits ``GLOBAL`` / ``STACK_GLOBAL`` for ``module.name`` without importing ``module`` (the
    C pickler would insist on importing it), so no fake ``dnnlib`` / ``torch_utils`` modules are registered.
    """

    def save_global(self, obj, name=None):
        official = _OFFICIAL_NAMES.get(obj)
        if official is None:
            return super().save_global(obj, name)
        module, qualname = official
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("utf-8"))
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[types.FunctionType] = save_global  # the base table holds the base class's save_global


def dumps_official(obj: Any, protocol: int = 4) -> bytes:
    """Pickle ``obj``, writing kdpipe's stand-ins (:class:`PersistentOut`, TF networks, EasyDicts) under the
    official global names (``torch_utils.persistence._reconstruct_persistent_obj``, ...). For hand-made
    checkpoints in tests; the writers below use the same pickler."""
    buf = io.BytesIO()
    _OfficialNamesPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def _kwargs_and_sd(net: torch.nn.Module, kwargs: dict | None, what: str) -> tuple[dict, dict]:
    if kwargs is None:
        kwargs = getattr(net, "init_kwargs", None)
    if kwargs is None:
        raise CheckpointError(f"cannot export the {what}: it has no init_kwargs; pass its constructor kwargs")
    return dict(kwargs), {k: v.detach().cpu().to(torch.float32) for k, v in net.state_dict().items()}


# ---------------------------------------------------------------------------------------------- TensorFlow

def _split_components(tf_params: dict) -> tuple[list, dict[str, list]]:
    own, comps = [], {"synthesis": [], "mapping": []}
    for name, value in tf_params.items():
        head, _, rest = name.partition("/")
        if head in comps and rest:
            comps[head].append((rest, value))
        else:
            own.append((name, value))
    return own, comps


def _tf_generator(name: str, kwargs: dict, sd: dict) -> _TFNetwork:
    """``G`` / ``Gs`` as NVlabs ``G_main`` builds them: own variables ``lod``, ``dlatent_avg``; components
    ``synthesis`` (``G_synthesis``) then ``mapping`` (``G_mapping``, with ``dlatent_broadcast=num_ws``)."""
    static, tf_params = nv_generator_to_tf(kwargs, sd)
    own, comps = _split_components(tf_params)
    num_ws = 2 * int(np.log2(static["resolution"])) - 2
    synthesis = _TFNetwork("G_synthesis", "G_synthesis_stylegan2", static, comps["synthesis"])
    mapping = _TFNetwork("G_mapping", "G_mapping", dict(static, dlatent_broadcast=num_ws), comps["mapping"])
    return _TFNetwork(name, "G_main", static, own, {"synthesis": synthesis, "mapping": mapping})


def write_nvlabs_tf_pkl(path: str | Path, G: torch.nn.Module, D: torch.nn.Module | None = None, *,
                        G_kwargs: dict | None = None, D_kwargs: dict | None = None) -> Path:
    """Write an NVlabs/stylegan2 TensorFlow-layout pickle (``training/misc.py save_pkl``, protocol 4).

    Args:
        G: kdpipe Generator; its weights become both ``G`` and ``Gs`` (kdpipe keeps only the EMA generator).
        D: kdpipe Discriminator. With ``D=None`` a single ``Gs`` Network is written (ada ``legacy.py`` accepts
            that form too); with D the official ``(G, D, Gs)`` tuple.
        G_kwargs / D_kwargs: constructor kwargs; default ``G.init_kwargs`` / ``D.init_kwargs``.
    Returns:
        ``path``. Conversion: inverse of ada ``legacy.convert_tf_generator`` (see :mod:`convert_tf`);
        0-d variables are numpy float32 scalars, as ``tflib.run`` returns them.
    Raises:
        CheckpointError: settings TF cannot express (odd channel_base, conditional D, ...).
    """
    g_kwargs, g_sd = _kwargs_and_sd(G, G_kwargs, "generator")
    Gs = _tf_generator("Gs", g_kwargs, g_sd)
    data: Any = Gs
    if D is not None:
        d_kwargs, d_sd = _kwargs_and_sd(D, D_kwargs, "discriminator")
        d_static, d_params = nv_discriminator_to_tf(d_kwargs, d_sd)
        data = (_tf_generator("G", g_kwargs, g_sd), _TFNetwork("D", "D_stylegan2", d_static, list(d_params.items())),
                Gs)
    return atomic_write(path, lambda f: _OfficialNamesPickler(f, protocol=4).dump(data))


# ---------------------------------------------------------------------------------------------- ada / stylegan3

_PLAIN_TYPES = (bool, int, float, str, type(None), np.floating, np.integer)


def _plain_attr(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain_attr(v) for v in value)
    return isinstance(value, _PLAIN_TYPES)


def _persistent(module: torch.nn.Module, module_src: str, init_kwargs: dict | None = None) -> PersistentOut:
    """An ``nn.Module`` as upstream persistence pickles it: ``meta['state']`` is the module ``__dict__``.

    ``_parameters`` / ``_buffers`` / ``_modules`` become OrderedDicts (Parameters with requires_grad=False, as
    after ``requires_grad_(False)``), hook dicts stay (empty), plain attributes are kept (numpy floats such as
    ``weight_gain`` included); ``_init_args`` is ``()``, ``_init_kwargs`` the given kwargs (top level) or ``{}``.
    """
    state: dict[str, Any] = {}
    for key, value in module.__dict__.items():
        if key == "_parameters":
            state[key] = collections.OrderedDict(
                (n, None if p is None else torch.nn.Parameter(p.detach().cpu().clone(), requires_grad=False))
                for n, p in value.items())
        elif key == "_buffers":
            state[key] = collections.OrderedDict(
                (n, None if b is None else b.detach().cpu().clone()) for n, b in value.items())
        elif key == "_modules":
            state[key] = collections.OrderedDict(
                (n, None if m is None else _persistent(m, module_src)) for n, m in value.items())
        elif key == "_non_persistent_buffers_set":
            state[key] = set(value)
        elif key == "training":
            state[key] = False
        elif key.startswith("_") and isinstance(value, dict) and not value:
            state[key] = collections.OrderedDict()  # hook dicts
        elif key != "init_kwargs" and _plain_attr(value):
            state[key] = value
    state["_init_args"] = ()
    state["_init_kwargs"] = init_kwargs if init_kwargs is not None else {}
    meta = {"type": "class", "version": _PERSISTENCE_VERSION, "module_src": module_src,
            "class_name": type(module).__name__, "state": state}
    return PersistentOut(meta)


def _easy(d: dict) -> _EasyDict:
    return _EasyDict({k: _easy(v) if isinstance(v, dict) else v for k, v in d.items()})


def _ada_generator_kwargs(kwargs: dict, layout: str) -> dict:
    """kdpipe's flat Generator kwargs -> what upstream stores in ``_init_kwargs``.

    ada: top-level plain dict, ``mapping_kwargs`` / ``synthesis_kwargs`` EasyDicts (train.py builds them so).
    stylegan3: flat synthesis kwargs, ``num_fp16_res`` / ``conv_clamp`` omitted when they equal the class
    defaults 4 / 256 (as sg3 train.py omits them).
    """
    top_names = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
    top = {k: kwargs[k] for k in top_names if k in kwargs}
    top["mapping_kwargs"] = _easy(dict(top.get("mapping_kwargs") or {}))
    synthesis = {k: v for k, v in kwargs.items() if k not in top_names}
    if layout == "ada":
        top["synthesis_kwargs"] = _easy(synthesis)
        return top
    for key, default in (("num_fp16_res", 4), ("conv_clamp", 256)):
        synthesis.setdefault(key, {"num_fp16_res": 0, "conv_clamp": None}[key])  # kdpipe/ada class defaults
        if synthesis[key] == default:
            del synthesis[key]
    top.update(synthesis)
    return top


def write_nvlabs_pytorch_pkl(path: str | Path, G: torch.nn.Module, D: torch.nn.Module | None = None, *,
                             layout: str = "ada", G_kwargs: dict | None = None, D_kwargs: dict | None = None,
                             protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    """Write a stylegan2-ada-pytorch (``layout='ada'``) or stylegan3 (``'stylegan3'``) network snapshot pickle.

    Matches ``training/training_loop.py``: ada ``dict(training_set_kwargs, G, D, G_ema, augment_pipe=None)``,
    stylegan3 ``dict(G, D, G_ema, augment_pipe, training_set_kwargs)``; every module (and sub-module) pickles as
    ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {'type': 'class', 'version': 6,
    'module_src': PLACEHOLDER_SRC, 'class_name', 'state'}``; tensors pickle the torch way
    (``_rebuild_parameter`` / ``_rebuild_tensor_v2`` / ``_load_from_bytes``).

    Args:
        G: its weights become both ``G`` and ``G_ema``.
        D: or None (then ``D`` is None in the dict; ada ``legacy.load_network_pkl`` rejects that, kdpipe does not).
        protocol: pickle protocol; 3 reproduces files written under Python 3.7 (ada's target; sets are then
            pickled as ``builtins.set``), the default 4 those of Python 3.8-3.13.
    Raises:
        CheckpointError: unknown layout or a network without init_kwargs.
    """
    if layout not in ("ada", "stylegan3"):
        raise CheckpointError(f"unknown pytorch pickle layout {layout!r}; use 'ada' or 'stylegan3'")
    g_kwargs, _ = _kwargs_and_sd(G, G_kwargs, "generator")
    G_init = _ada_generator_kwargs(g_kwargs, layout)
    nets = {"G": _persistent(G, PLACEHOLDER_SRC, G_init), "G_ema": _persistent(G, PLACEHOLDER_SRC, G_init)}
    nets["D"] = None
    if D is not None:
        d_kwargs, _ = _kwargs_and_sd(D, D_kwargs, "discriminator")
        d_init = {k: _easy(v) if isinstance(v, dict) else v for k, v in d_kwargs.items()}
        nets["D"] = _persistent(D, PLACEHOLDER_SRC, d_init)
    res = g_kwargs["img_resolution"]
    training_set_kwargs = {"class_name": "training.dataset.ImageFolderDataset", "path": "kdpipe-export",
                           "use_labels": g_kwargs.get("c_dim", 0) > 0, "max_size": None, "xflip": False,
                           "resolution": res}
    if layout == "ada":
        data = dict(training_set_kwargs=training_set_kwargs, G=nets["G"], D=nets["D"], G_ema=nets["G_ema"],
                    augment_pipe=None)
    else:
        data = dict(G=nets["G"], D=nets["D"], G_ema=nets["G_ema"], augment_pipe=None,
                    training_set_kwargs=training_set_kwargs)
    return atomic_write(path, lambda f: _OfficialNamesPickler(f, protocol=protocol).dump(data))


# ---------------------------------------------------------------------------------------------- rosinality

def write_rosinality_pt(path: str | Path, G: torch.nn.Module, D: torch.nn.Module | None = None, *,
                        training_checkpoint: bool = False, G_kwargs: dict | None = None,
                        D_kwargs: dict | None = None) -> Path:
    """Write a rosinality/stylegan2-pytorch ``.pt`` (``torch.save``, zip format).

    Args:
        training_checkpoint: False -> ``convert_weight.py`` layout ``{'g_ema', 'latent_avg'[, 'd']}``
            (``latent_avg`` = ``G.mapping.w_avg``); True -> ``train.py`` layout ``{'g', 'd', 'g_ema', 'g_optim',
            'd_optim', 'args' (argparse.Namespace), 'ada_aug_p'}`` with **no** latent_avg, as train.py writes.
    Raises:
        CheckpointError: networks rosinality cannot represent (non-'skip' G, non-resnet D, conditional, ...).
    """
    g_kwargs, g_sd = _kwargs_and_sd(G, G_kwargs, "generator")
    g = nv_generator_to_rosinality(g_kwargs, g_sd)
    d = None
    if D is not None:
        d_kwargs, d_sd = _kwargs_and_sd(D, D_kwargs, "discriminator")
        d = nv_discriminator_to_rosinality(d_kwargs, d_sd)
    if training_checkpoint:
        multiplier = g_kwargs.get("channel_base", 32768) / 16384
        args = argparse.Namespace(arch="stylegan2", size=g_kwargs["img_resolution"], latent=g_kwargs["w_dim"],
                                  n_mlp=(g_kwargs.get("mapping_kwargs") or {}).get("num_layers", 8),
                                  channel_multiplier=int(multiplier) if multiplier.is_integer() else multiplier,
                                  start_iter=0, iter=0, batch=4, r1=10.0, mixing=0.9, augment=False)
        empty_optim = {"state": {}, "param_groups": []}
        ckpt = {"g": g, "d": d if d is not None else {}, "g_ema": {k: v.clone() for k, v in g.items()},
                "g_optim": empty_optim, "d_optim": dict(empty_optim), "args": args, "ada_aug_p": 0.0}
    else:
        ckpt = {"g_ema": g, "latent_avg": g_sd["mapping.w_avg"].clone()}
        if d is not None:
            ckpt["d"] = d
    return atomic_write(path, lambda f: torch.save(ckpt, f))
