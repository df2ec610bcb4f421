"""StyleGAN2 training (Karras et al. 2020) on kdpipe's own networks: ``kdpipe train stylegan2``."""
