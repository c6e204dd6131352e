"""The simulated kernel's sysctls: the net.bpf tree (its integers and
net.bpf.stats) and the read-only facts of the kernel bsdbpf depends on (kern.hz)."""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterable
from typing import Any

from bsdbpf._native import ffi, lib
from bsdbpf.errors import from_errno

__all__ = ["DEFAULTS", "NODE", "STATS", "SysctlTree"]

NODE = "net.bpf"
STATS = "net.bpf.stats"
DEFAULTS = {  # net.bpf integer sysctls and FreeBSD's defaults
    "net.bpf.zerocopy_enable": 0,
    "net.bpf.bufsize": 4096,
    "net.bpf.maxbufsize": lib.BPF_MAXBUFSIZE,
    "net.bpf.maxinsns": lib.BPF_MAXINSNS,
    "net.bpf.optimize_writers": 0,
}
READ_ONLY = {"kern.hz": lib.BSDBPF_SIM_HZ}  # the clock read timeouts count in
INT_SIZE = 4
XBPF_SIZE = ffi.sizeof("struct xbpf_d")


class SysctlTree:
    """sysctlbyname() over net.bpf.  ``ints`` is the live table of integer
    values (the kernel exposes it as ``Kernel.sysctls``)."""

    def __init__(self) -> None:
        self.ints: dict[str, int] = dict(DEFAULTS)

    def call(self, name: str, new: bytes | None, *, root: bool,
             stats: Any) -> bytes:
        """One sysctl(3) call.  ``stats`` is a callable (zero: bool) -> bytes
        giving the xbpf_d records and zeroing the counters when asked."""
        op = f"sysctl {name}"
        if name == NODE:  # a node without a handler
            raise from_errno(errno.EISDIR, op, hint=f"{NODE} is a node: name one of its "
                             f"leaves, {sorted([*self.ints, STATS])}")
        if name == STATS:
            if not root:
                raise from_errno(errno.EPERM, op)
            if new is not None and (len(new) != XBPF_SIZE or any(new)):
                raise from_errno(errno.EINVAL, op, hint=f"write one all-zero struct xbpf_d "
                                 f"({XBPF_SIZE} bytes) to zero the counters")
            return bytes(stats(new is not None))
        if name in READ_ONLY:  # CTLFLAG_RD: sysctl_root refuses a new value, even root's
            if new is not None:
                raise from_errno(errno.EPERM, op, hint="it is read-only (a boot-time tunable)")
            return int(READ_ONLY[name]).to_bytes(INT_SIZE, sys.byteorder, signed=True)
        if name not in self.ints:
            raise from_errno(errno.ENOENT, op)
        if new is not None and not root:
            raise from_errno(errno.EPERM, op)
        old = self.ints[name].to_bytes(INT_SIZE, sys.byteorder, signed=True)
        if new is not None:
            # sysctl_handle_int copies in an int: fewer bytes are EINVAL,
            # the first four of a longer value are taken.
            if len(new) < INT_SIZE:
                raise from_errno(errno.EINVAL, op, hint="an int sysctl takes 4 bytes")
            self.ints[name] = int.from_bytes(new[:INT_SIZE], sys.byteorder, signed=True)
        return old


def xbpf_records(entries: Iterable[tuple[Any, str, int]]) -> bytes:
    """struct xbpf_d records for (engine state, interface name, pid) triples."""
    entries = list(entries)
    if not entries:
        return b""
    records = ffi.new("struct xbpf_d[]", len(entries))
    for rec, (st, ifname, pid) in zip(records, entries):
        rec.bd_structsize = XBPF_SIZE
        rec.bd_promisc, rec.bd_immediate = st.promisc, int(st.immediate != 0)
        rec.bd_hdrcmplt, rec.bd_direction = st.hdrcmplt, st.direction
        rec.bd_feedback, rec.bd_async = st.feedback, st.fasync
        rec.bd_rcount, rec.bd_dcount, rec.bd_fcount = st.rcount, st.dcount, st.fcount
        rec.bd_sig, rec.bd_slen, rec.bd_bufsize = st.sig, st.slen, st.bufsize
        rec.bd_hlen = st.hlen if st.has_hbuf else 0
        rec.bd_pid = pid
        name = ifname.encode()
        ffi.memmove(rec.bd_ifname, name, len(name))
        rec.bd_locked = st.locked
        rec.bd_wcount, rec.bd_wfcount, rec.bd_wdcount = st.wcount, st.wfcount, st.wdcount
        rec.bd_zcopy, rec.bd_bufmode = st.zcopy, st.bufmode
    return bytes(ffi.buffer(records))
