"""Every trainer kdpipe knows, by name: its config, how it is set up, how ``kdpipe translate`` loads its generator.

Adding a trainer = a config dataclass, networks, losses, a trainer class (:class:`kdpipe.trainers.core.loop.Trainer`),
a ``setup`` function (checks made before any process group exists; returns ``build(dist) -> (trainer, batches)``)
and one ``register(TrainerSpec(...))`` line below. ``kdpipe train NAME`` (options, ``--help``), resume and
torchrun/DDP come from here and from :mod:`kdpipe.trainers.core.run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from kdpipe.errors import ConfigError
from kdpipe.trainers.core.config import config_to_dict
from kdpipe.trainers.core.loop import DistInfo, FitResult, fit
from kdpipe.trainers.core.run import launch, setup_run
from kdpipe.trainers.pix2pixhd import train as pix2pixhd
from kdpipe.trainers.stargan2 import config as sg2_config
from kdpipe.trainers.stargan2 import train_ft, train_kd
from kdpipe.trainers.stargan2.translate import translate_stargan2
from kdpipe.trainers.stylegan2 import compress_train, fewshot
from kdpipe.trainers.stylegan2 import run as stylegan2
from kdpipe.trainers.stylegan2.compress_config import INIT_PRESETS, CompressConfig
from kdpipe.trainers.stylegan2.train import StyleGAN2TrainConfig
from kdpipe.trainers.stylegan2.translate import translate_stylegan2
from kdpipe.trainers.x2i import config as x2i_config
from kdpipe.trainers.x2i import run as x2i_run
from kdpipe.trainers.x2i.sample import translate_x2i

Setup = Callable[[Any, "dict | None", Mapping[str, Any]], Callable[[DistInfo], tuple[Any, Callable]]]


@dataclass(frozen=True)
class TrainerSpec:
    """One trainer as ``kdpipe train NAME`` sees it.

    Attributes:
        name: command and checkpoint name (``ckpt["trainer"]``).
        summary: one line for ``kdpipe train --help``.
        config: the top-level config dataclass (fields are section dataclasses, one of them ``loop``).
        setup: ``setup(cfg, checkpoint or None, overrides) -> build``; ``build(dist) -> (trainer, batches)``
            where ``batches(position)`` yields ``(batch, position_after)`` (see ``core.loop.fit``).
        defaults: nested values over the dataclass defaults (e.g. ``{"loop": {"steps": 20000}}``).
        may_change: dotted fields, beyond ``RESUME_MAY_CHANGE``, that a resume may change.
        options: extra CLI options of this trainer: option name -> dotted field (type and help from the field).
        presets: CLI options naming a bundle of overrides: option name -> {value: {dotted field: value}}.
        generator: ``generator(trainer_state, use_ema) -> nn.Module``: an image-to-image student ``y = G(x)``
            for ``kdpipe translate`` (:func:`kdpipe.trainers.translate.translate_images` does the rest).
        translate: ``translate(checkpoint_state, request) -> list[Path]`` for students whose output is not
            ``G(x)`` (style- or seed-driven; see :class:`kdpipe.trainers.translate.TranslateRequest`); it wins
            over ``generator``. Neither: ``kdpipe translate`` refuses the checkpoint.
    """

    name: str
    summary: str
    config: type
    setup: Setup
    defaults: Mapping[str, Any] = field(default_factory=dict)
    may_change: frozenset[str] = frozenset()
    options: Mapping[str, str] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    generator: Callable[[dict[str, Any], bool], torch.nn.Module] | None = None
    translate: Callable[[dict[str, Any], Any], list[Path]] | None = None


TRAINERS: dict[str, TrainerSpec] = {}


def register(spec: TrainerSpec) -> TrainerSpec:
    """Add ``spec`` to :data:`TRAINERS` (names are unique)."""
    if spec.name in TRAINERS:
        raise ValueError(f"trainer {spec.name!r} is registered twice")
    TRAINERS[spec.name] = spec
    return spec


register(TrainerSpec(
    "pix2pixhd", "pix2pixHD (Wang et al. 2018) on pair shards (src->tgt) or triplet shards (x1+x2 -> y).",
    pix2pixhd.Pix2PixHDTrainConfig, pix2pixhd.setup, may_change=frozenset({"model.vgg_weights"}),
    options={"direction": "data.direction", "vgg_weights": "model.vgg_weights"}, generator=pix2pixhd.load_generator))
register(TrainerSpec(
    "stargan2-kd", "Seed 000 stage one: distil a StyleGAN2 teacher into StarGANv2 with style-mixed triplets.",
    sg2_config.KDConfig, train_kd.setup, defaults=sg2_config.KD_DEFAULTS,
    options={"teacher": "teacher.spec", "source": "data.source", "mode": "loss.mode", "img_size": "model.img_size"},
    presets={"ablation": sg2_config.ABLATIONS}, translate=translate_stargan2))
register(TrainerSpec(
    "stargan2", "Seed 000 stage two: finetune StarGANv2 on a folder per domain (no --init: the 'No KD' baseline).",
    sg2_config.FTConfig, train_ft.setup, defaults=sg2_config.FT_DEFAULTS,
    options={"init": "init", "img_size": "model.img_size"}, translate=translate_stargan2))


def get(name: str) -> TrainerSpec:
    """The registered trainer ``name``. Raises ConfigError naming the known trainers."""
    if name not in TRAINERS:
        raise ConfigError(f"unknown trainer {name!r}; known trainers: {', '.join(TRAINERS)}")
    return TRAINERS[name]


def train(name: str, config_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
          resume: bool = False, resume_from: str | Path | None = None) -> FitResult:
    """Train (or resume) trainer ``name``: resolve the config, set up, then fit in one process or under torchrun.

    Args:
        config_path: YAML with the trainer's sections (optional).
        overrides: dotted keys, e.g. ``{"data.path": "out/gender", "loop.out_dir": "runs/g", "model.ngf": 32}``.
        resume: continue from the newest checkpoint in ``loop.out_dir``; ``resume_from``: from this file.
    Returns: :class:`FitResult` (final step, records logged by this invocation, checkpoints written).
    Raises: ConfigError, DatasetError, CheckpointError (one-line user errors).
    """
    spec = get(name)
    overrides = dict(overrides or {})
    cfg, state = setup_run(spec.config, spec.name, config_path, overrides, resume, resume_from, spec.defaults,
                           spec.may_change)
    build = spec.setup(cfg, state, overrides)

    def body(dist: DistInfo) -> FitResult:
        trainer, batches = build(dist)
        return fit(trainer, cfg.loop, batches, dist, config_to_dict(cfg), state)

    return launch(cfg, body)
register(TrainerSpec(
    "stylegan2", "StyleGAN2 (Karras et al. 2020) as stylegan2-ada-pytorch trains it; snapshots load as teachers.",
    StyleGAN2TrainConfig, stylegan2.setup,
    options={"init": "model.init", "resolution": "data.resolution", "augment": "model.augment",
             "r1_gamma": "model.r1_gamma", "pl_weight": "model.pl_weight"}, translate=translate_stylegan2))
register(TrainerSpec(
    "stylegan2-compress", "Seed 003: a narrower StyleGAN2 student (inherited mapping) distilled from a teacher.",
    CompressConfig, compress_train.setup,
    may_change=frozenset({"report.seeds", "report.fid_samples", "report.speed_batch", "report.speed_repeats"}),
    options={"teacher": "teacher.spec", "channel_multiplier": "model.channel_multiplier",
             "lpips_weights": "loss.lpips_weights"},
    presets={"init": INIT_PRESETS}, translate=translate_stylegan2))
register(TrainerSpec(
    "stylegan2-fewshot", "Seed 001: adapt a StyleGAN2 teacher to ~10 images (momentum relation + source discrimination "
    "distillation); --method cdc|finetune for the baselines.", fewshot.FewShotTrainConfig, fewshot.setup,
    may_change=frozenset({"loss.source_data"}),
    options={"teacher": "model.init", "method": "loss.method", "source_data": "loss.source_data",
             "alpha": "loss.alpha", "beta": "loss.beta", "queue_size": "loss.queue_size"},
    translate=translate_stylegan2))
register(TrainerSpec(
    "x2i", "Seed 000 Sec. 3.3: distil a StyleGAN2 teacher into a conditional G_S(z, c) (--teacher), finetune (--data).",
    x2i_config.X2IConfig, x2i_run.setup, defaults=x2i_config.DEFAULTS,
    options={"teacher": "teacher.spec", "condition": "condition.kind", "init": "init", "img_size": "model.img_size"},
    translate=translate_x2i))
