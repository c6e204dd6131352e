"""The simulated kernel's control plane: /dev/bpf's files, their system calls
and the generic ioctl layer.

It follows FreeBSD 14's bpf driver (spec sections b to e and Appendix A): the
order of checks, clamping and errno of every request.  The driver's requests
are in :mod:`bsdbpf.sim.ioctls`, the interfaces in :mod:`bsdbpf.sim.interfaces`,
the sysctls in :mod:`bsdbpf.sim.sysctl`.  Packets and buffers are handled by
the C engine in ``bsdbpf._native`` (csrc/sim_*.c), on threads of its own;
Python reads its state through locked getters and never touches its memory.
Errors are raised through :func:`bsdbpf.errors.from_errno`, as on the real
system.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from bsdbpf._abi import new_ifreq, request_name
from bsdbpf._native import ffi, lib
from bsdbpf.errors import BPFError, from_errno
from bsdbpf.sim.interfaces import Interfaces, Tap, TrafficGenerator
from bsdbpf.sim.ioctls import HANDLERS, LOCKED_OK, generic
from bsdbpf.sim.sysctl import SysctlTree, xbpf_records

__all__ = ["Kernel", "TrafficGenerator"]

HZ = lib.BSDBPF_SIM_HZ
READ_SLICE_NS = 100_000_000  # return to Python this often so signals are handled
U32 = 0xFFFFFFFF


def _fail(err: int, op: str, **ctx: Any) -> BPFError:
    return from_errno(err, op, **ctx)


@dataclass
class _Descriptor:
    """The control plane's part of a struct bpf_d; the engine has the rest."""

    c: Any  # struct bsdbpf_sim_d *
    fd: int
    fread: bool  # the file's access mode (O_NONBLOCK is the fd's own flag)
    fwrite: bool
    writer_count: int = 0  # bd_writer: filters left before a writer-only d reads
    tap: Tap | None = None
    vlan_pcp: int = 0
    pid: int = field(default_factory=os.getpid)
    listed: int = 0  # when it went to the head of its tap's list


class _State:
    """Everything that must be freed with the kernel, apart from the Kernel object."""

    def __init__(self) -> None:
        self.c = lib.bsdbpf_sim_kernel_new()
        if self.c == ffi.NULL:
            raise MemoryError("cannot start the simulated kernel's threads")
        self.fds: dict[int, _Descriptor] = {}
        self.interfaces = Interfaces(self.c)

    def shutdown(self) -> None:
        for desc in list(self.fds.values()):
            lib.bsdbpf_sim_d_close(desc.c)
        self.fds.clear()
        self.interfaces.clear()
        if self.c != ffi.NULL:
            lib.bsdbpf_sim_kernel_free(self.c)
            self.c = ffi.NULL


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
        self._core = _State()
        self._finalizer = weakref.finalize(self, self._core.shutdown)
        self._lock = threading.RLock()  # BPF_LOCK: one control operation at a time
        self._sysctl = SysctlTree()
        self.sysctls: dict[str, int] = self._sysctl.ints
        self._listing = itertools.count(1)

    @property
    def _interfaces(self) -> Interfaces:
        return self._core.interfaces

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
            self._interfaces.add(name, (dlt, *extra_dlts), mtu, lladdr)

    def remove_interface(self, name: str) -> None:
        """Detach the interface as FreeBSD does when it departs (bpfdetach)."""
        with self._lock:
            iface = self._interfaces.find(name, "remove_interface")
            for desc in self._core.fds.values():
                if desc.tap is not None and desc.tap.iface is iface:
                    desc.tap = None
                    self._set(desc, lib.BSDBPF_SIM_PROMISC, 0)
            self._interfaces.remove(iface)

    def interfaces(self) -> list[str]:
        """The names of the interfaces, in the order they were added."""
        return self._interfaces.names()

    def if_nameindex(self) -> list[tuple[int, str]]:
        """if_nameindex(3): each interface's index and name, in the order added."""
        with self._lock:
            return [(iface.index, iface.name) for iface in self._interfaces]

    def if_flags(self, ifname: str) -> int:
        """SIOCGIFFLAGS: a simulated interface is always up."""
        new_ifreq("SIOCGIFFLAGS", ifname)  # the name checks the host's call makes
        with self._lock:
            self._interfaces.find(ifname, "SIOCGIFFLAGS")
        return int(lib.IFF_UP)

    def inject(self, ifname: str, frame: bytes, outgoing: bool = False) -> None:
        """Offer one frame to the interface's descriptors; returns once all saw it.
        An incoming Ethernet frame shorter than its header is discarded before
        the tap, as ether_input() does."""
        with self._lock:
            self._interfaces.inject(ifname, frame, outgoing)

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
        after the link header, and again in its last 8 bytes.  One generator
        runs per interface at a time: another raises EBUSY until the first
        one is stopped or done.
        """
        with self._lock:
            return self._interfaces.generate(ifname, count, size, rate, outgoing)

    def bridge(self, host_ifname: str, name: str | None = None) -> None:
        """Make a host interface a simulated Ethernet one, through AF_PACKET.

        Frames seen on the host interface (both directions) reach the
        simulated descriptors; frames written to them are sent on it.
        Needs CAP_NET_RAW (root) on Linux.
        """
        with self._lock:
            self._interfaces.bridge(host_ifname, name or host_ifname)

    # -- the System protocol -----------------------------------------------

    def open(self, path: str, flags: int) -> int:
        if path not in ("/dev/bpf", "/dev/bpf0"):
            raise _fail(errno.ENOENT, "open")
        if self.uid != 0:
            raise _fail(errno.EACCES, "open")
        with self._lock:
            c = lib.bsdbpf_sim_d_new(self._core.c, self.sysctls["net.bpf.bufsize"] & U32)
            if c == ffi.NULL:
                raise _fail(errno.ENOMEM, "open")
            mode = flags & os.O_ACCMODE
            desc = _Descriptor(c, self._engine_state(c).fd, fread=mode != os.O_WRONLY,
                               fwrite=mode != os.O_RDONLY)
            os.set_blocking(desc.fd, not flags & os.O_NONBLOCK)
            # open(2): inherited across exec unless O_CLOEXEC says otherwise.
            os.set_inheritable(desc.fd, not flags & os.O_CLOEXEC)
            if not desc.fread:
                desc.writer_count = 2
            self._core.fds[desc.fd] = desc
            return desc.fd

    def close(self, fd: int) -> None:
        with self._lock:
            desc = self._desc(fd, "close")
            self._set_promisc(desc, False)
            del self._core.fds[fd]
            lib.bsdbpf_sim_d_close(desc.c)

    def _desc(self, fd: int, op: str) -> _Descriptor:
        desc = self._core.fds.get(fd)
        if desc is None:
            raise from_errno(errno.EBADF, op, hint="not an open /dev/bpf descriptor of this kernel")
        return desc

    def read(self, fd: int, buffer: Any) -> int:
        with self._lock:
            desc = self._desc(fd, "read")
            if not desc.fread:
                raise _fail(errno.EBADF, "read", hint="the descriptor was opened O_WRONLY")
            # The file's flag at the time of the call, read while the fd is
            # surely open (a close() from another thread may free its number).
            nonblock = not os.get_blocking(desc.fd)
            # The file's reference: a close() from another thread while this
            # read sleeps makes it return EBADF, never free it under us.
            lib.bsdbpf_sim_d_hold(desc.c)
        try:
            return self._read(desc, buffer, nonblock)
        finally:
            lib.bsdbpf_sim_d_release(desc.c)

    def _read(self, desc: _Descriptor, buffer: Any, nonblock: bool) -> int:
        c = desc.c
        st = self._state(desc)
        buf = ffi.from_buffer(buffer, require_writable=True)
        if len(buf) != st.bufsize:
            raise _fail(errno.EINVAL, "read")
        if st.bufmode != lib.BPF_BUFMODE_BUFFER:
            raise _fail(errno.EOPNOTSUPP, "read")
        now = lib.bsdbpf_sim_monotonic_ns()
        deadline = now + st.rtout * (1_000_000_000 // HZ) if st.rtout else 0
        first = 1
        while True:
            n = lib.bsdbpf_sim_read(c, buf, len(buf), int(nonblock), deadline,
                                    lib.bsdbpf_sim_monotonic_ns() + READ_SLICE_NS, first)
            first = 0
            if n != lib.BSDBPF_SIM_SLICE:
                break
        if n == -errno.EBADF:
            raise _fail(errno.EBADF, "read", hint="the descriptor was closed while reading")
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
        zeroed and copied back only when the driver succeeds.  A pointer to
        memory that is not mapped is EFAULT."""
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
            copied = inout & (lib.IOC_IN | lib.IOC_OUT) and length
            if copied:
                user = self._user_arg(arg, length, op)
                if inout & lib.IOC_IN and lib.bsdbpf_sim_copyin(kbuf, user, length) != 0:
                    raise _fail(errno.EFAULT, op)
            if not generic(desc, request, kbuf):
                self._driver(desc, request, op, kbuf)
            if copied and inout & lib.IOC_OUT and lib.bsdbpf_sim_copyout(
                    user, kbuf, length) != 0:
                raise _fail(errno.EFAULT, op)
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

    def _driver(self, desc: _Descriptor, request: int, op: str, kbuf: Any) -> None:
        """bpfioctl(): any request stops the read timeout; a locked
        descriptor takes only the requests of bpf.c's lock filter."""
        desc.pid = os.getpid()
        st = ffi.new("struct bsdbpf_sim_dstate *")
        lib.bsdbpf_sim_enter(desc.c, st)
        if st.locked and request not in LOCKED_OK:
            raise _fail(errno.EPERM, op)
        handler = HANDLERS.get(request)
        if handler is None:
            raise _fail(errno.EINVAL, op, hint="FreeBSD 14's bpf driver has no such request")
        handler(self, desc, op, kbuf)

    # -- for the ioctl handlers ----------------------------------------------

    @staticmethod
    def _engine_state(c: Any) -> Any:
        st = ffi.new("struct bsdbpf_sim_dstate *")
        lib.bsdbpf_sim_get_state(c, st)
        return st

    def _state(self, desc: _Descriptor) -> Any:
        """The engine's descriptor, copied under its lock."""
        return self._engine_state(desc.c)

    @staticmethod
    def _set(desc: _Descriptor, knob: int, value: int) -> None:
        lib.bsdbpf_sim_set(desc.c, knob, value)

    def _moved_to_head(self, desc: _Descriptor) -> None:
        desc.listed = next(self._listing)

    def _attach(self, desc: _Descriptor, tap: Tap) -> None:
        """bpf_attachd(): detach (dropping promiscuous mode), join the tap at
        the head of its list, then reset the buffers and counters and wake up
        (the engine does those two)."""
        self._set_promisc(desc, False)
        writer_only = self.sysctls["net.bpf.optimize_writers"] != 0 or desc.writer_count != 0
        if writer_only:
            desc.writer_count = 2
        self._set(desc, lib.BSDBPF_SIM_WRITER, int(writer_only))
        lib.bsdbpf_sim_attach(desc.c, tap.c)
        desc.tap = tap
        self._moved_to_head(desc)

    def _set_promisc(self, desc: _Descriptor, on: bool) -> None:
        if desc.tap is None or bool(self._state(desc).promisc) == on:
            return
        self._set(desc, lib.BSDBPF_SIM_PROMISC, int(on))
        desc.tap.iface.promisc += 1 if on else -1

    def _need_tap(self, desc: _Descriptor, op: str) -> Tap:
        if desc.tap is None or not self._state(desc).attached:
            raise _fail(errno.EINVAL, op)  # from_errno says to attach first
        return desc.tap

    # -- sysctls -------------------------------------------------------------

    def sysctlbyname(self, name: str, new: bytes | None = None) -> bytes:
        with self._lock:
            return self._sysctl.call(name, new, root=self.uid == 0, stats=self._stats)

    def _stats(self, zero: bool) -> bytes:
        """net.bpf.stats: newest interface (tap) first, as bpfattach() inserts
        at the head; within it the writer-only descriptors, then the readers,
        each list most recently attached first."""
        taps = sorted((t for i in self._interfaces for t in i.taps), key=lambda t: -t.seq)
        entries = []
        for tap in taps:
            on_tap = sorted((d for d in self._core.fds.values() if d.tap is tap),
                            key=lambda d: -d.listed)
            states = [(d, self._state(d)) for d in on_tap]
            entries += [(st, tap.iface.name, d.pid) for d, st in states if st.writer]
            entries += [(st, tap.iface.name, d.pid) for d, st in states if not st.writer]
        if zero:
            for desc in self._core.fds.values():
                if desc.tap is not None and not self._state(desc).writer:
                    lib.bsdbpf_sim_zero_counters(desc.c)
        return xbpf_records(entries)
