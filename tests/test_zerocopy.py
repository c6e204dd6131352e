"""Zero-copy capture through Descriptor on the system under test (the
simulator, or FreeBSD's kernel with BSDBPF_SYSTEM=host), with
net.bpf.zerocopy_enable=1 for each test and restored after it.

The simulated kernel's packet path runs on threads of its own and writes into
the two mmap'd buffers while the test consumes them, as FreeBSD's does.
Descriptors that capture are opened after ``traffic`` is set up (on the real
kernel its witness descriptor must be the interface's oldest).
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import time
from typing import Any, Callable

import conftest
import pytest
from conftest import DEPARTURE, GENERATOR, SEQ, Sysctl, sim_only
from conftest import ether_frame as frame

from bsdbpf import (
    BpfStat,
    BufferMode,
    Descriptor,
    InterfaceNotFound,
    InvalidArgument,
    InvalidStateError,
    NotAttached,
    TimestampFormat,
    WrongBufferMode,
)
from bsdbpf._native import ffi, lib
from bsdbpf.sim import Kernel
from bsdbpf.system import System
from bsdbpf.zbuf import HEADER_SIZE, PAGE_SIZE, ZeroCopyBuffers

ZMAX = 512 * 4096  # BIOCGETZMAX on FreeBSD

pytestmark = pytest.mark.usefixtures("zerocopy")
Traffic = Callable[..., None]


class Recorder(conftest.Recorder):
    """Also notes, at close(2), whether any zero-copy mapping was already
    closed (it must not be): ``("close", fd, [closed, ...])``."""

    def __init__(self, system: System) -> None:
        super().__init__(system)
        self.maps: list[mmap.mmap] = []

    def close(self, fd: int) -> None:
        self.calls.append(("close", fd, [m.closed for m in self.maps]))
        self.kernel.close(fd)


@pytest.fixture
def rec(system: System, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder(system)
    real_init = ZeroCopyBuffers.__init__

    def init(self: ZeroCopyBuffers, length: int) -> None:
        real_init(self, length)
        recorder.maps.extend(self.maps)

    monkeypatch.setattr(ZeroCopyBuffers, "__init__", init)
    return recorder


def zopen(system: Any, ifname: str, **kw: Any) -> Descriptor:
    return Descriptor.open(ifname, zerocopy=True, system=system, **kw)


# -- setup ------------------------------------------------------------------------


def test_buffers_are_page_aligned_whole_page_mmaps(rec: Recorder, ifname: str) -> None:
    with zopen(rec, ifname, buffer_size=5000) as d:
        assert d.zerocopy
        assert d.zerocopy_fallback_reason is None
        assert d.buffer_mode is BufferMode.ZBUF
        zbuf = d.zerocopy_buffers
        assert zbuf is not None
        assert all(isinstance(m, mmap.mmap) for m in zbuf.maps)
        assert zbuf.length == 8192  # 5000 rounded up to whole pages
        assert d.buffer_size == 8192 - HEADER_SIZE  # BIOCGBLEN in ZBUF mode
        (call,) = [c for c in rec.calls if c[0] == "BIOCSETZBUF"]
        _, a, b, length = call
        assert a % PAGE_SIZE == b % PAGE_SIZE == 0
        assert length == 8192
        expected = [int(ffi.cast("uintptr_t", ffi.from_buffer(m))) for m in zbuf.maps]
        assert [a, b] == expected


def test_setup_order(rec: Recorder, ifname: str) -> None:
    with zopen(rec, ifname, immediate=True, snaplen=100):
        order = [c[1] if c[0] == "ioctl" else c[0] for c in rec.calls]
    setup = [lib.BIOCSETBUFMODE, lib.BIOCGETZMAX, "BIOCSETZBUF", lib.BIOCSETF,
             lib.BIOCIMMEDIATE, lib.BIOCSETIF]
    assert [x for x in order if x in setup] == setup


def test_default_size_is_512k(system: System, ifname: str) -> None:
    with zopen(system, ifname) as d:
        assert d.zerocopy_buffers is not None
        assert d.zerocopy_buffers.length == 512 * 1024


def test_size_beyond_zmax_names_the_maximum(rec: Recorder, ifname: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        zopen(rec, ifname, buffer_size=ZMAX + 1)
    assert info.value.errno == errno.EINVAL
    assert str(ZMAX) in str(info.value)
    assert rec.calls[-1][0] == "close"
    with zopen(rec, ifname, buffer_size=ZMAX) as d:  # the maximum itself is fine
        assert d.buffer_size == ZMAX - HEADER_SIZE


def test_teardown_closes_the_fd_before_unmapping(rec: Recorder, ifname: str,
                                                 traffic: Traffic) -> None:
    d = zopen(rec, ifname, immediate=True)
    traffic(ifname, frame(1))
    batch = d.next_batch(timeout=5)
    assert batch is not None
    held = list(batch)  # views of the shared buffer, alive at close
    d.close()
    ((_, _fd, closed_at_close),) = [c for c in rec.calls if c[0] == "close"]
    assert len(closed_at_close) == 2
    assert closed_at_close == [False, False]  # both still mapped when close(2) ran
    assert all(m.closed for m in rec.maps)  # and unmapped afterwards
    with pytest.raises(ValueError, match="released"):
        bytes(held[0].data)


def test_failed_open_closes_the_fd_before_unmapping(rec: Recorder) -> None:
    with pytest.raises(InterfaceNotFound):
        Descriptor.open("nope0", zerocopy=True, system=rec)
    ((_, _, closed_at_close),) = [c for c in rec.calls if c[0] == "close"]
    assert closed_at_close == [False, False]
    assert len(rec.maps) == 2
    assert all(m.closed for m in rec.maps)


def test_registering_twice_or_after_attach(system: System, ifname: str) -> None:
    with zopen(system, ifname) as d:
        with pytest.raises(InvalidStateError) as info:
            d.register_zerocopy_buffers()
        assert info.value.errno == errno.EINVAL
    with Descriptor(system=system) as d:
        d.buffer_mode = BufferMode.ZBUF
        d.register_zerocopy_buffers(4096)
        with pytest.raises(InvalidStateError) as info:
            d.register_zerocopy_buffers(4096)
        assert info.value.errno == errno.EINVAL


def test_a_read_before_registering_leaves_no_buffered_reader_behind(
        system: System, ifname: str, traffic: Any) -> None:
    """A read before attaching sets up a reader over read(2); registering
    zero-copy buffers afterwards must replace it (read(2) is refused in
    zero-copy mode)."""
    with Descriptor(system=system) as d:
        with pytest.raises(NotAttached):
            d.next_batch(timeout=0)
        d.buffer_mode = BufferMode.ZBUF
        d.register_zerocopy_buffers(4 * PAGE_SIZE)
        d.attach(ifname)
        traffic(ifname, frame(1))
        assert [bytes(p) for p in d.packets(count=1, timeout=5)] == [frame(1)]
        assert d.buffers_consumed == 1


def test_buffer_size_in_zbuf_mode_is_eopnotsupp(system: System) -> None:
    with Descriptor(system=system) as d:
        d.buffer_mode = BufferMode.ZBUF
        with pytest.raises(WrongBufferMode) as info:
            d.buffer_size = 8192
        assert info.value.errno == errno.EOPNOTSUPP


@pytest.mark.parametrize("use", [lambda d: d.flush(), lambda d: d.set_filter([(6, 0, 0, 1)])])
def test_requests_that_would_panic_freebsd_are_refused_first(rec: Recorder, use: Any) -> None:
    with Descriptor(system=rec) as d:
        d.buffer_mode = BufferMode.ZBUF
        before = len(rec.calls)
        with pytest.raises(InvalidStateError, match="panic") as info:
            use(d)
        assert info.value.errno == errno.EINVAL
        assert len(rec.calls) == before  # never sent: SimulatedPanic on the simulator


def test_attach_in_zbuf_mode_without_buffers(system: System, ifname: str) -> None:
    with Descriptor(system=system) as d:
        d.buffer_mode = BufferMode.ZBUF
        with pytest.raises(InvalidStateError) as info:
            d.attach(ifname)
        assert info.value.errno == errno.EINVAL
        assert info.value.ifname == ifname


def test_zerocopy_disabled_auto_falls_back(system: System, ifname: str,
                                           sysctl: Sysctl) -> None:
    sysctl.set("net.bpf.zerocopy_enable", 0)
    with Descriptor.open(ifname, system=system) as d:
        assert not d.zerocopy
        assert d.zerocopy_buffers is None
        assert "sysctl net.bpf.zerocopy_enable=1" in (d.zerocopy_fallback_reason or "")


# -- the consumer protocol ----------------------------------------------------------


def test_injected_frames_arrive_byte_for_byte(system: System, ifname: str,
                                              traffic: Traffic) -> None:
    frames = [frame(i, size) for i, size in enumerate([60, 64, 1514, 61, 100])]
    with zopen(system, ifname, buffer_size=65536) as d:
        for f in frames:
            traffic(ifname, f)
        got = [(bytes(p.data), p.caplen, p.wirelen) for p in d.packets(timeout=0)]
        assert got == [(f, len(f), len(f)) for f in frames]
        assert (d.buffers_consumed, d.records_consumed) == (1, len(frames))


def test_a_jumbo_frame_arrives_whole(system: System, ifname: str, traffic: Traffic) -> None:
    # 9000 bytes: within the MTU vagrant/provision.sh gives the epair(4) pair.
    with zopen(system, ifname, buffer_size=65536) as d:
        traffic(ifname, frame(5, 9000))
        got = [(bytes(p.data), p.caplen, p.wirelen) for p in d.packets(timeout=0)]
        assert got == [(frame(5, 9000), 9000, 9000)]


def test_a_frame_larger_than_the_buffer_is_truncated_to_fit(
        system: System, ifname: str, traffic: Traffic) -> None:
    with zopen(system, ifname, buffer_size=4096) as d:
        traffic(ifname, frame(1, 5000))
        got = [(p.caplen, p.wirelen, bytes(p.data)) for p in d.packets(timeout=0)]
        caplen = 4096 - HEADER_SIZE - 26
        assert got == [(caplen, 5000, frame(1, 5000)[:caplen])]


def test_buffers_alternate_a_b_and_are_acknowledged(system: System, ifname: str,
                                                   traffic: Traffic) -> None:
    with zopen(system, ifname, buffer_size=4096) as d:
        zbuf = d.zerocopy_buffers
        assert zbuf is not None
        exports = [ffi.from_buffer(m) for m in zbuf.maps]
        headers = [ffi.cast("struct bpf_zbuf_header *", b) for b in exports]
        order = []
        for i in range(6):
            traffic(ifname, frame(i))
            batch = d.next_batch(timeout=0)  # BIOCROTZBUF hands over the partial buffer
            assert batch is not None
            with batch:
                owned = [h.bzh_user_gen != h.bzh_kernel_gen for h in headers]
                assert owned.count(True) == 1
                order.append(owned.index(True))
                assert [SEQ.unpack_from(p.data, 14)[0] for p in batch] == [i]
                assert d.buffers_held
            assert not d.buffers_held
            assert all(h.bzh_user_gen == h.bzh_kernel_gen for h in headers)
            # Let the kernel reclaim the acknowledged buffer (spec section f):
            # the next injected frame does it.
        assert order == [0, 1, 0, 1, 0, 1]
        for b in exports:
            ffi.release(b)  # before close() unmaps


def test_views_are_released_at_acknowledgement(system: System, ifname: str,
                                               traffic: Traffic) -> None:
    with zopen(system, ifname, immediate=True) as d:
        for i in range(3):
            traffic(ifname, frame(i))
        batch = d.next_batch(timeout=5)
        assert batch is not None
        with batch:
            pkts = list(batch)
            copies = [p.copy() for p in pkts]
        for p in pkts:
            with pytest.raises(ValueError, match="released"):
                bytes(p.data)
        with pytest.raises(ValueError, match="released"):
            list(batch)
        assert [bytes(c.data) for c in copies] == [frame(i) for i in range(3)]


def test_a_packet_is_invalid_once_its_buffer_is_acknowledged(system: System, ifname: str,
                                                             traffic: Traffic) -> None:
    with zopen(system, ifname) as d:
        traffic(ifname, frame(1))
        traffic(ifname, frame(2))
        it = d.packets(timeout=0)
        first = next(it)
        second = next(it)
        assert (bytes(first.data), bytes(second.data)) == (frame(1), frame(2))
        assert list(it) == []  # the next fetch acknowledges the buffer
        for pkt in (first, second):
            with pytest.raises(ValueError, match="released"):
                pkt.data.tobytes()
        assert not d.buffers_held  # acknowledged before waiting for more


def test_count_keeps_the_rest_of_the_buffer_for_the_next_call(system: System, ifname: str,
                                                               traffic: Traffic) -> None:
    with zopen(system, ifname) as d:
        for i in range(5):
            traffic(ifname, frame(i))
        first = [SEQ.unpack_from(p.data, 14)[0] for p in d.packets(count=3, timeout=0)]
        assert d.buffers_held  # not acknowledged: two records are left
        rest = [SEQ.unpack_from(p.data, 14)[0] for p in d.packets(timeout=0)]
        assert (first, rest) == ([0, 1, 2], [3, 4])
        assert d.buffers_consumed == 1


@pytest.mark.parametrize("fmt", list(TimestampFormat))
def test_every_timestamp_format(system: System, ifname: str, traffic: Traffic,
                                fmt: TimestampFormat) -> None:
    with zopen(system, ifname, timestamp=fmt) as d:
        before = time.time_ns()
        traffic(ifname, frame(3))
        after = time.time_ns()
        ((data, tstamp, ns),) = [(bytes(p.data), p.tstamp, p.timestamp_ns)
                                 for p in d.packets(timeout=0)]
        assert (data, tstamp) == (frame(3), int(fmt))
        if fmt is TimestampFormat.NONE:
            assert ns == 0
        else:  # read with the header type and units of this format (wall clock)
            assert before - 10**9 <= ns <= after + 10**9


def test_immediate_makes_the_fd_readable_per_packet(system: System, ifname: str,
                                                    traffic: Traffic) -> None:
    with zopen(system, ifname, immediate=True) as d:
        traffic(ifname, frame(8))
        # Waits (poll) for readability, then BIOCROTZBUF fetches the store buffer.
        got = [bytes(p.data) for p in d.packets(count=1)]
        assert got == [frame(8)]


def test_read_timeout_makes_a_partial_buffer_readable(system: System, ifname: str,
                                                       traffic: Traffic) -> None:
    with zopen(system, ifname, read_timeout=0.01) as d:
        traffic(ifname, frame(9))
        assert [bytes(p.data) for p in d.packets(count=1)] == [frame(9)]


@sim_only(DEPARTURE)
def test_interface_departure_while_waiting(kernel: Kernel) -> None:
    with zopen(kernel, "em0") as d:
        kernel.remove_interface("em0")
        with pytest.raises(NotAttached) as info:
            next(d.packets())
        assert info.value.errno == errno.ENXIO


def test_async_batches(system: System, ifname: str, traffic: Traffic) -> None:
    with zopen(system, ifname, immediate=True) as d:
        async def main() -> list[list[bytes]]:
            loop = asyncio.get_running_loop()
            loop.call_later(0.01, traffic, ifname, frame(1))
            out = []
            async for batch in d.abatches(timeout=0.2):
                with batch:
                    out.append([bytes(p.data) for p in batch])
            return out

        assert asyncio.run(main()) == [[frame(1)]]
        assert not d.buffers_held


def test_flush_after_setup_is_allowed_and_keeps_a_held_buffer(system: System, ifname: str,
                                                               traffic: Traffic) -> None:
    with zopen(system, ifname) as d:
        traffic(ifname, frame(1))
        batch = d.next_batch(timeout=0)
        assert batch is not None
        d.flush()  # a user-owned buffer is never touched by BIOCFLUSH
        assert [bytes(p.data) for p in batch] == [frame(1)]
        batch.release()
        assert d.stats() == BpfStat(0, 0)


# -- long runs: every offered frame is received or counted as dropped ---------------


def consume(d: Descriptor, kernel: Kernel, count: int, rate: int) -> tuple[int, int, int]:
    """Capture a generator run with packets(); returns (offered, received, dropped)."""
    size = 96
    gen = kernel.generate("em0", count, size=size, rate=rate)
    received, last, sentinels = 0, -1, 0

    def take(timeout: float) -> None:
        nonlocal received, last, sentinels
        for pkt in d.packets(timeout=timeout):
            seq = SEQ.unpack_from(pkt.data, 14)[0]
            if seq >= count:
                sentinels += 1  # see below
                continue
            assert SEQ.unpack_from(pkt.data, size - 8)[0] == seq, f"torn record {seq}"
            assert seq > last, f"{seq} after {last}: duplicated or out of order"
            last, received = seq, received + 1

    while gen.running:  # the generator's own state ends the loop, not a sleep
        take(timeout=0.1)
    gen.wait()
    # An acknowledged buffer is reclaimed by the kernel only when the next frame
    # arrives (spec section f), so the last frames may wait for one.  Live
    # traffic provides it; here sentinel frames do: once one is received,
    # every frame before it has been.
    for i in range(count, count + 4):
        kernel.inject("em0", frame(i, size))
        take(timeout=0)
        if sentinels:
            break
    assert sentinels
    stats = d.stats()
    assert stats.recv >= gen.offered  # sentinels are offered too
    return gen.offered, received, stats.drop


@sim_only(GENERATOR)
def test_generator_run_with_small_buffers_balances(kernel: Kernel) -> None:
    with zopen(kernel, "em0", buffer_size=4096) as d:
        offered, received, dropped = consume(d, kernel, 200_000, rate=0)
    assert offered == 200_000
    assert received + dropped == offered
    assert received > 0
    assert dropped > 0  # 4 KiB buffers cannot keep up with a flat-out generator


@sim_only(GENERATOR)
def test_million_generated_packets_lose_none_uncounted(kernel: Kernel) -> None:
    with zopen(kernel, "em0", buffer_size=1024 * 1024) as d:
        offered, received, dropped = consume(d, kernel, 1_000_000, rate=250_000)
    assert offered == 1_000_000
    assert received + dropped == offered
    assert received > 0
