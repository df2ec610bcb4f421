"""``kdpipe sample``: load the teacher, build the official-form renderer, write one of the three outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from kdpipe.errors import ConfigError


def sample(generator: str, outdir: str | Path, seeds: Sequence[int] = (), truncation_psi: float = 1.0,
           class_idx: int | None = None, noise_mode: str = "const", grid: bool = False,
           style_mixing: bool = False, rows: Sequence[int] = (), cols: Sequence[int] = (),
           styles: Sequence[int] = tuple(range(7)), video: bool = False, w_frames: int = 120,
           video_grid: tuple[int, int] = (1, 1), video_format: str = "auto", device: str = "auto",
           log: Callable[[str], None] = print) -> list[Path]:
    """Seed images (default; ``grid`` for one contact sheet), the style-mixing grid (``style_mixing``: ``rows``
    x ``cols`` seeds, ``styles`` layers from the column seed) or an interpolation video (``video``) of the teacher
    ``generator`` into ``outdir``; returns the files written (the grid / video / frame folder for those modes).

    Defaults are the official tools': ``truncation_psi = 1``, ``noise_mode = 'const'``, ``styles = 0-6``,
    ``w_frames = 120``. See :mod:`kdpipe.pipeline.sampling.images` for the seed -> image rule.
    Raises:
        ConfigError: bad option combination or values; CheckpointError: an unloadable teacher.
    """
    from kdpipe.devices import resolve_device
    from kdpipe.pipeline.sampling.images import class_label, official_renderer, sample_images
    from kdpipe.pipeline.teacher.load import load_teacher

    if style_mixing and (video or grid):
        raise ConfigError("--style-mixing writes its own grid; do not combine it with --video or --grid")
    if video and grid:
        raise ConfigError("--video and --grid are different outputs; pass one (--video-grid WxH lays out a video)")
    if not style_mixing and not seeds:
        raise ConfigError("no seeds: pass --seeds (e.g. --seeds 0-99,200)")
    if style_mixing and seeds:
        raise ConfigError("--style-mixing takes its seeds from --rows and --cols, not --seeds")
    dev = resolve_device(device)
    teacher = load_teacher(generator, dev)
    log(f"teacher {teacher.name} ({teacher.format}), {teacher.G.img_resolution} px, device {dev}, "
        f"psi={truncation_psi}, noise_mode={noise_mode}")
    renderer = official_renderer(teacher.G, dev, truncation_psi, noise_mode)
    c = class_label(teacher.G, class_idx, log)
    if style_mixing:
        from kdpipe.pipeline.sampling.mixing import style_mixing as mix

        return [mix(renderer, rows, cols, styles, outdir, c, log)]
    if video:
        from kdpipe.pipeline.sampling.video import interpolation_video

        return [interpolation_video(renderer, seeds, outdir, w_frames, video_grid, c, video_format, log)]
    return sample_images(renderer, seeds, outdir, c, grid, log)
