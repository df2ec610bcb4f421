"""Where metric network weights come from: an explicit path, else torch hub's checkpoint cache; never the network.

These machines are offline (DESIGN.md), so a missing file is a one-line :class:`MissingWeightsError` naming the
file, its official download address and the place to put it -- not a download attempt.
"""

from __future__ import annotations

from pathlib import Path

from kdpipe.errors import ConfigError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
"""torch-fidelity's Inception-v3 (the TF 2015-12-05 graph converted to PyTorch): the FID/KID/PR feature network."""
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"

LPIPS_BACKBONES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}
"""torchvision ImageNet state_dict file per LPIPS backbone (``lpips.LPIPS(net=...)`` names)."""


class MissingWeightsError(ConfigError):
    """A metric's network weights file is absent; the message names the file, its URL and where to put it."""


def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``), where torch-fidelity and torchvision look."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(path: str | Path | None, filename: str, url: str, option: str) -> Path:
    """``path`` if given (must exist), else ``hub_checkpoint_dir() / filename`` if present.

    Raises:
        MissingWeightsError: neither exists; names ``filename``, ``url``, the cache path and ``option``.
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MissingWeightsError(f"weights file {str(p)!r} does not exist; download {url} to it "
                                      f"(or into {hub_checkpoint_dir()}/ and drop {option})")
        return p
    p = hub_checkpoint_dir() / filename
    if not p.is_file():
        raise MissingWeightsError(f"{filename} not found: download {url} and put it at {p} "
                                  f"(or pass its path with {option}); this machine does not download weights")
    return p
