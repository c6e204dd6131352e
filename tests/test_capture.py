"""The capture engine (bsdbpf.capture) on the system under test (the simulator,
or FreeBSD's kernel with BSDBPF_SYSTEM=host): each test pins one defect of the
reading path that must not come back.

net.bpf.zerocopy_enable=1 for each test (restored after it); descriptors that
capture are opened after ``traffic`` is set up (on the real kernel its witness
descriptor must be the interface's oldest).
"""

from __future__ import annotations

import asyncio
import errno
import struct
from typing import Any, Callable

import pytest
from conftest import DEPARTURE, sim_only

from bsdbpf import Descriptor, InternalError, NotAttached, capture, raw
from bsdbpf._native import ffi
from bsdbpf.records import Released
from bsdbpf.sim import Kernel
from bsdbpf.system import System

SEQ = struct.Struct("!I")
ZERO_COPY = pytest.mark.parametrize("zero_copy", [False, True], ids=["buffered", "zerocopy"])

pytestmark = pytest.mark.usefixtures("zerocopy")
Traffic = Callable[..., None]


def frame(i: int, size: int = 60) -> bytes:
    """A broadcast frame of the IEEE local experimental ethertype (harmless on
    a real wire) carrying ``i`` at offset 14."""
    head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + SEQ.pack(i)
    return head + bytes((i + k) & 0xFF for k in range(size - len(head)))


class Counting:
    """A System that counts the calls made through it."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.system, name)

        def call(*args: Any) -> Any:
            self.calls.append(name)
            return target(*args)

        return call


def seqs(pkts: Any) -> list[int]:
    return [SEQ.unpack_from(p, 14)[0] for p in pkts]


# -- release cannot half-happen ---------------------------------------------------


@ZERO_COPY
def test_a_view_kept_past_release_keeps_its_bytes(system: System, ifname: str,
                                                  traffic: Traffic, zero_copy: bool) -> None:
    with Descriptor.open(ifname, zerocopy=zero_copy, buffer_size=4096, system=system) as d:
        traffic(ifname, frame(1))
        batch = d.next_batch(timeout=0)
        assert batch is not None
        (pkt,) = batch
        kept_slice = pkt.data[14:18]  # a slice outlives pkt.data's release
        kept_view = memoryview(pkt)
        batch.release()  # zero-copy: acknowledged despite the exports
        assert not d.buffers_held
        with pytest.raises(Released):
            bytes(pkt)
        # The kernel writes the same buffer again (a, b, a: two more rounds).
        for i in range(2, 6):
            traffic(ifname, frame(i))
            assert seqs(d.packets(timeout=0)) == [i]
        assert SEQ.unpack(kept_slice)[0] == 1
        assert bytes(kept_view) == frame(1)


def test_numpy_view_of_a_zero_copy_packet_does_not_wedge_the_descriptor(
        system: System, ifname: str, traffic: Traffic) -> None:
    np = pytest.importorskip("numpy")
    with Descriptor.open(ifname, zerocopy=True, buffer_size=4096, system=system) as d:
        traffic(ifname, frame(7))
        (pkt,) = d.packets(count=1, timeout=0)
        array = np.frombuffer(pkt.data, dtype=np.uint8)
        assert list(d.packets(timeout=0)) == []  # releases the batch despite the export
        assert not d.buffers_held
        for i in range(8, 12):  # buffer a is written again
            traffic(ifname, frame(i))
            assert seqs(d.packets(timeout=0)) == [i]
        assert bytes(array) == frame(7)


def test_a_scribbled_kernel_length_costs_one_error(system: System, ifname: str,
                                                   traffic: Traffic) -> None:
    with Descriptor.open(ifname, zerocopy=True, buffer_size=4096, system=system) as d:
        zbuf = d.zerocopy_buffers
        assert zbuf is not None
        traffic(ifname, frame(1))
        header = ffi.cast("struct bpf_zbuf_header *", ffi.from_buffer(zbuf.maps[0]))
        d._raw(raw.rot_zbuf)  # hand buffer a over, then corrupt its length
        header.bzh_kernel_len = 1 << 30
        with pytest.raises(InternalError, match=r"(?i)bzh_kernel_len"):
            d.next_batch(timeout=0)
        assert not d.buffers_held  # given back unread
        traffic(ifname, frame(2))
        traffic(ifname, frame(3))
        assert seqs(d.packets(timeout=0)) == [2, 3]


@ZERO_COPY
def test_a_corrupt_record_costs_one_error(system: System, ifname: str, traffic: Traffic,
                                          zero_copy: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = capture.parse
    calls = []

    def parse_once_corrupt(buffer: Any, tstamp: int, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            return real(b"\x00" * 40, tstamp, end=40)  # a record running past the end
        return real(buffer, tstamp, **kw)

    monkeypatch.setattr(capture, "parse", parse_once_corrupt)
    with Descriptor.open(ifname, zerocopy=zero_copy, buffer_size=4096, system=system) as d:
        traffic(ifname, frame(1))
        with pytest.raises(InternalError, match=r"(?i)corrupt buffer"):
            d.next_batch(timeout=0)
        assert not d.buffers_held
        traffic(ifname, frame(2))
        assert seqs(d.packets(timeout=0)) == [2]


# -- no system call per buffer while buffers are ready ---------------------------------


@ZERO_COPY
def test_no_system_call_but_the_transfer_while_a_buffer_is_ready(system: System, ifname: str,
                                                                 traffic: Traffic,
                                                                 zero_copy: bool) -> None:
    counting = Counting(system)
    with Descriptor.open(ifname, zerocopy=zero_copy, buffer_size=4096, system=counting) as d:
        for i in range(100):  # two full 4 KiB buffers of 88-byte records, and more
            traffic(ifname, frame(i))
        first = d.next_batch()  # sizes the read buffer, reads BIOCGTSTAMP once
        assert first is not None
        first.release()
        traffic(ifname, frame(100))  # the kernel reclaims the acknowledged buffer
        counting.calls.clear()
        batch = d.next_batch()  # a full buffer is waiting: no poll, no rotation
        assert batch is not None
        assert counting.calls == ([] if zero_copy else ["read"])
        batch.release()


# -- asyncio: close from another task ----------------------------------------------------


@ZERO_COPY
def test_close_from_another_task_ends_apackets_at_once(system: System, ifname: str,
                                                       zero_copy: bool) -> None:
    d = Descriptor.open(ifname, zerocopy=zero_copy, system=system)

    async def reader() -> list[int]:
        got = []
        async for pkt in d.apackets():
            got.append(pkt.caplen)
        return got

    async def main() -> None:
        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)  # the reader waits for readability
        d.close()
        with pytest.raises(ValueError, match="closed"):
            await asyncio.wait_for(task, 5)  # not forever

    asyncio.run(main())
    assert d.closed


# -- locked descriptors drain partial buffers ------------------------------------------


@ZERO_COPY
def test_a_locked_descriptor_hands_over_a_partial_buffer_at_the_deadline(
        system: System, ifname: str, traffic: Traffic, zero_copy: bool) -> None:
    with Descriptor.open(ifname, zerocopy=zero_copy, system=system) as d:
        d.lock()
        traffic(ifname, frame(1))
        traffic(ifname, frame(2))
        assert seqs(d.packets(timeout=0.01)) == [1, 2]
        traffic(ifname, frame(3))
        assert seqs(d.packets(timeout=0)) == [3]


# -- interface departure ---------------------------------------------------------------


@ZERO_COPY
@sim_only(DEPARTURE)
def test_packets_buffered_at_departure_come_before_not_attached(kernel: Kernel,
                                                                zero_copy: bool) -> None:
    with Descriptor.open("em0", zerocopy=zero_copy, system=kernel) as d:  # not immediate
        kernel.inject("em0", frame(1))
        kernel.inject("em0", frame(2))
        kernel.remove_interface("em0")
        it = d.packets()
        assert seqs([next(it), next(it)]) == [1, 2]
        with pytest.raises(NotAttached) as info:
            next(it)
        assert info.value.errno == errno.ENXIO
