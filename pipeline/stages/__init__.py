"""The stages of the built-in tasks (one job per module) and which stage implements each name in ``stages.yaml``."""
