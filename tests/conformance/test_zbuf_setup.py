"""Zero-copy set-up: BIOCGETZMAX, BIOCSETZBUF, BIOCSETIF and read(2) in ZBUF mode.

Oracle: Appendix A rows 4-5 and 7-17 and 20, spec §e (BIOCGETZMAX, BIOCSETZBUF,
BIOCSETIF, read(2)) and §i.
"""

from __future__ import annotations

import ctypes
import mmap

import pytest

from bsdbpf._native import ffi, lib
from bsdbpf.errors import (
    BadAddress,
    DescriptorLocked,
    InterfaceNotFound,
    InvalidArgument,
    InvalidBuffer,
    InvalidStateError,
    SimulatedPanic,
    WrongBufferMode,
)

from .helpers import (
    IFACE_DEPARTURE,
    PAGE,
    WOULD_PANIC,
    ZHDR,
    ZMAX,
    eth_frame,
    raises,
    stats_records,
)

ZBUF = lib.BPF_BUFMODE_ZBUF


def zbuf_mode(bpf):
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSETBUFMODE, ZBUF)
    return fd


def test_getzmax(bpf, zerocopy):
    """§e BIOCGETZMAX: in ZBUF mode writes a size_t 2097152 (512 pages), even
    before BIOCSETZBUF."""
    fd = zbuf_mode(bpf)
    zmax = ffi.new("size_t *", 7)
    bpf.ioctl(fd, lib.BIOCGETZMAX, zmax)
    assert zmax[0] == ZMAX == 2097152


def test_zero_copy_requests_in_buffer_mode(bpf):
    """Appendix A row 5: BIOCGETZMAX, BIOCSETZBUF or BIOCROTZBUF in BUFFER mode →
    EOPNOTSUPP, and nothing is copied out."""
    fd = bpf.open()
    zmax = ffi.new("size_t *", 7)
    with raises(WrongBufferMode, "EOPNOTSUPP"):
        bpf.ioctl(fd, lib.BIOCGETZMAX, zmax)
    assert zmax[0] == 7
    a, b = bpf.zbuf(), bpf.zbuf()
    with raises(WrongBufferMode, "EOPNOTSUPP"):
        bpf.setzbuf(fd, a, b, PAGE)
    bz = ffi.new("struct bpf_zbuf *")
    bz.bz_bufa, bz.bz_bufb, bz.bz_buflen = ffi.cast("void *", 8), ffi.cast("void *", 16), 24
    with raises(WrongBufferMode, "EOPNOTSUPP"):
        bpf.ioctl(fd, lib.BIOCROTZBUF, bz)
    assert (int(ffi.cast("uintptr_t", bz.bz_bufa)), bz.bz_buflen) == (8, 24)


def test_setzbuf_checks_mode_first(bpf):
    """§e BIOCSETZBUF: mode ≠ ZBUF → EOPNOTSUPP comes before the argument checks."""
    fd = bpf.open()
    with raises(WrongBufferMode, "EOPNOTSUPP"):
        bpf.setzbuf(fd, ffi.NULL, ffi.NULL, 0)


@pytest.mark.parametrize("which", ["bufa", "bufb", "both"])
def test_setzbuf_null_buffer(bpf, zerocopy, which):
    """Appendix A row 7: BIOCSETZBUF with bz_bufa or bz_bufb NULL → EINVAL."""
    fd = zbuf_mode(bpf)
    a, b = bpf.zbuf(), bpf.zbuf()
    with raises(InvalidBuffer, "EINVAL"):
        bpf.setzbuf(fd, ffi.NULL if which in ("bufa", "both") else a,
                    ffi.NULL if which in ("bufb", "both") else b, PAGE)
    bpf.setzbuf(fd, a, b, PAGE)  # nothing was installed by the failures


def test_setzbuf_zero_length(bpf, zerocopy):
    """Appendix A row 8: BIOCSETZBUF with bz_buflen 0 → EINVAL."""
    fd = zbuf_mode(bpf)
    a, b = bpf.zbuf(), bpf.zbuf()
    with raises(InvalidBuffer, "EINVAL"):
        bpf.setzbuf(fd, a, b, 0)


@pytest.mark.parametrize("which", ["bufa", "bufb"])
@pytest.mark.parametrize("offset", [1, 8, 2048])
def test_setzbuf_unaligned(bpf, zerocopy, which, offset):
    """Appendix A row 9: BIOCSETZBUF with a non page-aligned address → EINVAL."""
    fd = zbuf_mode(bpf)
    a, b = bpf.zbuf(2 * PAGE), bpf.zbuf(2 * PAGE)
    pa = a.ptr + (offset if which == "bufa" else 0)
    pb = b.ptr + (offset if which == "bufb" else 0)
    with raises(InvalidBuffer, "EINVAL"):
        bpf.setzbuf(fd, ffi.cast("void *", pa), ffi.cast("void *", pb), PAGE)


@pytest.mark.parametrize("buflen", [1, 32, 100, PAGE - 1, PAGE + 1, PAGE + 32, 3 * PAGE // 2])
def test_setzbuf_length_not_page_multiple(bpf, zerocopy, buflen):
    """Appendix A row 10: BIOCSETZBUF with bz_buflen not a multiple of 4096 → EINVAL."""
    fd = zbuf_mode(bpf)
    a, b = bpf.zbuf(2 * PAGE), bpf.zbuf(2 * PAGE)
    with raises(InvalidBuffer, "EINVAL"):
        bpf.setzbuf(fd, a, b, buflen)


def test_setzbuf_too_long(bpf, zerocopy):
    """Appendix A row 11: bz_buflen > 2097152 (512 pages) → EINVAL; the size is
    checked before the pages are wired, so a short mapping still gives EINVAL."""
    fd = zbuf_mode(bpf)
    a, b = bpf.zbuf(), bpf.zbuf()
    with raises(InvalidBuffer, "EINVAL"):
        bpf.setzbuf(fd, a, b, ZMAX + PAGE)


def test_setzbuf_maximum_length(bpf, zerocopy):
    """§e BIOCSETZBUF: the largest legal buflen is 2097152 (= BIOCGETZMAX);
    bufsize becomes buflen - 32."""
    fd = zbuf_mode(bpf)
    a, b = bpf.zbuf(ZMAX), bpf.zbuf(ZMAX)
    bpf.setzbuf(fd, a, b, ZMAX)
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == ZMAX - ZHDR


def test_setzbuf_read_only_memory(bpf, zerocopy):
    """Appendix A row 12: BIOCSETZBUF with read-only memory → EFAULT."""
    fd = zbuf_mode(bpf)
    a = bpf.zbuf()
    ro = bpf.zbuf(PAGE, prot=mmap.PROT_READ)
    with raises(BadAddress, "EFAULT"):
        bpf.setzbuf(fd, a, ro, PAGE)
    with raises(BadAddress, "EFAULT"):
        bpf.setzbuf(fd, ro, a, PAGE)


def test_setzbuf_unmapped_memory(bpf, zerocopy):
    """Appendix A row 12: BIOCSETZBUF with memory not (wholly) mapped readable and
    writable → EFAULT: here the buffer's second page is a PROT_NONE guard page."""
    fd = zbuf_mode(bpf)
    a = bpf.zbuf(2 * PAGE)
    guard = bpf.zbuf(2 * PAGE)
    # Make the second page of `guard` inaccessible; the first stays read-write.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(guard.address + PAGE, PAGE, 0) == 0
    with raises(BadAddress, "EFAULT"):
        bpf.setzbuf(fd, a, guard, 2 * PAGE)


def test_setzbuf_twice(bpf, zerocopy):
    """Appendix A row 13: BIOCSETZBUF a second time → EINVAL."""
    fd, _, _ = bpf.zbuf_descriptor()
    c, d = bpf.zbuf(), bpf.zbuf()
    with raises(InvalidBuffer, "EINVAL"):
        bpf.setzbuf(fd, c, d, PAGE)


def test_setzbuf_after_setif(bpf, zerocopy, ifname):
    """Appendix A row 13: BIOCSETZBUF after BIOCSETIF → EINVAL."""
    fd, _, _ = bpf.zbuf_descriptor(ifname)
    c, d = bpf.zbuf(), bpf.zbuf()
    with raises(InvalidBuffer, "EINVAL"):
        bpf.setzbuf(fd, c, d, PAGE)


def test_setzbuf_twice_address_checks_first(bpf, zerocopy):
    """Appendix A row 13 "(after the address checks)" / §e BIOCSETZBUF: on an
    already-configured descriptor a bad address still gives EFAULT, not EINVAL."""
    fd, a, _ = bpf.zbuf_descriptor()
    ro = bpf.zbuf(PAGE, prot=mmap.PROT_READ)
    with raises(BadAddress, "EFAULT"):
        bpf.setzbuf(fd, a, ro, PAGE)


def test_setzbuf_zeroes_headers(bpf, zerocopy):
    """§e BIOCSETZBUF: on success both 32-byte headers are zeroed by the kernel;
    bd_bufsize = buflen - 32."""
    fd = zbuf_mode(bpf)
    a, b = bpf.zbuf(2 * PAGE), bpf.zbuf(2 * PAGE)
    a.map[:ZHDR] = b"\xab" * ZHDR
    b.map[:ZHDR] = b"\xcd" * ZHDR
    bpf.setzbuf(fd, a, b, 2 * PAGE)
    assert a.header_bytes() == b"\0" * ZHDR
    assert b.header_bytes() == b"\0" * ZHDR
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == 2 * PAGE - ZHDR


def test_setzbuf_same_buffer_twice_allowed(bpf, zerocopy):
    """§e BIOCSETZBUF "Not checked: bufa ≠ bufb, overlap": the same pages may be
    given as both buffers."""
    fd = zbuf_mode(bpf)
    a = bpf.zbuf()
    bpf.setzbuf(fd, a, a, PAGE)
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == PAGE - ZHDR


def test_setif_zbuf_without_buffers(bpf, zerocopy, ifname):
    """Appendix A row 14: BIOCSETIF in ZBUF mode without BIOCSETZBUF (existing
    interface) → EINVAL."""
    fd = zbuf_mode(bpf)
    with raises(InvalidStateError, "EINVAL"):
        bpf.attach(fd, ifname)
    ifr = ffi.new("struct ifreq *")
    with raises(InvalidArgument, "EINVAL"):
        bpf.ioctl(fd, lib.BIOCGETIF, ifr)  # not attached


def test_setif_unknown_takes_precedence_in_zbuf_mode(bpf, zerocopy):
    """Appendix A row 15 / §e BIOCSETIF: a name that is not a BPF tap → ENXIO,
    even in ZBUF mode without buffers (the lookup comes first)."""
    fd = zbuf_mode(bpf)
    with raises(InterfaceNotFound, "ENXIO"):
        bpf.attach(fd, "nosuch9")


def test_setif_unknown_buffer_mode(bpf):
    """§e BIOCSETIF: lookup by ifr_name → no such interface → ENXIO."""
    fd = bpf.open()
    with raises(InterfaceNotFound, "ENXIO"):
        bpf.attach(fd, "nosuch9")


@pytest.mark.parametrize("delta", [-1, 1, -32, 32, -4000])
def test_read_zbuf_wrong_length(bpf, zerocopy, ifname, delta):
    """Appendix A row 16: read(2) in ZBUF mode with length ≠ buflen - 32 → EINVAL."""
    fd, _, _ = bpf.zbuf_descriptor(ifname)
    with raises(InvalidArgument, "EINVAL"):
        bpf.read(fd, PAGE - ZHDR + delta)


def test_read_zbuf_right_length(bpf, zerocopy, ifname):
    """Appendix A row 17: read(2) in ZBUF mode with length = buflen - 32 → EOPNOTSUPP."""
    fd, _, _ = bpf.zbuf_descriptor(ifname)
    with raises(WrongBufferMode, "EOPNOTSUPP"):
        bpf.read(fd, PAGE - ZHDR)


def test_read_zbuf_before_setzbuf(bpf, zerocopy):
    """§e read(2): size first (bufsize is still 4096 from open), then the mode."""
    fd = zbuf_mode(bpf)
    with raises(InvalidArgument, "EINVAL"):
        bpf.read(fd, PAGE - ZHDR)
    with raises(WrongBufferMode, "EOPNOTSUPP"):
        bpf.read(fd, PAGE)


# -- BIOCLOCK and zero-copy ------------------------------------------------------------

def test_locked_refuses_zero_copy_setup(bpf, zerocopy):
    """Appendix A row 4: BIOCSETBUFMODE / BIOCSETZBUF / BIOCGETZMAX on a BIOCLOCK'ed
    fd → EPERM."""
    fd = zbuf_mode(bpf)
    bpf.lock(fd)
    with raises(DescriptorLocked, "EPERM"):
        bpf.set_uint(fd, lib.BIOCSETBUFMODE, lib.BPF_BUFMODE_BUFFER)
    with raises(DescriptorLocked, "EPERM"):
        bpf.ioctl(fd, lib.BIOCGETZMAX, ffi.new("size_t *"))
    a, b = bpf.zbuf(), bpf.zbuf()
    with raises(DescriptorLocked, "EPERM"):
        bpf.setzbuf(fd, a, b, PAGE)


def test_locked_still_rotates(bpf, zerocopy, ifname, traffic):
    """Appendix A row 4: BIOCROTZBUF is still allowed on a locked descriptor (and
    does its work)."""
    fd, a, _ = bpf.zbuf_descriptor(ifname)
    bpf.lock(fd)
    assert bpf.rotzbuf(fd) == (0, 0, 0)
    traffic(ifname, eth_frame(60))
    assert bpf.rotzbuf(fd) == (a.address, 0, 26 + 60)


def test_locked_rotzbuf_allowed_without_traffic(bpf, zerocopy, ifname):
    """Appendix A row 4 (no traffic needed): BIOCROTZBUF on a locked ZBUF
    descriptor succeeds (nothing to rotate: all zero)."""
    fd, _, _ = bpf.zbuf_descriptor(ifname)
    bpf.lock(fd)
    assert bpf.rotzbuf(fd) == (0, 0, 0)


# -- requests that would panic FreeBSD ----------------------------------------------------

@WOULD_PANIC
def test_flush_before_setzbuf_would_panic(bpf, zerocopy):
    """Appendix A row 20 / §e BIOCFLUSH: in ZBUF mode before BIOCSETZBUF the kernel
    dereferences a NULL store buffer; the simulator raises SimulatedPanic."""
    fd = zbuf_mode(bpf)
    with pytest.raises(SimulatedPanic):
        bpf.flush(fd)


@WOULD_PANIC
def test_setf_before_setzbuf_would_panic(bpf, zerocopy):
    """Appendix A row 20 / §e BIOCSETF: same NULL dereference as BIOCFLUSH."""
    fd = zbuf_mode(bpf)
    with pytest.raises(SimulatedPanic):
        bpf.setf(fd, [(lib.BPF_RET | lib.BPF_K, 0, 0, 96)])


def test_setfnr_and_setwf_before_setzbuf_are_safe(bpf, zerocopy):
    """§e BIOCSETF*: only BIOCSETF resets (and so dereferences the store buffer);
    BIOCSETFNR and BIOCSETWF work in ZBUF mode before BIOCSETZBUF."""
    fd = zbuf_mode(bpf)
    bpf.setf(fd, [(lib.BPF_RET | lib.BPF_K, 0, 0, 96)], lib.BIOCSETFNR)
    bpf.setf(fd, [(lib.BPF_RET | lib.BPF_K, 0, 0, 96)], lib.BIOCSETWF)


def test_flush_and_setf_after_setzbuf(bpf, zerocopy):
    """§e BIOCFLUSH/BIOCSETF: once BIOCSETZBUF installed the buffers they work in
    ZBUF mode (no panic)."""
    fd, _, _ = bpf.zbuf_descriptor()
    bpf.flush(fd)
    bpf.setf(fd, [(lib.BPF_RET | lib.BPF_K, 0, 0, 96)])


# -- zbuf_setup runs before the final check ------------------------------------------------------

def test_setzbuf_second_time_zeroes_given_headers(bpf, zerocopy):
    """§e BIOCSETZBUF / §f zbuf_setup: the "already installed" EINVAL comes after
    both buffers were set up, and zbuf_setup zeroes each header — so the headers
    of the buffers passed to the refused call are zeroed."""
    fd, _, _ = bpf.zbuf_descriptor()
    c, d = bpf.zbuf(), bpf.zbuf()
    c.map[:ZHDR] = b"\xab" * ZHDR
    d.map[:ZHDR] = b"\xcd" * ZHDR
    with raises(InvalidBuffer, "EINVAL"):
        bpf.setzbuf(fd, c, d, PAGE)
    assert c.header_bytes() == d.header_bytes() == b"\0" * ZHDR


def test_setzbuf_fault_on_bufb_after_bufa_setup(bpf, zerocopy):
    """§e BIOCSETZBUF "for bufa then bufb" / §f zbuf_setup: bufa is set up (header
    zeroed) before bufb faults; the call fails with EFAULT."""
    fd = zbuf_mode(bpf)
    a = bpf.zbuf()
    a.map[:ZHDR] = b"\xab" * ZHDR
    ro = bpf.zbuf(PAGE, prot=mmap.PROT_READ)
    with raises(BadAddress, "EFAULT"):
        bpf.setzbuf(fd, a, ro, PAGE)
    assert a.header_bytes() == b"\0" * ZHDR


def test_setzbuf_unaligned_bufb_after_bufa_setup(bpf, zerocopy):
    """§e BIOCSETZBUF "for bufa then bufb" / §f zbuf_setup: bufb's alignment is checked
    only after bufa was set up, so bufa's header is zeroed although the call fails."""
    fd = zbuf_mode(bpf)
    a, b = bpf.zbuf(), bpf.zbuf(2 * PAGE)
    a.map[:ZHDR] = b"\xab" * ZHDR
    with raises(InvalidBuffer, "EINVAL"):
        bpf.setzbuf(fd, a, ffi.cast("void *", b.ptr + 8), PAGE)
    assert a.header_bytes() == b"\0" * ZHDR


def test_setzbuf_invalid_length_touches_nothing(bpf, zerocopy):
    """§e BIOCSETZBUF: the NULL / length / alignment checks come before any buffer is
    set up, so a refused call leaves the headers as they were."""
    fd = zbuf_mode(bpf)
    a, b = bpf.zbuf(2 * PAGE), bpf.zbuf(2 * PAGE)
    a.map[:ZHDR] = b"\xab" * ZHDR
    with raises(InvalidBuffer, "EINVAL"):
        bpf.setzbuf(fd, a, b, PAGE + 1)
    assert a.header_bytes() == b"\xab" * ZHDR


# -- interface departure ---------------------------------------------------------------------------

@IFACE_DEPARTURE
def test_departure_detaches(bpf, kernel, ifname):
    """§e Interface departure: BIOCGDLT / BIOCGETIF → EINVAL once the interface left;
    net.bpf.stats no longer lists the descriptor."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    kernel.remove_interface(ifname)
    with raises(InvalidArgument, "EINVAL"):
        bpf.get_uint(fd, lib.BIOCGDLT)
    with raises(InvalidArgument, "EINVAL"):
        bpf.ioctl(fd, lib.BIOCGETIF, ffi.new("struct ifreq *"))
    assert stats_records(kernel) == []
