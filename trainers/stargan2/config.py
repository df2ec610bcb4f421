"""Config dataclasses of the two StarGANv2 stages.

Sections are checked in ``__post_init__`` and built by :func:`kdpipe.trainers.core.config.load_config` (defaults <
stage defaults < YAML file < dotted CLI overrides). Defaults are the papers': seed 000 Eq. 1-5 and appendix A.4
for the KD stage, StarGANv2 (clovaai/stargan-v2 ``main.py`` defaults, i.e. its CelebA-HQ setting) for finetuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdpipe.errors import ConfigError
from kdpipe.trainers.core.config import LoopConfig, section_field


def _choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def _positive(name: str, value: float, allow_zero: bool = True) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass
class ModelConfig:
    """StarGANv2 sizes (see :func:`kdpipe.trainers.stargan2.networks.build_nets`)."""

    img_size: int = 256
    """Student resolution R in pixels (power of two); must not exceed the teacher's resolution."""
    style_dim: int = 64
    """Style code size (StarGANv2: 64)."""
    latent_dim: int | None = None
    """Mapping-network input size. None: the teacher's z_dim in KD (the student maps the teacher's z2), 16 when
    finetuning from scratch (StarGANv2), the init checkpoint's value when finetuning from KD."""
    max_conv_dim: int = 512
    """Channel cap."""
    dim_in: int | None = None
    """Channels after the first conv; None: ``2**14 // img_size`` (64 at 256 px)."""
    num_down: int | None = None
    """Generator downsampling blocks; None: ``log2(img_size) - 4`` (16x16 bottleneck)."""
    hidden_dim: int = 512
    """Mapping-network width."""

    def __post_init__(self) -> None:
        for name in ("img_size", "style_dim", "max_conv_dim", "hidden_dim"):
            _positive(f"model.{name}", getattr(self, name), allow_zero=False)
        for name in ("latent_dim", "dim_in"):
            if getattr(self, name) is not None:
                _positive(f"model.{name}", getattr(self, name), allow_zero=False)


@dataclass
class OptimConfig:
    """Adam for every network (StarGANv2: lr 1e-4, mapping 1e-6, betas (0, 0.99), weight decay 1e-4)."""

    lr: float = 1e-4
    """Generator, style encoder, discriminator (and hint adaptors) learning rate."""
    f_lr: float = 1e-6
    """Mapping-network learning rate."""
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        _positive("optim.lr", self.lr, allow_zero=False)
        _positive("optim.f_lr", self.f_lr)
        _positive("optim.weight_decay", self.weight_decay)
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"optim.{name}={getattr(self, name)!r} must be in [0, 1)")


# ---------------------------------------------------------------------------------------------------- KD stage

@dataclass
class TeacherConfig:
    """The StyleGAN2 teacher and how its style-mixed triplets are made (seed 000 Sec. 3.1)."""

    spec: str = ""
    """``builtin:random-64`` or a checkpoint path (the same loaders as ``kdpipe generate``)."""
    truncation_psi: float = 0.7
    """Truncation of z -> w (``w_avg + psi (w - w_avg)``, all layers). Seed 000 states none; 0.7 is the default of
    ``kdpipe generate`` (seed 002's released code), so online triplets equal the style-mix shards' under defaults.
    Shards rendered with another psi are refused."""
    mix: str = "crossover:4"
    """Layers of y taken from w2: ``crossover:K`` (w1 on layers [0, K); seed 000 footnote 1: K = 4) or a group."""

    def __post_init__(self) -> None:
        _positive("teacher.truncation_psi", self.truncation_psi)


@dataclass
class KDDataConfig:
    """Where the triplets come from."""

    source: str = "online"
    """``online`` (generated per minibatch from the teacher, the paper's practice) or ``shards``."""
    path: str = ""
    """``shards`` only: OUT/style-mix (or a shard dir / glob); samples need ``latents.npy`` [3, num_ws, w_dim]."""
    batch_size: int = 2
    """Triplets per step and process (seed 000 A.4: 2)."""
    base_seed: int = 0
    """``online``: triplet i uses teacher seeds ``base_seed + 2i`` and ``+ 2i + 1`` (the pipeline's convention)."""
    num_workers: int = 0
    """``shards``: DataLoader workers (does not change the order)."""
    shuffle_buffer: int = 256
    """``shards``: seeded shuffle buffer size."""

    def __post_init__(self) -> None:
        _choice("data.source", self.source, ("online", "shards"))
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size={self.batch_size} must be >= 1")
        if self.base_seed < 0:
            raise ConfigError(f"data.base_seed={self.base_seed} must be >= 0")


@dataclass
class KDLossConfig:
    """Seed 000 Eq. 1-5 weights and the ablation switches of Fig. 3(b)."""

    gamma: float = 0.1
    """Eq. 1 weight of each content-encoder feature term."""
    tau: float = 0.1
    """Eq. 2 weight of each reference-encoder feature term."""
    alpha: float = 0.1
    """Eq. 3 weight of each generator feature term."""
    beta: float = 0.1
    """Eq. 3 weight of the image L1 ``||y_t - y_s||_1``."""
    lambda_adv: float = 1.0
    """Eq. 5; 0 = "KD (w-L1, w/o-adv.)"."""
    lambda_kdl: float = 1.0
    """Eq. 5; 0 = "KD (w/o-L1, w-adv.)"."""
    lambda_r1: float = 0.0
    """R1 penalty on D_S (not in Eq. 4; StarGANv2 uses 1)."""
    triplets: str = "style-mix"
    """``style-mix`` (x1, x2, y) or ``identity`` (x1, x1, x1): the "KD*" ablation of Fig. 3(b)."""
    mode: str = "both"
    """``both`` (default: the sum of the two Eq. 3 / Eq. 4 terms per step, so the style encoder *and* the mapping
    network are learnt; A.4: the one mapping network learnt here is duplicated per class at finetuning),
    ``reference`` (style from E_R(x2) only; the mapping network stays at its init) or ``latent`` (style from the
    mapping network of the teacher's z2 only). From shards z2 is rebuilt from the json seeds."""
    adaptor_side: str = "student"
    """Which side the 1x1 hint adaptors map (see ``losses_kd``): ``student`` (FitNets) or ``teacher``."""

    def __post_init__(self) -> None:
        for name in ("gamma", "tau", "alpha", "beta", "lambda_adv", "lambda_kdl", "lambda_r1"):
            _positive(f"loss.{name}", getattr(self, name))
        _choice("loss.triplets", self.triplets, ("style-mix", "identity"))
        _choice("loss.mode", self.mode, ("reference", "latent", "both"))
        _choice("loss.adaptor_side", self.adaptor_side, ("student", "teacher"))


@dataclass
class KDConfig:
    """``kdpipe train stargan2-kd``: stage one of seed 000."""

    teacher: TeacherConfig = section_field(TeacherConfig)
    data: KDDataConfig = section_field(KDDataConfig)
    model: ModelConfig = section_field(ModelConfig)
    loss: KDLossConfig = section_field(KDLossConfig)
    optim: OptimConfig = section_field(OptimConfig)
    loop: LoopConfig = section_field(LoopConfig)


KD_DEFAULTS = {"loop": {"steps": 20000}}  # seed 000 A.4: 20,000 KD iterations

# Fig. 3(b) variants as config overrides ("no-kd" is `kdpipe train stargan2` without --init).
ABLATIONS = {
    "kd": {},
    "kd-l1": {"loss.lambda_adv": 0.0},
    "kd-adv": {"loss.lambda_kdl": 0.0},
    "kd-star": {"loss.triplets": "identity"},
}


# ----------------------------------------------------------------------------------------------- finetuning

@dataclass
class FTDataConfig:
    """The target dataset: one sub-folder per domain (class) of image files."""

    path: str = ""
    """Root folder; each sub-folder is a domain (sorted names give labels 0..K-1). At least two domains."""
    batch_size: int = 8
    """Source images (and reference pairs) per step and process (StarGANv2: 8)."""
    augment: bool = True
    """StarGANv2 augmentation: random resized crop (p 0.5, scale 0.8-1, ratio 0.9-1.1) and horizontal flip."""
    on_bad_image: str = "skip"
    """An undecodable file: ``skip`` (counted, named in a warning and in ``data.json``) or ``error``."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size={self.batch_size} must be >= 1")
        _choice("data.on_bad_image", self.on_bad_image, ("skip", "error"))


@dataclass
class FTLossConfig:
    """StarGANv2 loss weights and the diversity-weight decay (clovaai/stargan-v2 README: lambda_ds 1 for
    CelebA-HQ, 2 for AFHQ; the other weights are 1 for both)."""

    lambda_reg: float = 1.0
    """R1 weight on real images."""
    lambda_sty: float = 1.0
    """Style reconstruction weight."""
    lambda_ds: float = 1.0
    """Diversity-sensitive weight: 1 = upstream's CelebA-HQ setting; use 2 for AFHQ-like data (upstream)."""
    lambda_cyc: float = 1.0
    """Cycle-consistency weight."""
    ds_iter: int = 100000
    """lambda_ds decays linearly to 0 over this many steps."""

    def __post_init__(self) -> None:
        for name in ("lambda_reg", "lambda_sty", "lambda_ds", "lambda_cyc"):
            _positive(f"loss.{name}", getattr(self, name))
        if self.ds_iter < 1:
            raise ConfigError(f"loss.ds_iter={self.ds_iter} must be >= 1")


@dataclass
class FTConfig:
    """``kdpipe train stargan2``: stage two (finetune a KD student, or train from scratch = the "No KD" baseline)."""

    init: str = ""
    """KD checkpoint (``ckpt-*.pt`` or its run directory); empty = train from scratch."""
    data: FTDataConfig = section_field(FTDataConfig)
    model: ModelConfig = section_field(ModelConfig)
    loss: FTLossConfig = section_field(FTLossConfig)
    optim: OptimConfig = section_field(OptimConfig)
    loop: LoopConfig = section_field(LoopConfig)


FT_DEFAULTS = {"loop": {"steps": 100000, "ema_decay": 0.999}}  # StarGANv2 total_iters, EMA beta
