"""Pipeline configuration: one section dataclass per section of ``stages.yaml``, resolved by :func:`resolve_config`.

Values, later ones winning: the dataclass defaults below (the single place a field and its default are
declared), ``stages.yaml`` ``defaults`` (optional) and ``tasks.<task>``, ``--config FILE``, ``--set
SECTION.KEY=VALUE``, then the dedicated CLI options (``-n``, ``--seed``...). Loading, ``--set`` parsing and type
checks are :mod:`kdpipe.config` (shared with the trainers); each section checks its ranges in ``__post_init__``.
Errors are one :class:`ConfigError` line naming the field path, the value and what is allowed.

Adding a field: one annotated attribute with its default and a docstring in its section below (plus a check in
``__post_init__`` if it has a range). Fields of a section listed in a stage's ``sections`` enter that stage's
fingerprint (``kdpipe.pipeline.runner.dag``), unless listed in ``dag.NON_SEMANTIC``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from kdpipe.config import (build, check_choice, check_numbers, check_range, config_to_dict, field_docs, flatten,
                           load_yaml, merge, parse_set)
from kdpipe.errors import ConfigError

DEFAULT_STAGES_YAML = Path(__file__).resolve().parent.parent / "stages.yaml"
MAX_ITEMS = 10 ** 8     # samples / latents / candidates of one task; more is almost surely a typo
MAX_SEED = 2 ** 32 - 1  # z_from_seeds seeds numpy's RandomState, which takes 32-bit seeds


def _resolve_seed_list(name: str, section: Any, per_sample: int) -> None:
    """``section.seeds`` applied to ``n`` and ``seed`` (:func:`kdpipe.pipeline.latents.apply_seed_list`)."""
    from kdpipe.pipeline.latents import apply_seed_list

    apply_seed_list(name, section, per_sample)


def _check_sharded(name: str, section: Any) -> None:
    """The checks shared by the sections of sharded image stages (``render``, ``pairs``): n, seed, shard_size and
    the PNG level."""
    check_range(f"{name}.n", section.n, 1, MAX_ITEMS, hint="; split larger datasets over several seeds")
    check_range(f"{name}.seed", section.seed, 0, MAX_SEED)
    check_range(f"{name}.shard_size", section.shard_size, 1)
    check_range(f"{name}.png_compress_level", section.png_compress_level, 0, 9)
    check_choice(f"{name}.png_encoder", section.png_encoder, ("fpng", "pillow"))


@dataclass
class TeacherConfig:
    """``teacher``: which StyleGAN2 and how its latents are drawn."""

    generator: str | None = None
    """Checkpoint path (.pkl NVlabs TF / stylegan2-ada / stylegan3, .pt rosinality) or ``builtin:random-64``;
    required. Its sha256 enters fingerprints, not its path."""
    truncation_psi: float = 0.7
    """``w_avg + psi (w - w_avg)`` in [0, 2]; 1 = no truncation. Default 0.7: seed 002's released code."""
    truncation_cutoff: int | None = None
    """Truncate only ws layers ``[0, cutoff)``, >= 1; null (default) = every layer."""
    noise_mode: str = "const"
    """``const`` (the generator's stored noise: a source image and its edit share noise) or ``none``;
    ``random`` is refused (samples would not be reproducible)."""

    def __post_init__(self) -> None:
        check_range("teacher.truncation_psi", self.truncation_psi, 0.0, 2.0)
        check_range("teacher.truncation_cutoff", self.truncation_cutoff, 1)
        check_choice("teacher.noise_mode", self.noise_mode, ("const", "none"))


@dataclass
class RenderConfig:
    """``render``: triplet tasks (style-mix, morph), seed 000 Sec. 3.1 / seed 002 Sec. 5."""

    op: str = "style-mix"
    """Target ``y``: ``style-mix`` (w1 on early layers, w2 after) or ``morph`` (``G((w1 + w2) / 2)``)."""
    n: int = 1000
    """Number of triplets, 1 to 10**8."""
    seed: int = 0
    """Base seed in [0, 2**32 - 1]: sample i uses seeds ``seed + 2i`` (x1, content) and ``seed + 2i + 1`` (x2)."""
    seeds: str | None = None
    """Seed list instead of ``seed`` and ``n`` (``kdpipe generate --seeds``), NVlabs range syntax ``0-99,200-201``:
    sample i uses entries 2i (x1) and 2i + 1 (x2), so ``n`` = half its length (an even length is required and
    ``n`` / ``seed`` given beside it are replaced). A single run ``a-b`` is stored as ``seed = a``, same
    fingerprint and bytes as ``--seed a -n (b - a + 1) / 2``. null = use ``seed`` and ``n``."""
    shard_size: int = 256
    """Samples per shard (the unit of resume and of rank splitting), >= 1."""
    mix: str | int = "crossover:4"
    """Layers taken from x2's latent (style-mix only): ``crossover:K`` (seed 000: K = 4), coarse, middle, fine."""
    png_encoder: str = "fpng"
    """PNG writer: ``fpng`` (default; the fpng package, ~10-25x faster than Pillow, lossless, files ~20 % larger)
    or ``pillow``. Pixels are identical, bytes differ (part of the fingerprint); where fpng cannot be imported
    the run falls back to ``pillow`` and says so in the log and ``run.json``."""
    png_compress_level: int = 1
    """zlib level 0-9 of Pillow's PNGs (``png_encoder: pillow`` only; changes bytes and speed, not pixels)."""

    def __post_init__(self) -> None:
        check_choice("render.op", self.op, ("style-mix", "morph"))
        _resolve_seed_list("render", self, 2)
        _check_sharded("render", self)


@dataclass
class SampleConfig:
    """``sample``: pair tasks, the latents classified to find the direction (seed 002 step 1)."""

    n: int = 10000
    """Latents to classify, 4 to 10**8. Seed 002's code used 5000; InterFaceGAN advises far more."""
    seed: int = 100000000
    """Sample i uses seed ``seed + i``, in [0, 2**32 - 1]; distinct from the pair seeds by default."""
    resolution: int = 256
    """Classification resolution in pixels (>= 16); larger teacher images are area-downsampled to it."""

    def __post_init__(self) -> None:
        check_range("sample.n", self.n, 4, MAX_ITEMS, hint="; classify fewer latents")
        check_range("sample.seed", self.seed, 0, MAX_SEED)
        check_range("sample.resolution", self.resolution, 16)


@dataclass
class AttributeConfig:
    """``attribute``: which classifier output a pair task edits and how values become classes (seed 002 step 3)."""

    name: str = "gender"
    """Classifier output the task edits: gender, age_bin, brightness, ..."""
    classifier: str = "gender"
    """face | gender | age | face-attributes | brightness | hue | saturation | ``module:Class``."""
    kind: str = "probability"
    """``probability`` (P(class 1) >= 0.5), ``continuous`` (quantile thresholds) or ``bins`` (age bins)."""
    class_names: list = field(default_factory=lambda: ["female", "male"])
    """Names of class 0 and class 1, e.g. [female, male]."""
    min_confidence: float = 0.9
    """Both images of a pair need at least this confidence, in [0, 1]."""
    min_face_probability: float | None = 0.99
    """Face-detector probability a sample needs, in [0, 1]; null for teachers that do not draw faces."""
    quantiles: list = field(default_factory=lambda: [0.3, 0.7])
    """``continuous``: class 0 below the q0 quantile of the classified sample, class 1 above q1 (0 <= q0 <= q1 <= 1)."""
    age_bin_edges: list = field(default_factory=lambda: [0, 15, 25, 35, 45, 55, 65, 200])
    """Age bin edges in years, >= 3 strictly increasing (bins ``[e_k, e_k+1)``)."""

    def __post_init__(self) -> None:
        check_choice("attribute.kind", self.kind, ("probability", "continuous", "bins"))
        if len(self.class_names) != 2 or not all(isinstance(c, str) for c in self.class_names):
            raise ConfigError(f"attribute.class_names={self.class_names!r} must be two names, e.g. [female, male]")
        check_range("attribute.min_confidence", self.min_confidence, 0.0, 1.0)
        check_range("attribute.min_face_probability", self.min_face_probability, 0.0, 1.0)
        check_numbers("attribute.quantiles", self.quantiles, 2)
        if not 0 <= self.quantiles[0] <= self.quantiles[1] <= 1:
            raise ConfigError(f"attribute.quantiles={self.quantiles!r} must be [q0, q1] with 0 <= q0 <= q1 <= 1")
        check_numbers("attribute.age_bin_edges", self.age_bin_edges)
        if len(self.age_bin_edges) < 3 or sorted(set(self.age_bin_edges)) != list(self.age_bin_edges):
            raise ConfigError(f"attribute.age_bin_edges={self.age_bin_edges!r} must be >= 3 strictly increasing "
                              "numbers (years)")


@dataclass
class ClassifyConfig:
    """``classify``: resumable classification of the sampled latents."""

    part_size: int = 1000
    """Samples per resumable parquet part, >= 1."""

    def __post_init__(self) -> None:
        check_range("classify.part_size", self.part_size, 1)


@dataclass
class DirectionsConfig:
    """``directions``: the attribute's direction in W (seed 002 step 4; InterFaceGAN for svm / conditioning)."""

    method: str = "mean-diff"
    """``mean-diff`` (seed 002: difference of class centres), ``logreg`` (seed 002's released code) or
    ``svm`` (InterFaceGAN)."""
    layers: list = field(default_factory=lambda: [0, 8])
    """``[start, end)``: the ws layers the edit applies to (seed 002's code: layers 0-7)."""
    condition_on: list = field(default_factory=list)
    """Other classifier outputs whose directions are projected out (InterFaceGAN conditional manipulation)."""
    age_steps: list = field(default_factory=lambda: [2, -2])
    """``bins`` attributes: bin offsets of the edits (seed 002: "+2 bins" / "-2 bins")."""
    min_count: int = 10
    """``bins`` attributes: samples a bin needs to have a centre, >= 2."""
    test_fraction: float = 0.2
    """Held-out share for the reported accuracy, in [0.05, 0.5]."""

    def __post_init__(self) -> None:
        check_choice("directions.method", self.method, ("mean-diff", "logreg", "svm"))
        layers = self.layers
        if len(layers) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in layers) \
                or not 0 <= layers[0] < layers[1]:
            raise ConfigError(f"directions.layers={layers!r} must be [start, end) with 0 <= start < end")
        if not all(isinstance(c, str) for c in self.condition_on):
            raise ConfigError(f"directions.condition_on={self.condition_on!r} must be a list of attribute names")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s != 0 for s in self.age_steps):
            raise ConfigError(f"directions.age_steps={self.age_steps!r} must be non-zero integers, e.g. [2, -2]")
        check_range("directions.min_count", self.min_count, 2)
        check_range("directions.test_fraction", self.test_fraction, 0.05, 0.5)


@dataclass
class PairsConfig:
    """``pairs``: render, classify and select attribute pairs (seed 002 steps 5-7)."""

    n: int = 1000
    """Candidate latents, 1 to 10**8; kept pairs are fewer (the card reports the pass rate)."""
    seed: int = 0
    """Candidate i uses seed ``seed + i``, in [0, 2**32 - 1]."""
    seeds: str | None = None
    """Seed list instead of ``seed`` and ``n`` (NVlabs range syntax ``0-999,5000``): candidate i uses entry i, ``n``
    = its length; a single run ``a-b`` is stored as ``seed = a`` (see ``render.seeds``). null = ``seed`` and ``n``."""
    shard_size: int = 256
    """Candidates per shard, >= 1."""
    steps: list = field(default_factory=lambda: [-1.0, -0.5, 0.0, 0.5, 1.0])
    """Edit strengths t in ``w + t * scale * delta``, >= 2 increasing numbers (seed 002: -1, -1/2, 0, 1/2, 1)."""
    scale: float = 1.0
    """Multiplier of the direction, >= 0."""
    png_encoder: str = "fpng"
    """PNG writer: ``fpng`` (default; the fpng package, ~10-25x faster than Pillow, lossless, files ~20 % larger)
    or ``pillow``. Pixels are identical, bytes differ (part of the fingerprint); where fpng cannot be imported
    the run falls back to ``pillow`` and says so in the log and ``run.json``."""
    png_compress_level: int = 1
    """zlib level 0-9 of Pillow's PNGs (``png_encoder: pillow`` only; changes bytes and speed, not pixels)."""
    identity: str = "auto"
    """Per-pair identity distance src vs tgt (dlib 128-d face descriptors, Euclidean; < 0.6 = the same person) in
    each sample's json and the manifest (``identity_distance``, null where dlib finds no face) and its distribution
    in the card: ``auto`` (when ``attribute.classifier`` is a built-in face classifier -- face, gender, age,
    face-attributes -- or ``max_identity_distance`` is set), ``always`` (e.g. a ``module:Class`` classifier on a
    face teacher) or ``never`` (not on/off: YAML reads those as booleans). Costs ~0.5 s of one CPU core per kept
    pair at 512-1024 px (dlib runs on the CPU); when not computed, outputs and fingerprints are as before this field existed."""
    max_identity_distance: float | None = None
    """Drop pairs whose identity distance is above this, or unmeasured (no face found by dlib), > 0 (seed 002
    reports identity drift; 0.6 is dlib's same-person threshold); null = keep every pair. Needs ``identity``
    auto or always."""

    def __post_init__(self) -> None:
        _resolve_seed_list("pairs", self, 1)
        _check_sharded("pairs", self)
        check_choice("pairs.identity", self.identity, ("auto", "always", "never"))
        if self.max_identity_distance is not None:
            if self.max_identity_distance <= 0:
                raise ConfigError(f"pairs.max_identity_distance={self.max_identity_distance!r} must be > 0 "
                                  "(dlib's same-person threshold is 0.6) or null")
            if self.identity == "never":
                raise ConfigError(f"pairs.max_identity_distance={self.max_identity_distance!r} filters on identity, "
                                  "but pairs.identity=never; set pairs.identity=auto or always, or drop the filter")
        check_numbers("pairs.steps", self.steps)
        if len(self.steps) < 2 or sorted(self.steps) != list(self.steps):
            raise ConfigError(f"pairs.steps={self.steps!r} must be >= 2 increasing numbers, e.g. [-1, -0.5, 0, 0.5, 1]")
        check_range("pairs.scale", self.scale, 0.0)


@dataclass
class CardConfig:
    """``card``: text of the dataset card."""

    license: str = ("Same licence as the teacher checkpoint (e.g. NVIDIA Source Code License-NC for FFHQ "
                    "StyleGAN2)")
    """Licence of the teacher (it binds the generated images)."""
    description: str = ""
    """Free text for the dataset card (empty: the task's description)."""


@dataclass
class RuntimeConfig:
    """``runtime``: how fast and how verbosely outputs are made; never in a fingerprint (batch_size is, on CUDA)."""

    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda`` or ``cuda:N``."""
    batch_size: int = 16
    """Images per generator forward on CUDA (part of the fingerprint there), >= 1; CPU forwards have a fixed
    size (render.cpu_compute_batch), so on CPU it changes nothing."""
    encode_workers: int | None = None
    """PNG encoder threads in [0, 256]; null = auto (1 on CPU, cores - 2 on CUDA); 0 = inline. Output bytes do
    not depend on it."""
    progress: bool = True
    """Show tqdm progress bars."""

    def __post_init__(self) -> None:
        check_range("runtime.batch_size", self.batch_size, 1)
        check_range("runtime.encode_workers", self.encode_workers, 0, 256)


@dataclass
class PipelineConfig:
    """The resolved config of one task: its name, stages, description and one object per section."""

    task: str = ""
    """Task name (a key of ``tasks`` in stages.yaml)."""
    stages: list = field(default_factory=list)
    """Stage names in run order."""
    description: str = ""
    """The task's one-line description."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """See :class:`TeacherConfig`."""
    render: RenderConfig = field(default_factory=RenderConfig)
    """See :class:`RenderConfig`."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """See :class:`SampleConfig`."""
    attribute: AttributeConfig = field(default_factory=AttributeConfig)
    """See :class:`AttributeConfig`."""
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    """See :class:`ClassifyConfig`."""
    directions: DirectionsConfig = field(default_factory=DirectionsConfig)
    """See :class:`DirectionsConfig`."""
    pairs: PairsConfig = field(default_factory=PairsConfig)
    """See :class:`PairsConfig`."""
    card: CardConfig = field(default_factory=CardConfig)
    """See :class:`CardConfig`."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """See :class:`RuntimeConfig`."""

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError(f"task {self.task!r} declares no stages in stages.yaml")

    def section(self, name: str) -> Any:
        """The section object called ``name`` (``'render'`` -> :class:`RenderConfig`)."""
        return getattr(self, name)

    def to_dict(self) -> dict:
        """Nested plain dict (what ``OUT/<task>/config.yaml`` holds); :func:`from_dict` reads it back."""
        return config_to_dict(self)

    def unused_keys(self) -> dict[str, str]:
        """Fields this config's own values make meaningless, with why: ``{'render.mix': '...'}``."""
        out = {}
        if self.render.op != "style-mix":
            out["render.mix"] = f"render.op={self.render.op} does not mix layers (y = G((w1 + w2) / 2))"
        if self.attribute.kind != "bins":
            for key in ("directions.age_steps", "directions.min_count"):
                out[key] = f"attribute.kind={self.attribute.kind} has no age bins"
        if self.attribute.kind != "continuous":
            out["attribute.quantiles"] = f"attribute.kind={self.attribute.kind} has no quantile thresholds"
        return out


SECTIONS = tuple(name for name in PipelineConfig.__dataclass_fields__ if name not in ("task", "stages", "description"))


def from_dict(data: Mapping[str, Any]) -> PipelineConfig:
    """A :class:`PipelineConfig` from its :meth:`PipelineConfig.to_dict` form (e.g. a saved ``config.yaml``)."""
    return build(PipelineConfig, data)


def section_help() -> dict[str, dict[str, str]]:
    """``{section: {key: docstring}}`` of every pipeline field (for ``--help`` and the README)."""
    fields = PipelineConfig.__dataclass_fields__
    return {name: field_docs(fields[name].default_factory) for name in SECTIONS}


def resolve_config(task: str, stages_yaml: Path | None = None, config_file: Path | None = None,
                   overrides: list[str] | None = None, cli: Mapping[str, Any] | None = None,
                   cli_names: Mapping[str, str] | None = None,
                   used_sections: Callable[[list[str]], Iterable[str]] | None = None) -> PipelineConfig:
    """Resolve and validate the config of ``task``.

    Order (later wins): dataclass defaults < ``stages.yaml`` ``defaults`` < ``tasks.<task>`` < ``config_file`` <
    ``overrides`` (``--set section.key=value``) < ``cli`` (dedicated CLI options, ``{section: {key: value}}`` or
    ``{"section.key": value}``; None = not given). The ``--set`` values are validated on their own before the
    CLI options are applied, so a bad ``--set`` value is an error even when an option overrides it.

    Args:
        cli_names: option names of ``cli`` keys for error messages (``{"render.n": "-n"}``).
        used_sections: stage names -> the config sections those stages read; given, a ``--set`` or CLI value
            in a section the task never reads, or one its own values make meaningless (``--mix`` on morph), is
            an error instead of being silently ignored.
    Raises:
        ConfigError: unknown task (lists the known ones), unknown section/key, bad type or value, NaN/inf, an
            option the task ignores.
    """
    spec = load_yaml(stages_yaml or DEFAULT_STAGES_YAML, "stages file")
    tasks = spec.get("tasks") or {}
    if task not in tasks:
        raise ConfigError(f"unknown task {task!r}; known tasks: {', '.join(sorted(tasks))}")
    values = merge({"task": task}, _flat(spec.get("defaults") or {}, "stages.yaml defaults"))
    values = merge(values, _flat(tasks[task], f"stages.yaml tasks.{task}"))
    if config_file is not None:
        values = merge(values, _flat(load_yaml(config_file), str(config_file)))
    sets = parse_set(overrides)
    values = merge(values, sets)
    build(PipelineConfig, values)  # every --set value checked, even one a CLI option replaces below
    given = {k: v for k, v in flatten(cli or {}).items() if v is not None}
    cfg = build(PipelineConfig, merge(values, given))
    if used_sections is not None:
        _refuse_ignored(cfg, {**{k: f"--set {k}" for k in sets}, **{k: _option(k, cli_names) for k in given}},
                        set(used_sections(cfg.stages)))
    return cfg


def _flat(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    for section, values in doc.items():
        if section in SECTIONS and not isinstance(values, Mapping):
            raise ConfigError(f"{where}: section '{section}' must be a mapping, got {values!r}")
    return flatten(doc)


def _option(key: str, names: Mapping[str, str] | None) -> str:
    name = (names or {}).get(key)
    return f"{name} ({key})" if name else key


def _refuse_ignored(cfg: PipelineConfig, given: dict[str, str], used: set[str]) -> None:
    """Raise ConfigError for the first given key the task does not read (see :func:`resolve_config`)."""
    unused = cfg.unused_keys()
    for key, shown in given.items():
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            continue
        if section not in used:
            instead = [f"{s}.{name}" for s in SECTIONS if s in used and name in cfg.section(s).__dataclass_fields__]
            hint = f"; use --set {' or --set '.join(instead)}" if instead else ""
            raise ConfigError(f"{shown} is not used by task {cfg.task!r} (stages: {', '.join(cfg.stages)}){hint}")
        if key in unused:
            raise ConfigError(f"{shown} is not used by task {cfg.task!r}: {unused[key]}; drop it")
