"""What the test files share: a fresh simulated kernel, frame builders, a recording System.

Fixtures: ``kernel`` (a fresh :class:`bsdbpf.sim.Kernel` as root with
``em0``, ``lo0`` and ``multi0``, shut down after the test), ``system`` (the
same kernel, seen through the System seam) and ``rec`` (a :class:`Recorder`
over it).  A test file that needs another kernel overrides ``kernel`` with
:func:`sim_kernel`.  Builders and the recorder are imported from here
(``from conftest import ether_frame``); the conformance suite has its own
fixtures in ``tests/conformance/conftest.py``, built on :func:`sim_kernel`.
"""

from __future__ import annotations

import contextlib
import struct
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from bsdbpf import raw
from bsdbpf._native import ffi, lib
from bsdbpf.sim import Kernel
from bsdbpf.system import System

SEQ = struct.Struct(">Q")
ETHERTYPE = 0x88B5  # IEEE local experimental
SRC_MAC = b"\x02\x00\x00\x00\x00\x01"
AF_INET = 2

#: The interfaces of a test kernel: name -> add_interface() arguments.
INTERFACES: dict[str, dict[str, Any]] = {
    "em0": {"dlt": lib.DLT_EN10MB},  # Ethernet
    "lo0": {"dlt": lib.DLT_NULL, "mtu": 16384},  # as FreeBSD's loopback
    "multi0": {"dlt": lib.DLT_EN10MB, "extra_dlts": (lib.DLT_RAW,)},  # two link types
}


@contextlib.contextmanager
def sim_kernel(*interfaces: str, zerocopy: bool = False, uid: int = 0) -> Iterator[Kernel]:
    """A fresh simulated kernel with ``interfaces`` (default: all of
    :data:`INTERFACES`), optionally with net.bpf.zerocopy_enable=1; shut down
    on leaving."""
    k = Kernel(uid=0)
    try:
        for name in interfaces or INTERFACES:
            k.add_interface(name, **INTERFACES[name])
        if zerocopy:
            raw.sysctl_int(k, "net.bpf.zerocopy_enable", 1)
        k.uid = uid
        yield k
    finally:
        k.shutdown()


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    """A fresh simulated kernel as root, with em0, lo0 and multi0."""
    with sim_kernel() as k:
        yield k


@pytest.fixture
def system(kernel: Kernel) -> System:
    """The test's kernel through the System seam only."""
    return kernel


# -- frames -------------------------------------------------------------------


def ether_frame(i: int, size: int = 64, src: bytes = SRC_MAC) -> bytes:
    """A broadcast Ethernet frame of ``size`` bytes carrying ``i`` at offset 14
    (as the simulator's generator does) and a payload that depends on ``i``."""
    head = b"\xff" * 6 + src + ETHERTYPE.to_bytes(2, "big") + SEQ.pack(i)
    return (head + bytes((i * 7 + j) & 0xFF for j in range(max(size - len(head), 0))))[:size]


def null_frame(i: int, size: int = 64) -> bytes:
    """A DLT_NULL frame: the address family (AF_INET) in host order, then
    ``size - 4`` bytes that depend on ``i``."""
    return AF_INET.to_bytes(4, sys.byteorder) + bytes((i + j) & 0xFF for j in range(size - 4))


# -- a System that records ------------------------------------------------------


class Recorder:
    """A System that logs every call, then passes it to the kernel.

    ``calls`` holds ``("open", path)``, ``("close", fd)``, ``("ioctl",
    request)``, ``("read", nbytes)``, ``("write", nbytes)`` and ``("sysctl",
    name)``; BIOCSETZBUF also adds ``("BIOCSETZBUF", bufa, bufb, buflen)``.
    """

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.calls: list[tuple[Any, ...]] = []

    def open(self, path: str, flags: int) -> int:
        self.calls.append(("open", path))
        return self.kernel.open(path, flags)

    def close(self, fd: int) -> None:
        self.calls.append(("close", fd))
        self.kernel.close(fd)

    def ioctl(self, fd: int, request: int, arg: Any = None) -> int:
        self.calls.append(("ioctl", request))
        if request == lib.BIOCSETZBUF:
            bz = ffi.cast("struct bpf_zbuf *", arg)
            self.calls.append(("BIOCSETZBUF", int(ffi.cast("uintptr_t", bz.bz_bufa)),
                               int(ffi.cast("uintptr_t", bz.bz_bufb)), int(bz.bz_buflen)))
        return self.kernel.ioctl(fd, request, arg)

    def read(self, fd: int, buffer: Any) -> int:
        self.calls.append(("read", len(buffer)))
        return self.kernel.read(fd, buffer)

    def write(self, fd: int, data: Any) -> int:
        self.calls.append(("write", len(data)))
        return self.kernel.write(fd, data)

    def sysctlbyname(self, name: str, new: Any = None) -> bytes:
        self.calls.append(("sysctl", name))
        return self.kernel.sysctlbyname(name, new)


@pytest.fixture
def rec(kernel: Kernel) -> Recorder:
    """A :class:`Recorder` over the test's kernel."""
    return Recorder(kernel)
