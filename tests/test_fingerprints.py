"""Golden fingerprints of every stage of every built-in task (stages.yaml defaults, CPU, 2 torch threads).

A fingerprint decides whether a finished stage is skipped or redone: if a refactor changes one, every user's
dataset would be regenerated. These values were computed before the config system moved (issue 10) and left
unchanged by it; a change here must be deliberate (say so in the change note). Deliberate changes so far:
issue 12 (``render``/``pairs.png_encoder`` joined their sections, and every device-dependent stage records the
teacher forward's ``FORWARD_REVISION``, 2, since the fused forward can move values by rounding); issue 14 (the
face tasks gender and age now measure each pair's identity distance by default, ``pairs.identity: auto``, which
adds ``identity_distance`` to their samples' json and manifest: their ``pairs`` fingerprint records
``revisions.identity`` and changes with ``manifest`` and ``card`` downstream; tasks that do not measure identity
keep every fingerprint, pinned below and by ``test_identity_settings_enter_face_tasks_only``).
"""

from __future__ import annotations

import pytest
import torch

from kdpipe.pipeline.config import resolve_config
from kdpipe.pipeline.runner.dag import fingerprint
from kdpipe.pipeline.stages.tasks import build_stages

TEACHER_SHA256 = "ab" * 32  # the teacher enters only through its file hash

GOLDEN = {
    'style-mix': {
        'render': '00b81ecdf49d6408f7fd8f46b92f586c62e80290c7889107c0ce2d9bbd6e643e',
        'manifest': '596c1c1b143f1e507028005485e49b72f7eea4f8a6f515546a5f78f112525e1b',
        'card': 'ce2d62477f3ed3895a8b0c3d79625769e58d22838d7dfd20e64a3856142b0adc',
    },
    'morph': {
        'render': 'e25b8a14a296db41c098aa795af117b959a99306cae43b290d6eae3f99228e18',
        'manifest': 'a2e138bfcb5f137862d90d873370234716f09c1503e6fff78b4f9840f2a6b7a1',
        'card': '236f4a61ac779ee1b4014e6f22be1a607d992fc5493bffe79c83a656b13fe25f',
    },
    'gender': {
        'sample': 'dd9cf12209e76ad424ef692d531f5c9ccc09441cd8340d88164631b5395da7af',
        'classify': 'c8006e739976414fe64fa45081a36a12e9d48ac818afca72aaf25b13bdaa9310',
        'directions': '953a47d8aeb15caa2efd607855c92cd74c8fa6cd89b6e970d647a641d08cb90c',
        'pairs': 'a71fc4285eb99b0d9647d42495b332796eea6c0fd4f7cdb20e5c65688a4c2d8b',
        'manifest': '51d342a6165f384e740655ec06c41f09010a3e8ce66ff3b93a98502a363dc750',
        'card': 'f22d8c8a01ad0fe42bd9a02b2411dfb1f8dd2aef5d1360604e2ebcc6d351e5a5',
    },
    'age': {
        'sample': 'dd9cf12209e76ad424ef692d531f5c9ccc09441cd8340d88164631b5395da7af',
        'classify': 'c26167ec326f5b52441ffa69c398a126ceea691473d7171e945d96c6dcd277a0',
        'directions': '492659a3c93efc501f26ab09548701ccc1566e72c35c1dc1df74b3f15a2a97b6',
        'pairs': '3f1a650bd6af0489d847d374827f31a35a9e876a4ef761ba906e1daf493d8582',
        'manifest': 'c521a480d558bb44b8fa115588d9fe0e0a0f55d5aac0050f884be671dde72521',
        'card': 'fcc5f77b5777a4759b2ca9a11e4f27e0f8a5f7ab3fb5b3467ff5a017de89a6d4',
    },
    'stroke': {
        'sample': '8693980ac0eb50b005e8484b6b84c7d4c1e9e531e131fb24dcb2949bc973a9bb',
        'classify': 'e6f9c9c219704cad21e5375a88eb8b8e1ba4bc576d22bd6db631a6a48d67c637',
        'directions': '6841121cc266fb26ad793353b7b96af1bf1d86db951ffd5308fddf7b3fb7ff4c',
        'pairs': 'c371aca9e6d4be70ff0b7c0d0b8bb23b9e98ec7b0e2d7dd06158b71a66f17003',
        'manifest': 'b031a846c0538b285ea5d40cc671cd3df80f8723c28fb7f1ef0f9583e1e8ea7b',
        'card': '8e43fca6896f46600673a25e8c6f1e78dc1adf6602bf7171880270f392c632be',
    },
    'brightness': {
        'sample': '128f1072cef71f7bf1a528ad80c12767b2fe411e92685971c2e7e89b9b73908c',
        'classify': 'ff149ba077bc7f4b213c159473b8f8d73840a5c40e227bcbe52e25790f0f2912',
        'directions': '53908b1c35fbf58026b929a83ed8cf85346cf49fb3e3a4bb7e1e7f7a1ace1e6a',
        'pairs': '699927d75d4ca045cfa85885d76a6dfa327f43d4f2d91926d1ad64241caae6d3',
        'manifest': 'b4ec1f9a827a5ef447c405d89f42a792bf715d8c99926ae7fdb97693facbae6c',
        'card': '3879370284fc8b57de28957f490a89d957e2b9d8f2a808548c422c38b1793741',
    },
}

# Non-default values, some given as ints where the field is a float (1 -> 1.0 must hash as before).
OVERRIDES = {'style-mix': ['render.n=37', 'render.mix=coarse', 'teacher.truncation_psi=1', 'render.png_compress_level=6', 'runtime.batch_size=3'],
             'gender': ['directions.method=svm', 'pairs.scale=2', 'pairs.steps=[-1, 1]', 'attribute.min_face_probability=null', 'sample.n=64']}

GOLDEN_OVERRIDDEN = {
    'style-mix': {
        'render': '83742d270d5b84d1f94ff972a26ec11894f00d89d41971240e14d2a5d29e563d',
        'manifest': 'ffb4c76f0597893b7e564d1aaf6d9477f3d22d5c3551eb8cae04d1fb403b490d',
        'card': '0431cbd824b4453f3c909cc69423ac35a06970b643acf7c14a88832a39e519ad',
    },
    'gender': {
        'sample': 'b2cc9bc0cbc669456d0cfeaecc16943e03ecabe77ca44b1153b9ee9af3d3794e',
        'classify': '7c710ea4dc66c7ae8ef6eceab025fe4942293269fa667db56f822bebff282afd',
        'directions': '1fc8733a8baf394fe7b3fa4fc436235a0d7d3392898521ac05561f799b6ae19b',
        'pairs': '81e90c411f6d24844df1411d4cd0780696ce799352243a196e7f3f1e755f4e2d',
        'manifest': '17ba52ffa7e0f8d7b695d1eed04abe96aee2172807308195deec51c208666ec8',
        'card': '58a462bfb0a8806ca59f0e746a1624ad335962ddefc4445cc5d39f0996e521f5',
    },
}


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the CPU thread count is part of device-dependent fingerprints
    yield
    torch.set_num_threads(before)


def task_fingerprints(task: str, overrides: list[str] | None = None) -> dict[str, str]:
    cfg = resolve_config(task, overrides=overrides,
                         cli={"teacher": {"generator": "builtin:random-32"}, "runtime": {"device": "cpu"}})
    upstream: dict[str, str] = {}
    for stage in build_stages(cfg.task, cfg.stages):
        upstream[stage.name] = fingerprint(stage, cfg, dict(upstream), TEACHER_SHA256, torch.device("cpu"))
    return upstream


@pytest.mark.parametrize("task", sorted(GOLDEN))
def test_fingerprints_are_pinned(task, two_threads):
    assert task_fingerprints(task) == GOLDEN[task]


@pytest.mark.parametrize("task", sorted(OVERRIDES))
def test_fingerprints_with_overrides_are_pinned(task, two_threads):
    assert task_fingerprints(task, OVERRIDES[task]) == GOLDEN_OVERRIDDEN[task]


def test_fingerprint_ignores_runtime_and_generator_path(two_threads):
    cfg_a = task_fingerprints("morph")
    cfg_b = task_fingerprints("morph", ["runtime.batch_size=5", "runtime.progress=false", "runtime.encode_workers=0"])
    assert cfg_a == cfg_b


def test_logreg_revision_redoes_logreg_directions_only(two_threads):
    """logreg now follows seed 002's released code; its directions (and everything after) must be redone, while
    mean-diff and svm fingerprints stay as pinned."""
    from kdpipe.pipeline.runner.dag import fingerprint_inputs

    cfg = resolve_config("gender", overrides=["directions.method=logreg"],
                         cli={"teacher": {"generator": "builtin:random-32"}, "runtime": {"device": "cpu"}})
    stage = next(s for s in build_stages(cfg.task, cfg.stages) if s.name == "directions")
    assert fingerprint_inputs(stage, cfg, {}, TEACHER_SHA256, torch.device("cpu"))["revisions"] == {"logreg": 2}
    fp = task_fingerprints("gender", ["directions.method=logreg"])
    assert fp["sample"] == GOLDEN["gender"]["sample"] and fp["classify"] == GOLDEN["gender"]["classify"]
    assert fp["directions"] != GOLDEN["gender"]["directions"]


def test_identity_settings_enter_face_tasks_only(two_threads):
    """pairs.identity / max_identity_distance change a fingerprint only where identity is measured."""
    assert task_fingerprints("stroke", ["pairs.identity=never"]) == GOLDEN["stroke"]
    assert task_fingerprints("brightness", ["pairs.identity=auto"]) == GOLDEN["brightness"]
    on = task_fingerprints("brightness", ["pairs.identity=always"])
    assert on["pairs"] != GOLDEN["brightness"]["pairs"] and on["directions"] == GOLDEN["brightness"]["directions"]
    off = task_fingerprints("gender", ["pairs.identity=never"])
    assert off["pairs"] == "22d0eaf33832398fdb74bb154c82b6e6f4529114e0c37dc60b7c5cede2348946"  # before issue 14
    assert task_fingerprints("gender", ["pairs.max_identity_distance=0.6"])["pairs"] != GOLDEN["gender"]["pairs"]
