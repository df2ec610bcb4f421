"""``kdpipe train stylegan2-compress`` (seed 003): student initialisation, Eq. 3 / 9 / 10 against direct
computation, the direction dictionary, exact resume and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdpipe.errors import ConfigError
from kdpipe.pipeline.teacher.load import load_teacher
from kdpipe.pipeline.teacher.networks import Generator
from kdpipe.trainers.core.checkpoint import latest_checkpoint, load_checkpoint
from kdpipe.trainers.stylegan2.compress_losses import (lpips_loss, load_directions, pca_directions, relation_kd_loss,
                                                       rgb_loss, style_mimic_loss)
from kdpipe.trainers.stylegan2.compress_report import compress_report, generator_macs
from kdpipe.trainers.stylegan2.compress_student import initialise_student, kept_channels, student_kwargs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher() -> Generator:
    return load_teacher("builtin:random-16").G


def _student(teacher, mult=0.5, init_style="inherit", init_synthesis="random", mapping_layers=None, seed=0):
    torch.manual_seed(seed)
    G = Generator(**student_kwargs(teacher, mult, mapping_layers))
    initialise_student(G, teacher, init_style, init_synthesis)
    return G.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------- student

def test_inherited_style_module_gives_the_teachers_ws(teacher):
    z = torch.randn(5, teacher.z_dim)
    student = _student(teacher)
    assert student.synthesis.b16.conv1.weight.shape[0] == teacher.synthesis.b16.conv1.weight.shape[0] // 2
    assert torch.equal(student.mapping(z), teacher.mapping(z))
    assert torch.equal(student.mapping.w_avg, teacher.mapping.w_avg)
    assert not torch.allclose(_student(teacher, init_style="random").mapping(z), teacher.mapping(z))


@pytest.mark.parametrize("how", ["inherit", "pruned"])
def test_inheriting_every_channel_reproduces_the_teacher(teacher, how):
    """Multiplier 1 with inherited (or all-channels-pruned) C and S: bit-identical images."""
    z = torch.randn(3, teacher.z_dim)
    assert torch.equal(_student(teacher, 1.0, "inherit", how)(z), teacher(z))


def test_pruning_keeps_the_channels_with_the_largest_filter_norms(teacher):
    student = _student(teacher, 0.5, "inherit", "pruned")
    kept = kept_channels(teacher, student, "pruned")
    b = teacher.synthesis.b8
    score = b.conv0.weight.abs().sum(dim=[1, 2, 3]) + b.conv1.weight.abs().sum(dim=[1, 2, 3])
    n = student.synthesis.b8.conv1.weight.shape[0]
    assert sorted(kept[8].tolist()) == sorted(torch.argsort(score, descending=True)[:n].tolist())
    i = kept[8]
    assert torch.equal(student.synthesis.b8.conv1.weight, b.conv1.weight[i][:, i])
    assert torch.equal(student.synthesis.b8.conv0.weight, b.conv0.weight[i][:, kept[4]])
    assert torch.equal(student.synthesis.b8.conv0.affine.weight, b.conv0.affine.weight[kept[4]])
    assert torch.equal(student.synthesis.b16.torgb.weight, teacher.synthesis.b16.torgb.weight[:, kept[16]])


def test_noise_maps_are_always_the_teachers(teacher):
    student = _student(teacher, 0.5, "random", "random")
    assert torch.equal(student.synthesis.b16.conv0.noise_const, teacher.synthesis.b16.conv0.noise_const)


def test_another_mapping_depth_cannot_inherit_s(teacher):
    with pytest.raises(ConfigError, match="init_style=random"):
        _student(teacher, 0.5, "inherit", mapping_layers=1)
    assert _student(teacher, 0.5, "random", mapping_layers=1).mapping.num_layers == 1


def test_a_multiplier_leaving_no_channels_is_refused(teacher):
    with pytest.raises(ConfigError, match="channel_multiplier"):
        student_kwargs(teacher, 0.01)


# ------------------------------------------------------------------------------------------------ losses

def test_relation_loss_is_zero_for_equal_relations_and_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    f_t, f_t_aug = torch.randn(4, 6, 2, 2, generator=g), torch.randn(4, 6, 2, 2, generator=g)
    f_s, f_s_aug = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    assert float(relation_kd_loss(f_t, f_t_aug, f_t, f_t_aug)) == pytest.approx(0, abs=1e-7)
    # same relations with a rescaled, channel-permuted student: still 0 (cosine similarities)
    assert float(relation_kd_loss(f_t, f_t_aug, 3 * f_t.flip(1), 3 * f_t_aug.flip(1))) == pytest.approx(0, abs=1e-6)

    def relation(f, fa, tau):
        f = f.reshape(4, -1).double().numpy()
        fa = fa.reshape(4, -1).double().numpy()
        f, fa = f / np.linalg.norm(f, axis=1, keepdims=True), fa / np.linalg.norm(fa, axis=1, keepdims=True)
        a = np.array([[f[i] @ fa[j] for j in range(4)] for i in range(4)]) / tau
        return np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)

    for tau in (1.0, 0.1):
        m_t, m_s = relation(f_t, f_t_aug, tau), relation(f_s, f_s_aug, tau)
        expected = np.mean([sum(m_t[i, j] * np.log(m_t[i, j] / m_s[i, j]) for j in range(4)) for i in range(4)])
        got = float(relation_kd_loss(f_t, f_t_aug, f_s, f_s_aug, tau))
        assert got == pytest.approx(expected, rel=1e-5) and got > 0


def test_rgb_and_style_mimic_losses_match_direct_computation():
    a, b = torch.tensor([[1.0, -2.0], [0.5, 0.0]]), torch.tensor([[0.0, 1.0], [0.5, 2.0]])
    assert float(rgb_loss(a, b)) == pytest.approx((1 + 3 + 0 + 2) / 4)
    assert float(style_mimic_loss(a, b, "l1")) == pytest.approx(6 / 4)
    assert float(style_mimic_loss(a, b, "l2")) == pytest.approx((1 + 9 + 0 + 4) / 4)


def test_lpips_loss_equals_the_metric_and_has_gradients(tmp_path):
    import torchvision

    from kdpipe.trainers.metrics.lpips import load_lpips

    torch.manual_seed(0)
    path = tmp_path / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    metric = load_lpips("alex", path)
    a = torch.rand(2, 3, 16, 16) * 2 - 1
    b = torch.rand(2, 3, 16, 16) * 2 - 1
    a.requires_grad_(True)
    loss = lpips_loss(metric, a, b)
    assert float(loss.detach()) == pytest.approx(float(metric(a.detach(), b).mean()), rel=1e-5)
    loss.backward()
    assert a.grad is not None and float(a.grad.abs().sum()) > 0


def test_pca_dictionary_shifts_only_its_layer_by_one_standard_deviation(teacher):
    d = pca_directions(teacher, n_components=3, n_samples=256)
    assert d.vectors.shape == (3 * teacher.num_ws, teacher.w_dim) and len(d) == 3 * teacher.num_ws
    assert d.layers.sum(dim=1).eq(1).all()
    from kdpipe.pipeline.latents import z_from_seeds

    w = teacher.mapping(z_from_seeds(range(256), teacher.z_dim))[:, 0]
    v = d.vectors[0]
    assert float((w @ (v / v.norm())).std()) == pytest.approx(float(v.norm()), rel=1e-3)
    ws = teacher.mapping(torch.randn(2, teacher.z_dim))
    k = teacher.num_ws + 2  # second principal direction, on ws layer 2
    shifted = d.shift(ws, torch.tensor([k, k]), torch.tensor([1.0, -2.0]))
    changed = (shifted - ws).abs().sum(dim=2) > 0
    assert changed[:, 2].all() and changed.sum() == 2
    assert torch.allclose(shifted[1, 2] - ws[1, 2], -2 * d.vectors[k])


def test_pipeline_directions_load_on_their_layers(tmp_path):
    path = tmp_path / "direction.json"
    path.write_text(json.dumps({"kind": "binary", "vector": [1.0, 2.0, 3.0], "layers": [1, 3]}))
    d = load_directions([path], num_ws=4, w_dim=3)
    assert d.vectors.tolist() == [[1.0, 2.0, 3.0]] and d.layers.tolist() == [[False, True, True, False]]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "binary", "vector": [1.0, 2.0]}))
    with pytest.raises(ConfigError, match="bad.json"):
        load_directions([bad], num_ws=4, w_dim=3)


# ----------------------------------------------------------------------------------------- run + report

TINY = {"teacher.spec": "builtin:random-16", "data.batch_size": 4, "loop.deterministic": True,
        "loop.sample_every": 0, "loop.log_every": 1, "loop.ckpt_every": 2, "loop.device": "cpu",
        "loop.progress": False, "loss.lambda_lpips": 0.0, "loss.ld_pca_components": 2, "loss.ld_pca_samples": 64,
        "report.seeds": 4, "report.fid_samples": 0, "report.speed_batch": 2, "report.speed_repeats": 1,
        "model.init_style": "random", "model.mapping_layers": 1, "model.style_mimic_steps": 1,
        "model.style_mimic_batch": 64, "model.r1_interval": 2}


def test_run_4_equals_run_2_resume_run_2_bitwise(tmp_path):
    """Eq. 9 stage (step 0) then Eq. 4 + L_LD with a fresh D; resumed mid-training: identical weights."""
    from kdpipe.trainers.stylegan2.compress_train import run

    a, b = tmp_path / "a", tmp_path / "b"
    run(overrides={**TINY, "loop.steps": 4, "loop.out_dir": str(a)})
    run(overrides={**TINY, "loop.steps": 4, "loop.stop_after": 2, "loop.out_dir": str(b)})
    run(overrides={**TINY, "loop.steps": 4, "loop.out_dir": str(b)}, resume=True)
    sa, sb = (load_checkpoint(latest_checkpoint(d))["trainer_state"] for d in (a, b))
    for net in ("G", "G_ema", "D"):
        for k in sa[net]:
            assert torch.equal(sa[net][k], sb[net][k]), (net, k)
    records = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    assert "Loss/style_mimic" in records[0] and "Loss/G/ld" in records[1] and "Loss/G/rgb" in records[3]
    assert "Eval/l1_to_teacher" in records[3]
    r = records[3]  # Eq. 4 + L_LD with the paper's weights (1, 3, -, 30; LPIPS off here)
    assert r["Loss/G/total"] == pytest.approx(r["Loss/G/gan"] + 3 * r["Loss/G/rgb"] + 30 * r["Loss/G/ld"], rel=1e-5)
    student = load_teacher(str(a / "student-000004.pkl")).G
    G_ema = Generator(**sa["G_kwargs"])
    G_ema.load_state_dict(sa["G_ema"])
    z = torch.randn(2, G_ema.z_dim)
    assert torch.equal(student(z), G_ema.eval()(z))
    report = json.loads((a / "compress_report.json").read_text())
    assert report["macs_per_image"]["ratio"] > 2 and report["to_teacher"]["seeds"] == 4


def test_report_counts_macs_of_the_convolutions_and_matmuls(teacher):
    student = _student(teacher, 0.5)
    # mapping: num_layers FC of w_dim x w_dim (z_dim == w_dim here) per image
    mapping_macs = teacher.mapping.num_layers * teacher.z_dim * teacher.w_dim
    b4 = teacher.synthesis.b4  # 4x4 const block: 3x3 conv C->C at 4x4 (affines and toRGB counted too)
    assert generator_macs(teacher) > mapping_macs + b4.conv1.weight[0].numel() * b4.conv1.weight.shape[0] * 16
    report = compress_report(student, teacher, seeds=2, fid_samples=0, speed_batch=2, speed_repeats=1)
    assert report["params"]["teacher"] == sum(p.numel() for p in teacher.parameters())
    assert report["macs_per_image"]["student"] < report["macs_per_image"]["teacher"]
    assert report["to_teacher"]["l1"] > 0 and report["to_teacher"]["lpips"] is None


def test_style_mimicking_stage_closes_the_gap_between_mappings(tmp_path):
    """Eq. 9: a 1-layer student mapping trained alone gets closer to the teacher's 2-layer one; C stays as it was."""
    from kdpipe.trainers.core.config import load_config
    from kdpipe.trainers.core.loop import DistInfo
    from kdpipe.trainers.stylegan2.compress_config import CompressConfig
    from kdpipe.trainers.stylegan2.compress_train import CompressTrainer

    cfg = load_config(CompressConfig, None, {**TINY, "loop.out_dir": str(tmp_path), "model.style_mimic_steps": None,
                                             "model.style_mimic_batch": 256})
    t = load_teacher("builtin:random-16")
    trainer = CompressTrainer(cfg, DistInfo(), t.G, t.D)
    assert trainer.mimic_steps == 1000  # the mapping differs: Eq. 9 by default
    z = torch.randn(512, t.G.z_dim, generator=torch.Generator().manual_seed(1))

    def gap() -> float:
        with torch.no_grad():
            return float((trainer.G.mapping(z) - t.G.mapping(z)).abs().mean())

    before, synthesis = gap(), {k: v.clone() for k, v in trainer.G.synthesis.state_dict().items()}
    for step in range(150):
        trainer.train_step({"image": None}, step)
    assert gap() < 0.75 * before
    assert all(torch.equal(v, trainer.G.synthesis.state_dict()[k]) for k, v in synthesis.items())
    assert torch.equal(trainer.G_ema.mapping.fc0.weight, trainer.G.mapping.fc0.weight)
