"""Attributes of teacher images: the classifier protocol and registry, image statistics, faces (MTCNN,
age/gender), how classifier outputs become classes, and latent directions found from them."""
