"""pix2pixHD student: upstream layout, pinned losses, exact resume, learning the edit, triplets, DDP, errors, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from _p2p_fixtures import (colour_edit, make_pair_shards, make_triplet_shards, p2p_overrides, smooth_image,
                           write_sums)
from kdpipe.errors import CheckpointError, ConfigError, DatasetError
from kdpipe.trainers.core.checkpoint import TrainCheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint
from kdpipe.trainers.core.loop import read_metrics
from kdpipe.trainers.pix2pixhd import build_discriminator, build_generator, run
from kdpipe.trainers.pix2pixhd.losses import VGG19_ENV, VGGLoss
from kdpipe.trainers.pix2pixhd.train import lr_at
from kdpipe.trainers.translate import translate

LOSSES = ("loss_G_GAN", "loss_G_GAN_Feat", "loss_D_real", "loss_D_fake")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return make_pair_shards(tmp_path_factory.mktemp("p2p"), n=16, per_shard=8)


@pytest.fixture(scope="module")
def triplets(tmp_path_factory) -> Path:
    return make_triplet_shards(tmp_path_factory.mktemp("trip"), n=8, per_shard=4)


def _losses(records):
    return [[r[k] for k in LOSSES] for r in records]


# ------------------------------------------------------------------------------------------------ networks

def test_state_dict_layout_matches_upstream_defaults():
    """Upstream pix2pixHD key names/shapes (ngf 64, 4 downsamplings, 9 blocks; 2 PatchGANs, 3 layers)."""
    with torch.device("meta"):
        G = build_generator(3)
        D = build_discriminator(6)
        L = build_generator(3, netG="local", ngf=32)
    g, d, loc = G.state_dict(), D.state_dict(), L.state_dict()
    assert g["model.1.weight"].shape == (64, 3, 7, 7)
    assert g["model.16.conv_block.1.weight"].shape == (1024, 1024, 3, 3)
    assert g["model.25.weight"].shape == (1024, 512, 3, 3)  # first ConvTranspose2d
    assert g["model.38.weight"].shape == (3, 64, 7, 7) and len(G.model) == 40
    assert d["scale0_layer0.0.weight"].shape == (64, 6, 4, 4) and d["scale1_layer4.0.weight"].shape == (1, 512, 4, 4)
    assert loc["model1_1.1.weight"].shape == (32, 3, 7, 7) and loc["model1_2.7.weight"].shape == (3, 32, 7, 7)
    assert loc["model.1.weight"].shape == (64, 3, 7, 7) and len(L.model) == 37


def test_local_enhancer_and_discriminator_shapes():
    torch.manual_seed(0)
    L = build_generator(6, netG="local", ngf=4, n_downsample_global=2, n_blocks_global=1, n_blocks_local=1)
    assert L(torch.randn(2, 6, 32, 32)).shape == (2, 3, 32, 32)
    out = build_discriminator(9, ndf=4, n_layers_D=2, num_D=3)(torch.randn(2, 9, 32, 32))
    assert len(out) == 3 and all(len(s) == 4 for s in out)
    assert [s[-1].shape[-1] for s in out] == [11, 7, 5]  # patch logits per scale (finest first)


def test_lr_is_constant_then_linear_to_zero():
    assert [lr_at(s, 1.0, 8, None) for s in range(8)] == [1, 1, 1, 1, 1, 0.75, 0.5, 0.25]


# --------------------------------------------------------------------------------------- golden and resume

# loss_G_GAN, loss_G_GAN_Feat, loss_D_real, loss_D_fake per step (TINY_P2P on the 16-pair fixture, seed 0, CPU)
GOLDEN_4_STEPS = [
    [2.0352857, 9.6641178, 2.0383072, 0.11250658],
    [1.9028971, 10.112506, 1.9343112, 0.12884621],
    [1.7850776, 10.863293, 1.8094885, 0.10489626],
    [1.6805398, 9.7513647, 1.6636397, 0.15777281],
]


def test_four_steps_pin_losses(pairs, tmp_path):
    res = run(overrides=p2p_overrides(pairs, tmp_path / "run", 4, **{"loop.sample_every": 2}))
    got = _losses(res.records)
    np.testing.assert_allclose(got, GOLDEN_4_STEPS, rtol=2e-4)
    assert _losses(read_metrics(tmp_path / "run" / "metrics.jsonl")) == got
    assert (tmp_path / "run" / "samples" / "step-00000002.png").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["ckpt-00000004.pt"]


def test_bf16_autocast_trains_close_to_fp32(pairs, tmp_path):
    res = run(overrides=p2p_overrides(pairs, tmp_path / "run", 2, **{"loop.precision": "bf16"}))
    np.testing.assert_allclose(_losses(res.records), GOLDEN_4_STEPS[:2], rtol=3e-2)
    assert _losses(res.records) != GOLDEN_4_STEPS[:2]  # autocast really ran in bf16


def test_resume_2_plus_2_equals_4(pairs, tmp_path):
    extra = {"loop.ema_decay": 0.5, "data.batch_size": 3}  # 3 does not divide 16: crosses an epoch boundary
    full = run(overrides=p2p_overrides(pairs, tmp_path / "full", 6, **extra))
    part = run(overrides=p2p_overrides(pairs, tmp_path / "part", 6, **extra, **{"loop.stop_after": 2}))
    assert part.step == 2
    rest = run(overrides={"loop.out_dir": str(tmp_path / "part")}, resume=True)  # config from the checkpoint
    assert rest.step == 6
    assert _losses(part.records + rest.records) == _losses(full.records)
    assert _losses(read_metrics(tmp_path / "part" / "metrics.jsonl")) == _losses(full.records)
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "part"))
    assert a["data"] == b["data"] == {"epoch": 1, "offset": 2}
    for name in ("G", "D", "G_ema"):
        for k, v in a["trainer_state"][name].items():
            assert torch.equal(v, b["trainer_state"][name][k]), (name, k)
    assert torch.equal(a["trainer_state"]["opt_G"]["state"][0]["exp_avg_sq"],
                       b["trainer_state"]["opt_G"]["state"][0]["exp_avg_sq"])


# ----------------------------------------------------------------------------------------- learning, triplets

def test_student_learns_the_teacher_edit(pairs, tmp_path):
    """After 60 steps the student's L1 to the targets is well below the identity mapping's."""
    res = run(overrides=p2p_overrides(pairs, tmp_path / "run", 60, **{
        "model.lr": 1e-3, "data.batch_size": 4, "loop.log_every": 20}))
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    rng = np.random.default_rng(0)  # the fixture's own images (seed 0): the training set
    srcs = [smooth_image(rng, 32) for _ in range(16)]
    for i, s in enumerate(srcs):
        PIL.Image.fromarray(s).save(src_dir / f"face_{i:02d}.png")
    written = translate(res.checkpoints[-1], [src_dir], tmp_path / "out", batch_size=5, device="cpu")
    assert [p.name for p in written] == [f"face_{i:02d}.png" for i in range(16)]
    out = np.stack([np.asarray(PIL.Image.open(p)) for p in written]).astype(np.float32) / 127.5
    tgt = np.stack([colour_edit(s) for s in srcs]).astype(np.float32) / 127.5
    identity = np.abs(np.stack(srcs).astype(np.float32) / 127.5 - tgt).mean()
    student = np.abs(out - tgt).mean()
    assert student < 0.5 * identity, (student, identity)


def test_triplet_shards_train_a_6_channel_student(triplets, tmp_path):
    res = run(overrides=p2p_overrides(triplets, tmp_path / "run", 2, **{"data.batch_size": 2}))
    assert np.isfinite(_losses(res.records)).all() and len(res.records) == 2
    ts = load_checkpoint(res.checkpoints[-1])["trainer_state"]
    assert ts["kind"] == "triplet" and ts["generator_kwargs"]["input_nc"] == 6
    assert ts["D"]["scale0_layer0.0.weight"].shape[1] == 9
    x1, x2 = tmp_path / "x1", tmp_path / "x2"
    for d in (x1, x2):
        d.mkdir()
        for i in range(3):
            PIL.Image.fromarray(smooth_image(np.random.default_rng(i), 32)).save(d / f"{i}.png")
    assert len(translate(res.checkpoints[-1], [x1], tmp_path / "out", x2=[x2], device="cpu")) == 3
    with pytest.raises(DatasetError, match="triplet student .* pass --x2"):
        translate(res.checkpoints[-1], [x1], tmp_path / "out", device="cpu")


# ------------------------------------------------------------------------------------------------- errors

def test_errors_are_one_line(pairs, triplets, tmp_path):
    cases = []

    def expect(exc_type, match, **kw):
        with pytest.raises(exc_type, match=match) as err:
            run(**kw)
        assert "\n" not in str(err.value)
        cases.append(match)

    o = lambda data, out, **e: p2p_overrides(data, tmp_path / out, 1, **e)  # noqa: E731
    expect(DatasetError, "does not exist", overrides=o(tmp_path / "no_such_task", "r1"))
    (tmp_path / "empty" / "shards").mkdir(parents=True)
    import webdataset as wds
    wds.TarWriter(str(tmp_path / "empty" / "shards" / "e-000000.tar")).close()
    write_sums(tmp_path / "empty")
    expect(DatasetError, "is empty", overrides=o(tmp_path / "empty", "r2"))
    expect(DatasetError, "holds pair samples .* expects triplet", overrides=o(pairs, "r3", **{"data.kind": "triplet"}))
    run(overrides=o(pairs, "r4"))
    expect(ConfigError, "already holds checkpoints", overrides=o(pairs, "r4"))
    expect(ConfigError, "model.ngf was 8 in that run, now 16", overrides=o(pairs, "r4", **{"model.ngf": 16}),
           resume=True)
    ckpt = latest_checkpoint(tmp_path / "r4")
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    expect(TrainCheckpointError, "unreadable or corrupt", overrides=o(pairs, "r4"), resume=True)
    expect(TrainCheckpointError, "unreadable or corrupt", overrides=o(pairs, "r5"), resume_from=ckpt)
    expect(TrainCheckpointError, "no checkpoints", overrides=o(pairs, "r6"), resume=True)
    assert len(cases) == 8


# ---------------------------------------------------------------------------------------------------- VGG

def test_vgg_loss_from_a_local_file_only(pairs, tmp_path, monkeypatch):
    import torchvision

    monkeypatch.delenv(VGG19_ENV, raising=False)
    torch.manual_seed(0)
    weights = tmp_path / "vgg19.pth"
    vgg19_features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])  # = vgg19().features
    torch.save({f"features.{k}": v for k, v in vgg19_features.state_dict().items()}, weights)
    loss = VGGLoss(weights)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(x, x).item() == 0.0 and loss(x, -x).item() > 0
    monkeypatch.setenv(VGG19_ENV, str(weights))
    res = run(overrides=p2p_overrides(pairs, tmp_path / "with_vgg", 1, **{"model.vgg_loss": True}))
    assert res.records[0]["loss_G_VGG"] > 0
    monkeypatch.delenv(VGG19_ENV)
    with pytest.warns(UserWarning, match="VGG19 perceptual loss is OFF"):
        res = run(overrides=p2p_overrides(pairs, tmp_path / "without", 1, **{"model.vgg_loss": True}))
    assert res.records[0]["loss_G_VGG"] == 0.0
    with pytest.raises(CheckpointError, match="do not exist"):
        run(overrides=p2p_overrides(pairs, tmp_path / "bad", 1, **{"model.vgg_loss": True,
                                                                   "model.vgg_weights": str(tmp_path / "x.pth")}))


# ------------------------------------------------------------------------------------------------ CLI, DDP

def test_cli_train_and_translate(pairs, tmp_path):
    from typer.testing import CliRunner

    from kdpipe.cli import app

    runner = CliRunner()
    args = ["train", "pix2pixhd", "--data", str(pairs), "--out", str(tmp_path / "run"), "--steps", "2", "--no-progress",
            "--device", "cpu", "--set", "model.ngf=8", "--set", "model.n_downsample_global=2",
            "--set", "model.n_blocks_global=1", "--set", "model.ndf=8", "--set", "data.num_workers=0", "--set", "model.vgg_loss=false"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert state["config"]["model"]["ngf"] == 8 and state["config"]["loop"]["steps"] == 2
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "error: " in r.output
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    PIL.Image.fromarray(smooth_image(np.random.default_rng(0), 48)).save(imgs / "a.jpg")
    r = runner.invoke(app, ["translate", "--checkpoint", str(latest_checkpoint(tmp_path / "run")), str(imgs / "a.jpg"),
                            str(tmp_path / "out"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert PIL.Image.open(tmp_path / "out" / "a.jpg").size == (32, 32)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_one_process_with_twice_the_batch(pairs, tmp_path):
    common = ["--data", str(pairs), "--steps", "2", "--no-progress", "--device", "cpu", "--set", "loop.log_every=1",
              "--set", "model.ngf=8", "--set", "model.n_downsample_global=2", "--set", "model.n_blocks_global=1",
              "--set", "model.ndf=8", "--set", "model.n_layers_D=2", "--set", "data.num_workers=0",
              "--set", "data.shuffle_buffer=8", "--set", "model.vgg_loss=false"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "kdpipe.cli", "train", "pix2pixhd", "--out", str(tmp_path / "ddp"), "--batch-size", "1", *common]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in list_checkpoints(tmp_path / "ddp")] == ["ckpt-00000002.pt"]
    ddp = load_checkpoint(latest_checkpoint(tmp_path / "ddp"))
    assert ddp["data"] == {"epoch": 0, "offset": 4}
    single = run(overrides=p2p_overrides(pairs, tmp_path / "single", 2, **{"data.batch_size": 2}))
    np.testing.assert_allclose(_losses(read_metrics(tmp_path / "ddp" / "metrics.jsonl")), _losses(single.records),
                               rtol=1e-4)
    ref = load_checkpoint(single.checkpoints[-1])["trainer_state"]["G"]
    for k, v in ddp["trainer_state"]["G"].items():
        torch.testing.assert_close(v, ref[k], atol=1e-3, rtol=0)
