"""read(2) on a BUFFER-mode descriptor (spec §e "read(2)", "Interface departure").

Reads that could block forever are bounded: either a read timeout is set, or
poll says the descriptor is readable first, or the read runs in a thread that
an interface departure wakes.
"""

from __future__ import annotations

import errno
import os
import threading

import pytest

from bsdbpf._native import lib
from bsdbpf.errors import BPFError, InvalidArgument, NotAttached, WouldBlock

from .helpers import (
    IFACE_DEPARTURE,
    RET_K,
    WAIT,
    eth_frame,
    parse_records,
    raises,
)


def attached(bpf, ifname, flags=os.O_RDWR, blen=None):
    fd = bpf.open(flags)
    if blen is not None:
        bpf.set_uint(fd, lib.BIOCSBLEN, blen)
    bpf.attach(fd, ifname)
    return fd


def quiet(bpf, ifname, flags=os.O_RDWR):
    """Attached, with a filter that drops everything: nothing is ever captured,
    even on a real interface with traffic."""
    fd = attached(bpf, ifname, flags)
    bpf.setf(fd, [(RET_K, 0, 0, 0)])
    return fd


class Reader(threading.Thread):
    """A blocking read(2) in a thread; ``unblock`` makes sure it ends."""

    def __init__(self, bpf, fd):
        super().__init__(daemon=True)
        self.bpf, self.fd = bpf, fd
        self.result = None
        self.error = None

    def run(self):
        try:
            self.result = self.bpf.read(self.fd)
        except OSError as err:
            self.error = err


@pytest.mark.parametrize("delta", [-4095, -1, 1, 4096])
def test_read_wrong_size(bpf, ifname, delta):
    """§e read(2) check (1): uio_resid ≠ bd_bufsize → EINVAL (not the man page's EIO)."""
    fd = attached(bpf, ifname)
    with raises(InvalidArgument, "EINVAL"):
        bpf.read(fd, 4096 + delta)


def test_read_size_checked_before_attach(bpf):
    """§e read(2): the size check comes first, even on an unattached descriptor."""
    fd = bpf.open()
    with raises(InvalidArgument, "EINVAL"):
        bpf.read(fd, 100)


def test_read_unattached(bpf):
    """§e read(2): no data and not attached → ENXIO."""
    fd = bpf.open()
    with raises(NotAttached, "ENXIO"):
        bpf.read(fd)


def test_read_nonblock_open(bpf, ifname):
    """§e read(2): O_NONBLOCK and nothing to read → EWOULDBLOCK (EAGAIN)."""
    fd = quiet(bpf, ifname, os.O_RDWR | os.O_NONBLOCK)
    with raises(WouldBlock, "EAGAIN"):
        bpf.read(fd)


def test_read_nonblock_fionbio(bpf, ifname):
    """§e read(2) / §b FIONBIO: FIONBIO(1) sets the file's non-blocking flag →
    EAGAIN; FIONBIO(0) clears it (a read timeout then returns 0 bytes)."""
    fd = quiet(bpf, ifname)
    bpf.set_int(fd, lib.FIONBIO, 1)
    with raises(WouldBlock, "EAGAIN"):
        bpf.read(fd)
    bpf.set_int(fd, lib.FIONBIO, 0)
    bpf.timeout(fd, 0, 20_000)
    assert bpf.read(fd) == b""


def test_read_timeout_no_data(bpf, ifname):
    """§e read(2): with a read timeout and no data the read returns 0 bytes."""
    fd = quiet(bpf, ifname)
    bpf.timeout(fd, 0, 50_000)
    assert bpf.read(fd) == b""


def test_read_timeout_partial_buffer(bpf, ifname, traffic):
    """§e read(2): on timeout with data in the store buffer, the buffers rotate and
    the partial buffer is returned."""
    fd = attached(bpf, ifname)
    bpf.timeout(fd, 0, 50_000)
    frame = eth_frame(60)
    traffic(ifname, frame)
    data = bpf.read(fd)
    recs = parse_records(data)
    assert [r.data for r in recs] == [frame]
    assert len(data) == 26 + 60


def test_read_nonblock_returns_store(bpf, ifname, traffic):
    """§e read(2): no hold buffer, slen ≠ 0 and O_NONBLOCK → rotate and return."""
    fd = attached(bpf, ifname, os.O_RDWR | os.O_NONBLOCK)
    frames = [eth_frame(60), eth_frame(70)]
    for f in frames:
        traffic(ifname, f)
    assert [r.data for r in parse_records(bpf.read(fd))] == frames
    with raises(WouldBlock, "EAGAIN"):
        bpf.read(fd)


def test_read_immediate_per_packet(bpf, ifname, traffic):
    """§e read(2): in immediate mode a read returns as soon as one packet is there."""
    fd = attached(bpf, ifname)
    bpf.set_uint(fd, lib.BIOCIMMEDIATE, 1)
    for size in (60, 61, 62):
        frame = eth_frame(size)
        traffic(ifname, frame)
        assert [r.data for r in parse_records(bpf.read_ready(fd))] == [frame]


def test_read_blocks_until_rotation(bpf, ifname, traffic):
    """§e read(2) / §f ROTATE_BUFFERS: without immediate or timeout, a blocking read
    sleeps until the store buffer fills and rotates; it returns exactly the
    hold buffer (hlen bytes), the packet that caused the rotation stays."""
    fd = attached(bpf, ifname, blen=200)
    reader = Reader(bpf, fd)
    reader.start()
    try:
        f1, f2, f3 = eth_frame(60), eth_frame(61), eth_frame(62)
        traffic(ifname, f1)
        traffic(ifname, f2)  # 88 + 87 = 175 ≤ 200: same buffer
        assert reader.is_alive(), "read returned before the store buffer rotated"
        traffic(ifname, f3)  # 176 + 88 > 200: rotation wakes the reader
        reader.join(WAIT)
        assert not reader.is_alive()
    finally:
        if reader.is_alive():
            bpf.system.remove_interface(ifname)
            reader.join(WAIT)
    assert reader.error is None
    assert [r.data for r in parse_records(reader.result)] == [f1, f2]
    assert len(reader.result) == 88 + 26 + 61
    assert bpf.fionread(fd) == 26 + 62


@IFACE_DEPARTURE
def test_read_after_detach(bpf, kernel, ifname):
    """§e Interface departure: read → ENXIO once no data remains."""
    fd = attached(bpf, ifname)
    kernel.remove_interface(ifname)
    with raises(NotAttached, "ENXIO"):
        bpf.read(fd)


@IFACE_DEPARTURE
def test_read_sleeper_woken_by_detach(bpf, kernel, ifname):
    """§e Interface departure: descriptors are detached with a wakeup, so a read
    asleep with no timeout returns ENXIO."""
    fd = attached(bpf, ifname)
    reader = Reader(bpf, fd)
    reader.start()
    kernel.remove_interface(ifname)
    reader.join(WAIT)
    assert not reader.is_alive()
    assert isinstance(reader.error, NotAttached)
    assert reader.error.errno == errno.ENXIO


@IFACE_DEPARTURE
def test_read_hold_buffer_after_detach(bpf, kernel, ifname, traffic):
    """§e read(2) / Interface departure: data in the hold buffer is still returned
    after the interface left; then ENXIO (store data without immediate/timeout is
    not rotated out)."""
    fd = attached(bpf, ifname, blen=128)
    f1, f2 = eth_frame(60), eth_frame(61)
    traffic(ifname, f1)
    traffic(ifname, f2)  # rotation: f1 in the hold buffer, f2 in the store
    kernel.remove_interface(ifname)
    assert [r.data for r in parse_records(bpf.read(fd))] == [f1]
    with raises(NotAttached, "ENXIO"):
        bpf.read(fd)


@IFACE_DEPARTURE
def test_read_store_after_detach_immediate(bpf, kernel, ifname, traffic):
    """§e read(2): in immediate mode the store buffer is rotated out even after the
    interface left (the rotation comes before the attachment check)."""
    fd = attached(bpf, ifname)
    bpf.set_uint(fd, lib.BIOCIMMEDIATE, 1)
    frame = eth_frame(60)
    traffic(ifname, frame)
    kernel.remove_interface(ifname)
    assert [r.data for r in parse_records(bpf.read(fd))] == [frame]
    with raises(NotAttached, "ENXIO"):
        bpf.read(fd)


def test_flush_discards(bpf, ifname, traffic):
    """§e BIOCFLUSH (reset_d): the store is emptied, counters zeroed."""
    fd = attached(bpf, ifname, os.O_RDWR | os.O_NONBLOCK)
    traffic(ifname, eth_frame(60))
    assert bpf.fionread(fd) == 86
    assert bpf.gstats(fd) == (1, 0)
    bpf.flush(fd)
    assert bpf.fionread(fd) == 0
    assert bpf.gstats(fd) == (0, 0)
    with raises(WouldBlock, "EAGAIN"):
        bpf.read(fd)


def test_read_nonblock_unattached(bpf):
    """§e read(2): the attachment check comes before the O_NONBLOCK one — an
    unattached non-blocking descriptor gives ENXIO, not EAGAIN."""
    fd = bpf.open(os.O_RDWR | os.O_NONBLOCK)
    with raises(NotAttached, "ENXIO"):
        bpf.read(fd)


def test_read_nonblock_fcntl(bpf, ifname):
    """§e read(2): O_NONBLOCK is the file's flag, however it was set — with fcntl(2)
    too (os.set_blocking) → EAGAIN with nothing to read."""
    fd = quiet(bpf, ifname)
    bpf.timeout(fd, 0, 200_000)  # bounds the read if the flag is not honoured
    os.set_blocking(fd, False)
    with raises(WouldBlock, "EAGAIN"):
        bpf.read(fd)


def test_file_flag_follows_fionbio(bpf):
    """§b FIONBIO "the generic layer sets FNONBLOCK" / §e Opening: the file status flag
    O_NONBLOCK (fcntl F_GETFL) is clear after a blocking open, set by FIONBIO(1) or an
    O_NONBLOCK open, cleared by FIONBIO(0)."""
    fd = bpf.open()
    assert os.get_blocking(fd)
    bpf.set_int(fd, lib.FIONBIO, 1)
    assert not os.get_blocking(fd)
    bpf.set_int(fd, lib.FIONBIO, 0)
    assert os.get_blocking(fd)
    assert not os.get_blocking(bpf.open(os.O_RDWR | os.O_NONBLOCK))


def test_read_write_only_descriptor(bpf, ifname):
    """§e Opening (an open without FREAD) / generic file layer: read(2) on an O_WRONLY
    descriptor fails with EBADF before reaching the driver."""
    fd = attached(bpf, ifname, os.O_WRONLY | os.O_NONBLOCK)
    with raises(BPFError, "EBADF"):
        bpf.read(fd)
