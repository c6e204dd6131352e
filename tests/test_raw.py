"""bsdbpf.raw: one typed function per request, plain values in and out, and the int codec."""

from __future__ import annotations

import errno
import mmap
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Recorder, ether_frame

from bsdbpf import (
    BPFError,
    BpfStat,
    BpfVersion,
    InterfaceNotFound,
    InvalidArgument,
    InvalidFilter,
    SysctlNotFound,
    UnsupportedError,
    raw,
)
from bsdbpf._abi import REQUEST_NAMES
from bsdbpf._native import ffi, lib
from bsdbpf.sim import Kernel
from bsdbpf.system import HostSystem

PAGE = mmap.PAGESIZE
RET_K = lib.BPF_RET | lib.BPF_K
ALIASES = {"BIOCGSEESENT", "BIOCSSEESENT"}  # BIOCGDIRECTION/BIOCSDIRECTION's old names


@pytest.fixture
def fd(kernel: Kernel) -> Iterator[int]:
    fd = kernel.open("/dev/bpf", os.O_RDWR)
    try:
        yield fd
    finally:
        kernel.close(fd)


def _plain(value: Any) -> bool:
    """Nothing of cffi in a result: ints, bools, str, bytes, and tuples/lists of them."""
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (int, str, bytes))


def test_every_request_of_the_build_has_a_function() -> None:
    declared = {name for name in dir(lib) if name.startswith(("BIOC", "FIO", "TIOC"))}
    assert set(raw.BY_REQUEST) == declared - ALIASES
    for name, func in raw.BY_REQUEST.items():
        assert callable(func)
        assert name in (func.__doc__ or ""), f"{func.__name__}'s docstring names {name}"
        assert func.__name__ in raw.__all__
    # Every request number this build knows is covered by name.
    assert set(REQUEST_NAMES.values()) <= set(raw.BY_REQUEST)


def test_each_function_issues_its_own_request(kernel: Kernel) -> None:
    rec = Recorder(kernel)
    fd = rec.open("/dev/bpf", os.O_RDWR)
    try:
        raw.get_blen(rec, fd)
        raw.set_immediate(rec, fd, True)
        raw.get_stats(rec, fd)
        raw.nread(rec, fd)
        raw.set_cloexec(rec, fd)
    finally:
        rec.close(fd)
    assert [c[1] for c in rec.calls if c[0] == "ioctl"] == [
        lib.BIOCGBLEN, lib.BIOCIMMEDIATE, lib.BIOCGSTATS, lib.FIONREAD, lib.FIOCLEX]


def test_buffered_descriptor_round_trip(kernel: Kernel, fd: int) -> None:
    assert raw.get_bufmode(kernel, fd) == lib.BPF_BUFMODE_BUFFER
    assert raw.set_blen(kernel, fd, 10) == lib.BPF_MINBUFSIZE  # the kernel's clamp comes back
    assert raw.set_blen(kernel, fd, 8192) == 8192
    assert raw.get_blen(kernel, fd) == 8192
    insns = raw.set_filter(kernel, fd, [(RET_K, 0, 0, 96)])
    assert insns == ((RET_K, 0, 0, 96),)
    raw.set_if(kernel, fd, "multi0")
    assert raw.get_if(kernel, fd) == "multi0"
    assert raw.get_dlt(kernel, fd) == lib.DLT_EN10MB
    assert raw.get_dltlist(kernel, fd) == [lib.DLT_EN10MB, lib.DLT_RAW]
    raw.set_dlt(kernel, fd, lib.DLT_RAW)
    assert raw.get_dlt(kernel, fd) == lib.DLT_RAW
    assert raw.get_version(kernel, fd) == BpfVersion(lib.BPF_MAJOR_VERSION,
                                                     lib.BPF_MINOR_VERSION)
    assert raw.get_stats(kernel, fd) == BpfStat(0, 0)
    raw.promisc(kernel, fd)
    raw.flush(kernel, fd)


def test_options_read_back(kernel: Kernel, fd: int) -> None:
    raw.set_hdrcmplt(kernel, fd, True)
    assert raw.get_hdrcmplt(kernel, fd) is True
    raw.set_direction(kernel, fd, lib.BPF_D_OUT)
    assert raw.get_direction(kernel, fd) == lib.BPF_D_OUT
    raw.set_tstamp(kernel, fd, lib.BPF_T_NANOTIME)
    assert raw.get_tstamp(kernel, fd) == lib.BPF_T_NANOTIME
    raw.set_rtimeout(kernel, fd, 1, 500_000)
    assert raw.get_rtimeout(kernel, fd) == (1, 500_000)
    raw.set_rtimeout(kernel, fd, 0, 0)
    assert raw.get_rtimeout(kernel, fd) == (0, 0)
    raw.set_rsig(kernel, fd, 30)
    assert raw.get_rsig(kernel, fd) == 30
    raw.set_owner(kernel, fd, os.getpid())
    assert raw.get_owner(kernel, fd) == os.getpid()
    raw.set_nonblocking(kernel, fd, True)
    raw.set_feedback(kernel, fd, True)
    raw.set_async(kernel, fd, False)
    raw.clear_cloexec(kernel, fd)
    raw.set_vlanpcp(kernel, fd, 7)
    with pytest.raises(InvalidArgument):
        raw.set_vlanpcp(kernel, fd, 8)  # BPF_PRIO_MAX is 7


def test_results_are_plain_values(kernel: Kernel, fd: int) -> None:
    raw.set_if(kernel, fd, "em0")
    kernel.inject("em0", ether_frame(1))
    results = [raw.get_blen(kernel, fd), raw.get_if(kernel, fd), raw.get_dltlist(kernel, fd),
               raw.get_stats(kernel, fd), raw.get_version(kernel, fd),
               raw.get_rtimeout(kernel, fd), raw.get_hdrcmplt(kernel, fd),
               raw.nread(kernel, fd), raw.get_owner(kernel, fd), raw.get_pgrp(kernel, fd)]
    assert all(_plain(r) for r in results), results
    assert raw.nread(kernel, fd) > 0  # the frame is buffered


def test_zero_copy_buffers_by_object_and_by_address(kernel: Kernel) -> None:
    raw.sysctl_int(kernel, "net.bpf.zerocopy_enable", 1)
    maps = [mmap.mmap(-1, 2 * PAGE) for _ in range(4)]
    fds = []
    try:
        for bufs in (maps[:2], maps[2:]):
            fd = kernel.open("/dev/bpf", os.O_RDWR)
            fds.append(fd)
            raw.set_bufmode(kernel, fd, lib.BPF_BUFMODE_ZBUF)
            assert raw.get_zmax(kernel, fd) >= 2 * PAGE
            if bufs is maps[:2]:
                raw.set_zbuf(kernel, fd, bufs[0], bufs[1], 2 * PAGE)
            else:
                addrs = [int(ffi.cast("uintptr_t", ffi.from_buffer(m))) for m in bufs]
                raw.set_zbuf(kernel, fd, addrs[0], addrs[1], 2 * PAGE)
            assert raw.get_blen(kernel, fd) == 2 * PAGE - 32
            raw.set_if(kernel, fd, "em0")
        kernel.inject("em0", ether_frame(3))
        bufa, bufb, length = raw.rot_zbuf(kernel, fds[0])
        assert bufa == int(ffi.cast("uintptr_t", ffi.from_buffer(maps[0])))
        assert bufb == 0
        assert length > 0
        assert raw.rot_zbuf(kernel, fds[0]) == (0, 0, 0)  # nothing more to hand over
    finally:
        for fd in fds:
            kernel.close(fd)
        for m in maps:
            m.close()


def test_set_zbuf_keeps_no_export_of_the_buffers(kernel: Kernel) -> None:
    fd = kernel.open("/dev/bpf", os.O_RDWR)
    a, b = mmap.mmap(-1, PAGE), mmap.mmap(-1, PAGE)
    try:
        with pytest.raises(BPFError) as info:  # buffered mode: the kernel refuses
            raw.set_zbuf(kernel, fd, a, b, PAGE)
    finally:
        kernel.close(fd)
    # The error's traceback is still alive: nothing in it may pin the maps.
    assert info.value.op == "BIOCSETZBUF"
    a.close()  # BufferError if an export of the mmap were still held
    b.close()


def test_zero_copy_buffer_must_be_an_address_or_writable(kernel: Kernel, fd: int) -> None:
    with pytest.raises(InvalidArgument, match=r"BIOCSETZBUF.*writable buffer") as info:
        raw.set_zbuf(kernel, fd, b"read-only", 0, PAGE)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(InvalidArgument, match="does not fit a C pointer"):
        raw.set_zbuf(kernel, fd, -1, 0, PAGE)


@pytest.mark.parametrize(("call", "args", "text"), [
    (raw.set_blen, (-1,), "BIOCSBLEN: .*-1 does not fit a C u_int"),
    (raw.set_blen, (2**32,), "does not fit a C u_int"),
    (raw.set_owner, (2**31,), "FIOSETOWN: .*does not fit a C int"),
    (raw.set_rtimeout, (0, 2**31), "BIOCSRTIMEOUT: .*suseconds_t"),
    (raw.set_blen, ("4096",), "BIOCSBLEN: .*must be an int, not str"),
])
def test_values_c_cannot_hold_are_refused_before_the_call(
        rec: Recorder, call: Any, args: tuple[Any, ...], text: str) -> None:
    fd = rec.open("/dev/bpf", os.O_RDWR)
    try:
        with pytest.raises(InvalidArgument, match=text) as info:
            call(rec, fd, *args)
        assert info.value.errno == errno.EINVAL
        assert not [c for c in rec.calls if c[0] == "ioctl"]
    finally:
        rec.close(fd)


def test_filters_accept_tuples_and_instruction_objects(kernel: Kernel, fd: int) -> None:
    class Insn:
        code, jt, jf, k = RET_K, 0, 0, 64

    assert raw.set_filter_nr(kernel, fd, [Insn()]) == ((RET_K, 0, 0, 64),)
    assert raw.set_write_filter(kernel, fd, None) == ()
    with pytest.raises(InvalidFilter, match=r"BIOCSETF.*Instruction 1 \(6, 256, 0, 0\)"):
        raw.set_filter(kernel, fd, [(RET_K, 0, 0, 1), (RET_K, 256, 0, 0)])


def test_interface_names_are_checked_and_errors_keep_the_errno(kernel: Kernel, fd: int) -> None:
    with pytest.raises(InvalidArgument, match="at most 15 bytes") as info:
        raw.set_if(kernel, fd, "x" * 16)
    assert info.value.ifname == "x" * 16
    with pytest.raises(InterfaceNotFound) as nf:
        raw.set_if(kernel, fd, "nope0")
    assert nf.value.errno == errno.ENXIO
    with pytest.raises(InvalidArgument) as unattached:
        raw.get_if(kernel, fd)
    assert unattached.value.errno == errno.EINVAL


def test_requests_the_headers_lack_are_unsupported(
        rec: Recorder, fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raw, "HAS_BIOCGETIFLIST", False)
    monkeypatch.setattr(raw, "HAS_BIOCSETVLANPCP", False)
    with pytest.raises(UnsupportedError, match="BIOCSETVLANPCP"):
        raw.set_vlanpcp(rec, fd, 3)
    with pytest.raises(UnsupportedError, match="BIOCGETIFLIST") as info:
        raw.get_iflist(rec, fd)
    assert info.value.errno == errno.ENOTTY
    assert rec.calls == []  # refused before any system call


# -- int sysctls ------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, -1, 524288, 2**31 - 1, -(2**31)])
def test_int_codec_is_the_hosts_byte_order(value: int) -> None:
    data = raw.encode_int("net.bpf.bufsize", value)
    assert data == value.to_bytes(4, sys.byteorder, signed=True)
    assert raw.decode_int("net.bpf.bufsize", data) == value


def test_int_codec_is_not_little_endian_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "byteorder", "big")
    assert raw.encode_int("x", 1) == b"\0\0\0\1"
    assert raw.decode_int("x", b"\0\0\1\0") == 256


@pytest.mark.parametrize("data", [b"", b"\1", b"\1\2\3", b"\0" * 8])
def test_a_value_that_is_not_four_bytes_is_not_an_int(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match=f"sysctl net.bpf.stats: .* not an int sysctl: "
                                              f"its value is {len(data)} bytes"):
        raw.decode_int("net.bpf.stats", data)


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1])
def test_int_sysctl_range(value: int) -> None:
    with pytest.raises(InvalidArgument, match=r"sysctl net\.bpf\.bufsize.*does not fit a C int"):
        raw.encode_int("net.bpf.bufsize", value)


def test_sysctl_int_reads_and_writes(kernel: Kernel) -> None:
    assert raw.sysctl_int(kernel, "net.bpf.bufsize") == 4096
    assert raw.sysctl_int(kernel, "net.bpf.bufsize", 8192) == 4096  # the old value
    assert raw.sysctl_int(kernel, "net.bpf.bufsize") == 8192
    assert kernel.sysctlbyname("net.bpf.bufsize") == (8192).to_bytes(4, sys.byteorder)
    with pytest.raises(SysctlNotFound):
        raw.sysctl_int(kernel, "net.bpf.nope")
    assert raw.sysctl_bytes(kernel, "net.bpf.stats") == b""  # nothing attached


@pytest.mark.parametrize("call", [
    lambda host: host.sysctlbyname("net.bpf.maxinsns\0junk"),
    lambda host: host.open("/dev/bpf\0junk", os.O_RDWR),
])
def test_host_system_refuses_names_c_would_cut_short(call: Any) -> None:
    """The seam never hands C a name with a NUL in it: C would act on the name
    before the NUL (another sysctl, another file).  Checked before libc is
    called, so it holds off FreeBSD too."""
    host = object.__new__(HostSystem)  # HostSystem() itself refuses other hosts
    with pytest.raises(BPFError) as info:
        call(host)
    assert info.value.errno == errno.ENOENT
    assert "contains a NUL character" in str(info.value)
