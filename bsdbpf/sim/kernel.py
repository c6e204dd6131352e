"""The simulated kernel's control plane: /dev/bpf's ioctls, read/write, sysctls.

It follows FreeBSD 14's bpf driver (spec sections b to e and Appendix A): the
order of checks, clamping and errno of every request.  Packets and buffers are
handled by the C engine in ``bsdbpf._native`` (csrc/sim_engine.c), on threads
of its own.  Errors are raised through :func:`bsdbpf.errors.from_errno`, as on
the real system.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
import weakref
import zlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, ClassVar

from bsdbpf._abi import request_name
from bsdbpf._native import ffi, lib
from bsdbpf.errors import (
    BPFError,
    InterfaceNotFound,
    PermissionDenied,
    SimulatedPanic,
    UnsupportedError,
    from_errno,
)
from bsdbpf.sim.memory import is_mapped

__all__ = ["Kernel", "TrafficGenerator"]

PAGE_SIZE = 4096
BPF_MAX_PAGES = 512
ZBUF_MAX = BPF_MAX_PAGES * PAGE_SIZE
ZBUF_HDR = ffi.sizeof("struct bpf_zbuf_header")
NSIG = 32
BPF_PRIO_MAX = 7
HZ = lib.BSDBPF_SIM_HZ
TICK_US: int = 1_000_000 // HZ
INT_MAX = 2**31 - 1
READ_SLICE_NS = 100_000_000  # return to Python this often so signals are handled
U32 = 0xFFFFFFFF

# Why Kernel.bridge() can fail, and what to do about it.
BRIDGE_ERRORS: dict[int, tuple[type[BPFError], str]] = {
    errno.EPERM: (PermissionDenied, "an AF_PACKET socket needs CAP_NET_RAW: run as root"),
    errno.ENXIO: (InterfaceNotFound, "the host has no interface of that name (`ip link`)"),
    errno.EOPNOTSUPP: (UnsupportedError, "bridging uses AF_PACKET, which only Linux has"),
}

# Link-header length of each supported DLT, as its driver attaches it.
LINK_HEADER = {lib.DLT_EN10MB: 14, lib.DLT_NULL: 4, lib.DLT_LOOP: 4, lib.DLT_RAW: 0,
               lib.DLT_PPP: 4}

# Requests a BIOCLOCK'ed descriptor may still use (bpf.c's lock filter).
LOCKED_OK = frozenset({
    lib.BIOCGBLEN, lib.BIOCFLUSH, lib.BIOCGDLT, lib.BIOCGDLTLIST, lib.BIOCGETIF,
    lib.BIOCGRTIMEOUT, lib.BIOCGSTATS, lib.BIOCVERSION, lib.BIOCGRSIG, lib.BIOCGHDRCMPLT,
    lib.BIOCSTSTAMP, lib.BIOCFEEDBACK, lib.FIONREAD, lib.BIOCLOCK, lib.BIOCSRTIMEOUT,
    lib.BIOCIMMEDIATE, lib.TIOCGPGRP, lib.BIOCROTZBUF,
})

SYSCTL_INTS = {  # net.bpf integer sysctls and FreeBSD's defaults
    "net.bpf.zerocopy_enable": 0,
    "net.bpf.bufsize": 4096,
    "net.bpf.maxbufsize": lib.BPF_MAXBUFSIZE,
    "net.bpf.maxinsns": lib.BPF_MAXINSNS,
    "net.bpf.optimize_writers": 0,
}
STATS = "net.bpf.stats"


def _fail(err: int, op: str, **ctx: Any) -> BPFError:
    return from_errno(err, op, **ctx)


@dataclass
class _Tap:
    """One (interface, DLT) pair: a bpf_if."""

    iface: _Interface
    dlt: int
    c: Any  # struct bsdbpf_sim_if *


@dataclass
class _Interface:
    name: str
    taps: list[_Tap] = field(default_factory=list)
    promisc: int = 0  # ifpromisc() reference count
    generator: TrafficGenerator | None = None
    bridged: bool = False

    def tap(self, dlt: int | None = None) -> _Tap | None:
        for t in self.taps:
            if dlt is None or t.dlt == dlt:
                return t
        return None


@dataclass
class _Descriptor:
    """The control plane's part of a struct bpf_d; the engine has the rest."""

    c: Any  # struct bsdbpf_sim_d *
    fread: bool  # the file's access mode (O_NONBLOCK is the fd's own flag)
    fwrite: bool
    writer_count: int = 0  # bd_writer: filters left before a writer-only d reads
    tap: _Tap | None = None
    vlan_pcp: int = 0
    pid: int = field(default_factory=os.getpid)

    @property
    def fd(self) -> int:
        return int(self.c.fd)


class _State:
    """Everything that must be freed with the kernel, apart from the Kernel object."""

    def __init__(self) -> None:
        self.c = lib.bsdbpf_sim_kernel_new()
        if self.c == ffi.NULL:
            raise MemoryError("cannot start the simulated kernel's threads")
        self.fds: dict[int, _Descriptor] = {}
        self.ifaces: dict[str, _Interface] = {}

    def shutdown(self) -> None:
        for desc in list(self.fds.values()):
            lib.bsdbpf_sim_d_free(desc.c)
        self.fds.clear()
        for iface in list(self.ifaces.values()):
            for t in iface.taps:
                lib.bsdbpf_sim_if_free(t.c)
        self.ifaces.clear()
        if self.c != ffi.NULL:
            lib.bsdbpf_sim_kernel_free(self.c)
            self.c = ffi.NULL


class TrafficGenerator:
    """Frames offered to an interface by a C thread: see :meth:`Kernel.generate`."""

    def __init__(self, kernel: Kernel, tap: _Tap) -> None:
        self._kernel = kernel
        self._tap = tap

    def _stats(self) -> Any:
        out = ffi.new("struct bsdbpf_sim_stats *")
        lib.bsdbpf_sim_gen_stats(self._tap.c, out)
        return out

    @property
    def offered(self) -> int:
        """Frames offered to the interface so far."""
        return int(self._stats().offered)

    @property
    def running(self) -> bool:
        """True while the thread is still offering frames."""
        return bool(self._stats().running)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every frame was offered (or the generator was stopped);
        True when done, False if ``timeout`` seconds passed first."""
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while self.running:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.001)
        lib.bsdbpf_sim_gen_wait(self._tap.c)
        return True

    def stop(self) -> None:
        """Stop offering frames and wait for the thread to end."""
        lib.bsdbpf_sim_gen_stop(self._tap.c)

    def __enter__(self) -> TrafficGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Kernel:
    """A simulated FreeBSD host: its /dev/bpf, its interfaces and net.bpf sysctls.

    ``uid`` is the simulated caller's user id: anything but 0 is unprivileged
    (EACCES opening /dev/bpf, EPERM writing sysctls or reading net.bpf.stats).
    The methods have the shape of the system calls (the :class:`bsdbpf.System`
    protocol), plus :meth:`add_interface`, :meth:`remove_interface`,
    :meth:`inject`, :meth:`generate` and :meth:`bridge`.
    """

    def __init__(self, uid: int = 0) -> None:
        self.uid = uid
        self._state = _State()
        self._finalizer = weakref.finalize(self, self._state.shutdown)
        self._lock = threading.RLock()  # BPF_LOCK: one control operation at a time
        self.sysctls: dict[str, int] = dict(SYSCTL_INTS)

    # -- lifetime ----------------------------------------------------------

    def shutdown(self) -> None:
        """Close every descriptor, remove every interface and stop the threads."""
        with self._lock:
            self._finalizer()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- interfaces --------------------------------------------------------

    def add_interface(
        self,
        name: str,
        dlt: int = lib.DLT_EN10MB,
        *,
        mtu: int = 1500,
        lladdr: bytes | None = None,
        extra_dlts: tuple[int, ...] = (),
    ) -> None:
        """Attach a synthetic interface with a BPF tap for ``dlt`` (and ``extra_dlts``)."""
        with self._lock:
            self._add_interface(name, (dlt, *extra_dlts), mtu, lladdr)

    def _add_interface(
        self, name: str, dlts: tuple[int, ...], mtu: int, lladdr: bytes | None
    ) -> _Interface:
        raw = name.encode()
        if not raw or len(raw) >= lib.IFNAMSIZ or b"\0" in raw:
            raise ValueError(f"interface name {name!r}: 1 to {lib.IFNAMSIZ - 1} bytes, no NUL")
        if name in self._state.ifaces:
            raise ValueError(f"interface {name!r} exists already")
        for dlt in dlts:
            if dlt not in LINK_HEADER:
                raise ValueError(f"DLT {dlt} is not simulated; use one of {sorted(LINK_HEADER)}")
        # A stable locally administered address derived from the name.
        mac = lladdr or b"\x02" + zlib.crc32(raw).to_bytes(4, "big") + b"\x01"
        if len(mac) != 6:
            raise ValueError("lladdr must be 6 bytes")
        iface = _Interface(name)
        for dlt in dlts:
            c = lib.bsdbpf_sim_if_new(self._state.c, raw, dlt, LINK_HEADER[dlt], mac, mtu)
            if c == ffi.NULL:
                raise MemoryError("out of memory adding an interface")
            iface.taps.append(_Tap(iface, dlt, c))
        self._state.ifaces[name] = iface
        return iface

    def remove_interface(self, name: str) -> None:
        """Detach the interface as FreeBSD does when it departs (bpfdetach)."""
        with self._lock:
            iface = self._interface(name, "remove_interface")
            for desc in self._state.fds.values():
                if desc.tap is not None and desc.tap.iface is iface:
                    desc.tap = None
                    self._store(desc, promisc=0)
            for t in iface.taps:
                lib.bsdbpf_sim_if_free(t.c)
            del self._state.ifaces[name]

    def interfaces(self) -> list[str]:
        """The names of the interfaces, in the order they were added."""
        return list(self._state.ifaces)

    def _interface(self, name: str, op: str) -> _Interface:
        iface = self._state.ifaces.get(name)
        if iface is None:
            raise from_errno(errno.ENXIO, op, ifname=name, cls=InterfaceNotFound,
                             hint=f"the simulated kernel has {self.interfaces()}")
        return iface

    def inject(self, ifname: str, frame: bytes, outgoing: bool = False) -> None:
        """Offer one frame to the interface's descriptors; returns once all saw it."""
        with self._lock:
            tap = self._interface(ifname, "inject").taps[0]
            data = ffi.from_buffer(frame)
            lib.bsdbpf_sim_inject(tap.c, data, len(data), int(outgoing))

    def generate(
        self,
        ifname: str,
        count: int,
        size: int = 64,
        rate: int = 0,
        outgoing: bool = False,
    ) -> TrafficGenerator:
        """Offer ``count`` frames of ``size`` bytes at ``rate`` per second (0: flat out).

        Each frame carries a 64-bit big-endian sequence number (from 0) right
        after the link header, and again in its last 8 bytes.
        """
        with self._lock:
            tap = self._interface(ifname, "generate").taps[0]
            rc = lib.bsdbpf_sim_gen_start(tap.c, count, size, rate, int(outgoing))
            if rc < 0:
                raise from_errno(-rc, "generate", ifname=ifname,
                                 hint=f"frames need at least {LINK_HEADER[tap.dlt] + 8} bytes")
            gen = TrafficGenerator(self, tap)
            tap.iface.generator = gen
            return gen

    def bridge(self, host_ifname: str, name: str | None = None) -> None:
        """Make a host interface a simulated Ethernet one, through AF_PACKET.

        Frames seen on the host interface (both directions) reach the
        simulated descriptors; frames written to them are sent on it.
        Needs CAP_NET_RAW (root) on Linux.
        """
        with self._lock:
            iface = self._add_interface(name or host_ifname, (lib.DLT_EN10MB,), 65535, None)
            rc = lib.bsdbpf_sim_bridge_start(iface.taps[0].c, host_ifname.encode())
            if rc < 0:
                self.remove_interface(iface.name)
                cls, hint = BRIDGE_ERRORS.get(-rc, (None, None))
                raise from_errno(-rc, "bridge", ifname=host_ifname, cls=cls, hint=hint)
            iface.bridged = True

    # -- the System protocol -----------------------------------------------

    def open(self, path: str, flags: int) -> int:
        if path not in ("/dev/bpf", "/dev/bpf0"):
            raise _fail(errno.ENOENT, "open")
        if self.uid != 0:
            raise _fail(errno.EACCES, "open")
        with self._lock:
            c = lib.bsdbpf_sim_d_new(self._state.c, self.sysctls["net.bpf.bufsize"] & U32)
            if c == ffi.NULL:
                raise _fail(errno.ENOMEM, "open")
            mode = flags & os.O_ACCMODE
            desc = _Descriptor(c, fread=mode != os.O_WRONLY, fwrite=mode != os.O_RDONLY)
            os.set_blocking(desc.fd, not flags & os.O_NONBLOCK)
            if not desc.fread:
                desc.writer_count = 2
            self._state.fds[desc.fd] = desc
            return desc.fd

    def close(self, fd: int) -> None:
        with self._lock:
            desc = self._desc(fd, "close")
            self._set_promisc(desc, False)
            del self._state.fds[fd]
            lib.bsdbpf_sim_d_free(desc.c)

    def _desc(self, fd: int, op: str) -> _Descriptor:
        desc = self._state.fds.get(fd)
        if desc is None:
            raise from_errno(errno.EBADF, op, hint="not an open /dev/bpf descriptor of this kernel")
        return desc

    def read(self, fd: int, buffer: Any) -> int:
        desc = self._desc(fd, "read")
        if not desc.fread:
            raise _fail(errno.EBADF, "read", hint="the descriptor was opened O_WRONLY")
        c = desc.c
        buf = ffi.from_buffer(buffer, require_writable=True)
        if len(buf) != c.bufsize:
            raise _fail(errno.EINVAL, "read")
        if c.bufmode != lib.BPF_BUFMODE_BUFFER:
            raise _fail(errno.EOPNOTSUPP, "read")
        nonblock = not os.get_blocking(fd)  # the file's flag at the time of the call
        now = lib.bsdbpf_sim_monotonic_ns()
        deadline = now + c.rtout * (1_000_000_000 // HZ) if c.rtout else 0
        first = 1
        while True:
            n = lib.bsdbpf_sim_read(c, buf, len(buf), int(nonblock), deadline,
                                    lib.bsdbpf_sim_monotonic_ns() + READ_SLICE_NS, first)
            first = 0
            if n != lib.BSDBPF_SIM_SLICE:
                break
        if n < 0:
            raise _fail(-n, "read")
        return int(n)

    def write(self, fd: int, data: Any) -> int:
        with self._lock:  # keeps the interface alive while the frame goes out
            desc = self._desc(fd, "write")
            if not desc.fwrite:
                raise _fail(errno.EBADF, "write", hint="the descriptor was opened O_RDONLY")
            buf = ffi.from_buffer(data)
            n = lib.bsdbpf_sim_write(desc.c, buf, len(buf))
        if n < 0:
            ifname = desc.tap.iface.name if desc.tap else None
            raise _fail(-n, "write", ifname=ifname)
        return int(n)

    def ioctl(self, fd: int, request: int, arg: Any = None) -> int:
        """ioctl(2), with the generic layer's rules: the argument's size comes
        from the request's encoding, IN data is copied in first, OUT data is
        zeroed and copied back only when the driver succeeds."""
        op = request_name(request)
        request &= 0xFFFFFFFF
        length = (request >> 16) & lib.IOCPARM_MASK
        inout = request & lib.IOC_DIRMASK
        if (inout & (lib.IOC_IN | lib.IOC_OUT) and length == 0) or (
            inout == lib.IOC_VOID and length not in (0, ffi.sizeof("int"))
        ) or inout == 0:
            raise _fail(errno.ENOTTY, op)
        with self._lock:
            desc = self._desc(fd, op)
            kbuf = ffi.new("char[]", max(length, 1))
            if inout & (lib.IOC_IN | lib.IOC_OUT) and length:
                user = self._user_arg(arg, length, op)
                if inout & lib.IOC_IN:
                    ffi.memmove(kbuf, user, length)
            self._generic(desc, request, kbuf)
            self._driver(desc, request, op, kbuf)
            if inout & lib.IOC_OUT and length:
                ffi.memmove(user, kbuf, length)
        return 0

    @staticmethod
    def _user_arg(arg: Any, length: int, op: str) -> Any:
        if arg is None or arg == ffi.NULL:
            raise _fail(errno.EFAULT, op, hint=f"{op} needs a pointer to {length} bytes")
        if not isinstance(arg, ffi.CData):
            raise TypeError(f"{op}: the argument must be a cffi pointer")
        ctype = ffi.typeof(arg)
        size = None
        if ctype.kind == "array" and ctype.length is not None:
            size = ffi.sizeof(arg)
        elif ctype.kind == "pointer" and ctype.item.kind in ("primitive", "struct", "union"):
            size = ffi.sizeof(ctype.item)
        if size is not None and size < length:
            raise _fail(errno.EFAULT, op, hint=f"{op} copies {length} bytes; got {size}")
        return arg

    @staticmethod
    def _generic(desc: _Descriptor, request: int, kbuf: Any) -> None:
        """sys_ioctl sets the file's non-blocking flag before the driver runs
        (so even a locked descriptor's FIONBIO, refused by the driver, sticks)."""
        if request == lib.FIONBIO:
            os.set_blocking(desc.fd, not ffi.cast("int *", kbuf)[0])

    # -- bpfioctl() ----------------------------------------------------------

    def _driver(self, desc: _Descriptor, request: int, op: str, kbuf: Any) -> None:
        c = desc.c
        desc.pid = os.getpid()
        lib.bsdbpf_sim_lock(c)
        try:
            lib.bsdbpf_sim_enter(c)
            locked = bool(c.locked)
        finally:
            lib.bsdbpf_sim_unlock(c)
        if request in (lib.FIOCLEX, lib.FIONCLEX):
            return  # the generic layer's own
        if locked and request not in LOCKED_OK:
            raise _fail(errno.EPERM, op)
        handler = self._HANDLERS.get(request)
        if handler is None:
            raise _fail(errno.EINVAL, op, hint="FreeBSD 14's bpf driver has no such request")
        handler(self, desc, op, kbuf)

    def _store(self, desc: _Descriptor, **fields: int) -> None:
        """Set engine fields under the descriptor's lock (the packet and clock
        threads read them, as the kernel's do under BPFD_LOCK)."""
        def store() -> None:
            for name, value in fields.items():
                setattr(desc.c, name, value)

        self._locked(desc, store)

    def _locked(self, desc: _Descriptor, fn: Callable[[], Any]) -> Any:
        lib.bsdbpf_sim_lock(desc.c)
        try:
            return fn()
        finally:
            lib.bsdbpf_sim_unlock(desc.c)

    @staticmethod
    def _u(kbuf: Any, ctype: str = "unsigned int *") -> Any:
        return ffi.cast(ctype, kbuf)

    def _fionread(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        c = desc.c
        self._u(kbuf, "int *")[0] = c.slen + (c.hlen if c.hbuf != ffi.NULL else 0)

    def _getbufmode(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        self._u(kbuf)[0] = desc.c.bufmode

    def _setbufmode(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        mode = self._u(kbuf)[0]
        zc_on = self.sysctls["net.bpf.zerocopy_enable"] != 0
        if not (mode == lib.BPF_BUFMODE_BUFFER or (mode == lib.BPF_BUFMODE_ZBUF and zc_on)):
            raise _fail(errno.EINVAL, op)
        c = desc.c
        if any(p != ffi.NULL for p in (c.sbuf, c.hbuf, c.fbuf, c.bif)):
            raise _fail(errno.EBUSY, op)
        c.bufmode = mode

    def _getzmax(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        if desc.c.bufmode != lib.BPF_BUFMODE_ZBUF:
            raise _fail(errno.EOPNOTSUPP, op)
        self._u(kbuf, "size_t *")[0] = ZBUF_MAX

    def _setzbuf(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        c = desc.c
        if c.bufmode != lib.BPF_BUFMODE_ZBUF:
            raise _fail(errno.EOPNOTSUPP, op)
        bz = self._u(kbuf, "struct bpf_zbuf *")
        buflen = int(bz.bz_buflen)
        if ffi.NULL in (bz.bz_bufa, bz.bz_bufb) or buflen == 0:
            raise _fail(errno.EINVAL, op)
        _zbuf_setup(bz.bz_bufa, buflen, op)
        _zbuf_setup(bz.bz_bufb, buflen, op)
        if c.sbuf != ffi.NULL or c.bif != ffi.NULL:
            raise _fail(errno.EINVAL, op,
                        hint="zero-copy buffers are registered once, before BIOCSETIF")
        self._locked(desc, lambda: lib.bsdbpf_sim_setzbuf(c, bz.bz_bufa, bz.bz_bufb, buflen))

    def _rotzbuf(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        c = desc.c
        if c.bufmode != lib.BPF_BUFMODE_ZBUF:
            raise _fail(errno.EOPNOTSUPP, op)
        if c.sbuf == ffi.NULL:
            return  # no buffers: nothing to rotate (slen is 0)
        self._locked(desc, lambda: lib.bsdbpf_sim_rotzbuf(c, self._u(kbuf, "struct bpf_zbuf *")))

    def _gblen(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        self._u(kbuf)[0] = desc.c.bufsize

    def _clamped_bufsize(self, size: int) -> int:
        # bpf_buffer_ioctl_sblen compares the u_int size with the int sysctl,
        # which C converts to unsigned: both sides are unsigned 32-bit.
        size &= U32
        maxsize = self.sysctls["net.bpf.maxbufsize"] & U32
        return maxsize if size > maxsize else max(size, lib.BPF_MINBUFSIZE)

    def _alloc(self, desc: _Descriptor, op: str, size: int) -> None:
        rc = self._locked(desc, lambda: lib.bsdbpf_sim_alloc_buffers(desc.c, size))
        if rc < 0:
            raise _fail(-rc, op)

    def _sblen(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        c = desc.c
        if c.bufmode != lib.BPF_BUFMODE_BUFFER:
            raise _fail(errno.EOPNOTSUPP, op)
        size = self._clamped_bufsize(self._u(kbuf)[0])
        self._u(kbuf)[0] = size  # the caller sees this only on success
        if c.bif != ffi.NULL:
            raise _fail(errno.EINVAL, op)
        self._alloc(desc, op, size)

    def _setif(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        c = desc.c
        if c.bufmode == lib.BPF_BUFMODE_BUFFER and c.sbuf == ffi.NULL:
            # Allocated before the lookup: even an unknown name freezes the mode.
            self._alloc(desc, op, self._clamped_bufsize(c.bufsize))
        name = ffi.string(self._u(kbuf, "struct ifreq *").ifr_name, lib.IFNAMSIZ).decode(
            errors="replace")
        iface = self._state.ifaces.get(name)
        if iface is None:
            raise _fail(errno.ENXIO, op, ifname=name)
        if c.sbuf == ffi.NULL:
            raise _fail(errno.EINVAL, op, ifname=name)
        tap = iface.taps[0]
        if desc.tap is not tap:
            self._attach(desc, tap)
        else:
            self._locked(desc, lambda: lib.bsdbpf_sim_reset(c))

    def _attach(self, desc: _Descriptor, tap: _Tap) -> None:
        """bpf_attachd(): detach (dropping promiscuous mode), join the tap, then
        reset the buffers and counters and wake up (the engine does those two)."""
        self._set_promisc(desc, False)
        writer_only = self.sysctls["net.bpf.optimize_writers"] != 0 or desc.writer_count != 0
        if writer_only:
            desc.writer_count = 2
        self._store(desc, writer=int(writer_only))
        lib.bsdbpf_sim_attach(desc.c, tap.c)
        desc.tap = tap

    def _set_promisc(self, desc: _Descriptor, on: bool) -> None:
        if desc.tap is None or bool(desc.c.promisc) == on:
            return
        self._store(desc, promisc=int(on))
        desc.tap.iface.promisc += 1 if on else -1

    def _need_tap(self, desc: _Descriptor, op: str) -> _Tap:
        if desc.tap is None or desc.c.bif == ffi.NULL:
            raise _fail(errno.EINVAL, op)  # from_errno says to attach first
        return desc.tap

    def _getif(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        name = self._need_tap(desc, op).iface.name.encode()
        ffi.memmove(self._u(kbuf, "struct ifreq *").ifr_name, name, len(name))

    def _gdlt(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        self._u(kbuf)[0] = self._need_tap(desc, op).dlt

    def _gdltlist(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        dlts = [t.dlt for t in self._need_tap(desc, op).iface.taps]
        bfl = self._u(kbuf, "struct bpf_dltlist *")
        if bfl.bfl_list == ffi.NULL:
            bfl.bfl_len = len(dlts)
            return
        if len(dlts) > bfl.bfl_len:
            raise _fail(errno.ENOMEM, op)
        if not is_mapped(_address(bfl.bfl_list), len(dlts) * ffi.sizeof("u_int"), write=True):
            raise _fail(errno.EFAULT, op)  # copyout() failed
        for i, dlt in enumerate(dlts):
            bfl.bfl_list[i] = dlt
        bfl.bfl_len = len(dlts)

    def _sdlt(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        tap = self._need_tap(desc, op)
        dlt = self._u(kbuf)[0]
        if dlt == tap.dlt:
            return
        new = tap.iface.tap(dlt)
        if new is None:
            raise _fail(errno.EINVAL, op, hint=f"the interface offers DLTs "
                        f"{[t.dlt for t in tap.iface.taps]}")
        promisc = bool(desc.c.promisc)
        self._attach(desc, new)
        self._set_promisc(desc, promisc)

    def _promisc(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        self._need_tap(desc, op)
        self._set_promisc(desc, True)

    def _would_panic(self, desc: _Descriptor, op: str) -> None:
        if desc.c.bufmode == lib.BPF_BUFMODE_ZBUF and desc.c.sbuf == ffi.NULL:
            raise from_errno(errno.EFAULT, op, cls=SimulatedPanic, hint=(
                f"FreeBSD's kernel would dereference a NULL store buffer and panic: {op} in "
                "zero-copy mode needs BIOCSETZBUF first"))

    def _flush(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        self._would_panic(desc, op)
        self._locked(desc, lambda: lib.bsdbpf_sim_reset(desc.c))

    def _setf(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        prog = self._u(kbuf, "struct bpf_program *")
        flen = int(prog.bf_len)
        if flen > (self.sysctls["net.bpf.maxinsns"] & U32):
            raise _fail(errno.EINVAL, op, hint=f"at most net.bpf.maxinsns="
                        f"{self.sysctls['net.bpf.maxinsns']} instructions")
        if prog.bf_insns == ffi.NULL and flen != 0:
            raise _fail(errno.EINVAL, op)
        insns = prog.bf_insns
        size = flen * ffi.sizeof("struct bpf_insn")
        # bpf_setf(): a failed copyin() is EINVAL too, like an invalid program.
        if flen and not (is_mapped(_address(insns), size, write=False)
                         and lib.bsdbpf_validate(insns, flen)):
            raise _fail(errno.EINVAL, op)
        write = op == "BIOCSETWF"
        if op == "BIOCSETF":
            self._would_panic(desc, op)
        copy = lib.bsdbpf_sim_copy_program(insns, flen) if flen else ffi.NULL
        if flen and copy == ffi.NULL:
            raise _fail(errno.ENOMEM, op)

        def install() -> None:
            lib.bsdbpf_sim_set_filter(desc.c, int(write), copy, flen)
            if op == "BIOCSETF":
                lib.bsdbpf_sim_reset(desc.c)

        self._locked(desc, install)
        if not write and flen:
            self._check_upgrade(desc, op, flen, insns)

    def _check_upgrade(self, desc: _Descriptor, op: str, flen: int, insns: Any) -> None:
        """bpf_check_upgrade(): a writer-only descriptor starts reading once it
        sets a real filter (or a second snaplen-only one)."""
        if desc.writer_count == 0:
            return
        is_snap = op == "BIOCSETF" and flen == 1 and insns[0].code == lib.BPF_RET | lib.BPF_K
        if is_snap:
            desc.writer_count -= 1
        if not is_snap or desc.writer_count == 0:
            desc.writer_count = 0
            self._store(desc, writer=0)

    def _srtimeout(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        tv = self._u(kbuf, "struct timeval *")
        sec, usec = int(tv.tv_sec), int(tv.tv_usec)
        if sec < 0 or usec < 0 or usec >= 1_000_000:  # itimerfix()
            raise _fail(errno.EINVAL, op)
        if sec == 0 and 0 < usec < TICK_US // 16:
            usec = TICK_US // 16
        self._store(desc, rtout=_tvtohz(sec, usec) - 1)

    def _grtimeout(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        tv = self._u(kbuf, "struct timeval *")
        tv.tv_sec = desc.c.rtout // HZ
        tv.tv_usec = (desc.c.rtout % HZ) * TICK_US

    def _gstats(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        st = self._u(kbuf, "struct bpf_stat *")
        st.bs_recv = desc.c.rcount & U32
        st.bs_drop = desc.c.dcount & U32

    def _version(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        v = self._u(kbuf, "struct bpf_version *")
        v.bv_major, v.bv_minor = lib.BPF_MAJOR_VERSION, lib.BPF_MINOR_VERSION

    def _srsig(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        sig = self._u(kbuf)[0]
        if sig >= NSIG:
            raise _fail(errno.EINVAL, op)
        self._store(desc, sig=sig)

    def _sdirection(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        value = self._u(kbuf)[0]
        if value not in (lib.BPF_D_IN, lib.BPF_D_INOUT, lib.BPF_D_OUT):
            raise _fail(errno.EINVAL, op)
        self._store(desc, direction=value)

    def _ststamp(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        value = self._u(kbuf)[0]
        fmt = value & lib.BPF_T_FORMAT_MASK
        valid = value == lib.BPF_T_NONE or (
            fmt != lib.BPF_T_NONE and value & ~(lib.BPF_T_FORMAT_MASK | lib.BPF_T_FLAG_MASK) == 0)
        if not valid:
            raise _fail(errno.EINVAL, op)
        self._store(desc, tstamp=value)

    def _lock_d(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        self._store(desc, locked=1)

    def _vlanpcp(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        value = self._u(kbuf)[0]
        if value > BPF_PRIO_MAX:
            raise _fail(errno.EINVAL, op)
        desc.vlan_pcp = value

    def _nothing(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        """FIONBIO: the generic layer already set the file's flag."""

    def _setown(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        value = self._u(kbuf, "int *")[0]
        self._store(desc, owner=-value if op == "TIOCSPGRP" else value)

    def _getown(self, desc: _Descriptor, op: str, kbuf: Any) -> None:
        owner = desc.c.owner
        self._u(kbuf, "int *")[0] = -owner if op == "TIOCGPGRP" else owner

    _HANDLERS: ClassVar[dict[int, Callable[[Kernel, _Descriptor, str, Any], None]]] = {}

    # -- sysctls -------------------------------------------------------------

    def sysctlbyname(self, name: str, new: bytes | None = None) -> bytes:
        op = f"sysctl {name}"
        with self._lock:
            if name == STATS:
                return self._stats_sysctl(op, new)
            if name not in self.sysctls:
                raise _fail(errno.ENOENT, op)
            if new is not None and self.uid != 0:
                raise _fail(errno.EPERM, op)
            old = self.sysctls[name].to_bytes(4, sys.byteorder, signed=True)
            if new is not None:
                if len(new) != 4:
                    raise _fail(errno.EINVAL, op, hint="an int sysctl takes 4 bytes")
                self.sysctls[name] = int.from_bytes(new, sys.byteorder, signed=True)
            return old

    def _stats_sysctl(self, op: str, new: bytes | None) -> bytes:
        if self.uid != 0:
            raise _fail(errno.EPERM, op)
        size = ffi.sizeof("struct xbpf_d")
        if new is not None and (len(new) != size or any(new)):
            raise _fail(errno.EINVAL, op, hint=f"write one all-zero struct xbpf_d ({size} "
                        "bytes) to zero the counters")
        records = self._xbpf_records()
        old = bytes(ffi.buffer(records)) if records is not None else b""
        if new is not None:
            for desc in self._state.fds.values():
                if desc.tap is not None and not desc.c.writer:
                    self._locked(desc, partial(_zero_counters, desc.c))
        return old

    def _xbpf_records(self) -> Any:
        attached = []
        for iface in self._state.ifaces.values():
            for tap in iface.taps:
                on_tap = [d for d in self._state.fds.values() if d.tap is tap]
                # writer-only descriptors first, as bpf_stats_sysctl lists them
                attached += [d for d in on_tap if d.c.writer]
                attached += [d for d in on_tap if not d.c.writer]
        if not attached:
            return None
        records = ffi.new("struct xbpf_d[]", len(attached))
        for rec, desc in zip(records, attached):
            self._locked(desc, partial(_fill_xbpf, rec, desc))
        return records


def _flag_setter(name: str, convert: Callable[[int], int] = lambda v: int(v != 0)) -> Any:
    """A handler storing the u_int argument into an engine field."""

    def handler(kernel: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
        value = convert(ffi.cast("unsigned int *", kbuf)[0])

        def store() -> None:
            setattr(desc.c, name, value)
            lib.bsdbpf_sim_update_ready(desc.c)

        kernel._locked(desc, store)

    return handler


def _field_getter(name: str, ctype: str = "unsigned int *") -> Any:
    def handler(kernel: Kernel, desc: _Descriptor, op: str, kbuf: Any) -> None:
        ffi.cast(ctype, kbuf)[0] = getattr(desc.c, name)

    return handler


K = Kernel
Kernel._HANDLERS = {
    lib.FIONREAD: K._fionread,
    lib.FIONBIO: K._nothing,
    lib.FIOASYNC: _flag_setter("fasync", int),
    lib.FIOSETOWN: K._setown,
    lib.TIOCSPGRP: K._setown,
    lib.FIOGETOWN: K._getown,
    lib.TIOCGPGRP: K._getown,
    lib.BIOCGETBUFMODE: K._getbufmode,
    lib.BIOCSETBUFMODE: K._setbufmode,
    lib.BIOCGETZMAX: K._getzmax,
    lib.BIOCSETZBUF: K._setzbuf,
    lib.BIOCROTZBUF: K._rotzbuf,
    lib.BIOCGBLEN: K._gblen,
    lib.BIOCSBLEN: K._sblen,
    lib.BIOCSETIF: K._setif,
    lib.BIOCGETIF: K._getif,
    lib.BIOCGDLT: K._gdlt,
    lib.BIOCGDLTLIST: K._gdltlist,
    lib.BIOCSDLT: K._sdlt,
    lib.BIOCPROMISC: K._promisc,
    lib.BIOCFLUSH: K._flush,
    lib.BIOCSETF: K._setf,
    lib.BIOCSETFNR: K._setf,
    lib.BIOCSETWF: K._setf,
    lib.BIOCIMMEDIATE: _flag_setter("immediate"),
    lib.BIOCSRTIMEOUT: K._srtimeout,
    lib.BIOCGRTIMEOUT: K._grtimeout,
    lib.BIOCGSTATS: K._gstats,
    lib.BIOCVERSION: K._version,
    lib.BIOCGRSIG: _field_getter("sig"),
    lib.BIOCSRSIG: K._srsig,
    lib.BIOCGHDRCMPLT: _field_getter("hdrcmplt"),
    lib.BIOCSHDRCMPLT: _flag_setter("hdrcmplt"),
    lib.BIOCGDIRECTION: _field_getter("direction"),
    lib.BIOCSDIRECTION: K._sdirection,
    lib.BIOCFEEDBACK: _flag_setter("feedback"),
    lib.BIOCLOCK: K._lock_d,
    lib.BIOCGTSTAMP: _field_getter("tstamp"),
    lib.BIOCSTSTAMP: K._ststamp,
    lib.BIOCSETVLANPCP: K._vlanpcp,
}
del K


def _address(ptr: Any) -> int:
    return int(ffi.cast("uintptr_t", ptr))


def _zbuf_setup(buf: Any, buflen: int, op: str) -> None:
    """zbuf_setup(): check one buffer, wire it and zero its header.  BIOCSETZBUF
    runs it for bufa, then bufb, before its last check, so a later failure
    leaves the headers already set up zeroed."""
    addr = _address(buf)
    if addr % PAGE_SIZE or buflen % PAGE_SIZE or buflen // PAGE_SIZE > BPF_MAX_PAGES:
        raise _fail(errno.EINVAL, op)
    if not is_mapped(addr, buflen, write=True):
        raise _fail(errno.EFAULT, op)
    ffi.memmove(buf, bytes(ZBUF_HDR), ZBUF_HDR)


def _zero_counters(c: Any) -> None:
    c.rcount = c.dcount = c.fcount = c.wcount = c.wfcount = c.zcopy = 0


def _fill_xbpf(rec: Any, desc: _Descriptor) -> None:
    c = desc.c
    rec.bd_structsize = ffi.sizeof("struct xbpf_d")
    rec.bd_promisc, rec.bd_immediate = c.promisc, int(c.immediate != 0)
    rec.bd_hdrcmplt, rec.bd_direction, rec.bd_feedback = c.hdrcmplt, c.direction, c.feedback
    rec.bd_async = c.fasync
    rec.bd_rcount, rec.bd_dcount, rec.bd_fcount = c.rcount, c.dcount, c.fcount
    rec.bd_sig, rec.bd_slen, rec.bd_bufsize = c.sig, c.slen, c.bufsize
    rec.bd_hlen = c.hlen if c.hbuf != ffi.NULL else 0
    rec.bd_pid = desc.pid
    name = desc.tap.iface.name.encode() if desc.tap else b""
    ffi.memmove(rec.bd_ifname, name, len(name))
    rec.bd_locked = c.locked
    rec.bd_wcount, rec.bd_wfcount, rec.bd_wdcount = c.wcount, c.wfcount, c.wdcount
    rec.bd_zcopy, rec.bd_bufmode = c.zcopy, c.bufmode


def _tvtohz(sec: int, usec: int) -> int:
    """tvtohz(): ticks for a timeval, rounded up, plus one for the current tick."""
    if sec < 0 or (sec == 0 and usec <= 0):
        return 1
    return min(-(-(sec * 1_000_000 + usec) // TICK_US) + 1, INT_MAX)
