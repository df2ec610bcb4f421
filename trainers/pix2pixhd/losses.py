"""pix2pixHD losses (Wang et al. 2018, Eq. 4 and Sec. 3.2), as in NVIDIA/pix2pixHD ``models/networks.py``.

- ``gan_loss``: LSGAN (Mao et al. 2017) — mean squared error of each scale's patch logits to 1 (real)
  or 0 (fake), summed over discriminator scales (upstream ``GANLoss(use_lsgan=True)``).
- ``feature_matching_loss``: Eq. 4, L_FM = sum_k sum_i 1/N_i ||D_k^(i)(s, x) - D_k^(i)(s, G(s))||_1, with
  upstream's weights ``4 / (n_layers_D + 1)`` per layer and ``1 / num_D`` per scale, times lambda_feat (10).
- ``VGGLoss``: perceptual loss on torchvision VGG19 ``features`` relu1_1..relu5_1 with weights
  1/32, 1/16, 1/8, 1/4, 1 (upstream ``VGGLoss``; like upstream, images in [-1, 1] are fed without
  ImageNet normalisation). Weights come only from a local file; nothing is ever downloaded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdpipe.errors import CheckpointError

VGG19_ENV = "KDPIPE_VGG19"
VGG_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

DPreds = list[list[torch.Tensor]]


def gan_loss(preds: DPreds, target_is_real: bool) -> torch.Tensor:
    """LSGAN loss: sum over scales of mean((logits - t)^2), t = 1 if ``target_is_real`` else 0.

    Args:
        preds: MultiscaleDiscriminator output; the last tensor of each scale is the logits [N, 1, h, w].
    Returns: scalar float32 tensor.
    """
    loss = torch.zeros((), device=preds[0][-1].device)
    for scale in preds:
        logits = scale[-1].float()
        loss = loss + F.mse_loss(logits, torch.full_like(logits, 1.0 if target_is_real else 0.0))
    return loss


def feature_matching_loss(pred_fake: DPreds, pred_real: DPreds, n_layers_D: int, lambda_feat: float = 10.0
                          ) -> torch.Tensor:
    """Discriminator feature-matching loss (Eq. 4), upstream weighting; ``pred_real`` is detached here.

    Args:
        pred_fake / pred_real: MultiscaleDiscriminator outputs for (s, G(s)) and (s, x); all features but
            the logits are matched with mean L1.
    Returns: scalar float32 tensor (already multiplied by ``lambda_feat``).
    """
    feat_w, d_w = 4.0 / (n_layers_D + 1), 1.0 / len(pred_fake)
    loss = torch.zeros((), device=pred_fake[0][-1].device)
    for fake_scale, real_scale in zip(pred_fake, pred_real):
        for f, r in zip(fake_scale[:-1], real_scale[:-1]):
            loss = loss + d_w * feat_w * F.l1_loss(f.float(), r.detach().float()) * lambda_feat
    return loss


def resolve_vgg_weights(path: str | os.PathLike | None) -> Path | None:
    """The VGG19 weights file to use: ``path``, else ``$KDPIPE_VGG19``, else None."""
    chosen = path or os.environ.get(VGG19_ENV)
    return Path(chosen) if chosen else None


class VGG19Features(nn.Module):
    """torchvision VGG19 ``features[:30]`` split at relu1_1..relu5_1, frozen.

    forward: x [N, 3, H, W] -> list of 5 feature maps.
    """

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__()
        import torchvision

        # torchvision's vgg19().features layout (cfg "E"), built without the 100M-parameter classifier; no download
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"], batch_norm=False)
        state = _load_vgg_state(Path(weights_path))
        try:
            features.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"VGG19 weights {str(weights_path)!r} do not fit torchvision's vgg19 features "
                                  f"({str(exc).splitlines()[0]}); pass the vgg19-dcbb9e9d.pth state_dict") from None
        self.slices = nn.ModuleList(nn.Sequential(*[features[i] for i in range(a, b)]) for a, b in VGG_SLICES)
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out


def _load_vgg_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"VGG19 weights {str(path)!r} do not exist; put torchvision's vgg19-dcbb9e9d.pth "
                              f"there, or unset --vgg-weights / ${VGG19_ENV} to train without the VGG loss")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"VGG19 weights {str(path)!r} are unreadable ({type(exc).__name__}); "
                              "pass torchvision's vgg19-dcbb9e9d.pth") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"VGG19 weights {str(path)!r} are not a state_dict")
    if any(k.startswith("features.") for k in state):  # full vgg19 state_dict -> its features part
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return state


class VGGLoss(nn.Module):
    """Perceptual loss sum_i w_i * mean|VGG_i(x) - VGG_i(y)| (upstream weights 1/32..1); y is detached.

    forward: x, y [N, 3, H, W] in [-1, 1] -> scalar float32 (not yet multiplied by lambda).
    """

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__()
        self.vgg = VGG19Features(weights_path)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.vgg(x), self.vgg(y)
        loss = torch.zeros((), device=x.device)
        for w, a, b in zip(VGG_WEIGHTS, fx, fy):
            loss = loss + w * F.l1_loss(a.float(), b.detach().float())
        return loss


def build_vgg_loss(path: str | os.PathLike | None, enabled: bool = True) -> VGGLoss | None:
    """VGGLoss from ``path`` (or ``$KDPIPE_VGG19``); None with a warning when no file is configured.

    Raises:
        CheckpointError: a path is configured but missing or not VGG19 weights.
    """
    if not enabled:
        return None
    resolved = resolve_vgg_weights(path)
    if resolved is None:
        warnings.warn(f"VGG19 perceptual loss is OFF: no weights given. Put torchvision's vgg19-dcbb9e9d.pth "
                      f"somewhere and pass --vgg-weights PATH (or set ${VGG19_ENV}) to train as published.",
                      stacklevel=2)
        return None
    return VGGLoss(resolved)
