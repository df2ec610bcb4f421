"""Conditional (X2I) student (issue 16): Eq. 6-8 against direct computation, frozen teacher, exact resume of both
stages, the semantic diversity loss at work, finetuning data layouts and conditions -> images.

A 16 px student distils the untrained ``builtin:random-16`` teacher on the CPU.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from kdpipe.errors import ConfigError, DatasetError
from kdpipe.pipeline.teacher.load import load_teacher
from kdpipe.trainers.core.checkpoint import latest_checkpoint, load_checkpoint
from kdpipe.trainers.core.config import load_config
from kdpipe.trainers.stargan2.losses_kd import HintAdaptors
from kdpipe.trainers.x2i import losses as L
from kdpipe.trainers.x2i.config import X2IConfig
from kdpipe.trainers.x2i.data import PairedData
from kdpipe.trainers.x2i.run import load_generator, run_x2i
from kdpipe.trainers.x2i.train_kd import DistillTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

TEACHER = "builtin:random-16"
TINY = {"teacher.spec": TEACHER, "model.channel_base": 64, "model.channel_max": 8, "model.spade_hidden": 4,
        "data.batch_size": 2, "loop.device": "cpu", "loop.progress": False, "loop.log_every": 1,
        "loop.sample_every": 0, "loop.deterministic": True}


def cfg_of(**extra) -> X2IConfig:
    return load_config(X2IConfig, None, {**TINY, "loop.out_dir": "unused", **extra})


def weights(run: Path) -> dict[str, torch.Tensor]:
    ts = load_checkpoint(latest_checkpoint(run))["trainer_state"]
    return {f"{n}.{k}": v for n, sd in ts["models"].items() for k, v in sd.items()}


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("x2i") / "kd"
    run_x2i(None, {**TINY, "loop.out_dir": str(out), "loop.steps": 2})
    return out


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    """Three classes of two 16 px images each."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for k in range(3):
        (root / f"c{k}").mkdir()
        for i in range(2):
            PIL.Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"c{k}" / f"{i}.png")
    return root


def write_shard(path: Path, samples: list[dict[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, s in enumerate(samples):
            for ext, data in s.items():
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- losses

def test_eq6_equals_direct_sum_over_features_and_images():
    g = torch.Generator().manual_seed(0)
    s = {4: torch.randn(2, 8, 4, 4, generator=g), 8: torch.randn(2, 8, 8, 8, generator=g)}
    t = {4: torch.randn(2, 8, 4, 4, generator=g), 8: torch.randn(2, 8, 8, 8, generator=g),
         16: torch.randn(2, 8, 16, 16, generator=g)}
    s2, t2 = {r: v * 2 for r, v in s.items()}, {r: v + 1 for r, v in t.items()}
    xs, xt, ys, yt = (torch.randn(2, 3, 8, 8, generator=g) for _ in range(4))
    ad = HintAdaptors({4: 8, 8: 8}, {4: 8, 8: 8, 16: 8})  # equal channels: no convs, sizes 4 and 8
    alphas = L.feature_weights({4: 8, 8: 200}, 0.1, 0.01)
    assert alphas == {4: 0.1, 8: 0.01}
    got, parts = L.kd_loss((s, t, xs, xt), (s2, t2, ys, yt), ad, alphas, beta=0.5)
    want = sum(alphas[r] * (s[r] - t[r]).abs().mean() + alphas[r] * (s2[r] - t2[r]).abs().mean() for r in (4, 8))
    want = want + 0.5 * ((xs - xt).abs().mean() + (ys - yt).abs().mean())
    assert torch.allclose(got, want, atol=1e-6)
    assert parts["y_image"] == pytest.approx((ys - yt).abs().mean().item(), rel=1e-6)


def test_eq7_and_eq8_equal_direct_computation():
    a, b = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    srl = L.semantic_diversity_loss(a, b)
    assert torch.allclose(srl, -(a - b).abs().mean())
    total = L.total_loss(torch.tensor(2.0), torch.tensor(3.0), srl, 1.0, 1.0, 0.1)
    assert torch.allclose(total, 2.0 + 3.0 + 0.1 * srl)


def test_discriminator_loss_is_logistic_plus_r1():
    D = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1))
    real, fake = torch.randn(3, 3, 2, 2), torch.randn(3, 3, 2, 2)
    loss, parts = L.discriminator_loss(lambda x, c: D(x), real, fake, None, None, r1_gamma=2.0)
    w = D[1].weight
    r1 = w.square().sum()  # linear D: the gradient w.r.t. each image is w
    want = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean() + r1
    assert torch.allclose(loss, want, atol=1e-6) and parts["r1"] == pytest.approx(r1.item(), rel=1e-5)


def test_matching_aware_discriminator_loss_counts_mismatched_reals_as_fake():
    from kdpipe.trainers.x2i.networks import ConditionalDiscriminator
    from kdpipe.trainers.x2i.train_ft import mismatched

    torch.manual_seed(0)
    D = ConditionalDiscriminator(8, in_dim=3, channel_base=32, channel_max=4)
    torch.nn.init.normal_(D.proj.weight)
    real, fake = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    c = F.one_hot(torch.tensor([0, 1, 2]), 3).float()
    assert torch.equal(mismatched(c)[0], c[2])
    loss, parts = L.discriminator_loss(D, real, fake, c, c, 0.0, mismatched(c))
    want = F.softplus(-D(real, c)).mean() + (F.softplus(D(fake, c)).mean() + F.softplus(D(real, c.roll(1, 0))).mean()) / 2
    assert torch.allclose(loss, want, atol=1e-6) and "d_mismatch" in parts
    zero = torch.zeros_like(c)  # distillation's condition 0: the projection term vanishes
    D.proj.weight.data.mul_(5)
    assert torch.allclose(D(real, zero), D.out(F.leaky_relu(D.trunk(D.from_rgb(real)), 0.2).sum(dim=(2, 3))))


def test_lambda_defaults_by_condition_kind_and_explicit_values_win():
    assert (cfg_of().loss.lambda_srl, cfg_of().loss.alpha_large) == (0.1, 0.01)
    audio = cfg_of(**{"condition.kind": "audio"}).loss
    assert (audio.lambda_adv, audio.lambda_kdl, audio.lambda_srl, audio.beta) == (10.0, 10.0, 10.0, 10.0)
    assert cfg_of(**{"condition.kind": "audio", "loss.lambda_srl": 0.5}).loss.lambda_srl == 0.5
    assert cfg_of(**{"condition.kind": "seg"}).condition.pseudo == "ones"
    with pytest.raises(ConfigError, match="condition.pseudo=ones"):
        cfg_of(**{"condition.kind": "seg", "condition.pseudo": "encoder"})


# --------------------------------------------------------------------------------------------- distillation

def test_teacher_gets_no_gradient_and_semantic_encoder_starts_as_teacher_d():
    teacher = load_teacher(TEACHER)
    before = {k: v.clone() for k, v in {**teacher.G.state_dict(), **teacher.D.state_dict()}.items()}
    tr = DistillTrainer(cfg_of(), teacher)
    x = torch.randn(2, 3, 16, 16)
    se = tr.nets["semantic_encoder"]
    assert torch.equal(se(x), teacher.D.b4.fc(teacher.D.b4.conv(teacher.D.b4.mbstd(
        teacher.D(x, return_features=True)[1][8]).float()).flatten(1)))
    for step in range(2):
        tr.train_step({"index": torch.arange(2 * step, 2 * step + 2)}, step)
    assert all(p.grad is None for p in [*teacher.G.parameters(), *teacher.D.parameters()])
    after = {**teacher.G.state_dict(), **teacher.D.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(se.fc.weight, teacher.D.b4.fc.weight)  # SE is trained, D_T is not


@pytest.mark.parametrize("extra", [{"kd.student_z": "teacher"}, {"condition.kind": "seg", "condition.num_classes": 3}])
def test_distill_resume_is_exact(tmp_path, extra):
    full, split = tmp_path / "full", tmp_path / "split"
    run_x2i(None, {**TINY, **extra, "loop.out_dir": str(full), "loop.steps": 4})
    run_x2i(None, {**TINY, **extra, "loop.out_dir": str(split), "loop.steps": 4, "loop.stop_after": 2})
    run_x2i(None, {**TINY, **extra, "loop.out_dir": str(split), "loop.steps": 4}, resume=True)
    a, b = weights(full), weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def delta_c_after(tmp_path: Path, lambda_srl: float, steps: int = 8, lr: float = 1e-2) -> list[float]:
    out = tmp_path / f"srl{lambda_srl}"
    run_x2i(None, {**TINY, "loop.out_dir": str(out), "loop.steps": steps, "loss.lambda_srl": lambda_srl,
                   "optim.lr": lr})
    return [json.loads(line)["delta_c"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_semantic_diversity_loss_makes_the_condition_change_the_image(tmp_path):
    """mean |G(z, f, c_x) - G(z, f, c_y)| grows with L_srl and stays ~0 without it (the condition branch starts at
    zero, and KD alone barely moves it in a few steps)."""
    with_srl, without = delta_c_after(tmp_path, 10.0), delta_c_after(tmp_path, 0.0)
    assert with_srl[0] == without[0] == 0.0  # zero-initialised conditional affine: c has no effect yet
    late_with, late_without = np.mean(with_srl[-4:]), np.mean(without[-4:])  # steps 5-8 (z_s is random per step)
    assert late_with > 0.01 and late_with > 3 * np.mean(with_srl[:3])
    assert late_without < 0.005 and late_with > 5 * late_without


# ----------------------------------------------------------------------------------------------- finetuning

def test_finetune_from_kd_init_loads_weights_and_resumes_exactly(tmp_path, distilled, digit_folder):
    ft = {**TINY, "data.path": str(digit_folder), "condition.num_classes": 3, "init": str(distilled)}
    full, split = tmp_path / "full", tmp_path / "split"
    run_x2i(None, {**ft, "loop.out_dir": str(full), "loop.steps": 4})
    run_x2i(None, {**ft, "loop.out_dir": str(split), "loop.steps": 4, "loop.stop_after": 2})
    run_x2i(None, {**ft, "loop.out_dir": str(split), "loop.steps": 4}, resume=True)
    a, b = weights(full), weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kd_init_starts_from_the_distilled_weights(tmp_path, distilled, digit_folder):
    from kdpipe.trainers.x2i.train_ft import FinetuneTrainer, load_init

    cfg = cfg_of(**{"data.path": str(digit_folder), "condition.num_classes": 3, "init": str(distilled),
                    "model.label_init": "semantic-encoder"})
    data = PairedData(str(digit_folder), "label", 3)
    init = load_init(str(distilled))
    tr = FinetuneTrainer(cfg, data, init)
    kd = init["trainer_state"]["models"]
    got = tr.nets["generator"].state_dict()
    assert all(torch.equal(got[k], v) for k, v in kd["generator"].items() if not k.startswith("teacher_adaptor"))
    assert torch.count_nonzero(tr.nets["discriminator"].proj.weight) == 0
    emb = tr.nets["condition_encoder"].linear.weight  # [cond_dim, 3]: mean SE embedding per class
    assert emb.shape[1] == 3 and not torch.allclose(emb[:, 0], emb[:, 1])
    with pytest.raises(ConfigError, match="model.z_dim"):
        FinetuneTrainer(cfg_of(**{"data.path": str(digit_folder), "condition.num_classes": 3, "model.z_dim": 7}),
                        data, init)


def test_scratch_finetune_and_translate_conditions(tmp_path, digit_folder, cli):
    out = tmp_path / "scratch"
    run_x2i(None, {**TINY, "data.path": str(digit_folder), "condition.num_classes": 3, "loop.out_dir": str(out),
                   "loop.steps": 2, "model.z_dim": 4, "model.cond_dim": 5, "teacher.spec": ""})
    ckpt = latest_checkpoint(out)
    G = load_generator(load_checkpoint(ckpt)["trainer_state"])
    labels = tmp_path / "labels.txt"
    labels.write_text("0 2 1")
    res = cli("translate", "--checkpoint", ckpt, "--batch-size", "2", labels, tmp_path / "imgs")
    assert res.exit_code == 0, res.output
    files = sorted((tmp_path / "imgs").glob("*.png"))
    assert [f.name for f in files] == ["labels-0000.png", "labels-0001.png", "labels-0002.png"]
    from kdpipe.pipeline.latents import z_from_seeds

    with torch.no_grad():
        want = G(z_from_seeds([1], 4), F.one_hot(torch.tensor([2]), 3).float())
    got = torch.from_numpy(np.array(PIL.Image.open(files[1]))).permute(2, 0, 1).float() / 127.5 - 1
    assert (got - want[0]).abs().max() < 2 / 127.5
    bad = tmp_path / "bad.txt"
    bad.write_text("3")
    assert "outside [0, 3)" in cli("translate", "--checkpoint", ckpt, bad, tmp_path / "o2").output


def test_shard_conditions_cls_vector_and_seg(tmp_path):
    rng = np.random.default_rng(0)
    img = [png_bytes(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(2)]
    vec = io.BytesIO()
    np.save(vec, np.arange(5, dtype=np.float32))
    seg = png_bytes(np.stack([np.eye(16, dtype=np.uint8) * 2] * 3, -1))
    s1 = write_shard(tmp_path / "a" / "s-000000.tar", [{"png": i, "cls": b"1", "cond.npy": vec.getvalue(),
                                                        "seg.png": seg} for i in img])
    lab = PairedData(str(s1), "label", 2)
    assert lab.conditions.tolist() == [1, 1] and lab.cond_in_dim == 2
    assert PairedData(str(s1), "text", 2).conditions.shape == (2, 5)
    segd = PairedData(str(s1), "seg", 3)
    b = segd.batch(0, 0, 2, 4)
    assert b["condition"].shape == (2, 3, 16, 16) and b["condition"][:, 2].diagonal(dim1=1, dim2=2).all()
    s2 = write_shard(tmp_path / "b" / "s-000000.tar", [{"png": img[0]}])
    with pytest.raises(DatasetError, match="'cond.npy'"):
        PairedData(str(s2), "audio", 2)


def test_folder_errors(digit_folder):
    with pytest.raises(DatasetError, match="condition.num_classes=3"):
        PairedData(str(digit_folder), "label", 10)
    with pytest.raises(DatasetError, match="class sub-folders"):
        PairedData(str(digit_folder), "text", 3)


def test_distill_from_style_mix_shards_matches_online_triplets(tmp_path):
    """Shard triplets carry x1's features and z1 equal to the online ones; a KD run reads them."""
    from kdpipe.pipeline.generate import generate
    from kdpipe.pipeline.latents import parse_mix
    from kdpipe.pipeline.render import Renderer
    from kdpipe.trainers.stargan2.data import online_triplets, shard_batches, shard_triplets

    generate("style-mix", tmp_path / "gen", cli={"teacher": {"generator": TEACHER}, "render": {"n": 4, "seed": 0},
                                                 "runtime": {"device": "cpu", "progress": False}}, log=lambda m: None)
    shards = str(tmp_path / "gen" / "style-mix")
    teacher = load_teacher(TEACHER)
    renderer = Renderer(teacher.G, torch.device("cpu"), 0.7)
    batch, _ = next(shard_batches(shards, 2, seed=0, shuffle_buffer=0))
    st = shard_triplets(renderer, batch, teacher.sha256, need_x1=True)
    on = online_triplets(renderer, torch.tensor([int(k) for k in batch["key"]]), 0,
                         parse_mix("crossover:4", teacher.G.num_ws))
    assert torch.equal(st.z1, on.z1) and all(torch.equal(st.x1_features[r], on.x1_features[r])
                                             for r in on.x1_features)
    r = run_x2i(None, {**TINY, "loop.out_dir": str(tmp_path / "kd"), "loop.steps": 2, "kd.source": "shards",
                       "kd.shards": shards, "kd.shuffle_buffer": 4})
    assert r.step == 2 and all(np.isfinite(v) for rec in r.records for v in rec.values())
