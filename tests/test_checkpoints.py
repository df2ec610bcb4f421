"""Checkpoint loading (three official layouts), conversion rules, and refusal of unsafe or broken files.

Round trips use kdpipe's own writers (``kdpipe.pipeline.teacher.formats.export``), which produce the official container
structures; the golden tests check the conversion tables against hand-built TF variables and rosinality's
``convert_weight.py`` rules, independently of those writers.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch

from kdpipe.pipeline.teacher.formats import export
from kdpipe.pipeline.teacher.formats.checkpoints import build_networks, load_checkpoint
from kdpipe.pipeline.teacher.formats.convert_rosinality import nv_generator_to_rosinality
from kdpipe.pipeline.teacher.formats.convert_tf import nv_generator_to_tf, tf_to_nv_discriminator, tf_to_nv_generator
from kdpipe.errors import CheckpointError
from kdpipe.pipeline.teacher.discriminator import Discriminator
from kdpipe.pipeline.teacher.networks import Generator

TINY_G = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
              channel_base=512, channel_max=32)
TINY_D = dict(c_dim=0, img_resolution=32, img_channels=3, channel_base=512, channel_max=32)


def _randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Perturb every weight and buffer (except FIR filters) so that zero biases, unit affine biases and zero
    noise strengths cannot hide a conversion error."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if name.endswith("resample_filter"):
                continue
            t.add_(0.2 * torch.randn(t.shape, generator=gen))
            if name.endswith("noise_strength"):
                t.copy_(0.1 + 0.4 * torch.rand(t.shape, generator=gen))
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def nets():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G, D = Generator(**TINY_G), Discriminator(**TINY_D)
    return _randomised(G, 1), _randomised(D, 2)


def _images(G, z, c=None):
    return G(z, c, truncation_psi=0.7, truncation_cutoff=4, noise_mode="const")


WRITERS = {
    "tf": (lambda p, G, D: export.write_nvlabs_tf_pkl(p, G, D), "nvlabs-tf", True),
    "tf-gs-only": (lambda p, G, D: export.write_nvlabs_tf_pkl(p, G), "nvlabs-tf", False),
    "ada": (lambda p, G, D: export.write_nvlabs_pytorch_pkl(p, G, D), "nvlabs-pytorch", True),
    "ada-protocol3": (lambda p, G, D: export.write_nvlabs_pytorch_pkl(p, G, D, protocol=3), "nvlabs-pytorch", True),
    "stylegan3": (lambda p, G, D: export.write_nvlabs_pytorch_pkl(p, G, D, layout="stylegan3"), "nvlabs-pytorch", True),
    "rosinality": (lambda p, G, D: export.write_rosinality_pt(p, G, D), "rosinality", True),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_round_trip_gives_identical_weights_and_images(kind, nets, tmp_path):
    G, D = nets
    write, fmt, has_d = WRITERS[kind]
    path = write(tmp_path / f"teacher-{kind}.bin", G, D)  # neutral suffix: detection must use the content
    loaded = load_checkpoint(path)
    assert loaded.format == fmt
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    G2, D2 = build_networks(loaded)
    ref_sd, sd = G.state_dict(), G2.state_dict()
    assert list(loaded.G_state_dict) == list(ref_sd)  # NV key order, FIR buffers included
    for key in ref_sd:
        assert torch.equal(ref_sd[key], sd[key]), key
    z = torch.from_numpy(np.random.RandomState(7).randn(3, 32).astype(np.float32))
    assert (_images(G, z) - _images(G2, z)).abs().max().item() <= 1e-4
    assert torch.equal(loaded.w_avg, G.mapping.w_avg)
    if has_d:
        assert D2 is not None
        for key, value in D.state_dict().items():
            assert torch.equal(value, D2.state_dict()[key]), key
        img = torch.tanh(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3)))
        assert (D(img) - D2(img)).abs().max().item() <= 1e-5
    else:
        assert D2 is None and "no discriminator" in loaded.info["D"]


def test_rosinality_training_checkpoint_computes_w_avg(nets, tmp_path):
    """train.py checkpoints hold argparse args (loaded with weights_only=True) and no latent_avg."""
    G, D = nets
    path = export.write_rosinality_pt(tmp_path / "050000.pt", G, D, training_checkpoint=True)
    raw = torch.load(path, weights_only=False)  # our own file: inspect the layout
    assert "latent_avg" not in raw and type(raw["args"]).__name__ == "Namespace"
    loaded = load_checkpoint(path)
    assert "computed" in loaded.info["w_avg"] and "training_checkpoint" in loaded.info
    z = torch.from_numpy(np.random.RandomState(0).randn(4096, 32).astype(np.float32))
    expected = G.mapping(z)[:, 0].mean(dim=0)
    assert torch.allclose(loaded.w_avg, expected, atol=1e-5)
    G2, _ = build_networks(loaded)
    zz = z[:3]
    assert (G(zz, noise_mode="const") - G2(zz, noise_mode="const")).abs().max().item() <= 1e-4


def test_conditional_generator_round_trips_through_pytorch_and_tf(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        G = _randomised(Generator(**dict(TINY_G, c_dim=2)), 6)
    z, c = torch.randn(2, 32), torch.eye(2)
    for path in (export.write_nvlabs_pytorch_pkl(tmp_path / "c.pkl", G),
                 export.write_nvlabs_tf_pkl(tmp_path / "c-tf.pkl", G)):
        G2, D2 = build_networks(load_checkpoint(path))
        assert D2 is None and G2.c_dim == 2
        assert (_images(G, z, c) - _images(G2, z, c)).abs().max().item() <= 1e-4
    with pytest.raises(CheckpointError, match="c_dim"):
        export.write_rosinality_pt(tmp_path / "c.pt", G)


def test_stylegan3_layout_uses_flat_kwargs_and_class_defaults(tmp_path):
    with torch.random.fork_rng(devices=[]):
        G = Generator(**dict(TINY_G, num_fp16_res=4, conv_clamp=256))
    path = export.write_nvlabs_pytorch_pkl(tmp_path / "sg3.pkl", G, layout="stylegan3")
    from kdpipe.pipeline.teacher.formats.safe_pickle import safe_load

    with open(path, "rb") as f:
        raw = safe_load(f)
    assert list(raw) == ["G", "D", "G_ema", "augment_pipe", "training_set_kwargs"]
    stored = raw["G_ema"].state["_init_kwargs"]
    assert "synthesis_kwargs" not in stored and "num_fp16_res" not in stored and "conv_clamp" not in stored
    loaded = load_checkpoint(path)  # omitted => stylegan3's class defaults 4 / 256, not ada's 0 / None
    assert (loaded.G_kwargs["num_fp16_res"], loaded.G_kwargs["conv_clamp"]) == (4, 256)
    assert loaded.info["flavor"].startswith("stylegan3")


# --------------------------------------------------------------------------------------- golden conversions

def _tiny_tf_generator():
    """Hand-built TF Gs variables of an 8x8 network: z = w = 4, fmap_base 8 (channels 4 @4x4, 2 @8x8), 1 dense."""
    rng = np.random.RandomState(0)
    f32 = lambda *shape: rng.randn(*shape).astype(np.float32)  # noqa: E731
    tf = {"lod": np.float32(0), "dlatent_avg": f32(4), "synthesis/noise0": f32(1, 1, 4, 4),
          "synthesis/noise1": f32(1, 1, 8, 8), "synthesis/noise2": f32(1, 1, 8, 8),
          "synthesis/4x4/Const/const": f32(1, 4, 4, 4)}
    for scope, cin, cout, k in [("4x4/Conv", 4, 4, 3), ("4x4/ToRGB", 4, 3, 1), ("8x8/Conv0_up", 4, 2, 3),
                                ("8x8/Conv1", 2, 2, 3), ("8x8/ToRGB", 2, 3, 1)]:
        s = "synthesis/" + scope + "/"
        tf[s + "weight"], tf[s + "mod_weight"], tf[s + "mod_bias"] = f32(k, k, cin, cout), f32(4, cin), f32(cin)
        if k == 3:
            tf[s + "noise_strength"] = np.float32(rng.rand())
        tf[s + "bias"] = f32(cout)
    tf.update({"mapping/Dense0/weight": f32(4, 4), "mapping/Dense0/bias": f32(4)})  # Gs components: synthesis, mapping
    static = dict(num_channels=3, resolution=8, label_size=0, latent_size=4, dlatent_size=4, mapping_layers=1,
                  fmap_base=8)
    return tf, static


def test_tf_generator_conversion_rules_golden():
    tf, static = _tiny_tf_generator()
    kwargs, sd = tf_to_nv_generator(tf, static)
    assert kwargs["channel_base"] == 16 and kwargs["z_dim"] == 4 and kwargs["mapping_kwargs"]["num_layers"] == 1
    up, same = tf["synthesis/8x8/Conv0_up/weight"], tf["synthesis/8x8/Conv1/weight"]  # [kh, kw, in, out]
    for o, i in [(0, 0), (1, 3), (0, 2)]:
        for h, w in [(0, 0), (0, 2), (1, 0), (2, 1)]:
            assert sd["synthesis.b8.conv0.weight"][o, i, h, w] == up[2 - h, 2 - w, i, o]  # flipped
        assert sd["synthesis.b8.conv1.weight"][o, min(i, 1), 0, 2] == same[0, 2, min(i, 1), o]  # not flipped
    rgb = tf["synthesis/8x8/ToRGB/weight"]
    assert sd["synthesis.b8.torgb.weight"].shape == (3, 2, 1, 1)
    assert sd["synthesis.b8.torgb.weight"][2, 1, 0, 0] == rgb[0, 0, 1, 2]
    s = "synthesis/8x8/Conv0_up/"
    assert torch.equal(sd["synthesis.b8.conv0.affine.bias"], torch.from_numpy(tf[s + "mod_bias"] + 1))
    assert sd["synthesis.b8.conv0.affine.weight"][3, 1] == tf[s + "mod_weight"][1, 3]
    assert sd["synthesis.b8.conv0.noise_strength"].shape == () and sd["synthesis.b8.conv0.noise_strength"] == tf[
        s + "noise_strength"]
    assert torch.equal(sd["synthesis.b4.conv1.noise_const"], torch.from_numpy(tf["synthesis/noise0"][0, 0]))
    assert torch.equal(sd["synthesis.b8.conv0.noise_const"], torch.from_numpy(tf["synthesis/noise1"][0, 0]))
    assert torch.equal(sd["synthesis.b8.conv1.noise_const"], torch.from_numpy(tf["synthesis/noise2"][0, 0]))
    assert sd["mapping.fc0.weight"][1, 3] == tf["mapping/Dense0/weight"][3, 1]
    assert torch.equal(sd["synthesis.b4.const"], torch.from_numpy(tf["synthesis/4x4/Const/const"][0]))
    assert torch.equal(sd["mapping.w_avg"], torch.from_numpy(tf["dlatent_avg"]))
    golden_fir = torch.tensor([[1, 3, 3, 1], [3, 9, 9, 3], [3, 9, 9, 3], [1, 3, 3, 1]]) / 64
    assert torch.equal(sd["synthesis.b8.conv0.resample_filter"], golden_fir)
    with torch.random.fork_rng(devices=[]):
        Generator(**kwargs).load_state_dict(sd, strict=True)  # every key present with the right shape
    static_back, tf_back = nv_generator_to_tf(kwargs, sd)  # and the inverse gives the TF variables back
    assert {k: v for k, v in static_back.items()} == static
    assert list(tf_back) == list(tf)  # TF creation order
    for name, value in tf.items():  # exact, except mod_bias: +1 then -1 rounds in float32 (<= 1 ulp of 1.0)
        atol = 1.2e-7 if name.endswith("mod_bias") else 0
        assert np.allclose(np.asarray(tf_back[name]), np.asarray(value), rtol=0, atol=atol), name


def test_nv_to_rosinality_matches_rosinality_convert_weight_rules():
    """TF -> NV -> rosinality must equal rosinality convert_weight.py applied to TF directly (no flip between
    the two PyTorch ports: both flip TF's Conv0_up)."""
    tf, static = _tiny_tf_generator()
    kwargs, sd = tf_to_nv_generator(tf, static)
    rosi = nv_generator_to_rosinality(kwargs, sd)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731

    def conv(scope, flip=False):  # convert_weight.py convert_modconv / convert_torgb
        w = t(np.expand_dims(tf[scope + "weight"].transpose((3, 2, 0, 1)), 0))
        return torch.flip(w, [3, 4]) if flip else w

    expected = {"style.1.weight": t(tf["mapping/Dense0/weight"].T), "input.input": t(tf["synthesis/4x4/Const/const"]),
                "convs.0.conv.weight": conv("synthesis/8x8/Conv0_up/", flip=True),
                "convs.1.conv.weight": conv("synthesis/8x8/Conv1/"), "conv1.conv.weight": conv("synthesis/4x4/Conv/"),
                "to_rgbs.0.conv.weight": conv("synthesis/8x8/ToRGB/"),
                "to_rgbs.0.bias": t(tf["synthesis/8x8/ToRGB/bias"].reshape(1, 3, 1, 1)),
                "convs.0.conv.modulation.bias": t(tf["synthesis/8x8/Conv0_up/mod_bias"] + 1),
                "convs.0.noise.weight": t(np.array([tf["synthesis/8x8/Conv0_up/noise_strength"]])),
                "convs.1.activate.bias": t(tf["synthesis/8x8/Conv1/bias"]),
                "noises.noise_2": t(tf["synthesis/noise2"])}
    for key, value in expected.items():
        assert torch.equal(rosi[key], value), key
    assert rosi["convs.0.conv.blur.kernel"].sum().item() == pytest.approx(4.0)  # rosinality's x4 up-FIR


def test_tf_discriminator_conversion_rules_golden():
    rng = np.random.RandomState(1)
    f32 = lambda *shape: rng.randn(*shape).astype(np.float32)  # noqa: E731
    tf = {"8x8/FromRGB/weight": f32(1, 1, 3, 2), "8x8/FromRGB/bias": f32(2), "8x8/Conv0/weight": f32(3, 3, 2, 2),
          "8x8/Conv0/bias": f32(2), "8x8/Conv1_down/weight": f32(3, 3, 2, 4), "8x8/Conv1_down/bias": f32(4),
          "8x8/Skip/weight": f32(1, 1, 2, 4), "4x4/Conv/weight": f32(3, 3, 5, 4), "4x4/Conv/bias": f32(4),
          "4x4/Dense0/weight": f32(64, 4), "4x4/Dense0/bias": f32(4), "Output/weight": f32(4, 1),
          "Output/bias": f32(1)}
    kwargs, sd = tf_to_nv_discriminator(tf, dict(num_channels=3, resolution=8, label_size=0, fmap_base=8))
    assert sd["b8.conv1.weight"][3, 1, 0, 2] == tf["8x8/Conv1_down/weight"][0, 2, 1, 3]  # transpose, no flip
    assert sd["b8.skip.weight"][2, 1, 0, 0] == tf["8x8/Skip/weight"][0, 0, 1, 2]
    assert sd["b4.fc.weight"][3, 17] == tf["4x4/Dense0/weight"][17, 3]
    assert sd["b4.out.weight"].shape == (1, 4) and sd["b4.out.weight"][0, 2] == tf["Output/weight"][2, 0]
    assert kwargs["epilogue_kwargs"]["mbstd_group_size"] is None  # legacy.py's default when not stored
    with torch.random.fork_rng(devices=[]):
        Discriminator(**kwargs).load_state_dict(sd, strict=True)


def test_tf_unsupported_networks_are_named():
    tf, static = _tiny_tf_generator()
    with pytest.raises(CheckpointError, match="'fmap_decay'"):
        tf_to_nv_generator(tf, dict(static, fmap_decay=1.0))
    lod = {k.replace("8x8/ToRGB", "ToRGB_lod0"): v for k, v in tf.items()}
    with pytest.raises(CheckpointError, match="configs a-d"):
        tf_to_nv_generator(lod, static)
    missing = {k: v for k, v in tf.items() if k != "synthesis/8x8/Conv1/bias"}
    with pytest.raises(CheckpointError, match="Conv1/bias"):
        tf_to_nv_generator(missing, static)


def test_stylegan3_alias_free_generator_is_refused(tmp_path):
    def obj(name, modules=None, **state):
        return export.PersistentOut({"type": "class", "version": 6, "module_src": "", "class_name": name,
                                     "state": dict(_parameters={}, _buffers={}, _modules=modules or {}, **state)})
    synthesis = obj("SynthesisNetwork", {"input": obj("SynthesisInput"), "L0_36_512": obj("SynthesisLayer")})
    G = obj("Generator", {"synthesis": synthesis}, _init_args=(), _init_kwargs={"z_dim": 512})
    path = tmp_path / "stylegan3-t-ffhq.pkl"
    path.write_bytes(export.dumps_official({"G": G, "D": None, "G_ema": G, "augment_pipe": None}))
    with pytest.raises(CheckpointError, match="StyleGAN3.*input, L0_36_512"):
        load_checkpoint(path)


def test_build_networks_keeps_the_global_rng(nets, tmp_path):
    path = export.write_rosinality_pt(tmp_path / "r.pt", nets[0])
    loaded = load_checkpoint(path)
    state = torch.random.get_rng_state()
    build_networks(loaded)
    assert torch.equal(state, torch.random.get_rng_state())


# --------------------------------------------------------------------------------------- security

class _SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvalPayload:
    def __reduce__(self):
        return eval, ("__import__('os').system('true')",)


class _UnknownClass:
    pass


class _BadTensorCall:
    """REDUCE on an allowed callable with arguments it must refuse."""

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, ("not a storage", 0, (1,), (1,), False, collections.OrderedDict())


class _HookedTensor:
    def __reduce__(self):
        hooks = collections.OrderedDict(h=collections.OrderedDict)
        return torch._utils._rebuild_parameter, (torch.zeros(2), False, hooks)


def test_os_system_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _SystemPayload(marker)}))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert ("posix.system" in msg or "nt.system" in msg) and "evil.pkl" in msg and "\n" not in msg
    assert not marker.exists()


@pytest.mark.parametrize("payload, name", [
    (_EvalPayload(), "builtins.eval"),
    (_UnknownClass(), "test_checkpoints._UnknownClass"),
    (torch.nn.Linear(2, 2), "torch.nn.modules.linear.Linear"),
    (_BadTensorCall(), "not a torch storage"),
    (_HookedTensor(), "backward hooks"),
    (np.array([1, "a"], dtype=object), "not numeric"),
])
def test_unsafe_pickle_content_is_refused_by_name(payload, name, tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(export.dumps_official({"training_set_kwargs": None, "G_ema": payload}))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as err:
        load_checkpoint(path)
    assert "bad.pkl" in str(err.value) and "\n" not in str(err.value)


def test_torch_zip_with_pickled_module_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"g_ema": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"torch\.nn\.modules\.linear\.Linear") as err:
        load_checkpoint(path)
    assert "model.pt" in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------- error paths

@pytest.mark.parametrize("case", ["missing", "directory", "text", "png", "empty", "truncated-ada", "truncated-tf",
                                  "truncated-rosinality", "unknown-dict-pkl", "unknown-dict-pt", "ada-without-nets"])
def test_bad_files_raise_one_line_errors_naming_the_file(case, nets, tmp_path):
    G, D = nets
    path = tmp_path / f"{case}.pkl"
    if case == "directory":
        path.mkdir()
    elif case == "text":
        path.write_text("this is a README, not a network\n")
    elif case == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    elif case == "empty":
        path.write_bytes(b"")
    elif case.startswith("truncated"):
        writer = {"ada": export.write_nvlabs_pytorch_pkl, "tf": export.write_nvlabs_tf_pkl,
                  "rosinality": export.write_rosinality_pt}[case.split("-")[1]]
        full = writer(tmp_path / "full", G, D).read_bytes()
        path.write_bytes(full[: len(full) // 2])
    elif case == "unknown-dict-pkl":
        path.write_bytes(pickle.dumps({"model": {"weight": np.zeros(3, np.float32)}}))
    elif case == "unknown-dict-pt":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif case == "ada-without-nets":
        path.write_bytes(export.dumps_official({"training_set_kwargs": None, "G": None, "D": None, "G_ema": None}))
    expected = {"missing": "does not exist", "directory": "is a directory", "text": "is text",
                "png": "PNG image", "empty": "is empty", "unknown-dict-pkl": "unknown layout",
                "unknown-dict-pt": "unknown layout", "ada-without-nets": "'G_ema' is a NoneType"}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert path.name in msg and "\n" not in msg
    assert expected.get(case, "truncated or corrupt") in msg
