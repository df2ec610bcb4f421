"""The style-mixing grid of NVlabs ``style_mixing.py`` (stylegan2-ada-pytorch).

Rows and columns are seeds; cell (row, col) is the row seed's ws with the layers ``styles`` taken from the column
seed (StyleGAN, Karras et al. 2019, Sec. 3.1 / Fig. 3: layers 0-6 = coarse and middle styles). ws are truncated
on every layer (``w_avg + psi (w - w_avg)``). Files as upstream: ``{row}-{col}.png`` per cell, ``{s}-{s}.png``
per seed (unmixed), and ``grid.png`` with the column seeds along the top, the row seeds down the left and a
black corner. Upstream renders the unmixed images in one batch; kdpipe renders every image at batch 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from kdpipe.errors import ConfigError
from kdpipe.images import save_png
from kdpipe.pipeline.latents import mix_ws
from kdpipe.pipeline.render import Renderer
from kdpipe.pipeline.sampling.images import render_ws, tile


def style_mixing(renderer: Renderer, row_seeds: Sequence[int], col_seeds: Sequence[int], styles: Sequence[int],
                 outdir: str | Path, c: torch.Tensor | None = None, log: Callable[[str], None] = print) -> Path:
    """Write the style-mixing images and ``outdir/grid.png``; returns the grid's path.

    Args:
        styles: layer indices (``ws[:, styles]``) the column seed supplies; each in ``[0, num_ws)``.
    Raises:
        ConfigError: no row or column seeds, or a style layer outside ``[0, num_ws)``.
    """
    num_ws = renderer.G.num_ws
    if not row_seeds or not col_seeds:
        raise ConfigError("--style-mixing needs --rows and --cols (seed lists, e.g. --rows 85,100 --cols 55,821)")
    bad = [s for s in styles if not 0 <= s < num_ws]
    if bad or not styles:
        raise ConfigError(f"--styles {list(styles)}: layers must lie in [0, {num_ws - 1}] for this generator "
                          f"(num_ws={num_ws})")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    seeds = list(dict.fromkeys([*row_seeds, *col_seeds]))
    ws = dict(zip(seeds, renderer.ws_from_seeds(seeds, c).unsqueeze(1)))  # seed -> [1, num_ws, w_dim]
    log(f"style mixing: {len(row_seeds)} x {len(col_seeds)} cells, layers {list(styles)}")
    images = {(s, s): render_ws(renderer, ws[s], s) for s in seeds}
    for row in row_seeds:
        for col in col_seeds:
            images[(row, col)] = render_ws(renderer, mix_ws(ws[row], ws[col], styles), row)
    for (row, col), image in images.items():
        save_png(outdir / f"{row}-{col}.png", image)
    first = images[(seeds[0], seeds[0])]
    cells = np.zeros((len(row_seeds) + 1, len(col_seeds) + 1, *first.shape), np.uint8)
    for j, col in enumerate(col_seeds):
        cells[0, j + 1] = images[(col, col)]
    for i, row in enumerate(row_seeds):
        cells[i + 1, 0] = images[(row, row)]
        for j, col in enumerate(col_seeds):
            cells[i + 1, j + 1] = images[(row, col)]
    return save_png(outdir / "grid.png", tile(cells))
