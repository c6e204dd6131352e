"""net.bpf sysctls, net.bpf.stats, privileges (spec §d, §e Opening, §i Permissions)."""

from __future__ import annotations

import os
import signal
import sys

import pytest
from conftest import int_bytes, int_value

from bsdbpf._native import ffi, lib
from bsdbpf.errors import (
    DeviceNotFound,
    InvalidArgument,
    InvalidFilter,
    PermissionDenied,
    SysctlNotFound,
    WriteRejected,
)

from .helpers import (
    LP64,
    PAGE,
    RET_K,
    eth_frame,
    insn,
    raises,
    reject_ethertype,
    stats_record,
    stats_records,
    xbpf_records,
)

INT_SYSCTLS = {
    "net.bpf.zerocopy_enable": 0,
    "net.bpf.bufsize": 4096,
    "net.bpf.maxbufsize": 524288,
    "net.bpf.maxinsns": 512,
    "net.bpf.optimize_writers": 0,
}
XBPF_SIZE = ffi.sizeof("struct xbpf_d")


# -- integer sysctls ----------------------------------------------------------------------

@pytest.mark.parametrize(("name", "default"), INT_SYSCTLS.items())
def test_int_sysctl_default(system, name, default):
    """§d table: each net.bpf int sysctl is a 4-byte int in the host's byte order with
    FreeBSD's default (zerocopy_enable 0, bufsize 4096, maxbufsize 524288,
    maxinsns 512, optimize_writers 0)."""
    raw = system.sysctlbyname(name)
    assert len(raw) == 4
    assert int.from_bytes(raw, sys.byteorder, signed=True) == default


@pytest.mark.parametrize("name", INT_SYSCTLS)
def test_int_sysctl_write(system, sysctl, name):
    """§d: writes (root) take effect; sysctlbyname returns the value before the write."""
    old = sysctl.get(name)
    new = old + 1 if name != "net.bpf.zerocopy_enable" else 1 - old
    assert sysctl.set(name, new) == old
    assert int_value(system.sysctlbyname(name)) == new


@pytest.mark.parametrize("name", INT_SYSCTLS)
def test_int_sysctl_write_needs_root(system, unprivileged, name):
    """§d "Writes to any of the int sysctls need root (PRIV_SYSCTL_WRITE → EPERM
    otherwise)"; reading stays allowed and the value is unchanged."""
    before = system.sysctlbyname(name)
    with unprivileged():
        assert system.sysctlbyname(name) == before
        with raises(PermissionDenied, "EPERM"):
            system.sysctlbyname(name, int_bytes(int_value(before) + 1))
    assert system.sysctlbyname(name) == before


@pytest.mark.parametrize("name", ["net.bpf.nosuch", "net.bpf.zerocopy", "net.bpf.stats.x",
                                  "net.bpfx.bufsize", "net.bpf.maxinsns\0junk"])
def test_unknown_sysctl(system, name):
    """§d: a name the kernel does not have → ENOENT (SysctlNotFound); one with a
    NUL in it is not the name before the NUL, as C would read it."""
    with raises(SysctlNotFound, "ENOENT"):
        system.sysctlbyname(name)


def test_kern_hz_is_read_only(system):
    """kern.hz, the clock read timeouts count in, is read-only (CTLFLAG_RDTUN: set
    at boot): writing it is EPERM, even as root, and changes nothing."""
    hz = int_value(system.sysctlbyname("kern.hz"))
    assert hz >= 1
    with raises(PermissionDenied, "EPERM"):
        system.sysctlbyname("kern.hz", int_bytes(hz))
    assert int_value(system.sysctlbyname("kern.hz")) == hz


# -- opening /dev/bpf -------------------------------------------------------------------------

def test_open_needs_root(system, unprivileged):
    """§e Opening / §i Permissions: /dev/bpf is root:wheel 0600 → non-root open
    fails with EACCES."""
    with unprivileged(), raises(PermissionDenied, "EACCES"):
        system.open("/dev/bpf", os.O_RDWR)


def test_open_alias_and_fresh_descriptors(bpf):
    """§e Opening: /dev/bpf0 is an alias of /dev/bpf; every open gives a fresh
    private descriptor (never EBUSY)."""
    fds = [bpf.open() for _ in range(4)]
    fd0 = bpf.system.open("/dev/bpf0", os.O_RDWR)
    bpf.fds.append(fd0)
    assert len({*fds, fd0}) == 5
    bpf.set_uint(fds[0], lib.BIOCSBLEN, 100)
    assert bpf.get_uint(fds[1], lib.BIOCGBLEN) == 4096


def test_open_unknown_device(system):
    """§e Opening: there is no other BPF node (the old /dev/bpfN clones are gone)."""
    with raises(DeviceNotFound, "ENOENT"):
        system.open("/dev/bpf_nosuch", os.O_RDWR)


# -- net.bpf.stats ------------------------------------------------------------------------------

def test_stats_lists_attached_only(bpf, system, ifname):
    """§d net.bpf.stats: one struct xbpf_d per attached descriptor; unattached
    descriptors are not listed."""
    fd = bpf.open()
    assert stats_records(system) == []
    bpf.attach(fd, ifname)
    assert len(stats_records(system)) == 1


def test_stats_record(bpf, system, ifname):
    """§d net.bpf.stats record fields / §a struct xbpf_d: bd_structsize =
    sizeof(xbpf_d) (168 on amd64), bd_ifname, bd_bufsize, bd_bufmode, bd_pid,
    bd_sig, bd_direction, flags 0, counters 0, bd_spare zero."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSBLEN, 2000)
    bpf.attach(fd, ifname)
    rec = stats_record(system, ifname)
    assert rec.bd_structsize == XBPF_SIZE
    if LP64:
        assert XBPF_SIZE == 168
    assert ffi.string(rec.bd_ifname).decode() == ifname
    assert (rec.bd_bufsize, rec.bd_bufmode, rec.bd_pid) == (2000, lib.BPF_BUFMODE_BUFFER,
                                                            os.getpid())
    assert (rec.bd_sig, rec.bd_direction) == (signal.SIGIO, lib.BPF_D_INOUT)
    assert (rec.bd_promisc, rec.bd_immediate, rec.bd_hdrcmplt, rec.bd_feedback,
            rec.bd_async, rec.bd_locked) == (0, 0, 0, 0, 0, 0)
    assert (rec.bd_rcount, rec.bd_dcount, rec.bd_fcount, rec.bd_wcount, rec.bd_wfcount,
            rec.bd_wdcount, rec.bd_zcopy, rec.bd_slen, rec.bd_hlen) == (0,) * 9
    assert list(rec.bd_spare) == [0, 0, 0, 0]


def test_stats_raw_layout_amd64(bpf, system, ifname):
    """§a struct xbpf_d amd64 offsets, on the raw bytes: bd_structsize 0xa8 at 0,
    bd_ifname at 76, bd_bufsize at 68, bd_bufmode at 128."""
    if not LP64:
        pytest.skip("the offsets checked are amd64's")
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSBLEN, 2000)
    bpf.attach(fd, ifname)
    raw = system.sysctlbyname("net.bpf.stats")
    pid = os.getpid().to_bytes(4, sys.byteorder)
    recs = [raw[i:i + 168] for i in range(0, len(raw), 168) if raw[i + 72:i + 76] == pid]
    assert len(recs) == 1
    rec = recs[0]
    # Fields in the host's byte order, as the kernel writes them.
    assert int.from_bytes(rec[0:4], sys.byteorder) == 0xA8
    assert rec[76:92] == ifname.encode().ljust(16, b"\0")
    assert int.from_bytes(rec[68:72], sys.byteorder) == 2000
    assert int.from_bytes(rec[128:132], sys.byteorder) == lib.BPF_BUFMODE_BUFFER


def test_stats_zbuf_record(bpf, system, zerocopy, ifname):
    """§d stats: bd_bufmode 2 and bd_bufsize = buflen - 32 for a zero-copy descriptor."""
    bpf.zbuf_descriptor(ifname, size=2 * PAGE)
    rec = stats_record(system, ifname)
    assert (rec.bd_bufmode, rec.bd_bufsize) == (lib.BPF_BUFMODE_ZBUF, 2 * PAGE - 32)


@pytest.mark.parametrize("writer_first", [True, False], ids=["writer-attached-first",
                                                              "reader-attached-first"])
def test_stats_writer_only_first(bpf, system, ifname, writer_first):
    """§d net.bpf.stats: the writer-only entries of an interface come first, then
    the readers, whatever the order of attachment (an O_WRONLY open is writer-only)."""
    def writer():
        fd = bpf.open(os.O_WRONLY)
        bpf.set_uint(fd, lib.BIOCSBLEN, 1111)
        bpf.attach(fd, ifname)

    def reader():
        fd = bpf.open(os.O_RDWR)
        bpf.set_uint(fd, lib.BIOCSBLEN, 2222)
        bpf.attach(fd, ifname)

    for make in (writer, reader) if writer_first else (reader, writer):
        make()
    assert [r.bd_bufsize for r in stats_records(system, ifname)] == [1111, 2222]


def test_stats_read_needs_root(bpf, system, unprivileged, ifname):
    """§d / §i: reading net.bpf.stats needs PRIV_NET_BPF → EPERM for non-root."""
    bpf.attach(bpf.open(), ifname)
    with unprivileged(), raises(PermissionDenied, "EPERM"):
        system.sysctlbyname("net.bpf.stats")


def test_stats_write_needs_root(bpf, system, unprivileged, ifname):
    """§d: zeroing net.bpf.stats needs PRIV_SYSCTL_WRITE → EPERM for non-root."""
    bpf.attach(bpf.open(), ifname)
    with unprivileged(), raises(PermissionDenied, "EPERM"):
        system.sysctlbyname("net.bpf.stats", bytes(XBPF_SIZE))


@pytest.mark.parametrize("size", [1, 4, XBPF_SIZE - 1, XBPF_SIZE + 1, 2 * XBPF_SIZE])
def test_stats_zero_wrong_size(bpf, system, ifname, size):
    """§d net.bpf.stats write: newlen ≠ sizeof(struct xbpf_d) → EINVAL."""
    bpf.attach(bpf.open(), ifname)
    with raises(InvalidArgument, "EINVAL"):
        system.sysctlbyname("net.bpf.stats", bytes(size))


def _write_counts(bpf, fd):
    """One accepted write and one refused by the write filter."""
    frame = eth_frame(60)
    bpf.system.write(fd, frame)
    bpf.setf(fd, [insn(RET_K, 0)], lib.BIOCSETWF)
    with raises(WriteRejected, "EPERM"):
        bpf.system.write(fd, frame)
    bpf.setf(fd, [], lib.BIOCSETWF)


@pytest.mark.parametrize("where", [0, 4, 32, XBPF_SIZE - 1])
def test_stats_zero_nonzero(bpf, system, ifname, where):
    """§d net.bpf.stats write: all bytes must be zero, else EINVAL, and nothing is
    zeroed."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    _write_counts(bpf, fd)
    raw = bytearray(XBPF_SIZE)
    raw[where] = 1
    with raises(InvalidArgument, "EINVAL"):
        system.sysctlbyname("net.bpf.stats", bytes(raw))
    assert stats_record(system, ifname).bd_wcount == 2


def test_stats_zeroing_write_counters(bpf, system, ifname):
    """§d net.bpf.stats write = "zero all counters": wcount and wfcount of every
    reader are zeroed, wdcount is not."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    _write_counts(bpf, fd)
    rec = stats_record(system, ifname)
    assert (rec.bd_wcount, rec.bd_wfcount, rec.bd_wdcount) == (2, 1, 1)
    old = system.sysctlbyname("net.bpf.stats", bytes(XBPF_SIZE))
    assert len(old) % XBPF_SIZE == 0
    rec = stats_record(system, ifname)
    assert (rec.bd_wcount, rec.bd_wfcount, rec.bd_wdcount) == (0, 0, 1)


def test_stats_zeroing_skips_writer_only(bpf, system, ifname):
    """§d net.bpf.stats write: the writer-only list is not touched."""
    fd = bpf.open(os.O_WRONLY)
    bpf.attach(fd, ifname)
    bpf.system.write(fd, eth_frame(60))
    assert stats_record(system, ifname).bd_wcount == 1
    system.sysctlbyname("net.bpf.stats", bytes(XBPF_SIZE))
    assert stats_record(system, ifname).bd_wcount == 1


def test_stats_zeroing_read_counters(bpf, system, ifname, traffic):
    """§d net.bpf.stats write: rcount, dcount, fcount of readers are zeroed (and
    BIOCGSTATS, which reports rcount/dcount, follows)."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSBLEN, 128)  # room for one 60-byte record per buffer
    bpf.attach(fd, ifname)
    bpf.setf(fd, reject_ethertype(0x0800))
    for _ in range(4):
        traffic(ifname, eth_frame(60))
    traffic(ifname, eth_frame(60)[:12] + b"\x08\x00" + bytes(46))  # filtered out
    rec = stats_record(system, ifname)
    assert (rec.bd_rcount, rec.bd_fcount, rec.bd_dcount) == (5, 4, 2)
    assert bpf.gstats(fd) == (5, 2)
    system.sysctlbyname("net.bpf.stats", bytes(XBPF_SIZE))
    rec = stats_record(system, ifname)
    assert (rec.bd_rcount, rec.bd_fcount, rec.bd_dcount) == (0, 0, 0)
    assert bpf.gstats(fd) == (0, 0)


def test_stats_slen_hlen(bpf, system, ifname, traffic):
    """§d stats: bd_slen/bd_hlen are the store/hold buffer byte counts."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSBLEN, 128)
    bpf.attach(fd, ifname)
    traffic(ifname, eth_frame(60))
    rec = stats_record(system, ifname)
    assert (rec.bd_slen, rec.bd_hlen) == (86, 0)
    traffic(ifname, eth_frame(50))  # does not fit: rotation
    rec = stats_record(system, ifname)
    assert (rec.bd_slen, rec.bd_hlen) == (76, 86)


# -- maxinsns ----------------------------------------------------------------------------------

def _prog(n):
    return [insn(lib.BPF_LD | lib.BPF_IMM, i) for i in range(n - 1)] + [insn(RET_K, 96)]


@pytest.mark.parametrize("request_", [lib.BIOCSETF, lib.BIOCSETFNR, lib.BIOCSETWF],
                         ids=["BIOCSETF", "BIOCSETFNR", "BIOCSETWF"])
def test_maxinsns_default(bpf, request_):
    """§d net.bpf.maxinsns (512): bf_len > maxinsns → EINVAL; 512 is accepted."""
    fd = bpf.open()
    bpf.setf(fd, _prog(512), request_)
    with raises(InvalidFilter, "EINVAL"):
        bpf.setf(fd, _prog(513), request_)


@pytest.mark.parametrize("request_", [lib.BIOCSETF, lib.BIOCSETFNR, lib.BIOCSETWF],
                         ids=["BIOCSETF", "BIOCSETFNR", "BIOCSETWF"])
def test_maxinsns_limits_filters(bpf, sysctl, request_):
    """§d net.bpf.maxinsns: the limit follows the sysctl."""
    sysctl.set("net.bpf.maxinsns", 3)
    fd = bpf.open()
    bpf.setf(fd, _prog(3), request_)
    with raises(InvalidFilter, "EINVAL"):
        bpf.setf(fd, _prog(4), request_)
    sysctl.set("net.bpf.maxinsns", 4)
    bpf.setf(fd, _prog(4), request_)


# -- optimize_writers ----------------------------------------------------------------------------

def _received(bpf, system, ifname, traffic, fd):
    traffic(ifname, eth_frame(60))
    return bpf.gstats(fd)[0]


def test_optimize_writers_off(bpf, system, ifname, traffic):
    """§d net.bpf.optimize_writers = 0: an O_RDWR descriptor reads at once."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    assert _received(bpf, system, ifname, traffic, fd) == 1


def test_optimize_writers_until_real_filter(bpf, sysctl, system, ifname, traffic):
    """§d net.bpf.optimize_writers = 1: a newly attached descriptor is writer-only
    (receives nothing) until it installs a read filter that is not a single RET K."""
    sysctl.set("net.bpf.optimize_writers", 1)
    fd = bpf.open()
    bpf.attach(fd, ifname)
    assert _received(bpf, system, ifname, traffic, fd) == 0
    bpf.setf(fd, reject_ethertype(0x0800))
    assert _received(bpf, system, ifname, traffic, fd) == 1


def test_optimize_writers_second_snaplen_filter(bpf, sysctl, system, ifname, traffic):
    """§d optimize_writers: a first single-RET-K "snaplen" BIOCSETF keeps the
    descriptor writer-only; a second one upgrades it."""
    sysctl.set("net.bpf.optimize_writers", 1)
    fd = bpf.open()
    bpf.attach(fd, ifname)
    bpf.setf(fd, [insn(RET_K, 96)])
    assert _received(bpf, system, ifname, traffic, fd) == 0
    bpf.setf(fd, [insn(RET_K, 96)])
    assert _received(bpf, system, ifname, traffic, fd) == 1


def test_optimize_writers_write_filter_does_not_upgrade(bpf, sysctl, system, ifname, traffic):
    """§d optimize_writers: only a read filter upgrades (BIOCSETWF does not, nor does
    removing the filter with bf_len 0)."""
    sysctl.set("net.bpf.optimize_writers", 1)
    fd = bpf.open()
    bpf.attach(fd, ifname)
    bpf.setf(fd, reject_ethertype(0x0800), lib.BIOCSETWF)
    bpf.setf(fd, [])
    assert _received(bpf, system, ifname, traffic, fd) == 0


def test_optimize_writers_setfnr_snaplen_upgrades(bpf, sysctl, system, ifname, traffic):
    """§d optimize_writers (bpf_check_upgrade): only BIOCSETF counts as a snaplen
    filter, so a single RET K through BIOCSETFNR upgrades at once."""
    sysctl.set("net.bpf.optimize_writers", 1)
    fd = bpf.open()
    bpf.attach(fd, ifname)
    bpf.setf(fd, [insn(RET_K, 96)], lib.BIOCSETFNR)
    assert _received(bpf, system, ifname, traffic, fd) == 1


def test_write_only_open_is_writer_only(bpf, system, ifname, traffic):
    """§d optimize_writers / §e Opening: a descriptor opened without FREAD
    (O_WRONLY) is writer-only regardless of the sysctl: it is offered nothing."""
    fd = bpf.open(os.O_WRONLY)
    bpf.attach(fd, ifname)
    traffic(ifname, eth_frame(60))
    assert stats_record(system, ifname).bd_rcount == 0


def test_optimize_writers_listed_first(bpf, sysctl, system, ifname):
    """§d optimize_writers + stats: with the sysctl on, a new O_RDWR descriptor goes
    on the writer-only list, which net.bpf.stats lists before readers."""
    fd1 = bpf.open()
    bpf.set_uint(fd1, lib.BIOCSBLEN, 2222)
    bpf.attach(fd1, ifname)
    sysctl.set("net.bpf.optimize_writers", 1)
    fd2 = bpf.open()
    bpf.set_uint(fd2, lib.BIOCSBLEN, 1111)
    bpf.attach(fd2, ifname)
    assert [r.bd_bufsize for r in stats_records(system, ifname)] == [1111, 2222]
    bpf.setf(fd2, reject_ethertype(0x0800))  # upgraded: now a reader too
    assert sorted(r.bd_bufsize for r in stats_records(system, ifname)) == [1111, 2222]


def test_xbpf_records_helper_rejects_ragged():
    """Self-check of the suite's parser: a length that is not a multiple of
    sizeof(struct xbpf_d) is reported."""
    with pytest.raises(AssertionError):
        xbpf_records(bytes(XBPF_SIZE + 1))
