"""The teacher: StyleGAN2 networks and operators in pure PyTorch, and loading a user's checkpoint or a built-in."""
