"""The shape of the ``kdpipe`` command: -h, --version, ``python -m kdpipe``, torch imported only by commands."""

from __future__ import annotations

import subprocess
import sys

import kdpipe


def test_version_and_short_help(cli):
    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"kdpipe {kdpipe.__version__}"
    assert cli("-h").stdout == cli("--help").stdout
    sub = cli("generate", "-h")
    assert sub.exit_code == 0 and "--task" in sub.stdout
    train = cli("train", "pix2pixhd", "-h")  # lazily mounted group inherits -h
    assert train.exit_code == 0 and "--data" in train.stdout


def _help_in_fresh_interpreter(*argv: str) -> str:
    """stdout of ``python -m kdpipe ARGV`` run through runpy; fails if torch, numpy or pipeline/trainer code got
    imported on the way (that is what keeps ``kdpipe --help`` under 0.5 s: benchmarks/cli_startup.py)."""
    code = (f"import sys, runpy; sys.argv = ['kdpipe', *{list(argv)!r}]\n"
            "try:\n    runpy.run_module('kdpipe', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "bad = sorted(m for m in ('torch', 'numpy', 'kdpipe.trainers', 'kdpipe.pipeline.render') if m in sys.modules)\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_python_dash_m_kdpipe_and_help_without_torch():
    top = _help_in_fresh_interpreter("--help")
    for name in ("generate", "sample", "train", "translate", "publish"):
        assert f"  {name} " in top, name
    assert "--seeds" in _help_in_fresh_interpreter("sample", "-h")
    assert "default: out]" in _help_in_fresh_interpreter("generate", "--help")


def test_unknown_command_is_a_usage_error(cli):
    res = cli("no-such-command")
    assert res.exit_code == 2 and "No such command" in res.output
