"""Shared fixtures: tiny built-in teachers, a CLI runner and helpers to read shards byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_thread():
    """One torch intra-op thread for tiny models: as fast, and no collapse when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_teacher():
    """(G, D) of builtin:random-32 (untrained, deterministic)."""
    from kdpipe.pipeline.teacher.load import build_builtin

    return build_builtin("random-32")


@pytest.fixture
def cli():
    """Invoke ``kdpipe`` in-process; returns the click Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from kdpipe.cli import app

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def run_kdpipe(*args, env=None, check=True, **kwargs) -> subprocess.CompletedProcess:
    """``kdpipe`` in a subprocess (for kill / lock / rank tests)."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "kdpipe.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"kdpipe {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def dataset_bytes(task_dir: Path) -> dict[str, bytes]:
    """Bytes of every published file (shards, manifest, card, SHA256SUMS) of ``OUT/<task>``."""
    files = sorted((task_dir / "shards").glob("*.tar")) + [task_dir / n for n in
                                                          ("manifest.parquet", "README.md", "SHA256SUMS")]
    return {str(p.relative_to(task_dir)): p.read_bytes() for p in files}


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "benchmarks" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
