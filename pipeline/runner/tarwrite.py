"""A webdataset tar writer that builds member headers from a template: the bytes of Python's ``tarfile`` (PAX
format, as ``webdataset.TarWriter`` writes them), ~10x less CPU per member.

``tarfile`` spends ~65 us of Python per member checking every header field for a PAX extended header and
formatting each number; at 5 members per sample that was ~8 % of ``kdpipe generate``'s time for a 64-px teacher
on 2 cores (benchmarks/README.md, issue 12). kdpipe's members never need an extended header (ASCII names of at most
100 bytes, sizes below 8 GiB), so only the name, size and checksum of a fixed header change; any other member is
given to ``tarfile`` itself, so every name still works. ``tests/test_shard_bytes.py`` compares the bytes with
``tarfile``'s.
"""

from __future__ import annotations

import tarfile
from typing import BinaryIO

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 20 blocks: tarfile pads the archive to a whole record on close
_MAX_SIZE = 8 ** 11  # 11 octal digits; larger sizes need a PAX header


class SampleTarWriter:
    """Write webdataset samples (``{"__key__": str, "<ext>": bytes, ...}``) to a binary stream as a tar archive.

    Members are ``<key>.<ext>`` in sorted ``ext`` order with mode, mtime, user and group fixed (what
    ``webdataset.TarWriter(..., encoder=False, mtime=...)`` writes; keys starting with ``_`` are skipped).
    :meth:`close` writes the end-of-archive blocks and pads to a whole record; it does not close the stream.

    Raises:
        ValueError: a sample without ``__key__``, or a value that is not bytes.
    """

    def __init__(self, fileobj: BinaryIO, user: str = "kdpipe", group: str = "kdpipe", mode: int = 0o644,
                 mtime: int = 0):
        self.fileobj, self.offset = fileobj, 0
        self._fields = dict(user=user, group=group, mode=mode, mtime=mtime)
        probe = self._tarinfo("x", 0).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if len(probe) != BLOCK:
            raise ValueError(f"tar header fields {self._fields} need a PAX extended header; use ASCII user/group")
        self._template = bytearray(probe)
        self._template[148:156] = b" " * 8  # checksum field counts as spaces while summing
        self._base_sum = sum(self._template) - ord("x") - sum(self._template[124:136])

    def _tarinfo(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, self._fields["mtime"], self._fields["mode"]
        info.uname, info.gname = self._fields["user"], self._fields["group"]
        return info

    def _header(self, name: str, size: int) -> bytes:
        raw = name.encode("ascii", "surrogateescape") if name.isascii() else None
        if raw is None or len(raw) > 100 or size >= _MAX_SIZE:  # tarfile's own (PAX extended) header
            return self._tarinfo(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        header = bytearray(self._template)
        header[0:100] = raw.ljust(100, b"\0")
        header[124:136] = b"%011o\0" % size
        chksum = self._base_sum + sum(raw) + sum(header[124:136])
        header[148:155] = b"%06o\0" % chksum
        return bytes(header)

    def write(self, sample: dict) -> int:
        """Append one sample's members; returns the bytes of member data written."""
        if "__key__" not in sample:
            raise ValueError("sample must contain a __key__")
        key, total, parts = sample["__key__"], 0, []
        for ext in sorted(sample):
            if ext.startswith("_"):
                continue
            data = sample[ext]
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise ValueError(f"sample {key!r}: {ext} is {type(data).__name__}, not bytes")
            size = len(data)
            parts += [self._header(f"{key}.{ext}", size), data, b"\0" * (-size % BLOCK)]
            total += size
        block = b"".join(parts)  # one write per sample: fewer calls and syscalls than three per member
        self.fileobj.write(block)
        self.offset += len(block)
        return total

    def close(self) -> None:
        """End-of-archive (two zero blocks), then zeros up to a whole record, as ``tarfile`` writes them."""
        self.fileobj.write(b"\0" * (2 * BLOCK))
        self.offset += 2 * BLOCK
        if self.offset % RECORD:
            self.fileobj.write(b"\0" * (RECORD - self.offset % RECORD))
