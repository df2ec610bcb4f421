"""kdpipe preview (contact sheet of a dataset) and the `kdpipe train stylegan2` command's wiring."""

from __future__ import annotations

import numpy as np
from PIL import Image


def test_preview_tiles_triplets_in_sample_order(tmp_path, cli, one_thread):
    res = cli("generate", "--task", "style-mix", "-n", "3", "--generator", "builtin:random-16", "--out", tmp_path,
              "--no-progress", "--set", "runtime.device=cpu")
    assert res.exit_code == 0, res.stderr
    png = tmp_path / "sheet.png"
    res = cli("preview", tmp_path / "style-mix", "--png", png, "--rows", "3", "--scale", "2")
    assert res.exit_code == 0, res.stderr
    sheet = np.asarray(Image.open(png))
    assert sheet.shape == (2 * (3 * 16 + 2 * 2), 2 * (3 * 16 + 2 * 2), 3)
    import tarfile

    tar = sorted((tmp_path / "style-mix" / "shards").glob("*.tar"))[0]
    with tarfile.open(tar) as tf:
        name = sorted(m.name for m in tf.getmembers() if m.name.endswith(".y.png"))[0]
        y0 = np.asarray(Image.open(tf.extractfile(name)).convert("RGB"))
    assert np.array_equal(sheet[0:32:2, 2 * 36:2 * 52:2], y0)  # first row, third image = first sample's y
    missing = cli("preview", tmp_path / "nothing", "--png", png)
    assert missing.exit_code == 2 and "no shards" in missing.stderr


def test_train_stylegan2_is_mounted_and_reports_errors_in_one_line(tmp_path, cli):
    assert " stylegan2 " in cli("train", "--help").stdout
    res = cli("train", "stylegan2", "--out", tmp_path / "run", "--data", tmp_path / "missing")
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "does not exist" in res.stderr
    (tmp_path / "empty").mkdir()
    res = cli("train", "stylegan2", "--out", tmp_path / "run", "--data", tmp_path / "empty")
    assert res.exit_code == 2 and "no images found" in res.stderr
