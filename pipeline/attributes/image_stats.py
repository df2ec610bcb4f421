"""Image statistics as attributes (brightness, hue, saturation): classifiers for teachers that are not faces and
for fast tests. Registered in :mod:`kdpipe.pipeline.attributes.registry`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from kdpipe.pipeline.attributes.protocol import ClassifierError, ClassifierOutput, check_images

IMAGE_STAT_ATTRIBUTES = ("brightness", "hue", "saturation")
# Rec. ITU-R BT.601 luma weights for R, G, B.
REC601 = (0.299, 0.587, 0.114)


class ImageStatistics:
    """Image statistics as attributes: mean brightness, mean hue, mean saturation.

    Images [N, 3, H, W] in [-1, 1] are mapped to RGB in [0, 1] by ``(x + 1) / 2`` (clamped,
    no quantisation). Per image:

    - ``brightness``: mean Rec.601 luma ``0.299 R + 0.587 G + 0.114 B`` in [0, 1]
      (white 1, black 0, pure red 0.299). Confidence 1; always valid.
    - ``saturation``: mean HSV saturation ``(max - min) / max`` (0 where max = 0), in [0, 1]
      (grey 0, pure primaries 1). Confidence 1; always valid.
    - ``hue``: circular mean of the HSV hue (hexcone formula; red 0, yellow 1/6, green 1/3,
      blue 2/3), each pixel weighted by its chroma ``max - min``; in [0, 1). Confidence is the
      mean resultant length ``|sum c e^(2 pi i h)| / sum c`` in [0, 1] (1: one hue; 0.5: half
      red, half green). Grey images have no hue: value NaN, confidence 0, and valid is False.

    ``valid`` is the AND over the requested attributes (only ``hue`` can be False).
    """

    def __init__(self, attributes: Sequence[str] = IMAGE_STAT_ATTRIBUTES) -> None:
        attributes = tuple(attributes)
        unknown = [a for a in attributes if a not in IMAGE_STAT_ATTRIBUTES]
        if unknown or not attributes:
            raise ClassifierError(
                f"unknown image statistic(s) {unknown or attributes!r}; choose from {IMAGE_STAT_ATTRIBUTES}"
            )
        self.attributes = attributes

    def __call__(self, images: torch.Tensor) -> ClassifierOutput:
        rgb = ((check_images(images).detach().float() + 1) / 2).clamp(0, 1)  # [N, 3, H, W]
        n = rgb.shape[0]
        values: dict[str, np.ndarray] = {}
        confidences: dict[str, np.ndarray] = {}
        valid = np.ones(n, dtype=bool)
        ones = np.ones(n, dtype=np.float32)
        maxc, _ = rgb.max(dim=1)
        minc, _ = rgb.min(dim=1)
        chroma = maxc - minc  # [N, H, W]
        if "brightness" in self.attributes:
            r, g, b = rgb.unbind(dim=1)
            luma = REC601[0] * r + REC601[1] * g + REC601[2] * b
            values["brightness"] = luma.mean(dim=(1, 2)).float().cpu().numpy()
            confidences["brightness"] = ones.copy()
        if "saturation" in self.attributes:
            sat = torch.where(maxc > 0, chroma / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
            values["saturation"] = sat.mean(dim=(1, 2)).float().cpu().numpy()
            confidences["saturation"] = ones.copy()
        if "hue" in self.attributes:
            hue, conf, has_hue = _circular_mean_hue(rgb, maxc, chroma)
            values["hue"], confidences["hue"] = hue, conf
            valid &= has_hue
        return ClassifierOutput(values=values, confidences=confidences, valid=valid)


def _circular_mean_hue(
    rgb: torch.Tensor, maxc: torch.Tensor, chroma: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chroma-weighted circular mean of HSV hue; returns (hue [N], confidence [N], valid [N])."""
    r, g, b = rgb.unbind(dim=1)
    safe = chroma.clamp_min(1e-12)
    # HSV hexcone hue in sixths of a turn (Smith 1978), chosen by which channel is the max.
    h = torch.where(
        maxc == r,
        torch.remainder((g - b) / safe, 6.0),
        torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    angle = h * (2 * math.pi / 6.0)
    s = (chroma * torch.sin(angle)).sum(dim=(1, 2))
    c = (chroma * torch.cos(angle)).sum(dim=(1, 2))
    total = chroma.sum(dim=(1, 2))
    has_hue = (total / chroma[0].numel()) > 1e-6
    hue = torch.remainder(torch.atan2(s, c) / (2 * math.pi), 1.0)
    conf = torch.sqrt(s * s + c * c) / total.clamp_min(1e-12)
    hue = torch.where(has_hue, hue, torch.full_like(hue, float("nan")))
    conf = torch.where(has_hue, conf.clamp(0, 1), torch.zeros_like(conf))
    return hue.float().cpu().numpy(), conf.float().cpu().numpy(), has_hue.cpu().numpy()


