"""Checkpoint formats: the restricted unpickler, NVlabs TF / ada / stylegan3 pickles, rosinality ``.pt``, and
writers of the three official layouts. Nothing here executes content from a file."""
