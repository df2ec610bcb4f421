"""Run set-up and launch, shared by every trainer: one way to start, resume, freeze the config and go parallel.

:func:`setup_run` resolves a trainer's config and, on resume, loads the checkpoint (exact resume: everything
that changes the trained weights must equal the checkpoint's config). :func:`launch` joins the torchrun process
group (or stays single-process), seeds every RNG, freezes the resolved config into ``<out>/config.yaml`` and
hands the process placement to the trainer's body (which builds the trainer and calls
:func:`kdpipe.trainers.core.loop.fit`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from kdpipe.errors import ConfigError

from .checkpoint import TrainCheckpointError, latest_checkpoint, load_checkpoint
from .config import RESUME_MAY_CHANGE, config_diff, config_to_dict, flatten, load_config, merge, save_config
from .loop import DistInfo, run_distributed, seed_everything

T = TypeVar("T")

PER_INVOCATION = {"loop.stop_after": None}
"""Fields that apply to one invocation only; a resumed run starts from these values, not the checkpoint's."""


def setup_run(cls: type[T], trainer: str, config_path: str | Path | None = None,
              overrides: Mapping[str, Any] | None = None, resume: bool = False,
              resume_from: str | Path | None = None, defaults: Mapping[str, Any] | None = None,
              may_change: frozenset[str] = frozenset()) -> tuple[T, dict[str, Any] | None]:
    """Resolve the config of ``trainer`` and, when resuming, load its checkpoint.

    Fresh run: dataclass defaults < ``defaults`` (the trainer's own, e.g. ``{"loop": {"steps": 20000}}``) < YAML
    file < dotted ``overrides``; ``loop.out_dir`` must not hold checkpoints yet. Resume (``resume``: newest
    checkpoint in ``loop.out_dir``; ``resume_from``: that file): the checkpoint's config with ``loop.stop_after``
    cleared (it is per invocation: a resumed run goes on to ``loop.steps`` unless given again) < YAML <
    overrides; fields outside ``RESUME_MAY_CHANGE | may_change`` must equal the checkpoint's.

    Returns:
        ``(config, checkpoint dict or None)``.
    Raises:
        ConfigError: no ``loop.out_dir``, a fresh run into a directory with checkpoints, or a changed field.
        TrainCheckpointError: nothing to resume, or a corrupt / foreign checkpoint.
    """
    cfg = load_config(cls, config_path, overrides, base=defaults)
    out_dir = cfg.loop.out_dir  # type: ignore[attr-defined]
    if not out_dir:
        raise ConfigError("no run directory; pass --out RUN_DIR (checkpoints, samples and metrics go there)")
    if not (resume or resume_from is not None):
        if latest_checkpoint(out_dir) is not None:
            raise ConfigError(f"{out_dir!r} already holds checkpoints ({latest_checkpoint(out_dir)}); "
                              "pass --resume to continue that run, or another --out")
        return cfg, None
    path = Path(resume_from) if resume_from is not None else latest_checkpoint(out_dir)
    if path is None:
        raise TrainCheckpointError(f"--resume: no checkpoints in {out_dir}/checkpoints; drop --resume to start a "
                                   "new run")
    state = load_checkpoint(path, trainer=trainer)
    saved = load_config(cls, None, None, base=state["config"])
    cfg = load_config(cls, config_path, overrides, base=merge(state["config"], PER_INVOCATION))
    changed = config_diff(saved, cfg, RESUME_MAY_CHANGE | may_change)
    if changed:
        old, new = flatten(config_to_dict(saved))[changed[0]], flatten(config_to_dict(cfg))[changed[0]]
        raise ConfigError(f"cannot resume {str(path)!r}: {changed[0]} was {old!r} in that run, now {new!r}; "
                          "keep it or start a new run in another --out")
    return cfg, state


def freeze_config(cfg: Any) -> Path:
    """Write the resolved config to ``<loop.out_dir>/config.yaml`` atomically (creating the directory)."""
    out = Path(cfg.loop.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    return out / "config.yaml"


def launch(cfg: Any, body: Callable[[DistInfo], T]) -> T:
    """Run ``body(dist)`` in one process or as one rank of a torchrun job (DDP; gloo on CPU, nccl on CUDA).

    Every rank seeds Python / NumPy / torch with ``loop.seed`` first (same initial weights everywhere; DDP then
    keeps them equal); rank 0 freezes the config (:func:`freeze_config`). ``cfg.loop.device`` picks the device
    (``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun).
    """

    def seeded(dist: DistInfo) -> T:
        seed_everything(cfg.loop.seed, cfg.loop.deterministic)
        if dist.is_main:
            freeze_config(cfg)
        return body(dist)

    return run_distributed(cfg.loop.device, seeded)
