"""Run configuration: ``stages.yaml`` defaults, then the task's overrides, then ``--config FILE``, then ``--set``.

The resolved config is a nested dict ``{section: {key: value}}`` validated against :data:`SCHEMA` before any
work starts: an unknown section or key, a wrong type or an out-of-range value raises :class:`ConfigError`
naming the field path (``render.shard_size``), the value and what is allowed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kdpipe.errors import ConfigError

DEFAULT_STAGES_YAML = Path(__file__).resolve().parent.parent / "stages.yaml"


@dataclass(frozen=True)
class Field:
    """One config field: accepted types, optional choices / numeric bounds, and whether it can be ``None``."""

    types: tuple
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    help: str = ""

    def check(self, path: str, value: Any) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"{path}: null is not allowed; expected {self._expected()}")
        if float in self.types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if float in self.types and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) and bool not in self.types:
            raise ConfigError(f"{path}: {value!r} is a boolean; expected {self._expected()}")
        if not isinstance(value, self.types):
            raise ConfigError(f"{path}: {value!r} has type {type(value).__name__}; expected {self._expected()}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{path}: {value!r} is not one of {list(self.choices)}")
        if self.min is not None and value < self.min:
            raise ConfigError(f"{path}: {value!r} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ConfigError(f"{path}: {value!r} is above the maximum {self.max}")
        return value

    def _expected(self) -> str:
        names = "/".join(t.__name__ for t in self.types)
        extra = f" in {list(self.choices)}" if self.choices else ""
        if self.min is not None or self.max is not None:
            extra += f" in [{self.min if self.min is not None else '-inf'}, {self.max if self.max is not None else 'inf'}]"
        return names + extra + (" or null" if self.nullable else "")


INT, FLOAT, STR, BOOL, LIST = (int,), (float,), (str,), (bool,), (list,)

SCHEMA: dict[str, dict[str, Field]] = {
    "teacher": {
        "generator": Field(STR, nullable=True,
                           help="checkpoint path (.pkl NVlabs TF / ada / stylegan3, .pt rosinality) or builtin:NAME"),
        "truncation_psi": Field(FLOAT, min=0.0, max=2.0, help="w_avg + psi (w - w_avg); seed 002's code used 0.7"),
        "truncation_cutoff": Field(INT, min=1, nullable=True, help="truncate only layers [0, cutoff); null = all"),
        "noise_mode": Field(STR, choices=("const", "none"), help="'const' = stored noise; 'random' is not reproducible"),
    },
    "render": {
        "op": Field(STR, choices=("style-mix", "morph"), help="triplet target: style mixing or (w1 + w2) / 2"),
        "n": Field(INT, min=1, help="number of samples"),
        "seed": Field(INT, min=0, max=2 ** 32 - 1, help="base seed; sample i uses seeds seed + 2i, seed + 2i + 1"),
        "shard_size": Field(INT, min=1, help="samples per shard (the unit of resume and of rank splitting)"),
        "mix": Field(STR + INT, help="layers from the 2nd latent: 'crossover:K' (seed 000: K=4), coarse|middle|fine"),
        "png_encoder": Field(STR, choices=("fpng", "pillow"), help="PNG writer; bytes differ, pixels do not"),
        "png_compress_level": Field(INT, min=0, max=9, help="Pillow's zlib level (changes bytes, not pixels)"),
    },
    "sample": {
        "n": Field(INT, min=4, help="latents to classify for the direction (seed 002 code: 5000; InterFaceGAN: far more)"),
        "seed": Field(INT, min=0, max=2 ** 32 - 1, help="sample i uses seed sample.seed + i"),
        "resolution": Field(INT, min=16, help="classification resolution (images are area-downsampled to it)"),
    },
    "attribute": {
        "name": Field(STR, help="classifier output the task edits: gender, age_bin, brightness, ..."),
        "classifier": Field(STR, help="face | gender | age | face-attributes | brightness | hue | saturation | module:Class"),
        "kind": Field(STR, choices=("probability", "continuous", "bins"), help="how values become classes"),
        "class_names": Field(LIST, help="names of class 0 and class 1, e.g. [female, male]"),
        "min_confidence": Field(FLOAT, min=0.0, max=1.0, help="both images of a pair need this confidence (0.9)"),
        "min_face_probability": Field(FLOAT, min=0.0, max=1.0, nullable=True,
                                      help="face filter (0.99); null for teachers that are not faces"),
        "quantiles": Field(LIST, help="continuous attributes: class 0 below q0, class 1 above q1"),
        "age_bin_edges": Field(LIST, help="age bin edges in years"),
    },
    "classify": {
        "part_size": Field(INT, min=1, help="samples per resumable classification part"),
    },
    "directions": {
        "method": Field(STR, choices=("mean-diff", "logreg", "svm"), help="mean-diff = seed 002, svm = InterFaceGAN"),
        "layers": Field(LIST, help="[start, end): ws layers the edit applies to (seed 002 code: [0, 8])"),
        "condition_on": Field(LIST, help="other classifier outputs whose directions are projected out (InterFaceGAN)"),
        "age_steps": Field(LIST, help="bin offsets for bins attributes (seed 002: [2, -2])"),
        "min_count": Field(INT, min=2, help="bins attributes: samples a bin needs to have a centre"),
        "test_fraction": Field(FLOAT, min=0.05, max=0.5, help="held-out share for the reported accuracy"),
    },
    "pairs": {
        "n": Field(INT, min=1, help="candidate latents; kept pairs are fewer (see the card's pass rate)"),
        "seed": Field(INT, min=0, max=2 ** 32 - 1, help="candidate i uses seed pairs.seed + i"),
        "shard_size": Field(INT, min=1, help="candidates per shard"),
        "steps": Field(LIST, help="edit strengths t in w + t * scale * delta (seed 002: -1, -1/2, 0, 1/2, 1)"),
        "scale": Field(FLOAT, min=0.0, help="multiplier of the direction"),
        "png_encoder": Field(STR, choices=("fpng", "pillow"), help="PNG writer; bytes differ, pixels do not"),
        "png_compress_level": Field(INT, min=0, max=9, help="Pillow's zlib level"),
    },
    "card": {
        "license": Field(STR, help="licence of the teacher (it binds the generated images)"),
        "description": Field(STR, help="free text for the dataset card"),
    },
    # Runtime knobs: never part of a fingerprint (see dag.NON_SEMANTIC).
    "runtime": {
        "device": Field(STR, help="'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'"),
        "batch_size": Field(INT, min=1, help="images per generator forward on CUDA (part of the fingerprint there); "
                                             "CPU forwards have a fixed size, so on CPU it changes nothing"),
        "encode_workers": Field(INT, min=0, max=256, nullable=True,
                                help="PNG encoder threads; null = auto (1 on CPU, cores - 2 on CUDA); 0 = inline; "
                                     "output bytes do not depend on it"),
        "progress": Field(BOOL, help="show tqdm progress bars"),
    },
}

TASK_KEYS = {"stages", "description"}


def load_yaml(path: Path) -> dict:
    """Parse a YAML mapping. Raises ConfigError for a missing file, bad YAML or a non-mapping document."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for section, values in (over or {}).items():
        if not isinstance(values, dict):
            if section in TASK_KEYS:
                out[section] = values
                continue
            raise ConfigError(f"{where}: section '{section}' must be a mapping, got {values!r}")
        out.setdefault(section, {}).update(copy.deepcopy(values))
    return out


def parse_set(item: str) -> tuple[str, str, Any]:
    """``'render.shard_size=100'`` -> ``('render', 'shard_size', 100)`` (value parsed as YAML)."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. render.shard_size=100")
    key, raw = item.split("=", 1)
    section, name = key.split(".", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return section.strip(), name.strip(), value


def resolve_config(task: str, stages_yaml: Path | None = None, config_file: Path | None = None,
                   overrides: list[str] | None = None, cli: dict | None = None) -> dict:
    """Resolve and validate the config of ``task``.

    Order (later wins): ``stages.yaml`` ``defaults`` < ``tasks.<task>`` < ``config_file`` < ``overrides``
    (``--set section.key=value``) < ``cli`` (``{section: {key: value}}`` from dedicated CLI options).
    Returns ``{'task': task, 'stages': [...], <section>: {...}}``.

    Raises:
        ConfigError: unknown task (lists the known ones), unknown section/key, bad type or value.
    """
    spec = load_yaml(stages_yaml or DEFAULT_STAGES_YAML)
    tasks = spec.get("tasks", {})
    if task not in tasks:
        raise ConfigError(f"unknown task {task!r}; known tasks: {', '.join(sorted(tasks))}")
    cfg = _merge(spec.get("defaults", {}), tasks[task], f"stages.yaml tasks.{task}")
    if config_file is not None:
        cfg = _merge(cfg, load_yaml(config_file), str(config_file))
    for item in overrides or []:
        section, name, value = parse_set(item)
        cfg.setdefault(section, {})[name] = value
    for section, values in (cli or {}).items():
        for name, value in values.items():
            if value is not None:
                cfg.setdefault(section, {})[name] = value
    return validate(task, cfg)


def validate(task: str, cfg: dict) -> dict:
    """Check every section/key against :data:`SCHEMA`; return a normalised copy (ints widened to floats, ...)."""
    out = {"task": task, "stages": list(cfg.get("stages") or []), "description": cfg.get("description", "")}
    if not out["stages"]:
        raise ConfigError(f"task {task!r} declares no stages in stages.yaml")
    for section, values in cfg.items():
        if section in TASK_KEYS:
            continue
        if section not in SCHEMA:
            raise ConfigError(f"unknown config section '{section}'; known: {', '.join(SCHEMA)}")
        fields = SCHEMA[section]
        checked = {}
        for name, value in values.items():
            if name not in fields:
                raise ConfigError(f"unknown config key '{section}.{name}'; known keys: {', '.join(fields)}")
            checked[name] = fields[name].check(f"{section}.{name}", value)
        missing = [n for n, f in fields.items() if n not in checked and not f.nullable]
        if missing:
            raise ConfigError(f"config section '{section}' lacks {', '.join(missing)} (add them to stages.yaml defaults)")
        for n, f in fields.items():
            checked.setdefault(n, None)
        out[section] = checked
    return out
