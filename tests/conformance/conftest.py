"""Fixtures of the conformance suite: one body per test, run on either kernel.

* ``BSDBPF_SYSTEM=host`` on FreeBSD (as root): ``system`` is
  :class:`bsdbpf.system.HostSystem` and the interface comes from
  ``BSDBPF_TEST_IFNAME`` (a quiet, up Ethernet interface such as an epair(4)
  end, so that counters stay predictable;
  ``BSDBPF_TEST_IFNAME_MULTI`` names one offering several DLTs, ``lo0`` is the
  DLT_NULL one).  Tests marked ``sim_only`` are skipped there, with the reason.
* Anywhere else: a fresh :class:`bsdbpf.sim.Kernel` per test with ``em0``
  (Ethernet), ``lo0`` (DLT_NULL, MTU 16384) and ``multi0`` (Ethernet + DLT_RAW),
  shut down after the test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Callable

import hosttraffic
import pytest
from conftest import sim_kernel

from bsdbpf.system import HostSystem

from .helpers import ON_HOST, Bpf, Sysctl, sim_only


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sim_only(reason): needs a facility of the simulator; skipped on the "
                   "real kernel with the reason given")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use ``kernel`` are simulator-only: say so by a marker."""
    for item in items:
        if item.get_closest_marker("sim_only") is not None:
            continue
        names = getattr(item, "fixturenames", ())
        if "kernel" in names:
            item.add_marker(sim_only("needs the simulator's own controls"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    mark = item.get_closest_marker("sim_only")
    if mark is not None and ON_HOST:
        pytest.skip(f"real kernel: {mark.kwargs.get('reason', 'simulator only')}")


@pytest.fixture
def system() -> Iterator[Any]:
    """The System under test: FreeBSD's kernel, or a fresh simulated one."""
    if ON_HOST:
        if os.geteuid() != 0:
            pytest.skip("real kernel: /dev/bpf is root:wheel 0600, run the suite as root")
        yield HostSystem()
        return
    with sim_kernel() as k:  # em0, lo0 and multi0, as the suite's docstring says
        yield k


@pytest.fixture
def kernel(system: Any) -> Any:
    """The simulated kernel itself (its helpers beyond the System seam)."""
    if ON_HOST:
        pytest.skip("real kernel: needs the simulator's own controls")
    return system


@pytest.fixture
def ifname() -> str:
    """An Ethernet interface with a BPF tap."""
    if ON_HOST:
        name = os.environ.get("BSDBPF_TEST_IFNAME")
        if not name:
            pytest.skip("real kernel: set BSDBPF_TEST_IFNAME to an Ethernet interface")
        return name
    return "em0"


@pytest.fixture
def null_ifname() -> str:
    """A DLT_NULL interface (FreeBSD's loopback)."""
    return "lo0"


@pytest.fixture
def multi_ifname() -> str:
    """An interface offering DLT_EN10MB and another DLT."""
    if ON_HOST:
        name = os.environ.get("BSDBPF_TEST_IFNAME_MULTI")
        if not name:
            pytest.skip("real kernel: set BSDBPF_TEST_IFNAME_MULTI to an interface with "
                        "several DLTs")
        return name
    return "multi0"


@pytest.fixture
def bpf(system: Any) -> Iterator[Bpf]:
    """Descriptors and zero-copy buffers of one test; fds closed before mmaps."""
    harness = Bpf(system)
    try:
        yield harness
    finally:
        harness.cleanup()


@pytest.fixture
def sysctl(system: Any) -> Iterator[Sysctl]:
    """net.bpf sysctls set by the test, restored afterwards (the real kernel's are global)."""
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
def traffic(system: Any, ifname: str) -> Iterator[Callable[..., None]]:
    """traffic(ifname, frame, outgoing=False): offer one frame to the interface's taps;
    returns once every descriptor has seen it.  On the real kernel the frame
    crosses the epair(4) pair (tests/hosttraffic.py), set up before the test's
    own descriptors."""
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

