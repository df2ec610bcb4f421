"""Batched teacher rendering and the render-ahead / encode-behind sample pipeline.

Output bytes must not depend on how work is batched (resume, rank splitting, any ``--batch-size``), but conv
and GEMM kernels are picked by tensor shape (oneDNN on CPU: builtin:random-128 differs in a few uint8 pixels
between batches of 2 and 3). So every forward has a fixed number of rows, the last one padded by repeating its
final row: :func:`cpu_compute_batch` rows on CPU (set by the teacher's resolution), whatever
``runtime.batch_size`` says, and ``batch_size`` rows on CUDA, where it is therefore part of the stage fingerprint
(with the device model; on CPU the torch thread count, which can also change kernels, is). The modulated-conv
form is chosen per device, never per batch
(:func:`kdpipe.pipeline.teacher.networks.default_fused_modconv`), and each device->host copy covers one whole batch.

:func:`pipelined` overlaps the work a dataset needs (numbers: ``benchmarks/README.md``): the teacher's forward,
PNG/JSON/NPY encoding on a pool of encoder threads, and the caller (the tar writer), which consumes finished
samples in input order. At most a few chunks are in flight, so memory does not grow with the dataset, and the
encoder count never changes an output byte.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from kdpipe.images import to_uint8
from kdpipe.pipeline.latents import z_from_seeds
from kdpipe.pipeline.teacher.networks import Generator, default_fused_modconv


def cpu_compute_batch(resolution: int) -> int:
    """Rows of every CPU forward for a teacher of this resolution (fixed shapes -> fixed kernels -> batch-free bytes).

    About 64k output pixels per forward, 1 to 16 rows: on 2 cores the 64-px built-in is fastest at 16 rows,
    128 px at 4-8, and 256 px at 1 (7.8 img/s at batch 1 vs 2.9 at 16, where activations no longer fit in cache).
    """
    return max(1, min(16, 65536 // (resolution * resolution)))


_ALLOCATOR_TUNED = False


def tune_host_allocator() -> bool:
    """Let glibc keep freed tensor memory for reuse instead of unmapping it after every op (CPU forwards).

    glibc serves blocks above a dynamic mmap threshold (128 KiB at start) with fresh pages and returns the heap
    top to the OS above ``M_TRIM_THRESHOLD``, so a CPU forward whose activations are a few MiB can page-fault
    and zero-fill them again on every op. Depending on what ran before, that made the 64-px teacher's forward
    (batch 16, 2 cores) 1.7x slower (benchmarks/README.md). This sets ``M_MMAP_THRESHOLD`` = 32 MiB,
    ``M_TRIM_THRESHOLD`` = 256 MiB and ``M_TOP_PAD`` = 16 MiB through ``mallopt`` (the ``MALLOC_*_`` environment
    variables do the same at start-up) for the whole process, once. RSS stays bounded: freed blocks are reused,
    at most ~256 MiB of free heap is kept. Returns False where there is no glibc (nothing changed).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc malloc.h
    _ALLOCATOR_TUNED = bool(mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 256 << 20)
                            and mallopt(m_top_pad, 16 << 20))
    return _ALLOCATOR_TUNED


def default_encode_workers(device: torch.device | str, cpu_count: int | None = None) -> int:
    """Encoder threads for :func:`pipelined` that keep up with the teacher without taking its cores.

    CUDA: every core but two (the render thread launching kernels and the caller writing tars), at least 1.
    CPU: 1. The forward already uses every core (torch intra-op threads); on 2 cores 0, 1 and 2 encoder
    threads gave the same throughput for the 64-px teacher, and more threads only compete with the forward.
    """
    cpus = cpu_count or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1
    return max(1, cpus - 2) if torch.device(device).type == "cuda" else 1


class Renderer:
    """Maps seeds to ws and ws to uint8 images with a fixed batch size on one device.

    Args:
        G: the teacher generator (eval mode).
        device: torch device the generator lives on.
        truncation_psi: ``w_avg + psi (w - w_avg)``; 1 disables truncation.
        truncation_cutoff: truncate only layers ``[0, cutoff)``; ``None`` = all layers.
        noise_mode: ``'const'`` or ``'none'`` (``'random'`` would make samples unreproducible).
        batch_size: rows of every forward on CUDA; on CPU every forward has :func:`cpu_compute_batch` rows
            (see the module docstring), so there it does not change output.
        fused_modconv: ``None`` = per-device default (:func:`kdpipe.pipeline.teacher.networks.default_fused_modconv`).
        rows: rows of every forward on any device, overriding the two rules above; ``rows=1`` with
            ``fused_modconv=True`` is the form of NVlabs ``gen_images.py`` (one image per forward, fused modconv).
    """

    def __init__(self, G: Generator, device: torch.device, truncation_psi: float = 0.7,
                 truncation_cutoff: int | None = None, noise_mode: str = "const", batch_size: int = 16,
                 fused_modconv: bool | None = None, rows: int | None = None):
        self.G, self.device = G, torch.device(device)
        self.truncation_psi, self.truncation_cutoff, self.noise_mode = truncation_psi, truncation_cutoff, noise_mode
        self.batch_size = (max(1, int(rows)) if rows is not None else
                           cpu_compute_batch(G.img_resolution) if self.device.type == "cpu" else max(2, int(batch_size)))
        self.fused_modconv = default_fused_modconv(self.device) if fused_modconv is None else fused_modconv
        if self.device.type == "cpu":
            tune_host_allocator()

    @classmethod
    def from_config(cls, G: Generator, device: torch.device, teacher, batch_size: int) -> "Renderer":
        """The renderer a task asks for: ``teacher`` is its :class:`kdpipe.pipeline.config.TeacherConfig`
        (truncation, noise mode), ``batch_size`` its ``runtime.batch_size``."""
        return cls(G, device, teacher.truncation_psi, teacher.truncation_cutoff, teacher.noise_mode, batch_size)

    def _forward(self, x: torch.Tensor,
                 fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, fn(x[start:start + batch_size]))`` per batch; a short last batch is padded to ``batch_size``
        rows (copies of its last row) and cut back, so every forward has the same shape and kernels."""
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start:start + self.batch_size]
            rows = chunk.shape[0]
            if rows < self.batch_size:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch_size - rows, *chunk.shape[1:])])
            yield start, _first_rows(fn(chunk), rows)

    @torch.no_grad()
    def ws_from_seeds(self, seeds: Sequence[int], c: torch.Tensor | None = None) -> torch.Tensor:
        """Truncated ws of each seed: ``[len(seeds), num_ws, w_dim]`` float32 on ``device``.

        ``c``: class label ``[1, c_dim]`` float32 (one-hot, as NVlabs ``gen_images.py --class``) given to every
        seed; ``None`` for an unconditional generator.
        """
        z = z_from_seeds(seeds, self.G.z_dim).to(self.device)
        c = None if c is None else c.to(self.device, torch.float32).expand(self.batch_size, -1)
        outs = [ws for _, ws in self._forward(z, lambda zz: self.G.mapping(
            zz, c, truncation_psi=self.truncation_psi, truncation_cutoff=self.truncation_cutoff))]
        return torch.cat(outs) if outs else z.new_zeros(0, self.G.num_ws, self.G.w_dim)

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Float images and synthesis features of ws ``[N, num_ws, w_dim]``, in the same fixed-row forwards as
        :meth:`images` (so ``to_uint8`` of the images equals :meth:`images` byte for byte).

        Returns ``(img [N, 3, H, W] float32 in ~[-1, 1], {resolution r: [N, C_r, r, r]})`` on ``device`` (the
        features are the KD targets of seed 000 Eq. 3).
        """
        ws = ws.to(self.device)
        imgs, feats = [], []
        for _, (img, f) in self._forward(ws, lambda w: self.G.synthesis(
                w, noise_mode=self.noise_mode, fused_modconv=self.fused_modconv, return_features=True)):
            imgs.append(img)
            feats.append(f)
        return torch.cat(imgs), {r: torch.cat([f[r] for f in feats]) for r in feats[0]}

    @torch.no_grad()
    def images(self, ws: torch.Tensor) -> np.ndarray:
        """uint8 images ``[N, H, W, C]`` in host memory for ws ``[N, num_ws, w_dim]``.

        Each batch is converted to uint8 on the device and copied to the host once, straight into the result.
        """
        ws = ws.to(self.device)
        G = self.G
        out = np.empty((ws.shape[0], G.img_resolution, G.img_resolution, G.img_channels), np.uint8)
        host = torch.from_numpy(out)
        for start, img in self._forward(ws, lambda w: to_uint8(G.synthesis(w, noise_mode=self.noise_mode,
                                                                           fused_modconv=self.fused_modconv))):
            host[start:start + img.shape[0]].copy_(img)
        return out


def _first_rows(out, rows: int):
    """``out[:rows]`` for a tensor, a ``{key: tensor}`` dict or a tuple of those (padding rows cut off)."""
    if isinstance(out, torch.Tensor):
        return out[:rows]
    if isinstance(out, dict):
        return {k: v[:rows] for k, v in out.items()}
    return tuple(_first_rows(o, rows) for o in out)


_END = object()


def pipelined(chunks: Iterable, render: Callable[[object], list], encode: Callable[[object], dict],
              workers: int, render_ahead: int = 2, device: torch.device | str | None = None) -> Iterator[dict]:
    """Render chunk by chunk, encode the samples on ``workers`` threads, yield them in input order.

    Where the forward runs depends on the device. On CUDA it runs on its own render thread, so the GPU keeps
    working while the caller writes tars. On CPU it runs on the caller's thread: a second thread running torch
    ops makes OpenMP throttle its spin-waits, which slowed the 64-px teacher's forward 1.5-2x on 2 cores
    (benchmarks/README.md); the encoder threads still overlap with it.

    Args:
        chunks: work units (e.g. lists of sample indices) in output order.
        render: chunk -> list of per-sample payloads (the device work; called in chunk order, one at a time).
        encode: payload -> finished sample dict (PNG/JSON/NPY bytes); runs on the encoder threads. Time it
            spends in Python (not in zlib or numpy, which release the GIL) is taken from the forward's thread.
        workers: encoder threads; 0 renders and encodes inline on the caller's thread (no threads at all).
        render_ahead: chunks rendered but not yet consumed (at most ``render_ahead + 2`` chunks are alive at
            once, so memory stays flat whatever the dataset size). On CPU 0 encodes each chunk before the next
            is rendered; on CUDA it counts as 1.
        device: the render device (``None`` = CPU behaviour).
    Yields:
        ``encode(payload)`` of every payload, in chunk order. An exception in ``render`` or ``encode`` is
        re-raised here; closing the generator early stops the render thread.
    """
    if workers <= 0:
        for chunk in chunks:
            for item in render(chunk):
                yield encode(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kdpipe-encode") as pool:
        if device is None or torch.device(device).type == "cpu":
            pending: deque = deque()
            for chunk in chunks:
                pending.append([pool.submit(encode, item) for item in render(chunk)])
                while len(pending) > render_ahead:
                    yield from (future.result() for future in pending.popleft())
            while pending:
                yield from (future.result() for future in pending.popleft())
            return
        yield from _render_thread(chunks, render, encode, pool, max(1, render_ahead))


def _render_thread(chunks, render, encode, pool: ThreadPoolExecutor, render_ahead: int) -> Iterator[dict]:
    """:func:`pipelined` with the forward on a separate thread feeding a bounded queue of encode futures."""
    ready: queue.Queue = queue.Queue(maxsize=render_ahead)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if stop.is_set() or not put([pool.submit(encode, item) for item in render(chunk)]):
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
            put(e)
            return
        put(_END)

    producer = threading.Thread(target=produce, name="kdpipe-render", daemon=True)
    producer.start()
    try:
        while (entry := ready.get()) is not _END:
            if isinstance(entry, BaseException):
                raise entry
            for future in entry:
                yield future.result()
    finally:
        stop.set()
        producer.join()
        while not ready.empty():  # samples nobody will consume: skip their encoding
            entry = ready.get_nowait()
            for future in entry if isinstance(entry, list) else ():
                future.cancel()
