"""kdpipe train stylegan2: golden losses, exact resume, snapshots that load as teachers, gradients that flow."""

from __future__ import annotations

import pytest
import torch

from kdpipe.errors import ConfigError
from kdpipe.trainers.core.checkpoint import latest_checkpoint, load_checkpoint
from kdpipe.trainers.stylegan2.run import run

# every phase runs within 4 steps: Greg and Dreg every 2 steps, all three DiffAugment ops, style mixing
TINY = {"data.path": "digits", "data.resolution": 8, "data.batch_size": 4, "model.z_dim": 8, "model.w_dim": 8,
        "model.channel_base": 64, "model.channel_max": 8, "model.pl_interval": 2, "model.r1_interval": 2,
        "model.r1_gamma": 1.0, "model.augment": "color,translation,cutout", "loop.log_every": 1,
        "loop.progress": False, "loop.sample_every": 0, "loop.device": "cpu", "loop.deterministic": True}

# losses of the first 4 steps of TINY (seed 0), recorded on CPU with torch 2.x
GOLDEN_G = [0.64973, 0.60581, 0.66772, 0.66591]
GOLDEN_D = [1.28903, 1.4603, 1.39436, 1.31198]


def _run(tmp_path, name, steps, **extra):
    return run(None, TINY | {"loop.out_dir": str(tmp_path / name), "loop.steps": steps} | extra)


def test_four_step_golden_losses(tmp_path, one_thread):
    records = _run(tmp_path, "g", 4, **{"loop.ckpt_every": 4}).records
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert "Loss/pl_penalty" in records[0] and "Loss/r1_penalty" in records[2] and "Loss/r1_penalty" not in records[1]
    assert [r["Loss/G/loss"] for r in records] == pytest.approx(GOLDEN_G, abs=2e-4)
    assert [r["Loss/D/loss"] for r in records] == pytest.approx(GOLDEN_D, abs=2e-4)


def _assert_same_state(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_run4_equals_run2_resume_run2(tmp_path, one_thread):
    full = _run(tmp_path, "full", 4, **{"loop.ckpt_every": 2})
    _run(tmp_path, "split", 4, **{"loop.ckpt_every": 2, "loop.stop_after": 2})
    resumed = run(None, {"loop.out_dir": str(tmp_path / "split")}, resume=True)
    assert resumed.step == 4
    assert [r["Loss/G/loss"] for r in resumed.records] == [r["Loss/G/loss"] for r in full.records[2:]]
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split"))
    for key in ("G", "G_ema", "D", "opt_G", "opt_D", "pl", "cur_nimg"):  # weights, EMA, optimiser states
        _assert_same_state(a["trainer_state"][key], b["trainer_state"][key], key)
    assert a["step"] == b["step"] == 4 and a["data"] == b["data"]
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        _run(tmp_path, "full", 4)


def test_snapshot_loads_as_teacher_and_renders_like_g_ema(tmp_path, one_thread):
    from kdpipe.pipeline.teacher.formats.safetensors_io import load_generator_safetensors
    from kdpipe.pipeline.teacher.load import load_teacher
    from kdpipe.pipeline.teacher.networks import Generator

    _run(tmp_path, "s", 2, **{"loop.ckpt_every": 2})
    state = load_checkpoint(latest_checkpoint(tmp_path / "s"))["trainer_state"]
    G_ema = Generator(**state["G_kwargs"])
    G_ema.load_state_dict(state["G_ema"])
    G_ema.eval()
    teacher = load_teacher(str(tmp_path / "s" / "network-snapshot-000002.pkl"))
    assert teacher.format == "nvlabs-pytorch" and teacher.D is not None
    st = load_generator_safetensors(tmp_path / "s" / "G_ema-000002.safetensors")
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = G_ema(z, truncation_psi=0.7)
        assert torch.equal(teacher.G(z, truncation_psi=0.7), want)
        assert torch.equal(st(z, truncation_psi=0.7), want)
    assert not torch.equal(state["G_ema"]["mapping.w_avg"], torch.zeros(8))  # w_avg is tracked during training


def test_gradients_reach_every_generator_parameter(one_thread):
    from kdpipe.pipeline.teacher.discriminator import Discriminator
    from kdpipe.pipeline.teacher.networks import Generator

    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, mapping_kwargs={"num_layers": 2},
                  channel_base=64, channel_max=8)
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    D(G.synthesis(G.mapping(torch.randn(4, 8)), noise_mode="random")).sum().backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_init_from_a_teacher_of_another_resolution_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="renders 16px but the data is 8px"):
        _run(tmp_path, "i", 1, **{"model.init": "builtin:random-16"})
