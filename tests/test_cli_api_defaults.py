"""Descriptor.open()'s defaults, which the command line relies on: libpcap's buffer
size in both modes, a read timeout, zero-copy sizes clamped under "auto", and
frames written unchanged.  On the system under test (the simulator, or
FreeBSD's kernel with BSDBPF_SYSTEM=host); net.bpf sysctls are restored."""

from __future__ import annotations

import threading
from typing import Callable

import pytest
from conftest import Sysctl, ether_frame

from bsdbpf import Descriptor, InvalidArgument, Packet
from bsdbpf.system import System

MIB = 1024 * 1024


def test_buffered_mode_gets_512_kib_not_the_kernels_4_kib(system: System, ifname: str) -> None:
    with Descriptor.open(ifname, zerocopy=False, system=system) as d:
        assert d.buffer_size == 512 * 1024
        assert d.read_timeout == 1.0


def test_the_granted_size_is_visible_when_the_kernel_caps_it(system: System,
                                                            ifname: str) -> None:
    with Descriptor.open(ifname, zerocopy=False, buffer_size=4 * MIB, system=system) as d:
        assert d.buffer_size == 512 * 1024  # net.bpf.maxbufsize


def test_one_packet_on_a_quiet_link_arrives_without_filling_the_buffer(
        system: System, ifname: str, traffic: Callable[..., None]) -> None:
    """Without a read timeout a blocking read waits until the buffer fills, which
    on a link with a packet now and then is never."""
    got: list[Packet] = []
    with Descriptor.open(ifname, system=system) as d:  # opened after traffic's witness
        reader = threading.Thread(target=lambda: got.extend(p.copy() for p in d.packets(1)))
        reader.start()
        traffic(ifname, ether_frame(1))
        reader.join(30)
        alive = reader.is_alive()
        if alive:  # let the thread end before the descriptor closes
            for i in range(20000):
                traffic(ifname, ether_frame(i, 1500))
            reader.join(30)
    assert not alive, "packets(1) waited for a full buffer"
    assert [bytes(p.data) for p in got] == [ether_frame(1)]


@pytest.mark.usefixtures("zerocopy")
def test_auto_clamps_an_oversized_zero_copy_buffer(system: System, ifname: str) -> None:
    with Descriptor.open(ifname, buffer_size=64 * MIB, system=system) as d:
        assert d.zerocopy
        zbuf = d.zerocopy_buffers
        assert zbuf is not None
        assert zbuf.length == 2 * MIB  # BIOCGETZMAX: 512 pages
    with pytest.raises(InvalidArgument):  # asking for zero-copy explicitly still checks
        Descriptor.open(ifname, zerocopy=True, buffer_size=64 * MIB, system=system)


def test_the_same_script_runs_whether_zero_copy_is_on_or_off(system: System, ifname: str,
                                                             sysctl: Sysctl) -> None:
    for enabled in (0, 1):
        sysctl.set("net.bpf.zerocopy_enable", enabled)
        with Descriptor.open(ifname, buffer_size=4 * MIB, system=system) as d:
            assert d.zerocopy == bool(enabled)


@pytest.mark.parametrize("complete", [True, False])
def test_written_frames_leave_unchanged_by_default(system: System, ifname: str,
                                                   complete: bool) -> None:
    frame = b"\xff" * 6 + b"\x02\x99\x99\x99\x99\x99" + ether_frame(7)[12:]
    kwargs = {} if complete else {"header_complete": False}
    with Descriptor.open(ifname, immediate=True, system=system) as watcher, \
            Descriptor.open(ifname, system=system, **kwargs) as writer:
        assert writer.header_complete is complete
        writer.write(frame)
        (seen,) = [bytes(p.data) for p in watcher.packets(1, timeout=10)]
    if complete:
        assert seen == frame
    else:  # the kernel put the interface's own address in
        assert seen[6:12] != frame[6:12]
        assert seen[12:] == frame[12:]
