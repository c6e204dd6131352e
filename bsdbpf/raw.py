"""The raw layer: one typed function per ``/dev/bpf`` request and for the int sysctls.

Each function takes a :class:`~bsdbpf.system.System` and a descriptor's fd,
builds the C argument the request takes, issues it through the seam and
returns plain Python values (ints, bools, str, tuples, bytes): no cffi object
goes in or out.
Errors come from the system (:func:`bsdbpf.errors.from_errno`), so they keep
FreeBSD's errno; arguments C cannot hold raise
:class:`bsdbpf.InvalidArgument` naming the request, before any system call.

Names follow the requests: ``BIOCGBLEN`` is :func:`get_blen`, ``BIOCSBLEN``
:func:`set_blen`; :data:`BY_REQUEST` maps every request name to its
function.  ``BIOCGSEESENT``/``BIOCSSEESENT`` are FreeBSD's obsolete names
of BIOCGDIRECTION/BIOCSDIRECTION and have no functions of their own.

Int sysctls are 4 bytes in the host's byte order (FreeBSD's ``int``):
:func:`sysctl_int` reads and writes them, :func:`decode_int` and
:func:`encode_int` are the codec.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Union

from bsdbpf._abi import HAS_BIOCGETIFLIST, HAS_BIOCSETVLANPCP, new_ifreq, request_name
from bsdbpf._native import ffi, lib
from bsdbpf.errors import BPFError, InvalidArgument, InvalidFilter, UnsupportedError, from_errno
from bsdbpf.system import System
from bsdbpf.types import BpfStat, BpfVersion, Insn

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "BY_REQUEST",
    "INT_MAX",
    "INT_MIN",
    "clear_cloexec",
    "decode_int",
    "encode_int",
    "flush",
    "get_blen",
    "get_bufmode",
    "get_direction",
    "get_dlt",
    "get_dltlist",
    "get_hdrcmplt",
    "get_if",
    "get_iflist",
    "get_int",
    "get_owner",
    "get_pgrp",
    "get_rsig",
    "get_rtimeout",
    "get_stats",
    "get_tstamp",
    "get_uint",
    "get_version",
    "get_zmax",
    "lock",
    "nread",
    "program_insns",
    "promisc",
    "rot_zbuf",
    "set_async",
    "set_blen",
    "set_bufmode",
    "set_cloexec",
    "set_direction",
    "set_dlt",
    "set_feedback",
    "set_filter",
    "set_filter_nr",
    "set_hdrcmplt",
    "set_if",
    "set_immediate",
    "set_int",
    "set_nonblocking",
    "set_owner",
    "set_pgrp",
    "set_rsig",
    "set_rtimeout",
    "set_tstamp",
    "set_uint",
    "set_vlanpcp",
    "set_write_filter",
    "set_zbuf",
    "sysctl_bytes",
    "sysctl_int",
]

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
U_INT_MAX = 2**32 - 1
INT_SIZE = 4  # FreeBSD's int, on every architecture it runs on

#: A filter program: ``(code, jt, jf, k)`` tuples, or objects with those attributes.
Program = Iterable[Any]
#: A zero-copy buffer: its address, or a writable buffer object (an mmap) to take it from.
BufferAddress = Union[int, "WriteableBuffer"]


def _out_of_range(op: str, what: str, value: object, ctype: str) -> BPFError:
    return from_errno(errno.EINVAL, op, cls=InvalidArgument,
                      hint=f"{what} {value!r} does not fit a C {ctype}")


def _checked(op: str, value: int, low: int, high: int, ctype: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int):
        raise from_errno(errno.EINVAL, op, cls=InvalidArgument,
                         hint=f"the value must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise _out_of_range(op, "the value", value, ctype)
    return value


def _call(system: System, fd: int, request: int, arg: Any = None) -> None:
    system.ioctl(fd, request, arg)


# -- the argument shapes ------------------------------------------------------


def get_uint(system: System, fd: int, request: int) -> int:
    """A request whose argument is a ``u_int`` the kernel fills in."""
    value = ffi.new("u_int *")
    _call(system, fd, request, value)
    return int(value[0])


def set_uint(system: System, fd: int, request: int, value: int) -> int:
    """A request taking a ``u_int``; returns the value the kernel left in it
    (BIOCSBLEN writes back the size it granted)."""
    arg = ffi.new("u_int *", _checked(request_name(request), value, 0, U_INT_MAX, "u_int"))
    _call(system, fd, request, arg)
    return int(arg[0])


def get_int(system: System, fd: int, request: int) -> int:
    """A request whose argument is an ``int`` the kernel fills in."""
    value = ffi.new("int *")
    _call(system, fd, request, value)
    return int(value[0])


def set_int(system: System, fd: int, request: int, value: int) -> None:
    """A request taking an ``int``."""
    arg = ffi.new("int *", _checked(request_name(request), value, INT_MIN, INT_MAX, "int"))
    _call(system, fd, request, arg)


# -- buffers and modes --------------------------------------------------------


def get_blen(system: System, fd: int) -> int:
    """BIOCGBLEN: bytes per buffer."""
    return get_uint(system, fd, lib.BIOCGBLEN)


def set_blen(system: System, fd: int, size: int) -> int:
    """BIOCSBLEN: ask for ``size`` bytes per buffer; returns what the kernel granted."""
    return set_uint(system, fd, lib.BIOCSBLEN, size)


def get_bufmode(system: System, fd: int) -> int:
    """BIOCGETBUFMODE: ``BPF_BUFMODE_BUFFER`` or ``BPF_BUFMODE_ZBUF``."""
    return get_uint(system, fd, lib.BIOCGETBUFMODE)


def set_bufmode(system: System, fd: int, mode: int) -> None:
    """BIOCSETBUFMODE."""
    set_uint(system, fd, lib.BIOCSETBUFMODE, mode)


def get_zmax(system: System, fd: int) -> int:
    """BIOCGETZMAX: the largest zero-copy buffer the kernel accepts, in bytes."""
    value = ffi.new("size_t *")
    _call(system, fd, lib.BIOCGETZMAX, value)
    return int(value[0])


def _address(op: str, buf: BufferAddress) -> int:
    """The address of a zero-copy buffer; a buffer object's export is released
    at once, so that its owner can unmap it after the fd is closed."""
    if isinstance(buf, int):
        if not 0 <= buf < 1 << (8 * ffi.sizeof("void *")):
            raise _out_of_range(op, "the address", buf, "pointer")
        return buf
    try:
        exported = ffi.from_buffer(buf, require_writable=True)
    except (TypeError, BufferError):
        raise from_errno(errno.EINVAL, op, cls=InvalidArgument, hint=(
            "a zero-copy buffer is an address (int) or a writable buffer such as an "
            f"mmap, not {type(buf).__name__}")) from None
    try:
        return int(ffi.cast("uintptr_t", exported))
    finally:
        ffi.release(exported)


def set_zbuf(system: System, fd: int, buf_a: BufferAddress, buf_b: BufferAddress,
             size: int) -> None:
    """BIOCSETZBUF: register two zero-copy buffers of ``size`` bytes each.

    ``buf_a``/``buf_b`` are addresses or writable buffer objects (an mmap).
    The kernel keeps using the memory until the fd is closed: the caller owns
    it and must keep it mapped until then.
    """
    op = "BIOCSETZBUF"
    bz = ffi.new("struct bpf_zbuf *")
    bz.bz_bufa = ffi.cast("void *", _address(op, buf_a))
    bz.bz_bufb = ffi.cast("void *", _address(op, buf_b))
    bz.bz_buflen = _checked(op, size, 0, 2 ** (8 * ffi.sizeof("size_t")) - 1, "size_t")
    _call(system, fd, lib.BIOCSETZBUF, bz)


def rot_zbuf(system: System, fd: int) -> tuple[int, int, int]:
    """BIOCROTZBUF: hand over a partly filled buffer.

    Returns ``(bufa, bufb, buflen)`` as the kernel fills them in: the address
    of the buffer handed over, 0 and its data bytes; all three 0 if nothing
    was rotated.
    """
    bz = ffi.new("struct bpf_zbuf *")
    _call(system, fd, lib.BIOCROTZBUF, bz)
    return (int(ffi.cast("uintptr_t", bz.bz_bufa)), int(ffi.cast("uintptr_t", bz.bz_bufb)),
            int(bz.bz_buflen))


def flush(system: System, fd: int) -> None:
    """BIOCFLUSH: discard buffered packets and zero the counters."""
    _call(system, fd, lib.BIOCFLUSH)


# -- filters ------------------------------------------------------------------


def program_insns(op: str, program: Program | None) -> tuple[Insn, ...]:
    """The instructions of ``program`` as ``(code, jt, jf, k)`` ints, each
    checked to fit ``struct bpf_insn`` (else :class:`bsdbpf.InvalidFilter`)."""
    out = []
    for i, ins in enumerate(program or ()):
        code, jt, jf, k = (ins.code, ins.jt, ins.jf, ins.k) if hasattr(ins, "code") else ins
        if not (0 <= code <= 0xFFFF and 0 <= jt <= 0xFF and 0 <= jf <= 0xFF
                and 0 <= k <= 0xFFFFFFFF):
            raise from_errno(errno.EINVAL, op, cls=InvalidFilter, hint=(
                f"instruction {i} {(code, jt, jf, k)}: code is a u_short, jt and jf u_chars, "
                "k a 32-bit unsigned int"))
        out.append((int(code), int(jt), int(jf), int(k)))
    return tuple(out)


def _set_program(system: System, fd: int, request: int, program: Program | None
                 ) -> tuple[Insn, ...]:
    insns = program_insns(request_name(request), program)
    array = ffi.new("struct bpf_insn[]", max(len(insns), 1))
    for slot, (code, jt, jf, k) in zip(array, insns):
        slot.code, slot.jt, slot.jf, slot.k = code, jt, jf, k
    prog = ffi.new("struct bpf_program *")
    prog.bf_len = len(insns)
    prog.bf_insns = array if insns else ffi.NULL  # `array` outlives the call
    _call(system, fd, request, prog)
    return insns


def set_filter(system: System, fd: int, program: Program | None) -> tuple[Insn, ...]:
    """BIOCSETF: install the read filter (None or empty: accept everything),
    discarding buffered packets; returns the instructions installed."""
    return _set_program(system, fd, lib.BIOCSETF, program)


def set_filter_nr(system: System, fd: int, program: Program | None) -> tuple[Insn, ...]:
    """BIOCSETFNR: install the read filter, keeping buffered packets and counters."""
    return _set_program(system, fd, lib.BIOCSETFNR, program)


def set_write_filter(system: System, fd: int, program: Program | None) -> tuple[Insn, ...]:
    """BIOCSETWF: install the filter written frames must pass."""
    return _set_program(system, fd, lib.BIOCSETWF, program)


# -- interface and link type --------------------------------------------------


def set_if(system: System, fd: int, ifname: str) -> None:
    """BIOCSETIF: attach to the interface ``ifname``."""
    _call(system, fd, lib.BIOCSETIF, new_ifreq("BIOCSETIF", ifname))


def get_if(system: System, fd: int) -> str:
    """BIOCGETIF: the attached interface's name (EINVAL when not attached)."""
    ifr = ffi.new("struct ifreq *")
    _call(system, fd, lib.BIOCGETIF, ifr)
    name: bytes = ffi.string(ifr.ifr_name)
    return name.decode(errors="replace")


def get_dlt(system: System, fd: int) -> int:
    """BIOCGDLT: the link type of captured packets (``DLT_*``)."""
    return get_uint(system, fd, lib.BIOCGDLT)


def set_dlt(system: System, fd: int, dlt: int) -> None:
    """BIOCSDLT: pick another link type the interface offers."""
    set_uint(system, fd, lib.BIOCSDLT, dlt)


def get_dltlist(system: System, fd: int) -> list[int]:
    """BIOCGDLTLIST: the link types the attached interface offers.

    Asks for the count first, then the list; if the list grew in between
    (ENOMEM) it asks again.
    """
    while True:
        count = ffi.new("struct bpf_dltlist *")  # bfl_list NULL: just count
        _call(system, fd, lib.BIOCGDLTLIST, count)
        n = int(count.bfl_len)
        items = ffi.new("u_int[]", max(n, 1))
        bfl = ffi.new("struct bpf_dltlist *")
        bfl.bfl_len = n
        bfl.bfl_list = items  # `items` stays alive until the call returns
        try:
            _call(system, fd, lib.BIOCGDLTLIST, bfl)
        except BPFError as err:
            if err.errno == errno.ENOMEM:
                continue
            raise
        return [int(x) for x in items[0:int(bfl.bfl_len)]]


def get_iflist(system: System, fd: int) -> tuple[int, bytes]:
    """BIOCGETIFLIST (FreeBSD main from 2025-12): ``(count, entries)``, the
    number of interfaces with a BPF tap and the kernel's list as bytes.

    Raises :class:`bsdbpf.UnsupportedError` where the headers lack the request.
    """
    if not HAS_BIOCGETIFLIST:
        raise from_errno(errno.ENOTTY, "BIOCGETIFLIST", cls=UnsupportedError, hint=(
            "this build's FreeBSD headers have no BIOCGETIFLIST (FreeBSD main from "
            "2025-12-15 has it)"))
    while True:
        probe = ffi.new("struct bpf_iflist *")  # bi_size 0: the size needed and the count
        _call(system, fd, lib.BIOCGETIFLIST, probe)
        size = int(probe.bi_size)
        buf = ffi.new("char[]", max(size, 1))
        il = ffi.new("struct bpf_iflist *")
        il.bi_size, il.bi_ubuf = size, buf
        try:
            _call(system, fd, lib.BIOCGETIFLIST, il)
        except BPFError as err:
            if err.errno == errno.ENOSPC:
                continue  # an interface arrived in between
            raise
        return int(il.bi_count), bytes(ffi.buffer(buf, min(int(il.bi_size), size)))


def promisc(system: System, fd: int) -> None:
    """BIOCPROMISC: put the attached interface in promiscuous mode."""
    _call(system, fd, lib.BIOCPROMISC)


# -- options ------------------------------------------------------------------


def set_immediate(system: System, fd: int, on: bool) -> None:
    """BIOCIMMEDIATE: hand packets over as they arrive."""
    set_uint(system, fd, lib.BIOCIMMEDIATE, bool(on))


def set_feedback(system: System, fd: int, on: bool) -> None:
    """BIOCFEEDBACK: also capture the frames this descriptor writes."""
    set_uint(system, fd, lib.BIOCFEEDBACK, bool(on))


def get_hdrcmplt(system: System, fd: int) -> bool:
    """BIOCGHDRCMPLT: written frames carry their own source address."""
    return bool(get_uint(system, fd, lib.BIOCGHDRCMPLT))


def set_hdrcmplt(system: System, fd: int, on: bool) -> None:
    """BIOCSHDRCMPLT."""
    set_uint(system, fd, lib.BIOCSHDRCMPLT, bool(on))


def get_direction(system: System, fd: int) -> int:
    """BIOCGDIRECTION: ``BPF_D_IN``, ``BPF_D_INOUT`` or ``BPF_D_OUT``."""
    return get_uint(system, fd, lib.BIOCGDIRECTION)


def set_direction(system: System, fd: int, direction: int) -> None:
    """BIOCSDIRECTION."""
    set_uint(system, fd, lib.BIOCSDIRECTION, direction)


def get_tstamp(system: System, fd: int) -> int:
    """BIOCGTSTAMP: the timestamp format and clock word (``BPF_T_*``)."""
    return get_uint(system, fd, lib.BIOCGTSTAMP)


def set_tstamp(system: System, fd: int, word: int) -> None:
    """BIOCSTSTAMP."""
    set_uint(system, fd, lib.BIOCSTSTAMP, word)


def get_rtimeout(system: System, fd: int) -> tuple[int, int]:
    """BIOCGRTIMEOUT: the read timeout as ``(seconds, microseconds)``; (0, 0) is none."""
    tv = ffi.new("struct timeval *")
    _call(system, fd, lib.BIOCGRTIMEOUT, tv)
    return int(tv.tv_sec), int(tv.tv_usec)


def set_rtimeout(system: System, fd: int, seconds: int, microseconds: int) -> None:
    """BIOCSRTIMEOUT: the read timeout; (0, 0) removes it."""
    op = "BIOCSRTIMEOUT"
    bits = 8 * ffi.sizeof("time_t")
    tv = ffi.new("struct timeval *")
    tv.tv_sec = _checked(op, seconds, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, "time_t")
    tv.tv_usec = _checked(op, microseconds, -(2**31), 2**31 - 1, "suseconds_t")
    _call(system, fd, lib.BIOCSRTIMEOUT, tv)


def get_rsig(system: System, fd: int) -> int:
    """BIOCGRSIG: the signal sent when packets arrive (FIOASYNC)."""
    return get_uint(system, fd, lib.BIOCGRSIG)


def set_rsig(system: System, fd: int, sig: int) -> None:
    """BIOCSRSIG."""
    set_uint(system, fd, lib.BIOCSRSIG, sig)


def set_vlanpcp(system: System, fd: int, pcp: int) -> None:
    """BIOCSETVLANPCP: the 802.1p priority of written frames (0-7; FreeBSD 13+)."""
    if not HAS_BIOCSETVLANPCP:
        raise from_errno(errno.ENOTTY, "BIOCSETVLANPCP", cls=UnsupportedError,
                         hint="this build's FreeBSD headers have no BIOCSETVLANPCP")
    set_uint(system, fd, lib.BIOCSETVLANPCP, pcp)


def get_stats(system: System, fd: int) -> BpfStat:
    """BIOCGSTATS: packets offered to and dropped by the descriptor."""
    st = ffi.new("struct bpf_stat *")
    _call(system, fd, lib.BIOCGSTATS, st)
    return BpfStat(int(st.bs_recv), int(st.bs_drop))


def get_version(system: System, fd: int) -> BpfVersion:
    """BIOCVERSION: the BPF version the kernel implements."""
    v = ffi.new("struct bpf_version *")
    _call(system, fd, lib.BIOCVERSION, v)
    return BpfVersion(int(v.bv_major), int(v.bv_minor))


def lock(system: System, fd: int) -> None:
    """BIOCLOCK: lock the descriptor against reconfiguration, for good."""
    _call(system, fd, lib.BIOCLOCK)


# -- the generic file requests -----------------------------------------------


def nread(system: System, fd: int) -> int:
    """FIONREAD: bytes of captured packets ready to be read."""
    return get_int(system, fd, lib.FIONREAD)


def set_nonblocking(system: System, fd: int, on: bool) -> None:
    """FIONBIO: non-blocking reads."""
    set_int(system, fd, lib.FIONBIO, bool(on))


def set_async(system: System, fd: int, on: bool) -> None:
    """FIOASYNC: signal the owner (FIOSETOWN) when packets arrive."""
    set_int(system, fd, lib.FIOASYNC, bool(on))


def get_owner(system: System, fd: int) -> int:
    """FIOGETOWN: the SIGIO owner, a pid (> 0) or a process group (< 0)."""
    return get_int(system, fd, lib.FIOGETOWN)


def set_owner(system: System, fd: int, owner: int) -> None:
    """FIOSETOWN: a pid (> 0), a process group (< 0) or nobody (0)."""
    set_int(system, fd, lib.FIOSETOWN, owner)


def get_pgrp(system: System, fd: int) -> int:
    """TIOCGPGRP: the SIGIO owner's process group, as a positive number."""
    return get_int(system, fd, lib.TIOCGPGRP)


def set_pgrp(system: System, fd: int, pgrp: int) -> None:
    """TIOCSPGRP: make process group ``pgrp`` the SIGIO owner."""
    set_int(system, fd, lib.TIOCSPGRP, pgrp)


def set_cloexec(system: System, fd: int) -> None:
    """FIOCLEX: close the descriptor on exec."""
    _call(system, fd, lib.FIOCLEX)


def clear_cloexec(system: System, fd: int) -> None:
    """FIONCLEX: keep the descriptor open across exec."""
    _call(system, fd, lib.FIONCLEX)


#: Every request's function, by the request's C name.
BY_REQUEST: dict[str, Callable[..., Any]] = {
    "BIOCGBLEN": get_blen, "BIOCSBLEN": set_blen, "BIOCSETF": set_filter,
    "BIOCFLUSH": flush, "BIOCPROMISC": promisc, "BIOCGDLT": get_dlt, "BIOCGETIF": get_if,
    "BIOCSETIF": set_if, "BIOCSRTIMEOUT": set_rtimeout, "BIOCGRTIMEOUT": get_rtimeout,
    "BIOCGSTATS": get_stats, "BIOCIMMEDIATE": set_immediate, "BIOCVERSION": get_version,
    "BIOCGRSIG": get_rsig, "BIOCSRSIG": set_rsig, "BIOCGHDRCMPLT": get_hdrcmplt,
    "BIOCSHDRCMPLT": set_hdrcmplt, "BIOCGDIRECTION": get_direction,
    "BIOCSDIRECTION": set_direction, "BIOCSDLT": set_dlt, "BIOCGDLTLIST": get_dltlist,
    "BIOCLOCK": lock, "BIOCSETWF": set_write_filter, "BIOCFEEDBACK": set_feedback,
    "BIOCGETBUFMODE": get_bufmode, "BIOCSETBUFMODE": set_bufmode, "BIOCGETZMAX": get_zmax,
    "BIOCROTZBUF": rot_zbuf, "BIOCSETZBUF": set_zbuf, "BIOCSETFNR": set_filter_nr,
    "BIOCGTSTAMP": get_tstamp, "BIOCSTSTAMP": set_tstamp, "BIOCSETVLANPCP": set_vlanpcp,
    "BIOCGETIFLIST": get_iflist, "FIONREAD": nread, "FIONBIO": set_nonblocking,
    "FIOASYNC": set_async, "FIOSETOWN": set_owner, "FIOGETOWN": get_owner,
    "FIOCLEX": set_cloexec, "FIONCLEX": clear_cloexec, "TIOCSPGRP": set_pgrp,
    "TIOCGPGRP": get_pgrp,
}


# -- int sysctls --------------------------------------------------------------


def decode_int(name: str, data: bytes) -> int:
    """The value of the int sysctl ``name`` from its 4 bytes (host byte order)."""
    if len(data) != INT_SIZE:
        raise from_errno(errno.EINVAL, f"sysctl {name}", cls=InvalidArgument, hint=(
            f"this is not an int sysctl: its value is {len(data)} bytes, an int's is "
            f"{INT_SIZE}"))
    return int.from_bytes(data, sys.byteorder, signed=True)


def encode_int(name: str, value: int) -> bytes:
    """The 4 bytes (host byte order) that set the int sysctl ``name`` to ``value``."""
    value = _checked(f"sysctl {name}", value, INT_MIN, INT_MAX, "int")
    return value.to_bytes(INT_SIZE, sys.byteorder, signed=True)


def sysctl_int(system: System, name: str, new: int | None = None) -> int:
    """Read the int sysctl ``name``, and set it to ``new`` if given; returns
    the value before any write, as sysctlbyname(3) does."""
    data = None if new is None else encode_int(name, new)
    return decode_int(name, system.sysctlbyname(name, data))


def sysctl_bytes(system: System, name: str, new: bytes | None = None) -> bytes:
    """Read (and with ``new``, write) a sysctl in FreeBSD's binary form."""
    return system.sysctlbyname(name, new)
