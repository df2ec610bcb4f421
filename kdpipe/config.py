"""The one config system of kdpipe: section dataclasses, one YAML loader, one ``--set SECTION.KEY=VALUE`` parser.

A config is a dataclass whose fields are section dataclasses (pipeline: ``teacher``, ``render``...; trainers:
``data``, ``loop``, ``model``...). Each field has a docstring under it (units, range, default, source) and each
section checks its values in ``__post_init__`` with :func:`check_choice` / :func:`check_range`. Values come, last
one wins, from the dataclass defaults, YAML mappings with the same nesting, and dotted overrides
(``{"render.n": 8}`` from the CLI's options or ``--set render.n=8``). Every value is type-checked by
:func:`build`; an unknown key, a wrong type, NaN/inf or an out-of-range value raises :class:`ConfigError` naming
the field path, the value and what is allowed (litgpt-style configs).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from kdpipe.errors import ConfigError
from kdpipe.fsutil import atomic_write_text

T = TypeVar("T")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise ConfigError ``name=value is not one of ...`` unless ``value in choices``."""
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def check_range(name: str, value: float | None, lo: float | None = None, hi: float | None = None,
                hint: str = "") -> None:
    """Raise ConfigError naming the bound unless ``lo <= value <= hi`` (``None`` value or bound: not checked)."""
    if value is None:
        return
    if lo is not None and value < lo:
        raise ConfigError(f"{name}={value!r} must be >= {lo}{hint}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name}={value!r} must be <= {hi}{hint}")


def check_min(name: str, value: float, lo: float) -> None:
    """:func:`check_range` with a lower bound only."""
    check_range(name, value, lo)


def check_numbers(name: str, values: Sequence[Any], length: int | None = None) -> None:
    """Raise ConfigError unless ``values`` is a list of finite numbers (of ``length`` items when given)."""
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not ok or (length is not None and len(values) != length):
        want = f"{length} finite numbers" if length is not None else "finite numbers"
        raise ConfigError(f"{name}={list(values)!r} must be a list of {want}")


def coerce(name: str, value: Any, tp: Any) -> Any:
    """Check/convert ``value`` to annotation ``tp``: bool, int, float (finite; ints widened), str, list,
    ``X | None``, unions and nested dataclasses. Lists keep their items as given (checked in ``__post_init__``)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(name, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        if value is None:
            raise ConfigError(f"{name}: null is not allowed; give a value")
        raise ConfigError(errors[0] if errors else f"{name}={value!r} has the wrong type")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping of fields, got {value!r}")
        return build(tp, value, prefix=name + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}={value!r} must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}={value!r} must be an integer")
    if tp is float:
        number = value
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            if not math.isfinite(number):
                raise ConfigError(f"{name}={value!r} must be a finite number (not NaN or infinity)")
            return float(number)
        raise ConfigError(f"{name}={value!r} must be a number")
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{name}={value!r} must be a string")
    if tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{name}={value!r} must be a list, e.g. [1, 2]")
    return value


def build(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """Instantiate dataclass ``cls`` from a nested mapping, type-checking every field (see :func:`coerce`).

    Raises:
        ConfigError: an unknown key (lists the known ones), a wrong type, or what ``__post_init__`` refuses.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; known keys: {', '.join(sorted(names))}")
    return cls(**{k: coerce(prefix + k, v, hints[k]) for k, v in values.items()})


def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a config dataclass and its dataclass bases: the string literal under each field
    (litgpt / PEP 257 style; used for ``--help``)."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def load_yaml(path: str | Path, what: str = "config file") -> dict:
    """Parse a YAML mapping from ``path`` (an empty file is ``{}``).

    Raises:
        ConfigError: missing file, a directory, unreadable, bad YAML or a document that is not a mapping.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is a directory; pass a YAML file")
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(p)!r} does not exist; pass an existing YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {str(p)!r} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(p)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} {str(p)!r} must hold a mapping of sections, got {type(data).__name__}")
    return dict(data)


def parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """Parse ``--set`` items ``["render.n=8", "loop.precision=bf16"]`` into ``{"render.n": 8, ...}``.

    Values are read as YAML (``8`` -> int, ``[0, 8]`` -> list, ``null`` -> None, an empty value -> None);
    an unparsable value stays a string (and is then refused by the field's type check if it must not be one).
    Raises:
        ConfigError: an item that is not ``SECTION.KEY=VALUE``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or "." not in key or not all(key.split(".")):
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. render.shard_size=100")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw
    return out


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of nested ``base`` with dotted ``overrides`` (``{"render.n": 8}``) applied.

    Raises:
        ConfigError: an override path that goes through a value (``render.n.x``).
    """
    out = yaml.safe_load(yaml.safe_dump(dict(base))) or {}
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                base: Mapping[str, Any] | None = None) -> T:
    """Build config dataclass ``cls`` from defaults < ``base`` dict < YAML file ``path`` < dotted ``overrides``.

    Args:
        cls: the trainer's top-level config dataclass (fields are section dataclasses).
        path: YAML file with the same nesting as ``cls`` (optional).
        overrides: ``{"section.field": value}``; None values are ignored (= "not given on the CLI").
        base: nested dict applied before the file (used on resume: the checkpoint's saved config).

    Raises:
        ConfigError: missing/unparsable file, unknown key, wrong type or out-of-range value.
    """
    values: dict[str, Any] = dict(base or {})
    if path is not None:
        values = merge(values, flatten(load_yaml(path)))
    values = merge(values, {k: v for k, v in (overrides or {}).items() if v is not None})
    return build(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (YAML/JSON/``torch.load(weights_only=True)`` safe)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (:func:`kdpipe.fsutil.atomic_write_text`)."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def section_field(default_factory: Any) -> Any:
    """``dataclasses.field(default_factory=...)`` for config sections."""
    return dataclasses.field(default_factory=default_factory)
