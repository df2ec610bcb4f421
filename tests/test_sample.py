"""``kdpipe sample``: seed images equal the NVlabs gen_images.py rule on an exported official checkpoint; the
style-mixing grid, contact sheet, seeded random noise, video frames; seed-range parsing and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kdpipe.errors import ConfigError
from kdpipe.pipeline.latents import parse_seeds
from kdpipe.pipeline.teacher.networks import Generator

TINY = dict(z_dim=32, w_dim=32, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
            channel_base=256, channel_max=32)


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(path of a stylegan2-ada-pytorch .pkl written by kdpipe's exporter, its loaded G): conditional, c_dim=3,
    with noise strengths and w_avg set so that const noise and truncation both change pixels."""
    from kdpipe.pipeline.teacher.formats.export import write_nvlabs_pytorch_pkl
    from kdpipe.pipeline.teacher.load import load_teacher

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        G = Generator(c_dim=3, **TINY).eval()
        with torch.no_grad():
            for name, t in G.named_buffers():
                if name.endswith("noise_const"):
                    t.normal_()
            for name, t in G.named_parameters():
                if name.endswith("noise_strength"):
                    t.fill_(0.3)
            G.mapping.w_avg.normal_()
    path = write_nvlabs_pytorch_pkl(tmp_path_factory.mktemp("ckpt") / "cond.pkl", G)
    return path, load_teacher(str(path)).G


def official_gen_images(G, seed: int, class_idx: int, psi: float, noise_mode: str = "const") -> np.ndarray:
    """stylegan3 gen_images.py's loop body, verbatim but for the device (G in its default eval form: fused)."""
    label = torch.zeros([1, G.c_dim])
    label[:, class_idx] = 1
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim))
    img = G(z.float(), label, truncation_psi=psi, noise_mode=noise_mode, fused_modconv=True)
    img = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return img[0].cpu().numpy()


def test_parse_seeds_follows_parse_range_and_rejects_bad_parts():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    assert parse_seeds("7") == [7] and parse_seeds("5,5") == [5, 5]
    for bad, what in [("3-1", "backwards"), ("a", "not a seed"), ("", "not a seed"), ("-5", "not a seed"),
                      ("1,,2", "not a seed"), ("0-4294967296", "outside")]:
        with pytest.raises(ConfigError, match=what):
            parse_seeds(bad)


def test_seed_images_equal_the_official_rule_on_an_exported_checkpoint(exported, tmp_path, cli):
    path, G = exported
    res = cli("sample", "--generator", path, "--seeds", "0-2,300", "--trunc", "0.7", "--class", "1",
              "--outdir", tmp_path, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0000.png", "seed0001.png", "seed0002.png",
                                                          "seed0300.png"]
    for seed in (0, 1, 2, 300):
        np.testing.assert_array_equal(_png(tmp_path / f"seed{seed:04d}.png"), official_gen_images(G, seed, 1, 0.7))
    # class and truncation reach the pixels (a test that ignored them would fail here)
    assert not np.array_equal(_png(tmp_path / "seed0000.png"), official_gen_images(G, 0, 2, 0.7))
    assert not np.array_equal(_png(tmp_path / "seed0000.png"), official_gen_images(G, 0, 1, 1.0))


def test_conditional_generator_needs_a_valid_class(exported, tmp_path, cli):
    path, _ = exported
    for extra in ([], ["--class", "3"]):
        res = cli("sample", "--generator", path, "--seeds", "0", "--outdir", tmp_path, "--device", "cpu", *extra)
        assert res.exit_code == 2 and "c_dim=3" in res.stderr and "--class K" in res.stderr
    assert not list(tmp_path.iterdir())


def test_style_mixing_grid_is_the_official_layout(exported, tmp_path):
    from kdpipe.pipeline.sampling.command import sample

    path, G = exported
    grid = sample(str(path), tmp_path, truncation_psi=0.5, class_idx=0, style_mixing=True, rows=[85, 100],
                  cols=[55, 821, 3], styles=[0, 1, 2], device="cpu", log=lambda m: None)[0]
    c = torch.eye(3)[:1]

    def ws(seed):
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
        return G.mapping(z, c, truncation_psi=0.5)

    def image(w):
        img = G.synthesis(w, noise_mode="const", fused_modconv=True)
        return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()

    mixed = ws(100).clone()
    mixed[:, [0, 1, 2]] = ws(821)[:, [0, 1, 2]]
    np.testing.assert_array_equal(_png(tmp_path / "100-821.png"), image(mixed))
    np.testing.assert_array_equal(_png(tmp_path / "55-55.png"), image(ws(55)))
    sheet, r = _png(grid), G.img_resolution
    assert sheet.shape == (3 * r, 4 * r, 3) and not sheet[:r, :r].any()  # black corner
    np.testing.assert_array_equal(sheet[:r, 2 * r:3 * r], image(ws(821)))  # column header
    np.testing.assert_array_equal(sheet[2 * r:, :r], image(ws(100)))  # row header
    np.testing.assert_array_equal(sheet[2 * r:, 2 * r:3 * r], _png(tmp_path / "100-821.png"))
    with pytest.raises(ConfigError, match=r"\[0, 5\]"):  # num_ws = 6 at 16 px
        sample(str(path), tmp_path, class_idx=0, style_mixing=True, rows=[1], cols=[2], styles=[0, 6],
               device="cpu", log=lambda m: None)


def test_grid_tiles_the_seed_images_and_random_noise_is_seeded(tmp_path, cli):
    gen = ["--generator", "builtin:random-16", "--device", "cpu"]
    assert cli("sample", *gen, "--seeds", "0-4", "--outdir", tmp_path / "files").exit_code == 0
    assert cli("sample", *gen, "--seeds", "0-4", "--grid", "--outdir", tmp_path / "grid").exit_code == 0
    sheet = _png(tmp_path / "grid" / "grid.png")
    assert sheet.shape == (2 * 16, 3 * 16, 3) and not sheet[16:, 32:].any()  # 5 images, 3 columns
    np.testing.assert_array_equal(sheet[16:, 16:32], _png(tmp_path / "files" / "seed0004.png"))
    for run in ("r1", "r2"):
        assert cli("sample", *gen, "--seeds", "3", "--noise-mode", "random", "--outdir", tmp_path / run).exit_code == 0
    r1 = _png(tmp_path / "r1" / "seed0003.png")
    np.testing.assert_array_equal(r1, _png(tmp_path / "r2" / "seed0003.png"))
    assert not np.array_equal(r1, _png(tmp_path / "files" / "seed0003.png"))


@pytest.mark.parametrize("fmt", ["png", "gif", "mp4"])
def test_video_has_keyframes_times_w_frames_frames(tmp_path, fmt):
    import imageio.v2 as imageio

    from kdpipe.pipeline.sampling.command import sample

    if fmt == "mp4":
        pytest.importorskip("imageio_ffmpeg")
    out = sample("builtin:random-16", tmp_path, seeds=[4, 9], video=True, w_frames=3, video_format=fmt,
                 device="cpu", log=lambda m: None)[0]
    seed4 = sample("builtin:random-16", tmp_path / "still", seeds=[4], device="cpu", log=lambda m: None)[0]
    if fmt == "png":
        frames = [_png(p) for p in sorted(out.glob("frame*.png"))]
    else:
        assert out.name == f"video.{fmt}" and not list(tmp_path.glob(".video*"))
        frames = [np.asarray(f)[..., :3] for f in imageio.mimread(out)]
    assert len(frames) == 6
    diff = np.abs(frames[0].astype(int) - _png(seed4).astype(int))
    assert diff.max() <= (1 if fmt != "mp4" else 255) and (fmt != "mp4" or diff.mean() < 20)  # lossy codec
    assert not np.array_equal(frames[0], frames[3])  # keyframe 2 is another seed


def test_bad_option_combinations_are_one_line_errors(tmp_path, cli):
    gen = ["--generator", "builtin:random-16", "--device", "cpu", "--outdir", tmp_path]
    for args, what in [((), "no seeds"), (("--seeds", "1", "--grid", "--video"), "--video and --grid"),
                       (("--style-mixing", "--rows", "1", "--cols", "2", "--seeds", "3"), "--rows and --cols"),
                       (("--seeds", "2-1"), "backwards"), (("--seeds", "0", "--video", "--video-grid", "2"), "WxH"),
                       (("--seeds", "0", "--noise-mode", "fresh"), "const, random, none")]:
        res = cli("sample", *gen, *args)
        assert res.exit_code == 2 and what in res.stderr, (args, res.output)
