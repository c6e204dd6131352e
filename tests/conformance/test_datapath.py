"""The packet path, byte-exact (spec §f "Packet arrival", "catchpacket", §a record
headers and bpf_hdrlen, §c timestamps, §e reset_d / FIONREAD / BIOCGSTATS).

Every test here injects traffic through the ``traffic`` fixture (the simulator's
``inject``, or frames across the epair(4) pair on FreeBSD); the descriptors
are non-blocking, so read(2) rotates whatever the store buffer holds.  The
DLT_NULL and multi-DLT tests need an injection path the pair does not offer:
on FreeBSD ``traffic`` skips them, saying so.
"""

from __future__ import annotations

import os
import time

import pytest

from bsdbpf._native import lib
from bsdbpf.errors import WouldBlock

from .helpers import (
    LP64,
    RET_K,
    bpf_hdrlen,
    eth_frame,
    expected_buffer,
    insn,
    null_frame,
    parse_records,
    raises,
    reject_ethertype,
    stats_record,
    wordalign,
)

TSTAMPS = [0x000, 0x001, 0x002, 0x003, 0x100, 0x101, 0x102,
           0x200, 0x201, 0x202, 0x300, 0x301, 0x302]


def capture(bpf, ifname, blen=None, tstamp=None):
    fd = bpf.open(os.O_RDWR | os.O_NONBLOCK)
    if blen is not None:
        bpf.set_uint(fd, lib.BIOCSBLEN, blen)
    bpf.attach(fd, ifname)
    if tstamp is not None:
        bpf.set_uint(fd, lib.BIOCSTSTAMP, tstamp)
    return fd


def check_exact(data, frames, tstamp, linkhdr):
    """The buffer is byte-for-byte what catchpacket writes for ``frames``
    (caplen, datalen) with the timestamps the records carry."""
    recs = parse_records(data, tstamp)
    hdrlen = bpf_hdrlen(linkhdr, tstamp)
    assert [r.hdrlen for r in recs] == [hdrlen] * len(frames)
    want = [(f, caplen, r.sec, r.frac, datalen)
            for (f, caplen, datalen), r in zip(frames, recs)]
    assert data == expected_buffer(want, tstamp, hdrlen)
    return recs


# -- record layout -----------------------------------------------------------------------

@pytest.mark.parametrize("tstamp", [lib.BPF_T_MICROTIME, lib.BPF_T_NANOTIME],
                         ids=["bpf_hdr", "bpf_xhdr"])
def test_records_ethernet(bpf, ifname, traffic, tstamp):
    """§f catchpacket steps 3-9 / §a: Ethernet records have bh_hdrlen 26 (amd64)
    for bpf_hdr and bpf_xhdr; caplen = datalen = frame length; data at hdrlen;
    next record at WORDALIGN(slen); zero padding between records, none after the
    last; read(2) returns exactly up to the last record's data."""
    fd = capture(bpf, ifname, tstamp=tstamp)
    sizes = [60, 61, 75, 64, 1514]
    frames = [eth_frame(n) for n in sizes]
    for f in frames:
        traffic(ifname, f)
    data = bpf.read(fd)
    recs = check_exact(data, [(f, len(f), len(f)) for f in frames], tstamp, 14)
    if LP64:
        assert recs[0].hdrlen == 26
        assert [r.offset for r in recs] == [0, 88, 176, 280, 376]
    assert len(data) == recs[-1].offset + recs[-1].hdrlen + sizes[-1]


@pytest.mark.parametrize("tstamp", [lib.BPF_T_MICROTIME, lib.BPF_T_BINTIME],
                         ids=["bpf_hdr", "bpf_xhdr"])
def test_records_dlt_null(bpf, null_ifname, traffic, tstamp):
    """§a bpf_hdrlen table: a DLT_NULL tap (4-byte link header) gets bh_hdrlen 28 on
    amd64, bytes 26-27 zero (the zeroed header struct), so the network header
    is word aligned."""
    fd = capture(bpf, null_ifname, tstamp=tstamp)
    frames = [null_frame(n) for n in (40, 41, 100)]
    for f in frames:
        traffic(null_ifname, f)
    recs = check_exact(bpf.read(fd), [(f, len(f), len(f)) for f in frames], tstamp, 4)
    if LP64:
        assert recs[0].hdrlen == 28
    for r in recs:
        assert (r.offset + r.hdrlen + 4) % lib.BPF_ALIGNMENT == 0


def test_records_word_aligned(bpf, ifname, traffic):
    """§a BPF_WORDALIGN / §f step 4: every record starts at a multiple of
    BPF_ALIGNMENT (sizeof(long)) and its network header is aligned too."""
    fd = capture(bpf, ifname)
    for n in range(60, 80):
        traffic(ifname, eth_frame(n))
    recs = parse_records(bpf.read(fd))
    assert len(recs) == 20
    for r in recs:
        assert r.offset % lib.BPF_ALIGNMENT == 0
        assert (r.offset + r.hdrlen + 14) % lib.BPF_ALIGNMENT == 0


def test_padding_zeroed_in_reused_buffer(bpf, ifname, traffic):
    """§f step 5 (bpf.c-2024): the inter-record padding is written as zeros, even
    where the reused kernel buffer held other bytes."""
    fd = capture(bpf, ifname, blen=512)
    traffic(ifname, eth_frame(400, fill=0xFF))  # buffer A full of 0xff
    bpf.read(fd)
    traffic(ifname, eth_frame(60))  # buffer B
    bpf.read(fd)
    odd = [eth_frame(61), eth_frame(63), eth_frame(65)]  # back in buffer A
    for f in odd:
        traffic(ifname, f)
    data = bpf.read(fd)
    check_exact(data, [(f, len(f), len(f)) for f in odd], 0, 14)
    for r in parse_records(data)[:-1]:
        end = r.offset + r.hdrlen + r.caplen
        assert data[end:wordalign(end)] == b"\0" * (wordalign(end) - end)


# -- truncation ----------------------------------------------------------------------------

@pytest.mark.parametrize(("snaplen", "caplen"), [(1, 1), (20, 20), (59, 59), (60, 60),
                                                 (61, 60), (0xFFFFFFFF, 60)])
def test_snaplen_truncation(bpf, ifname, traffic, snaplen, caplen):
    """§f "caplen = min(snaplen, pktlen, bufsize - hdrlen)": the read filter's return
    value bounds the capture; bh_datalen keeps the wire length."""
    fd = capture(bpf, ifname)
    bpf.setf(fd, [insn(RET_K, snaplen)])
    frame = eth_frame(60)
    traffic(ifname, frame)
    check_exact(bpf.read(fd), [(frame, caplen, 60)], 0, 14)


def test_filter_zero_drops(bpf, ifname, traffic):
    """§f step 3: a filter returning 0 drops the packet (counted in recv only)."""
    fd = capture(bpf, ifname)
    bpf.setf(fd, [insn(RET_K, 0)])
    traffic(ifname, eth_frame(60))
    with raises(WouldBlock, "EAGAIN"):
        bpf.read(fd)
    assert bpf.gstats(fd) == (1, 0)


@pytest.mark.parametrize(("blen", "size"), [(64, 100), (100, 1514), (32, 60)])
def test_buffer_truncation(bpf, ifname, traffic, blen, size):
    """§f step 3: totlen = hdrlen + pktlen is cut to bd_bufsize — a packet larger
    than the buffer is truncated to fit one buffer (caplen = bufsize - hdrlen)."""
    fd = capture(bpf, ifname, blen=blen)
    frame = eth_frame(size)
    traffic(ifname, frame)
    data = bpf.read(fd)
    hdrlen = bpf_hdrlen(14)
    assert len(data) == blen
    check_exact(data, [(frame, blen - hdrlen, size)], 0, 14)


# -- direction and counters --------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    (lib.BPF_D_IN, False, True), (lib.BPF_D_IN, True, False),
    (lib.BPF_D_OUT, False, False), (lib.BPF_D_OUT, True, True),
    (lib.BPF_D_INOUT, False, True), (lib.BPF_D_INOUT, True, True),
], ids=["IN-in", "IN-out", "OUT-in", "OUT-out", "INOUT-in", "INOUT-out"])
def test_direction(bpf, ifname, traffic, case):
    """§f step 1: IN skips outgoing packets, OUT skips incoming ones; skipped
    packets are not counted (rcount only counts what passes the direction check)."""
    direction, outgoing, seen = case
    fd = capture(bpf, ifname)
    bpf.set_uint(fd, lib.BIOCSDIRECTION, direction)
    frame = eth_frame(60)
    traffic(ifname, frame, outgoing=outgoing)
    if seen:
        assert [r.data for r in parse_records(bpf.read(fd))] == [frame]
    else:
        with raises(WouldBlock, "EAGAIN"):
            bpf.read(fd)
    assert bpf.gstats(fd) == (int(seen), 0)
    rec = stats_record(bpf.system, ifname)
    assert (rec.bd_rcount, rec.bd_fcount) == (int(seen), int(seen))


def test_counters_filter_rejected(bpf, system, ifname, traffic):
    """§f steps 2-4: rcount counts every packet offered, fcount those the filter
    accepted; rejected packets are not stored."""
    fd = capture(bpf, ifname)
    bpf.setf(fd, reject_ethertype(0x0800))
    ok = eth_frame(60)
    ip = ok[:12] + b"\x08\x00" + ok[14:]
    for f in (ok, ip, ip, ok, ip):
        traffic(ifname, f)
    assert [r.data for r in parse_records(bpf.read(fd))] == [ok, ok]
    rec = stats_record(system, ifname)
    assert (rec.bd_rcount, rec.bd_fcount, rec.bd_dcount) == (5, 2, 0)
    assert bpf.gstats(fd) == (5, 0)


def test_drops_when_both_buffers_full(bpf, system, ifname, traffic):
    """§f step 5a (BUFFER mode): with the hold buffer unread and the store full, the
    packet is dropped (dcount, BIOCGSTATS bs_drop); after a read space is back."""
    fd = capture(bpf, ifname, blen=200)
    frames = [eth_frame(60 + i) for i in range(6)]
    for f in frames:
        traffic(ifname, f)
    # 2 records per buffer: A = f0 f1 (hold), B = f2 f3 (store), f4 f5 dropped
    assert bpf.gstats(fd) == (6, 2)
    rec = stats_record(system, ifname)
    assert (rec.bd_rcount, rec.bd_fcount, rec.bd_dcount) == (6, 6, 2)
    assert [r.data for r in parse_records(bpf.read(fd))] == frames[:2]
    late = eth_frame(70)
    traffic(ifname, late)  # B is full, A is free again: rotation
    assert [r.data for r in parse_records(bpf.read(fd))] == frames[2:4]
    assert [r.data for r in parse_records(bpf.read(fd))] == [late]
    assert bpf.gstats(fd) == (7, 2)


def test_fionread(bpf, ifname, traffic):
    """§e FIONREAD: slen + hlen (hlen only while a hold buffer exists)."""
    fd = capture(bpf, ifname, blen=200)
    traffic(ifname, eth_frame(60))
    assert bpf.fionread(fd) == 86
    traffic(ifname, eth_frame(60))
    assert bpf.fionread(fd) == 88 + 86
    traffic(ifname, eth_frame(60))  # rotation: hold 174, store 86
    assert bpf.fionread(fd) == 174 + 86
    bpf.read(fd)
    assert bpf.fionread(fd) == 86


# -- resets -------------------------------------------------------------------------------------

def test_setfnr_keeps_setf_resets(bpf, ifname, traffic):
    """§e BIOCSETF/BIOCSETFNR: BIOCSETF performs a reset (flush + counter zeroing);
    BIOCSETFNR does not."""
    fd = capture(bpf, ifname)
    traffic(ifname, eth_frame(60))
    bpf.setf(fd, [insn(RET_K, 0xFFFF)], lib.BIOCSETFNR)
    assert (bpf.fionread(fd), bpf.gstats(fd)) == (86, (1, 0))
    bpf.setf(fd, [insn(RET_K, 0xFFFF)])
    assert (bpf.fionread(fd), bpf.gstats(fd)) == (0, (0, 0))


def test_setif_same_interface_resets(bpf, ifname, traffic):
    """§e BIOCSETIF: the same interface again → just a flush (reset_d)."""
    fd = capture(bpf, ifname)
    traffic(ifname, eth_frame(60))
    bpf.attach(fd, ifname)
    assert (bpf.fionread(fd), bpf.gstats(fd)) == (0, (0, 0))


def test_gstats_counts_accepted_and_dropped(bpf, ifname, traffic):
    """§e BIOCGSTATS: bs_recv = rcount, bs_drop = dcount (low 32 bits)."""
    fd = capture(bpf, ifname, blen=32)  # one record per buffer
    for _ in range(5):
        traffic(ifname, eth_frame(60))
    assert bpf.gstats(fd) == (5, 3)


# -- timestamps -----------------------------------------------------------------------------------

def _seconds(tstamp, sec, frac):
    fmt = tstamp & lib.BPF_T_FORMAT_MASK
    if fmt == lib.BPF_T_MICROTIME:
        assert 0 <= frac < 1_000_000
        return sec + frac / 1e6
    if fmt == lib.BPF_T_NANOTIME:
        assert 0 <= frac < 1_000_000_000
        return sec + frac / 1e9
    return sec + frac / 2**64  # BINTIME: 2^-64 fractions


@pytest.mark.parametrize("tstamp", TSTAMPS, ids=hex)
def test_timestamps(bpf, ifname, traffic, tstamp):
    """§c timestamp word / §i Timestamps / §f step 7: MICROTIME and NONE records use
    bpf_hdr, NANOTIME/BINTIME bpf_xhdr; MONOTONIC clocks give time since boot
    (time.monotonic()), the others wall-clock time (time.time()); NONE leaves the
    timestamp zero."""
    fd = capture(bpf, ifname, tstamp=tstamp)
    clock = time.monotonic if tstamp & lib.BPF_T_MONOTONIC else time.time
    before = clock()
    frame = eth_frame(60)
    traffic(ifname, frame)
    after = clock()
    data = bpf.read(fd)
    (rec,) = check_exact(data, [(frame, 60, 60)], tstamp, 14)
    if tstamp == lib.BPF_T_NONE:
        assert (rec.sec, rec.frac) == (0, 0)
        return
    when = _seconds(tstamp, rec.sec, rec.frac)
    slack = 0.5  # tick-precision (FAST) clocks and clock granularity
    assert before - slack <= when <= after + slack


def test_tstamp_change_mid_buffer(bpf, ifname, traffic):
    """§e BIOCSTSTAMP: takes effect for the next captured packet, so the header
    type may change inside one buffer; bh_hdrlen tells the records apart."""
    fd = capture(bpf, ifname)
    f1, f2, f3 = eth_frame(60), eth_frame(61), eth_frame(62)
    traffic(ifname, f1)
    bpf.set_uint(fd, lib.BIOCSTSTAMP, lib.BPF_T_NANOTIME)
    traffic(ifname, f2)
    bpf.set_uint(fd, lib.BIOCSTSTAMP, lib.BPF_T_NONE)
    traffic(ifname, f3)
    data = bpf.read(fd)
    r1 = parse_records(data, lib.BPF_T_MICROTIME)[0]
    o2 = wordalign(r1.hdrlen + r1.caplen)
    r2 = parse_records(data[o2:], lib.BPF_T_NANOTIME)[0]
    o3 = o2 + wordalign(r2.hdrlen + r2.caplen)
    r3 = parse_records(data[o3:], lib.BPF_T_NONE)
    assert [r1.data, r2.data, r3[0].data] == [f1, f2, f3]
    assert len(r3) == 1
    assert r2.frac < 1_000_000_000
    assert (r3[0].sec, r3[0].frac) == (0, 0)


def test_one_timestamp_per_packet(bpf, ifname, traffic):
    """§f step 4: one timestamp per packet, shared across descriptors — MICROTIME,
    NANOTIME and BINTIME descriptors see the same instant in their own formats."""
    fds = {t: capture(bpf, ifname, tstamp=t)
           for t in (lib.BPF_T_MICROTIME, lib.BPF_T_NANOTIME, lib.BPF_T_BINTIME)}
    traffic(ifname, eth_frame(60))
    recs = {t: parse_records(bpf.read(fd), t)[0] for t, fd in fds.items()}
    micro, nano, bint = (recs[t] for t in fds)
    nano_ns = nano.sec * 10**9 + nano.frac
    bin_ns = bint.sec * 10**9 + (bint.frac * 10**9 >> 64)
    assert abs(bin_ns - nano_ns) <= 1
    assert micro.sec * 10**6 + micro.frac == nano_ns // 1000


def test_sdlt_reattach_resets(bpf, multi_ifname, traffic):
    """§e BIOCSDLT "re-attach to that tap" + §e reset_d "(BIOCFLUSH, BIOCSETF, attach)":
    switching the DLT is an attach, so the buffers and counters are reset."""
    fd = capture(bpf, multi_ifname)
    traffic(multi_ifname, eth_frame(60))
    assert (bpf.fionread(fd), bpf.gstats(fd)) == (86, (1, 0))
    bpf.set_uint(fd, lib.BIOCSDLT, lib.DLT_RAW)
    assert (bpf.fionread(fd), bpf.gstats(fd)) == (0, (0, 0))
