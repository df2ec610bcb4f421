"""Config dataclasses of the two StarGANv2 stages, and run set-up (fresh start or exact resume).

Sections are checked in ``__post_init__`` and built by :func:`kdpipe.trainers.core.config.load_config` (defaults <
stage defaults < YAML file < dotted CLI overrides). Defaults are the papers': seed 000 Eq. 1-5 and appendix A.4
for the KD stage, StarGANv2 (clovaai/stargan-v2 ``main.py``, AFHQ setting) for finetuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from kdpipe.errors import ConfigError
from kdpipe.trainers.core.checkpoint import TrainCheckpointError, latest_checkpoint, load_checkpoint
from kdpipe.trainers.core.config import (RESUME_MAY_CHANGE, LoopConfig, config_diff, config_to_dict, flatten, load_config,
                                    save_config, section_field)


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
    truncation_psi: float = 1.0
    """Truncation of z -> w for online triplets (seed 000 uses none)."""
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
    mode: str = "reference"
    """``reference`` (style from E_R(x2)), ``latent`` (style from the mapping network of the teacher's z2; from
    shards z2 is rebuilt from the json seeds) or ``both`` (sum of the two Eq. 3 / Eq. 4 terms per step)."""
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
    """StarGANv2 loss weights (AFHQ) and the diversity-weight decay."""

    lambda_reg: float = 1.0
    lambda_sty: float = 1.0
    lambda_ds: float = 1.0
    lambda_cyc: float = 1.0
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


# ------------------------------------------------------------------------------------------------- run set-up

def setup_run(cls: type, trainer: str, defaults: Mapping[str, Any], config_path: str | Path | None,
              overrides: Mapping[str, Any], resume: bool = False,
              resume_from: str | Path | None = None) -> tuple[Any, dict | None]:
    """Resolve the config and, when resuming, load the checkpoint (same rules as the pix2pixHD trainer).

    Fresh run: defaults < stage ``defaults`` < YAML < overrides; ``loop.out_dir`` must hold no checkpoints.
    Resume (``resume``: newest checkpoint in ``loop.out_dir``; or ``resume_from``: that file): the checkpoint's
    config < YAML < overrides, and only the fields in ``RESUME_MAY_CHANGE`` may change.

    Returns:
        ``(config, checkpoint dict or None)``.
    Raises:
        ConfigError: no ``loop.out_dir``, a fresh run into a directory with checkpoints, or a changed field.
        TrainCheckpointError: nothing to resume, or a corrupt / foreign checkpoint.
    """
    cfg = load_config(cls, config_path, overrides, base=defaults)
    if not cfg.loop.out_dir:
        raise ConfigError("no run directory; pass --out RUN_DIR (checkpoints, samples and metrics go there)")
    state = None
    if resume or resume_from is not None:
        path = Path(resume_from) if resume_from is not None else latest_checkpoint(cfg.loop.out_dir)
        if path is None:
            raise TrainCheckpointError(f"--resume: no checkpoints in {cfg.loop.out_dir}/checkpoints; "
                                       "drop --resume to start a new run")
        state = load_checkpoint(path, trainer=trainer)
        saved = load_config(cls, None, None, base=state["config"])
        cfg = load_config(cls, config_path, overrides, base=state["config"])
        changed = config_diff(saved, cfg, RESUME_MAY_CHANGE)
        if changed:
            old, new = flatten(config_to_dict(saved))[changed[0]], flatten(config_to_dict(cfg))[changed[0]]
            raise ConfigError(f"cannot resume {str(path)!r}: {changed[0]} was {old!r} in that run, now {new!r}; "
                              "keep it or start a new run in another --out")
    elif latest_checkpoint(cfg.loop.out_dir) is not None:
        raise ConfigError(f"{cfg.loop.out_dir!r} already holds checkpoints ({latest_checkpoint(cfg.loop.out_dir)}); "
                          "pass --resume to continue that run, or another --out")
    return cfg, state


def write_config(cfg: Any) -> None:
    """Write the resolved config to ``<loop.out_dir>/config.yaml`` (creating the directory)."""
    Path(cfg.loop.out_dir).mkdir(parents=True, exist_ok=True)
    save_config(cfg, Path(cfg.loop.out_dir) / "config.yaml")


def config_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (what checkpoints store)."""
    return config_to_dict(cfg)
