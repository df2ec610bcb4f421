"""pix2pixHD student (Wang et al. 2018) trained on kdpipe pair / triplet shards: networks, losses, trainer."""

from .networks import (GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator, NLayerDiscriminator,
                       build_discriminator, build_generator)
from .train import Pix2PixHDModelConfig, Pix2PixHDTrainConfig, Pix2PixHDTrainer, load_generator, run, setup

__all__ = ["GlobalGenerator", "LocalEnhancer", "MultiscaleDiscriminator", "NLayerDiscriminator", "build_generator",
           "build_discriminator", "Pix2PixHDModelConfig", "Pix2PixHDTrainConfig", "Pix2PixHDTrainer",
           "load_generator", "run", "setup"]
