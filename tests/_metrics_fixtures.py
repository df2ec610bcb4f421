"""Random-weight metric networks saved exactly where and how the official files are, for offline tests.

* :func:`random_inception` -- torch-fidelity's ``FeatureExtractorInceptionV3`` with random weights, saved with
  ``torch.save(state_dict)`` under the official name ``weights-inception-2015-12-05-6726825d.pth`` (the layout
  torch-fidelity's ``torch.load(path)`` + ``load_state_dict`` reads).
* :func:`random_alexnet` -- a torchvision ``alexnet`` state_dict (the layout of ``alexnet-owt-7be5be79.pth``).
"""

from __future__ import annotations

from pathlib import Path

import torch


def random_inception(directory: Path, seed: int = 0) -> Path:
    """Save a random-weight Inception-v3 (torch-fidelity layout) in ``directory``; returns the file path."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    cls = fe.FeatureExtractorInceptionV3
    torch.manual_seed(seed)
    original_load, original_url = cls.load_state_dict, fe.load_state_dict_from_url
    cls.load_state_dict = lambda self, sd, *a, **k: None  # keep the random initialisation
    fe.load_state_dict_from_url = lambda *a, **k: {}
    try:
        net = cls("inception-v3-compat", ["2048"])
    finally:
        cls.load_state_dict, fe.load_state_dict_from_url = original_load, original_url
    for m in net.modules():  # He init: features of order 1 (PyTorch's default init shrinks them to ~1e-8 here)
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = Path(directory) / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


def random_alexnet(directory: Path, seed: int = 0) -> Path:
    """Save a random-weight torchvision AlexNet state_dict as ``alexnet-owt-7be5be79.pth`` in ``directory``."""
    import torchvision

    torch.manual_seed(seed)
    path = Path(directory) / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path
