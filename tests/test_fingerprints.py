"""Golden fingerprints of every stage of every built-in task (stages.yaml defaults, CPU, 2 torch threads).

A fingerprint decides whether a finished stage is skipped or redone: if a refactor changes one, every user's
dataset would be regenerated. These values were computed before the config system moved (issue 10); a change
here must be deliberate (bump the stage's ``schema_version`` and say so in the change note).
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
        'render': '961f5045dc6667d50bbd5f0cbbbf13f8afaf00411449fd97d9c9b4d86c8acb9e',
        'manifest': '88c5e7a4e6fb75a1ed4ec538fbc136ff2ce5cd0471bbc12e964307672993e712',
        'card': '65f0b88222d7dac13f71df8dc52b4725f19c5377853f698a4ae7b62f25267bc2',
    },
    'morph': {
        'render': '535d0ec3087572aac33d75889a2c4be283a96ab9abb174f236b31cd4ee3efa5a',
        'manifest': '2f42a58a83148614fc7d1bb669b13a707040dae3e6d68237493623c3323063a4',
        'card': '07288e26d15faf910fb684123fc3293ca0ae707ec5e4274f70b805d34f375adb',
    },
    'gender': {
        'sample': '8b99430c298349bd1138165991c3032cbfd7eab60d91592240e4434a84467d99',
        'classify': '77e267186d26a63001e5be00333386d7297c2b2a35d84ec304530b0e289392f7',
        'directions': '885e1cb29f0828ee36deb39d0a91fd38cf36db2a0222fd00a84f2d2139378d60',
        'pairs': 'dd832ae1e020d9775e44d5e5ad7e8c8b4e83d8d2a40dd1d9a34fa68d898e38b0',
        'manifest': 'd931e6daee77d0633c496707dacc8510d2f170747b02f327eda883403389a441',
        'card': 'a0ce75c75b7ec1aa8ac30e1b70fcac0e590b102e2b7ade0ddc4cd3ea397cfd13',
    },
    'age': {
        'sample': '8b99430c298349bd1138165991c3032cbfd7eab60d91592240e4434a84467d99',
        'classify': '12f9e03041043479ab56c191e1611b704c41022f020e05c1e2f9ab8f9d86a48e',
        'directions': '51a0f6394ce03b0484d35f0d36ede1c59917eb6fba91368e72ae190a03654da2',
        'pairs': '78c9d51c2e690964ba6fce22d3b85ecbd0df18f3f2c363e858bb8c390bacda82',
        'manifest': 'daef1403d49354e849a9891364ea334a39b6a8ea73bb82276e9c3c1d981b6b78',
        'card': '1cba9d16aff24a2fc2f33e0dd1db2280e9d59b2da96c5ccfac556f924b96e5c3',
    },
    'brightness': {
        'sample': '6ea9bf32446816bf349da716bc7ecc4ccedcd988f1c9b5ce7f60b530286d54c4',
        'classify': 'c16201dfdf864320e52d745ca8abad8b7eb671e0426d1a4158e1e0163f5111b0',
        'directions': '5867e08be55bca10ac129b5c0c1313045a940b108c33f0d1313881d55c4dd6a6',
        'pairs': '8738b30e0e33420a2c39507b3250fd13aa050cef8d64444cf4067b60715b1771',
        'manifest': '47d2f2a4bb3ea82e62d52501bb0efbdc32912149ec665e8223180c5a98474ac8',
        'card': '5c70711614a99e40975c71f76ea6f774048a8a82a44a0ac059f3d1063417cbe4',
    },
}

# Non-default values, some given as ints where the field is a float (1 -> 1.0 must hash as before).
OVERRIDES = {'style-mix': ['render.n=37', 'render.mix=coarse', 'teacher.truncation_psi=1', 'render.png_compress_level=6', 'runtime.batch_size=3'],
             'gender': ['directions.method=svm', 'pairs.scale=2', 'pairs.steps=[-1, 1]', 'attribute.min_face_probability=null', 'sample.n=64']}

GOLDEN_OVERRIDDEN = {
    'style-mix': {
        'render': 'dc15e522dcc9cb9a8b6979f274ace50b28a527b0344a3a0ab924a9fa5b9428b8',
        'manifest': '237a2af9a97a5f3ed2cf2e594e17985105fdfd643f57041fa1c9f14962023547',
        'card': '20da569bc14b0000301e89f2901dc2b7de6d76460a0f41c6b754a693ad56ead5',
    },
    'gender': {
        'sample': '83f2d165346e3811f05eed62af3aa4266e63a8afc1ab80352da5463203faea91',
        'classify': 'def57cdb3ca453a391d59efb1f7e4f877f1ecaef97096dbaa8da296958b37a15',
        'directions': 'f1a867441f8d2fe649d530e9d8bd26b87706570c72b7c4232d096ac0032839aa',
        'pairs': '384a232d311cfdeb8329c354c48a91dfc64f5f19d6d6a9b484c99963e9d10f12',
        'manifest': '0f33f2fd228804e711e922b4573c7124c276a175d897e7c4b60b981d5e368d47',
        'card': '73f4a0dfbd78b69bed27be0a59b581e15d528c692182d1ad7d0554845ac3bdaf',
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


@pytest.mark.parametrize("task", ["style-mix", "morph", "gender", "age", "brightness"])
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
