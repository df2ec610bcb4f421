"""Issue 11 item 2: the runner trusts files, not state files — a deleted or edited output is redone byte-identical."""

import shutil

import pytest

BASE = ["generate", "--task", "style-mix", "--generator", "builtin:random-16", "--no-progress",
        "--set", "render.shard_size=4", "-n", "8"]
TIMED = {"run.json"}  # run.json and stage states carry timings: restored, not byte-identical


def _files(task_dir):
    return {p.relative_to(task_dir).as_posix(): p.read_bytes() for p in sorted(task_dir.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def _stable(files):
    return {k: v for k, v in files.items() if k not in TIMED and not k.startswith("stages/")}


def _gen(cli, out, *extra):
    res = cli(*BASE, "--out", out, *extra)
    assert res.exit_code == 0, res.output
    return res.stdout


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from typer.testing import CliRunner

    from kdpipe.cli import app

    out = tmp_path_factory.mktemp("ref")
    res = CliRunner().invoke(app, [*BASE, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out / "style-mix", _files(out / "style-mix")


def test_deleting_any_one_output_file_is_restored_byte_identical(tmp_path, cli, reference):
    ref_dir, ref = reference
    assert {"manifest.parquet", "README.md", "SHA256SUMS", "shards/style-mix-000001.tar",
            "shards/.done/style-mix-000001.tar.json", "stages/card.json"} <= set(ref)
    for name in sorted(ref):
        work = tmp_path / name.replace("/", "_")
        shutil.copytree(ref_dir, work / "style-mix")
        (work / "style-mix" / name).unlink()
        _gen(cli, work)
        now = _files(work / "style-mix")
        assert set(now) == set(ref), name
        assert _stable(now) == _stable(ref), f"after deleting {name}"


def test_edited_output_is_redone_not_skipped(tmp_path, cli, reference):
    ref_dir, ref = reference
    task = tmp_path / "style-mix"
    shutil.copytree(ref_dir, task)
    card = (task / "README.md").read_text()
    (task / "README.md").write_text(card.replace("kdpipe", "kdPIPE", 1))  # same size: only the sha256 tells
    out = _gen(cli, tmp_path)
    assert "run    card       output changed: README.md (sha256 differs)" in out
    assert _stable(_files(task)) == _stable(ref)


def test_status_uses_the_directory_given_and_deep_checks_shard_hashes(tmp_path, cli, reference):
    ref_dir, _ = reference
    renamed = tmp_path / "renamed"
    shutil.copytree(ref_dir, renamed)
    res = cli("status", renamed)
    assert res.exit_code == 0 and [line.split()[1] for line in res.stdout.splitlines()] == ["done"] * 3, res.output
    shard = renamed / "shards" / "style-mix-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # same size: only the sha256 tells
    shard.write_bytes(bytes(data))
    assert cli("status", renamed).stdout.splitlines()[0].split()[1] == "done"
    deep = cli("status", renamed, "--deep").stdout.splitlines()[0]
    assert deep.split()[1] == "partial" and "style-mix-000001.tar: corrupt" in deep


def test_intermediate_artefacts_are_hashed_and_redone(tmp_path, cli):
    """Pair tasks: the sampled w and the direction file are recorded; editing one redoes that stage."""
    tiny = ["generate", "--task", "brightness", "--out", tmp_path, "--generator", "builtin:random-16",
            "--no-progress", "--set", "sample.n=200", "--set", "pairs.n=8", "--set", "pairs.shard_size=4",
            "--set", "classify.part_size=100"]
    assert cli(*tiny).exit_code == 0
    task = tmp_path / "brightness"
    before = _stable(_files(task))
    (task / "directions" / "direction.json").write_text("{}")
    (task / "sample" / "w.npy").unlink()
    res = cli(*tiny)
    assert res.exit_code == 0, res.output
    assert "run    sample     output missing: sample/w.npy" in res.stdout
    assert _stable(_files(task)) == before
