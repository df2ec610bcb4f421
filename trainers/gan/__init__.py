"""GAN losses, regularisers and augmentation shared by the StyleGAN2 trainer and later GAN students."""
