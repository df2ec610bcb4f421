"""Issue 12: fpng by default, Pillow as option and fallback; same pixels, the encoder only in the fingerprint."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from kdpipe.errors import ConfigError
from kdpipe.pipeline.runner import shards
from kdpipe.pipeline.runner.shards import encode_png

BASE = ["generate", "--task", "style-mix", "--generator", "builtin:random-32", "--no-progress",
        "--set", "render.n=5", "--set", "render.shard_size=3"]


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_fpng_and_pillow_decode_to_the_same_pixels():
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 48 * 40 * 3).reshape(48, 40, 3).astype(np.uint8)
    for image in (smooth, rng.integers(0, 256, (17, 33, 3), dtype=np.uint8), smooth[:, ::2]):  # last: strided view
        fast, slow = encode_png(image, encoder="fpng"), encode_png(image, 1, "pillow")
        assert fast != slow
        np.testing.assert_array_equal(_decode(fast), image)
        np.testing.assert_array_equal(_decode(slow), image)
    with pytest.raises(ConfigError, match="png encoder 'qoi'"):
        encode_png(smooth, encoder="qoi")


def _members(task_dir):
    out = {}
    for tar in sorted((task_dir / "shards").glob("*.tar")):
        with tarfile.open(tar) as f:
            out.update({m.name: f.extractfile(m).read() for m in f.getmembers()})
    return out


def _run(cli, out, *extra):
    res = cli(*BASE, "--out", out, *extra)
    assert res.exit_code == 0, res.output
    return json.loads((out / "style-mix" / "run.json").read_text()), _members(out / "style-mix")


def test_encoder_changes_the_render_fingerprint_and_nothing_else(tmp_path, cli):
    run_f, fast = _run(cli, tmp_path / "f")
    run_p, slow = _run(cli, tmp_path / "p", "--set", "render.png_encoder=pillow")
    assert run_f["png_encoder"]["render"] == "fpng" and run_p["png_encoder"]["render"] == "pillow"
    fp = {r["png_encoder"]["render"]: {s["stage"]: s["fingerprint"] for s in r["stages"]} for r in (run_f, run_p)}
    assert fp["fpng"]["render"] != fp["pillow"]["render"]
    assert sorted(fast) == sorted(slow) and len(fast) == 5 * 5
    for name in fast:
        if name.endswith(".png"):
            assert fast[name] != slow[name], name
            np.testing.assert_array_equal(_decode(fast[name]), _decode(slow[name]))
        else:  # json, latents.npy: same bytes
            assert fast[name] == slow[name], name


def test_missing_fpng_falls_back_to_pillow_once_and_says_so(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(shards, "fpng_available", lambda: False)
    res = cli(*BASE, "--out", tmp_path, "--set", "render.png_encoder=fpng")
    assert res.exit_code == 0, res.output
    assert res.output.count("fpng is not installed") == 1
    run = json.loads((tmp_path / "style-mix" / "run.json").read_text())
    assert run["png_encoder"] == {"render": "pillow", "pairs": "pillow"}
    assert "render.png_encoder" in run["png_encoder_fallback"] and "fall back to Pillow" in run["png_encoder_fallback"]
    assert "png_encoder: fpng" not in (tmp_path / "style-mix" / "config.yaml").read_text()
