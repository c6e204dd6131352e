"""What the test files share: the system under test, a simulated kernel, frame builders,
a recording System.

Fixtures: ``system`` (the System under test: :class:`bsdbpf.system.HostSystem`
with ``BSDBPF_SYSTEM=host`` on FreeBSD, run as root; elsewhere the test's
``kernel``), ``kernel`` (a fresh :class:`bsdbpf.sim.Kernel` as root with
``em0``, ``lo0`` and ``multi0``, shut down after the test), ``ifname`` (an
Ethernet interface: ``em0``, or ``BSDBPF_TEST_IFNAME`` on FreeBSD),
``traffic`` (``traffic(ifname, frame, outgoing=False)``: the simulator's
``inject``, or frames across the epair(4) pair on FreeBSD, see
``tests/hosttraffic.py``), ``sysctl`` (a :class:`Sysctl`: net.bpf sysctls set
by the test, restored after it), ``zerocopy`` (net.bpf.zerocopy_enable=1 for
the test, on either kernel), ``unprivileged`` (a block run as an ordinary user)
and ``rec`` (a :class:`Recorder` over the kernel).
A test file that needs another kernel overrides ``kernel`` with
:func:`sim_kernel`; ``system`` follows it.

Tests that use ``kernel`` need the simulator itself: they are marked
``sim_only`` and skipped, with the reason, on FreeBSD's real kernel, as is any
test marked ``sim_only(reason)`` by hand.  Builders and the recorder are
imported from here (``from conftest import ether_frame``); the conformance
suite adds its own fixtures in ``tests/conformance/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
from collections.abc import Iterator
from typing import Any, Callable

import hosttraffic
import pytest

from bsdbpf import raw
from bsdbpf._native import ffi, lib
from bsdbpf.sim import Kernel
from bsdbpf.system import HostSystem, System

#: FreeBSD's real kernel is under test (``BSDBPF_SYSTEM=host`` on FreeBSD).
ON_HOST = sys.platform.startswith("freebsd") and os.environ.get("BSDBPF_SYSTEM") == "host"
#: Why a test that uses the ``kernel`` fixture cannot run on the real kernel.
USES_SIMULATOR = "uses the simulated kernel itself (the kernel fixture), not the System seam"
#: Why a test that drives the simulator's packet generator stays simulator-only.
GENERATOR = "runs the simulator's packet generator at full speed (kernel.generate)"
#: Why a command-line test stays simulator-only: it captures the traffic that
#: ``bsdbpf capture`` generates on the simulated kernel (its "generating
#: traffic" note); FreeBSD's interfaces bring their own, unknown in advance.
CLI_TRAFFIC = "captures the traffic bsdbpf capture generates on the simulator"
#: Why a test that removes an interface stays simulator-only.
DEPARTURE = ("needs the interface to depart (kernel.remove_interface); on the real kernel "
             "this would destroy the test's epair(4)")

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


INT_MAX = 2**31 - 1


def kern_hz(system: System) -> int:
    """The kernel's clock rate, which read timeouts count in: 1000 by default, 100
    by default under a hypervisor (HZ_VM), so in the FreeBSD VM."""
    return raw.sysctl_int(system, "kern.hz")


def timeout_read_back(sec: int, usec: int, hz: int) -> tuple[int, int]:
    """What BIOCGRTIMEOUT gives after BIOCSRTIMEOUT {sec, usec} on a kernel of
    ``hz`` ticks a second (spec §e): a value under tick/16 is raised to it, the
    kernel keeps tvtohz() - 1 whole ticks, and reads them back as a timeval."""
    tick = 1_000_000 // hz
    if sec == 0 and 0 < usec < tick // 16:
        usec = tick // 16
    if sec == 0 and usec == 0:
        return 0, 0
    ticks = min(-(-(sec * 1_000_000 + usec) // tick) + 1, INT_MAX) - 1
    return ticks // hz, ticks % hz * tick


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


def sim_only(reason: str) -> Any:
    """A test that needs a facility of the simulator: skipped on FreeBSD's real
    kernel (only there), saying why."""
    return pytest.mark.sim_only(reason=reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sim_only(reason): needs a facility of the simulator; skipped on the "
                   "real kernel with the reason given")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use ``kernel`` are simulator-only: say so by a marker."""
    for item in items:
        if item.get_closest_marker("sim_only") is None and "kernel" in getattr(
                item, "fixturenames", ()):
            item.add_marker(sim_only(USES_SIMULATOR))


def pytest_runtest_setup(item: pytest.Item) -> None:
    mark = item.get_closest_marker("sim_only")
    if mark is not None and ON_HOST:
        pytest.skip(f"real kernel: {mark.kwargs.get('reason', 'simulator only')}")


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    """A fresh simulated kernel as root, with em0, lo0 and multi0."""
    with sim_kernel() as k:
        yield k


@pytest.fixture
def system(request: pytest.FixtureRequest) -> System:
    """The System under test: FreeBSD's kernel, or the test's simulated ``kernel``
    (looked up only here, so that a test using ``system`` alone is not
    simulator-only)."""
    if ON_HOST:
        if os.geteuid() != 0:
            pytest.skip("real kernel: /dev/bpf is root:wheel 0600, run the suite as root")
        return HostSystem()
    kernel: Kernel = request.getfixturevalue("kernel")
    return kernel


def interface(simulated: str, variable: str, wanted: str) -> str:
    """``simulated`` on the simulator; on the real kernel the interface the
    environment ``variable`` names, or a skip asking for ``wanted``."""
    if not ON_HOST:
        return simulated
    name = os.environ.get(variable)
    if not name:
        pytest.skip(f"real kernel: set {variable} to {wanted}")
    return name


@pytest.fixture
def ifname() -> str:
    """An Ethernet interface with a BPF tap; on FreeBSD the capture end of the
    epair(4) pair, where ``traffic`` can inject."""
    return interface("em0", "BSDBPF_TEST_IFNAME",
                     "an Ethernet interface (the epair(4) end vagrant/provision.sh creates)")


@pytest.fixture
def traffic(system: Any, ifname: str) -> Iterator[Callable[..., None]]:
    """traffic(ifname, frame, outgoing=False): offer one frame to the interface's
    taps; returns once every descriptor has seen it.  On the real kernel the
    frame crosses the epair(4) pair (tests/hosttraffic.py), whose descriptors
    are set up before the test's own; another interface skips the test."""
    if not ON_HOST:
        def inject(name: str, frame: bytes, outgoing: bool = False) -> None:
            system.inject(name, frame, outgoing=outgoing)

        yield inject
        return
    with hosttraffic.HostTraffic(ifname) as source:
        def inject_host(name: str, frame: bytes, outgoing: bool = False) -> None:
            try:
                source(name, frame, outgoing)
            except hosttraffic.NoTrafficSource as err:
                pytest.skip(f"real kernel: {err}")

        yield inject_host


class Sysctl:
    """Sets net.bpf sysctls for one test and puts the old values back (the real
    kernel's are global)."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.saved: dict[str, bytes] = {}

    def get(self, name: str) -> int:
        return int_value(self.system.sysctlbyname(name))

    def set(self, name: str, value: int) -> int:
        old = self.system.sysctlbyname(name, int_bytes(value))
        self.saved.setdefault(name, old)
        return int_value(old)

    def restore(self) -> None:
        for name, old in reversed(list(self.saved.items())):
            self.system.sysctlbyname(name, old)
        self.saved.clear()


def int_bytes(value: int) -> bytes:
    return value.to_bytes(4, sys.byteorder, signed=True)


def int_value(data: bytes) -> int:
    assert len(data) == 4, f"an int sysctl is 4 bytes, got {len(data)}"
    return int.from_bytes(data, sys.byteorder, signed=True)


@pytest.fixture
def sysctl(system: System) -> Iterator[Sysctl]:
    """net.bpf sysctls set by the test, restored afterwards."""
    s = Sysctl(system)
    try:
        yield s
    finally:
        s.restore()


@pytest.fixture
def zerocopy(sysctl: Sysctl) -> None:
    """net.bpf.zerocopy_enable=1 for this test."""
    sysctl.set("net.bpf.zerocopy_enable", 1)


@pytest.fixture
def unprivileged(system: Any) -> Callable[[], Any]:
    """A context manager running its block as an ordinary user (uid 1000 on the
    simulator; seteuid(nobody) on the real kernel, where the suite runs as root)."""

    @contextlib.contextmanager
    def as_user() -> Iterator[None]:
        if not ON_HOST:
            system.uid = 1000
            try:
                yield
            finally:
                system.uid = 0
            return
        os.seteuid(65534)
        try:
            yield
        finally:
            os.seteuid(0)

    return as_user


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
    """A System that logs every call, then passes it to another System (the
    kernel, or the test's ``system``).

    ``calls`` holds ``("open", path)``, ``("close", fd)``, ``("ioctl",
    request)``, ``("read", nbytes)``, ``("write", nbytes)`` and ``("sysctl",
    name)``; BIOCSETZBUF also adds ``("BIOCSETZBUF", bufa, bufb, buflen)``.
    """

    def __init__(self, kernel: System) -> None:
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

    def if_nameindex(self) -> list[tuple[int, str]]:
        self.calls.append(("if_nameindex",))
        return self.kernel.if_nameindex()

    def if_flags(self, ifname: str) -> int:
        self.calls.append(("if_flags", ifname))
        return self.kernel.if_flags(ifname)


@pytest.fixture
def rec(kernel: Kernel) -> Recorder:
    """A :class:`Recorder` over the test's kernel."""
    return Recorder(kernel)
