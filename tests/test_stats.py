"""net.bpf.stats decoding: struct xbpf_d records, as netstat -B reads them."""

from __future__ import annotations

import os
import sys

import pytest

from bsdbpf import BufferMode, Descriptor, Direction, InternalError, PermissionDenied
from bsdbpf._native import ffi, lib
from bsdbpf.sim import Kernel
from bsdbpf.stats import DescriptorStats, parse_stats, read_stats, zero_stats

SIZE = ffi.sizeof("struct xbpf_d")


def xbpf_d(**fields: object) -> bytes:
    rec = ffi.new("struct xbpf_d *")
    rec.bd_structsize = SIZE
    rec.bd_bufmode = lib.BPF_BUFMODE_BUFFER
    for name, value in fields.items():
        setattr(rec, name, value)
    return bytes(ffi.buffer(rec))


def test_every_field_is_decoded() -> None:
    blob = xbpf_d(bd_promisc=1, bd_immediate=1, bd_hdrcmplt=1, bd_direction=lib.BPF_D_OUT,
                  bd_feedback=1, bd_async=1, bd_rcount=2**40 + 1, bd_dcount=7, bd_fcount=9,
                  bd_sig=23, bd_slen=100, bd_hlen=200, bd_bufsize=4096, bd_pid=4242,
                  bd_ifname=b"igc0", bd_locked=1, bd_wcount=11, bd_wfcount=10,
                  bd_wdcount=1, bd_zcopy=30, bd_bufmode=lib.BPF_BUFMODE_ZBUF)
    assert parse_stats(blob + xbpf_d(bd_ifname=b"lo0")) == [
        DescriptorStats(
            pid=4242, ifname="igc0", promiscuous=True, immediate=True, header_complete=True,
            direction=Direction.OUT, feedback=True, async_io=True, locked=True,
            recv=2**40 + 1, drop=7, match=9, store_len=100, hold_len=200, buffer_size=4096,
            signal=23, writes=11, writes_passed=10, writes_failed=1, zerocopy_appends=30,
            buffer_mode=BufferMode.ZBUF),
        DescriptorStats(
            pid=0, ifname="lo0", promiscuous=False, immediate=False, header_complete=False,
            direction=Direction.IN, feedback=False, async_io=False, locked=False, recv=0,
            drop=0, match=0, store_len=0, hold_len=0, buffer_size=0, signal=0, writes=0,
            writes_passed=0, writes_failed=0, zerocopy_appends=0,
            buffer_mode=BufferMode.BUFFER),
    ]


@pytest.mark.parametrize(("fields", "flags"), [
    ({}, "--f----"),
    ({"bd_promisc": 1, "bd_immediate": 1, "bd_hdrcmplt": 1, "bd_direction": lib.BPF_D_OUT,
      "bd_feedback": 1, "bd_async": 1, "bd_locked": 1}, "pi-obal"),
    ({"bd_direction": lib.BPF_D_INOUT}, "--fs---"),
])
def test_flags_read_like_netstat(fields: dict[str, int], flags: str) -> None:
    assert parse_stats(xbpf_d(**fields))[0].flags == flags


@pytest.mark.parametrize(("blob", "message"), [
    (bytes(SIZE + 1), "not a whole number"),
    (xbpf_d(bd_structsize=SIZE - 8), "bd_structsize"),
    (xbpf_d(bd_direction=9), "Record 0: 9 is not a valid Direction"),
    (xbpf_d(bd_bufmode=0), "Record 0: 0 is not a valid BufferMode"),
], ids=["length", "structsize", "direction", "bufmode"])
def test_a_table_this_build_cannot_read(blob: bytes, message: str) -> None:
    with pytest.raises(InternalError, match=message) as err:
        parse_stats(blob)
    assert err.value.op == "sysctl net.bpf.stats"


def test_nothing_attached_is_an_empty_table(kernel: Kernel) -> None:
    with Descriptor(system=kernel):
        assert read_stats(kernel) == []
    assert parse_stats(b"") == []


def test_read_stats_follows_the_descriptors(kernel: Kernel) -> None:
    kernel.sysctlbyname("net.bpf.zerocopy_enable", (1).to_bytes(4, sys.byteorder))
    with Descriptor.open("em0", zerocopy=False, buffer_size=8192, system=kernel) as a, \
            Descriptor.open("lo0", zerocopy=True, direction=Direction.IN,
                            system=kernel) as b:
        a.lock()
        kernel.inject("em0", b"\xff" * 60)
        em0, lo0 = sorted(read_stats(kernel), key=lambda r: r.ifname)
        assert (em0.ifname, em0.pid, em0.buffer_mode, em0.buffer_size, em0.locked) == (
            "em0", os.getpid(), BufferMode.BUFFER, 8192, True)
        assert (em0.recv, em0.match, em0.drop) == (1, 1, 0)
        assert (lo0.buffer_mode, lo0.direction, lo0.recv) == (BufferMode.ZBUF, Direction.IN, 0)
        assert lo0.buffer_size == b.buffer_size
        zero_stats(kernel)
        assert [r.recv for r in read_stats(kernel)] == [0, 0]


def test_reading_needs_root() -> None:
    with Kernel(uid=1000) as k, pytest.raises(PermissionDenied):
        read_stats(k)
