"""StarGANv2 student distilled from a StyleGAN2 teacher with style-mixed triplets, then finetuned (seed 000).

Stage one (``train_kd``): data-free distillation, Wang et al. ICLR 2022 ("Distilling GANs with Style-Mixed
Triplets for X2I Translation with Limited Data") Sec. 3.1-3.2, Eq. 1-5, appendix A.4.
Stage two (``train_ft``): finetuning on a folder-per-domain dataset with StarGANv2's own objective
(Choi et al., CVPR 2020, Sec. 3.2 / clovaai/stargan-v2 ``core/solver.py``).

Modules: ``networks`` (the five StarGANv2 networks), ``losses_kd`` (Eq. 1-5, hint adaptors), ``losses_ft``
(StarGANv2 losses), ``data`` (online / shard triplets, folder dataset), ``train_kd``, ``train_ft`` (each with the
``setup`` that ``kdpipe.trainers.registry`` lists).
"""
