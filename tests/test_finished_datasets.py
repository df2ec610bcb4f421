"""Issue 11 item 3: trainers read only finished datasets; image headers are checked before decoding."""

import io
import zlib
import struct

import numpy as np
import pytest
import webdataset as wds

from _p2p_fixtures import make_pair_shards, png, write_sums
from kdpipe.errors import DatasetError
from kdpipe.images import decode_image
from kdpipe.trainers.core.config import DataConfig
from kdpipe.trainers.core.data import batch_iterator, inspect_dataset, resolve_shards, shard_samples


def test_unfinished_dataset_is_refused_with_the_command_that_finishes_it(tmp_path):
    task = make_pair_shards(tmp_path, n=8, per_shard=4)
    (task / "SHA256SUMS").unlink()  # generation interrupted before the card stage
    with pytest.raises(DatasetError, match="is unfinished: it has no SHA256SUMS .* re-run the same 'kdpipe generate'"):
        resolve_shards(task)
    with pytest.raises(DatasetError, match="unfinished"):
        resolve_shards(task / "shards")


def test_flipped_shard_bytes_are_refused_on_first_read(tmp_path):
    task = make_pair_shards(tmp_path, n=8, per_shard=4)
    urls = resolve_shards(task)
    assert len(list(shard_samples(urls[1]))) == 4  # intact: read and cached
    data = bytearray((task / "shards" / "brightness-000001.tar").read_bytes())
    data[700] ^= 0x01
    (task / "shards" / "brightness-000001.tar").write_bytes(bytes(data))  # new mtime: hashed again
    with pytest.raises(DatasetError, match="brightness-000001.tar' is corrupt: its sha256 differs .* delete it and "
                                           "re-run"):
        list(shard_samples(urls[1]))
    (task / "shards" / "extra-000000.tar").write_bytes((task / "shards" / "brightness-000000.tar").read_bytes())
    with pytest.raises(DatasetError, match="is not listed in"):
        list(shard_samples(str(task / "shards" / "extra-000000.tar")))


def test_sums_naming_files_outside_the_dataset_are_refused_by_trainers_too(tmp_path):
    """Trainers and publish/verify read SHA256SUMS with one parser: a ``../`` entry or a malformed line is refused."""
    task = make_pair_shards(tmp_path, n=8, per_shard=4)
    sums = task / "SHA256SUMS"
    good = sums.read_text()
    sums.write_text(good + "0" * 64 + "  ../outside.tar\n")
    with pytest.raises(DatasetError, match="'../outside.tar', which is not a relative path inside the dataset"):
        resolve_shards(task)
    sums.write_text(good + "not-a-digest  shards/x.tar\n")
    with pytest.raises(DatasetError, match="malformed line"):
        resolve_shards(task)


def _bomb_png(side: int) -> bytes:
    """A valid greyscale PNG of side x side zeros: a few hundred KB that decode to side*side*3 bytes as RGB."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(side) for _ in range(side)), 9)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_decompression_bomb_and_wrong_size_are_refused_from_the_header(tmp_path):
    bomb = _bomb_png(12000)
    assert len(bomb) < 1_000_000
    with pytest.raises(DatasetError, match="is 12000x12000 = 144000000 pixels, above the limit"):
        decode_image(bomb, "'bomb'")
    small = png(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="is 8x8 \\(HxW\\) but this dataset's images are 32x32"):
        decode_image(small, "'x'", expected_hw=(32, 32))
    assert decode_image(small, "'x'", expected_hw=(8, 8)).shape == (3, 8, 8)
    # Inside a shard, during training: refused before decoding, with the sample named.
    task = make_pair_shards(tmp_path, n=4, per_shard=4)
    with wds.TarWriter(str(task / "shards" / "brightness-000001.tar")) as w:
        w.write({"__key__": "bomb", "src.png": bomb, "tgt.png": bomb, "json": b"{}"})
    write_sums(task)
    info = inspect_dataset(task)
    batches = batch_iterator(info, DataConfig(batch_size=5, num_workers=0, shuffle_buffer=0), 0)
    with pytest.raises(DatasetError, match="of sample 'bomb' .* is 12000x12000 \\(HxW\\) but this dataset's images "
                                           "are 32x32"):
        next(batches)
    with pytest.raises(DatasetError, match="above the limit"):
        next(batch_iterator(info, DataConfig(batch_size=5, num_workers=0, shuffle_buffer=0, resolution=32), 0))
