"""Records, packets and batches over buffers built by hand: no simulator needed."""

from __future__ import annotations

import datetime as dt
import errno
import struct

import pytest

from bsdbpf import Clock, InternalError, Packet, Timestamp, TimestampFormat
from bsdbpf._native import ffi, lib
from bsdbpf.records import Batch, Released, Stream, parse

ETHER, NULL = 14, 4  # link-header lengths: DLT_EN10MB, DLT_NULL
SEC = 1_700_000_000
XHDR_FORMATS = (lib.BPF_T_NANOTIME, lib.BPF_T_BINTIME)


def uses_xhdr(tstamp: int) -> bool:
    return tstamp & lib.BPF_T_FORMAT_MASK in XHDR_FORMATS


def build(
    payloads: list[bytes],
    tstamp: int,
    *,
    linkhdr: int = ETHER,
    ns: int = 123_456_789,
    wirelen: int | None = None,
    start: int = 0,
) -> tuple[bytearray, int]:
    """Records as the kernel lays them out (catchpacket): the whole header
    struct at a word-aligned offset, the packet at bh_hdrlen over its tail.
    Returns the buffer and the end of the data (not padded)."""
    hdrlen = lib.bsdbpf_hdrlen(linkhdr, tstamp)
    buf = bytearray(start + 64 * 1024 + sum(hdrlen + len(p) + 8 for p in payloads))
    end = off = start
    fmt = tstamp & lib.BPF_T_FORMAT_MASK
    for p in payloads:
        off = lib.bsdbpf_wordalign(end - start) + start
        if uses_xhdr(tstamp):
            h = ffi.new("struct bpf_xhdr *")
            h.bh_tstamp.bt_sec = SEC
            # bt_frac: nanoseconds (NANOTIME) or 2**-64 fractions (BINTIME)
            h.bh_tstamp.bt_frac = ns if fmt == lib.BPF_T_NANOTIME else bintime_frac(ns)
        else:
            h = ffi.new("struct bpf_hdr *")
            if fmt != lib.BPF_T_NONE:
                h.bh_tstamp.tv_sec = SEC
                h.bh_tstamp.tv_usec = ns // 1000
        h.bh_caplen = len(p)
        h.bh_datalen = len(p) if wirelen is None else wirelen
        h.bh_hdrlen = hdrlen
        raw = ffi.buffer(h)[:]
        buf[off: off + len(raw)] = raw
        buf[off + hdrlen: off + hdrlen + len(p)] = p
        end = off + hdrlen + len(p)
    return buf, end


def bintime_frac(ns: int) -> int:
    return (ns << 64) // 10**9


def expected_ns(tstamp: int, ns: int = 123_456_789) -> int:
    fmt = tstamp & lib.BPF_T_FORMAT_MASK
    if fmt == lib.BPF_T_NONE:
        return 0
    if fmt == lib.BPF_T_MICROTIME:
        return SEC * 10**9 + ns // 1000 * 1000
    if fmt == lib.BPF_T_BINTIME:  # bintime2timespec truncates
        return SEC * 10**9 + ((10**9 * (bintime_frac(ns) >> 32)) >> 32)
    return SEC * 10**9 + ns


ALL_TSTAMPS = [fmt | clock for fmt in (0, 1, 2) for clock in (0, 0x100, 0x200, 0x300)] + [3]
PAYLOADS = [bytes(range(60)), b"\xaa" * 1, bytes(range(255)) * 6, b"x" * 61]


@pytest.mark.parametrize("tstamp", ALL_TSTAMPS, ids=hex)
@pytest.mark.parametrize(("linkhdr", "hdrlen"), [(ETHER, 26), (NULL, 28)], ids=["EN10MB", "NULL"])
def test_every_format_parses_by_bh_hdrlen(tstamp: int, linkhdr: int, hdrlen: int) -> None:
    assert lib.bsdbpf_hdrlen(linkhdr, tstamp) == hdrlen  # amd64 values of spec section a
    buf, end = build(PAYLOADS, tstamp, linkhdr=linkhdr)
    batch = parse(buf, tstamp, end=end)
    assert len(batch) == batch.total == len(PAYLOADS)
    with batch:
        pkts = list(batch)
        assert [bytes(p.data) for p in pkts] == PAYLOADS
        assert [p.caplen for p in pkts] == [p.wirelen for p in pkts] == [len(p) for p in PAYLOADS]
        assert {p.timestamp_ns for p in pkts} == {expected_ns(tstamp)}
        assert all(p.tstamp == tstamp for p in pkts)


def test_records_are_word_aligned_and_unpadded_at_the_end() -> None:
    buf, end = build([b"a" * 61, b"b" * 3], lib.BPF_T_MICROTIME)
    with parse(buf, lib.BPF_T_MICROTIME, end=end) as batch:
        first, second = batch.offset.tolist()
    assert first == 26
    assert second == lib.bsdbpf_wordalign(26 + 61) + 26
    assert end == second + 3  # the data ends at the last byte, not aligned


def test_bintime_fraction_converts_like_freebsd() -> None:
    # 2**63 / 2**64 of a second is half a second exactly.
    h = ffi.new("struct bpf_xhdr *")
    h.bh_tstamp.bt_sec, h.bh_tstamp.bt_frac = 5, 1 << 63
    h.bh_caplen = h.bh_datalen = 0
    h.bh_hdrlen = 26
    buf = bytearray(ffi.buffer(h)[:])
    with parse(buf, lib.BPF_T_BINTIME, end=26) as batch:
        assert batch.timestamp_ns.tolist() == [5_500_000_000]


def test_wirelen_is_bh_datalen_not_caplen() -> None:
    buf, end = build([b"q" * 40], lib.BPF_T_NANOTIME, wirelen=1514)
    with parse(buf, 1, end=end) as batch:
        (pkt,) = batch
        assert (pkt.caplen, pkt.wirelen) == (40, 1514)


def test_records_at_an_offset_such_as_the_zero_copy_header() -> None:
    buf, end = build(PAYLOADS, 0, start=32)
    with parse(buf, 0, start=32, end=end) as batch:
        assert batch.offset[0] == 32 + 26
        assert [bytes(p.data) for p in batch] == PAYLOADS


def test_columns_grow_past_their_first_allocation() -> None:
    payloads = [i.to_bytes(4, "big") for i in range(10_000)]
    buf, end = build(payloads, lib.BPF_T_MICROTIME)
    with parse(buf, 0, end=end) as batch:
        assert len(batch) == 10_000
        assert [bytes(p.data) for p in batch] == payloads


def test_empty_data_has_no_records() -> None:
    with parse(bytearray(64), 0, end=0) as batch:
        assert len(batch) == 0
        assert list(batch) == []
        assert batch.caplen.tolist() == []


# -- corrupt buffers --------------------------------------------------------


def corrupt(buf: bytearray, end: int, tstamp: int) -> str:
    with pytest.raises(InternalError) as info:
        parse(bytes(buf[:end]), tstamp)  # exactly `end` bytes exist
    assert info.value.errno == errno.EIO
    return str(info.value)


@pytest.mark.parametrize("tstamp", [lib.BPF_T_MICROTIME, lib.BPF_T_NANOTIME])
def test_caplen_running_past_the_data_names_the_offset(tstamp: int) -> None:
    buf, end = build([b"a" * 10, b"b" * 10, b"c" * 10], tstamp)
    third = lib.bsdbpf_wordalign(lib.bsdbpf_wordalign(26 + 10) + 26 + 10)
    ffi.cast("struct bpf_hdr *", ffi.from_buffer(buf) + third).bh_caplen = 1000
    message = corrupt(buf, end, tstamp)
    assert f"offset {third}" in message
    assert f"data length {end}" in message


def test_truncated_header_is_corrupt() -> None:
    buf, end = build([b"a" * 10], 0)
    # A second record whose header is cut short: 10 bytes where 26 are needed.
    second = lib.bsdbpf_wordalign(end)
    assert f"offset {second}" in corrupt(buf, second + 10, 0)


def test_hdrlen_shorter_than_the_header_is_corrupt() -> None:
    buf, end = build([b"a" * 10], 0)
    ffi.cast("struct bpf_hdr *", ffi.from_buffer(buf)).bh_hdrlen = 4
    assert "offset 0" in corrupt(buf, end, 0)


def test_data_range_outside_the_buffer_is_refused() -> None:
    with pytest.raises(InternalError, match="does not fit"):
        parse(bytearray(100), 0, end=101)
    with pytest.raises(InternalError, match="does not fit"):
        parse(bytearray(100), 0, start=60, end=50)


# -- batches and packets ----------------------------------------------------


def test_packets_are_views_of_the_buffer_not_copies() -> None:
    buf, end = build([b"before"], 0)
    with parse(buf, 0, end=end) as batch:
        (pkt,) = batch
        buf[26:32] = b"AFTER!"
        assert bytes(pkt.data) == b"AFTER!"


def test_release_invalidates_every_view_and_runs_the_callback_once() -> None:
    calls: list[int] = []
    buf, end = build(PAYLOADS, 0)
    batch = parse(buf, 0, end=end, on_release=lambda b: calls.append(b.exports))
    with batch:
        pkts = list(batch)
        datas = [pkt.data for pkt in pkts]
        column = batch.caplen
        whole = batch.buffer
        kept = pkts[0].copy()
    assert batch.released
    assert calls == [0]  # the views made here were released before the callback
    for pkt, data in zip(pkts, datas):
        for use in (lambda p=pkt: p.caplen, lambda p=pkt: p.timestamp_ns, lambda p=pkt: len(p),
                    lambda p=pkt: bytes(p), lambda p=pkt: memoryview(p), lambda p=pkt: p.data,
                    lambda p=pkt: p.copy()):
            with pytest.raises(Released, match="released"):
                use()
        with pytest.raises(ValueError, match="released"):
            bytes(data)
    for view in (column, whole):
        with pytest.raises(ValueError, match="released"):
            view.tolist()
    with pytest.raises(ValueError, match="released"):
        list(batch)
    with pytest.raises(Released):
        _ = batch.caplen
    batch.release()
    assert calls == [0]  # once
    assert bytes(kept.data) == PAYLOADS[0]  # a copy outlives the buffer
    assert bytes(kept) == PAYLOADS[0]


def test_release_happens_when_the_with_block_raises() -> None:
    buf, end = build(PAYLOADS, 0)
    batch = parse(buf, 0, end=end)
    with pytest.raises(KeyError), batch:
        raise KeyError
    assert batch.released
    buf.extend(b"x")  # resizing raises BufferError while any view is alive


def test_datetime_for_wall_clock_timestamps() -> None:
    pkt = Packet(memoryview(b"x"), 1, SEC * 10**9 + 123_456_789, lib.BPF_T_NANOTIME)
    assert pkt.datetime == dt.datetime.fromtimestamp(SEC, dt.timezone.utc).replace(
        microsecond=123_456)
    assert pkt.timestamp == pytest.approx(SEC + 0.123456789)
    assert not pkt.monotonic


@pytest.mark.parametrize("clock", [lib.BPF_T_MONOTONIC, lib.BPF_T_MONOTONIC_FAST])
def test_monotonic_timestamps_say_so(clock: int) -> None:
    pkt = Packet(memoryview(b"x"), 1, 42 * 10**9, lib.BPF_T_MICROTIME | clock)
    assert pkt.monotonic
    assert pkt.timestamp == 42.0
    with pytest.raises(ValueError, match="since boot"):
        _ = pkt.datetime


def test_no_timestamp_has_no_datetime() -> None:
    with pytest.raises(ValueError, match="BPF_T_NONE"):
        _ = Packet(memoryview(b""), 0, 0, lib.BPF_T_NONE).datetime


@pytest.mark.parametrize("value", ALL_TSTAMPS, ids=hex)
def test_timestamp_setting_round_trips(value: int) -> None:
    ts = Timestamp.from_value(value)
    assert ts.value == value
    assert isinstance(ts.format, TimestampFormat)
    assert isinstance(ts.clock, Clock)
    assert Timestamp(ts.format, ts.clock) == ts


# -- columns and the buffer protocol ----------------------------------------


def test_columns_are_fixed_width_read_only_buffers() -> None:
    buf, end = build(PAYLOADS, lib.BPF_T_NANOTIME, wirelen=2000)
    with parse(buf, lib.BPF_T_NANOTIME, end=end) as batch:
        assert (batch.caplen.format, batch.caplen.itemsize) == ("I", 4)
        assert (batch.timestamp_ns.format, batch.timestamp_ns.itemsize) == ("q", 8)
        assert batch.caplen.readonly
        assert batch.buffer.readonly
        assert batch.caplen.tolist() == [len(p) for p in PAYLOADS]
        assert batch.wirelen.tolist() == [2000] * len(PAYLOADS)
        assert batch.timestamp_ns.tolist() == [expected_ns(lib.BPF_T_NANOTIME)] * len(PAYLOADS)
        whole = batch.buffer
        assert [bytes(whole[o:o + n]) for o, n in zip(batch.offset, batch.caplen)] == PAYLOADS


def test_numpy_wraps_the_columns_without_copying() -> None:
    np = pytest.importorskip("numpy")
    buf, end = build(PAYLOADS, 0)
    batch = parse(buf, 0, end=end)
    caplen = np.frombuffer(batch.caplen, dtype=np.uint32)
    assert caplen.tolist() == [len(p) for p in PAYLOADS]
    assert not caplen.flags.writeable
    batch.release()
    # The array cannot be revoked; it keeps its values (the columns are not reused).
    assert caplen.tolist() == [len(p) for p in PAYLOADS]
    assert parse(buf, 0, end=end).caplen.tolist() == caplen.tolist()


def test_packet_buffer_protocol_without_a_view_per_packet() -> None:
    payload = bytes(range(40))
    buf, end = build([payload], 0, wirelen=99)
    with parse(buf, 0, end=end) as batch:
        (pkt,) = batch
        assert len(pkt) == 40
        assert bytes(pkt) == payload
        assert memoryview(pkt).readonly
        assert memoryview(pkt).obj is pkt
        assert struct.unpack_from("!HH", pkt, 2) == (0x0203, 0x0405)
        with pytest.raises(TypeError, match="read-only"):
            memoryview(pkt)[0:1] = b"x"
        assert batch.exports == 0  # every temporary export was given back


def test_a_derived_view_keeps_its_bytes_after_release() -> None:
    buf, end = build([b"abcdef" * 4], 0)
    batch = parse(buf, 0, end=end)
    (pkt,) = batch
    sliced = pkt.data[2:5]
    whole = memoryview(pkt)
    assert batch.exports == 2  # pkt.data (released with the batch) and `whole`
    batch.release()
    with pytest.raises(ValueError, match="released"):
        bytes(pkt.data)
    assert batch.exports == 2  # the slice keeps pkt.data's export alive; `whole` its own
    assert bytes(sliced) == b"cde"
    assert bytes(whole[:3]) == b"abc"
    del sliced
    assert batch.exports == 1
    del whole
    assert batch.exports == 0


def test_take_marks_records_and_iter_does_not() -> None:
    buf, end = build(PAYLOADS, 0)
    with parse(buf, 0, end=end) as batch:
        assert [bytes(p) for p in batch] == PAYLOADS
        assert len(batch) == 4
        assert [bytes(p) for p in batch.take(1)] == PAYLOADS[:1]
        assert (len(batch), batch.taken) == (3, 1)
        copies = list(batch.take(copy=True))
        assert len(batch) == 0
    assert [bytes(p) for p in copies] == PAYLOADS[1:]  # copies outlive the batch
    assert [p.caplen for p in copies] == [len(p) for p in PAYLOADS[1:]]


def test_a_packet_kept_across_iterations_is_not_reused() -> None:
    buf, end = build(PAYLOADS, 0)
    with parse(buf, 0, end=end) as batch:
        kept = []
        for pkt in batch:
            kept.append(pkt)
        assert [bytes(p) for p in kept] == PAYLOADS
        assert len({id(p) for p in kept}) == len(PAYLOADS)


def test_stream_asks_for_a_batch_once_per_buffer() -> None:
    buf, end = build(PAYLOADS, 0)
    batches = [parse(buf, 0, end=end) for _ in range(3)]
    calls = []

    def fetch() -> Batch | None:
        calls.append(1)
        return batches.pop() if batches else None

    assert len(list(Stream(fetch))) == 3 * len(PAYLOADS)
    assert len(calls) == 4
    assert [bytes(p) for p in Stream(lambda: parse(buf, 0, end=end), 6)] == (PAYLOADS * 2)[:6]


def test_a_closed_stream_ends() -> None:
    buf, end = build(PAYLOADS, 0)
    stream = Stream(lambda: parse(buf, 0, end=end))
    assert bytes(next(stream)) == PAYLOADS[0]
    stream.close()
    assert list(stream) == []
