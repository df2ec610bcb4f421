"""Evaluation metrics: FID/KID/precision-recall (torch-fidelity), LPIPS, attribute transfer, identity."""
