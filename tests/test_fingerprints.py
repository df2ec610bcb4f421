"""Golden fingerprints of every stage of every built-in task (stages.yaml defaults, CPU, 2 torch threads).

A fingerprint decides whether a finished stage is skipped or redone: if a refactor changes one, every user's
dataset would be regenerated. These values were computed before the config system moved (issue 10) and left
unchanged by it; a change here must be deliberate (say so in the change note). Deliberate changes so far:
issue 12 (``render``/``pairs.png_encoder`` joined their sections, and every device-dependent stage records the
teacher forward's ``FORWARD_REVISION``, 2, since the fused forward can move values by rounding); issue 12 again
(``FORWARD_REVISION`` 3: channels-last activations on CPU and bilinear image-skip upsampling move rendered values
by float rounding, ~1e-5 on [-1, 1] images, so every device-dependent stage and all stages after it get new
fingerprints and are redone rather than resumed over shards of revision 2).
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
        'render': '27c692f96bf25c42e971a4f476464ebd766bd4a6d51e9fc775c820829cad1847',
        'manifest': '1f696f7f969dc3bf68ea26697a32842c4e74da78dd9800347f34a88282469c16',
        'card': '471103adf3dac515ff1dca1455a6e7b15310461ae061384c43a30ad377ca544c',
    },
    'morph': {
        'render': 'f6cee7eadc9d3cfdade42e0378967b97993c61bad90d5402f7dd18bf077c8d5b',
        'manifest': '394324ae383a49e3c942b71ade8653ad2accd0d74a9b1eaf3346a5c1ca22a83b',
        'card': 'c2991c7dd297a1ea2f34c59125f544e4261842648e517a166da2118fa23bde2e',
    },
    'gender': {
        'sample': 'b1a5f270f7fb4c69c187c3fa2cbce8797a475d997912ab2201dd0b0542d3193c',
        'classify': 'e78d89209289c5ad6a317428661c76de2ba04e41c8f73d84f4d4d8b6995567fe',
        'directions': 'd511bca9fa1158110f7f5b0cefadfa17bed763776484a3066886df44b42dab0f',
        'pairs': 'a37712e8afa3ba8db8b7e021f69cb1a906156e017928d5afcd5c45c0572cc426',
        'manifest': '90a47f882ecbb83e858006e8bd24a4929dd338e7136e9e99c5c0db172b9fbce3',
        'card': '6d9fdf2a71a96050e7557f0c810ae74bc2154cc94c274b898107e140586567e7',
    },
    'age': {
        'sample': 'b1a5f270f7fb4c69c187c3fa2cbce8797a475d997912ab2201dd0b0542d3193c',
        'classify': 'cafcf951be04f7690d871b21eb6b012f72d6ddeeb7912c0ce1a68d4621756a12',
        'directions': 'ec93ffb94f43ce83fe35a4a2854b7503776ed7e6b2c060097df2984e51e0249d',
        'pairs': '09abd9adac40070ca5479cb1193a2ae0047e2292f5c240ef69d31262948e6b00',
        'manifest': '7366f5752f06a873e2e695ff493edaff5c389afddf95aeac783f8304b8de168b',
        'card': '36e02a0490c0648f67ce1ac28f0d71edc12b92899e2e9a98cc35028516b1c4a0',
    },
    'stroke': {
        'sample': '4d5606469e0ecac1bd9cf2c99cca961c3f7c0c953ec7a657442cf0588b6378ba',
        'classify': '4e381cd355af11ee8ed89d38a78f611e0f7c074e9d278b0f3fba2b0f2714606c',
        'directions': 'd1b2b329067e15db328f8c51a50176169019f9c0c7df5ae484679e0346e28fc7',
        'pairs': '42c6446491ac0d81192a7793a0284785a081ae3a8f0f0e107071531b253ac54a',
        'manifest': 'da2da96ae4c60474b6443ac05acaa03d781763b5515d81a3884bbc3a31c6d304',
        'card': '9f57bb5ca10d4efe0e401cb295f6ff17feb58f926cbcd94cc45b0e10a1846173',
    },
    'brightness': {
        'sample': 'bef5f6fb3dfa74ba8e1d50201867f0e1b984ff9cee80e76cf9ae7f064afc1f22',
        'classify': '186f0e7bff15f6f27674bc0c8f33411128f4cc9bbddff31512961e77a87323b2',
        'directions': '06768e43d9b5ff4b369d62dac3e383730c33d09bbe89fd46c5728d11a1561811',
        'pairs': 'c890ed889c2c23e723828e0741d2ef1761d335c581fc011957c810e19735e6a9',
        'manifest': 'cff154d8c3604d58057e76591fca1e516f454dc6975eec13de6965fb62d4c404',
        'card': '6d78a4c6fff1ec400867684e491a610c07d4c899b5538e9a4d876ce0b05a39c6',
    },
}

# Non-default values, some given as ints where the field is a float (1 -> 1.0 must hash as before).
OVERRIDES = {'style-mix': ['render.n=37', 'render.mix=coarse', 'teacher.truncation_psi=1', 'render.png_compress_level=6', 'runtime.batch_size=3'],
             'gender': ['directions.method=svm', 'pairs.scale=2', 'pairs.steps=[-1, 1]', 'attribute.min_face_probability=null', 'sample.n=64']}

GOLDEN_OVERRIDDEN = {
    'style-mix': {
        'render': 'e8cb5b7518d1a486cf65aecaf0fd06f8550933d3bc11e196419d6eb7a9830bbf',
        'manifest': 'ba0d895bdfa776a8c11d06153dd41e7055c2054218e8ff4686b4c9824f534e36',
        'card': '453aec970a8a11a7e5b6c7f956d25b033a7771bb909669389f1c9c4741ba1495',
    },
    'gender': {
        'sample': '2020d6a9c8e9b203e5f191bd37c5b9bb582f96e3ca55e2190bdc72b350c4de7c',
        'classify': 'be9371405a2eac03ba4cfd2f9884992a19c617bc3c9d7001f7d601c2fc83299a',
        'directions': '2043b6642a5e72b89fb5694d1453b11258ae010f052a30db230f53186e20a5ec',
        'pairs': 'a35a9b77e0a90285cbfabeae569ce505bf75a6410f2e3a804b73056550e1b299',
        'manifest': '5a48633f02b0f73de25e0acb95d2cd4e10f9a6ecb3980d8a493e6adf4f1868e0',
        'card': '517b39c76c5612f0ef1cbe633f633d127434c2db18b84c6cb7b8a9b52b636b28',
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
