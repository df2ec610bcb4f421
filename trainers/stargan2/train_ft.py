"""Stage two of seed 000: finetune StarGANv2 on a small folder-per-domain dataset with StarGANv2's own objective.

``init`` = a KD checkpoint: its single-domain networks are loaded with the domain heads duplicated to every
class (seed 000 A.4: "we only learn one mapping network, which is duplicated to initialize all the mapping
networks"; likewise the style-encoder heads and the discriminator outputs). Without ``init`` the networks are
He-initialised: the "No KD" baseline of Fig. 3(b), from the same command.

Per step, as clovaai/stargan-v2 ``Solver.train``: D step latent-guided, D step reference-guided, G step
latent-guided (generator, mapping network, style encoder), G step reference-guided (generator only), EMA
(beta ``loop.ema_decay``, 0.999) of generator / mapping network / style encoder; lambda_ds decays linearly to 0
over ``loss.ds_iter`` steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kdpipe.errors import ConfigError
from kdpipe.fsutil import atomic_write_text
from kdpipe.trainers.core.checkpoint import TrainCheckpointError, latest_checkpoint, load_checkpoint
from kdpipe.trainers.core.loop import EMA, DistInfo, FitResult, autocast, wrap_objective
from kdpipe.trainers.stargan2.config import FTConfig
from kdpipe.trainers.stargan2.data import DomainFolder, folder_batches
from kdpipe.trainers.stargan2.losses_ft import compute_d_loss, compute_g_loss
from kdpipe.trainers.stargan2.networks import NET_NAMES, build_nets, load_expanding_domains
from kdpipe.trainers.stargan2.train_kd import TRAINER as KD_TRAINER

TRAINER = "stargan2"
EMA_NETS = ("generator", "mapping_network", "style_encoder")


def load_init(path: str) -> dict[str, Any]:
    """Load the ``--init`` checkpoint: a ``ckpt-*.pt`` file or a run directory (its newest checkpoint).

    Returns the checkpoint dict (``trainer_state["models"]`` holds the four networks, ``config["model"]`` sizes).
    Raises:
        TrainCheckpointError: missing/unreadable file, empty run directory, or a checkpoint of another trainer.
    """
    p = Path(path)
    if p.is_dir():
        found = latest_checkpoint(p)
        if found is None:
            raise TrainCheckpointError(f"--init {path!r} is a directory without checkpoints/ckpt-*.pt; pass the KD "
                                       "run directory or one of its checkpoint files")
        p = found
    state = load_checkpoint(p)
    if state.get("trainer") not in (KD_TRAINER, TRAINER):
        raise TrainCheckpointError(f"--init {str(p)!r} was written by trainer {state.get('trainer')!r}; pass a "
                                   f"{KD_TRAINER!r} (or {TRAINER!r}) checkpoint")
    return state


def model_kwargs(cfg: FTConfig, num_domains: int) -> dict[str, Any]:
    """``build_nets`` arguments; ``latent_dim`` None -> 16 (StarGANv2)."""
    m = cfg.model
    return dict(img_size=m.img_size, num_domains=num_domains, style_dim=m.style_dim,
                latent_dim=16 if m.latent_dim is None else m.latent_dim, max_conv_dim=m.max_conv_dim,
                dim_in=m.dim_in, num_down=m.num_down, hidden_dim=m.hidden_dim)


class FinetuneTrainer:
    """StarGANv2 finetuning (a :class:`kdpipe.trainers.core.loop.Trainer`).

    Args:
        cfg: resolved :class:`FTConfig` (``model`` must match the init checkpoint's).
        num_domains: number of target classes (>= 2).
        init_models: ``{net name: state_dict}`` from a KD (or finetune) checkpoint, or None.
        domains: domain names (label order), saved in checkpoints for ``kdpipe translate --domain NAME``.
    """

    name = TRAINER

    def __init__(self, cfg: FTConfig, num_domains: int, init_models: dict | None = None,
                 dist: DistInfo = DistInfo(), domains: list[str] | None = None):
        if cfg.loop.precision == "fp16":
            raise ConfigError("loop.precision=fp16 is not supported by the StarGANv2 trainers (several optimisers "
                              "and the R1 double backward); use bf16 or fp32")
        self.cfg, self.dist, self.device = cfg, dist, dist.device
        self.domains = list(domains) if domains is not None else [str(k) for k in range(num_domains)]
        self.nets = build_nets(**model_kwargs(cfg, num_domains)).to(self.device)
        if init_models is not None:
            for k in NET_NAMES:
                load_expanding_domains(self.nets[k], init_models[k])
        self.objective = wrap_objective(self.nets, dist)  # DDP over all four networks (unused ones allowed)
        self.ema = {k: EMA(self.nets[k], cfg.loop.ema_decay) for k in EMA_NETS} if cfg.loop.ema_decay > 0 else {}
        o = cfg.optim
        self.optims = {k: torch.optim.Adam(self.nets[k].parameters(), lr=o.f_lr if k == "mapping_network" else o.lr,
                                           betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
                       for k in NET_NAMES}
        self._last: list[torch.Tensor] = []

    def lambda_ds(self, step: int) -> float:
        """Diversity weight at ``step`` (0-based): ``lambda_ds * max(0, 1 - step / ds_iter)`` (StarGANv2 decay)."""
        return self.cfg.loss.lambda_ds * max(0.0, 1.0 - step / self.cfg.loss.ds_iter)

    def _step(self, loss: torch.Tensor, names) -> None:
        for opt in self.optims.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for k in names:
            self.optims[k].step()

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """Two D steps and two G steps (latent- then reference-guided), then the EMA update."""
        b = {k: v.to(self.device) for k, v in batch.items()}
        x_real, y_org, y_trg = b["x_src"], b["y_src"], b["y_ref"]
        w, nets, out = self.cfg.loss, self.nets, {}
        amp = autocast(self.device, self.cfg.loop.precision)
        for mode, kw in (("latent", {"z_trg": b["z_trg"]}), ("ref", {"x_ref": b["x_ref"]})):
            with amp:
                d_loss, parts = self.objective(compute_d_loss, w, x_real, y_org, y_trg, **kw)
            self._step(d_loss, ["discriminator"])
            out.update({f"D/{mode}_{k}": torch.tensor(v) for k, v in parts.items()})
        lam = self.lambda_ds(step)
        with amp:
            g_loss, parts = self.objective(compute_g_loss, w, x_real, y_org, y_trg,
                                           z_trgs=(b["z_trg"], b["z_trg2"]), lambda_ds=lam)
        self._step(g_loss, ["generator", "mapping_network", "style_encoder"])
        out.update({f"G/latent_{k}": torch.tensor(v) for k, v in parts.items()})
        with amp:
            g_loss, parts = self.objective(compute_g_loss, w, x_real, y_org, y_trg,
                                           x_refs=(b["x_ref"], b["x_ref2"]), lambda_ds=lam)
        self._step(g_loss, ["generator"])
        out.update({f"G/ref_{k}": torch.tensor(v) for k, v in parts.items()})
        out["G/lambda_ds"] = torch.tensor(lam)
        for k, e in self.ema.items():
            e.update(nets[k])
        self._last = [x_real.detach(), b["x_ref"].detach()]
        return out

    def eval_nets(self) -> dict[str, torch.nn.Module]:
        """The EMA networks where kept (StarGANv2 samples and evaluates ``nets_ema``), else the trained ones."""
        return {k: (self.ema[k].module if k in self.ema else self.nets[k]) for k in NET_NAMES}

    @torch.no_grad()
    def sample_rows(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Grid rows: source, reference, reference-guided output, latent-guided output (EMA networks)."""
        x_real, x_ref = self._last
        y_trg = batch["y_ref"].to(self.device)
        nets = self.eval_nets()
        s_ref = nets["style_encoder"](x_ref, y_trg)
        s_lat = nets["mapping_network"](batch["z_trg"].to(self.device), y_trg)
        return [x_real, x_ref, nets["generator"](x_real, s_ref), nets["generator"](x_real, s_lat)]

    def state_dict(self) -> dict[str, Any]:
        return {"models": {k: v.state_dict() for k, v in self.nets.items()},
                "ema": {k: e.state_dict() for k, e in self.ema.items()},
                "optimizers": {k: v.state_dict() for k, v in self.optims.items()}, "domains": self.domains}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self.nets.items():
            v.load_state_dict(state["models"][k])
        for k, e in self.ema.items():
            e.load_state_dict(state["ema"][k])
        for k, v in self.optims.items():
            v.load_state_dict(state["optimizers"][k])


def init_model_config(cfg: FTConfig, init_state: dict, overrides: dict[str, Any]) -> FTConfig:
    """Take ``model.*`` from the init checkpoint's config (and its resolved latent_dim) unless given explicitly.

    Raises:
        ConfigError: an explicit ``model.*`` override disagrees with the init checkpoint.
    """
    saved = dict(init_state["config"].get("model", {}))
    models = init_state["trainer_state"]["models"]
    saved["latent_dim"] = int(models["mapping_network"]["shared.0.weight"].shape[1])
    for key, value in saved.items():
        given = overrides.get(f"model.{key}")
        if given is not None and given != value:
            raise ConfigError(f"model.{key}={given!r} differs from the init checkpoint's {value!r}; drop the "
                              "override (the architecture comes from --init)")
        setattr(cfg.model, key, value)
    return cfg


def setup(cfg: FTConfig, state: dict | None, overrides: dict[str, Any]):
    """Checks made before training; a fresh run with ``init`` takes ``model.*`` from the init checkpoint.

    Returns ``build(dist) -> (FinetuneTrainer, batches)``; rank 0 writes ``data.json`` (domains, counts, skipped).
    Raises:
        DomainFolderError, TrainCheckpointError, ConfigError: one-line user errors.
    """
    if not cfg.data.path:
        raise ConfigError("no dataset; pass --data DIR (one sub-folder of images per domain)")
    init_models = None
    if cfg.init and state is None:
        init_state = load_init(cfg.init)
        init_model_config(cfg, init_state, overrides)
        init_models = init_state["trainer_state"]["models"]
    folder = DomainFolder(cfg.data.path, cfg.model.img_size, cfg.data.on_bad_image)

    def build(dist: DistInfo):
        trainer = FinetuneTrainer(cfg, folder.num_domains, init_models, dist, folder.domains)
        if dist.is_main:
            Path(cfg.loop.out_dir).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(cfg.loop.out_dir) / "data.json", json.dumps(folder.summary(), indent=1))
        latent_dim = trainer.nets["mapping_network"].latent_dim

        def batches(pos):
            return folder_batches(folder, cfg.loop.seed, cfg.data.batch_size, latent_dim, cfg.data.augment, pos,
                                  dist.rank, dist.world_size)

        return trainer, batches

    return build


def run_ft(config_path: str | Path | None = None, overrides: dict[str, Any] | None = None, resume: bool = False,
           resume_from: str | Path | None = None) -> FitResult:
    """``kdpipe train stargan2`` as a function (without ``init``: the "No KD" baseline); see
    :func:`kdpipe.trainers.registry.train`."""
    from kdpipe.trainers.registry import train

    return train(TRAINER, config_path, overrides, resume, resume_from)
