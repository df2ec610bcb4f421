"""Conditional (X2I) student distilled from a StyleGAN2 teacher (seed 000, Wang et al. ICLR 2022, Section 3.3).

Stage one (``train_kd``): data-free distillation with style-mixed triplets (online or shards, the StarGANv2
student's code path), pseudo-conditions from the semantic encoder SE (the teacher's D), Eq. 6 (KD), Eq. 7 (semantic
diversity), Eq. 8 (total). Stage two (``train_ft``): finetuning ``G_S(z, c)`` on a small paired dataset; without an
init: the from-scratch baseline.

Modules: ``config`` (one config for both stages; lambda defaults by condition kind), ``networks`` (G_S with
condition-adaptive / SPADE normalisation, condition encoders, SE, D_S), ``losses`` (Eq. 4, 6-8), ``data`` (paired
finetuning data: class folders or shards with ``cls`` / ``cond.npy`` / ``seg.png``), ``train_kd``, ``train_ft``,
``run`` (``setup`` for the registry, the ``generator`` hook), ``sample`` (conditions -> images for ``translate``).
"""
