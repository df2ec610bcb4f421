"""Data-free KD losses of seed 000 (Wang et al. ICLR 2022, Sec. 3.2, Eq. 1-5) and the 1x1 hint adaptors.

Features are dicts ``{spatial size r: tensor [N, C_r, r, r]}``; student and teacher terms are paired by spatial
size (appendix A.4: "we extract the corresponding dimension hierarchical representations from the pretrained
generator and discriminator"), over the sizes both sides have. ``||a - b||_1`` is the mean absolute difference
over all elements (``F.l1_loss``), as in the StarGANv2 and seed 000 code bases; weights multiply each term.

Where channel counts differ a 1x1 conv "hint" adaptor (Romero et al. 2015, FitNets) maps one side onto the
other's channels. Default ``side='student'``: the adaptor maps the *student* feature to the teacher's channels,
as FitNets' regressor does; the teacher target stays fixed, so the term cannot be lowered by shrinking both sides.
``side='teacher'`` maps the teacher feature to the student's channels (seed 000's wording); the teacher feature is
detached *before* the adaptor, so the adaptor learns (its weights are in the generator's optimiser) while no
gradient reaches the teacher. Adaptor and student can then shrink the pair together towards zero, so prefer it only
to reproduce that text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdpipe.trainers.stargan2.losses_ft import adv_loss

ADAPTOR_SIDES = ("student", "teacher")


def disc_features_by_size(features: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Re-key the teacher discriminator's ``{block input resolution r: output [N, C, r/2, r/2]}`` by output size.

    ``kdpipe.pipeline.teacher.discriminator.Discriminator.forward(img, return_features=True)`` keys block ``b{r}`` by r; the
    ResBlock features of Eq. 1-2 are the block outputs, whose spatial size is ``r/2``.
    """
    return {int(f.shape[-1]): f for f in features.values()}


def channels_of(features: dict[int, torch.Tensor]) -> dict[int, int]:
    """``{spatial size: channel count}`` of a feature dict."""
    return {r: int(f.shape[1]) for r, f in features.items()}


class HintAdaptors(nn.Module):
    """Per-size 1x1 convs (with bias) between student and teacher features whose channel counts differ.

    Args:
        student_channels / teacher_channels: ``{spatial size: channels}`` (see :func:`channels_of`).
        side: ``'student'`` (map student -> teacher channels; default) or ``'teacher'`` (teacher -> student).
        sizes: restrict to these spatial sizes (default: every size both sides have).
    Attributes:
        sizes: sorted spatial sizes that are compared; equal-channel sizes get no adaptor (identity).
    """

    def __init__(self, student_channels: dict[int, int], teacher_channels: dict[int, int], side: str = "student",
                 sizes=None):
        super().__init__()
        if side not in ADAPTOR_SIDES:
            raise ValueError(f"adaptor side {side!r} is not one of {ADAPTOR_SIDES}")
        common = sorted(set(student_channels) & set(teacher_channels))
        self.sizes = [r for r in common if sizes is None or r in set(sizes)]
        self.side = side
        self.convs = nn.ModuleDict()
        for r in self.sizes:
            cs, ct = student_channels[r], teacher_channels[r]
            if cs != ct:
                self.convs[str(r)] = nn.Conv2d(cs, ct, 1) if side == "student" else nn.Conv2d(ct, cs, 1)

    def pairs(self, student: dict[int, torch.Tensor], teacher: dict[int, torch.Tensor]):
        """``[(r, student_r', teacher_r')]`` with the adaptor applied on its side; shapes equal per pair."""
        out = []
        for r in self.sizes:
            s, t = student[r], teacher[r].detach()  # the teacher is frozen; a teacher-side adaptor still learns
            conv = self.convs[str(r)] if str(r) in self.convs else None
            if conv is not None:
                if self.side == "student":
                    s = conv(s)
                else:
                    t = conv(t)
            if s.shape != t.shape:
                raise ValueError(f"KD features at {r}x{r} differ in shape: student {list(s.shape)}, "
                                 f"teacher {list(t.shape)}")
            out.append((r, s, t))
        return out


def feature_kd_loss(student: dict[int, torch.Tensor], teacher: dict[int, torch.Tensor], adaptors: HintAdaptors,
                    weight: float = 0.1) -> tuple[torch.Tensor, dict[int, float]]:
    """``sum_l weight * ||T_l - S_l||_1`` over the sizes of ``adaptors`` (seed 000 Eq. 1, 2 and the sum of Eq. 3).

    Args:
        student: ``{r: [N, C_s, r, r]}`` student features (with grad).
        teacher: ``{r: [N, C_t, r, r]}`` teacher features (detached here, before a teacher-side adaptor).
        adaptors: pairs sizes and maps channels (:class:`HintAdaptors`).
        weight: gamma_l / tau_l / alpha_l, the same for every l (0.1 in seed 000).
    Returns:
        ``(scalar loss, {r: unweighted L1 term})``. No common size -> ValueError (nothing to distil).
    """
    pairs = adaptors.pairs(student, teacher)
    if not pairs:
        raise ValueError(f"no common feature sizes between student {sorted(student)} and teacher {sorted(teacher)}")
    terms = {r: F.l1_loss(s, t) for r, s, t in pairs}
    return weight * sum(terms.values()), {r: v.item() for r, v in terms.items()}


def encoder_kd_loss(student, teacher, adaptors, gamma: float = 0.1):
    """Eq. 1 ``L_ekdl = sum_l gamma_l ||D_T(x1)_l - E_S(x1)_l||_1`` (content encoder vs teacher discriminator)."""
    return feature_kd_loss(student, teacher, adaptors, gamma)


def reference_kd_loss(student, teacher, adaptors, tau: float = 0.1):
    """Eq. 2 ``L_rkdl = sum_l tau_l ||D_T(x2)_l - E_R(x2)_l||_1`` (reference encoder vs teacher discriminator)."""
    return feature_kd_loss(student, teacher, adaptors, tau)


def generator_kd_loss(student, teacher, adaptors, y_s: torch.Tensor, y_t: torch.Tensor, alpha: float = 0.1,
                      beta: float = 0.1) -> tuple[torch.Tensor, dict]:
    """Eq. 3 ``L_gkdl = sum_l alpha_l ||G'_T(Phi(s1, s2))_l - G_S(E_S(x1), E_R(x2))_l||_1 + beta ||y_t - y_s||_1``.

    y_s: student output ``[N, 3, R, R]``; y_t: teacher's style-mixed image at the student's resolution R.
    Returns ``(loss, {"features": {r: term}, "image": unweighted image L1})``.
    """
    feat_loss, terms = feature_kd_loss(student, teacher, adaptors, alpha)
    image = F.l1_loss(y_s, y_t.detach())
    return feat_loss + beta * image, {"features": terms, "image": image.item()}


def kd_adversarial_g_loss(d_fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of Eq. 4 (non-saturating form, as StarGANv2): ``BCE(D_S(y_s), 1)``."""
    return adv_loss(d_fake_logits, 1)


def kd_adversarial_d_loss(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator side of Eq. 4: ``BCE(D_S(y_t), 1) + BCE(D_S(y_s), 0)``; real = the teacher's mixed image y_t."""
    return adv_loss(d_real_logits, 1) + adv_loss(d_fake_logits, 0)


def kd_total(lambda_adv: float, lambda_kdl: float, adv: torch.Tensor, ekdl: torch.Tensor, rkdl: torch.Tensor,
             gkdl: torch.Tensor) -> torch.Tensor:
    """Eq. 5 (student side): ``lambda_adv L_adv + lambda_kdl (L_ekdl + L_rkdl + L_gkdl)`` (seed 000: both 1)."""
    return lambda_adv * adv + lambda_kdl * (ekdl + rkdl + gkdl)
