"""The system seam: the only place that knows which kernel is underneath.

A :class:`System` has the methods of the system calls bsdbpf needs.
:class:`HostSystem` calls FreeBSD's libc; :class:`bsdbpf.sim.Kernel` is a
simulated FreeBSD.  Everything above this module is written once against
:class:`System` and never asks which one it has.  This module never imports
the simulator: :func:`bsdbpf.backend.default_system` picks one of the two.
"""

from __future__ import annotations

import errno
import functools
import socket
import sys
from typing import Any, Callable, Protocol, runtime_checkable

from bsdbpf._abi import new_ifreq, request_name
from bsdbpf._native import ffi, lib
from bsdbpf.errors import BPFError, InternalError, UnsupportedError, from_errno

__all__ = ["HostSystem", "System"]

SYSCTL_ENOMEM_RETRIES = 8  # the table can grow between the size probe and the read


@runtime_checkable
class System(Protocol):
    """What every system provides; the shapes are those of the system calls.

    Errors are raised as :class:`bsdbpf.BPFError` subclasses built by
    :func:`bsdbpf.errors.from_errno`.
    """

    def open(self, path: str, flags: int) -> int:
        """open(2): a new descriptor's number."""

    def close(self, fd: int) -> None:
        """close(2)."""

    def ioctl(self, fd: int, request: int, arg: Any = None) -> int:
        """ioctl(2) with the same cffi pointer libc's ioctl takes (None: no argument)."""

    def read(self, fd: int, buffer: Any) -> int:
        """read(2) into a writable buffer; ``len(buffer)`` is nbytes."""

    def write(self, fd: int, data: Any) -> int:
        """write(2) of a bytes-like object."""

    def sysctlbyname(self, name: str, new: bytes | None = None) -> bytes:
        """sysctlbyname(3): the value before any write, in FreeBSD's binary form."""

    def if_nameindex(self) -> list[tuple[int, str]]:
        """if_nameindex(3): every interface's index and name, in the system's order."""

    def if_flags(self, ifname: str) -> int:
        """The interface's flags (``IFF_*``), as SIOCGIFFLAGS reads them (ENXIO: no such
        interface)."""


def _retry(op: str, call: Callable[[], int]) -> int:
    """Run a libc call, retrying on EINTR; raise through from_errno on failure."""
    while True:
        rc = call()
        if rc != -1:
            return rc
        err = ffi.errno  # read at once: any other call may change it
        if err != errno.EINTR:
            raise from_errno(err, op)


def _c_name(op: str, name: str) -> bytes:
    """``name`` as C takes it.  One with a NUL in it names nothing: C would
    read only what comes before, another file or sysctl."""
    if "\0" in name:
        raise from_errno(errno.ENOENT, op, hint=f"{name!r} contains a NUL character")
    return name.encode()


class HostSystem:
    """FreeBSD's own kernel, through libc."""

    def __init__(self) -> None:
        if not sys.platform.startswith("freebsd"):
            raise UnsupportedError(
                errno.ENOSYS,
                "HostSystem",
                f"this host is {sys.platform}, not FreeBSD: use the simulated kernel, "
                "bsdbpf.sim.Kernel(), or set BSDBPF_SYSTEM=sim",
            )

    def open(self, path: str, flags: int) -> int:
        cpath = _c_name("open", path)
        return _retry("open", lambda: lib.open(cpath, flags, ffi.cast("int", 0)))

    def close(self, fd: int) -> None:
        # close(2) is not retried on EINTR: on FreeBSD the fd is gone either way.
        if lib.close(fd) == -1 and ffi.errno != errno.EINTR:
            raise from_errno(ffi.errno, "close")

    def ioctl(self, fd: int, request: int, arg: Any = None) -> int:
        ptr = ffi.NULL if arg is None else arg
        if not isinstance(ptr, ffi.CData):
            raise TypeError(f"{request_name(request)}: the argument must be a cffi pointer")
        ptr = ffi.cast("void *", ptr)
        return _retry(request_name(request), lambda: lib.ioctl(fd, request, ptr))

    def read(self, fd: int, buffer: Any) -> int:
        buf = ffi.from_buffer(buffer, require_writable=True)
        return _retry("read", lambda: lib.read(fd, buf, len(buf)))

    def write(self, fd: int, data: Any) -> int:
        buf = ffi.from_buffer(data)
        return _retry("write", lambda: lib.write(fd, buf, len(buf)))

    def sysctlbyname(self, name: str, new: bytes | None = None) -> bytes:
        op = f"sysctl {name}"
        cname = _c_name(op, name)
        newp = ffi.from_buffer(new) if new is not None else ffi.NULL
        newlen = len(new) if new is not None else 0
        size = ffi.new("size_t *")
        for _ in range(SYSCTL_ENOMEM_RETRIES):
            _retry(op, lambda: lib.sysctlbyname(cname, ffi.NULL, size, ffi.NULL, 0))
            want = size[0] + size[0] // 8 + 64  # room for growth before the read
            old = ffi.new("char[]", want)
            size[0] = want
            try:
                _retry(op, functools.partial(lib.sysctlbyname, cname, old, size, newp, newlen))
            except BPFError as err:
                if err.errno == errno.ENOMEM:
                    continue
                raise
            return bytes(ffi.buffer(old, size[0]))
        raise InternalError(errno.ENOMEM, op, "the value kept growing while being read")

    def if_nameindex(self) -> list[tuple[int, str]]:
        try:
            return socket.if_nameindex()
        except OSError as err:
            raise from_errno(err.errno or errno.EIO, "if_nameindex") from None

    def if_flags(self, ifname: str) -> int:
        ifr = new_ifreq("SIOCGIFFLAGS", ifname)
        try:
            # Any socket answers; AF_LOCAL, as ifconfig(8) uses, exists even where
            # AF_INET does not (a jail without IPv4).
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                self.ioctl(sock.fileno(), lib.SIOCGIFFLAGS, ifr)
        except OSError as err:  # BPFError from the ioctl, or a bare one from socket()
            raise from_errno(err.errno or errno.EIO, "SIOCGIFFLAGS", ifname=ifname) from None
        return lib.bsdbpf_ifr_flags(ifr)
