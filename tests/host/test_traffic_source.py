"""The real kernel's traffic source (tests/hosttraffic.py), checked on the simulator.

On the simulator an epair(4) pair is modelled by a System wrapper: a frame
written on ``peer0`` leaves ``peer0`` and arrives on ``em0``, as a frame
written on ``epair0b`` arrives on ``epair0a``.  On FreeBSD (BSDBPF_SYSTEM=host)
the same checks run on the real pair through the child process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from bsdbpf._native import ffi, lib
from bsdbpf.descriptor import Descriptor, Direction
from bsdbpf.sim import Kernel

from .conftest import ON_FREEBSD_HOST, hosttraffic

FrameInjector, HostTraffic = hosttraffic.FrameInjector, hosttraffic.HostTraffic
NoTrafficSource, peer_of = hosttraffic.NoTrafficSource, hosttraffic.peer_of


class SimPair:
    """A simulated kernel whose ``peer0`` is cabled to ``em0``, like an epair."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.on_peer: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kernel, name)

    def ioctl(self, fd: int, request: int, arg: Any = None) -> int:
        rc = self.kernel.ioctl(fd, request, arg)
        if request == lib.BIOCSETIF:
            name = ffi.string(ffi.cast("struct ifreq *", arg).ifr_name).decode()
            (self.on_peer.add if name == "peer0" else self.on_peer.discard)(fd)
        return rc

    def write(self, fd: int, data: Any) -> int:
        n = self.kernel.write(fd, data)
        if fd in self.on_peer:
            self.kernel.inject("em0", bytes(data))
        return n


def frame(n: int, size: int = 64) -> bytes:
    head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5"
    return head + n.to_bytes(2, "big") + bytes(size - len(head) - 2)


@pytest.fixture
def pair() -> Iterator[tuple[Any, str, Any]]:
    """(system, capture end, traffic source)."""
    if ON_FREEBSD_HOST:
        name = os.environ.get("BSDBPF_TEST_IFNAME")
        if os.geteuid() != 0 or not name:
            pytest.skip("the real pair needs root and BSDBPF_TEST_IFNAME")
        from bsdbpf.system import HostSystem  # noqa: PLC0415

        with HostTraffic(name) as source:
            yield HostSystem(), name, source
        return
    kernel = Kernel(uid=0)
    kernel.add_interface("em0")
    kernel.add_interface("peer0")
    system = SimPair(kernel)
    injector = FrameInjector("em0", "peer0", system=system, timeout=2.0)
    try:
        yield system, "em0", injector.inject
    finally:
        injector.close()
        kernel.shutdown()


@pytest.mark.parametrize("outgoing", [False, True], ids=["incoming", "outgoing"])
def test_frames_arrive_in_order_with_their_direction(pair: Any, outgoing: bool) -> None:
    system, ifname, traffic = pair
    want = Direction.OUT if outgoing else Direction.IN
    with Descriptor.open(ifname, zerocopy=False, immediate=True, direction=want,
                         system=system) as d:
        sent = [frame(i) for i in range(5)] + [frame(0)]  # a repeat is a new frame
        for f in sent:
            traffic(ifname, f, outgoing=outgoing)
        got = [bytes(p.data) for p in d.packets(timeout=0)]
    assert got == sent


def test_a_frame_that_never_arrives_times_out() -> None:
    """No peer cabled: the witness waits its deadline and says what was lost."""
    kernel = Kernel(uid=0)
    kernel.add_interface("em0")
    kernel.add_interface("peer0")
    injector = FrameInjector("em0", "peer0", system=kernel, timeout=0.2)
    try:
        with pytest.raises(TimeoutError, match=r"64 bytes, incoming.*not seen within 0\.2 s"):
            injector.inject("em0", frame(1))
        injector.inject("em0", frame(2), outgoing=True)  # the capture end's own path works
    finally:
        injector.close()
        kernel.shutdown()


def test_only_the_capture_end_has_a_source(pair: Any) -> None:
    traffic = pair[2]
    with pytest.raises(NoTrafficSource, match="only"):
        traffic("lo0", frame(1))


def test_peer_names() -> None:
    assert peer_of("epair0a") == "epair0b"
    assert peer_of("epair12b") == "epair12a"
    with pytest.raises(NoTrafficSource, match="BSDBPF_TEST_PEER"):
        peer_of("em0")


@pytest.mark.skipif(ON_FREEBSD_HOST, reason="checks the error path off FreeBSD")
def test_child_reports_a_missing_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child process answers with the error instead of hanging the test."""
    monkeypatch.setenv("BSDBPF_SYSTEM", "sim")
    with pytest.raises(RuntimeError, match=r"cannot open the pair epair0a/epair0b"):
        HostTraffic("epair0a")
