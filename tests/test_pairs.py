"""Issue 4: the attribute-pair DAG (sample -> classify -> directions -> pairs) end to end on a tiny teacher."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from kdpipe.pipeline.stages.pairs import choose_pair

TINY = ["--generator", "builtin:random-32", "--no-progress", "--set", "sample.n=600", "--set", "pairs.n=30",
        "--set", "pairs.shard_size=10", "--set", "classify.part_size=100"]


def test_choose_pair_prefers_the_pair_nearest_the_unedited_latent():
    steps = [-1, -0.5, 0, 0.5, 1]
    lab = np.array([0, 0, 0, 1, 1])
    ok = np.ones(5, bool)
    conf = np.ones(5)
    assert choose_pair(lab, conf, ok, steps, 0.9) == (2, 3)
    conf[2] = 0.5  # the unedited image is not confident: next best
    assert choose_pair(lab, conf, ok, steps, 0.9) == (1, 3)
    assert choose_pair(np.array([1, 1, 0, 0, 0]), np.ones(5), ok, steps, 0.9) is None  # wrong order
    assert choose_pair(lab, np.ones(5), np.zeros(5, bool), steps, 0.9) is None


def test_brightness_pairs_end_to_end(tmp_path, cli):
    res = cli("generate", "--task", "brightness", "--out", tmp_path, *TINY)
    assert res.exit_code == 0, res.output
    task = tmp_path / "brightness"
    state = json.loads((task / "stages" / "directions.json").read_text())["summary"]
    assert state["report"]["held_out_accuracy"] >= 0.9
    manifest = pq.read_table(task / "manifest.parquet").to_pylist()
    assert len(manifest) >= 10  # most candidates give a pair on this teacher
    # (tgt brighter than src in the manifest holds by construction of the selection; what can fail is below.)
    assert_direction_brightens_held_out_latents(task)
    pairs = json.loads((task / "stages" / "pairs.json").read_text())["summary"]["filters"]
    assert pairs["pairs.candidates"] == 30 and pairs["pairs.kept"] == len(manifest)
    sample = next(iter(wds.WebDataset(str(task / "shards" / "brightness-000000.tar"), shardshuffle=False)
                       .decode("rgb8")))
    assert sorted(k for k in sample if not k.startswith("__")) == ["json", "latents.npy", "src.png", "tgt.png"]
    assert sample["latents.npy"].shape[0] == 2 and sample["json"]["direction"] == "dark->bright"
    card = (task / "README.md").read_text()
    assert "pairs.pass_rate" in card and "tgt_brightness" in card
    # Resume: a second run skips everything; changing the pair steps redoes only pairs and downstream.
    again = cli("generate", "--task", "brightness", "--out", tmp_path, *TINY, "--set", "pairs.scale=1.5")
    actions = [line.split()[:2] for line in again.stdout.splitlines()[:6]]
    assert actions == [["skip", "sample"], ["skip", "classify"], ["skip", "directions"], ["run", "pairs"],
                       ["run", "manifest"], ["run", "card"]], again.stdout


def assert_direction_brightens_held_out_latents(task):
    """The found direction, applied to latents no stage has seen, makes brighter images (and its negative
    darker ones); and the stored PNGs have the brightness the manifest records."""
    import torch

    from kdpipe.images import hwc_to_float
    from kdpipe.pipeline.attributes.image_stats import ImageStatistics
    from kdpipe.pipeline.render import Renderer
    from kdpipe.pipeline.teacher.load import load_teacher

    direction = json.loads((task / "directions" / "direction.json").read_text())
    delta = torch.tensor(direction["vector"], dtype=torch.float32)
    r = Renderer(load_teacher("builtin:random-32", torch.device("cpu")).G, torch.device("cpu"), truncation_psi=0.7)
    ws = r.ws_from_seeds(range(7_000_000, 7_000_048))  # far from sample.seed (1e8 + i) and pairs.seed (0 + i)
    layers = list(range(*direction["layers"]))[: ws.shape[1]]
    stats = ImageStatistics(("brightness",))

    def brightness(edit_sign):
        edited = ws.clone()
        edited[:, layers] += edit_sign * delta
        return stats(hwc_to_float(r.images(edited))).values["brightness"]

    darker, base, brighter = brightness(-1), brightness(0), brightness(1)
    assert np.mean(brighter > base) >= 0.9 and np.mean(darker < base) >= 0.9
    assert brighter.mean() - darker.mean() > 0.05
    shard = sorted((task / "shards").glob("*.tar"))[0]
    rows = {r["key"]: r for r in pq.read_table(task / "manifest.parquet").to_pylist()}
    for sample in wds.WebDataset(str(shard), shardshuffle=False).decode("rgb8"):
        src, tgt = (stats(hwc_to_float(np.array(sample[k])[None])).values["brightness"][0]
                    for k in ("src.png", "tgt.png"))
        row = rows[sample["__key__"]]
        assert (src, tgt) == pytest.approx((row["src_brightness"], row["tgt_brightness"]), abs=1e-5)


def test_teacher_without_faces_stops_after_classify_with_counts(tmp_path, cli):
    res = cli("generate", "--task", "gender", "--out", tmp_path, "--generator", "builtin:random-32", "--no-progress",
              "--set", "sample.n=8", "--set", "sample.resolution=32")
    assert res.exit_code == 2
    assert "of 8 classified samples are usable with face probability >= 0.99" in res.stderr, res.stderr
    assert json.loads((tmp_path / "gender" / "stages" / "classify.json").read_text())["status"] == "done"
    assert not (tmp_path / "gender" / "shards").exists()


def test_classify_command_on_a_real_photo(tmp_path, cli):
    skimage = pytest.importorskip("skimage.data")
    from PIL import Image

    path = tmp_path / "astronaut.png"
    Image.fromarray(skimage.astronaut()).resize((256, 256)).save(path)
    res = cli("classify", path)
    assert res.exit_code == 0, res.output
    entry = json.loads(res.stdout.strip().splitlines()[0])
    assert entry["face"]["probability"] > 0.9 and entry["face"]["box"] is not None
    assert entry["attributes"]["gender"]["value"] < 0.5  # p_male: Eileen Collins
    assert 15 < entry["attributes"]["age"]["value"] < 75


class BrightnessBins:
    """A user classifier (loaded by dotted path) with an ordinal output, to drive the `bins` (age) path."""

    attributes = ("level",)
    edges = np.array([0.25, 0.35, 0.45, 0.55, 0.65])  # 6 bins over the teacher's brightness range

    def __call__(self, images):
        from kdpipe.pipeline.attributes.classifiers import ClassifierOutput, ImageStatistics

        brightness = ImageStatistics(("brightness",))(images).values["brightness"]
        level = np.digitize(brightness, self.edges).astype(np.float32)
        n = len(level)
        return ClassifierOutput(values={"level": level}, confidences={"level": np.ones(n, np.float32)},
                                valid=np.ones(n, bool))


def test_bins_attribute_with_a_user_classifier_moves_two_bins(tmp_path, cli):
    res = cli("generate", "--task", "age", "--out", tmp_path, *TINY,
              "--set", "attribute.classifier=test_pairs:BrightnessBins", "--set", "attribute.name=level",
              "--set", "attribute.min_face_probability=null", "--set", "attribute.age_bin_edges=[0,1,2,3,4,5,6]",
              "--set", "sample.resolution=32")
    assert res.exit_code == 0, res.output
    manifest = pq.read_table(tmp_path / "age" / "manifest.parquet").to_pylist()
    assert len(manifest) >= 5
    steps = [row["tgt_level"] - row["src_level"] for row in manifest]
    assert all(row["direction"] == "younger->older" for row in manifest)
    assert set(steps) <= {1.0, 2.0}  # src is the lower bin; two bins apart, one where clipped at an end
    assert steps.count(2.0) >= len(steps) / 2
    direction = json.loads((tmp_path / "age" / "directions" / "direction.json").read_text())
    assert direction["kind"] == "bins" and direction["steps"] == [2, -2]


def test_pair_task_with_two_ranks_equals_one_process(tmp_path):
    """Ranks split the classify parts, wait for each other before `directions`, then split the pair shards."""
    import os
    import subprocess
    import sys

    from conftest import dataset_bytes

    args = ["generate", "--task", "brightness", "--generator", "builtin:random-32", "--no-progress",
            "--set", "sample.n=300", "--set", "classify.part_size=50", "--set", "pairs.n=24",
            "--set", "pairs.shard_size=6"]
    subprocess.run([sys.executable, "-m", "kdpipe.cli", *args, "--out", str(tmp_path / "one")], check=True,
                   capture_output=True)
    procs = [subprocess.Popen([sys.executable, "-m", "kdpipe.cli", *args, "--out", str(tmp_path / "two")],
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE="2"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert dataset_bytes(tmp_path / "two" / "brightness") == dataset_bytes(tmp_path / "one" / "brightness")
