"""A restricted unpickler for StyleGAN2 ``.pkl`` checkpoints: builds tensors, arrays and plain containers only.

Official checkpoints are pickles, and the official loaders run code from them: NVlabs TF ``Network.__setstate__``
and stylegan2-ada-pytorch / stylegan3 ``torch_utils.persistence._reconstruct_persistent_obj`` both ``exec`` the
network source embedded in the file. kdpipe never does. :class:`SafeUnpickler` resolves a global only from a
fixed allow-list (reference doc ``stylegan2-checkpoint-formats.md`` section 2, "Reading WITHOUT NVIDIA code"):

* ``collections.OrderedDict``; ``builtins.set`` / ``frozenset`` (protocol <= 3 pickles spell sets that way);
  ``_codecs.encode`` for ``latin1`` only (protocol 2 spells ``bytes`` that way);
* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` (argument-checked, backward hooks refused) and
  ``torch.storage._load_from_bytes`` -> ``torch.load(..., map_location='cpu', weights_only=True)``;
* ``numpy.core.multiarray`` / ``numpy._core.multiarray`` ``scalar`` and ``_reconstruct``, ``numpy.dtype``,
  ``numpy.ndarray``, ``numpy.core.numeric._frombuffer`` (protocol 5) -- numeric dtypes only, never ``object``;
* stand-ins that carry data and have no behaviour: ``dnnlib.tflib.network.Network`` -> :class:`TFNetworkStub`,
  ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentObject` (``module_src`` is kept
  as a string and never executed), ``dnnlib.util.EasyDict`` -> :class:`EasyDictStub`.

Anything else (``builtins.eval``, ``posix.system``, ``subprocess.Popen``, ``torch.nn.Linear``, any unknown class)
raises :class:`~kdpipe.errors.CheckpointError` naming the ``module.name`` the file asked for, before
anything is called. Pickle can only call what ``find_class`` returned, so the allow-list bounds every call the
file can make; after loading, :func:`check_loaded_types` walks the result once more (defence in depth).
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
from typing import Any, BinaryIO

import numpy as np
import torch

from kdpipe.errors import CheckpointError
from kdpipe.pipeline.teacher.formats.budget import tensor_layout_problem

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _np_multiarray

_NUMERIC_KINDS = set("biufc")  # bool, int, uint, float, complex


class _Refused(Exception):
    """Raised by the allow-listed callables on unexpected arguments; :func:`safe_load` names the file."""


class TFNetworkStub:
    """Stand-in for NVlabs ``dnnlib.tflib.network.Network`` (matches ada ``legacy._TFNetworkStub``).

    Has no ``__setstate__``, so pickle's BUILD copies the pickled state dict into ``__dict__``: attributes
    ``version`` (int, 4), ``name``, ``static_kwargs`` (dict), ``components`` (dict name -> TFNetworkStub),
    ``build_module_src`` (str, never executed), ``build_func_name`` and ``variables``
    (list of ``(name, float32 ndarray or numpy scalar)``, own variables only).
    """


class PersistentObject:
    """Inert stand-in for a stylegan2-ada-pytorch / stylegan3 ``@persistent_class`` instance.

    Attributes:
        class_name: e.g. ``'Generator'``, ``'SynthesisLayer'``.
        state: the pickled ``nn.Module.__dict__`` (``_parameters``, ``_buffers``, ``_modules`` (name ->
            PersistentObject), ``_init_args``, ``_init_kwargs``, plain attributes, ...).
        module_src: the embedded network source, kept as a string and never executed.
        version: persistence format version (6 in both repos).
    """

    def __init__(self, class_name: str, state: dict, module_src: str, version: int):
        self.class_name, self.state, self.module_src, self.version = class_name, state, module_src, version

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name!r})"


class EasyDictStub(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain ``dict`` subclass (no attribute access, no behaviour)."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Replacement for ``torch_utils.persistence._reconstruct_persistent_obj(meta)``: keep data, run nothing."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise _Refused("persistent object metadata is not {'type': 'class', 'class_name': str, ...}")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise _Refused(f"persistent object {meta['class_name']!r} has no state dict")
    src = meta.get("module_src")
    return PersistentObject(meta["class_name"], state, src if isinstance(src, str) else "", meta.get("version"))


def _check_hooks(hooks: Any, what: str) -> None:
    if hooks is not None and (not isinstance(hooks, dict) or len(hooks) > 0):
        raise _Refused(f"{what} carries backward hooks; checkpoints must hold plain tensors")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """Checked ``torch._utils._rebuild_tensor_v2``: a storage, int offset/sizes/strides that fit the storage,
    no hooks."""
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise _Refused(f"tensor storage is a {type(storage).__name__}, not a torch storage")
    ints = (storage_offset, *size, *stride)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or not isinstance(requires_grad, bool):
        raise _Refused("tensor offset/size/stride are not integers")
    _check_hooks(backward_hooks, "a tensor")
    if metadata is not None and not isinstance(metadata, dict):
        raise _Refused("tensor metadata is not a dict")
    numel = storage._size() if isinstance(storage, torch.storage.TypedStorage) else storage.nbytes()
    problem = tensor_layout_problem(numel, storage_offset, tuple(size), tuple(stride))
    if problem:  # checked before the view exists: a dtype conversion would materialise every element
        raise _Refused(problem)
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride), requires_grad,
                                           collections.OrderedDict(), metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    """Checked ``torch._utils._rebuild_parameter``: wraps a tensor in ``nn.Parameter``, refuses hooks."""
    if type(data) is not torch.Tensor or not isinstance(requires_grad, bool):
        raise _Refused("parameter data is not a plain tensor")
    _check_hooks(backward_hooks, "a parameter")
    return torch.nn.Parameter(data, requires_grad)


def _load_from_bytes(blob):
    """``torch.storage._load_from_bytes`` with ``weights_only=True`` (upstream uses ``weights_only=False``)."""
    if not isinstance(blob, (bytes, bytearray)):
        raise _Refused("storage payload is not bytes")
    obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    if not isinstance(obj, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise _Refused(f"storage payload holds a {type(obj).__name__}, not a storage")
    return obj


def _numpy_dtype(obj, align=False, copy=False):
    """``numpy.dtype`` restricted to numeric kinds (refuses ``object`` and structured dtypes)."""
    if not isinstance(obj, str):
        raise _Refused(f"numpy dtype spec {obj!r} is not a string")
    dt = np.dtype(obj, align=bool(align), copy=bool(copy))
    if dt.kind not in _NUMERIC_KINDS:
        raise _Refused(f"numpy dtype {obj!r} is not numeric")
    return dt


def _numpy_reconstruct(subtype, shape, dtype):
    """``numpy.core.multiarray._reconstruct`` for plain ``ndarray`` only (no subclasses)."""
    if subtype is not np.ndarray:
        raise _Refused("numpy array subclass in checkpoint")
    return _np_multiarray._reconstruct(np.ndarray, shape, dtype)


def _numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar`` for numeric dtypes and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS or not isinstance(data, (bytes, str)):
        raise _Refused("numpy scalar is not numeric")
    if isinstance(data, str):  # protocol-2 / latin1-decoded pickles
        data = data.encode("latin1")
    return _np_multiarray.scalar(dtype, data)


def _numpy_frombuffer(buf, dtype, shape, order):
    """``numpy.core.numeric._frombuffer`` (protocol-5 arrays): numeric dtype, bytes buffer, C/F order."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS or order not in ("C", "F"):
        raise _Refused("numpy buffer array is not numeric")
    if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
        raise _Refused("numpy array buffer is not bytes")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _set(items=()):
    return set(_plain_iterable(items))


def _frozenset(items=()):
    return frozenset(_plain_iterable(items))


def _plain_iterable(items):
    if not isinstance(items, (list, tuple)):
        raise _Refused("set contents are not a list")
    return items


def _codecs_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes``: ``latin1`` text -> bytes only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode is allowed only for latin1 text")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("dnnlib.tflib.network", "Network"): TFNetworkStub,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDictStub,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "scalar")] = _numpy_scalar
    _ALLOWED[(_mod, "_reconstruct")] = _numpy_reconstruct
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _numpy_frombuffer


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves globals only from the allow-list above.

    Args:
        file: binary file object positioned at the pickle.
        source: how to name the file in error messages (usually its path).
    Raises (from ``load()``):
        CheckpointError: a global outside the allow-list (message names ``module.name``), a persistent id,
            or allowed callables given unexpected arguments.
    """

    def __init__(self, file: BinaryIO, source: str = "<checkpoint>"):
        super().__init__(file, encoding="latin1")  # as NVlabs loads TF pickles; only affects protocol-2 str
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names, as pickle's fix_imports does
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"checkpoint '{self.source}' asks for {module}.{name}, which kdpipe refuses to load (only tensors, "
                f"arrays and plain containers are allowed); do not trust this file") from None

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"checkpoint '{self.source}' uses pickle persistent ids ({str(pid)[:40]!r}); "
                              "kdpipe reads only plain .pkl checkpoints and torch zip files")


_PLAIN = (str, bytes, bytearray, int, float, complex, bool, type(None))


def check_loaded_types(obj: Any, source: str = "<checkpoint>") -> None:
    """Walk an unpickled object graph and refuse any type the allow-list should not have produced.

    Allowed: plain scalars/strings/bytes, dict/list/tuple/set/frozenset (and OrderedDict, EasyDictStub),
    ``torch.Tensor`` / ``nn.Parameter`` without backward hooks, numeric ``np.ndarray`` / numpy scalars /
    ``np.dtype``, :class:`TFNetworkStub`, :class:`PersistentObject`.

    Raises:
        CheckpointError: naming the file and the offending type.
    """
    try:
        _walk(obj)
    except _Refused as err:
        raise CheckpointError(f"checkpoint '{source}' has unsafe or malformed content: {err}; "
                              "do not trust this file") from None


def _walk(obj: Any) -> None:
    seen: set[int] = set()
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, _PLAIN) or id(x) in seen:
            continue
        seen.add(id(x))
        t = type(x)
        if t in (dict, collections.OrderedDict, EasyDictStub):
            stack.extend(x.keys())
            stack.extend(x.values())
            stack.extend(getattr(x, "__dict__", {}).values())
        elif t in (list, tuple, set, frozenset):
            stack.extend(x)
        elif t in (torch.Tensor, torch.nn.Parameter):
            _check_hooks(x._backward_hooks, "a tensor")
        elif t is np.ndarray or isinstance(x, (np.generic, np.dtype)):
            kind = x.kind if isinstance(x, np.dtype) else x.dtype.kind
            if kind not in _NUMERIC_KINDS:
                raise _Refused(f"a numpy value of dtype kind {kind!r} (only numeric dtypes are allowed)")
        elif t is TFNetworkStub:
            stack.extend(x.__dict__.values())
        elif t is PersistentObject:
            stack.append(x.state)
        else:
            raise _Refused(f"it produced a {t.__module__}.{t.__qualname__} object")


def safe_load(file: BinaryIO, source: str = "<checkpoint>") -> Any:
    """Unpickle ``file`` with :class:`SafeUnpickler` and check the result with :func:`check_loaded_types`.

    Args:
        file: binary file object positioned at the pickle.
        source: how to name the file in error messages.
    Returns:
        The unpickled object (tuples of :class:`TFNetworkStub`, dicts of :class:`PersistentObject`, ...).
    Raises:
        CheckpointError: one line naming ``source``: unsafe content (names the global or type), or a
            truncated/corrupt pickle.
    """
    try:
        obj = SafeUnpickler(file, source).load()
        _walk(obj)
    except CheckpointError:
        raise
    except _Refused as err:
        raise CheckpointError(f"checkpoint '{source}' has unsafe or malformed content: {err}; "
                              "do not trust this file") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, RuntimeError, IndexError, KeyError,
            AttributeError, OverflowError, MemoryError, UnicodeDecodeError) as err:
        msg = " ".join(str(err).split())[:160] or type(err).__name__
        raise CheckpointError(f"checkpoint '{source}' is truncated or corrupt ({type(err).__name__}: {msg}); "
                              "download or copy it again") from None
    return obj
