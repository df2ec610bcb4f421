"""Metric core (issue 14): FID/KID/PR equal torch-fidelity's; LPIPS and intra-cluster diversity; weights errors."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from _metrics_fixtures import random_alexnet, random_inception
from kdpipe.trainers.metrics.features import extract_features
from kdpipe.trainers.metrics.fid import fid_from_features, kid_from_features, precision_recall
from kdpipe.trainers.metrics.lpips import MissingWeightsError, cluster_lpips, intra_cluster_lpips, load_lpips


@pytest.fixture(scope="module")
def lpips_metric(tmp_path_factory):
    return load_lpips("alex", random_alexnet(tmp_path_factory.mktemp("alex")))


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_shift():
    from kdpipe.pipeline.digits import real_digits

    images, _ = real_digits(np.arange(300))
    feats = extract_features(images, "digits")
    assert feats.shape == (300, 64)
    assert abs(fid_from_features(feats, feats)) < 1e-6
    assert fid_from_features(feats[:150], feats[150:]) > 1e-3
    assert fid_from_features(feats, feats + 0.5) == pytest.approx(0.25 * 64, rel=1e-6)  # |mu shift|^2 only


def test_feature_level_errors():
    a = np.zeros((5, 4))
    with pytest.raises(ValueError, match="same D"):
        fid_from_features(a, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 4"):
        precision_recall(a, a[:3], k=3)
    with pytest.raises(ValueError, match="NaN"):
        kid_from_features(a, np.full((5, 4), np.nan))


def _folder(path, rng, n, shift):
    path.mkdir()
    for i in range(n):
        img = rng.integers(0, 256, (32, 32, 3)).astype(np.int64) // 2 + shift
        PIL.Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path / f"{i:03d}.png")
    return path


def test_fid_kid_pr_equal_torch_fidelity_on_two_folders(tmp_path, one_thread):
    """Same folders, same (random, official-layout) Inception file: kdpipe's numbers == torch-fidelity's API."""
    import torch_fidelity

    from kdpipe.images import read_image_file

    weights = random_inception(tmp_path)
    rng = np.random.default_rng(0)
    dirs = [_folder(tmp_path / "a", rng, 6, 0), _folder(tmp_path / "b", rng, 6, 60)]
    feats = [extract_features(torch.stack([read_image_file(p) for p in sorted(d.glob("*.png"))]), "inception",
                              weights_path=weights) for d in dirs]
    ours_fid = fid_from_features(*feats)
    ours_kid = kid_from_features(*feats, subsets=5, subset_size=4, seed=7)
    ours_pr = precision_recall(*feats, k=3)
    ref = torch_fidelity.calculate_metrics(
        input1=str(dirs[0]), input2=str(dirs[1]), cuda=False, fid=True, kid=True, prc=True, verbose=False,
        cache=False, feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
        kid_subsets=5, kid_subset_size=4, rng_seed=7, prc_neighborhood=3, samples_shuffle=False)
    assert ours_fid > 1e-3 and ours_kid[1] > 0  # the check below compares real numbers, not zeros
    assert ours_fid == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert ours_kid[0] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)
    assert ours_kid[1] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-4)
    assert ours_pr == pytest.approx((ref["precision"], ref["recall"]), abs=1e-9)


def test_missing_weights_errors_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(MissingWeightsError, match="weights-inception-2015-12-05-6726825d.pth"):
        extract_features(torch.zeros(2, 3, 32, 32), "inception")
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        load_lpips("alex")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        load_lpips("alex", tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(MissingWeightsError, match="not a torchvision"):
        load_lpips("alex", bad)


def test_lpips_zero_for_identical_and_grows_with_noise(lpips_metric):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    noise = torch.randn(4, 3, 32, 32, generator=g)
    d = [lpips_metric(x, (x + s * noise).clamp(-1, 1)) for s in (0.0, 0.05, 0.2, 0.8)]
    assert d[0].shape == (4,) and torch.all(d[0].abs() < 1e-6)
    assert all(torch.all(lo < hi) for lo, hi in zip(d, d[1:]))
    with pytest.raises(ValueError, match="same shape"):
        lpips_metric(x, x[:, :, :16])


def test_intra_cluster_lpips_of_copies_is_zero(lpips_metric):
    g = torch.Generator().manual_seed(1)
    targets = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    copies = targets.repeat_interleave(4, dim=0)  # 4 copies of each target: every cluster holds one image
    assert intra_cluster_lpips(copies, targets, lpips_metric) == pytest.approx(0.0, abs=1e-6)
    varied = (copies + 0.3 * torch.randn(copies.shape, generator=g)).clamp(-1, 1)
    per_cluster = cluster_lpips(varied, targets, lpips_metric)
    assert per_cluster.shape == (3,) and intra_cluster_lpips(varied, targets, lpips_metric) > 0.0
    with pytest.raises(ValueError, match="no cluster"):
        intra_cluster_lpips(targets, targets, lpips_metric)
