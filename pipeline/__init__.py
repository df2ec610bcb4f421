"""Data generation: the StyleGAN2 teacher, checkpoint loaders, stages and shard writers."""
