"""Config of ``kdpipe train x2i``: data-free distillation (seed 000 Sec. 3.3, Eq. 6-8) and finetuning, one command.

The stage follows from the config: ``data.path`` set -> finetuning on paired data (with ``init`` = a distilled run:
the KD-initialised student; without: the from-scratch baseline); else distillation from ``teacher.spec``.
Loss weights left at None take the paper's value for the condition kind (:data:`KIND_DEFAULTS`, appendix A.1-A.3),
resolved when the config is built, so ``config.yaml`` and checkpoints hold the numbers used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdpipe.errors import ConfigError
from kdpipe.trainers.core.config import LoopConfig, section_field
from kdpipe.trainers.gan.augment import check_policy
from kdpipe.trainers.stargan2.config import TeacherConfig, _choice, _positive

KINDS = ("label", "text", "audio", "seg")
"""Condition kinds: ``label`` (class index, one-hot), ``text`` / ``audio`` (a stored per-sample vector,
``cond.npy``), ``seg`` (segmentation map of class indices, one-hot spatial map into SPADE normalisation)."""

VECTOR_KINDS = ("label", "text", "audio")
"""Kinds whose condition is a vector ``[N, D]`` (a one-hot label is a vector of length ``num_classes``)."""

KIND_DEFAULTS: dict[str, dict[str, float]] = {
    # A.1 (text, SSA-GAN) and A.3 (segmentation, SEAN): alpha_l = beta = 0.1 for features of < 128 channels,
    # 0.01 otherwise; lambda_adv = lambda_kdl = 1, lambda_srl = 0.1. Class labels follow text (the paper has none).
    "label": {"alpha_small": 0.1, "alpha_large": 0.01, "beta": 0.1, "lambda_adv": 1.0, "lambda_kdl": 1.0,
              "lambda_srl": 0.1},
    "text": {"alpha_small": 0.1, "alpha_large": 0.01, "beta": 0.1, "lambda_adv": 1.0, "lambda_kdl": 1.0,
             "lambda_srl": 0.1},
    "seg": {"alpha_small": 0.1, "alpha_large": 0.01, "beta": 0.1, "lambda_adv": 1.0, "lambda_kdl": 1.0,
            "lambda_srl": 0.1},
    # A.2 (audio, S2IGAN): alpha_l = beta = 10; lambda_adv = lambda_kdl = lambda_srl = 10.
    "audio": {"alpha_small": 10.0, "alpha_large": 10.0, "beta": 10.0, "lambda_adv": 10.0, "lambda_kdl": 10.0,
              "lambda_srl": 10.0},
}


@dataclass
class ConditionConfig:
    """What the condition c of ``G_S(z, c)`` is and how distillation replaces it."""

    kind: str = "label"
    """``label``, ``text``, ``audio`` (vectors: ``cond.npy`` for text/audio) or ``seg`` (SPADE)."""
    num_classes: int = 10
    """``label``: classes (one-hot length); ``seg``: segmentation classes (one-hot map channels)."""
    dim: int = 0
    """``text`` / ``audio``: length of the stored condition vector (0 = taken from the finetuning data)."""
    pseudo: str = "auto"
    """The condition during distillation: ``encoder`` (c = SE(image), SE initialised from the teacher's D; Sec.
    3.3), ``ones`` (c = 1 in G_S, 0 in D_S: the paper's fallback for one-hot spatial maps) or ``auto`` (``ones``
    for ``seg``, else ``encoder``)."""

    def __post_init__(self) -> None:
        _choice("condition.kind", self.kind, KINDS)
        _choice("condition.pseudo", self.pseudo, ("auto", "encoder", "ones"))
        _positive("condition.num_classes", self.num_classes, allow_zero=False)
        _positive("condition.dim", self.dim)
        if self.pseudo == "auto":
            self.pseudo = "ones" if self.kind == "seg" else "encoder"
        if self.kind == "seg" and self.pseudo == "encoder":
            raise ConfigError("condition.pseudo=encoder cannot give a segmentation map (seed 000 Sec. 3.3: the "
                              "semantic encoder does not predict one-hot spatial maps); use condition.pseudo=ones")


@dataclass
class ModelConfig:
    """Sizes of the student networks (:mod:`kdpipe.trainers.x2i.networks`)."""

    img_size: int = 0
    """Student resolution R (power of two, >= 8); 0 = the teacher's (distillation) or the data's (finetuning)."""
    channel_base: int = 4096
    """Channels at resolution r: ``min(channel_base // r, channel_max)`` (StyleGAN's rule), generator and D_S."""
    channel_max: int = 256
    """Channel cap."""
    z_dim: int = 0
    """Student noise size; 0 = the teacher's z_dim (distillation), 64 from scratch. ``init`` keeps its value."""
    cond_dim: int = 0
    """Condition embedding size fed to the generator's normalisation layers; 0 = the teacher discriminator's last
    hidden width (what SE outputs) in distillation, 128 from scratch. Finetuning from ``init`` keeps its value."""
    spade_hidden: int = 32
    """``seg``: hidden channels of each SPADE modulation branch (Park et al. 2019 use 128)."""
    label_init: str = "random"
    """Finetuning from ``init`` with ``label`` conditions: class k's embedding starts at random (``random``, as from
    scratch and in the paper) or at the mean distilled SE embedding of its finetuning images (``semantic-encoder``;
    on the digits demo the class means were too alike: accuracy 0.30 vs 0.69 with ``random``, README)."""
    teacher_feature: bool = True
    """Distillation: add the teacher's first synthesis feature ``G'_T(s1)_1`` (4x4) into the student's 4x4 feature
    (seed 000 Sec. 3.3; dropped at finetuning, footnote 4)."""

    def __post_init__(self) -> None:
        for name in ("channel_base", "channel_max", "spade_hidden"):
            _positive(f"model.{name}", getattr(self, name), allow_zero=False)
        _positive("model.cond_dim", self.cond_dim)
        _positive("model.z_dim", self.z_dim)
        _choice("model.label_init", self.label_init, ("semantic-encoder", "random"))
        if self.img_size and (self.img_size < 8 or self.img_size & (self.img_size - 1)):
            raise ConfigError(f"model.img_size={self.img_size} must be a power of two >= 8 (or 0 = automatic)")


@dataclass
class KDDataConfig:
    """Where distillation triplets come from (the StarGANv2 student's code path)."""

    source: str = "online"
    """``online`` (the teacher renders each minibatch, the paper's practice) or ``shards`` (style-mix shards)."""
    shards: str = ""
    """``source=shards``: OUT/style-mix of ``kdpipe generate`` (samples need ``latents.npy`` and json ``seeds``)."""
    base_seed: int = 0
    """``online``: triplet i uses teacher seeds ``base_seed + 2i`` and ``+ 2i + 1``."""
    student_z: str = "random"
    """The student's noise z_s: ``random`` (seed 000's noise: N(0, I) from ``numpy.random.default_rng([loop.seed,
    step])``, independent of the triplet, so image content reaches the student only through the teacher feature and
    the pseudo-condition) or ``teacher`` (the content image's z1: the student then learns z -> content like the
    teacher, and the condition carries little; see the README demo)."""
    shuffle_buffer: int = 256
    """``source=shards``: seeded shuffle buffer size."""

    def __post_init__(self) -> None:
        _choice("kd.source", self.source, ("online", "shards"))
        _choice("kd.student_z", self.student_z, ("teacher", "random"))
        _positive("kd.base_seed", self.base_seed)


@dataclass
class DataConfig:
    """Minibatches, and the paired (condition, image) dataset of finetuning (:mod:`kdpipe.trainers.x2i.data`)."""

    path: str = ""
    """Finetuning data: a folder of class sub-folders (``label``) or webdataset shards whose samples hold an image
    (``png``/``jpg``) and ``cls`` (label), ``cond.npy`` (text/audio) or ``seg.png`` (seg). Empty = distillation."""
    batch_size: int = 8
    """Samples (triplets when distilling) per step and process."""
    limit: int = 100000
    """Finetuning data is held in memory: refuse datasets with more samples than this."""
    on_bad_image: str = "skip"
    """An undecodable image in a class folder: ``skip`` (warned, listed in data.json) or ``error``."""

    def __post_init__(self) -> None:
        _positive("data.batch_size", self.batch_size, allow_zero=False)
        _positive("data.limit", self.limit, allow_zero=False)
        _choice("data.on_bad_image", self.on_bad_image, ("skip", "error"))


@dataclass
class LossConfig:
    """Eq. 6-8 weights (None = by condition kind, :data:`KIND_DEFAULTS`) and the finetuning GAN loss."""

    alpha_small: float | None = None
    """Eq. 6 alpha_l for a teacher feature with fewer than 128 channels."""
    alpha_large: float | None = None
    """Eq. 6 alpha_l for a teacher feature with 128 channels or more."""
    beta: float | None = None
    """Eq. 6 weight of the image terms ``||x1 - x1_s||_1`` and ``||y - y_s||_1``."""
    lambda_adv: float | None = None
    """Eq. 8 adversarial weight (also scales the finetuning generator's adversarial loss)."""
    lambda_kdl: float | None = None
    """Eq. 8 weight of L_kdl (Eq. 6)."""
    lambda_srl: float | None = None
    """Eq. 8 weight of the semantic diversity loss L_srl (Eq. 7); 0 = the "w/o diversity loss" ablation."""
    r1_gamma: float = 0.1
    """R1 penalty ``gamma / 2 ||grad D_S(x)||^2`` on real images (not in Eq. 4; stabilises small data)."""
    mismatch: bool = True
    """Finetuning D_S is matching-aware (Reed et al. 2016; SSA-GAN, DF-GAN): real images with the batch's
    conditions shifted by one row count as fake, ``real + (fake + mismatch) / 2``."""
    augment: str = ""
    """DiffAugment ops for every image D_S sees when finetuning (``color,translation,cutout``; empty = none)."""

    def __post_init__(self) -> None:
        for name in ("alpha_small", "alpha_large", "beta", "lambda_adv", "lambda_kdl", "lambda_srl", "r1_gamma"):
            if getattr(self, name) is not None:
                _positive(f"loss.{name}", getattr(self, name))
        try:
            check_policy(self.augment)
        except ValueError as exc:
            raise ConfigError(f"loss.augment={self.augment!r}: {exc}") from None


@dataclass
class OptimConfig:
    """Adam (A.1 / A.3: lr 1e-4 generator, 4e-4 discriminator, betas (0, 0.9))."""

    lr: float = 1e-4
    """Generator, condition encoder, semantic encoder and hint adaptors."""
    d_lr: float = 4e-4
    """Student discriminator D_S."""
    beta1: float = 0.0
    beta2: float = 0.9

    def __post_init__(self) -> None:
        _positive("optim.lr", self.lr, allow_zero=False)
        _positive("optim.d_lr", self.d_lr, allow_zero=False)
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"optim.{name}={getattr(self, name)!r} must be in [0, 1)")


@dataclass
class X2IConfig:
    """``kdpipe train x2i``: distil (``--teacher``) or finetune (``--data``, optionally ``--init``)."""

    init: str = ""
    """Finetuning: a distilled x2i run (directory or ``ckpt-*.pt``); empty = from scratch (the baseline)."""
    teacher: TeacherConfig = section_field(TeacherConfig)
    condition: ConditionConfig = section_field(ConditionConfig)
    kd: KDDataConfig = section_field(KDDataConfig)
    data: DataConfig = section_field(DataConfig)
    model: ModelConfig = section_field(ModelConfig)
    loss: LossConfig = section_field(LossConfig)
    optim: OptimConfig = section_field(OptimConfig)
    loop: LoopConfig = section_field(LoopConfig)

    def __post_init__(self) -> None:
        for name, value in KIND_DEFAULTS[self.condition.kind].items():
            if getattr(self.loss, name) is None:
                setattr(self.loss, name, value)

    @property
    def stage(self) -> str:
        """``finetune`` when ``data.path`` is set, else ``distill``."""
        return "finetune" if self.data.path else "distill"


DEFAULTS: dict[str, Any] = {"loop": {"steps": 20000}}
