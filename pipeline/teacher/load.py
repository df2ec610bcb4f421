"""Getting a teacher: a user's checkpoint (three official formats) or a built-in one.

``load_teacher('builtin:random-64')`` builds a deterministic, *untrained* StyleGAN2 for tests and smoke
runs; ``builtin:digits-32`` is a *trained* demo teacher shipped as package data (see
``data_cards/digits-32.md``); anything else is a path loaded by :mod:`kdpipe.pipeline.teacher.formats.checkpoints` (never executes file content).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kdpipe.errors import CheckpointError
from kdpipe.pipeline.teacher.discriminator import Discriminator
from kdpipe.pipeline.teacher.networks import Generator

BUILTIN_PREFIX = "builtin:"

# name -> (resolution, z_dim = w_dim, channel_base, channel_max, mapping layers)
BUILTINS = {
    "random-16": (16, 32, 512, 32, 2),
    "random-32": (32, 32, 1024, 32, 2),
    "random-64": (64, 32, 1024, 32, 2),
    "random-128": (128, 64, 4096, 64, 4),
    "random-256": (256, 128, 16384, 128, 8),
}

# name -> safetensors file in kdpipe/pipeline/teacher/weights/ (written by kdpipe train stylegan2)
TRAINED_BUILTINS = {"digits-32": "digits-32.safetensors"}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass
class Teacher:
    """A loaded teacher.

    Attributes:
        G: generator in eval mode with ``requires_grad_(False)``.
        D: discriminator (same treatment) or ``None`` when the checkpoint has none.
        name: ``builtin:<name>`` or the checkpoint file name.
        sha256: hex digest of the checkpoint file (of the builtin's parameters for built-ins).
        format: ``'builtin'`` (untrained), ``'builtin-trained'``, ``'nvlabs-tf'``, ``'nvlabs-pytorch'`` or ``'rosinality'``.
        info: notes from the loader (fp16/conv_clamp settings found, how ``w_avg`` was obtained, ...).
    """

    G: Generator
    D: Discriminator | None
    name: str
    sha256: str
    format: str
    info: dict = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return self.format != "builtin"


def load_trained_builtin(name: str) -> Teacher:
    """A shipped trained teacher (``TRAINED_BUILTINS``): G_ema and D from package data, sha256 of the file.

    Raises: CheckpointError when the weights file is missing from the installation.
    """
    from kdpipe.fsutil import file_sha256
    from kdpipe.pipeline.teacher.formats.safetensors_io import load_generator_safetensors

    path = WEIGHTS_DIR / TRAINED_BUILTINS[name]
    if not path.is_file():
        raise CheckpointError(f"builtin:{name} weights {str(path)!r} are missing; reinstall kdpipe "
                              "(they ship as package data)")
    G, D = load_generator_safetensors(path, with_D=True)
    info = {"note": f"trained demo teacher; see data_cards/{name}.md"}
    return Teacher(G, D, f"{BUILTIN_PREFIX}{name}", file_sha256(path), "builtin-trained", info)


def build_builtin(name: str) -> tuple[Generator, Discriminator]:
    """Deterministic untrained StyleGAN2 ``(G, D)`` for tests and smoke runs (CPU-fast, a few 1e4-1e5 parameters).

    Weights come from ``torch.Generator`` seeded by the name; ``noise_strength`` is set to 0.1 (upstream
    initialises 0, which would hide the noise path) and ``w_avg`` is the mean of ``mapping(z)`` over 4096 z
    (a trained network's running average converges there).

    Raises:
        CheckpointError: unknown builtin name (lists the known ones).
    """
    if name not in BUILTINS:
        raise CheckpointError(f"unknown built-in teacher 'builtin:{name}'; known: "
                              + ", ".join(f"builtin:{k}" for k in [*BUILTINS, *TRAINED_BUILTINS]))
    res, z_dim, channel_base, channel_max, n_mlp = BUILTINS[name]
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        G = Generator(z_dim=z_dim, c_dim=0, w_dim=z_dim, img_resolution=res, img_channels=3,
                      mapping_kwargs=dict(num_layers=n_mlp), channel_base=channel_base, channel_max=channel_max)
        D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=channel_base,
                          channel_max=channel_max)
        with torch.no_grad():
            for mod in G.modules():
                if hasattr(mod, "noise_strength"):
                    mod.noise_strength.fill_(0.1)
            z = torch.randn(4096, z_dim)
            G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(dim=0))
    return G.eval().requires_grad_(False), D.eval().requires_grad_(False)


def _params_sha256(*modules: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for m in modules:
        for k, v in m.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_teacher(spec: str, device: str | torch.device = "cpu") -> Teacher:
    """Load a teacher from ``builtin:<name>`` or a checkpoint path.

    Args:
        spec: ``builtin:random-64`` etc., ``builtin:digits-32`` (trained demo), or a path to an NVlabs TF ``.pkl``, stylegan2-ada-pytorch / stylegan3
            ``.pkl`` or rosinality ``.pt`` (format detected from the content).
        device: where to put the networks.
    Raises:
        CheckpointError: one line naming the file and what was expected.
    """
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        if name in TRAINED_BUILTINS:
            teacher = load_trained_builtin(name)
            return Teacher(teacher.G.to(device), teacher.D.to(device) if teacher.D is not None else None,
                           teacher.name, teacher.sha256, teacher.format, teacher.info)
        G, D = build_builtin(name)
        info = {"note": "UNTRAINED built-in teacher for tests and smoke runs; its images are not faces"}
        return Teacher(G.to(device), D.to(device), spec, _params_sha256(G, D), "builtin", info)
    from kdpipe.pipeline.teacher.formats.checkpoints import build_networks, load_checkpoint

    path = Path(spec)
    loaded = load_checkpoint(path)
    G, D = build_networks(loaded)
    G = G.eval().requires_grad_(False).to(device)
    if D is not None:
        D = D.eval().requires_grad_(False).to(device)
    return Teacher(G, D, path.name, loaded.sha256, loaded.format, dict(loaded.info))
