"""PcapWriter: the classic pcap format with nanosecond timestamps, written atomically."""

from __future__ import annotations

import errno
import io
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from bsdbpf import Packet
from bsdbpf._native import lib
from bsdbpf.pcap import MAX_SNAPLEN, PcapWriter, linktype

FILE_HEADER = struct.Struct("=IHHiIII")
RECORD_HEADER = struct.Struct("=IIII")


def records(blob: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """(seconds, nanoseconds, caplen, wirelen, data) of every record after the header."""
    out, off = [], FILE_HEADER.size
    while off < len(blob):
        sec, nsec, caplen, wirelen = RECORD_HEADER.unpack_from(blob, off)
        off += RECORD_HEADER.size
        out.append((sec, nsec, caplen, wirelen, blob[off:off + caplen]))
        off += caplen
    assert off == len(blob)
    return out


def test_header_and_records_in_host_order() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, lib.DLT_EN10MB) as w:
        w.write(b"\x01" * 60, 1_700_000_000_123_456_789)
        w.write(memoryview(b"\x02" * 10), 5, wirelen=1514)
    blob = buf.getvalue()
    assert FILE_HEADER.unpack_from(blob) == (0xA1B23C4D, 2, 4, 0, 0, MAX_SNAPLEN, 1)
    assert records(blob) == [
        (1_700_000_000, 123_456_789, 60, 60, b"\x01" * 60),
        (0, 5, 10, 1514, b"\x02" * 10),
    ]
    assert w.packets == 2


def test_snaplen_cuts_the_data_and_keeps_the_wire_length() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, lib.DLT_NULL, snaplen=8) as w:
        w.write(bytes(range(20)), 10**9)
    assert FILE_HEADER.unpack_from(buf.getvalue())[5:] == (8, 0)
    assert records(buf.getvalue()) == [(1, 0, 8, 20, bytes(range(8)))]


def test_write_packet_takes_a_captured_packet() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, lib.DLT_EN10MB) as w:
        w.write_packet(Packet(memoryview(b"abc"), 64, 3 * 10**9 + 7))
    assert records(buf.getvalue()) == [(3, 7, 3, 64, b"abc")]


@pytest.mark.parametrize(("dlt", "expected"), [
    (lib.DLT_NULL, 0), (lib.DLT_EN10MB, 1), (lib.DLT_RAW, 101), (lib.DLT_PFSYNC, 246),
    (lib.DLT_LOOP, 108),
])
def test_the_header_carries_the_linktype(dlt: int, expected: int) -> None:
    assert linktype(dlt) == expected
    buf = io.BytesIO()
    PcapWriter(buf, dlt).close()
    assert FILE_HEADER.unpack_from(buf.getvalue())[6] == expected


@pytest.mark.parametrize(("args", "message"), [
    ((b"x", 2**32 * 10**9), "unsigned 32-bit seconds"),
    ((b"x", -1), "unsigned 32-bit seconds"),
    ((b"xyz", 0, 2), "wire length 2"),
])
def test_values_a_record_cannot_hold(args: tuple[Any, ...], message: str) -> None:
    w = PcapWriter(io.BytesIO(), lib.DLT_EN10MB)
    with pytest.raises(ValueError, match=message):
        w.write(*args)
    assert w.packets == 0


def test_a_path_appears_whole_when_closed(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    path.write_bytes(b"old")
    with PcapWriter(path, lib.DLT_EN10MB) as w:
        w.write(b"x" * 100, 1)
        w.flush()
        assert path.read_bytes() == b"old"  # replaced only at close
        temps = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
        assert len(temps) == 1
        assert temps[0].name.startswith(".a.pcap.")
        assert w.name == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pcap"]
    assert records(path.read_bytes()) == [(0, 1, 100, 100, b"x" * 100)]
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_exception_keeps_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "b.pcap"

    def interrupted() -> None:
        with PcapWriter(path, lib.DLT_EN10MB) as w:
            w.write(b"kept", 1)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert records(path.read_bytes()) == [(0, 1, 4, 4, b"kept")]


class CutShort:
    """A file that takes a few bytes of the next write and is then interrupted."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def write(self, data: bytes) -> int:
        self.f.write(data[:10])
        raise KeyboardInterrupt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def test_a_record_cut_short_is_dropped_whole(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    w = PcapWriter(path, lib.DLT_EN10MB)
    w.write(b"whole", 1)
    w._f = CutShort(w._f)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        w.write(b"y" * 500, 2)
    w.close()
    assert records(path.read_bytes()) == [(0, 1, 5, 5, b"whole")]
    assert w.packets == 1


def test_discard_leaves_nothing(tmp_path: Path) -> None:
    w = PcapWriter(tmp_path / "d.pcap", lib.DLT_EN10MB)
    w.write(b"x", 1)
    w.discard()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="closed"):
        w.write(b"x", 1)


def test_a_symlink_stays_and_its_target_is_written(tmp_path: Path) -> None:
    real = tmp_path / "real.pcap"
    link = tmp_path / "link.pcap"
    real.write_bytes(b"")
    link.symlink_to(real)
    with PcapWriter(link, lib.DLT_EN10MB) as w:
        w.write(b"x", 1)
    assert link.is_symlink()
    assert records(real.read_bytes()) == [(0, 1, 1, 1, b"x")]


def test_a_device_is_written_directly() -> None:
    with PcapWriter(os.devnull, lib.DLT_EN10MB) as w:
        w.write(b"x", 1)
    assert w.closed


def test_a_file_object_is_flushed_not_closed() -> None:
    raw = io.BytesIO()
    buffered = io.BufferedWriter(raw)
    with PcapWriter(buffered, lib.DLT_EN10MB) as w:
        w.write(b"x", 1)
    assert not buffered.closed
    assert len(raw.getvalue()) == FILE_HEADER.size + RECORD_HEADER.size + 1
    assert w.name is None


def test_a_failed_finish_keeps_the_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "e.pcap"
    w = PcapWriter(path, lib.DLT_EN10MB)
    w.write(b"x", 1)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        w.close()
    assert not path.exists()
    assert w.temporary is not None
    assert records(Path(w.temporary).read_bytes()) == [(0, 1, 1, 1, b"x")]
