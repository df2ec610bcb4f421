"""`kdpipe generate --task style-mix|morph`: shards readable by plain webdataset, correct targets, clean errors."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from kdpipe.pipeline.latents import mix_ws, parse_mix
from kdpipe.pipeline.render import Renderer

GEN = ["--generator", "builtin:random-32", "--no-progress"]


def test_style_mix_shards_open_with_plain_webdataset(tmp_path, cli, tiny_teacher):
    res = cli("generate", "--task", "style-mix", "-n", 10, "--out", tmp_path, *GEN, "--set", "render.shard_size=4")
    assert res.exit_code == 0, res.output
    task_dir = tmp_path / "style-mix"
    shards = sorted((task_dir / "shards").glob("*.tar"))
    assert [p.name for p in shards] == [f"style-mix-00000{k}.tar" for k in range(3)]
    # Read with webdataset only, in a fresh interpreter that never imports kdpipe.
    code = (
        "import json, sys, webdataset as wds\n"
        "assert 'kdpipe' not in sys.modules\n"
        f"ds = wds.WebDataset('{task_dir}/shards/style-mix-{{000000..000002}}.tar', shardshuffle=False).decode('rgb8')\n"
        "out = [(s['__key__'], sorted(k for k in s if not k.startswith('__')), s['x1.png'].shape, str(s['y.png'].dtype),"
        " s['latents.npy'].shape, str(s['latents.npy'].dtype), s['json']['seeds']) for s in ds]\n"
        "print(json.dumps(out))\n")
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert len(out) == 10
    key, keys, shape, dtype, lat_shape, lat_dtype, seeds = out[3]
    assert key == "00000003" and keys == ["json", "latents.npy", "x1.png", "x2.png", "y.png"]
    assert shape == [32, 32, 3] and dtype == "uint8"
    G, _ = tiny_teacher
    assert lat_shape == [3, G.num_ws, G.w_dim] and lat_dtype == "float32"
    assert seeds == [6, 7]  # sample i uses seeds 2i, 2i+1 (base seed 0)
    manifest = pq.read_table(task_dir / "manifest.parquet").to_pylist()
    assert [r["index"] for r in manifest] == list(range(10)) and manifest[3]["seed_x2"] == 7
    card = (task_dir / "README.md").read_text()
    assert card.startswith("---\n") and "samples: 10" in card and "untrained built-in" in card


def test_targets_equal_teacher_on_mixed_latents(tmp_path, cli, tiny_teacher):
    import webdataset as wds

    assert cli("generate", "--task", "style-mix", "-n", 3, "--out", tmp_path, *GEN).exit_code == 0
    assert cli("generate", "--task", "morph", "-n", 3, "--out", tmp_path, *GEN).exit_code == 0
    G, _ = tiny_teacher
    r = Renderer(G, torch.device("cpu"), truncation_psi=0.7)
    for task in ("style-mix", "morph"):
        sample = next(iter(wds.WebDataset(str(tmp_path / task / "shards" / f"{task}-000000.tar"),
                                          shardshuffle=False).decode("rgb8")))
        w1, w2 = r.ws_from_seeds([0]), r.ws_from_seeds([1])
        wy = mix_ws(w1, w2, parse_mix("crossover:4", G.num_ws)) if task == "style-mix" else (w1 + w2) / 2
        lat = sample["latents.npy"]
        assert np.allclose(lat[0], w1[0].numpy()) and np.allclose(lat[2], wy[0].numpy(), atol=1e-6)
        assert np.array_equal(sample["x1.png"], r.images(w1)[0])
        assert np.array_equal(sample["y.png"], r.images(wy)[0])
        assert not np.array_equal(sample["y.png"], sample["x1.png"])


def test_second_run_skips_and_dry_run_explains(tmp_path, cli):
    args = ["generate", "--task", "morph", "-n", 2, "--out", tmp_path, *GEN]
    assert cli(*args).exit_code == 0
    again = cli(*args)
    assert again.exit_code == 0
    assert [line.split()[0] for line in again.stdout.splitlines()[:3]] == ["skip"] * 3
    dry = cli(*args, "--dry-run", "--set", "teacher.truncation_psi=0.5")
    assert dry.exit_code == 0
    assert "would run    render     teacher.truncation_psi 0.7 -> 0.5" in dry.stdout
    assert "would run    manifest   upstream changed" in dry.stdout


@pytest.mark.parametrize("make_file, expected", [
    (None, "does not exist"),
    (lambda p: p.write_text("hello, I am a text file\n"), "is not a checkpoint: it is text"),
    (lambda p: p.write_bytes(b"\x80\x04\x95"), "truncated"),
    (lambda p: __import__("torch").save({"weights": [1, 2]}, p), "unknown layout"),
])
def test_bad_generator_gives_one_line_error_and_writes_nothing(tmp_path, cli, make_file, expected):
    ckpt = tmp_path / "teacher.pkl"
    if make_file:
        make_file(ckpt)
    out = tmp_path / "out"
    res = cli("generate", "--task", "style-mix", "-n", 2, "--out", out, "--generator", ckpt, "--no-progress")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "teacher.pkl" in lines[0], res.stderr
    assert expected in lines[0]
    assert "Traceback" not in res.output
    assert not out.exists()


def test_a_teacher_must_be_named(tmp_path, cli):
    res = cli("generate", "--task", "style-mix", "--out", tmp_path, "--no-progress")
    assert res.exit_code == 2 and "no teacher: pass --generator PATH" in res.stderr
    assert not (tmp_path / "style-mix").exists()


def test_config_errors_name_the_field(tmp_path, cli):
    res = cli("generate", "--task", "style-mix", "--out", tmp_path, *GEN, "--set", "render.shard_size=0")
    assert res.exit_code == 2 and "render.shard_size=0 must be >= 1" in res.stderr
    res = cli("generate", "--task", "style-mix", "--out", tmp_path, *GEN, "--set", "render.colour=red")
    assert res.exit_code == 2 and "unknown config key 'render.colour'" in res.stderr
    res = cli("generate", "--task", "nope", "--out", tmp_path, *GEN)
    assert res.exit_code == 2 and "unknown task 'nope'" in res.stderr
    res = cli("generate", "--task", "style-mix", "--out", tmp_path, *GEN, "--mix", "crossover:99")
    assert res.exit_code == 2 and "crossover 99 is outside" in res.stderr
    assert not (tmp_path / "style-mix" / "shards").exists()


def test_config_reads_yaml_exponents_as_numbers():
    from kdpipe.pipeline.config import resolve_config

    cfg = resolve_config("brightness", overrides=["pairs.scale=1e-1", "teacher.truncation_psi=5e-1"])
    assert cfg.pairs.scale == 0.1 and cfg.teacher.truncation_psi == 0.5
