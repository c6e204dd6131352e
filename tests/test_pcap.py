"""PcapWriter and PcapReader: classic pcap files, written in place and always ending
at a whole record."""

from __future__ import annotations

import errno
import io
import os
import pwd
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bsdbpf import Packet
from bsdbpf._native import lib
from bsdbpf.pcap import (
    MAGIC_MICROSECONDS,
    MAGIC_NANOSECONDS,
    MAX_SNAPLEN,
    PcapReader,
    PcapRecord,
    PcapWriter,
    linktype,
)

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


def test_a_path_is_written_directly_and_readable_while_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    with PcapWriter(path, lib.DLT_EN10MB) as w:
        assert len(path.read_bytes()) == FILE_HEADER.size  # a valid empty file at once
        w.write(b"x" * 100, 1)
        w.flush()
        assert records(path.read_bytes()) == [(0, 1, 100, 100, b"x" * 100)]
        assert w.name == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pcap"]  # nothing beside it


def test_a_new_file_gets_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        PcapWriter(tmp_path / "u.pcap", lib.DLT_EN10MB).close()
    finally:
        os.umask(old)
    assert (tmp_path / "u.pcap").stat().st_mode & 0o777 == 0o640


def test_an_existing_file_keeps_its_inode_mode_and_links(tmp_path: Path) -> None:
    path, link = tmp_path / "b.pcap", tmp_path / "hard.pcap"
    path.write_bytes(b"old contents, longer than a pcap header")
    path.chmod(0o644)
    os.link(path, link)
    inode = path.stat().st_ino
    with PcapWriter(path, lib.DLT_EN10MB) as w:
        w.write(b"new", 1)
    assert path.stat().st_ino == inode
    assert path.stat().st_mode & 0o777 == 0o644
    assert records(link.read_bytes()) == [(0, 1, 3, 3, b"new")]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change user")
def test_an_unprivileged_user_writes_a_precreated_file_in_a_root_owned_directory() -> None:
    nobody = pwd.getpwnam("nobody")
    folder = Path(tempfile.mkdtemp())  # root's, mode 0700: reachable by nobody once 0755
    folder.chmod(0o755)
    path = folder / "given.pcap"
    path.touch(mode=0o666)
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    os.setegid(nobody.pw_gid)
    os.seteuid(nobody.pw_uid)
    try:
        with PcapWriter(path, lib.DLT_EN10MB) as w:
            w.write(b"as nobody", 1)
    finally:
        os.seteuid(0)
        os.setegid(0)
    try:
        assert records(path.read_bytes()) == [(0, 1, 9, 9, b"as nobody")]
        assert path.stat().st_uid == nobody.pw_uid
    finally:
        shutil.rmtree(folder)


def test_an_exception_keeps_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "b.pcap"

    def interrupted() -> None:
        with PcapWriter(path, lib.DLT_EN10MB) as w:
            w.write(b"kept", 1)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert records(path.read_bytes()) == [(0, 1, 4, 4, b"kept")]


def test_a_full_disk_leaves_the_file_at_its_last_whole_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.pcap"
    w = PcapWriter(path, lib.DLT_EN10MB)
    w.write(b"whole", 1)
    w.flush()
    real_write = os.write
    calls = []

    def fills_up(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:RECORD_HEADER.size + 30]))  # record 1, part of 2
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    w.write(b"a" * 30, 2)
    w.write(b"b" * 500, 3)
    monkeypatch.setattr(os, "write", fills_up)
    with pytest.raises(OSError, match="No space left"):
        w.flush()
    monkeypatch.undo()
    w.close()
    assert records(path.read_bytes()) == [(0, 1, 5, 5, b"whole"), (0, 2, 30, 30, b"a" * 30)]
    assert (w.packets, w.packets_written) == (3, 2)


def test_a_full_device_fails_at_the_header() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with pytest.raises(OSError, match="No space left") as info:
        PcapWriter("/dev/full", lib.DLT_EN10MB)
    assert info.value.errno == errno.ENOSPC


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


def test_a_pipe_is_written_directly(tmp_path: Path) -> None:
    """A pipe given by its path: the pipe's own fd under /proc/self/fd (Linux) or
    /dev/fd (macOS; FreeBSD's holds only 0-2 unless fdescfs(5) is mounted), else
    a FIFO, a pipe with a name."""
    fds = list(os.pipe())
    try:
        r, wfd = fds
        for name in (f"/proc/self/fd/{wfd}", f"/dev/fd/{wfd}"):
            if os.path.exists(name):
                break
        else:
            name = str(tmp_path / "fifo")
            os.mkfifo(name)
            # Opened for reading first, so that the writer's open does not block.
            r = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
            fds.append(r)
        with PcapWriter(name, lib.DLT_EN10MB) as w:
            w.write(b"piped", 7)
        blob = os.read(r, 4096)
    finally:
        for fd in fds:
            os.close(fd)
    assert records(blob) == [(0, 7, 5, 5, b"piped")]


def test_a_file_object_is_flushed_not_closed() -> None:
    raw = io.BytesIO()
    buffered = io.BufferedWriter(raw)
    with PcapWriter(buffered, lib.DLT_EN10MB) as w:
        w.write(b"x", 1)
    assert not buffered.closed
    assert len(raw.getvalue()) == FILE_HEADER.size + RECORD_HEADER.size + 1
    assert w.name is None


def test_microsecond_files_as_tcpdump_writes_them() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, lib.DLT_EN10MB, nanoseconds=False) as w:
        w.write(b"x", 1_700_000_000_123_456_789)
    assert FILE_HEADER.unpack_from(buf.getvalue())[0] == MAGIC_MICROSECONDS
    assert records(buf.getvalue()) == [(1_700_000_000, 123_456, 1, 1, b"x")]


# -- reading ----------------------------------------------------------------------


@pytest.mark.parametrize("nanoseconds", [True, False])
@pytest.mark.parametrize("order", ["<", ">"])
def test_the_reader_takes_both_resolutions_and_byte_orders(nanoseconds: bool,
                                                           order: str) -> None:
    magic = MAGIC_NANOSECONDS if nanoseconds else MAGIC_MICROSECONDS
    fraction = 123_456_789 if nanoseconds else 123_456
    blob = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 96, 101)
    blob += struct.pack(order + "IIII", 5, fraction, 3, 60) + b"abc"
    with PcapReader(io.BytesIO(blob)) as reader:
        got = list(reader)
    assert (reader.snaplen, reader.linktype, reader.dlt) == (96, 101, lib.DLT_RAW)
    ns = 5 * 10**9 + (123_456_789 if nanoseconds else 123_456_000)
    assert got == [PcapRecord(ns, 60, b"abc")]
    assert not reader.truncated


def test_the_reader_reads_back_what_the_writer_wrote(tmp_path: Path) -> None:
    path = tmp_path / "r.pcap"
    with PcapWriter(path, lib.DLT_NULL, snaplen=8) as w:
        w.write(bytes(range(20)), 10**9 + 5)
        w.write(b"ab", 2)
    with PcapReader(path) as reader:
        assert list(reader) == [PcapRecord(10**9 + 5, 20, bytes(range(8))),
                                PcapRecord(2, 2, b"ab")]
        assert reader.dlt == lib.DLT_NULL


def test_the_reader_stops_at_a_record_cut_short() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, lib.DLT_EN10MB) as w:
        w.write(b"one", 1)
        w.write(b"two", 2)
    with PcapReader(io.BytesIO(buf.getvalue()[:-2])) as reader:
        assert [r.data for r in reader] == [b"one"]
    assert reader.truncated


@pytest.mark.parametrize("blob", [b"", b"\x0a\x0d\x0d\x0a" + bytes(40),
                                  b"hello world, not pcap!!!"])
def test_the_reader_refuses_what_is_not_classic_pcap(blob: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a classic pcap file.*editcap"):
        PcapReader(io.BytesIO(blob))
