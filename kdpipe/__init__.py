"""kdpipe: distil a pretrained StyleGAN2 teacher into datasets and fast students.

Sub-packages: ``kdpipe.pipeline`` (teacher networks, loaders, data generation stages)
and ``kdpipe.trainers`` (students trained on kdpipe shards). ``kdpipe.cli`` is the
``kdpipe`` command.
"""

__version__ = "0.1.0"
