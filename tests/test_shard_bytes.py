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
                info.size, info.mtime, info.mode = len(sample[ext]), 0, 0o644
                info.uname = info.gname = "kdpipe"
                tar.addfile(info, io.BytesIO(sample[ext]))
    assert path.read_bytes() == expected.getvalue()
    with tarfile.open(path) as tar:
        assert [m.name for m in tar.getmembers()][:3] == ["00000000.json", "00000000.latents.npy", "00000000.x1.png"]


def test_template_headers_equal_tarfile_for_any_name_and_size():
    """Random sizes (block boundaries included), long and non-ASCII names (tarfile's PAX fallback), `_` keys."""
    import random

    import webdataset as wds

    from kdpipe.pipeline.runner.tarwrite import SampleTarWriter

    rng = random.Random(0)
    samples = []
    for i, size in enumerate([0, 1, 511, 512, 513, 1024] + [rng.randrange(0, 5000) for _ in range(20)]):
        key = {3: "k" * 120, 4: "bild-ä-%d" % i}.get(i, f"{i:08d}")
        samples.append({"__key__": key, "__url__": "skipped", "y.png": bytes(rng.getrandbits(8) for _ in range(size)),
                        "json": b"{}"})
    ours, ref = io.BytesIO(), io.BytesIO()
    writer = SampleTarWriter(ours)
    for sample in samples:
        writer.write(sample)
    writer.close()
    ref_writer = wds.TarWriter(ref, user="kdpipe", group="kdpipe", mode=0o644, encoder=False, mtime=0)
    ref.close = lambda: None  # TarWriter closes its stream; keep the bytes readable
    for sample in samples:
        ref_writer.write(sample)
    ref_writer.close()
    assert ours.getvalue() == ref.getvalue()
    with tarfile.open(fileobj=io.BytesIO(ours.getvalue())) as tar:
        assert tar.getnames()[6:8] == ["k" * 120 + ".json", "k" * 120 + ".y.png"]
