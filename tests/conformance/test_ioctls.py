"""The per-ioctl rules of spec §e, the BIOCLOCK filter, and the generic layer (§b).

Oracle: §e "Per-ioctl rules" table and "BIOCLOCK filter", §b (unknown request
→ EINVAL, malformed encodings → ENOTTY, no copy-out on error), §c constants
and §i.
"""

from __future__ import annotations

import mmap
import os
import signal

import pytest
from conftest import kern_hz, timeout_read_back

from bsdbpf import raw
from bsdbpf._native import ffi, lib
from bsdbpf.errors import (
    BPFError,
    BufferTooSmall,
    DescriptorLocked,
    InvalidArgument,
    InvalidFilter,
    WouldBlock,
)

from .helpers import (
    ON_HOST,
    RET_K,
    program,
    raises,
    run_isolated,
    stats_record,
    stats_records,
)

VALID_TSTAMPS = [0x000, 0x001, 0x002, 0x003, 0x100, 0x101, 0x102,
                 0x200, 0x201, 0x202, 0x300, 0x301, 0x302]


def attached(bpf, ifname):
    fd = bpf.open()
    bpf.attach(fd, ifname)
    return fd


# -- informational requests ------------------------------------------------------------

def test_version(bpf):
    """§e BIOCVERSION / §c: always {1, 1} (BPF_MAJOR_VERSION, BPF_MINOR_VERSION)."""
    fd = bpf.open()
    v = ffi.new("struct bpf_version *")
    bpf.ioctl(fd, lib.BIOCVERSION, v)
    assert (v.bv_major, v.bv_minor) == (1, 1) == (lib.BPF_MAJOR_VERSION, lib.BPF_MINOR_VERSION)


def test_getif(bpf, ifname):
    """§e BIOCGETIF / §a struct ifreq: ifr_name = the interface's name; the rest of
    the 32 bytes come back zero (the generic layer zeroes an _IOR buffer)."""
    fd = attached(bpf, ifname)
    ifr = ffi.new("struct ifreq *")
    ffi.memmove(ifr, b"\xff" * ffi.sizeof("struct ifreq"), ffi.sizeof("struct ifreq"))
    bpf.ioctl(fd, lib.BIOCGETIF, ifr)
    raw = bytes(ffi.buffer(ifr))
    name = ifname.encode()
    assert raw == name + b"\0" * (ffi.sizeof("struct ifreq") - len(name))


def _getif(bpf, fd):
    bpf.ioctl(fd, lib.BIOCGETIF, ffi.new("struct ifreq *"))


def _gdlt(bpf, fd):
    bpf.get_uint(fd, lib.BIOCGDLT)


def _gdltlist(bpf, fd):
    bpf.ioctl(fd, lib.BIOCGDLTLIST, ffi.new("struct bpf_dltlist *"))


def _sdlt(bpf, fd):
    bpf.set_uint(fd, lib.BIOCSDLT, lib.DLT_EN10MB)


def _promisc(bpf, fd):
    bpf.promisc(fd)


@pytest.mark.parametrize("request_", [_getif, _gdlt, _gdltlist, _sdlt, _promisc],
                         ids=["BIOCGETIF", "BIOCGDLT", "BIOCGDLTLIST", "BIOCSDLT",
                              "BIOCPROMISC"])
def test_needs_attach(bpf, request_):
    """§i / §e: BIOCGETIF / BIOCGDLT / BIOCGDLTLIST / BIOCSDLT / BIOCPROMISC when
    not attached → EINVAL."""
    fd = bpf.open()
    with raises(InvalidArgument, "EINVAL"):
        request_(bpf, fd)


def test_gdlt(bpf, ifname, null_ifname):
    """§e BIOCGDLT: the DLT of the tap (Ethernet 1, FreeBSD's loopback DLT_NULL 0)."""
    assert bpf.get_uint(attached(bpf, ifname), lib.BIOCGDLT) == lib.DLT_EN10MB
    assert bpf.get_uint(attached(bpf, null_ifname), lib.BIOCGDLT) == lib.DLT_NULL


def test_gdltlist_null_list(bpf, multi_ifname):
    """§e BIOCGDLTLIST: bfl_list == NULL → returns the count in bfl_len."""
    fd = attached(bpf, multi_ifname)
    bfl = ffi.new("struct bpf_dltlist *")
    bfl.bfl_len = 0
    bpf.ioctl(fd, lib.BIOCGDLTLIST, bfl)
    assert bfl.bfl_len == 2


def test_gdltlist_too_small(bpf, multi_ifname):
    """§e BIOCGDLTLIST: count > bfl_len → ENOMEM; nothing copied out."""
    fd = attached(bpf, multi_ifname)
    lst = ffi.new("u_int[]", [77, 77])
    bfl = ffi.new("struct bpf_dltlist *")
    bfl.bfl_len, bfl.bfl_list = 1, lst
    with raises(BufferTooSmall, "ENOMEM"):
        bpf.ioctl(fd, lib.BIOCGDLTLIST, bfl)
    assert bfl.bfl_len == 1
    assert list(lst) == [77, 77]


def test_gdltlist_ok(bpf, multi_ifname, ifname):
    """§e BIOCGDLTLIST: fills the list, bfl_len = count (the order is the kernel's)."""
    fd = attached(bpf, multi_ifname)
    lst = ffi.new("u_int[]", [77, 77, 77, 77])
    bfl = ffi.new("struct bpf_dltlist *")
    bfl.bfl_len, bfl.bfl_list = 4, lst
    bpf.ioctl(fd, lib.BIOCGDLTLIST, bfl)
    assert bfl.bfl_len == 2
    assert sorted(lst[0:2]) == [lib.DLT_EN10MB, lib.DLT_RAW]
    assert list(lst[2:4]) == [77, 77]
    fd2 = attached(bpf, ifname)
    bfl.bfl_len = 4
    bpf.ioctl(fd2, lib.BIOCGDLTLIST, bfl)
    assert bfl.bfl_len == 1
    assert lst[0] == lib.DLT_EN10MB


def test_sdlt_offered(bpf, multi_ifname):
    """§e BIOCSDLT: a DLT this interface offers → re-attach to that tap."""
    fd = attached(bpf, multi_ifname)
    bpf.set_uint(fd, lib.BIOCSDLT, lib.DLT_RAW)
    assert bpf.get_uint(fd, lib.BIOCGDLT) == lib.DLT_RAW
    ifr = ffi.new("struct ifreq *")
    bpf.ioctl(fd, lib.BIOCGETIF, ifr)
    assert ffi.string(ifr.ifr_name).decode() == multi_ifname
    bpf.set_uint(fd, lib.BIOCSDLT, lib.DLT_EN10MB)
    assert bpf.get_uint(fd, lib.BIOCGDLT) == lib.DLT_EN10MB


def test_sdlt_current(bpf, ifname):
    """§e BIOCSDLT: v == current → 0."""
    fd = attached(bpf, ifname)
    bpf.set_uint(fd, lib.BIOCSDLT, lib.DLT_EN10MB)
    assert bpf.get_uint(fd, lib.BIOCGDLT) == lib.DLT_EN10MB


@pytest.mark.parametrize("dlt", [lib.DLT_NULL, lib.DLT_RAW, lib.DLT_IEEE802_11, 0xFFFF])
def test_sdlt_not_offered(bpf, ifname, dlt):
    """§e BIOCSDLT: v not offered by this interface → EINVAL; DLT unchanged."""
    fd = attached(bpf, ifname)
    with raises(InvalidArgument, "EINVAL"):
        bpf.set_uint(fd, lib.BIOCSDLT, dlt)
    assert bpf.get_uint(fd, lib.BIOCGDLT) == lib.DLT_EN10MB


def test_sdlt_reapplies_promisc(bpf, system, multi_ifname):
    """§e BIOCSDLT: the re-attach re-applies promiscuous mode (bd_promisc stays 1)."""
    fd = attached(bpf, multi_ifname)
    bpf.promisc(fd)
    bpf.set_uint(fd, lib.BIOCSDLT, lib.DLT_RAW)
    assert stats_record(system, multi_ifname).bd_promisc == 1


def test_promisc(bpf, system, ifname):
    """§e BIOCPROMISC: attached → ok, idempotent; net.bpf.stats shows bd_promisc."""
    fd = attached(bpf, ifname)
    assert stats_record(system, ifname).bd_promisc == 0
    bpf.promisc(fd)
    bpf.promisc(fd)
    assert stats_record(system, ifname).bd_promisc == 1


def test_setif_elsewhere_drops_promisc(bpf, system, ifname, null_ifname):
    """§e BIOCSETIF: attaching to a different interface detaches from the old one,
    dropping promiscuous mode."""
    fd = attached(bpf, ifname)
    bpf.promisc(fd)
    bpf.attach(fd, null_ifname)
    assert stats_record(system, null_ifname).bd_promisc == 0
    assert stats_records(system, ifname) == []


# -- timeouts ----------------------------------------------------------------------------

RTIMEOUTS_AT_HZ_1000 = [
    ((0, 0), (0, 0)),
    ((0, 1), (0, 1000)),  # raised to tick/16, then one tick
    ((0, 500), (0, 1000)),
    ((0, 1000), (0, 1000)),
    ((0, 1500), (0, 2000)),
    ((0, 999_999), (1, 0)),
    ((1, 0), (1, 0)),
    ((2, 500_000), (2, 500_000)),
    ((10**9, 0), (2147483, 646000)),  # tvtohz saturates at INT_MAX ticks
]


@pytest.mark.parametrize(("tv", "back"), RTIMEOUTS_AT_HZ_1000)
def test_rtimeout_round_trip(bpf, system, tv, back):
    """§e BIOCSRTIMEOUT/BIOCGRTIMEOUT: rtout = tvtohz(tv) - 1 ticks, read back as
    (rtout / hz, rtout % hz · tick); {0,0} → 0 (no timeout).  The table is for
    hz = 1000 (500 µs → 1000 µs); a kernel of another hz (a VM's 100) is held to
    the same rule, which the next test checks against the table."""
    fd = bpf.open()
    bpf.timeout(fd, *tv)
    hz = kern_hz(system)
    assert bpf.gtimeout(fd) == (back if hz == 1000 else timeout_read_back(*tv, hz))


def test_the_rule_for_other_clock_rates_gives_the_table():
    """timeout_read_back, used where kern.hz is not 1000, agrees with the table."""
    for tv, back in RTIMEOUTS_AT_HZ_1000:
        assert timeout_read_back(*tv, 1000) == back
    assert timeout_read_back(0, 500, 100) == (0, 10_000)  # a VM's hz: 10 ms ticks


@pytest.mark.parametrize("tv", [(-1, 0), (0, -1), (0, 1_000_000), (5, 2_000_000)])
def test_rtimeout_invalid(bpf, tv):
    """§e BIOCSRTIMEOUT: tv_sec < 0, tv_usec < 0 or tv_usec ≥ 1000000 → EINVAL
    (itimerfix); the timeout is unchanged."""
    fd = bpf.open()
    bpf.timeout(fd, 1, 0)
    with raises(InvalidArgument, "EINVAL"):
        bpf.timeout(fd, *tv)
    assert bpf.gtimeout(fd) == (1, 0)


# -- timestamps, direction, signal, PCP, flags -------------------------------------------------

@pytest.mark.parametrize("value", VALID_TSTAMPS, ids=hex)
def test_ststamp_valid(bpf, value):
    """§e BIOCSTSTAMP / §c BPF_T_VALID: the 13 valid values are accepted and read
    back by BIOCGTSTAMP."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSTSTAMP, value)
    assert bpf.get_uint(fd, lib.BIOCGTSTAMP) == value


@pytest.mark.parametrize("value", [0x103, 0x203, 0x303, 0x004, 0x007, 0x400, 0x1000,
                                   0x10000, 0xFFFFFFFF], ids=hex)
def test_ststamp_invalid(bpf, value):
    """§e BIOCSTSTAMP / §c: BPF_T_VALID false (NONE with a flag, unknown bits) → EINVAL;
    the value is unchanged."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSTSTAMP, lib.BPF_T_NANOTIME)
    with raises(InvalidArgument, "EINVAL"):
        bpf.set_uint(fd, lib.BIOCSTSTAMP, value)
    assert bpf.get_uint(fd, lib.BIOCGTSTAMP) == lib.BPF_T_NANOTIME


@pytest.mark.parametrize("value", [lib.BPF_D_IN, lib.BPF_D_INOUT, lib.BPF_D_OUT])
def test_sdirection_valid(bpf, value):
    """§e BIOCSDIRECTION: 0 (IN), 1 (INOUT), 2 (OUT) are set and read back; the
    obsolete SEESENT names are the same requests."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSDIRECTION, value)
    assert bpf.get_uint(fd, lib.BIOCGDIRECTION) == value
    assert lib.BIOCGSEESENT == lib.BIOCGDIRECTION
    assert lib.BIOCSSEESENT == lib.BIOCSDIRECTION


@pytest.mark.parametrize("value", [3, 4, 0x100, 0xFFFFFFFF])
def test_sdirection_invalid(bpf, value):
    """§e BIOCSDIRECTION: u ∉ {0, 1, 2} → EINVAL."""
    fd = bpf.open()
    with raises(InvalidArgument, "EINVAL"):
        bpf.set_uint(fd, lib.BIOCSDIRECTION, value)
    assert bpf.get_uint(fd, lib.BIOCGDIRECTION) == lib.BPF_D_INOUT


@pytest.mark.parametrize("sig", [0, 1, 30, 31])
def test_srsig_valid(bpf, sig):
    """§e BIOCSRSIG/BIOCGRSIG: sig < NSIG (32) is stored and read back."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSRSIG, sig)
    assert bpf.get_uint(fd, lib.BIOCGRSIG) == sig


@pytest.mark.parametrize("sig", [32, 33, 64, 0xFFFFFFFF])
def test_srsig_invalid(bpf, sig):
    """§e BIOCSRSIG: u ≥ NSIG (32) → EINVAL; the signal is unchanged."""
    fd = bpf.open()
    with raises(InvalidArgument, "EINVAL"):
        bpf.set_uint(fd, lib.BIOCSRSIG, sig)
    assert bpf.get_uint(fd, lib.BIOCGRSIG) == signal.SIGIO


@pytest.mark.parametrize("pcp", range(8))
def test_setvlanpcp_valid(bpf, pcp):
    """§e BIOCSETVLANPCP: 0..7 accepted (bpf.c-2024)."""
    bpf.set_uint(bpf.open(), lib.BIOCSETVLANPCP, pcp)


@pytest.mark.parametrize("pcp", [8, 9, 255, 0xFFFFFFFF])
def test_setvlanpcp_invalid(bpf, pcp):
    """§e BIOCSETVLANPCP: u > 7 (BPF_PRIO_MAX) → EINVAL."""
    with raises(InvalidArgument, "EINVAL"):
        bpf.set_uint(bpf.open(), lib.BIOCSETVLANPCP, pcp)


@pytest.mark.parametrize("value", [1, 2, 0x80000000])
def test_hdrcmplt(bpf, value):
    """§e BIOCSHDRCMPLT/BIOCGHDRCMPLT: stores (u != 0); 0 clears it (bpf.c-2024)."""
    fd = bpf.open()
    bpf.set_uint(fd, lib.BIOCSHDRCMPLT, value)
    assert bpf.get_uint(fd, lib.BIOCGHDRCMPLT) == 1
    bpf.set_uint(fd, lib.BIOCSHDRCMPLT, 0)
    assert bpf.get_uint(fd, lib.BIOCGHDRCMPLT) == 0


def test_flags_in_stats(bpf, system, ifname):
    """§e BIOCIMMEDIATE / BIOCFEEDBACK / FIOASYNC / BIOCSHDRCMPLT / BIOCSDIRECTION,
    §d stats record flags (0/1): set, then cleared by 0 (bpf.c-2024).  (bpf.c-2024
    stores BIOCIMMEDIATE/BIOCFEEDBACK/FIOASYNC values as given, so 1 is used.)"""
    fd = attached(bpf, ifname)
    bpf.set_uint(fd, lib.BIOCIMMEDIATE, 1)
    bpf.set_uint(fd, lib.BIOCFEEDBACK, 1)
    bpf.set_int(fd, lib.FIOASYNC, 1)
    bpf.set_uint(fd, lib.BIOCSHDRCMPLT, 5)
    bpf.set_uint(fd, lib.BIOCSDIRECTION, lib.BPF_D_OUT)
    rec = stats_record(system, ifname)
    assert (rec.bd_immediate, rec.bd_feedback, rec.bd_async, rec.bd_hdrcmplt,
            rec.bd_direction) == (1, 1, 1, 1, lib.BPF_D_OUT)
    bpf.set_uint(fd, lib.BIOCIMMEDIATE, 0)
    bpf.set_uint(fd, lib.BIOCFEEDBACK, 0)
    bpf.set_int(fd, lib.FIOASYNC, 0)
    bpf.set_uint(fd, lib.BIOCSHDRCMPLT, 0)
    rec = stats_record(system, ifname)
    assert (rec.bd_immediate, rec.bd_feedback, rec.bd_async, rec.bd_hdrcmplt) == (0, 0, 0, 0)


def test_owner(bpf):
    """§e FIOSETOWN/FIOGETOWN/TIOCSPGRP/TIOCGPGRP: the owner is a pid (> 0) or a
    process group (< 0); the TIOC forms take and return a negated value."""
    fd = bpf.open()
    pid = os.getpid()
    bpf.set_int(fd, lib.FIOSETOWN, pid)
    assert bpf.get_int(fd, lib.FIOGETOWN) == pid
    assert bpf.get_int(fd, lib.TIOCGPGRP) == -pid
    pgrp = os.getpgrp()
    bpf.set_int(fd, lib.TIOCSPGRP, pgrp)
    assert bpf.get_int(fd, lib.FIOGETOWN) == -pgrp
    assert bpf.get_int(fd, lib.TIOCGPGRP) == pgrp


def test_fionread_empty(bpf, ifname):
    """§e FIONREAD: slen + hlen, 0 with nothing captured (attached or not)."""
    fd = bpf.open()
    assert bpf.fionread(fd) == 0
    bpf.attach(fd, ifname)
    bpf.setf(fd, [(RET_K, 0, 0, 0)])  # nothing is captured, even on a busy interface
    assert bpf.fionread(fd) == 0


def test_gstats_initial(bpf, ifname):
    """§e BIOCGSTATS: {bs_recv, bs_drop} = low 32 bits of rcount, dcount: 0 at first."""
    fd = attached(bpf, ifname)
    assert bpf.gstats(fd) == (0, 0)


# -- filters ------------------------------------------------------------------------------

@pytest.mark.parametrize("request_", [lib.BIOCSETF, lib.BIOCSETFNR, lib.BIOCSETWF],
                         ids=["BIOCSETF", "BIOCSETFNR", "BIOCSETWF"])
def test_setf_null_insns(bpf, request_):
    """§e BIOCSETF*: bf_insns == NULL with bf_len != 0 → EINVAL; bf_len 0 with NULL
    removes the filter (ok)."""
    fd = bpf.open()
    prog = ffi.new("struct bpf_program *")
    prog.bf_len, prog.bf_insns = 1, ffi.NULL
    with raises(InvalidFilter, "EINVAL"):
        bpf.ioctl(fd, request_, prog)
    prog.bf_len = 0
    bpf.ioctl(fd, request_, prog)


@pytest.mark.parametrize("insns", [
    [(0x0E, 0, 0, 0)],  # RET|X: not accepted
    [(lib.BPF_LD | lib.BPF_W | lib.BPF_ABS, 0, 0, 0)],  # last is not RET
    [(lib.BPF_JMP | lib.BPF_JA, 0, 0, 1), (RET_K, 0, 0, 0)],  # jumps past the end
    [(lib.BPF_ST, 0, 0, 16), (RET_K, 0, 0, 0)],  # scratch index ≥ 16
    [(lib.BPF_ALU | lib.BPF_DIV | lib.BPF_K, 0, 0, 0), (RET_K, 0, 0, 0)],  # div by 0
], ids=["ret-x", "no-ret", "jump-out", "mem-16", "div-0"])
@pytest.mark.parametrize("request_", [lib.BIOCSETF, lib.BIOCSETFNR, lib.BIOCSETWF],
                         ids=["BIOCSETF", "BIOCSETFNR", "BIOCSETWF"])
def test_setf_invalid_program(bpf, request_, insns):
    """§e BIOCSETF* / §h bpf_validate: a program the validator rejects → EINVAL."""
    fd = bpf.open()
    prog, keep = program(insns)
    with raises(InvalidFilter, "EINVAL"):
        bpf.ioctl(fd, request_, prog)
    del keep


# -- BIOCLOCK --------------------------------------------------------------------------------

def _allowed(bpf, fd, request_):
    """A valid argument for each whitelisted request."""
    u = ffi.new("u_int *")
    args = {
        lib.BIOCGBLEN: u, lib.BIOCFLUSH: None, lib.BIOCGDLT: u,
        lib.BIOCGDLTLIST: ffi.new("struct bpf_dltlist *"),
        lib.BIOCGETIF: ffi.new("struct ifreq *"),
        lib.BIOCGRTIMEOUT: ffi.new("struct timeval *"),
        lib.BIOCGSTATS: ffi.new("struct bpf_stat *"),
        lib.BIOCVERSION: ffi.new("struct bpf_version *"),
        lib.BIOCGRSIG: u, lib.BIOCGHDRCMPLT: u,
        lib.BIOCSTSTAMP: ffi.new("u_int *", lib.BPF_T_NANOTIME),
        lib.BIOCFEEDBACK: ffi.new("u_int *", 1),
        lib.FIONREAD: ffi.new("int *"), lib.BIOCLOCK: None,
        lib.BIOCSRTIMEOUT: ffi.new("struct timeval *", {"tv_sec": 1, "tv_usec": 0}),
        lib.BIOCIMMEDIATE: ffi.new("u_int *", 1),
        lib.TIOCGPGRP: ffi.new("int *"),
    }
    return bpf.ioctl(fd, request_, args[request_])


LOCK_ALLOWED = ["BIOCGBLEN", "BIOCFLUSH", "BIOCGDLT", "BIOCGDLTLIST", "BIOCGETIF",
                "BIOCGRTIMEOUT", "BIOCGSTATS", "BIOCVERSION", "BIOCGRSIG", "BIOCGHDRCMPLT",
                "BIOCSTSTAMP", "BIOCFEEDBACK", "FIONREAD", "BIOCLOCK", "BIOCSRTIMEOUT",
                "BIOCIMMEDIATE", "TIOCGPGRP"]


@pytest.mark.parametrize("name", LOCK_ALLOWED)
def test_locked_allows(bpf, ifname, name):
    """§e BIOCLOCK filter: every whitelisted request still works on a locked
    descriptor (BIOCROTZBUF: see test_zbuf_setup.test_locked_still_rotates)."""
    fd = attached(bpf, ifname)
    bpf.lock(fd)
    assert _allowed(bpf, fd, getattr(lib, name)) == 0


def test_locked_setters_take_effect(bpf, system, ifname):
    """§e BIOCLOCK filter: whitelisted setters (BIOCIMMEDIATE, BIOCFEEDBACK,
    BIOCSRTIMEOUT) still change the descriptor."""
    fd = attached(bpf, ifname)
    bpf.lock(fd)
    bpf.set_uint(fd, lib.BIOCIMMEDIATE, 1)
    bpf.set_uint(fd, lib.BIOCFEEDBACK, 1)
    bpf.timeout(fd, 2, 0)
    rec = stats_record(system, ifname)
    assert (rec.bd_immediate, rec.bd_feedback, rec.bd_locked) == (1, 1, 1)
    assert bpf.gtimeout(fd) == (2, 0)


def _denied_args(bpf, ifname):
    u1 = ffi.new("u_int *", 1)
    prog, keep = program([(RET_K, 0, 0, 96)])
    ifr = ffi.new("struct ifreq *")
    ifr.ifr_name = ifname.encode()
    return {
        "BIOCGETBUFMODE": ffi.new("u_int *"), "BIOCSETBUFMODE": u1,
        "BIOCGETZMAX": ffi.new("size_t *"), "BIOCSETZBUF": ffi.new("struct bpf_zbuf *"),
        "BIOCSBLEN": ffi.new("u_int *", 8192), "BIOCSETIF": ifr,
        "BIOCSETF": prog, "BIOCSETFNR": prog, "BIOCSETWF": prog,
        "BIOCGTSTAMP": ffi.new("u_int *"), "BIOCGDIRECTION": ffi.new("u_int *"),
        "BIOCSDIRECTION": ffi.new("u_int *", lib.BPF_D_IN), "BIOCSHDRCMPLT": u1,
        "BIOCSRSIG": ffi.new("u_int *", 5), "BIOCPROMISC": None,
        "BIOCSDLT": ffi.new("u_int *", lib.DLT_EN10MB), "BIOCSETVLANPCP": u1,
        "FIONBIO": ffi.new("int *", 0), "FIOASYNC": ffi.new("int *", 0),
        "FIOSETOWN": ffi.new("int *", os.getpid()), "FIOGETOWN": ffi.new("int *"),
        "TIOCSPGRP": ffi.new("int *", os.getpgrp()),
    }, keep


LOCK_DENIED = ["BIOCGETBUFMODE", "BIOCSETBUFMODE", "BIOCGETZMAX", "BIOCSETZBUF", "BIOCSBLEN",
               "BIOCSETIF", "BIOCSETF", "BIOCSETFNR", "BIOCSETWF", "BIOCGTSTAMP",
               "BIOCGDIRECTION", "BIOCSDIRECTION", "BIOCSHDRCMPLT", "BIOCSRSIG", "BIOCPROMISC",
               "BIOCSDLT", "BIOCSETVLANPCP", "FIONBIO", "FIOASYNC", "FIOSETOWN", "FIOGETOWN",
               "TIOCSPGRP"]


@pytest.mark.parametrize("name", LOCK_DENIED)
def test_locked_denies(bpf, ifname, name):
    """§e BIOCLOCK filter: every request off the whitelist → EPERM (DescriptorLocked),
    before any other check, with nothing copied out."""
    fd = attached(bpf, ifname)
    bpf.lock(fd)
    args, keep = _denied_args(bpf, ifname)
    arg = args[name]
    before = bytes(ffi.buffer(arg)) if arg is not None else None
    with raises(DescriptorLocked, "EPERM"):
        bpf.ioctl(fd, getattr(lib, name), arg)
    if arg is not None:
        assert bytes(ffi.buffer(arg)) == before
    del keep


def test_locked_denied_changes_nothing(bpf, system, ifname):
    """§e BIOCLOCK filter: a refused setter leaves the descriptor as it was
    (direction, promiscuous mode: seen through net.bpf.stats)."""
    fd = attached(bpf, ifname)
    bpf.lock(fd)
    with raises(DescriptorLocked, "EPERM"):
        bpf.set_uint(fd, lib.BIOCSDIRECTION, lib.BPF_D_IN)
    with raises(DescriptorLocked, "EPERM"):
        bpf.promisc(fd)
    rec = stats_record(system, ifname)
    assert (rec.bd_direction, rec.bd_promisc) == (lib.BPF_D_INOUT, 0)


def test_lock_cannot_be_undone(bpf, system, ifname):
    """§e BIOCLOCK: cannot be undone — locking again, flushing, changing allowed
    settings leave it locked (bd_locked = 1, off-list requests still EPERM)."""
    fd = attached(bpf, ifname)
    bpf.lock(fd)
    bpf.lock(fd)
    bpf.flush(fd)
    bpf.set_uint(fd, lib.BIOCIMMEDIATE, 0)
    assert stats_record(system, ifname).bd_locked == 1
    with raises(DescriptorLocked, "EPERM"):
        bpf.get_uint(fd, lib.BIOCGETBUFMODE)
    fd2 = attached(bpf, ifname)  # a new descriptor is not locked
    assert bpf.get_uint(fd2, lib.BIOCGETBUFMODE) == lib.BPF_BUFMODE_BUFFER


def test_locked_fionbio_flag_still_toggled(bpf, ifname):
    """§e BIOCLOCK filter: FIONBIO → EPERM, but the generic layer has already set
    the file's FNONBLOCK, so a read with nothing to read fails with EAGAIN."""
    fd = attached(bpf, ifname)
    bpf.setf(fd, [(RET_K, 0, 0, 0)])  # nothing is captured, even on a busy interface
    bpf.lock(fd)
    with raises(DescriptorLocked, "EPERM"):
        bpf.set_int(fd, lib.FIONBIO, 1)
    with raises(WouldBlock, "EAGAIN"):
        bpf.read(fd)


def test_generic_fioclex_never_reaches_bpf(bpf, ifname):
    """§b: FIOCLEX/FIONCLEX are handled by the generic layer and never reach bpf,
    so they work even on a locked descriptor: they set and clear close-on-exec."""
    fd = attached(bpf, ifname)
    bpf.lock(fd)
    raw.clear_cloexec(bpf.system, fd)
    assert os.get_inheritable(fd)
    raw.set_cloexec(bpf.system, fd)
    assert not os.get_inheritable(fd)


@pytest.mark.parametrize("cloexec", [False, True])
def test_open_sets_close_on_exec_only_with_o_cloexec(bpf, cloexec):
    """open(2): the new descriptor is inherited across exec unless O_CLOEXEC."""
    fd = bpf.open(os.O_RDWR | (os.O_CLOEXEC if cloexec else 0))
    assert os.get_inheritable(fd) is not cloexec


# -- the generic layer -------------------------------------------------------------------------

def _ioc(direction, group, nr, length):
    return direction | ((length & lib.IOCPARM_MASK) << 16) | (ord(group) << 8) | nr


@pytest.mark.parametrize("request_", [
    _ioc(lib.IOC_IN, "B", 200, 4),  # _IOW('B', 200, u_int)
    _ioc(lib.IOC_OUT, "B", 99, 4),  # _IOR('B', 99, u_int)
    _ioc(lib.IOC_INOUT, "B", 102, 8),  # BIOCSBLEN's number with a wrong size
    _ioc(lib.IOC_OUT, "z", 1, 4),  # another group altogether
], ids=hex)
def test_unknown_request(bpf, request_):
    """§b / §e "anything else": an unknown command reaching bpfioctl() → EINVAL
    (not ENOTTY)."""
    fd = bpf.open()
    arg = ffi.new("char[]", 16)
    with raises(InvalidArgument, "EINVAL"):
        bpf.ioctl(fd, request_, arg)


def test_unknown_void_request(bpf):
    """§b: an unknown _IO command → EINVAL."""
    fd = bpf.open()
    with raises(InvalidArgument, "EINVAL"):
        bpf.ioctl(fd, _ioc(lib.IOC_VOID, "B", 250, 0))


@pytest.mark.parametrize("request_", [
    _ioc(0, "B", 102, 4),  # no direction bits at all
    _ioc(lib.IOC_OUT, "B", 102, 0),  # OUT with length 0
    _ioc(lib.IOC_INOUT, "B", 102, 0),  # IN|OUT with length 0
    _ioc(lib.IOC_VOID, "B", 104, 8),  # VOID with a length other than 0 / sizeof(int)
], ids=hex)
def test_malformed_encoding(bpf, request_):
    """§b: malformed encodings are refused by the generic sys_ioctl layer → ENOTTY."""
    fd = bpf.open()
    arg = ffi.new("char[]", 16)
    with raises(BPFError, "ENOTTY"):
        bpf.ioctl(fd, request_, arg)


def test_no_copyout_on_error(bpf, ifname, multi_ifname):
    """§b generic copy semantics / §i: the argument is copied back only when the
    driver returns 0 — failing _IOR/_IOWR requests leave the caller's memory as it was."""
    fd = bpf.open()
    u = ffi.new("u_int *", 0xDEADBEEF)
    with raises(InvalidArgument, "EINVAL"):
        bpf.ioctl(fd, lib.BIOCGDLT, u)
    assert u[0] == 0xDEADBEEF
    ifr = ffi.new("struct ifreq *")
    ifr.ifr_name = b"keepme"
    with raises(InvalidArgument, "EINVAL"):
        bpf.ioctl(fd, lib.BIOCGETIF, ifr)
    assert ffi.string(ifr.ifr_name) == b"keepme"
    bfl = ffi.new("struct bpf_dltlist *")
    bfl.bfl_len = 1234
    with raises(InvalidArgument, "EINVAL"):
        bpf.ioctl(fd, lib.BIOCGDLTLIST, bfl)
    assert bfl.bfl_len == 1234


# -- user memory the kernel cannot access ---------------------------------------------------------

def test_gdltlist_copyout_fault():
    """§e BIOCGDLTLIST: a copy-out fault (list in read-only memory) → EFAULT."""
    status, out = run_isolated('''
ro = mmap.mmap(-1, 4096, prot=mmap.PROT_READ)
bfl = ffi.new("struct bpf_dltlist *")
bfl.bfl_len, bfl.bfl_list = 4, ffi.cast("u_int *", ffi.from_buffer(ro))
report(lambda: system.ioctl(fd, lib.BIOCGDLTLIST, bfl))
''')
    assert (status, out) == (0, "BadAddress EFAULT")


def test_setf_copyin_fault():
    """§e BIOCSETF*: a copy-in failure of the instructions → EINVAL (not EFAULT)."""
    status, out = run_isolated('''
none = mmap.mmap(-1, 4096, prot=0)
prog = ffi.new("struct bpf_program *")
prog.bf_len, prog.bf_insns = 1, ffi.cast("struct bpf_insn *", ffi.from_buffer(none))
report(lambda: system.ioctl(fd, lib.BIOCSETF, prog))
''')
    assert (status, out) == (0, "InvalidFilter EINVAL")


def test_setf_from_read_only_memory(bpf, tmp_path):
    """§e BIOCSETF*: the copy-in only reads the instructions, so a program in
    read-only memory is accepted."""
    prog, keep = program([(RET_K, 0, 0, 96)])
    path = tmp_path / "program"
    path.write_bytes(bytes(ffi.buffer(keep)))
    fd = bpf.open()
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as ro:
        view = ffi.from_buffer(ro)
        prog.bf_insns = ffi.cast("struct bpf_insn *", view)
        bpf.ioctl(fd, lib.BIOCSETF, prog)
        ffi.release(view)


def test_isolated_runner_reports():
    """Self-check of the child-process runner used above: a plain request reports ok,
    an error its class and errno."""
    assert run_isolated("report(lambda: system.ioctl(fd, lib.BIOCFLUSH))") == (0, "ok")
    assert run_isolated('report(lambda: system.ioctl(fd, lib.BIOCSDLT, '
                        'ffi.new("u_int *", 0xFFFF)))') == (0, "InvalidArgument EINVAL")


def test_getiflist_absent_in_14(bpf):
    """§b / §i versions table: BIOCGETIFLIST exists only in main ≥ 2025-12-15; the
    14.x baseline has no such request → EINVAL ("anything else")."""
    if not lib.BSDBPF_HAS_BIOCGETIFLIST:
        pytest.skip("this build has no BIOCGETIFLIST number")
    if ON_HOST and int(os.uname().release.split(".")[0]) >= 15:
        pytest.skip("real kernel newer than the 14.x baseline")
    fd = bpf.open()
    il = ffi.new("struct bpf_iflist *")
    with raises(InvalidArgument, "EINVAL"):
        bpf.ioctl(fd, lib.BIOCGETIFLIST, il)
    assert (il.bi_size, il.bi_count) == (0, 0)
