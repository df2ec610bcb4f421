"""StyleGAN2 operators against direct computations (Karras et al. 2020, Eq. 1-3)."""

import torch
import torch.nn.functional as F

from kdpipe.pipeline.teacher.ops import bias_act, modulated_conv2d, setup_filter, upsample2d


def naive_modconv(x, weight, styles, demodulate=True):
    """Per sample: w' = w * s (input channels), w'' = w' / sqrt(sum w'^2 + 1e-8) (per output channel), conv."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.pow(2).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        outs.append(F.conv2d(x[n:n + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


def test_modulated_conv_matches_the_paper_equations():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, 8, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 5, 3, 3, generator=gen, dtype=torch.float64)
    styles = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    expected = naive_modconv(x, weight, styles)
    for fused in (True, False):
        got = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused)
        assert torch.allclose(got, expected, atol=1e-10), fused
    no_demod = modulated_conv2d(x, weight, styles, padding=1, demodulate=False, fused_modconv=False)
    assert torch.allclose(no_demod, naive_modconv(x, weight, styles, demodulate=False), atol=1e-10)
    # Demodulated output is invariant to the scale of the styles (the point of Eq. 3).
    scaled = modulated_conv2d(x, weight, styles * 7.0, padding=1, fused_modconv=False)
    assert torch.allclose(scaled, expected, atol=1e-8)


def test_fir_filter_and_upsampling():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and abs(f.sum().item() - 1) < 1e-7 and f[1, 1] == 9 / 64
    const = torch.full((1, 2, 4, 4), 0.5)
    up = upsample2d(const, f)
    assert up.shape == (1, 2, 8, 8)
    assert torch.allclose(up[:, :, 1:-1, 1:-1], torch.full_like(up[:, :, 1:-1, 1:-1], 0.5))  # gain up^2 keeps DC


def test_bias_act_lrelu_gain_and_clamp():
    x = torch.tensor([[-1.0, 2.0]])
    out = bias_act(x, torch.tensor([0.0, 1.0]), act="lrelu")
    assert torch.allclose(out, torch.tensor([[-0.2, 3.0]]) * 2 ** 0.5)
    assert bias_act(x * 100, act="linear", clamp=5.0).abs().max() == 5.0


def test_upsample2d_equals_zero_insertion_then_fir():
    """The transposed-conv upsampling equals upstream's recipe: insert zeros, pad (2, 1), 4x4 FIR, gain 4."""
    from kdpipe.pipeline.teacher.ops import upfirdn2d

    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    ref = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4)
    assert torch.allclose(upsample2d(x, f), ref, atol=1e-12)
    assert torch.allclose(upfirdn2d(x, f, padding=[1, 1, 1, 1]), upfirdn2d(x, f, padding=[1, 1, 1, 2])[..., :-1, :],
                          atol=1e-12)  # symmetric (conv pads) and asymmetric (explicit pad) paths agree


def test_modconv_epilogue_and_torgb_match_upstream_order_with_gradients():
    """(conv * demod + noise + bias) * gain, and the 1x1 toRGB matmul in NCHW and NHWC, values and gradients."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 8, 8, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 5, 3, 3, generator=gen, dtype=torch.float64)
    styles = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    noise, bias = torch.randn(8, 8, generator=gen, dtype=torch.float64), torch.randn(4, generator=gen,
                                                                                     dtype=torch.float64)
    for demod, k in ((True, 3), (False, 1)):
        w = weight[:, :, :k, :k].contiguous()
        for fused in (True, False):
            for layout in (torch.contiguous_format, torch.channels_last):
                leaves = [t.clone().requires_grad_(True) for t in (x, w, styles, bias)]
                xx = leaves[0].contiguous(memory_format=layout)
                nz = noise if demod else None
                got = modulated_conv2d(xx, leaves[1], leaves[2], noise=nz, padding=k // 2, demodulate=demod,
                                       fused_modconv=fused, bias=leaves[3], gain=1.7)
                ref_leaves = [t.clone().requires_grad_(True) for t in (x, w, styles, bias)]
                ref = (naive_modconv(ref_leaves[0], ref_leaves[1], ref_leaves[2], demodulate=demod)
                       + (nz if nz is not None else 0) + ref_leaves[3].reshape(-1, 1, 1)) * 1.7
                assert torch.allclose(got, ref, atol=1e-10), (demod, fused, layout)
                g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
                grads = torch.autograd.grad((got * g).sum(), leaves)
                ref_grads = torch.autograd.grad((ref * g).sum(), ref_leaves)
                for a, b in zip(grads, ref_grads):
                    assert torch.allclose(a, b, atol=1e-9), (demod, fused, layout)


def test_upsample2d_bilinear_and_transposed_paths_equal_upfirdn2d():
    """[1, 3, 3, 1] takes the bilinear path (also on NHWC input), other filters the transposed conv; all equal
    upstream's zero insertion + padded FIR, values and gradients."""
    from kdpipe.pipeline.teacher.ops import upfirdn2d

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64)
    for taps in ([1, 3, 3, 1], [1, 2, 1], [1, 1], [1, 3, 3, 2]):
        f = setup_filter(taps).double()
        fw = len(taps)
        ref = upfirdn2d(x, f, up=2, padding=[(fw + 1) // 2, (fw - 2) // 2] * 2, gain=4)
        for layout in (torch.contiguous_format, torch.channels_last):
            xx = x.clone().contiguous(memory_format=layout).requires_grad_(True)
            got = upsample2d(xx, f)
            assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-12), (taps, layout)
            g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
            (grad,) = torch.autograd.grad((got * g).sum(), xx)
            xr = x.clone().requires_grad_(True)
            (ref_grad,) = torch.autograd.grad((upfirdn2d(xr, f, up=2, padding=[(fw + 1) // 2, (fw - 2) // 2] * 2,
                                                          gain=4) * g).sum(), xr)
            assert torch.allclose(grad, ref_grad, atol=1e-12), (taps, layout)
