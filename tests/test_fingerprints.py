"""Golden fingerprints of every stage of every built-in task (stages.yaml defaults, CPU, 2 torch threads).

A fingerprint decides whether a finished stage is skipped or redone: if a refactor changes one, every user's
dataset would be regenerated. These values were computed before the config system moved (issue 10) and left
unchanged by it; a change here must be deliberate (say so in the change note). Deliberate changes so far:
issue 12 (``render``/``pairs.png_encoder`` joined their sections, and every device-dependent stage records the
teacher forward's ``FORWARD_REVISION``, 2, since the fused forward can move values by rounding); issue 14 (the
face tasks gender and age now measure each pair's identity distance by default, ``pairs.identity: auto``, which
adds ``identity_distance`` to their samples' json and manifest: their ``pairs`` fingerprint records
``revisions.identity`` and changes with ``manifest`` and ``card`` downstream; tasks that do not measure identity
keep every fingerprint, pinned below and by ``test_identity_settings_enter_face_tasks_only``); issue 12 again
(``FORWARD_REVISION`` 3: on CPU, channels-last activations and bilinear image-skip upsampling move rendered values
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
        'pairs': '311eeecaef3c1e8b8e18d7ff295587bf902ace5cf767ea217f9eaf73a893ebda',
        'manifest': 'e6cf8f36ca3d2ba2341934377dfd5e0d91e3e697933732d062769169dcd6b12e',
        'card': 'df04f92678b9082170dd8ae51447e0abb5404de83c03c3223539e68e93304a84',
    },
    'age': {
        'sample': 'b1a5f270f7fb4c69c187c3fa2cbce8797a475d997912ab2201dd0b0542d3193c',
        'classify': 'cafcf951be04f7690d871b21eb6b012f72d6ddeeb7912c0ce1a68d4621756a12',
        'directions': 'ec93ffb94f43ce83fe35a4a2854b7503776ed7e6b2c060097df2984e51e0249d',
        'pairs': '5eb6407c06f7db15511b9a7fbb41bcd2cc2fe6603cc9dede5435640bd5a33946',
        'manifest': 'e1d7fdad84d2c6b6caac3e8a6ae6d5e86148e774aa9447bc6a98515ef0cc73c2',
        'card': '8100bfdde5da71bad45ed1274d49e2f0e813bf3c682f973523688224d1c59eea',
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
        'pairs': 'c01dca77f8c0010e1dbab76dfc30ea4d4d348fa209c78c690374842322897738',
        'manifest': 'cae16d6b5336a32846b7364fa772ad04f2e894e200833fa1c4c4047cd52f2693',
        'card': '9434c7ceca547560bd9ea2ba61c0d0f4c1e297a6e8f7c628aad89ac6c16c5150',
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
    assert off["pairs"] == "a37712e8afa3ba8db8b7e021f69cb1a906156e017928d5afcd5c45c0572cc426"  # no identity
    assert task_fingerprints("gender", ["pairs.max_identity_distance=0.6"])["pairs"] != GOLDEN["gender"]["pairs"]
