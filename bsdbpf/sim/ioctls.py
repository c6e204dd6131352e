"""bpfioctl(): the simulated driver's requests, each handler registered for
its requests right where it is written (spec section e).

A handler gets the kernel, the descriptor, the request's name and the kernel's
copy of the argument (``kbuf``, copied in and out by the generic layer in
:meth:`Kernel.ioctl`).  It raises through :func:`bsdbpf.errors.from_errno`.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any, Callable

from bsdbpf._native import ffi, lib
from bsdbpf.errors import SimulatedPanic, from_errno
from bsdbpf.sim.memory import in_one_shared_mapping, is_mapped
from bsdbpf.sim.processes import owner_error

if TYPE_CHECKING:
    from bsdbpf.sim.kernel import Kernel, _Descriptor

__all__ = ["HANDLERS", "LOCKED_OK"]

Handler = Callable[["Kernel", "_Descriptor", str, Any], None]
HANDLERS: dict[int, Handler] = {}

PAGE_SIZE = 4096
BPF_MAX_PAGES = 512
ZBUF_MAX = BPF_MAX_PAGES * PAGE_SIZE
ZBUF_HDR = ffi.sizeof("struct bpf_zbuf_header")
NSIG = 32
BPF_PRIO_MAX = 7
HZ = lib.BSDBPF_SIM_HZ
TICK_US: int = 1_000_000 // HZ
INT_MAX = 2**31 - 1
U32 = 0xFFFFFFFF

# Requests a BIOCLOCK'ed descriptor may still use (bpf.c's lock filter).
LOCKED_OK = frozenset({
    lib.BIOCGBLEN, lib.BIOCFLUSH, lib.BIOCGDLT, lib.BIOCGDLTLIST, lib.BIOCGETIF,
    lib.BIOCGRTIMEOUT, lib.BIOCGSTATS, lib.BIOCVERSION, lib.BIOCGRSIG, lib.BIOCGHDRCMPLT,
    lib.BIOCSTSTAMP, lib.BIOCFEEDBACK, lib.FIONREAD, lib.BIOCLOCK, lib.BIOCSRTIMEOUT,
    lib.BIOCIMMEDIATE, lib.TIOCGPGRP, lib.BIOCROTZBUF,
})


def handles(*requests: int) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``requests``."""

    def register(handler: Handler) -> Handler:
        for request in requests:
            HANDLERS[request] = handler
        return handler

    return register


def _fail(err: int, op: str, **ctx: Any) -> Exception:
    return from_errno(err, op, **ctx)


def _uint(kbuf: Any) -> Any:
    return ffi.cast("unsigned int *", kbuf)


def _int(kbuf: Any) -> Any:
    return ffi.cast("int *", kbuf)


def _address(ptr: Any) -> int:
    return int(ffi.cast("uintptr_t", ptr))


# -- flags and plain values ---------------------------------------------------------------

def _setter(knob: int, read: Callable[[Any], int]) -> Handler:
    def handler(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
        k._set(desc, knob, read(kbuf))

    return handler


def _getter(field: str) -> Handler:
    def handler(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
        _uint(kbuf)[0] = getattr(k._state(desc), field)

    return handler


def _flag(kbuf: Any) -> int:
    return int(_uint(kbuf)[0] != 0)


# bpf.c stores FIOASYNC's int as given: any non-zero value, negative too, enables.
handles(lib.FIOASYNC)(_setter(lib.BSDBPF_SIM_FASYNC, lambda kbuf: int(_int(kbuf)[0])))
handles(lib.BIOCIMMEDIATE)(_setter(lib.BSDBPF_SIM_IMMEDIATE, _flag))
handles(lib.BIOCSHDRCMPLT)(_setter(lib.BSDBPF_SIM_HDRCMPLT, _flag))
handles(lib.BIOCFEEDBACK)(_setter(lib.BSDBPF_SIM_FEEDBACK, _flag))
handles(lib.BIOCGRSIG)(_getter("sig"))
handles(lib.BIOCGHDRCMPLT)(_getter("hdrcmplt"))
handles(lib.BIOCGDIRECTION)(_getter("direction"))
handles(lib.BIOCGTSTAMP)(_getter("tstamp"))
handles(lib.BIOCGBLEN)(_getter("bufsize"))
handles(lib.BIOCGETBUFMODE)(_getter("bufmode"))


@handles(lib.FIONBIO)
def _fionbio(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    """The generic layer already set the file's flag."""


@handles(lib.FIONREAD)
def _fionread(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    _int(kbuf)[0] = lib.bsdbpf_sim_fionread(desc.c)


@handles(lib.BIOCGSTATS)
def _gstats(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    st = k._state(desc)
    stat = ffi.cast("struct bpf_stat *", kbuf)
    stat.bs_recv = st.rcount & U32
    stat.bs_drop = st.dcount & U32


@handles(lib.BIOCVERSION)
def _version(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    v = ffi.cast("struct bpf_version *", kbuf)
    v.bv_major, v.bv_minor = lib.BPF_MAJOR_VERSION, lib.BPF_MINOR_VERSION


@handles(lib.BIOCSRSIG)
def _srsig(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    sig = _uint(kbuf)[0]
    if sig >= NSIG:
        raise _fail(errno.EINVAL, op)
    k._set(desc, lib.BSDBPF_SIM_SIG, sig)


@handles(lib.BIOCSDIRECTION)
def _sdirection(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    value = _uint(kbuf)[0]
    if value not in (lib.BPF_D_IN, lib.BPF_D_INOUT, lib.BPF_D_OUT):
        raise _fail(errno.EINVAL, op)
    k._set(desc, lib.BSDBPF_SIM_DIRECTION, value)


@handles(lib.BIOCSTSTAMP)
def _ststamp(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    value = _uint(kbuf)[0]
    fmt = value & lib.BPF_T_FORMAT_MASK
    valid = value == lib.BPF_T_NONE or (
        fmt != lib.BPF_T_NONE and value & ~(lib.BPF_T_FORMAT_MASK | lib.BPF_T_FLAG_MASK) == 0)
    if not valid:
        raise _fail(errno.EINVAL, op)
    k._set(desc, lib.BSDBPF_SIM_TSTAMP, value)


@handles(lib.BIOCLOCK)
def _lock(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    k._set(desc, lib.BSDBPF_SIM_LOCKED, 1)


@handles(lib.BIOCSETVLANPCP)
def _vlanpcp(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    value = _uint(kbuf)[0]
    if value > BPF_PRIO_MAX:
        raise _fail(errno.EINVAL, op)
    desc.vlan_pcp = value


# -- timeouts -------------------------------------------------------------------------------

def _tvtohz(sec: int, usec: int) -> int:
    """tvtohz(): ticks for a timeval, rounded up, plus one for the current tick."""
    if sec < 0 or (sec == 0 and usec <= 0):
        return 1
    return min(-(-(sec * 1_000_000 + usec) // TICK_US) + 1, INT_MAX)


@handles(lib.BIOCSRTIMEOUT)
def _srtimeout(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    tv = ffi.cast("struct timeval *", kbuf)
    sec, usec = int(tv.tv_sec), int(tv.tv_usec)
    if sec < 0 or usec < 0 or usec >= 1_000_000:  # itimerfix()
        raise _fail(errno.EINVAL, op)
    if sec == 0 and 0 < usec < TICK_US // 16:
        usec = TICK_US // 16
    k._set(desc, lib.BSDBPF_SIM_RTOUT, _tvtohz(sec, usec) - 1)


@handles(lib.BIOCGRTIMEOUT)
def _grtimeout(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    rtout = k._state(desc).rtout
    tv = ffi.cast("struct timeval *", kbuf)
    tv.tv_sec = rtout // HZ
    tv.tv_usec = (rtout % HZ) * TICK_US


# -- SIGIO ownership ------------------------------------------------------------------------

@handles(lib.FIOSETOWN, lib.TIOCSPGRP)
def _setown(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    value = int(_int(kbuf)[0])
    owner = -value if op == "TIOCSPGRP" else value
    err = owner_error(owner)
    if err:
        raise _fail(err, op, hint="the owner must be an existing process or process "
                    "group in the caller's session")
    k._set(desc, lib.BSDBPF_SIM_OWNER, owner)


@handles(lib.FIOGETOWN, lib.TIOCGPGRP)
def _getown(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    owner = k._state(desc).owner
    _int(kbuf)[0] = -owner if op == "TIOCGPGRP" else owner


# -- buffers --------------------------------------------------------------------------------

def _would_panic(k: Kernel, desc: _Descriptor, op: str) -> None:
    st = k._state(desc)
    if st.bufmode == lib.BPF_BUFMODE_ZBUF and not st.has_sbuf:
        raise from_errno(errno.EFAULT, op, cls=SimulatedPanic, hint=(
            f"FreeBSD's kernel would dereference a NULL store buffer and panic: {op} in "
            "zero-copy mode needs BIOCSETZBUF first"))


@handles(lib.BIOCSETBUFMODE)
def _setbufmode(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    mode = _uint(kbuf)[0]
    zc_on = k.sysctls["net.bpf.zerocopy_enable"] != 0
    if not (mode == lib.BPF_BUFMODE_BUFFER or (mode == lib.BPF_BUFMODE_ZBUF and zc_on)):
        raise _fail(errno.EINVAL, op)
    st = k._state(desc)
    if st.has_sbuf or st.has_hbuf or st.attached:
        raise _fail(errno.EBUSY, op)
    k._set(desc, lib.BSDBPF_SIM_BUFMODE, mode)


@handles(lib.BIOCGETZMAX)
def _getzmax(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    if k._state(desc).bufmode != lib.BPF_BUFMODE_ZBUF:
        raise _fail(errno.EOPNOTSUPP, op)
    ffi.cast("size_t *", kbuf)[0] = ZBUF_MAX


def _zbuf_setup(buf: Any, buflen: int, op: str) -> None:
    """zbuf_setup(): check one buffer, wire it and zero its header.  BIOCSETZBUF
    runs it for bufa, then bufb, before its last check, so a later failure
    leaves the headers already set up zeroed."""
    addr = _address(buf)
    if addr % PAGE_SIZE or buflen % PAGE_SIZE or buflen // PAGE_SIZE > BPF_MAX_PAGES:
        raise _fail(errno.EINVAL, op)
    zeros = ffi.new("char[]", ZBUF_HDR)
    if not is_mapped(addr, buflen, write=True) or lib.bsdbpf_sim_copyout(
            buf, zeros, ZBUF_HDR) != 0:
        raise _fail(errno.EFAULT, op)


@handles(lib.BIOCSETZBUF)
def _setzbuf(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    if k._state(desc).bufmode != lib.BPF_BUFMODE_ZBUF:
        raise _fail(errno.EOPNOTSUPP, op)
    bz = ffi.cast("struct bpf_zbuf *", kbuf)
    buflen = int(bz.bz_buflen)
    if ffi.NULL in (bz.bz_bufa, bz.bz_bufb) or buflen == 0:
        raise _fail(errno.EINVAL, op)
    _zbuf_setup(bz.bz_bufa, buflen, op)
    _zbuf_setup(bz.bz_bufb, buflen, op)
    st = k._state(desc)
    if st.has_sbuf or st.attached:
        raise _fail(errno.EINVAL, op,
                    hint="zero-copy buffers are registered once, before BIOCSETIF")
    shared = [in_one_shared_mapping(_address(b), buflen) for b in (bz.bz_bufa, bz.bz_bufb)]
    rc = lib.bsdbpf_sim_setzbuf(desc.c, bz.bz_bufa, bz.bz_bufb, buflen, *shared)
    if rc < 0:
        raise _fail(-rc, op)


@handles(lib.BIOCROTZBUF)
def _rotzbuf(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    if k._state(desc).bufmode != lib.BPF_BUFMODE_ZBUF:
        raise _fail(errno.EOPNOTSUPP, op)
    lib.bsdbpf_sim_rotzbuf(desc.c, ffi.cast("struct bpf_zbuf *", kbuf))


def _clamped_bufsize(k: Kernel, size: int) -> int:
    # bpf_buffer_ioctl_sblen compares the u_int size with the int sysctl,
    # which C converts to unsigned: both sides are unsigned 32-bit.
    size &= U32
    maxsize = k.sysctls["net.bpf.maxbufsize"] & U32
    return maxsize if size > maxsize else max(size, lib.BPF_MINBUFSIZE)


def _alloc(desc: _Descriptor, op: str, size: int) -> None:
    rc = lib.bsdbpf_sim_alloc_buffers(desc.c, size)
    if rc < 0:
        raise _fail(-rc, op)


@handles(lib.BIOCSBLEN)
def _sblen(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    st = k._state(desc)
    if st.bufmode != lib.BPF_BUFMODE_BUFFER:
        raise _fail(errno.EOPNOTSUPP, op)
    size = _clamped_bufsize(k, _uint(kbuf)[0])
    _uint(kbuf)[0] = size  # the caller sees this only on success
    if st.attached:
        raise _fail(errno.EINVAL, op)
    _alloc(desc, op, size)


@handles(lib.BIOCFLUSH)
def _flush(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    _would_panic(k, desc, op)
    lib.bsdbpf_sim_reset(desc.c)


# -- filters --------------------------------------------------------------------------------

@handles(lib.BIOCSETF, lib.BIOCSETFNR, lib.BIOCSETWF)
def _setf(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    prog = ffi.cast("struct bpf_program *", kbuf)
    flen = int(prog.bf_len)
    if flen > (k.sysctls["net.bpf.maxinsns"] & U32):
        raise _fail(errno.EINVAL, op, hint=f"at most net.bpf.maxinsns="
                    f"{k.sysctls['net.bpf.maxinsns']} instructions")
    if prog.bf_insns == ffi.NULL and flen != 0:
        raise _fail(errno.EINVAL, op)
    # bpf_setf(): copy the program in first, then validate the kernel's copy,
    # so nothing the process does afterwards changes what was checked.  A
    # failed copyin() is EINVAL too, like an invalid program.
    insns = ffi.new("struct bpf_insn[]", max(flen, 1))
    if flen and (lib.bsdbpf_sim_copyin(insns, prog.bf_insns, ffi.sizeof(insns[0]) * flen) != 0
                 or not lib.bsdbpf_validate(insns, flen)):
        raise _fail(errno.EINVAL, op)
    if op == "BIOCSETF":
        _would_panic(k, desc, op)
    rc = lib.bsdbpf_sim_set_filter(desc.c, int(op == "BIOCSETWF"),
                                   insns if flen else ffi.NULL, flen, int(op == "BIOCSETF"))
    if rc < 0:
        raise _fail(-rc, op)
    if op != "BIOCSETWF" and flen:
        _check_upgrade(k, desc, op, flen, insns)


def _check_upgrade(k: Kernel, desc: _Descriptor, op: str, flen: int, insns: Any) -> None:
    """bpf_check_upgrade(): a writer-only descriptor starts reading once it
    sets a real filter (or a second snaplen-only one)."""
    if desc.writer_count == 0:
        return
    is_snap = op == "BIOCSETF" and flen == 1 and insns[0].code == lib.BPF_RET | lib.BPF_K
    if is_snap:
        desc.writer_count -= 1
    if not is_snap or desc.writer_count == 0:
        desc.writer_count = 0
        k._set(desc, lib.BSDBPF_SIM_WRITER, 0)
        k._moved_to_head(desc)  # bpf_upgraded(): to the head of the reader list


# -- interfaces -----------------------------------------------------------------------------

@handles(lib.BIOCSETIF)
def _setif(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    st = k._state(desc)
    if st.bufmode == lib.BPF_BUFMODE_BUFFER and not st.has_sbuf:
        # Allocated before the lookup: even an unknown name freezes the mode.
        _alloc(desc, op, _clamped_bufsize(k, st.bufsize))
    name = ffi.string(ffi.cast("struct ifreq *", kbuf).ifr_name, lib.IFNAMSIZ).decode(
        errors="replace")
    iface = k._interfaces.get(name)
    if iface is None:
        raise _fail(errno.ENXIO, op, ifname=name)
    if not k._state(desc).has_sbuf:
        raise _fail(errno.EINVAL, op, ifname=name)
    tap = iface.taps[0]
    if desc.tap is not tap:
        k._attach(desc, tap)
    else:
        lib.bsdbpf_sim_reset(desc.c)


@handles(lib.BIOCGETIF)
def _getif(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    name = k._need_tap(desc, op).iface.name.encode()
    ffi.memmove(ffi.cast("struct ifreq *", kbuf).ifr_name, name, len(name))


@handles(lib.BIOCGDLT)
def _gdlt(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    _uint(kbuf)[0] = k._need_tap(desc, op).dlt


@handles(lib.BIOCGDLTLIST)
def _gdltlist(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    dlts = [t.dlt for t in k._need_tap(desc, op).iface.taps]
    bfl = ffi.cast("struct bpf_dltlist *", kbuf)
    if bfl.bfl_list == ffi.NULL:
        bfl.bfl_len = len(dlts)
        return
    if len(dlts) > bfl.bfl_len:
        raise _fail(errno.ENOMEM, op)
    out = ffi.new("u_int[]", dlts)
    if lib.bsdbpf_sim_copyout(bfl.bfl_list, out, ffi.sizeof(out)) != 0:
        raise _fail(errno.EFAULT, op)  # copyout() failed
    bfl.bfl_len = len(dlts)


@handles(lib.BIOCSDLT)
def _sdlt(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    tap = k._need_tap(desc, op)
    dlt = _uint(kbuf)[0]
    if dlt == tap.dlt:
        return
    new = tap.iface.tap(dlt)
    if new is None:
        raise _fail(errno.EINVAL, op, hint=f"the interface offers DLTs "
                    f"{[t.dlt for t in tap.iface.taps]}")
    promisc = bool(k._state(desc).promisc)
    k._attach(desc, new)
    k._set_promisc(desc, promisc)


@handles(lib.BIOCPROMISC)
def _promisc(k: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
    k._need_tap(desc, op)
    k._set_promisc(desc, True)


def generic(desc: _Descriptor, request: int, kbuf: Any) -> bool:
    """sys_ioctl's own requests, before the driver: True if the driver is
    not called.  FIONBIO sets the file's flag and still reaches the driver
    (so even a locked descriptor's, refused there, sticks); FIOCLEX and
    FIONCLEX change close-on-exec and never reach it."""
    if request == lib.FIONBIO:
        os.set_blocking(desc.fd, not _int(kbuf)[0])
    elif request in (lib.FIOCLEX, lib.FIONCLEX):
        os.set_inheritable(desc.fd, request == lib.FIONCLEX)
        return True
    return False
