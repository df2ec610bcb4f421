"""The teacher network: golden pixels, upstream conventions, fused == unfused, batch invariance, features."""

import numpy as np
import pytest
import torch

from kdpipe.pipeline.latents import mix_ws, morph_ws, parse_mix, z_from_seeds
from kdpipe.errors import ConfigError
from kdpipe.pipeline.teacher.networks import Generator
from kdpipe.images import to_uint8
from kdpipe.pipeline.render import Renderer
from kdpipe.pipeline.teacher.load import build_builtin

# G.synthesis(G.mapping(z(seed 0), psi=0.7)) of builtin:random-32, pixels [0, :, 10:13, 10:13] (pinned 2026-11).
GOLDEN_SLICE = [0.014723, 0.154098, 0.116741, -0.303506, -0.292349, 0.077417, -0.174396, -0.401169, -0.106334,
                -1.435315, -1.421926, -1.531929, -0.98789, -1.144989, -1.127809, -1.571292, -1.519833, -1.619535,
                -0.895148, -1.061233, -1.153404, -0.75824, -0.78534, -0.918925, -0.811216, -0.722371, -0.932314]


def test_seed_to_z_follows_nvlabs_convention():
    z = z_from_seeds([0, 7], 8)
    assert z.dtype == torch.float32 and z.shape == (2, 8)
    expected = np.random.RandomState(7).randn(1, 8).astype(np.float32)[0]
    assert torch.equal(z[1], torch.from_numpy(expected))
    assert abs(z[0, 0].item() - 1.7640523) < 1e-6  # RandomState(0).randn()[0]
    with pytest.raises(ConfigError, match="outside"):
        z_from_seeds([2 ** 32], 8)


def test_golden_pixels(tiny_teacher):
    G, _ = tiny_teacher
    with torch.no_grad():
        img = G(z_from_seeds([0, 1], G.z_dim), truncation_psi=0.7)
    assert img.shape == (2, 3, 32, 32) and img.dtype == torch.float32
    got = img[0, :, 10:13, 10:13].flatten().tolist()
    assert np.allclose(got, GOLDEN_SLICE, atol=1e-4), got
    # the CPU forward runs NHWC inside; images and features come back NCHW-contiguous as documented
    with torch.no_grad():
        img, feats = G.synthesis(G.mapping(z_from_seeds([0], G.z_dim)), return_features=True)
    assert img.is_contiguous() and all(f.is_contiguous() for f in feats.values())


def test_truncation_psi_and_cutoff(tiny_teacher):
    G, _ = tiny_teacher
    z = z_from_seeds([3, 4], G.z_dim)
    with torch.no_grad():
        w = G.mapping(z)
        w0 = G.mapping(z, truncation_psi=0.0)
        wc = G.mapping(z, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(w0, G.mapping.w_avg.expand_as(w0))
    assert torch.allclose(wc[:, :2], G.mapping.w_avg + 0.5 * (w[:, :2] - G.mapping.w_avg), atol=1e-6)
    assert torch.equal(wc[:, 2:], w[:, 2:])


def test_noise_modes(tiny_teacher):
    G, _ = tiny_teacher
    ws = G.mapping(z_from_seeds([5, 6], G.z_dim))
    with torch.no_grad():
        const_a, const_b = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
        rand_a, rand_b = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
        none = G.synthesis(ws, noise_mode="none")
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(rand_a, rand_b)
    assert not torch.allclose(none, const_a)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="bogus")


def test_fused_and_unfused_modconv_agree(tiny_teacher):
    G, _ = tiny_teacher
    ws = G.mapping(z_from_seeds(range(4), G.z_dim), truncation_psi=0.7)
    with torch.no_grad():
        a = G.synthesis(ws, fused_modconv=True)
        b = G.synthesis(ws, fused_modconv=False)
    assert (a - b).abs().max() < 1e-4


def test_render_is_batch_size_invariant_on_cpu(tiny_teacher):
    G, _ = tiny_teacher
    seeds = list(range(7))
    outs = []
    for bs in (1, 2, 3, 16):
        r = Renderer(G, torch.device("cpu"), truncation_psi=0.7, batch_size=bs)
        outs.append(r.images(r.ws_from_seeds(seeds)))
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    assert outs[0].shape == (7, 32, 32, 3) and outs[0].dtype == np.uint8


def test_render_is_batch_size_invariant_for_a_wider_teacher():
    """128 px / 64 channels: oneDNN picks kernels by shape, so forwards are padded to a fixed size on CPU."""
    G, _ = build_builtin("random-128")
    r = Renderer(G, torch.device("cpu"), truncation_psi=0.7)
    seeds = list(range(5))
    ws = r.ws_from_seeds(seeds)
    pieces = [r.ws_from_seeds(seeds[a:b]) for a, b in ((0, 1), (1, 3), (3, 5))]
    assert torch.equal(torch.cat(pieces), ws)
    whole = r.images(ws)
    assert np.array_equal(np.concatenate([r.images(p) for p in pieces]), whole)


def test_to_uint8_matches_nvlabs():
    img = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.5]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(img)[0, 0, :, 0].tolist() == [0, 64, 128, 255, 255]


def test_style_mix_and_morph_latents():
    ws1, ws2 = torch.zeros(2, 10, 4), torch.ones(2, 10, 4)
    assert parse_mix("crossover:4", 10) == [4, 5, 6, 7, 8, 9]
    assert parse_mix(4, 10) == parse_mix("4", 10)
    assert parse_mix("coarse", 10) == [0, 1, 2, 3]
    assert parse_mix("middle", 18) == [4, 5, 6, 7]
    assert parse_mix("fine", 18) == list(range(8, 18))
    mixed = mix_ws(ws1, ws2, parse_mix("crossover:4", 10))
    assert mixed[:, :4].eq(0).all() and mixed[:, 4:].eq(1).all()
    assert morph_ws(ws1, ws2).eq(0.5).all()
    for bad in ("crossover:0", "crossover:10", "wide"):
        with pytest.raises(ConfigError):
            parse_mix(bad, 10)


def test_synthesis_features_and_discriminator(tiny_teacher):
    G, D = tiny_teacher
    ws = G.mapping(z_from_seeds([0, 1, 2, 3], G.z_dim))
    with torch.no_grad():
        img, feats = G.synthesis(ws, return_features=True)
        logits, dfeats = D(img, return_features=True)
    assert sorted(feats) == [4, 8, 16, 32] and feats[32].shape[-1] == 32
    assert logits.shape == (4, 1)
    assert sorted(dfeats) == [8, 16, 32] and dfeats[32].shape[-1] == 16
    with pytest.raises(ValueError, match="ws must be"):
        G.synthesis(ws[:, :3])


def test_num_ws_matches_upstream_formula():
    for res, num_ws in ((4, 2), (8, 4), (64, 10), (256, 14)):
        G = Generator(8, 0, 8, res, 3, mapping_kwargs=dict(num_layers=1), channel_base=4096, channel_max=8)
        assert G.num_ws == num_ws == G.mapping.num_ws


def test_builtin_teacher_is_deterministic():
    G1, D1 = build_builtin("random-16")
    G2, D2 = build_builtin("random-16")
    for a, b in zip(list(G1.state_dict().values()) + list(D1.state_dict().values()),
                    list(G2.state_dict().values()) + list(D2.state_dict().values())):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in G1.parameters())
