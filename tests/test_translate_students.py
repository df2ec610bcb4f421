"""Issue 17 item 4: ``kdpipe translate`` for every registered trainer: StarGANv2 students reference-guided and
latent-guided, StyleGAN2 students by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from kdpipe.errors import ConfigError, KdpipeError
from kdpipe.images import read_image_file, to_float, to_uint8
from kdpipe.pipeline.latents import parse_seeds, z_from_seeds
from kdpipe.trainers.core.checkpoint import latest_checkpoint, load_checkpoint
from kdpipe.trainers.stargan2.train_ft import run_ft
from kdpipe.trainers.stargan2.train_kd import run_kd
from kdpipe.trainers.stargan2.translate import StarGAN2Student
from kdpipe.trainers.translate import translate

TINY_MODEL = {"model.img_size": 16, "model.dim_in": 8, "model.max_conv_dim": 32, "model.num_down": 2,
              "model.hidden_dim": 16, "model.style_dim": 8}
TINY_LOOP = {"loop.device": "cpu", "loop.progress": False, "loop.log_every": 1, "loop.sample_every": 0,
             "loop.deterministic": True}

pytestmark = pytest.mark.usefixtures("one_thread")


def _write(path: Path, seed: int, hw=(16, 16)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step StarGANv2 finetuning run (domains cat, dog), source photos, and references by domain folder."""
    root = tmp_path_factory.mktemp("sg2")
    for d, name in enumerate(["cat", "dog"]):
        for i in range(2):
            _write(root / "data" / name / f"{i}.png", 10 * d + i)
    run_ft(None, {"data.path": str(root / "data"), "data.batch_size": 2, "loop.steps": 2,
                  "loop.out_dir": str(root / "run"), **TINY_MODEL, **TINY_LOOP})
    _write(root / "src" / "a.png", 100, (20, 24))  # resized to 16x16
    _write(root / "src" / "b.png", 101)
    _write(root / "ref" / "cat" / "r1.png", 200)
    _write(root / "ref" / "dog" / "r1.png", 201)
    _write(root / "ref" / "dog" / "r2.png", 202)
    return root, latest_checkpoint(root / "run")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """uint8 images equal up to 1 level (float batches of 2 vs 1 round differently)."""
    return a.shape == b.shape and int((a.int() - b.int()).abs().max()) <= 1


def _expected(student: StarGAN2Student, src: Path, s: torch.Tensor) -> torch.Tensor:
    x = to_float(read_image_file(src))[None]
    if x.shape[-2:] != (16, 16):
        x = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    return to_uint8(student.synthesize(x, s))[0]


def test_reference_and_latent_guided_outputs_equal_the_networks(run, cli):
    root, ckpt = run
    out = root / "out"
    r = cli("translate", "--checkpoint", ckpt, "--ref-dir", root / "ref", "--seeds", "0-1", "--domain", "dog",
            root / "src", out)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{s}__{x}" for s in "ab" for x in (
        "cat__ref-r1.png", "dog__ref-r1.png", "dog__ref-r2.png", "dog__seed0000.png", "dog__seed0001.png"))
    state = load_checkpoint(ckpt)
    assert state["trainer_state"]["domains"] == ["cat", "dog"]
    student = StarGAN2Student(state, use_ema=True)
    ref = to_float(read_image_file(root / "ref" / "dog" / "r2.png"))[None]
    s_ref = student.reference_styles(ref, [1])[0]
    got = read_image_file(out / "a__dog__ref-r2.png").permute(1, 2, 0)
    assert _same(got, _expected(student, root / "src" / "a.png", s_ref))
    s_lat = student.mapping_network(z_from_seeds([1], student.latent_dim), torch.tensor([1]))[0]
    got = read_image_file(out / "b__dog__seed0001.png").permute(1, 2, 0)
    assert _same(got, _expected(student, root / "src" / "b.png", s_lat))
    # the EMA networks are used: the trained ones give another style for the same seed
    raw = StarGAN2Student(state, use_ema=False)
    assert not torch.equal(raw.latent_styles([1], 1), student.latent_styles([1], 1))
    # the style, not the source, changes between seeds; a seed is the same style in every call
    assert not _same(got, read_image_file(out / "b__dog__seed0000.png").permute(1, 2, 0))
    again = translate(ckpt, [root / "src" / "b.png"], root / "again", seeds=[1], domains=["1"], device="cpu")
    assert [p.name for p in again] == ["b__dog__seed0001.png"]
    assert _same(read_image_file(again[0]).permute(1, 2, 0), got)


def test_latent_guided_defaults_to_every_domain_and_flat_references_take_domain(run):
    root, ckpt = run
    written = translate(ckpt, [root / "src" / "b.png"], root / "all", seeds=[7], device="cpu")
    assert [p.name for p in written] == ["b__cat__seed0007.png", "b__dog__seed0007.png"]
    flat = translate(ckpt, [root / "src" / "b.png"], root / "flat", ref=[root / "ref" / "dog"], domains=["cat"],
                     device="cpu")
    assert [p.name for p in flat] == ["b__cat__ref-r1.png", "b__cat__ref-r2.png"]
    (root / "badref" / "bird").mkdir(parents=True, exist_ok=True)
    with pytest.raises(KdpipeError, match="has sub-folders but none named after a domain \\(cat, dog\\)"):
        translate(ckpt, [root / "src"], root / "x", ref=[root / "badref"], device="cpu")
    with pytest.raises(KdpipeError, match="not in domain sub-folders .* exactly one --domain"):
        translate(ckpt, [root / "src"], root / "x", ref=[root / "ref" / "dog"], device="cpu")


def test_bad_requests_are_one_line_errors(run, cli):
    root, ckpt = run
    with pytest.raises(KdpipeError, match="needs a style: --ref-dir"):
        translate(ckpt, [root / "src"], root / "x", device="cpu")
    with pytest.raises(KdpipeError, match="--domain 'bird' is not a domain .* cat, dog"):
        translate(ckpt, [root / "src"], root / "x", seeds=[0], domains=["bird"], device="cpu")
    with pytest.raises(KdpipeError, match="--x2 does not apply to 'stargan2'"):
        translate(ckpt, [root / "src"], root / "x", seeds=[0], x2=[root / "src"], device="cpu")
    with pytest.raises(KdpipeError, match="16x16 px only"):
        translate(ckpt, [root / "src"], root / "x", seeds=[0], size=32, device="cpu")
    with pytest.raises(KdpipeError, match="contains the input"):
        translate(ckpt, [root / "src" / "a.png"], root / "src", seeds=[0], device="cpu")
    r = cli("translate", "--checkpoint", ckpt, "--seeds", "3-1", root / "src", root / "x")
    assert r.exit_code == 2 and "--seeds '3-1'" in r.output
    assert not (root / "x").exists()


def test_kd_student_has_one_domain(tmp_path):
    run_kd(None, {"teacher.spec": "builtin:random-16", "loop.out_dir": str(tmp_path / "kd"), "loop.steps": 1,
                  "loss.mode": "both", **TINY_MODEL, **TINY_LOOP})
    _write(tmp_path / "src" / "a.png", 1)
    _write(tmp_path / "refs" / "r.png", 2)
    written = translate(latest_checkpoint(tmp_path / "kd"), [tmp_path / "src"], tmp_path / "out",
                        ref=[tmp_path / "refs"], seeds=[0], device="cpu")
    assert [p.name for p in written] == ["a__0__ref-r.png", "a__0__seed0000.png"]


def test_parse_seeds_follows_nvlabs_ranges():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    assert parse_seeds("5") == [5] and parse_seeds("2, 1") == [2, 1]
    for bad in ("", "a", "3-1", "1-", "-2", f"0,{2 ** 32}", f"0-{2 ** 40}"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_every_registered_trainer_has_a_translate_hook():
    from kdpipe.trainers.registry import TRAINERS

    missing = [n for n, spec in TRAINERS.items() if spec.generator is None and spec.translate is None]
    assert not missing, f"fill generator= or translate= in the TrainerSpec of {missing}"


def test_stylegan2_student_draws_one_image_per_seed_like_its_snapshot(tmp_path, cli):
    from kdpipe.pipeline.teacher.load import load_teacher
    from kdpipe.trainers.stylegan2.run import run

    tiny = {"data.path": "digits", "data.resolution": 8, "data.batch_size": 2, "model.z_dim": 8, "model.w_dim": 8,
            "model.channel_base": 64, "model.channel_max": 8, "loop.steps": 1, "loop.ckpt_every": 1,
            "loop.out_dir": str(tmp_path / "sg"), **TINY_LOOP}
    run(None, tiny)
    ckpt = latest_checkpoint(tmp_path / "sg")
    r = cli("translate", "--checkpoint", ckpt, "--seeds", "3,1", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seed0001.png", "seed0003.png"]
    G = load_teacher(str(tmp_path / "sg" / "network-snapshot-000001.pkl")).G  # the official-layout snapshot
    with torch.no_grad():
        want = to_uint8(G(z_from_seeds([3], 8), truncation_psi=1.0, noise_mode="const"))[0]
    assert _same(read_image_file(tmp_path / "out" / "seed0003.png").permute(1, 2, 0), want)
    with pytest.raises(KdpipeError, match="unconditional: they take no input images"):
        translate(ckpt, [tmp_path / "out"], tmp_path / "o2", seeds=[0], device="cpu")
    with pytest.raises(KdpipeError, match="--domain does not apply to 'stylegan2'"):
        translate(ckpt, [], tmp_path / "o2", seeds=[0], domains=["0"], device="cpu")
    r = cli("translate", "--checkpoint", ckpt, tmp_path / "o2")
    assert r.exit_code == 2 and "give at least one input" in r.output
