"""``kdpipe eval`` end to end (issue 14): results files, the feature cache, a student run, the training hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _metrics_fixtures import random_alexnet
from _p2p_fixtures import make_pair_shards, p2p_overrides

pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS_EVAL = ["eval", "--generator", "builtin:digits-32", "--reference", "digits", "--reference-n", "200",
               "--features", "digits", "--metrics", "fid,kid,pr", "--kid-subsets", "5", "--no-progress"]


def _results(out):
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("eval-*.json"))]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return docs, rows


def test_eval_generator_against_digits_writes_results_and_caches_the_reference(cli, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = cli(*DIGITS_EVAL, "--n", "64", "--out", out, "--cache-dir", cache)
    assert first.exit_code == 0, first.output
    second = cli(*DIGITS_EVAL, "--n", "48", "--seed", "100", "--out", out, "--cache-dir", cache)
    assert second.exit_code == 0, second.output
    assert "features (reference): from the cache" in second.output
    assert "features (reference): from the cache" not in first.output
    docs, rows = _results(out)
    assert len(docs) == 2 and len(rows) == 2 and len(list(out.glob("eval-*.png"))) == 2
    assert docs[1]["cache"] == {"dir": str(cache), "hits": 1, "misses": 1}  # reference hit, generated miss
    fid = docs[0]["results"][0]
    assert fid["metric"] == "fid" and fid["n"] == 64 and fid["n_reference"] == 200 and fid["value"] > 0
    assert fid["feature_extractor"] == "digits" and len(fid["feature_extractor_sha256"]) == 64
    assert fid["reference"].startswith("real digits") and fid["seed"] == 0
    assert docs[0]["kdpipe_version"] and docs[1]["generated"]["seed"] == 100
    assert [r["metric"] for r in docs[0]["results"]] == ["fid", "kid", "pr"]
    assert rows[0]["eval/fid"] == fid["value"] and 0 <= rows[0]["eval/recall"] <= 1
    # same generated set as the first call: same features from the cache, same FID
    third = cli(*DIGITS_EVAL, "--n", "64", "--out", out, "--cache-dir", cache, "--metrics", "fid")
    assert third.exit_code == 0 and "features (generated): from the cache" in third.output
    assert _results(out)[0][2]["results"][0]["value"] == pytest.approx(fid["value"], rel=1e-12)


def test_per_class_and_rc_fc_on_real_digits(tmp_path):
    from kdpipe.trainers.metrics.context import EvalOptions
    from kdpipe.trainers.metrics.evaluate import evaluate
    from kdpipe.trainers.metrics.sources import load_source

    real = load_source("digits")
    a = load_source("digits")
    a.images, a.labels = real.images[::2], real.labels[::2]
    b = load_source("digits")
    b.images, b.labels = real.images[1::2], real.labels[1::2]
    doc = evaluate(a, b, "fid,rc-fc", EvalOptions(features="digits"))
    fid, rcfc = (r["values"] for r in doc["results"])
    assert fid["mclasses"] == 10 and fid["mfid"] > fid["fid"] > 0  # fewer images per class: larger FID
    assert rcfc["rc"] > 0.9 and rcfc["fc"] > 0.85  # halves of the same real set are interchangeable
    shuffled = load_source("digits")
    shuffled.images, shuffled.labels = a.images, np.roll(a.labels, 1)  # wrong intended classes
    bad = evaluate(shuffled, b, "rc-fc", EvalOptions(features="digits"))["results"][0]["values"]
    assert bad["rc"] < 0.3 and bad["fc"] < 0.3


def test_eval_errors_are_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    res = cli("eval", "--generator", "builtin:digits-32", "--n", "8", "--reference", "digits", "--out", tmp_path)
    assert res.exit_code == 2 and "weights-inception-2015-12-05-6726825d.pth not found" in res.output
    assert not list(tmp_path.glob("eval-*"))
    res = cli("eval", "--generator", "builtin:digits-32", "--n", "8", "--metrics", "fid", "--features", "digits",
              "--out", tmp_path)
    assert res.exit_code == 2 and "pass --reference" in res.output
    res = cli(*DIGITS_EVAL, "--n", "8", "--out", tmp_path, "--metrics", "fid,bogus")
    assert res.exit_code == 2 and "unknown metric" in res.output
    res = cli("eval", "--n", "8", "--out", tmp_path)
    assert res.exit_code == 2 and "exactly one of" in res.output


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return make_pair_shards(tmp_path_factory.mktemp("pairs"), n=16, per_shard=8)


def test_student_run_evaluated_end_to_end_and_eval_hook_leaves_training_unchanged(cli, pairs, tmp_path):
    from kdpipe.trainers.core.checkpoint import load_checkpoint
    from kdpipe.trainers.pix2pixhd import run

    hooked = p2p_overrides(pairs, tmp_path / "hooked", 2, **{"loop.eval_every": 1, "loop.eval_metrics": "fid,pr",
                                                             "loop.eval_features": "digits", "loop.eval_images": 8})
    res = run(overrides=hooked)
    evals = [r for r in res.records if "eval/fid" in r]
    assert [r["step"] for r in evals] == [1, 2] and evals[0]["eval/fid"] != evals[1]["eval/fid"]
    plain = run(overrides=p2p_overrides(pairs, tmp_path / "plain", 2))
    a, b = load_checkpoint(res.checkpoints[-1]), load_checkpoint(plain.checkpoints[-1])
    for k, v in a["trainer_state"]["G"].items():  # evaluation draws no training randomness, moves no data position
        assert torch.equal(v, b["trainer_state"]["G"][k]), k
    assert a["data"] == b["data"]

    alex = random_alexnet(tmp_path)
    res = cli("eval", "--student", tmp_path / "plain", "--inputs", pairs, "--role", "src", "--reference", pairs,
              "--reference-role", "tgt", "--features", "digits", "--metrics", "fid,lpips-pair,attribute",
              "--classifier", "brightness", "--lpips-weights", alex, "--device", "cpu", "--no-cache", "--no-progress")
    assert res.exit_code == 0, res.output
    docs, rows = _results(tmp_path / "plain")
    values = {k: v for r in docs[0]["results"] for k, v in r["values"].items()}
    assert docs[0]["generated"]["step"] == 2 and docs[0]["generated"]["n"] == 16
    assert values["lpips_pair"] > 0 and 0 <= values["attribute_moved"] <= 1
    assert rows[-1]["step"] == 2 and rows[-1]["eval/fid"] == values["fid"]


def test_identity_metric_on_the_astronaut_and_its_mirror():
    from skimage import data

    from kdpipe.trainers.metrics.context import EvalOptions
    from kdpipe.trainers.metrics.evaluate import evaluate
    from kdpipe.trainers.metrics.sources import ImageSet

    photo = torch.from_numpy(data.astronaut()[::2, ::2].copy()).permute(2, 0, 1)[None]  # uint8 [1, 3, 256, 256]
    blank = torch.zeros_like(photo)
    translated = ImageSet(torch.cat([photo.flip(3), blank]), "mirrored", inputs=torch.cat([photo, photo]))
    values = evaluate(translated, None, "identity", EvalOptions())["results"][0]["values"]
    assert values["identity_faces"] == 0.5  # the blank output has no face: left out, counted
    assert values["identity_same_person"] == 1.0 and 0 <= values["identity_distance"] < 0.6
