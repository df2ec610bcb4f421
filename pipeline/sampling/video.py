"""Latent interpolation video as NVlabs ``gen_video.py`` (stylegan3) renders it.

Upstream rule: keyframe ws = ``G.mapping(z(seed), truncation_psi)`` of the seeds (cycled to fill a
``grid_w x grid_h`` grid of ``num_keyframes`` keyframes each); per cell a ``scipy.interpolate.interp1d`` of kind
``'cubic'`` over the keyframes tiled ``2 * wraps + 1`` times (``wraps = 2``, so the loop closes smoothly); frame
``t`` of ``num_keyframes * w_frames`` renders ``interp(t / w_frames)`` with ``noise_mode='const'``, 60 fps, H.264.
Upstream's ``--shuffle-seed`` is not offered.

The writer is imageio with its ffmpeg plugin (``imageio-ffmpeg`` ships an ffmpeg binary); where that plugin is
missing, an animated GIF (Pillow) or a PNG frame sequence is written instead (``fmt``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from kdpipe.errors import ConfigError
from kdpipe.images import save_png
from kdpipe.pipeline.render import Renderer
from kdpipe.pipeline.sampling.images import render_ws, tile

FPS = 60
FORMATS = ("auto", "mp4", "gif", "png")


def keyframe_ws(renderer: Renderer, seeds: Sequence[int], grid: tuple[int, int] = (1, 1),
                c: torch.Tensor | None = None) -> np.ndarray:
    """Keyframe ws ``[grid_h, grid_w, num_keyframes, num_ws, w_dim]`` float32 (seeds cycled as upstream).

    Raises:
        ConfigError: the number of seeds is not a multiple of ``grid_w * grid_h``.
    """
    grid_w, grid_h = grid
    if grid_w < 1 or grid_h < 1 or len(seeds) % (grid_w * grid_h) != 0 or not seeds:
        raise ConfigError(f"--video: {len(seeds)} seed(s) do not fill a {grid_w}x{grid_h} grid; give a multiple "
                          f"of {grid_w * grid_h} seeds")
    ws = renderer.ws_from_seeds(list(seeds), c).cpu().numpy()
    return ws.reshape(grid_h, grid_w, len(seeds) // (grid_w * grid_h), *ws.shape[1:])


def interpolators(keyframes: np.ndarray, kind: str = "cubic", wraps: int = 2) -> list[list]:
    """Per grid cell, ``t -> ws [num_ws, w_dim]`` through the keyframes (``t = k`` gives keyframe ``k``)."""
    import scipy.interpolate

    grid_h, grid_w, num_keyframes = keyframes.shape[:3]
    x = np.arange(-num_keyframes * wraps, num_keyframes * (wraps + 1))
    return [[scipy.interpolate.interp1d(x, np.tile(keyframes[yi, xi], [wraps * 2 + 1, 1, 1]), kind=kind, axis=0)
             for xi in range(grid_w)] for yi in range(grid_h)]


def resolve_format(fmt: str) -> str:
    """``'auto'`` -> ``'mp4'`` when imageio's ffmpeg plugin is installed, else ``'gif'``; others unchanged.

    Raises:
        ConfigError: unknown ``fmt``, or ``'mp4'`` without the plugin.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--video-format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt in ("auto", "mp4"):
        try:
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()
            return "mp4"
        except (ImportError, RuntimeError):
            if fmt == "mp4":
                raise ConfigError("--video-format mp4 needs imageio's ffmpeg plugin: pip install imageio-ffmpeg "
                                  "(or use --video-format gif / png)") from None
            return "gif"
    return fmt


def interpolation_video(renderer: Renderer, seeds: Sequence[int], outdir: str | Path, w_frames: int = 120,
                        grid: tuple[int, int] = (1, 1), c: torch.Tensor | None = None, fmt: str = "auto",
                        log: Callable[[str], None] = print) -> Path:
    """Render ``num_keyframes * w_frames`` frames and write ``outdir/video.mp4`` (or ``video.gif``, or
    ``outdir/frames/frame%06d.png``); returns that path. The mp4 / gif is written to a temporary name first.

    Args:
        w_frames: frames from one keyframe to the next (at 60 fps: 120 = 2 s).
        grid: ``(grid_w, grid_h)`` cells, each interpolating its own seeds.
    Raises:
        ConfigError: ``w_frames < 1``, seeds not filling the grid, an unknown or unavailable format.
    """
    if w_frames < 1:
        raise ConfigError(f"--w-frames {w_frames}: must be >= 1 (frames between keyframes)")
    fmt = resolve_format(fmt)
    keyframes = keyframe_ws(renderer, seeds, grid, c)
    cells = interpolators(keyframes)
    n_frames = keyframes.shape[2] * w_frames
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    log(f"video: {n_frames} frames ({keyframes.shape[2]} keyframes x {w_frames}), {grid[0]}x{grid[1]} grid, {fmt}")

    def frame(t: int) -> np.ndarray:
        imgs = [[render_ws(renderer, torch.from_numpy(interp(t / w_frames)).float()[None], t) for interp in row]
                for row in cells]
        return tile(np.stack([np.stack(row) for row in imgs]))

    if fmt == "png":
        (outdir / "frames").mkdir(exist_ok=True)
        for t in range(n_frames):
            save_png(outdir / "frames" / f"frame{t:06d}.png", frame(t))
        return outdir / "frames"
    import imageio.v2 as imageio

    final = outdir / f"video.{fmt}"
    tmp = outdir / f".video.{os.getpid()}.tmp.{fmt}"
    kwargs = dict(fps=FPS, codec="libx264", bitrate="12M") if fmt == "mp4" else dict(duration=1000 / FPS, loop=0)
    try:
        with imageio.get_writer(tmp, mode="I", **kwargs) as writer:
            for t in range(n_frames):
                image = frame(t)
                writer.append_data(image[..., 0] if image.shape[-1] == 1 else image)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final
