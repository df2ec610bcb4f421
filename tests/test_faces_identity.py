"""dlib identity embeddings and FFHQ alignment on a real photo (scikit-image's astronaut, Eileen Collins)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdpipe.images import hwc_to_float
from kdpipe.pipeline.attributes.protocol import ClassifierError

pytest.importorskip("dlib")
skimage_data = pytest.importorskip("skimage.data")

identity = pytest.importorskip("kdpipe.pipeline.attributes.identity")
from kdpipe.pipeline.align import NoFaceError, align_face, align_files, ffhq_quad  # noqa: E402
from kdpipe.pipeline.attributes.landmarks import find_face, model_file  # noqa: E402

try:
    model_file("shape_predictor_68_face_landmarks.dat")
    model_file("dlib_face_recognition_resnet_model_v1.dat")
except ClassifierError as err:  # the faces extra is not installed
    pytest.skip(str(err), allow_module_level=True)


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()  # [512, 512, 3] uint8


@pytest.fixture(scope="module")
def astro(astronaut):
    return hwc_to_float(astronaut[None])  # [1, 3, 512, 512] in [-1, 1]


def test_same_person_under_mirror_and_crop(astro):
    crop = F.interpolate(astro[..., 30:480, 40:490], size=(400, 400), mode="bilinear", antialias=True)
    mirror = identity.identity_distance(astro, astro.flip(-1))
    cropped = identity.identity_distance(astro, crop)
    assert mirror.dtype == np.float32 and mirror.shape == (1,)
    assert 0.05 < mirror[0] < identity.SAME_PERSON_DISTANCE  # not the same pixels, still the same person
    assert 0.0 < cropped[0] < identity.SAME_PERSON_DISTANCE


def test_no_face_is_nan_and_rows_are_independent(astro):
    noise = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    emb, found = identity.face_embeddings(torch.cat([noise, astro]))
    assert found.tolist() == [False, True]
    assert np.isnan(emb[0]).all() and np.isfinite(emb[1]).all() and emb.shape == (2, 128)
    alone, _ = identity.face_embeddings(astro)
    np.testing.assert_array_equal(alone[0], emb[1])  # same image, same descriptor, whatever the batch
    dist = identity.identity_distance(torch.cat([astro, astro]), torch.cat([noise, astro]))
    assert np.isnan(dist[0]) and dist[1] == 0.0


def test_bad_inputs_raise_one_line_errors(astro):
    with pytest.raises(ClassifierError, match="as many images"):
        identity.identity_distance(astro, torch.cat([astro, astro]))
    with pytest.raises(ClassifierError, match="float"):
        identity.face_embeddings(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ClassifierError, match=r"\[N, 128\]"):
        identity.embedding_distance(np.zeros((2, 128)), np.zeros((3, 128)))
    with pytest.raises(ClassifierError, match="pixels"):
        find_face(np.zeros((5000, 4000, 3), dtype=np.uint8))


def _eyes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    face = find_face(image, detect_side=image.shape[0])
    assert face is not None
    return face.landmarks[36:42].mean(axis=0), face.landmarks[42:48].mean(axis=0)


def test_align_astronaut_puts_eyes_on_ffhq_line(astronaut):
    out = align_face(astronaut)
    assert out.shape == (1024, 1024, 3) and out.dtype == np.uint8
    left, right = _eyes(out)
    mid = (left + right) / 2 / 1024
    assert abs(left[1] - right[1]) < 0.01 * 1024  # level
    assert abs(mid[0] - 0.5) < 0.01  # centred
    # the recipe puts the eye midpoint at y = 0.5 - 0.05 |eye_to_mouth| / half side, in [0.472, 0.5]
    assert 0.465 < mid[1] < 0.5, mid
    assert 0.2 < np.linalg.norm(right - left) / 1024 <= 0.255  # at most a quarter side apart
    again = align_face(astronaut)
    np.testing.assert_array_equal(out, again)


def test_align_levels_a_rotated_face(astronaut):
    from PIL import Image

    def tilt_degrees(image):
        left, right = _eyes(image)
        return np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0]))

    tilted = np.asarray(Image.fromarray(astronaut).rotate(-20, resample=Image.BILINEAR))
    assert tilt_degrees(tilted) > 15
    out = align_face(tilted, output_size=256)
    assert abs(tilt_degrees(np.asarray(Image.fromarray(out).resize((512, 512), Image.BICUBIC)))) < 2


def test_ffhq_quad_golden():
    lm = np.zeros((68, 2))
    lm[36:42] = [100, 100]
    lm[42:48] = [200, 100]
    lm[48], lm[54] = [120, 220], [180, 220]  # mouth 120 px below the eyes: half side = max(200, 216) = 216
    quad, qsize = ffhq_quad(lm)
    c = np.array([150, 112])
    np.testing.assert_allclose(quad, [c + [-216, -216], c + [-216, 216], c + [216, 216], c + [216, -216]])
    assert qsize == pytest.approx(432)


def test_align_files_and_errors(tmp_path, astronaut):
    from PIL import Image

    Image.fromarray(astronaut).save(tmp_path / "astro.jpg", quality=95)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "blank.png")
    logs = []
    written = align_files([tmp_path / "astro.jpg", tmp_path / "blank.png"], tmp_path / "out", 128, logs.append)
    assert [p.name for p in written] == ["astro.png"]
    assert np.asarray(Image.open(written[0])).shape == (128, 128, 3)
    assert any("blank.png: no face" in line for line in logs)
    with pytest.raises(NoFaceError, match="no face found in any"):
        align_files([tmp_path / "blank.png"], tmp_path / "out2", 128, logs.append)
    with pytest.raises(Exception, match="output_size"):
        align_face(astronaut, output_size=4)


def test_align_command(cli, tmp_path, astronaut):
    from PIL import Image

    Image.fromarray(astronaut).save(tmp_path / "astro.png")
    (tmp_path / "notes.png").write_bytes(b"not an image")
    res = cli("align", tmp_path / "astro.png", "--out", tmp_path / "out", "--size", "64")
    assert res.exit_code == 0, res.output
    assert np.asarray(Image.open(tmp_path / "out" / "astro.png")).shape == (64, 64, 3)
    res = cli("align", tmp_path / "notes.png", "--out", tmp_path / "out")
    assert res.exit_code == 2 and "cannot be decoded" in res.output and "Traceback" not in res.output


def test_identity_metric_in_kdpipe_eval(cli, tmp_path, astronaut):
    import json

    from PIL import Image

    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    crop = np.asarray(Image.fromarray(astronaut[30:480, 40:490]).resize((512, 512), Image.BICUBIC))
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    for name, image in (("a", astronaut[:, ::-1]), ("b", crop), ("c", noise)):
        Image.fromarray(np.ascontiguousarray(image)).save(gen / f"{name}.png")
        Image.fromarray(astronaut).save(ref / f"{name}.png")
    res = cli("eval", "--images", gen, "--reference", ref, "--metrics", "identity", "--no-cache", "--no-progress",
              "--device", "cpu", "--out", tmp_path / "res")
    assert res.exit_code == 0, res.output
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("eval-*.json")]
    (row,) = result["results"]
    values = row["values"]
    assert row["metric"] == "identity" and row["value"] == values["identity_distance"]
    assert values["identity_faces"] == pytest.approx(2 / 3)  # no face in the noise image: left out, counted
    assert values["identity_same_person"] == 1.0 and 0.05 < values["identity_distance"] < 0.6
    res = cli("eval", "--images", gen, "--metrics", "identity", "--no-cache", "--no-progress", "--device", "cpu",
              "--out", tmp_path / "res2")
    assert res.exit_code == 2 and "pass --reference" in res.output and "Traceback" not in res.output
