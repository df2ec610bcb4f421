"""The one config system (issue 10) and the validation of issue 11 item 6: every value checked, NaN/inf refused,
options a task ignores refused, bounded n, rank variables checked. All fail before anything is written."""

from __future__ import annotations

import dataclasses

import pytest

from kdpipe.config import parse_set
from kdpipe.errors import ConfigError
from kdpipe.pipeline.config import SECTIONS, PipelineConfig, resolve_config, section_help
from kdpipe.pipeline.runner.dag import world_from_env

GEN = ["--generator", "builtin:random-16", "--no-progress", "--device", "cpu"]


def error_of(cli, tmp_path, *args) -> str:
    res = cli("generate", "--out", tmp_path, *GEN, *args)
    assert res.exit_code == 2, res.output
    assert not any(tmp_path.iterdir()), "nothing may be written before the config is valid"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["--task", "style-mix", "--truncation-psi", "nan"], "teacher.truncation_psi=nan must be a finite number"),
    (["--task", "gender", "--set", "pairs.scale=.inf"], "pairs.scale=inf must be a finite number"),
    (["--task", "brightness", "--set", "attribute.min_confidence=.nan"], "attribute.min_confidence=nan must be"),
    (["--task", "morph", "--set", "teacher.truncation_psi=NaN"], "teacher.truncation_psi='NaN' must be a finite"),
    (["--task", "brightness", "--set", "attribute.quantiles=[.nan, 0.7]"], "attribute.quantiles=[nan, 0.7] must be"),
    (["--task", "gender", "--set", "pairs.steps=[-1, .inf]"], "pairs.steps=[-1, inf] must be a list of finite"),
])
def test_nan_and_inf_are_refused_for_every_float(cli, tmp_path, args, expected):
    assert expected in error_of(cli, tmp_path, *args)


def test_options_a_task_ignores_are_errors(cli, tmp_path):
    msg = error_of(cli, tmp_path, "--task", "gender", "-n", 5)
    assert "-n (render.n) is not used by task 'gender'" in msg and "--set sample.n" in msg and "--set pairs.n" in msg
    msg = error_of(cli, tmp_path, "--task", "age", "--seed", 3)
    assert "--seed (render.seed) is not used by task 'age'" in msg and "pairs.seed" in msg
    msg = error_of(cli, tmp_path, "--task", "morph", "--mix", "coarse")
    assert "--mix (render.mix) is not used by task 'morph'" in msg and "render.op=morph" in msg
    msg = error_of(cli, tmp_path, "--task", "brightness", "--set", "render.shard_size=3")
    assert "--set render.shard_size is not used by task 'brightness'" in msg and "pairs.shard_size" in msg
    msg = error_of(cli, tmp_path, "--task", "style-mix", "--set", "pairs.n=3")
    assert "--set pairs.n is not used by task 'style-mix'" in msg and "render.n" in msg
    msg = error_of(cli, tmp_path, "--task", "gender", "--set", "directions.age_steps=[1, -1]")
    assert "attribute.kind=probability has no age bins" in msg


def test_a_set_value_is_validated_even_when_an_option_replaces_it(cli, tmp_path):
    assert "render.n='abc' must be an integer" in error_of(cli, tmp_path, "--task", "style-mix", "-n", 5,
                                                          "--set", "render.n=abc")
    assert "render.n=0 must be >= 1" in error_of(cli, tmp_path, "--task", "style-mix", "-n", 5, "--set", "render.n=0")
    cfg = resolve_config("style-mix", overrides=["render.n=7"], cli={"render.n": 5})
    assert cfg.render.n == 5  # valid both ways: the option wins


def test_n_has_an_upper_bound(cli, tmp_path):
    assert "render.n=1000000000000 must be <= 100000000" in error_of(cli, tmp_path, "--task", "style-mix",
                                                                     "-n", 10 ** 12)
    assert "pairs.n=100000001 must be <= 100000000" in error_of(cli, tmp_path, "--task", "gender",
                                                                "--set", "pairs.n=100000001")


@pytest.mark.parametrize("env, expected", [
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 is outside [0, WORLD_SIZE=2)"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK=-1 is outside [0, WORLD_SIZE=2)"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be >= 1"),
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not an integer"),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "x1"}, "SLURM_PROCID='x1' is not an integer"),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "4"}, "SLURM_PROCID=4 is outside [0, SLURM_NTASKS=4)"),
])
def test_rank_variables_are_checked(cli, tmp_path, monkeypatch, env, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        world_from_env(env)
    for name in ("WORLD_SIZE", "RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert expected in error_of(cli, tmp_path, "--task", "morph", "-n", 2)


def test_good_rank_variables():
    assert world_from_env({}) == (0, 1)
    assert world_from_env({"WORLD_SIZE": "3", "RANK": "2"}) == (2, 3)
    assert world_from_env({"SLURM_NTASKS": "2", "SLURM_PROCID": "1"}) == (1, 2)


def test_config_file_errors_are_one_line(cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert "is a directory; pass a YAML file" in error_of(cli, out, "--task", "morph", "--config", tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("render: 5\n")
    assert "section 'render' must be a mapping" in error_of(cli, out, "--task", "morph", "--config", bad)
    bad.write_text("render: {n: 2.5}\n")
    assert "render.n=2.5 must be an integer" in error_of(cli, out, "--task", "morph", "--config", bad)


def test_set_parser_is_shared_and_strict():
    assert parse_set(["render.n=8", "pairs.steps=[-1, 1]", "teacher.generator="]) == \
        {"render.n": 8, "pairs.steps": [-1, 1], "teacher.generator": None}
    for bad in ("render.n", "n=3", ".n=3", "render.=3"):
        with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
            parse_set([bad])


def test_trainer_configs_refuse_nan_through_the_same_machinery():
    from kdpipe.trainers.core.config import LoopConfig, load_config

    with pytest.raises(ConfigError, match="loop.ema_decay=nan must be a finite number"):
        load_config(_Wrapper, overrides={"loop.ema_decay": float("nan")})
    assert load_config(_Wrapper, overrides={"loop.ema_decay": 0.5}).loop == LoopConfig(ema_decay=0.5)


@dataclasses.dataclass
class _Wrapper:
    from kdpipe.trainers.core.config import LoopConfig

    loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)


def test_every_pipeline_field_is_documented_and_the_defaults_are_valid():
    docs = section_help()
    assert set(docs) == set(SECTIONS)
    for section in SECTIONS:
        names = [f.name for f in dataclasses.fields(type(getattr(PipelineConfig(stages=["x"]), section)))]
        missing = [n for n in names if not docs[section].get(n)]
        assert not missing, f"{section}: fields without a docstring: {missing}"


def test_saved_config_round_trips():
    from kdpipe.pipeline.config import from_dict

    cfg = resolve_config("age", overrides=["pairs.steps=[-1, 1]", "teacher.truncation_psi=1"])
    again = from_dict(cfg.to_dict())
    assert again == cfg and again.pairs.steps == [-1, 1] and again.teacher.truncation_psi == 1.0
