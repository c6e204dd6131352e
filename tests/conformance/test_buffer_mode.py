"""Buffer modes and buffer sizes: BIOCGETBUFMODE/BIOCSETBUFMODE, BIOCSBLEN/BIOCGBLEN.

Oracle: spec §e (initial state, buffer-mode lifecycle, per-ioctl rules),
§d (net.bpf.bufsize/maxbufsize/zerocopy_enable) and Appendix A rows 1-3 and 6.
"""

from __future__ import annotations

import signal

import pytest

from bsdbpf._native import ffi, lib
from bsdbpf.errors import (
    InterfaceNotFound,
    InvalidArgument,
    InvalidStateError,
    WrongBufferMode,
)

from .helpers import PAGE, raises

BUFFER, ZBUF = lib.BPF_BUFMODE_BUFFER, lib.BPF_BUFMODE_ZBUF


def test_initial_state(bpf):
    """§e Opening, "Initial state of a new descriptor": BUFFER mode, bufsize from
    net.bpf.bufsize (4096), no timeout, INOUT, MICROTIME, hdrcmplt 0, SIGIO, no counts."""
    fd = bpf.open()
    assert bpf.get_uint(fd, lib.BIOCGETBUFMODE) == BUFFER
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == 4096
    assert bpf.gtimeout(fd) == (0, 0)
    assert bpf.get_uint(fd, lib.BIOCGDIRECTION) == lib.BPF_D_INOUT
    assert bpf.get_uint(fd, lib.BIOCGTSTAMP) == lib.BPF_T_MICROTIME
    assert bpf.get_uint(fd, lib.BIOCGHDRCMPLT) == 0
    # The spec's 23 is FreeBSD's SIGIO; a simulator on another OS keeps the
    # host's constant of the same name, as it does for errno values.
    assert bpf.get_uint(fd, lib.BIOCGRSIG) == signal.SIGIO
    assert bpf.gstats(fd) == (0, 0)
    assert bpf.fionread(fd) == 0


def test_setbufmode_zbuf_needs_zerocopy_enable(bpf, sysctl):
    """Appendix A row 1: BIOCSETBUFMODE(2) with net.bpf.zerocopy_enable = 0 → EINVAL."""
    sysctl.set("net.bpf.zerocopy_enable", 0)
    fd = bpf.open()
    with raises(InvalidArgument, "EINVAL"):
        bpf.set_uint(fd, lib.BIOCSETBUFMODE, ZBUF)
    assert bpf.get_uint(fd, lib.BIOCGETBUFMODE) == BUFFER


@pytest.mark.parametrize("mode", [0, 3, 0x102, 0xFFFFFFFF])
def test_setbufmode_unknown_mode(bpf, zerocopy, mode):
    """Appendix A row 2: BIOCSETBUFMODE(v) with v ∉ {1, 2} → EINVAL."""
    fd = bpf.open()
    with raises(InvalidArgument, "EINVAL"):
        bpf.set_uint(fd, lib.BIOCSETBUFMODE, mode)
    assert bpf.get_uint(fd, lib.BIOCGETBUFMODE) == BUFFER


def test_setbufmode_value_checked_before_busy(bpf, zerocopy):
    """§e BIOCSETBUFMODE: the value check comes first, so a bad mode on a busy
    descriptor is EINVAL, not EBUSY."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSBLEN, 8192)
    with raises(InvalidArgument, "EINVAL"):
        bpf.set_uint(fd, lib.BIOCSETBUFMODE, 3)


def _after_sblen(bpf, ifname):
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSBLEN, 8192)
    return fd


def _after_setzbuf(bpf, ifname):
    fd, _, _ = bpf.zbuf_descriptor()
    return fd


def _after_failed_setif(bpf, ifname):
    fd = bpf.open()
    with raises(InterfaceNotFound, "ENXIO"):
        bpf.attach(fd, "nosuch9")
    return fd


def _attached_buffer(bpf, ifname):
    fd = bpf.open()
    bpf.attach(fd, ifname)
    return fd


def _attached_zbuf(bpf, ifname):
    fd, _, _ = bpf.zbuf_descriptor(ifname)
    return fd


@pytest.mark.parametrize("mode", [BUFFER, ZBUF], ids=["to-BUFFER", "to-ZBUF"])
@pytest.mark.parametrize("state", [_after_sblen, _after_setzbuf, _after_failed_setif,
                                   _attached_buffer, _attached_zbuf],
                         ids=["after-BIOCSBLEN", "after-BIOCSETZBUF", "after-failed-BIOCSETIF",
                              "attached-BUFFER", "attached-ZBUF"])
def test_setbufmode_busy(bpf, zerocopy, ifname, state, mode):
    """Appendix A row 3: BIOCSETBUFMODE(any valid) after BIOCSBLEN / BIOCSETZBUF /
    a BIOCSETIF attempt that allocated buffers / while attached → EBUSY (even
    when the value equals the current mode)."""
    fd = state(bpf, ifname)
    before = bpf.get_uint(fd, lib.BIOCGETBUFMODE)
    with raises(InvalidStateError, "EBUSY"):
        bpf.set_uint(fd, lib.BIOCSETBUFMODE, mode)
    assert bpf.get_uint(fd, lib.BIOCGETBUFMODE) == before


def test_failed_setif_allocates_and_freezes_mode(bpf, zerocopy):
    """§e BIOCSETIF: in BUFFER mode the buffers are allocated before the lookup, so
    even an unknown name (ENXIO) makes a later BIOCSETBUFMODE fail with EBUSY."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSETBUFMODE, BUFFER)  # nothing allocated yet: fine
    with raises(InterfaceNotFound, "ENXIO"):
        bpf.attach(fd, "nosuch9")
    with raises(InvalidStateError, "EBUSY"):
        bpf.set_uint(fd, lib.BIOCSETBUFMODE, ZBUF)


def test_setbufmode_round_trip_before_buffers(bpf, zerocopy):
    """§e lifecycle diagram: with nothing allocated or attached the mode can be
    switched to ZBUF and back to BUFFER; BIOCGETBUFMODE reports it."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSETBUFMODE, ZBUF)
    assert bpf.get_uint(fd, lib.BIOCGETBUFMODE) == ZBUF
    bpf.set_uint(fd, lib.BIOCSETBUFMODE, BUFFER)
    assert bpf.get_uint(fd, lib.BIOCGETBUFMODE) == BUFFER


def test_zerocopy_enable_only_consulted_at_setbufmode(bpf, sysctl, ifname):
    """§d net.bpf.zerocopy_enable: consulted only inside BIOCSETBUFMODE(ZBUF);
    turning it off later does not affect a descriptor already in ZBUF mode."""
    sysctl.set("net.bpf.zerocopy_enable", 1)
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSETBUFMODE, ZBUF)
    sysctl.set("net.bpf.zerocopy_enable", 0)
    a, b = bpf.zbuf(), bpf.zbuf()
    bpf.setzbuf(fd, a, b, PAGE)
    bpf.attach(fd, ifname)
    assert bpf.get_uint(fd, lib.BIOCGETBUFMODE) == ZBUF


# -- BIOCSBLEN / BIOCGBLEN -------------------------------------------------------------

@pytest.mark.parametrize(("asked", "granted"), [
    (0, 32), (1, 32), (31, 32), (32, 32), (100, 100), (8192, 8192),
    (524288, 524288), (524289, 524288), (10_000_000, 524288), (0x7FFFFFFF, 524288),
    (0x80000000, 524288), (0xFFFFFFFF, 524288),
])
def test_sblen_clamps_and_copies_out(bpf, asked, granted):
    """§e BIOCSBLEN: n > maxbufsize → maxbufsize, n < 32 → 32 (BPF_MINBUFSIZE); the
    clamped value is written back and BIOCGBLEN reports it."""
    fd = bpf.open()
    assert bpf.set_uint(fd, lib.BIOCSBLEN, asked) == granted
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == granted


def test_sblen_clamps_to_maxbufsize_sysctl(bpf, sysctl):
    """§d net.bpf.maxbufsize: the upper clamp of BIOCSBLEN follows the sysctl."""
    sysctl.set("net.bpf.maxbufsize", 65536)
    fd = bpf.open()
    assert bpf.set_uint(fd, lib.BIOCSBLEN, 100_000) == 65536
    assert bpf.set_uint(fd, lib.BIOCSBLEN, 65536) == 65536


def test_sblen_after_attach_einval_no_copyout(bpf, ifname):
    """§e BIOCSBLEN / §i: after attach → EINVAL; the caller's u_int is not updated
    (no copy-out on error, although the kernel clamped its private copy)."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    size = bpf.get_uint(fd, lib.BIOCGBLEN)
    arg = ffi.new("u_int *", 10)  # would be clamped to 32 on success
    with raises(InvalidStateError, "EINVAL"):
        bpf.ioctl(fd, lib.BIOCSBLEN, arg)
    assert arg[0] == 10
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == size


def test_sblen_in_zbuf_mode(bpf, zerocopy):
    """Appendix A row 6: BIOCSBLEN in ZBUF mode → EOPNOTSUPP (before and after
    BIOCSETZBUF), value not copied out."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSETBUFMODE, ZBUF)
    arg = ffi.new("u_int *", 10)
    with raises(WrongBufferMode, "EOPNOTSUPP"):
        bpf.ioctl(fd, lib.BIOCSBLEN, arg)
    assert arg[0] == 10
    a, b = bpf.zbuf(), bpf.zbuf()
    bpf.setzbuf(fd, a, b, PAGE)
    with raises(WrongBufferMode, "EOPNOTSUPP"):
        bpf.set_uint(fd, lib.BIOCSBLEN, 8192)


@pytest.mark.parametrize("bufsize", [10, 100, 4096, 600_000, -1])
def test_gblen_reports_bufsize_sysctl_verbatim(bpf, sysctl, bufsize):
    """§d net.bpf.bufsize: copied into each descriptor at open, not clamped then,
    so BIOCGBLEN reports it verbatim (as the u_int bd_bufsize)."""
    sysctl.set("net.bpf.bufsize", bufsize)
    fd = bpf.open()
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == bufsize & 0xFFFFFFFF


@pytest.mark.parametrize(("bufsize", "allocated"), [
    (10, 32), (100, 100), (600_000, 524288), (-1, 524288),
])
def test_setif_allocates_clamped_bufsize(bpf, sysctl, ifname, bufsize, allocated):
    """§d net.bpf.bufsize: used to allocate the buffers at BIOCSETIF when BIOCSBLEN
    was never called, clamped to [32, maxbufsize] at that point."""
    sysctl.set("net.bpf.bufsize", bufsize)
    fd = bpf.open()
    bpf.attach(fd, ifname)
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == allocated


def test_setif_keeps_sblen_size(bpf, ifname):
    """§e BIOCSETIF: buffers are allocated only when there are none; a size set
    with BIOCSBLEN survives the attach."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSBLEN, 1000)
    bpf.attach(fd, ifname)
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == 1000


def test_gblen_in_zbuf_mode(bpf, zerocopy):
    """§e BIOCGBLEN: in ZBUF mode before BIOCSETZBUF the value from open (4096 by
    default), after it buflen - 32."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSETBUFMODE, ZBUF)
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == 4096
    a, b = bpf.zbuf(2 * PAGE), bpf.zbuf(2 * PAGE)
    bpf.setzbuf(fd, a, b, 2 * PAGE)
    assert bpf.get_uint(fd, lib.BIOCGBLEN) == 2 * PAGE - 32


def test_failed_setif_in_zbuf_mode_allocates_nothing(bpf, zerocopy, ifname):
    """Appendix A row 3 ("any BIOCSETIF attempt that allocated buffers"): in ZBUF mode
    a failed BIOCSETIF (EINVAL without buffers, ENXIO) allocates nothing, so the
    mode can still be changed."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSETBUFMODE, ZBUF)
    with raises(InvalidStateError, "EINVAL"):
        bpf.attach(fd, ifname)
    with raises(InterfaceNotFound, "ENXIO"):
        bpf.attach(fd, "nosuch9")
    bpf.set_uint(fd, lib.BIOCSETBUFMODE, BUFFER)
    assert bpf.get_uint(fd, lib.BIOCGETBUFMODE) == BUFFER
