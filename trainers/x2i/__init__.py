"""Conditional (X2I) student distilled from a StyleGAN2 teacher (seed 000, Section 3.3)."""
