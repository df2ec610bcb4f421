"""kdpipe train stylegan2-fewshot (seed 001): SSIM-A, relation KL, the momentum queue, exact resume, set-up errors."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from kdpipe.errors import ConfigError
from kdpipe.trainers.core.checkpoint import latest_checkpoint, load_checkpoint
from kdpipe.trainers.stylegan2.fewshot import run
from kdpipe.trainers.stylegan2.fewshot_losses import (MomentumQueue, cosine_similarity, relation_distillation_loss,
                                                      relation_kl, relation_logits, ssim_a)

pytestmark = pytest.mark.usefixtures("one_thread")


def _maps(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ losses

def test_ssim_a_equals_pytorch_msssim_with_its_gaussian_window():
    """Eq. 5 with pytorch-msssim's window (Gaussian 11, sigma 1.5, valid) and c1, c2 = (0.01, 0.03)^2 (L = 1)."""
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    q, k = _maps(3, 5, 16, 16, seed=0), _maps(4, 5, 16, 16, seed=1) * 0.5 + 0.2
    got = ssim_a(q, k)
    want = torch.stack([pytorch_msssim.ssim(q[i:i + 1].expand_as(k), k, data_range=1, size_average=False)
                        for i in range(3)])
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    # another data range = other constants: ssim(data_range=2) == ssim_a(c1=(0.02)^2, c2=(0.06)^2)
    want2 = pytorch_msssim.ssim(q[:1].expand_as(k), k, data_range=2, size_average=False)
    torch.testing.assert_close(ssim_a(q[:1], k, c1=0.02 ** 2, c2=0.06 ** 2)[0], want2, atol=1e-6, rtol=1e-5)


def test_ssim_a_uniform_window_by_hand_and_small_maps():
    """Box window (the paper's 'mean of a fixed window'): one 2x2 map, window 2 -> one position, plain statistics."""
    a, b = _maps(1, 2, 2, 2, seed=3), _maps(1, 2, 2, 2, seed=4)
    c1, c2 = 1e-4, 9e-4
    vals = []
    for ch in range(2):
        x, y = a[0, ch].flatten(), b[0, ch].flatten()
        mx, my = x.mean(), y.mean()
        vx, vy, cov = (x * x).mean() - mx ** 2, (y * y).mean() - my ** 2, (x * y).mean() - mx * my
        vals.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    torch.testing.assert_close(ssim_a(a, b, win_size=11, win_sigma=None, c1=c1, c2=c2)[0, 0], torch.stack(vals).mean())
    assert torch.allclose(ssim_a(a, a, win_sigma=None), torch.ones(1, 1))
    with pytest.raises(ValueError, match="same C, H, W"):
        ssim_a(a, _maps(1, 3, 2, 2))


def test_relation_logits_drop_self_and_append_the_queue_in_order():
    q, queue = _maps(3, 2, 4, 4, seed=5), _maps(2, 2, 4, 4, seed=6)
    full = cosine_similarity(q, torch.cat([q, queue]))
    got = relation_logits(q, cosine_similarity, queue)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got[1], torch.stack([full[1, 0], full[1, 2], full[1, 3], full[1, 4]]))
    with pytest.raises(ValueError, match="at least one key"):
        relation_logits(q[:1], cosine_similarity)


def test_relation_kl_is_zero_when_equal_and_matches_the_definition():
    s, t = _maps(4, 7, seed=7), _maps(4, 7, seed=8)
    assert float(relation_kl(s, s)) == pytest.approx(0.0, abs=1e-7)
    assert float(relation_kl(s, s + 3.0)) == pytest.approx(0.0, abs=1e-6)  # softmax is shift-invariant per row
    p, r = s.softmax(1), t.softmax(1)
    want = (p * (p.log() - r.log())).sum() / p.numel()  # torch KLDivLoss(reduction='mean'), CDC's
    torch.testing.assert_close(relation_kl(s, t), want)
    feats = {8: _maps(4, 3, 8, 8, seed=9), 4: _maps(4, 3, 4, 4, seed=10)}
    assert float(relation_distillation_loss(feats, feats, ssim_a)) == pytest.approx(0.0, abs=1e-7)
    other = {r: f.flip(0) * 0.5 for r, f in feats.items()}
    assert float(relation_distillation_loss(feats, other, ssim_a)) > 1e-5


def test_queue_keeps_the_last_k_and_round_trips():
    qu = MomentumQueue(5)
    for i in range(3):
        qu.push(torch.full([2, 1], float(i)), {4: torch.full([2, 1, 4, 4], float(i))},
                {4: torch.full([2, 1, 4, 4], 10.0 + i)})
    assert len(qu) == 5 and qu.z.flatten().tolist() == [0, 1, 1, 2, 2]
    assert qu.keys(4)[1][:, 0, 0, 0].tolist() == [10, 11, 11, 12, 12]
    back = MomentumQueue(5)
    back.load_state_dict(qu.state_dict())
    assert torch.equal(back.momentum[4], qu.momentum[4]) and torch.equal(back.source[4], qu.source[4])
    with pytest.raises(ValueError, match="k=5"):
        MomentumQueue(4).load_state_dict(qu.state_dict())


# ---------------------------------------------------------------------------------------------- trainer

def _targets(root):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        PIL.Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


TINY = {"model.init": "builtin:random-16", "data.batch_size": 2, "loss.dist_batch": 2, "loss.queue_size": 3,
        "loss.anchor_interval": 2, "loss.layers": [8, 16], "model.pl_interval": 2, "model.r1_interval": 2,
        "model.r1_gamma": 1.0, "loop.log_every": 1, "loop.progress": False, "loop.sample_every": 0,
        "loop.device": "cpu", "loop.deterministic": True}


# the first 4 steps of TINY (seed 0, kd), recorded on CPU with torch 2.x. Step 1: G_T == G_S and the queue is
# empty, so the relation KL is exactly 0; it grows as G_T leaves the source.
GOLDEN = {"Loss/G/loss": [0.234334, 1.37229, 0.488351, 1.39085],
          "Loss/G/dist": [0.0, 1.5391e-06, 2.44284e-06, 4.32984e-06],
          "Loss/D/loss": [2.23967, 1.0574, 1.9433, 1.07839],
          "Loss/D/sdd": [0.988756, 1.01696, 1.164, 0.987841]}


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    return _targets(tmp_path_factory.mktemp("fewshot") / "target")


def _overrides(tmp_path, target_dir, name, steps, **extra):
    return TINY | {"data.path": str(target_dir), "loss.source_data": str(target_dir),
                   "loop.out_dir": str(tmp_path / name), "loop.steps": steps} | extra


def test_queue_holds_exactly_k_momentum_activations(tmp_path, target_dir):
    """After enough pushes the queue has k entries: G_M's (= G_ema's) and G_S's activations of the last k z."""
    from kdpipe.config import load_config
    from kdpipe.pipeline.teacher.load import load_teacher
    from kdpipe.trainers.core.loop import DistInfo
    from kdpipe.trainers.stylegan2.fewshot import FewShotTrainConfig, FewShotTrainer

    cfg = load_config(FewShotTrainConfig, None, _overrides(tmp_path, target_dir, "q", 4))
    tr = FewShotTrainer(cfg, load_teacher("builtin:random-16"), 5, None, DistInfo())
    with torch.no_grad():
        for p in tr.G_ema.parameters():  # G_M differs from G_T and G_S, so the test tells them apart
            p.add_(0.05 * torch.randn_like(p))
    for _ in range(3):
        tr._relation_loss()  # 2 latents each: 6 pushed, 3 kept
    assert len(tr.queue) == 3
    with torch.no_grad():
        want_m, want_s = tr._features(tr.G_ema, tr.queue.z), tr._features(tr.G_S, tr.queue.z)
        other = tr._features(tr.G, tr.queue.z)
    for layer in (8, 16):
        source, momentum = tr.queue.keys(layer)
        assert momentum.shape[0] == source.shape[0] == 3
        torch.testing.assert_close(momentum, want_m[layer], atol=1e-6, rtol=0)
        torch.testing.assert_close(source, want_s[layer], atol=1e-6, rtol=0)
        assert not torch.allclose(momentum, other[layer], atol=1e-4)


def test_run4_equals_run2_resume_run2_with_the_queue(tmp_path, target_dir):
    full = run(None, _overrides(tmp_path, target_dir, "full", 4, **{"loop.ckpt_every": 2}))
    run(None, _overrides(tmp_path, target_dir, "split", 4, **{"loop.ckpt_every": 2, "loop.stop_after": 2}))
    resumed = run(None, {"loop.out_dir": str(tmp_path / "split")}, resume=True)
    assert resumed.step == 4
    keys = ("Loss/G/loss", "Loss/G/dist", "Loss/D/loss", "Loss/D/sdd")
    assert [[r[k] for k in keys] for r in resumed.records] == [[r[k] for k in keys] for r in full.records[2:]]
    for key, want in GOLDEN.items():
        assert [r[key] for r in full.records] == pytest.approx(want, rel=2e-3, abs=1e-9), key
    assert "Loss/r1_penalty" in full.records[0] and "Loss/pl_penalty" in full.records[0]
    assert [r["Progress/queue"] for r in full.records] == [2, 3, 3, 3]
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))["trainer_state"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "split"))["trainer_state"]
    for key in ("G", "G_ema", "D", "P", "G_S", "anchors"):
        for name, t in (a[key].items() if isinstance(a[key], dict) else [("", a[key])]):
            assert torch.equal(t, b[key][name] if name else b[key]), f"{key}.{name}"
    for name in ("source", "momentum"):
        for layer, t in a["queue"][name].items():
            assert torch.equal(t, b["queue"][name][layer]), f"queue.{name}.{layer}"
    assert torch.equal(a["queue"]["z"], b["queue"]["z"])
    from kdpipe.pipeline.teacher.load import load_teacher

    src = load_teacher("builtin:random-16").G.state_dict()  # G_S stays the source; G_T moved away from it
    assert all(torch.equal(a["G_S"][k], v) for k, v in src.items())
    assert not torch.equal(a["G"]["synthesis.b16.conv1.weight"], src["synthesis.b16.conv1.weight"])


@pytest.mark.parametrize("method", ["cdc", "finetune"])
def test_baselines_run_without_queue_or_source_images(tmp_path, target_dir, method):
    res = run(None, _overrides(tmp_path, target_dir, method, 2, **{"loss.method": method, "loss.source_data": ""}))
    assert res.step == 2 and all(r["Progress/queue"] == 0 for r in res.records)
    assert all(("Loss/G/dist" in r) == (method == "cdc") and "Loss/D/sdd" not in r for r in res.records)
    assert (tmp_path / method / "network-snapshot-000002.pkl").is_file()


def test_setup_errors_are_one_line(tmp_path, target_dir):
    with pytest.raises(ConfigError, match="--source-data"):
        run(None, _overrides(tmp_path, target_dir, "e1", 1, **{"loss.source_data": ""}))
    with pytest.raises(ConfigError, match="patch_res"):
        run(None, _overrides(tmp_path, target_dir, "e2", 1, **{"loss.patch_res": 16}))
    with pytest.raises(ConfigError, match="loss.method"):
        run(None, _overrides(tmp_path, target_dir, "e3", 1, **{"loss.method": "ewc"}))
    with pytest.raises(ConfigError, match="renders 16px"):
        run(None, _overrides(tmp_path, target_dir, "e4", 1, **{"data.resolution": 8}))
