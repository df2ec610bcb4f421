"""Every registered trainer through ``kdpipe train NAME``: stop/resume per invocation, --help from the dataclasses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from _p2p_fixtures import TINY_P2P, make_pair_shards
from kdpipe.trainers.core.checkpoint import latest_checkpoint, load_checkpoint
from kdpipe.trainers.registry import TRAINERS

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_SG2 = {"model.img_size": 16, "model.dim_in": 8, "model.max_conv_dim": 32, "model.num_down": 2,
            "model.hidden_dim": 16, "model.style_dim": 8, "loop.deterministic": True, "loop.sample_every": 0,
            "loop.log_every": 1}


TINY_STYLEGAN2 = {"data.resolution": 8, "data.batch_size": 4, "model.z_dim": 8, "model.w_dim": 8,
                  "model.channel_base": 64, "model.channel_max": 8, "loop.sample_every": 0, "loop.log_every": 1,
                  "loop.ckpt_every": 4}

TINY_COMPRESS = {"data.batch_size": 2, "loop.sample_every": 0, "loop.log_every": 1, "loop.ckpt_every": 4,
                 "loss.lambda_lpips": 0.0, "loss.ld_pca_components": 1, "loss.ld_pca_samples": 16, "report.seeds": 2,
                 "report.fid_samples": 0, "report.speed_batch": 1, "report.speed_repeats": 1}

TINY_FEWSHOT = {"data.batch_size": 2, "loss.dist_batch": 2, "loss.layers": [16], "loop.sample_every": 0,
                "loop.log_every": 1, "loop.ckpt_every": 4}


TINY_X2I = {"model.channel_base": 64, "model.channel_max": 8, "loop.deterministic": True, "loop.sample_every": 0,
            "loop.log_every": 1}


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            PIL.Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _set(items: dict) -> list[str]:
    return [a for k, v in items.items() for a in ("--set", f"{k}={json.dumps(v)}")]


@pytest.fixture(scope="module")
def trainer_args(tmp_path_factory) -> dict[str, list[str]]:
    """Tiny CLI arguments per registered trainer (a new trainer must add its own here)."""
    root = tmp_path_factory.mktemp("registry")
    pairs = make_pair_shards(root / "pairs", n=8, per_shard=4)
    p2p = {k: v for k, v in TINY_P2P.items() if k not in ("loop.device", "loop.progress")}
    return {
        "pix2pixhd": ["--data", str(pairs), *_set(p2p)],
        "stargan2-kd": ["--teacher", "builtin:random-16", *_set(TINY_SG2)],
        "stargan2": ["--data", str(_folder(root / "folder")), "--batch-size", "2", *_set(TINY_SG2)],
        "stylegan2": ["--data", "digits", *_set(TINY_STYLEGAN2)],
        "stylegan2-compress": ["--teacher", "builtin:random-16", *_set(TINY_COMPRESS)],

        "stylegan2-fewshot": ["--teacher", "builtin:random-16", "--data", str(_folder(root / "fewshot")),
                              "--method", "cdc", *_set(TINY_FEWSHOT)],

        "x2i": ["--teacher", "builtin:random-16", "--batch-size", "2", *_set(TINY_X2I)],
    }


def test_every_trainer_has_test_arguments(trainer_args):
    assert set(trainer_args) == set(TRAINERS)


@pytest.mark.parametrize("name", list(TRAINERS))
def test_stop_after_is_per_invocation_for_every_trainer(name, trainer_args, tmp_path, cli):
    """--steps 9 --stop-after 2 -> 2; --resume --stop-after 3 -> 5 (given again: it applies); --resume -> 9 (a
    stop_after kept from the checkpoint would stop at 8, one ignored on resume at 9 in the second call)."""
    out = tmp_path / "run"
    base = ["train", name, *trainer_args[name], "--out", out, "--device", "cpu", "--no-progress", "--steps", "9"]

    def step_after(*extra) -> int:
        res = cli(*base, *extra)
        assert res.exit_code == 0, res.output
        return int(load_checkpoint(latest_checkpoint(out))["step"])

    assert step_after("--stop-after", "2") == 2
    assert step_after("--resume", "--stop-after", "3") == 5
    assert step_after("--resume") == 9
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 10))


@pytest.mark.parametrize("name", list(TRAINERS))
def test_help_lists_every_field_with_its_default(name, cli):
    from kdpipe.trainers.cli import config_fields

    res = cli("train", name, "--help")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for dotted, _, _, _ in config_fields(TRAINERS[name].config):
        assert f"{dotted} = " in text, dotted
    if name == "stargan2-kd":  # the trainer's own defaults, not the dataclass's
        assert "loop.steps = 20000" in text and "teacher.truncation_psi = 0.7" in text


def test_config_file_then_set_then_options(trainer_args, tmp_path, cli):
    """defaults < --config YAML < options and --set; the run's config.yaml is the resolved one."""
    import yaml

    cfg = tmp_path / "p2p.yaml"
    cfg.write_text(yaml.safe_dump({"loop": {"steps": 5, "seed": 3}, "model": {"ngf": 4}}))
    out = tmp_path / "run"
    res = cli("train", "pix2pixhd", *trainer_args["pix2pixhd"], "--config", cfg, "--out", out, "--device", "cpu",
              "--no-progress", "--steps", "1", "--set", "model.ngf=6")
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["loop"]["steps"], saved["loop"]["seed"], saved["model"]["ngf"]) == (1, 3, 6)
    res = cli("train", "pix2pixhd", "--out", tmp_path / "r2", "--set", "model.nope=1")
    assert res.exit_code == 2 and "model.nope" in res.output
