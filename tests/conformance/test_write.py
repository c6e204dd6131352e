"""write(2) (spec §e "write(2)", §d stats write counters, §f direction/feedback, §h write filter).

Frames use the IEEE local-experimental ethertype 0x88B5 and the broadcast
address; readers filter on that ethertype so that other traffic on a real
interface cannot disturb the counts.
"""

from __future__ import annotations

import os

import pytest

from bsdbpf._native import lib
from bsdbpf.errors import (
    BPFError,
    InternalError,
    InvalidArgument,
    NotAttached,
    WouldBlock,
    WriteRejected,
)

from .helpers import (
    ETHERTYPE,
    PAGE,
    RET_K,
    WAIT,
    eth_frame,
    insn,
    null_frame,
    parse_records,
    raises,
    stats_record,
    wait_poll,
)

SRC = b"\x02\xaa\xbb\xcc\xdd\xee"


def only_ours():
    """ldh [12]; jeq #0x88b5 → accept all, else drop."""
    return [
        insn(lib.BPF_LD | lib.BPF_H | lib.BPF_ABS, 12),
        insn(lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K, ETHERTYPE, 0, 1),
        insn(RET_K, 0xFFFFFFFF),
        insn(RET_K, 0),
    ]


def reader(bpf, ifname, direction=lib.BPF_D_INOUT):
    """A non-blocking, immediate descriptor that sees only 0x88b5 frames and
    writes complete headers (so its frames come back exactly as written)."""
    fd = bpf.open(os.O_RDWR | os.O_NONBLOCK)
    bpf.attach(fd, ifname)
    bpf.set_uint(fd, lib.BIOCSHDRCMPLT, 1)
    bpf.set_uint(fd, lib.BIOCIMMEDIATE, 1)
    bpf.set_uint(fd, lib.BIOCSDIRECTION, direction)
    bpf.setf(fd, only_ours())
    return fd


def drain(bpf, fd):
    """Every frame captured so far (non-blocking descriptor)."""
    out = []
    while True:
        try:
            out += [r.data for r in parse_records(bpf.read(fd))]
        except WouldBlock:
            return out


def seen_after(bpf, fd, last):
    """Frames captured up to and including ``last`` (waits for it to arrive)."""
    got = []
    deadline_ok = True
    while last not in got and deadline_ok:
        deadline_ok = wait_poll(fd, WAIT)
        got += drain(bpf, fd)
    assert last in got, "the frame never showed up"
    return got


def test_write_unattached(bpf):
    """§e write(2): not attached → ENXIO."""
    fd = bpf.open()
    with raises(NotAttached, "ENXIO"):
        bpf.system.write(fd, eth_frame(60))


def test_write_zero_length_unattached(bpf):
    """§e write(2) / §i versions table: bpf.c-2024 checks the attachment before the
    zero-length case → ENXIO for an empty write on an unattached descriptor."""
    fd = bpf.open()
    with raises(NotAttached, "ENXIO"):
        bpf.system.write(fd, b"")


def test_write_ok(bpf, ifname):
    """§e write(2): a frame holding the link header and at most MTU bytes after it
    is sent; write returns its length."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    assert bpf.system.write(fd, eth_frame(60)) == 60


@pytest.mark.parametrize("size", [1, 13, 70_000])
def test_write_emsgsize_ethernet(bpf, ifname, size):
    """§e write(2) (bpf_movein): shorter than the 14-byte link header, or more than
    MTU bytes after it → EMSGSIZE."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    with raises(InvalidArgument, "EMSGSIZE"):
        bpf.system.write(fd, b"\xff" * size)


def test_write_emsgsize_boundary(bpf, null_ifname):
    """§e write(2): len - hlen > if_mtu → EMSGSIZE (lo0: 4-byte DLT_NULL header, MTU
    16384).  bpf_movein() then puts the frame in one mbuf, whose largest cluster is
    MJUM16BYTES (16384): a longer frame the MTU lets by is EIO (m_get3() has no
    cluster for it), so lo0's largest write is 16384 bytes, not 4 + 16384."""
    fd = bpf.open()
    bpf.attach(fd, null_ifname)
    assert bpf.system.write(fd, null_frame(16384)) == 16384
    with raises(InternalError, "EIO"):
        bpf.system.write(fd, null_frame(16385))  # 16381 bytes after the header: MTU ok
    with raises(InternalError, "EIO"):
        bpf.system.write(fd, null_frame(4 + 16384))
    with raises(InvalidArgument, "EMSGSIZE"):  # the MTU check comes first
        bpf.system.write(fd, null_frame(4 + 16385))
    with raises(InvalidArgument, "EMSGSIZE"):
        bpf.system.write(fd, null_frame(8)[:3])
    rec = stats_record(bpf.system, null_ifname)
    assert (rec.bd_wcount, rec.bd_wfcount, rec.bd_wdcount) == (5, 1, 4)


def test_write_filter(bpf, ifname):
    """§e write(2) / §h: the write filter (BIOCSETWF) runs on the whole buffer;
    result 0 → EPERM.  Here it passes only ethertype 0x88b5."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    bpf.setf(fd, only_ours(), lib.BIOCSETWF)
    assert bpf.system.write(fd, eth_frame(60)) == 60
    other = eth_frame(60)[:12] + b"\x08\x06" + bytes(46)
    with raises(WriteRejected, "EPERM"):
        bpf.system.write(fd, other)
    bpf.setf(fd, [], lib.BIOCSETWF)  # bf_len 0 removes it
    assert bpf.system.write(fd, other) == 60


def test_write_in_zbuf_mode(bpf, zerocopy, ifname):
    """§e write(2): independent of the buffer mode (works in ZBUF mode)."""
    fd, _, _ = bpf.zbuf_descriptor(ifname, size=PAGE)
    assert bpf.system.write(fd, eth_frame(60)) == 60


def test_write_counters(bpf, system, ifname):
    """§d stats: bd_wcount writes attempted (bpf.c-2024), bd_wfcount writes that
    passed, bd_wdcount failed writes (EMSGSIZE, write filter)."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    bpf.system.write(fd, eth_frame(60))
    with raises(InvalidArgument, "EMSGSIZE"):
        bpf.system.write(fd, b"\x01" * 5)
    bpf.setf(fd, [insn(RET_K, 0)], lib.BIOCSETWF)
    with raises(WriteRejected, "EPERM"):
        bpf.system.write(fd, eth_frame(60))
    rec = stats_record(system, ifname)
    assert (rec.bd_wcount, rec.bd_wfcount, rec.bd_wdcount) == (3, 1, 2)


def test_write_counters_reset_by_setf(bpf, system, ifname):
    """§e reset_d: BIOCSETF zeroes wcount, wfcount and wdcount too."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    bpf.system.write(fd, eth_frame(60))
    with raises(InvalidArgument, "EMSGSIZE"):
        bpf.system.write(fd, b"\x01" * 5)
    bpf.setf(fd, [insn(RET_K, 96)])
    rec = stats_record(system, ifname)
    assert (rec.bd_wcount, rec.bd_wfcount, rec.bd_wdcount) == (0, 0, 0)


@pytest.mark.parametrize("hdrcmplt", [0, 1])
def test_write_hdrcmplt(bpf, ifname, hdrcmplt):
    """§e BIOCSHDRCMPLT / write(2): with hdrcmplt = 0 the interface fills in its own
    source address; with 1 the frame goes out as written."""
    watcher = reader(bpf, ifname)
    fd = bpf.open()
    bpf.attach(fd, ifname)
    bpf.set_uint(fd, lib.BIOCSHDRCMPLT, hdrcmplt)  # the watcher has 1: only fd's matter
    frame = eth_frame(60, src=SRC)
    bpf.system.write(fd, frame)
    bpf.system.write(fd, frame)
    got = []
    while len(got) < 2 and wait_poll(watcher, WAIT):
        got += drain(bpf, watcher)
    assert len(got) == 2
    for seen in got:
        assert seen[:6] == frame[:6]
        assert seen[12:] == frame[12:]
        if hdrcmplt:
            assert seen[6:12] == SRC
        else:
            assert seen[6:12] != SRC
            assert seen[6:12] == got[0][6:12]  # the interface's one address


def test_feedback_direction_in(bpf, ifname):
    """§e BIOCFEEDBACK / §f step 1: a writer watching IN does not see its outgoing
    frame; with feedback the frame is fed back as input and seen once."""
    fd = reader(bpf, ifname, lib.BPF_D_IN)
    plain, fed = eth_frame(60, fill=1), eth_frame(60, fill=2)
    bpf.system.write(fd, plain)
    bpf.set_uint(fd, lib.BIOCFEEDBACK, 1)
    bpf.system.write(fd, fed)
    got = seen_after(bpf, fd, fed)
    assert plain not in got
    assert got.count(fed) == 1


def test_feedback_inout_seen_once(bpf, ifname):
    """§f step 1: with feedback on an INOUT writer, the outgoing copy is flagged
    M_PROMISC and skipped for every descriptor of the tap; the looped-back copy
    is seen — once by the writer and once by another INOUT reader."""
    other = reader(bpf, ifname)
    fd = reader(bpf, ifname)
    bpf.set_uint(fd, lib.BIOCFEEDBACK, 1)
    frame = eth_frame(60, fill=3)
    bpf.system.write(fd, frame)
    assert seen_after(bpf, fd, frame).count(frame) == 1
    assert seen_after(bpf, other, frame).count(frame) == 1


def test_no_feedback_inout_sees_outgoing(bpf, ifname):
    """§f step 1: without feedback an INOUT writer sees its own frame once, on the
    output path; an IN reader does not."""
    inbound = reader(bpf, ifname, lib.BPF_D_IN)
    fd = reader(bpf, ifname)
    frame = eth_frame(60, fill=4)
    bpf.system.write(fd, frame)
    assert seen_after(bpf, fd, frame).count(frame) == 1
    assert frame not in drain(bpf, inbound)


def test_write_read_only_descriptor(bpf, ifname):
    """§e Opening / generic file layer: write(2) on an O_RDONLY descriptor fails with
    EBADF before reaching the driver."""
    fd = bpf.open(os.O_RDONLY)
    bpf.attach(fd, ifname)
    with raises(BPFError, "EBADF"):
        bpf.system.write(fd, eth_frame(60))
