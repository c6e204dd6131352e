"""Every BPF descriptor on the system: the ``net.bpf.stats`` sysctl, as ``netstat -B`` shows it.

The kernel returns one ``struct xbpf_d`` per descriptor attached to an
interface (unattached ones are not listed).  :func:`read_stats` reads and
decodes the table into :class:`DescriptorStats` records; :func:`parse_stats`
decodes bytes you already have; :func:`zero_stats` zeroes the counters, as
``netstat -B -z`` does.  Reading and zeroing need root (EPERM otherwise:
:class:`bsdbpf.PermissionDenied`).
"""

from __future__ import annotations

import errno
from typing import NamedTuple

from bsdbpf._native import ffi
from bsdbpf.backend import default_system
from bsdbpf.errors import BPFError, InternalError, from_errno
from bsdbpf.system import System
from bsdbpf.types import BufferMode, Direction

__all__ = ["STATS_SYSCTL", "DescriptorStats", "parse_stats", "read_stats", "zero_stats"]

STATS_SYSCTL = "net.bpf.stats"
_RECORD = "struct xbpf_d"


class DescriptorStats(NamedTuple):
    """One attached BPF descriptor (``struct xbpf_d``): a row of ``netstat -B``."""

    pid: int  #: the last process that used the descriptor (bd_pid)
    ifname: str  #: the interface it is attached to
    promiscuous: bool  #: BIOCPROMISC was requested
    immediate: bool  #: BIOCIMMEDIATE is on
    header_complete: bool  #: BIOCSHDRCMPLT is on
    direction: Direction  #: BIOCSDIRECTION
    feedback: bool  #: BIOCFEEDBACK is on
    async_io: bool  #: FIOASYNC is on
    locked: bool  #: BIOCLOCK was issued
    recv: int  #: packets offered to the descriptor (bd_rcount)
    drop: int  #: accepted packets dropped for lack of buffer space (bd_dcount)
    match: int  #: packets the read filter accepted (bd_fcount)
    store_len: int  #: bytes in the store buffer (bd_slen)
    hold_len: int  #: bytes in the hold buffer (bd_hlen)
    buffer_size: int  #: bytes per buffer (bd_bufsize)
    signal: int  #: signal sent when packets arrive (BIOCSRSIG)
    writes: int  #: write(2) calls (bd_wcount)
    writes_passed: int  #: writes the write filter passed (bd_wfcount)
    writes_failed: int  #: writes that failed (bd_wdcount)
    zerocopy_appends: int  #: copies into zero-copy buffers (bd_zcopy)
    buffer_mode: BufferMode  #: BIOCSETBUFMODE

    @property
    def flags(self) -> str:
        """The Flags column of ``netstat -B``: ``p`` promiscuous, ``i``
        immediate, ``f`` header not complete, ``-``/``o``/``s`` direction in,
        out, both, ``b`` feedback, ``a`` async, ``l`` locked."""
        direction = {Direction.IN: "-", Direction.OUT: "o"}.get(self.direction, "s")
        return "".join((
            "p" if self.promiscuous else "-",
            "i" if self.immediate else "-",
            "-" if self.header_complete else "f",
            direction,
            "b" if self.feedback else "-",
            "a" if self.async_io else "-",
            "l" if self.locked else "-",
        ))


def parse_stats(data: bytes) -> list[DescriptorStats]:
    """Decode the value of ``net.bpf.stats``: an array of ``struct xbpf_d``.

    A length that is not a whole number of records, a record whose
    ``bd_structsize`` is not this build's ``sizeof(struct xbpf_d)`` (another
    FreeBSD release), or an unknown direction or buffer mode raise
    :class:`bsdbpf.InternalError`.
    """
    size = ffi.sizeof(_RECORD)
    if len(data) % size:
        raise _bad(f"{len(data)} bytes is not a whole number of {size}-byte records")
    if not data:
        return []
    records = ffi.from_buffer(f"{_RECORD}[]", data)
    out = []
    for i, rec in enumerate(records):
        if rec.bd_structsize != size:
            raise _bad(f"record {i} has bd_structsize {rec.bd_structsize}, this build "
                       f"expects {size}: the kernel's struct xbpf_d is another version")
        try:
            direction, mode = Direction(rec.bd_direction), BufferMode(rec.bd_bufmode)
        except ValueError as err:
            raise _bad(f"record {i}: {err}") from None
        out.append(DescriptorStats(
            pid=int(rec.bd_pid),
            ifname=ffi.string(rec.bd_ifname, len(rec.bd_ifname)).decode(errors="replace"),
            promiscuous=bool(rec.bd_promisc),
            immediate=bool(rec.bd_immediate),
            header_complete=bool(rec.bd_hdrcmplt),
            direction=direction,
            feedback=bool(rec.bd_feedback),
            async_io=bool(rec.bd_async),
            locked=bool(rec.bd_locked),
            recv=int(rec.bd_rcount),
            drop=int(rec.bd_dcount),
            match=int(rec.bd_fcount),
            store_len=int(rec.bd_slen),
            hold_len=int(rec.bd_hlen),
            buffer_size=int(rec.bd_bufsize),
            signal=int(rec.bd_sig),
            writes=int(rec.bd_wcount),
            writes_passed=int(rec.bd_wfcount),
            writes_failed=int(rec.bd_wdcount),
            zerocopy_appends=int(rec.bd_zcopy),
            buffer_mode=mode,
        ))
    return out


def _bad(what: str) -> BPFError:
    return from_errno(errno.EIO, f"sysctl {STATS_SYSCTL}", cls=InternalError, hint=what)


def read_stats(system: System | None = None) -> list[DescriptorStats]:
    """Read ``net.bpf.stats`` on ``system`` (default: :func:`bsdbpf.backend.default_system`)
    and decode it: one record per attached descriptor, of every process."""
    system = default_system() if system is None else system
    return parse_stats(system.sysctlbyname(STATS_SYSCTL))


def zero_stats(system: System | None = None) -> None:
    """Zero the packet counters of every reading descriptor (``netstat -B -z``).

    FreeBSD takes one all-zero ``struct xbpf_d`` as the new value.
    """
    system = default_system() if system is None else system
    system.sysctlbyname(STATS_SYSCTL, bytes(ffi.sizeof(_RECORD)))
