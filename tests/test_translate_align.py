"""``kdpipe translate --align``: real photos are FFHQ-aligned (faces helper's align_face) before the student."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from kdpipe.pipeline.attributes.protocol import ClassifierError

pytest.importorskip("dlib")
skimage_data = pytest.importorskip("skimage.data")
from kdpipe.pipeline.align import NoFaceError, align_face  # noqa: E402
from kdpipe.pipeline.attributes.landmarks import model_file  # noqa: E402

try:
    model_file("shape_predictor_68_face_landmarks.dat")
except ClassifierError as err:  # the faces extra is not installed
    pytest.skip(str(err), allow_module_level=True)

from kdpipe.trainers.core.checkpoint import latest_checkpoint  # noqa: E402
from kdpipe.trainers.stargan2.train_ft import run_ft  # noqa: E402
from kdpipe.trainers.translate import translate  # noqa: E402

from test_translate_students import TINY_LOOP, TINY_MODEL, _write  # noqa: E402


def test_align_crops_the_face_before_the_student(tmp_path, cli, one_thread):
    for d, name in enumerate(["f", "m"]):
        _write(tmp_path / "data" / name / "0.png", d)
    run_ft(None, {"data.path": str(tmp_path / "data"), "data.batch_size": 2, "loop.steps": 1,
                  "loop.out_dir": str(tmp_path / "run"), **TINY_MODEL, **TINY_LOOP})
    ckpt = latest_checkpoint(tmp_path / "run")
    astronaut = skimage_data.astronaut()
    (tmp_path / "photos").mkdir()
    PIL.Image.fromarray(astronaut).save(tmp_path / "photos" / "astronaut.png")
    PIL.Image.fromarray(align_face(astronaut, output_size=16)).save(tmp_path / "aligned.png")
    r = cli("translate", "--checkpoint", ckpt, "--align", "--seeds", "0", "--domain", "m", tmp_path / "photos",
            tmp_path / "out")
    assert r.exit_code == 0, r.output
    by_hand = translate(ckpt, [tmp_path / "aligned.png"], tmp_path / "out2", seeds=[0], domains=["m"], device="cpu")
    got = np.asarray(PIL.Image.open(tmp_path / "out" / "astronaut__m__seed0000.png"))
    assert np.array_equal(got, np.asarray(PIL.Image.open(by_hand[0])))
    unaligned = translate(ckpt, [tmp_path / "photos"], tmp_path / "out3", seeds=[0], domains=["m"], device="cpu")
    assert not np.array_equal(got, np.asarray(PIL.Image.open(unaligned[0])))
    _write(tmp_path / "noise" / "noise.png", 3, (64, 64))
    with pytest.raises(NoFaceError, match="noise.png'?: no face found"):
        translate(ckpt, [tmp_path / "noise"], tmp_path / "out4", seeds=[0], domains=["m"], align=True, device="cpu")
