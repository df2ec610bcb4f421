"""Directions in W: planted directions are recovered, projection is orthogonal, age bins."""

import json

import numpy as np
import pytest

from kdpipe.pipeline.attributes.age_bins import age_bin_directions
from kdpipe.pipeline.attributes.directions import (
    LOGREG_STEP,
    METHODS,
    Direction,
    DirectionError,
    binary_labels,
    find_direction,
    project_out,
    select_confident,
)

W_DIM = 32


def _planted(n=3000, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(W_DIM)
    d /= np.linalg.norm(d)
    w = rng.standard_normal((n, W_DIM)).astype(np.float32)
    score = w @ d + noise * rng.standard_normal(n)
    return w, d, score


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("method", METHODS)
def test_planted_direction_recovered(method):
    w, d, score = _planted()
    labels = (score > 0).astype(np.int64)
    res = find_direction(w, labels, method=method, attribute="planted")
    assert res.vector.dtype == np.float32 and res.vector.shape == (W_DIM,)
    assert _cos(res.vector, d) >= 0.95
    assert res.report["held_out_accuracy"] >= 0.9
    assert res.report["counts"]["0"] + res.report["counts"]["1"] == len(w)
    assert res.report["n_test"] == 600
    json.dumps(res.report)  # serialisable
    # source/target swapped -> direction flips
    back = find_direction(w, labels, source=1, target=0, method=method)
    assert _cos(back.vector, d) <= -0.95


def _anisotropic(n=4000, seed=0):
    """Two Gaussian classes with a shared, strongly anisotropic covariance: the class-mean difference (mean-diff)
    and the discriminative normal Sigma^-1 (mu1 - mu0) (what logreg and a linear SVM estimate) point apart."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((W_DIM, W_DIM)))
    scales = np.geomspace(3.0, 0.1, W_DIM)  # std per principal axis
    cov = basis @ np.diag(scales ** 2) @ basis.T
    gap = basis @ (np.ones(W_DIM) * 0.3)  # mean difference spread over every axis
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    z = rng.standard_normal((n, W_DIM)) * scales
    w = (z @ basis.T + np.outer(labels, gap)).astype(np.float32)
    return w, labels, gap, np.linalg.solve(cov, gap)


def test_methods_differ_on_anisotropic_w_and_each_matches_its_own_definition():
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    w, labels, gap, fisher = _anisotropic()
    md, lr, sv = (find_direction(w, labels, method=m) for m in METHODS)
    # mean-diff: the closed form, the difference of class centres (seed 002 step 4).
    np.testing.assert_allclose(md.vector, w[labels == 1].mean(0) - w[labels == 0].mean(0), atol=1e-5)
    assert md.report["centre_gap"] == pytest.approx(md.report["norm"], rel=1e-6)
    assert _cos(md.vector, gap) > 0.99 and _cos(md.vector, fisher) < 0.6
    # logreg: seed 002's released code, 1.5 * raw coef_ of a class-balanced logistic regression.
    ref = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=0).fit(w.astype(np.float64), labels)
    np.testing.assert_allclose(lr.vector, LOGREG_STEP * ref.coef_[0], rtol=1e-5, atol=1e-6)
    assert _cos(lr.vector, fisher) > 0.93
    # svm: unit normal of scikit-learn's LinearSVC hyperplane (InterFaceGAN).
    svc = LinearSVC(C=1.0, dual="auto", max_iter=20000, random_state=0).fit(w.astype(np.float64), labels)
    np.testing.assert_allclose(sv.vector, svc.coef_[0] / np.linalg.norm(svc.coef_[0]), atol=1e-5)
    assert np.linalg.norm(sv.vector) == pytest.approx(1.0, abs=1e-5) and _cos(sv.vector, fisher) > 0.97
    # The three really differ here (on isotropic w they would coincide).
    assert _cos(md.vector, lr.vector) < 0.7 and _cos(md.vector, sv.vector) < 0.7
    assert min(lr.report["held_out_accuracy"], sv.report["held_out_accuracy"]) > md.report["held_out_accuracy"] + 0.1


def test_logreg_weights_classes_equally():
    w, labels, _, _ = _anisotropic(n=3000, seed=1)
    keep = (labels == 1) | (np.arange(len(labels)) % 6 == 0)  # class 0 kept at ~1/6: imbalanced 1:6
    w, labels = w[keep], labels[keep]
    from sklearn.linear_model import LogisticRegression

    plain = LogisticRegression(max_iter=2000, random_state=0).fit(w.astype(np.float64), labels)
    got = find_direction(w, labels, method="logreg")
    assert not np.allclose(got.vector, LOGREG_STEP * plain.coef_[0], rtol=1e-3)  # not the unweighted fit


def test_confidence_selection_and_determinism():
    w, d, score = _planted(n=1000, noise=0.0)
    labels, conf = binary_labels(1 / (1 + np.exp(-4 * score)))
    keep = select_confident(labels, conf, min_confidence=0.9)
    assert keep.sum() < len(w) and (conf[keep] >= 0.9).all()
    top = select_confident(labels, conf, max_per_class=100)
    assert [(labels[top] == k).sum() for k in (0, 1)] == [100, 100]
    a = find_direction(w, labels, confidence=conf, min_confidence=0.9, method="logreg", seed=3)
    b = find_direction(w, labels, confidence=conf, min_confidence=0.9, method="logreg", seed=3)
    assert a.report == b.report and np.array_equal(a.vector, b.vector)
    assert a.report["counts"]["0"] + a.report["counts"]["1"] == keep.sum()
    valid = np.ones(len(w), bool)
    valid[:500] = False
    c = find_direction(w, labels, valid=valid)
    assert sum(c.report["counts"].values()) == 500
    # NaN probability -> unknown label, never selected
    lab, cf = binary_labels(np.array([0.2, np.nan, 0.9]))
    assert lab.tolist() == [0, -1, 1] and cf.tolist() == pytest.approx([0.8, 0.0, 0.9])


def test_direction_roundtrip_dict():
    w, d, score = _planted(n=300)
    res = find_direction(w, (score > 0).astype(int), method="svm", attribute="gender")
    back = Direction.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.attribute == "gender" and back.report == res.report
    np.testing.assert_array_equal(back.vector, res.vector)


def test_projection_is_orthogonal_to_removed_directions():
    rng = np.random.default_rng(1)
    w, d, score = _planted(n=2000)
    main = find_direction(w, (score > 0).astype(int), method="mean-diff", attribute="gender")
    other = d * 0.7 + 0.7 * rng.standard_normal(W_DIM) / np.sqrt(W_DIM)  # correlated with main
    other_dir = Direction("age", "svm", 0, 1, (other / np.linalg.norm(other)).astype(np.float32), {})
    third = rng.standard_normal(W_DIM).astype(np.float32)
    for removed in ([other_dir], [other_dir, third]):
        p = project_out(main, removed)
        for r in removed:
            vec = r.vector if isinstance(r, Direction) else r
            assert abs(_cos(p.vector.astype(np.float64), vec.astype(np.float64))) < 1e-6
        assert np.linalg.norm(p.vector) == pytest.approx(np.linalg.norm(main.vector), rel=1e-5)
        assert p.report["conditioned_on"][0] == "age"
        assert all(abs(c) < 1e-6 for c in p.report["residual_cosines"].values())
        assert 0 < p.report["cosine_with_original"] < 1
    with pytest.raises(DirectionError, match="span"):
        project_out(main, [main])


def _ordinal(n=4000, n_bins=6, seed=0):
    """Latents whose bin is an ordinal function of a planted axis: bin k centre at k * 2 along d."""
    rng = np.random.default_rng(seed)
    d = np.zeros(W_DIM)
    d[3] = 1.0
    bins = rng.integers(0, n_bins, n)
    w = rng.standard_normal((n, W_DIM)) * 0.5
    w[:, 3] = 2.0 * bins + 0.3 * rng.standard_normal(n)
    return w.astype(np.float32), bins, d


def test_age_bin_vectors_on_ordinal_structure():
    w, bins, d = _ordinal()
    res = age_bin_directions(w, bins, n_bins=6, steps=(2, -2))
    assert res.vectors.shape == (6, 2, W_DIM)
    # interior: exactly two bins, vector ~ 4 * d
    for k in (2, 3):
        np.testing.assert_allclose(res.vector(k, 2) @ d, 4.0, atol=0.1)
        np.testing.assert_allclose(res.vector(k, -2) @ d, -4.0, atol=0.1)
        assert _cos(res.vector(k, 2), d) > 0.98
    # edges: bin 4 "+2" is clipped to bin 5 (one bin), bin 5 has no older bin
    assert res.targets[4, 0] == 5 and res.vector(4, 2) @ d == pytest.approx(2.0, abs=0.1)
    assert res.targets[5, 0] == -1 and res.vector(5, 2) is None
    assert res.targets[0, 1] == -1 and res.targets[1, 1] == 0
    entries = {(e["source"], e["step"]): e for e in res.report["entries"]}
    assert entries[(4, 2)]["clipped"] and not entries[(2, 2)]["clipped"]
    assert all(e["held_out_accuracy"] >= 0.95 for e in entries.values())
    json.dumps(res.to_dict())


def test_age_bins_skip_empty_bin():
    w, bins, d = _ordinal()
    keep = bins != 3  # bin 3 empty: 1 + 2 -> bin 2 (furthest populated within reach)
    res = age_bin_directions(w[keep], bins[keep], n_bins=6, min_count=5)
    assert res.targets[1, 0] == 2 and res.targets[2, 0] == 4 and res.targets[3, 0] == -1


def test_errors_are_clear():
    w, d, score = _planted(n=100)
    labels = (score > 0).astype(int)
    with pytest.raises(DirectionError, match="unknown direction method"):
        find_direction(w, labels, method="pca")
    with pytest.raises(DirectionError, match=r"ws\[:, 0\]"):
        find_direction(w[:, None, :], labels)
    with pytest.raises(DirectionError, match="shape \\[100\\]"):
        find_direction(w, labels[:50])
    with pytest.raises(DirectionError, match="too few confident samples"):
        find_direction(w, np.zeros(100, int))
    with pytest.raises(DirectionError, match="fewer than 2 age bins"):
        age_bin_directions(w, np.zeros(100, int), n_bins=3)
    with pytest.raises(DirectionError, match="n_bins"):
        age_bin_directions(w, np.full(100, 7), n_bins=3)
