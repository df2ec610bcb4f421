"""The training loop every kdpipe trainer reuses, and its helpers.

A trainer is anything satisfying the small :class:`Trainer` protocol (torchtune-style, no base class):
it builds its models/optimisers itself, then :func:`fit` drives it — resume, data position, metrics,
PNG grids, checkpoints, tqdm, ``stop_after``. Helpers: :func:`init_distributed` /
:func:`teardown_distributed` (torchrun: gloo on CPU, nccl on GPU), the one data-parallel strategy (DDP:
:func:`wrap_ddp` for a network, :func:`wrap_objective` for a whole loss over several networks),
:func:`seed_everything`, :func:`autocast`, :func:`make_grad_scaler`, :class:`EMA`, :class:`MetricsWriter`,
:func:`save_image_grid`. Starting a run (config, resume, torchrun) is :mod:`kdpipe.trainers.core.run`'s.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from kdpipe.devices import resolve_device
from kdpipe.fsutil import atomic_write, atomic_write_text
from kdpipe.images import to_uint8
from kdpipe.pipeline.render import tune_host_allocator

from .checkpoint import capture_rng_state, checkpoint_path, restore_rng_state, save_checkpoint
from .config import LoopConfig
from .data import DataPosition

Batch = dict[str, Any]


class Trainer(Protocol):
    """What :func:`fit` needs from a trainer (models, optimisers, EMA and scaler live inside it)."""

    name: str
    """Trainer id written into checkpoints (e.g. ``"pix2pixhd"``); resume refuses another trainer's files."""

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor | float]:
        """One optimisation step on ``batch`` (``step`` = steps done before it, 0-based).
        Returns detached scalar tensors (paper loss names; averaged over ranks and converted only every
        ``log_every`` steps, so no per-step device sync) and plain floats (e.g. ``lr``)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: models, optimisers, EMA, grad scaler."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        ...

    def sample_rows(self, batch: Batch) -> list[torch.Tensor]:
        """Rows for the PNG grid, each [N, 3, H, W] float in [-1, 1] (e.g. input, output, target)."""
        ...


# ---------------------------------------------------------------------------------------------- distributed

@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics, grids and the progress bar."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (nccl on CUDA, gloo on CPU).

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (set by ``torchrun``); single process otherwise. On CPU it
    also tunes glibc's allocator (:func:`kdpipe.pipeline.render.tune_host_allocator`).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local, field="loop.device")
    if dev.type == "cpu":  # keep freed activation memory for reuse (see kdpipe.pipeline.render)
        tune_host_allocator()
    if world > 1 and not torch.distributed.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def teardown_distributed() -> None:
    """Barrier, then destroy the process group (no-op for single-process runs)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def wrap_ddp(module: torch.nn.Module, dist: DistInfo, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` when ``world_size > 1``, else ``module`` unchanged.

    DDP averages the gradients of the parameters its ``forward`` used over ranks during ``backward`` (the one
    data-parallel strategy of every trainer). ``find_unused_parameters``: some parameters may take no part in a
    forward (e.g. the generator in a discriminator step).
    """
    if dist.world_size == 1:
        return module
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                                     find_unused_parameters=find_unused_parameters)


class Objective(torch.nn.Module):
    """Networks and a loss function as one module, so DDP can wrap a whole objective, not one ``forward``.

    ``Objective(nets)(fn, *args, **kw) == fn(nets, *args, **kw)``; under DDP (:func:`wrap_objective`) the gradients
    of every parameter of ``nets`` that ``fn`` used are averaged over ranks in the following ``backward``. Networks
    whose methods are not ``forward`` (StarGANv2's ``encode_content`` / ``synthesize``) train data-parallel this way.
    Everything that depends on the gradients of ``nets`` must be computed inside ``fn``.
    """

    def __init__(self, nets: torch.nn.Module):
        super().__init__()
        self.nets = nets

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.nets, *args, **kwargs)


def wrap_objective(nets: torch.nn.Module, dist: DistInfo, find_unused_parameters: bool = True) -> torch.nn.Module:
    """:class:`Objective` of ``nets``, in DDP when ``world_size > 1`` (see :func:`wrap_ddp`)."""
    return wrap_ddp(Objective(nets), dist, find_unused_parameters)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The inner module of a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def mean_over_ranks(values: dict[str, torch.Tensor | float], dist: DistInfo) -> dict[str, float]:
    """Average scalar tensors over ranks (one all_reduce) and return Python floats (floats pass through)."""
    plain = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    values = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    if not values:
        return plain
    keys = sorted(values)
    vec = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(dist.device)
    if dist.world_size > 1:
        torch.distributed.all_reduce(vec)
        vec = vec / dist.world_size
    return dict(zip(keys, vec.cpu().tolist())) | plain


# ---------------------------------------------------------------------------------------- seeding, precision

def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU + CUDA); optionally force deterministic kernels.

    With ``deterministic`` CPU runs are bitwise repeatable; on CUDA, kernels without a deterministic
    version only warn (e.g. ReflectionPad2d backward).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Autocast context for ``precision`` in {fp32 (off), bf16, fp16} on ``device``'s type."""
    return torch.autocast(device.type, dtype=_DTYPES.get(precision, torch.float32), enabled=precision != "fp32")


def make_grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Gradient scaler, enabled only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


class EMA:
    """Exponential moving average of a model's weights: ``w_ema <- decay * w_ema + (1 - decay) * w``.

    ``module`` is a frozen eval-mode copy; buffers are copied as-is. (Karras et al.'s G_ema, per step.)
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.module = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Blend the current weights of ``model`` (DDP-wrapped or not) into the EMA copy."""
        src = unwrap(model)
        for p_ema, p in zip(self.module.parameters(), src.parameters()):
            p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), src.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA model's state_dict (same keys as the source model)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the EMA weights."""
        self.module.load_state_dict(state)


# ------------------------------------------------------------------------------------------ metrics, images

class MetricsWriter:
    """Append-only JSONL metrics (one object per line, with ``step``), written by rank 0 only.

    On resume from step ``s``, lines with ``step > s`` (logged after that checkpoint, before a crash)
    are dropped so the file reads as one uninterrupted run.
    """

    def __init__(self, path: str | Path, enabled: bool = True, resume_step: int | None = None):
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if resume_step is not None and self.path.is_file():
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
        atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (JSON-serialisable, with ``step``) as one line; no-op off rank 0."""
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def save_image_grid(path: str | Path, rows: Sequence[torch.Tensor], max_items: int = 8) -> Path:
    """Save a PNG with one row per tensor (e.g. input / output / target), up to ``max_items`` columns.

    Args:
        rows: tensors [N, 3, H, W] in [-1, 1], same H, W.
    """
    import PIL.Image
    import torchvision

    imgs = torch.cat([r[:max_items].detach().float().cpu() for r in rows])
    grid = torchvision.utils.make_grid(imgs, nrow=min(max_items, rows[0].shape[0]), padding=2, pad_value=-1)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(p, lambda f: PIL.Image.fromarray(to_uint8(grid[None])[0].numpy()).save(f, format="PNG"))


# ------------------------------------------------------------------------------------------------- the loop

@dataclass
class FitResult:
    """What :func:`fit` did: final step, logged records (this invocation), checkpoints written."""

    step: int
    records: list[dict[str, Any]]
    checkpoints: list[Path]


def fit(trainer: Trainer, loop: LoopConfig, batches: Callable[[DataPosition], Iterator[tuple[Batch, DataPosition]]],
        dist: DistInfo, config_dict: dict[str, Any], resume_state: dict[str, Any] | None = None) -> FitResult:
    """Run (or continue) training until ``loop.steps`` or ``loop.stop_after`` more steps.

    Args:
        trainer: a :class:`Trainer`.
        loop: the loop section of the resolved config.
        batches: ``batches(position)`` -> endless ``(batch, position_after_batch)`` (see data.batch_iterator).
        dist: from :func:`init_distributed`.
        config_dict: resolved config, stored in every checkpoint.
        resume_state: a loaded checkpoint to continue from (models, optimisers, RNG, data position, step).
    Writes (rank 0): ``metrics.jsonl`` (losses + ``time/step_s``, ``time/data_s`` per step, averaged over
    the log interval), ``samples/step-*.png``, ``checkpoints/ckpt-*.pt``.
    """
    run_dir = Path(loop.out_dir)
    step, pos = 0, DataPosition()
    if resume_state is not None:
        trainer.load_state_dict(resume_state["trainer_state"])
        step, pos = int(resume_state["step"]), DataPosition.from_dict(resume_state["data"])
        restore_rng_state(resume_state["rng"])
    metrics = MetricsWriter(run_dir / "metrics.jsonl", dist.is_main, step if resume_state is not None else None)
    end = loop.steps if loop.stop_after is None else min(loop.steps, step + loop.stop_after)
    result = FitResult(step, [], [])
    it = batches(pos)
    evaluate = None
    if loop.eval_every and dist.is_main:
        from kdpipe.trainers.metrics.training import TrainingEval

        evaluate = TrainingEval(trainer, loop, batches)
    bar = tqdm(total=loop.steps, initial=step, disable=not (dist.is_main and loop.progress), desc=trainer.name)
    t_log, data_s, n_since = time.perf_counter(), 0.0, 0
    while step < end:
        t0 = time.perf_counter()
        batch, pos = next(it)
        data_s += time.perf_counter() - t0
        losses = trainer.train_step(batch, step)
        step, n_since = step + 1, n_since + 1
        bar.update(1)
        if step % loop.log_every == 0 or step == end:
            values = mean_over_ranks(losses, dist)  # syncs the device, so the timings below are real
            now = time.perf_counter()
            record = {"step": step, **values, "time/step_s": (now - t_log) / n_since, "time/data_s": data_s / n_since}
            metrics.write(record)
            result.records.append(record)
            bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k.startswith("loss")}, refresh=False)
            t_log, data_s, n_since = now, 0.0, 0
        if evaluate is not None and step % loop.eval_every == 0:
            record = {"step": step, **evaluate(trainer, step)}
            metrics.write(record)
            result.records.append(record)
        if dist.is_main and loop.sample_every and step % loop.sample_every == 0:
            save_image_grid(run_dir / "samples" / f"step-{step:08d}.png", trainer.sample_rows(batch))
        if (step % loop.ckpt_every == 0 or step == end) and dist.is_main:
            state = {"trainer": trainer.name, "step": step, "config": config_dict,
                     "trainer_state": trainer.state_dict(), "rng": capture_rng_state(), "data": pos.to_dict()}
            result.checkpoints.append(save_checkpoint(state, checkpoint_path(run_dir, step), keep=loop.keep_checkpoints))
    bar.close()
    result.step = step
    return result


def run_distributed(device: str, body):
    """``body(dist)`` inside the torchrun process group (or single process); on failure the group is destroyed
    without the final barrier, so the other ranks are not left waiting."""
    dist = init_distributed(device)
    ok = False
    try:
        result = body(dist)
        ok = True
        return result
    finally:
        if ok:
            teardown_distributed()
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
