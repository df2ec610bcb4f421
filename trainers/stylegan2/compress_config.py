"""Configuration of ``kdpipe train stylegan2-compress`` (seed 003, "A Comprehensive Overhaul of Distilling
Unconditional GANs"): YAML sections ``teacher``, ``data``, ``model``, ``loss``, ``report``, ``loop``.

Defaults are the paper's where it gives them (Appendix A: lambda_GAN, lambda_rgb, lambda_lpips, lambda_LD = 1, 3, 3,
30; Adam lr 0.002; Eq. 9 stage batch 4096; alpha ~ N(0, 5)); the rest follow kdpipe's ``stylegan2``
trainer (R1 every 16 steps, G_ema half-life 10 kimg with ramp-up).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdpipe.config import check_choice, check_min
from kdpipe.errors import ConfigError
from kdpipe.trainers.core.config import LoopConfig

NAME = "stylegan2-compress"

STYLE_INITS = ("inherit", "random")
SYNTHESIS_INITS = ("random", "inherit", "pruned")

INIT_PRESETS = {
    "inherit-style": {"model.init_style": "inherit", "model.init_synthesis": "random"},
    "random": {"model.init_style": "random", "model.init_synthesis": "random"},
    "inherit": {"model.init_style": "inherit", "model.init_synthesis": "inherit"},
    "pruned-inherit": {"model.init_style": "inherit", "model.init_synthesis": "pruned"},
}
"""``--init NAME``: the initialisations of seed 003's Table 1 (style module S / convolution backbone C)."""


@dataclass
class CompressTeacherConfig:
    """The teacher G_t (and its D, which initialises the student's D when present)."""

    spec: str = "builtin:digits-32"
    """``builtin:NAME`` or a checkpoint path (NVlabs TF / stylegan2-ada-pytorch .pkl, rosinality .pt)."""


@dataclass
class CompressDataConfig:
    """The real images D sees (L_GAN of Eq. 4)."""

    path: str = ""
    """``digits``, an image folder or kdpipe shards (as ``kdpipe train stylegan2 --data``); "" = the teacher's
    own samples G_t(z) act as the real images (data-free distillation)."""
    batch_size: int = 8
    """Latents (and real images) per step (the paper's ablations: 8)."""
    xflip: bool = False
    """Mirror real images at random."""

    def __post_init__(self) -> None:
        check_min("data.batch_size", self.batch_size, 2)  # the Eq. 10 softmax runs over the batch


@dataclass
class CompressModelConfig:
    """The student G_s: the teacher's architecture with fewer channels, and how it is initialised (Table 1)."""

    channel_multiplier: float = 0.5
    """Every synthesis layer keeps this fraction of the teacher's channels (channel_base and channel_max scaled);
    MACs fall by about its square."""
    init_style: str = "inherit"
    """Style module S (mapping): ``inherit`` the teacher's weights (the paper's best) or ``random``."""
    init_synthesis: str = "random"
    """Convolution backbone C: ``random`` (the paper's best with inherited S), ``inherit`` (the teacher's first
    channels) or ``pruned`` (the channels with the largest filter L1 norms, Li et al. 2017)."""
    mapping_layers: int | None = None
    """Student mapping depth; None = the teacher's. A different depth cannot inherit S: init_style must be random
    and Eq. 9 trains S first."""
    freeze_mapping: bool = False
    """Keep the student's mapping fixed (sensible when it is inherited)."""
    style_mimic_steps: int | None = None
    """Steps of the first stage (Eq. 9: only S_s trained to mimic S_t); None = 1000 when the student's mapping
    architecture differs from the teacher's, else 0."""
    style_mimic_distance: str = "l1"
    """D(., .) of Eq. 9: ``l1`` (the paper's better choice, Table 2) or ``l2``."""
    style_mimic_lr: float = 0.5
    """Adam lr of the Eq. 9 stage. Appendix A: 0.05 for 50k steps; with the mapping's lr multiplier 0.01 (StyleGAN2's
    equalised lr) 0.05 closes 10% of the L1 gap to a 2-layer digits-32 mapping in 300 steps, 0.5 reaches a
    1-layer student's floor (~0.23) in ~750 steps."""
    style_mimic_batch: int = 4096
    """z per Eq. 9 step (Appendix A)."""
    lr: float = 0.002
    """Adam lr of G_s and D (Appendix A), betas (0, 0.99); D's corrected for lazy R1."""
    r1_gamma: float = 0.01
    """R1 weight (as ``kdpipe train stylegan2``); 0 turns it off."""
    r1_interval: int = 16
    """Lazy R1 every this many steps."""
    ema_kimg: float = 10.0
    """G_ema half-life in thousands of images."""
    ema_rampup: float | None = 0.05
    """G_ema half-life at most cur_nimg * ema_rampup; None = no ramp-up."""

    def __post_init__(self) -> None:
        if not 0 < self.channel_multiplier <= 1:
            raise ConfigError(f"model.channel_multiplier={self.channel_multiplier!r} must be in (0, 1]")
        check_choice("model.init_style", self.init_style, STYLE_INITS)
        check_choice("model.init_synthesis", self.init_synthesis, SYNTHESIS_INITS)
        check_choice("model.style_mimic_distance", self.style_mimic_distance, ("l1", "l2"))
        for name in ("style_mimic_batch", "r1_interval"):
            check_min(f"model.{name}", getattr(self, name), 1)
        if self.mapping_layers is not None:
            check_min("model.mapping_layers", self.mapping_layers, 1)
        if self.style_mimic_steps is not None:
            check_min("model.style_mimic_steps", self.style_mimic_steps, 0)


@dataclass
class CompressLossConfig:
    """Weights of Eq. 4 + L_LD (Appendix A) and the options of each term."""

    lambda_gan: float = 1.0
    """Non-saturating GAN loss weight."""
    lambda_rgb: float = 3.0
    """L1 ||G_s(z) - G_t(z)||_1 weight (Eq. 3)."""
    lambda_lpips: float = 3.0
    """LPIPS(G_s(z), G_t(z)) weight (Eq. 3); off, with a warning, when no backbone weights are found."""
    lambda_ld: float = 30.0
    """Latent-direction relation loss weight (Eq. 10)."""
    lpips_net: str = "alex"
    """LPIPS backbone: ``alex`` or ``vgg``."""
    lpips_weights: str | None = None
    """torchvision state_dict of the LPIPS backbone; None = torch hub's cache directory."""
    ld_directions: list = field(default_factory=list)
    """Pipeline ``directions/direction.json`` files forming the dictionary {d_j}; [] = the top principal
    directions of W, one entry per (direction, ws layer)."""
    ld_pca_components: int = 8
    """Principal directions of W per layer when no ld_directions are given."""
    ld_pca_samples: int = 4096
    """w samples (seeds 0..N-1 through the teacher's mapping) the principal directions are fitted on."""
    ld_alpha_std: float = 5 ** 0.5
    """alpha ~ N(0, ld_alpha_std^2) (the paper's N(0, 5), read as variance 5); PCA directions have the length of
    one standard deviation of W along them."""
    ld_resolutions: list = field(default_factory=list)
    """Synthesis blocks whose features f enter Eq. 10 (averaged); [] = every block."""
    ld_temperature: float = 1.0
    """A_ij = <f_i, f'_j> / temperature with f flattened and L2-normalised (cosine similarity)."""

    def __post_init__(self) -> None:
        check_choice("loss.lpips_net", self.lpips_net, ("alex", "vgg"))
        for name in ("lambda_gan", "lambda_rgb", "lambda_lpips", "lambda_ld", "ld_alpha_std"):
            check_min(f"loss.{name}", getattr(self, name), 0)
        check_min("loss.ld_pca_components", self.ld_pca_components, 1)
        check_min("loss.ld_pca_samples", self.ld_pca_samples, 2)
        if not self.ld_temperature > 0:
            raise ConfigError(f"loss.ld_temperature={self.ld_temperature!r} must be > 0")


@dataclass
class CompressReportConfig:
    """The speed / quality report written at the last step (``compress_report.json`` in the run directory)."""

    seeds: int = 64
    """L1 and LPIPS student-to-teacher on seeds 0..N-1 (also logged at every checkpoint)."""
    fid_samples: int = 1000
    """Images per generator for the digits-feature FID against the real digits (32 px teachers only); 0 = skip."""
    speed_batch: int = 16
    """Images per forward when timing img/s."""
    speed_repeats: int = 20
    """Timed forwards per generator (after 2 warm-up forwards)."""

    def __post_init__(self) -> None:
        check_min("report.seeds", self.seeds, 1)
        check_min("report.fid_samples", self.fid_samples, 0)
        check_min("report.speed_batch", self.speed_batch, 1)
        check_min("report.speed_repeats", self.speed_repeats, 1)


@dataclass
class CompressConfig:
    """Everything ``kdpipe train stylegan2-compress`` needs."""

    teacher: CompressTeacherConfig = field(default_factory=CompressTeacherConfig)
    data: CompressDataConfig = field(default_factory=CompressDataConfig)
    model: CompressModelConfig = field(default_factory=CompressModelConfig)
    loss: CompressLossConfig = field(default_factory=CompressLossConfig)
    report: CompressReportConfig = field(default_factory=CompressReportConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=2000, ckpt_every=500, sample_every=250))
