"""The capture engine (bsdbpf.capture) on the simulator: each test pins one
defect of the reading path that must not come back."""

from __future__ import annotations

import asyncio
import errno
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from bsdbpf import Descriptor, InternalError, NotAttached, capture, raw
from bsdbpf._native import ffi, lib
from bsdbpf.records import Released
from bsdbpf.sim import Kernel

SEQ = struct.Struct("!I")


def frame(i: int, size: int = 60) -> bytes:
    head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + SEQ.pack(i)
    return head + bytes((i + k) & 0xFF for k in range(size - len(head)))


class Counting:
    """A System that counts the calls made through it."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.kernel, name)

        def call(*args: Any) -> Any:
            self.calls.append(name)
            return target(*args)

        return call


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    k = Kernel(uid=0)
    k.add_interface("em0", dlt=lib.DLT_EN10MB)
    k.sysctlbyname("net.bpf.zerocopy_enable", (1).to_bytes(4, "little"))
    try:
        yield k
    finally:
        k.shutdown()


def seqs(pkts: Any) -> list[int]:
    return [SEQ.unpack_from(p, 14)[0] for p in pkts]


# -- release cannot half-happen ---------------------------------------------------


@pytest.mark.parametrize("zerocopy", [False, True], ids=["buffered", "zerocopy"])
def test_a_view_kept_past_release_keeps_its_bytes(kernel: Kernel, zerocopy: bool) -> None:
    with Descriptor.open("em0", zerocopy=zerocopy, buffer_size=4096, system=kernel) as d:
        kernel.inject("em0", frame(1))
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
            kernel.inject("em0", frame(i))
            assert seqs(d.packets(timeout=0)) == [i]
        assert SEQ.unpack(kept_slice)[0] == 1
        assert bytes(kept_view) == frame(1)


def test_numpy_view_of_a_zero_copy_packet_does_not_wedge_the_descriptor(
        kernel: Kernel) -> None:
    np = pytest.importorskip("numpy")
    with Descriptor.open("em0", zerocopy=True, buffer_size=4096, system=kernel) as d:
        kernel.inject("em0", frame(7))
        (pkt,) = d.packets(count=1, timeout=0)
        array = np.frombuffer(pkt.data, dtype=np.uint8)
        assert list(d.packets(timeout=0)) == []  # releases the batch despite the export
        assert not d.buffers_held
        for i in range(8, 12):  # buffer a is written again
            kernel.inject("em0", frame(i))
            assert seqs(d.packets(timeout=0)) == [i]
        assert bytes(array) == frame(7)


def test_a_scribbled_kernel_length_costs_one_error(kernel: Kernel) -> None:
    with Descriptor.open("em0", zerocopy=True, buffer_size=4096, system=kernel) as d:
        zbuf = d.zerocopy_buffers
        assert zbuf is not None
        kernel.inject("em0", frame(1))
        header = ffi.cast("struct bpf_zbuf_header *", ffi.from_buffer(zbuf.maps[0]))
        d._raw(raw.rot_zbuf)  # hand buffer a over, then corrupt its length
        header.bzh_kernel_len = 1 << 30
        with pytest.raises(InternalError, match=r"(?i)bzh_kernel_len"):
            d.next_batch(timeout=0)
        assert not d.buffers_held  # given back unread
        kernel.inject("em0", frame(2))
        kernel.inject("em0", frame(3))
        assert seqs(d.packets(timeout=0)) == [2, 3]


@pytest.mark.parametrize("zerocopy", [False, True], ids=["buffered", "zerocopy"])
def test_a_corrupt_record_costs_one_error(kernel: Kernel, zerocopy: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = capture.parse
    calls = []

    def parse_once_corrupt(buffer: Any, tstamp: int, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            return real(b"\x00" * 40, tstamp, end=40)  # a record running past the end
        return real(buffer, tstamp, **kw)

    monkeypatch.setattr(capture, "parse", parse_once_corrupt)
    with Descriptor.open("em0", zerocopy=zerocopy, buffer_size=4096, system=kernel) as d:
        kernel.inject("em0", frame(1))
        with pytest.raises(InternalError, match=r"(?i)corrupt buffer"):
            d.next_batch(timeout=0)
        assert not d.buffers_held
        kernel.inject("em0", frame(2))
        assert seqs(d.packets(timeout=0)) == [2]


# -- no system call per buffer while buffers are ready ---------------------------------


@pytest.mark.parametrize("zerocopy", [False, True], ids=["buffered", "zerocopy"])
def test_no_system_call_but_the_transfer_while_a_buffer_is_ready(kernel: Kernel,
                                                                 zerocopy: bool) -> None:
    system = Counting(kernel)
    with Descriptor.open("em0", zerocopy=zerocopy, buffer_size=4096, system=system) as d:
        for i in range(100):  # two full 4 KiB buffers of 88-byte records, and more
            kernel.inject("em0", frame(i))
        first = d.next_batch()  # sizes the read buffer, reads BIOCGTSTAMP once
        assert first is not None
        first.release()
        kernel.inject("em0", frame(100))  # the kernel reclaims the acknowledged buffer
        system.calls.clear()
        batch = d.next_batch()  # a full buffer is waiting: no poll, no rotation
        assert batch is not None
        assert system.calls == ([] if zerocopy else ["read"])
        batch.release()


# -- asyncio: close from another task ----------------------------------------------------


@pytest.mark.parametrize("zerocopy", [False, True], ids=["buffered", "zerocopy"])
def test_close_from_another_task_ends_apackets_at_once(kernel: Kernel, zerocopy: bool) -> None:
    d = Descriptor.open("em0", zerocopy=zerocopy, system=kernel)

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


@pytest.mark.parametrize("zerocopy", [False, True], ids=["buffered", "zerocopy"])
def test_a_locked_descriptor_hands_over_a_partial_buffer_at_the_deadline(
        kernel: Kernel, zerocopy: bool) -> None:
    with Descriptor.open("em0", zerocopy=zerocopy, system=kernel) as d:
        d.lock()
        kernel.inject("em0", frame(1))
        kernel.inject("em0", frame(2))
        assert seqs(d.packets(timeout=0.01)) == [1, 2]
        kernel.inject("em0", frame(3))
        assert seqs(d.packets(timeout=0)) == [3]


# -- interface departure ---------------------------------------------------------------


@pytest.mark.parametrize("zerocopy", [False, True], ids=["buffered", "zerocopy"])
def test_packets_buffered_at_departure_come_before_not_attached(kernel: Kernel,
                                                                zerocopy: bool) -> None:
    with Descriptor.open("em0", zerocopy=zerocopy, system=kernel) as d:  # not immediate
        kernel.inject("em0", frame(1))
        kernel.inject("em0", frame(2))
        kernel.remove_interface("em0")
        it = d.packets()
        assert seqs([next(it), next(it)]) == [1, 2]
        with pytest.raises(NotAttached) as info:
            next(it)
        assert info.value.errno == errno.ENXIO
