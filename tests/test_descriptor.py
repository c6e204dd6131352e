"""Descriptor on the system under test (the simulator, or FreeBSD's kernel with
BSDBPF_SYSTEM=host): lifecycle, every knob, misuse, buffered capture.

Descriptors that capture are opened after ``traffic`` is set up: on the real
kernel its witness descriptor must be the interface's oldest.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import selectors
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from conftest import (
    DEPARTURE,
    GENERATOR,
    SEQ,
    Recorder,
    Sysctl,
    kern_hz,
    sim_only,
    timeout_read_back,
)
from conftest import ether_frame as frame

from bsdbpf import (
    BpfStat,
    BpfVersion,
    BufferMode,
    Clock,
    Descriptor,
    DescriptorLocked,
    Direction,
    InterfaceNotFound,
    InvalidArgument,
    InvalidFilter,
    InvalidStateError,
    NotAttached,
    PermissionDenied,
    Timestamp,
    TimestampFormat,
    WriteRejected,
    WrongBufferMode,
    ZeroCopyDisabled,
)
from bsdbpf._native import lib
from bsdbpf.sim import Kernel
from bsdbpf.system import System

RET_K = lib.BPF_RET | lib.BPF_K
ACCEPT = [(RET_K, 0, 0, 0xFFFFFFFF)]


Traffic = Callable[..., None]


@pytest.fixture
def rec(system: System) -> Recorder:
    """A :class:`Recorder` over the system under test."""
    return Recorder(system)


@pytest.fixture
def d(system: System) -> Iterator[Descriptor]:
    with Descriptor(system=system) as desc:
        yield desc


@pytest.fixture
def em0(system: System, ifname: str, traffic: Traffic) -> Iterator[Descriptor]:
    """An immediate descriptor on ``ifname`` (opened after ``traffic``)."""
    with Descriptor.open(ifname, zerocopy=False, immediate=True, system=system) as desc:
        yield desc


# -- lifecycle ------------------------------------------------------------------


def test_open_close_and_context_manager(rec: Recorder) -> None:
    with Descriptor(system=rec) as desc:
        fd = desc.fileno()
        assert not desc.closed
    assert desc.closed
    assert rec.calls == [("open", "/dev/bpf"), ("close", fd)]
    desc.close()  # idempotent: no second close(2)
    assert rec.calls.count(("close", fd)) == 1


def test_the_descriptor_is_not_inherited_by_programs_it_runs(system: System) -> None:
    with Descriptor(system=system) as desc:
        assert not os.get_inheritable(desc.fileno())  # O_CLOEXEC, as PEP 446 has it


USES = [
    lambda d: d.fileno(),
    lambda d: d.buffer_size,
    lambda d: setattr(d, "immediate", True),
    lambda d: d.stats(),
    lambda d: d.attach("em0"),
    lambda d: d.attach("x" * 40),
    lambda d: d.set_filter(ACCEPT),
    lambda d: d.write(frame(0)),
    lambda d: d.flush(),
    lambda d: d.lock(),
    lambda d: d.register_zerocopy_buffers(),
    lambda d: next(d.packets(timeout=0)),
    lambda d: next(d.batches()),
    lambda d: d.next_batch(0),
    lambda d: asyncio.run(d.abatches().__anext__()),
]


@pytest.mark.parametrize("use", USES)
def test_use_after_close_is_a_value_error_before_any_syscall(rec: Recorder, use: Any) -> None:
    desc = Descriptor(system=rec)
    desc.close()
    before = list(rec.calls)
    with pytest.raises(ValueError, match=r"^I/O operation on closed Descriptor$"):
        use(desc)
    assert rec.calls == before


def test_del_warns_and_closes(rec: Recorder) -> None:
    holder = [Descriptor(system=rec)]
    fd = holder[0].fileno()
    with pytest.warns(ResourceWarning, match="unclosed"):
        forget(holder)
    assert rec.calls[-1] == ("close", fd)


def forget(holder: list[Any]) -> None:
    """Drop the only reference, so that __del__ runs."""
    holder.clear()
    gc.collect()


def test_del_of_half_initialised_objects_is_quiet(system: System,
                                                  unprivileged: Callable[[], Any]) -> None:
    with unprivileged(), pytest.raises(PermissionDenied) as info:
        Descriptor(system=system)  # open(2) fails: no fd, no warning at collection
    assert info.value.errno == errno.EACCES
    del info
    gc.collect()
    Descriptor.__new__(Descriptor).__del__()  # __init__ never ran


def test_default_system_is_used_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSDBPF_SYSTEM", "sim")
    with Descriptor() as desc:
        assert desc.version == BpfVersion(1, 1)


def test_open_failure_releases_the_fd_and_reraises(rec: Recorder) -> None:
    with pytest.raises(InterfaceNotFound) as info:
        Descriptor.open("nope0", zerocopy=False, system=rec)
    assert info.value.errno == errno.ENXIO
    assert info.value.ifname == "nope0"
    assert rec.calls[-1][0] == "close"


def test_open_runs_the_setup_in_the_kernels_order(rec: Recorder, ifname: str) -> None:
    with Descriptor.open(ifname, zerocopy=False, buffer_size=8192, snaplen=96,
                         immediate=True, direction=Direction.IN,
                         timestamp=TimestampFormat.NANOTIME, read_timeout=0.25,
                         promiscuous=True, nonblocking=True, system=rec):
        order = [c[1] for c in rec.calls if c[0] == "ioctl"]
    setup = [lib.BIOCSBLEN, lib.BIOCSETF, lib.BIOCIMMEDIATE, lib.BIOCSDIRECTION,
             lib.BIOCSTSTAMP, lib.BIOCSRTIMEOUT, lib.FIONBIO, lib.BIOCSETIF, lib.BIOCPROMISC]
    assert [r for r in order if r in setup] == setup


def test_open_rejects_bad_arguments(system: System, ifname: str) -> None:
    with pytest.raises(ValueError, match="zerocopy"):
        Descriptor.open(ifname, zerocopy="yes", system=system)
    with pytest.raises(ValueError, match="not both"):
        Descriptor.open(ifname, filter=ACCEPT, snaplen=10, system=system)


# -- every knob round-trips -------------------------------------------------------


def test_defaults_of_a_new_descriptor(d: Descriptor) -> None:
    assert d.buffer_mode is BufferMode.BUFFER
    assert d.buffer_size == 4096  # net.bpf.bufsize
    assert d.direction is Direction.INOUT
    assert d.timestamp == Timestamp(TimestampFormat.MICROTIME, Clock.NORMAL)
    assert d.read_timeout is None
    assert d.header_complete is False
    assert (d.immediate, d.feedback, d.nonblocking, d.locked) == (False,) * 4
    assert d.interface is None
    assert d.version == BpfVersion(lib.BPF_MAJOR_VERSION, lib.BPF_MINOR_VERSION)
    assert d.stats() == BpfStat(0, 0)
    assert d.bytes_available == 0
    assert (d.filter, d.write_filter) == (None, None)
    assert not d.zerocopy
    assert d.zerocopy_fallback_reason is None


@pytest.mark.parametrize(("asked", "granted"), [(8192, 8192), (10**9, 524288), (1, 32)])
def test_buffer_size_reports_what_the_kernel_granted(d: Descriptor, asked: int,
                                                     granted: int) -> None:
    d.buffer_size = asked
    assert d.buffer_size == granted


@pytest.mark.parametrize("name", ["immediate", "feedback", "header_complete", "nonblocking"])
def test_flags_round_trip(d: Descriptor, name: str) -> None:
    for value in (True, False, True):
        setattr(d, name, value)
        assert getattr(d, name) is value


@pytest.mark.parametrize("value", list(Direction))
def test_direction_round_trips(d: Descriptor, value: Direction) -> None:
    d.direction = value
    assert d.direction is value


def test_invalid_direction_is_the_kernels_einval(d: Descriptor) -> None:
    with pytest.raises(InvalidArgument) as info:
        d.direction = 7  # type: ignore[assignment]
    assert info.value.errno == errno.EINVAL
    assert info.value.op == "BIOCSDIRECTION"


@pytest.mark.parametrize("fmt", list(TimestampFormat))
@pytest.mark.parametrize("clock", list(Clock))
def test_timestamp_round_trips_or_is_refused_like_freebsd(d: Descriptor, fmt: TimestampFormat,
                                                         clock: Clock) -> None:
    if fmt is TimestampFormat.NONE and clock is not Clock.NORMAL:  # not BPF_T_VALID
        with pytest.raises(InvalidArgument) as info:
            d.timestamp = (fmt, clock)
        assert info.value.errno == errno.EINVAL
        return
    d.timestamp = Timestamp(fmt, clock)
    assert d.timestamp == (fmt, clock)
    d.timestamp = fmt
    assert d.timestamp == Timestamp(fmt, Clock.NORMAL)


@pytest.mark.parametrize(("seconds", "read_back"),
                         [(1.0, 1.0), (2.5, 2.5), (0.0005, 0.001), (0.0001234, 0.001),
                          (None, None), (0, None)])
def test_read_timeout_rounds_to_ticks(d: Descriptor, system: System, seconds: float | None,
                                      read_back: float | None) -> None:
    """The read-backs are for kern.hz = 1000; elsewhere (a VM's 100) the
    kernel's rule, :func:`conftest.timeout_read_back`, gives them."""
    d.read_timeout = seconds
    hz = kern_hz(system)
    if hz != 1000 and seconds:
        sec, usec = timeout_read_back(int(seconds), round(seconds % 1 * 1e6), hz)
        read_back = sec + usec / 1e6
    assert d.read_timeout == read_back


def test_negative_read_timeout_is_einval(d: Descriptor) -> None:
    with pytest.raises(InvalidArgument) as info:
        d.read_timeout = -1.0
    assert info.value.errno == errno.EINVAL


@sim_only("needs an interface offering exactly DLT_EN10MB and DLT_RAW (the simulator's "
          "multi0)")
def test_interface_dlt_and_dlt_list(kernel: Kernel) -> None:
    with Descriptor.open("multi0", zerocopy=False, system=kernel) as desc:
        assert desc.interface == "multi0"
        assert desc.dlt_list == [lib.DLT_EN10MB, lib.DLT_RAW]
        assert desc.dlt == lib.DLT_EN10MB
        desc.dlt = lib.DLT_RAW
        assert desc.dlt == lib.DLT_RAW
        with pytest.raises(InvalidArgument) as info:
            desc.dlt = lib.DLT_NULL
        assert info.value.errno == errno.EINVAL


def test_loopback_offers_dlt_null_only(system: System) -> None:
    with Descriptor.open("lo0", zerocopy=False, system=system) as desc:
        assert desc.interface == "lo0"
        assert (desc.dlt, desc.dlt_list) == (lib.DLT_NULL, [lib.DLT_NULL])


def test_buffer_mode_round_trips_before_anything_is_allocated(d: Descriptor) -> None:
    d.buffer_mode = BufferMode.BUFFER
    assert d.buffer_mode is BufferMode.BUFFER


def test_filters_are_remembered_as_set(em0: Descriptor) -> None:
    class Insn:
        code, jt, jf, k = RET_K, 0, 0, 100

    em0.filter = [Insn()]
    assert list(em0.filter) == [(RET_K, 0, 0, 100)]
    em0.set_filter(ACCEPT, flush=False)
    assert list(em0.filter) == list(ACCEPT)
    em0.filter = None
    assert em0.filter is None
    em0.write_filter = ACCEPT
    assert list(em0.write_filter) == list(ACCEPT)


def test_bytes_available_counts_buffered_data(system: System, ifname: str,
                                              traffic: Traffic) -> None:
    with Descriptor.open(ifname, zerocopy=False, system=system) as desc:
        traffic(ifname, frame(0, 60))
        assert desc.bytes_available == 26 + 60


def test_promiscuous_and_stats_and_flush(em0: Descriptor, ifname: str,
                                         traffic: Traffic) -> None:
    em0.promiscuous()
    em0.promiscuous()  # idempotent
    for i in range(3):
        traffic(ifname, frame(i))
    assert em0.stats() == BpfStat(3, 0)
    em0.flush()
    assert em0.stats() == BpfStat(0, 0)
    assert em0.bytes_available == 0


# -- misuse: the right class and errno ------------------------------------------


def test_buffer_size_after_attach(em0: Descriptor) -> None:
    with pytest.raises(InvalidStateError) as info:
        em0.buffer_size = 8192
    assert info.value.errno == errno.EINVAL


def test_buffer_mode_after_attach_is_ebusy(em0: Descriptor) -> None:
    with pytest.raises(InvalidStateError) as info:
        em0.buffer_mode = BufferMode.BUFFER
    assert info.value.errno == errno.EBUSY


def test_zerocopy_true_while_disabled_names_the_sysctl(rec: Recorder, ifname: str,
                                                      sysctl: Sysctl) -> None:
    sysctl.set("net.bpf.zerocopy_enable", 0)
    with pytest.raises(ZeroCopyDisabled) as info:
        Descriptor.open(ifname, zerocopy=True, system=rec)
    assert info.value.errno == errno.EINVAL
    assert "sysctl net.bpf.zerocopy_enable=1" in str(info.value)
    assert rec.calls[-1][0] == "close"


def test_zerocopy_auto_falls_back_and_says_why(system: System, ifname: str,
                                               sysctl: Sysctl) -> None:
    sysctl.set("net.bpf.zerocopy_enable", 0)
    with Descriptor.open(ifname, system=system) as desc:
        assert not desc.zerocopy
        assert desc.buffer_mode is BufferMode.BUFFER
        assert "net.bpf.zerocopy_enable" in (desc.zerocopy_fallback_reason or "")


def test_zerocopy_only_calls_in_buffered_mode_are_eopnotsupp(d: Descriptor) -> None:
    with pytest.raises(WrongBufferMode) as info:
        d.register_zerocopy_buffers()
    assert info.value.errno == errno.EOPNOTSUPP


@pytest.mark.parametrize("use", [lambda d: d.dlt, lambda d: d.dlt_list,
                                 lambda d: d.promiscuous(), lambda d: setattr(d, "dlt", 1)])
def test_link_requests_before_attach_are_einval(d: Descriptor, use: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        use(d)
    assert info.value.errno == errno.EINVAL


def test_attach_to_an_unknown_interface(d: Descriptor) -> None:
    with pytest.raises(InterfaceNotFound) as info:
        d.attach("nope0")
    assert (info.value.errno, info.value.ifname, info.value.op) == (errno.ENXIO, "nope0",
                                                                    "BIOCSETIF")
    assert "nope0" in str(info.value)


def test_interface_name_too_long_is_refused_before_the_kernel(rec: Recorder) -> None:
    with Descriptor(system=rec) as desc:
        before = len(rec.calls)
        with pytest.raises(InvalidArgument) as info:
            desc.attach("x" * lib.IFNAMSIZ)
        assert info.value.errno == errno.EINVAL
        assert len(rec.calls) == before


def test_invalid_program_is_the_kernels_einval(d: Descriptor) -> None:
    with pytest.raises(InvalidFilter) as info:
        d.set_filter([(lib.BPF_LD | lib.BPF_W | lib.BPF_ABS, 0, 0, 0)])  # no RET at the end
    assert info.value.errno == errno.EINVAL
    assert info.value.op == "BIOCSETF"
    with pytest.raises(InvalidFilter) as info:
        d.write_filter = [(0x0E, 0, 0, 0)]  # RET|X: not a valid opcode
    assert info.value.op == "BIOCSETWF"


def test_out_of_range_instruction_is_refused_before_the_kernel(rec: Recorder) -> None:
    with Descriptor(system=rec) as desc:
        before = len(rec.calls)
        with pytest.raises(InvalidFilter, match="Instruction 1"):
            desc.set_filter([(RET_K, 0, 0, 1), (RET_K, 256, 0, 0)])
        assert len(rec.calls) == before


def test_program_longer_than_maxinsns(d: Descriptor, sysctl: Sysctl) -> None:
    sysctl.set("net.bpf.maxinsns", 2)
    with pytest.raises(InvalidFilter) as info:
        d.set_filter(ACCEPT * 3)
    assert info.value.errno == errno.EINVAL


def test_locked_descriptor_refuses_reconfiguration_but_captures(em0: Descriptor, ifname: str,
                                                                traffic: Traffic) -> None:
    em0.lock()
    assert em0.locked
    for change in (lambda: setattr(em0, "direction", Direction.IN),
                   lambda: em0.set_filter(ACCEPT),
                   lambda: setattr(em0, "nonblocking", True),
                   lambda: em0.buffer_mode,
                   lambda: em0.timestamp):
        with pytest.raises(DescriptorLocked) as info:
            change()
        assert info.value.errno == errno.EPERM
    em0.immediate = True  # allowed when locked
    em0.timestamp = TimestampFormat.NANOTIME  # BIOCSTSTAMP is allowed, BIOCGTSTAMP not
    traffic(ifname, frame(5))
    got = [(bytes(p.data), p.tstamp) for p in em0.packets(count=1, timeout=5)]
    assert got == [(frame(5), lib.BPF_T_NANOTIME)]
    assert em0.stats() == BpfStat(1, 0)


def test_write_unattached_and_write_filter(d: Descriptor, ifname: str) -> None:
    with pytest.raises(NotAttached) as info:
        d.write(frame(0))
    assert info.value.errno == errno.ENXIO
    d.attach(ifname)
    assert d.write(frame(1)) == 64
    d.write_filter = [(RET_K, 0, 0, 0)]  # reject every frame
    with pytest.raises(WriteRejected) as info2:
        d.inject(frame(2))
    assert info2.value.errno == errno.EPERM


def test_reading_an_unattached_descriptor(d: Descriptor) -> None:
    with pytest.raises(NotAttached) as info:
        list(d.packets(timeout=0))
    assert info.value.errno == errno.ENXIO


@sim_only(DEPARTURE)
def test_reading_after_the_interface_departed(em0: Descriptor, kernel: Kernel) -> None:
    kernel.inject("em0", frame(1))
    kernel.remove_interface("em0")
    it = em0.packets()
    assert bytes(next(it).data) == frame(1)  # what was buffered still arrives
    with pytest.raises(NotAttached) as info:
        next(it)
    assert info.value.errno == errno.ENXIO


def test_negative_timeout(em0: Descriptor) -> None:
    with pytest.raises(ValueError, match="timeout"):
        list(em0.packets(timeout=-1))


# -- buffered capture -------------------------------------------------------------


def test_injected_frames_arrive_byte_for_byte(em0: Descriptor, ifname: str,
                                              traffic: Traffic) -> None:
    frames = [frame(i, size) for i, size in enumerate([60, 64, 1514, 61, 100])]
    for f in frames:
        traffic(ifname, f)
    got = [(bytes(p.data), p.caplen, p.wirelen) for p in em0.packets(timeout=0)]
    assert got == [(f, len(f), len(f)) for f in frames]
    assert em0.records_consumed == 5


def test_snaplen_truncates_and_wirelen_remembers(system: System, ifname: str,
                                                 traffic: Traffic) -> None:
    with Descriptor.open(ifname, zerocopy=False, snaplen=20, system=system) as desc:
        traffic(ifname, frame(1, 200))
        (pkt,) = [p.copy() for p in desc.packets(timeout=0)]
        assert (pkt.caplen, pkt.wirelen, bytes(pkt.data)) == (20, 200, frame(1, 200)[:20])


def test_filter_selects_packets(system: System, ifname: str, traffic: Traffic) -> None:
    # Accept frames whose sequence number's low byte is odd.
    prog = [(lib.BPF_LD | lib.BPF_B | lib.BPF_ABS, 0, 0, 21),
            (lib.BPF_JMP | lib.BPF_JSET | lib.BPF_K, 0, 1, 1),
            (RET_K, 0, 0, 0xFFFF),
            (RET_K, 0, 0, 0)]
    with Descriptor.open(ifname, zerocopy=False, filter=prog, system=system) as desc:
        for i in range(10):
            traffic(ifname, frame(i))
        seqs = [SEQ.unpack_from(p.data, 14)[0] for p in desc.packets(timeout=0)]
    assert seqs == [1, 3, 5, 7, 9]


def test_direction_in_skips_outgoing_frames(system: System, ifname: str,
                                            traffic: Traffic) -> None:
    with Descriptor.open(ifname, zerocopy=False, direction=Direction.IN,
                         system=system) as desc:
        traffic(ifname, frame(1), outgoing=True)
        traffic(ifname, frame(2))
        assert [bytes(p.data) for p in desc.packets(timeout=0)] == [frame(2)]


@sim_only("injects on lo0 (DLT_NULL): on the real kernel frames are injected on the "
          "epair(4) pair only")
def test_dlt_null_records(kernel: Kernel) -> None:
    with Descriptor.open("lo0", zerocopy=False, system=kernel) as desc:
        payload = (2).to_bytes(4, "little") + b"\x45" + bytes(39)
        kernel.inject("lo0", payload)
        (pkt,) = [p.copy() for p in desc.packets(timeout=0)]
        assert bytes(pkt.data) == payload


@pytest.mark.parametrize("fmt", [TimestampFormat.MICROTIME, TimestampFormat.NANOTIME,
                                 TimestampFormat.BINTIME])
def test_wall_clock_timestamps(system: System, ifname: str, traffic: Traffic,
                               fmt: TimestampFormat) -> None:
    with Descriptor.open(ifname, zerocopy=False, timestamp=fmt, system=system) as desc:
        before = time.time_ns()
        traffic(ifname, frame(0))
        after = time.time_ns()
        (pkt,) = [p.copy() for p in desc.packets(timeout=0)]
        # The wall clock is boot time + uptime, on FreeBSD and the simulator.
        assert before - 10**9 <= pkt.timestamp_ns <= after + 10**9
        assert abs(pkt.datetime.timestamp() - pkt.timestamp) < 1e-5


def test_monotonic_timestamps(system: System, ifname: str, traffic: Traffic) -> None:
    ts = Timestamp(TimestampFormat.NANOTIME, Clock.MONOTONIC)
    with Descriptor.open(ifname, zerocopy=False, timestamp=ts, system=system) as desc:
        before = time.monotonic_ns()
        traffic(ifname, frame(0))
        after = time.monotonic_ns()
        (pkt,) = [p.copy() for p in desc.packets(timeout=0)]
        assert before <= pkt.timestamp_ns <= after
        assert pkt.monotonic
        with pytest.raises(ValueError, match="since boot"):
            _ = pkt.datetime


def test_no_timestamp(system: System, ifname: str, traffic: Traffic) -> None:
    with Descriptor.open(ifname, zerocopy=False, timestamp=TimestampFormat.NONE,
                         system=system) as desc:
        traffic(ifname, frame(0))
        (pkt,) = [p.copy() for p in desc.packets(timeout=0)]
        assert pkt.timestamp_ns == 0
        assert bytes(pkt.data) == frame(0)


def test_a_packet_is_valid_until_its_buffer_goes_back(em0: Descriptor, ifname: str,
                                                       traffic: Traffic) -> None:
    for i in range(3):
        traffic(ifname, frame(i))
    it = em0.packets(timeout=0)
    first = next(it)
    kept = first.copy()
    second = next(it)
    assert (bytes(first.data), bytes(second)) == (frame(0), frame(1))  # one buffer
    assert [bytes(p) for p in it] == [frame(2)]
    assert list(em0.packets(timeout=0)) == []  # the next fetch gives the buffer back
    for pkt in (first, second):
        with pytest.raises(ValueError, match="released"):
            bytes(pkt.data)
        with pytest.raises(ValueError, match="released"):
            _ = pkt.caplen
    assert bytes(kept.data) == frame(0)


def test_list_of_packets_across_buffers_needs_copies(em0: Descriptor, ifname: str,
                                                     traffic: Traffic) -> None:
    traffic(ifname, frame(0))
    (old,) = em0.packets(count=1, timeout=0)
    traffic(ifname, frame(1))
    both = [old, *em0.packets(count=1, timeout=0)]
    with pytest.raises(ValueError, match="released"):
        bytes(both[0])  # its buffer went back when the second one was fetched
    traffic(ifname, frame(2))
    traffic(ifname, frame(3))
    copies = list(em0.packets(count=2, timeout=0, copy=True))
    list(em0.packets(timeout=0))  # gives the buffer back
    assert [bytes(p) for p in copies] == [frame(2), frame(3)]


def test_count_stops_early_and_the_next_call_goes_on(em0: Descriptor, ifname: str,
                                                     traffic: Traffic) -> None:
    for i in range(5):
        traffic(ifname, frame(i))
    first = [SEQ.unpack_from(p.data, 14)[0] for p in em0.packets(count=2, timeout=0)]
    rest = [SEQ.unpack_from(p.data, 14)[0] for p in em0.packets(timeout=0)]
    assert (first, rest) == ([0, 1], [2, 3, 4])
    assert em0.buffers_consumed == 1


def test_batches_release_their_views(em0: Descriptor, ifname: str, traffic: Traffic) -> None:
    for i in range(4):
        traffic(ifname, frame(i))
    batch = em0.next_batch(timeout=0)
    assert batch is not None
    with batch:
        pkts = list(batch)
        assert [bytes(p.data) for p in pkts] == [frame(i) for i in range(4)]
    with pytest.raises(ValueError, match="released"):
        bytes(pkts[0].data)
    assert em0.next_batch(timeout=0) is None


def test_the_read_buffer_is_exactly_bgblen(rec: Recorder, ifname: str,
                                           traffic: Traffic) -> None:
    with Descriptor.open(ifname, zerocopy=False, buffer_size=10000, system=rec) as desc:
        traffic(ifname, frame(0))
        list(desc.packets(timeout=0))
        assert ("read", 10000) in rec.calls
        assert {c[1] for c in rec.calls if c[0] == "read"} == {desc.buffer_size}


def test_timeout_zero_returns_at_once_and_a_deadline_drains_a_partial_buffer(
        system: System, ifname: str, traffic: Traffic) -> None:
    # Not immediate: the kernel would hold packets until the buffer fills.
    with Descriptor.open(ifname, zerocopy=False, system=system) as desc:
        assert list(desc.packets(timeout=0)) == []
        traffic(ifname, frame(7))
        assert [bytes(p.data) for p in desc.packets(timeout=0.05)] == [frame(7)]
        assert not desc.nonblocking  # the non-blocking read was undone


def test_blocking_read_returns_a_full_buffer(system: System, ifname: str,
                                             traffic: Traffic) -> None:
    with Descriptor.open(ifname, zerocopy=False, system=system) as desc:
        for i in range(100):  # 100 records of 90 bytes overflow 4096: a rotation
            traffic(ifname, frame(i))
        batch = desc.next_batch()  # timeout=None: read(2) blocks until a buffer is full
        assert batch is not None
        assert [SEQ.unpack_from(p.data, 14)[0] for p in batch] == list(range(len(batch)))


def test_nonblocking_reads(system: System, ifname: str, traffic: Traffic) -> None:
    with Descriptor.open(ifname, zerocopy=False, nonblocking=True, system=system) as desc:
        assert desc.next_batch(timeout=0) is None
        traffic(ifname, frame(3))
        assert [bytes(p.data) for p in desc.packets(timeout=0)] == [frame(3)]


def test_read_timeout_makes_a_partial_buffer_readable(system: System, ifname: str,
                                                       traffic: Traffic) -> None:
    with Descriptor.open(ifname, zerocopy=False, read_timeout=0.01, system=system) as desc:
        traffic(ifname, frame(4))
        assert [bytes(p.data) for p in desc.packets(count=1)] == [frame(4)]


def test_selectors_see_readiness(em0: Descriptor, ifname: str, traffic: Traffic) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(em0, selectors.EVENT_READ)
        assert sel.select(0) == []
        traffic(ifname, frame(1))
        assert len(sel.select(5)) == 1
        assert len(list(em0.packets(timeout=0))) == 1


def test_async_packets_and_batches(em0: Descriptor, ifname: str, traffic: Traffic) -> None:
    async def main() -> tuple[list[bytes], list[int]]:
        loop = asyncio.get_running_loop()
        for i in range(3):
            loop.call_later(0.01 * (i + 1), traffic, ifname, frame(i))
        got = [bytes(p.data) async for p in em0.apackets(count=3)]
        traffic(ifname, frame(9))
        sizes = [len(b) async for b in em0.abatches(timeout=0.05)]
        return got, sizes

    got, sizes = asyncio.run(main())
    assert got == [frame(i) for i in range(3)]
    assert sizes == [1]


def test_async_timeout_with_nothing(em0: Descriptor) -> None:
    async def main() -> list[Any]:
        return [p async for p in em0.apackets(timeout=0.01)]

    assert asyncio.run(main()) == []


@sim_only(GENERATOR)
def test_generator_run_balances_in_buffered_mode(kernel: Kernel) -> None:
    with Descriptor.open("em0", zerocopy=False, buffer_size=16384, system=kernel) as desc:
        gen = kernel.generate("em0", 100_000, size=96)
        received, last = 0, -1
        while True:
            for pkt in desc.packets(timeout=0.1):
                seq, tail = SEQ.unpack_from(pkt.data, 14)[0], SEQ.unpack_from(pkt.data, 88)[0]
                assert seq == tail, "torn record"
                assert seq > last, f"{seq} after {last}"
                last, received = seq, received + 1
            if not gen.running:
                break
        gen.wait()
        assert list(desc.packets(timeout=0)) == []
        stats = desc.stats()
    assert stats.recv == gen.offered == 100_000
    assert received + stats.drop == gen.offered
    assert received > 0


def test_os_level_fd_is_real(em0: Descriptor) -> None:
    os.fstat(em0.fileno())
