"""Issue 11 item 9: OSErrors a user can cause are one-line errors naming the path, with no .tmp litter."""

import errno
import os
import shutil

import pytest

from kdpipe.errors import StorageError
from kdpipe.pipeline.publish import publish

GEN = ["generate", "--task", "style-mix", "--generator", "builtin:random-16", "--no-progress",
       "--set", "render.shard_size=4", "-n", "8"]


def _one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in err, err
    return err


def _litter(root):
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith((".tmp", ".partial")))


def test_paths_that_are_files_or_directories(tmp_path, cli):
    (tmp_path / "out_file").write_text("x")
    _one_line_error(cli(*GEN, "--out", tmp_path / "out_file"), "out_file/style-mix'", "(ENOTDIR)")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "style-mix").write_text("x")
    _one_line_error(cli(*GEN, "--out", tmp_path / "root"), "style-mix'", "(EEXIST)")
    (tmp_path / "cfgdir").mkdir()
    _one_line_error(cli(*GEN, "--out", tmp_path / "o", "--config", tmp_path / "cfgdir"), "cfgdir'", "is a directory",
                    "pass a YAML file")
    assert _litter(tmp_path) == []


def _enospc_after(monkeypatch, calls: int):
    """Make the ``calls``-th ``os.fsync`` (shard, state or manifest write) fail as a full disk would."""
    real, count = os.fsync, [0]

    def fsync(fd):
        count[0] += 1
        if count[0] >= calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("calls", [1, 3, 6])
def test_disk_full_in_generate_is_one_line_and_resumable(tmp_path, cli, monkeypatch, calls):
    with monkeypatch.context() as m:
        _enospc_after(m, calls)
        _one_line_error(cli(*GEN, "--out", tmp_path), "(ENOSPC)", "free space and re-run")
    assert _litter(tmp_path) == []
    res = cli(*GEN, "--out", tmp_path)  # space freed: the same command finishes the dataset
    assert res.exit_code == 0, res.output
    assert cli("verify", tmp_path / "style-mix").exit_code == 0


def test_disk_full_in_publish_is_one_line_without_partial_files(tmp_path, cli, monkeypatch):
    assert cli(*GEN, "--out", tmp_path / "out").exit_code == 0
    import fsspec.implementations.local as local

    real = local.LocalFileSystem.put_file
    calls = [0]

    def put_file(self, lpath, rpath, **kw):
        calls[0] += 1
        if calls[0] == 3:
            with open(rpath, "wb") as f:
                f.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), rpath)
        return real(self, lpath, rpath, **kw)

    monkeypatch.setattr(local.LocalFileSystem, "put_file", put_file)
    with pytest.raises(StorageError, match="publish to .* failed: .*\\.partial': No space left on device \\(ENOSPC\\)"):
        publish(tmp_path / "out" / "style-mix", str(tmp_path / "dest"), log=lambda m: None)
    assert _litter(tmp_path / "dest") == [] and not (tmp_path / "dest" / "SHA256SUMS").exists()
    monkeypatch.setattr(local.LocalFileSystem, "put_file", real)
    assert publish(tmp_path / "out" / "style-mix", str(tmp_path / "dest"), log=lambda m: None)["skipped"] == 2
    shutil.rmtree(tmp_path / "dest")
