"""Shard bytes are those of Python's tarfile (PAX format, no extended headers for kdpipe's members): pinned, so a
faster tar writer or a webdataset upgrade cannot change dataset bytes unnoticed."""

import io
import tarfile

from kdpipe.pipeline.runner.shards import write_shard


def _samples():
    return [{"__key__": f"{i:08d}", "x1.png": bytes([i]) * (700 + i), "json": b'{"index":%d}' % i,
             "latents.npy": b"\x93NUMPY" + bytes(40)} for i in range(3)]


def test_shard_bytes_equal_tarfile_pax_bytes(tmp_path):
    """Members sorted per sample, mtime 0, mode 0644, user/group kdpipe; a change of header format or member
    order fails here."""
    path = tmp_path / "s-000000.tar"
    write_shard(path, iter(_samples()), "fp", rows=[])
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for sample in _samples():
            for ext in sorted(k for k in sample if k != "__key__"):
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size, info.mtime, info.mode, info.uname, info.gname = len(sample[ext]), 0, 0o644, "kdpipe", "kdpipe"
                tar.addfile(info, io.BytesIO(sample[ext]))
    assert path.read_bytes() == expected.getvalue()
    with tarfile.open(path) as tar:
        assert [m.name for m in tar.getmembers()][:3] == ["00000000.json", "00000000.latents.npy", "00000000.x1.png"]
