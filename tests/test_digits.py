"""Digits domain: real data upsampling, the `digit` / `stroke` attributes, Fréchet distance, the demo teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdpipe.pipeline.attributes.classifiers import build_classifier
from kdpipe.pipeline.attributes.digits import (StrokeStatistics, default_digit_model, digit_features, digit_report,
                                               frechet_distance, to_digit8, train_digit_model)
from kdpipe.pipeline.digits import real_digits, split_indices


def test_real_digits_are_32px_white_on_black_and_read_back_to_8x8():
    x, y = real_digits()
    assert x.shape == (1797, 3, 32, 32) and y.shape == (1797,) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() <= 1 and torch.equal(x[:, 0], x[:, 2])
    assert (x[:, :, :4] == -1).all() and (x[:, :, :, 28:] == -1).all()  # 4-px black border
    from sklearn.datasets import load_digits

    back = to_digit8(x[:50]).reshape(50, 8, 8)
    assert np.abs(back - load_digits().images[:50]).mean() < 1.0  # 0..16 scale: close to the originals


def test_shipped_digit_classifier_is_accurate_on_held_out_digits():
    model = default_digit_model()
    assert model.held_out_accuracy >= 0.93
    train, test = split_indices(0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1797
    x, y = real_digits(test[:100])
    out = build_classifier("digit")(x)
    assert (out.values["digit"] == y.numpy()).mean() >= 0.9
    assert out.confidences["digit"].min() > 0.1 and out.valid.all()


def test_stroke_width_of_a_bar_is_area_over_half_perimeter():
    imgs = -torch.ones(3, 3, 32, 32)
    imgs[0, :, 8:24, 10:12] = 1  # 16 x 2 bar
    imgs[1, :, 8:24, 10:14] = 1  # 16 x 4 bar
    out = StrokeStatistics()(imgs)
    w, L = np.array([2.0, 4.0]), 16.0
    np.testing.assert_allclose(out.values["stroke"][:2], w * L / (w + L), rtol=1e-6)
    np.testing.assert_allclose(out.values["ink"][:2], w * L / 1024, rtol=1e-6)
    assert list(out.valid) == [True, True, False] and np.isnan(out.values["stroke"][2])
    assert build_classifier("stroke")(imgs).values.keys() == {"stroke"}


def test_frechet_distance_is_zero_for_equal_sets_and_the_squared_mean_shift_for_shifted_ones():
    a = np.random.default_rng(0).normal(size=(500, 4))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, a + np.array([3.0, 0, 0, 0])) == pytest.approx(9.0, rel=1e-6)


def test_demo_teacher_ships_trained_with_its_discriminator():
    from kdpipe.pipeline.teacher.load import load_teacher

    teacher = load_teacher("builtin:digits-32")
    assert teacher.trained and teacher.format == "builtin-trained" and teacher.name == "builtin:digits-32"
    assert teacher.D is not None and teacher.G.img_resolution == 32 and teacher.G.num_ws == 8
    assert teacher.sha256 == load_teacher("builtin:digits-32").sha256 and len(teacher.sha256) == 64
    with torch.no_grad():
        img = teacher.G(torch.randn(4, teacher.G.z_dim))
        assert img.shape == (4, 3, 32, 32) and teacher.D(img).shape == (4, 1)
    assert (img[:, 0] - img[:, 1]).abs().max() < 0.2  # grey as RGB, like its training data


def test_demo_teacher_draws_digits_a_fresh_classifier_recognises(one_thread):
    """Issue 13 'Done when': seeds 0-999, psi 1; a classifier trained here on another split than the shipped one."""
    from kdpipe.pipeline.latents import z_from_seeds
    from kdpipe.pipeline.teacher.load import load_teacher

    teacher = load_teacher("builtin:digits-32")
    with torch.no_grad():
        fake = torch.cat([teacher.G(z) for z in z_from_seeds(range(1000), teacher.G.z_dim).split(250)])
    model = train_digit_model(*split_indices(1))
    report = digit_report(fake, model)
    real, _ = real_digits()
    fd_fake = frechet_distance(digit_features(fake, model), digit_features(real, model))
    print(f"confident={report['confident']:.3f} classes={report['class_fractions']} fd={fd_fake:.3f}")
    assert report["confident"] >= 0.9
    assert report["min_class_fraction"] >= 0.04
