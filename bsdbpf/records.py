"""Records in a BPF buffer: :class:`Packet`, :class:`Batch` and the timestamp enums.

A buffer filled by the kernel (the one ``read(2)`` returns, or a zero-copy
buffer handed over by the kernel) holds records: a header (``struct bpf_hdr``
or ``struct bpf_xhdr``, chosen by the descriptor's timestamp format), then
``bh_caplen`` bytes of packet at ``bh_hdrlen``, the next record at
``BPF_WORDALIGN(bh_hdrlen + bh_caplen)``.  The walk is done in C by
``bsdbpf_parse_records`` (``bh_hdrlen`` is used, never ``sizeof``); this
module turns its output into memoryviews of the buffer, without copying.
"""

from __future__ import annotations

import datetime as _dt
import enum
import errno
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple

from bsdbpf._native import ffi, lib
from bsdbpf.errors import InternalError, from_errno

__all__ = ["Batch", "Clock", "Packet", "Timestamp", "TimestampFormat", "parse_records"]

_FIELDS: int = lib.BSDBPF_REC_FIELDS
_DATA: int = lib.BSDBPF_REC_DATA
_CAPLEN: int = lib.BSDBPF_REC_CAPLEN
_DATALEN: int = lib.BSDBPF_REC_DATALEN
_TS: int = lib.BSDBPF_REC_TS_NS
_CHUNK = 4096  # records parsed per C call; one output array serves every chunk of a buffer
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class TimestampFormat(enum.IntEnum):
    """How a record's timestamp is stored (``BPF_T_FORMAT``)."""

    MICROTIME = lib.BPF_T_MICROTIME  #: struct timeval in a bpf_hdr
    NANOTIME = lib.BPF_T_NANOTIME  #: seconds + nanoseconds in a bpf_xhdr
    BINTIME = lib.BPF_T_BINTIME  #: seconds + 2**-64 fractions in a bpf_xhdr
    NONE = lib.BPF_T_NONE  #: no timestamp (zero), bpf_hdr


class Clock(enum.IntEnum):
    """Which clock stamps records (``BPF_T_FLAG``)."""

    NORMAL = lib.BPF_T_NORMAL  #: wall clock, full precision
    FAST = lib.BPF_T_FAST  #: wall clock, tick precision
    MONOTONIC = lib.BPF_T_MONOTONIC  #: time since boot, full precision
    MONOTONIC_FAST = lib.BPF_T_MONOTONIC_FAST  #: time since boot, tick precision


class Timestamp(NamedTuple):
    """A descriptor's timestamp setting (BIOCGTSTAMP/BIOCSTSTAMP)."""

    format: TimestampFormat
    clock: Clock = Clock.NORMAL

    @property
    def value(self) -> int:
        """The ``BPF_T_*`` word the kernel takes."""
        return int(self.format) | int(self.clock)

    @classmethod
    def from_value(cls, value: int) -> Timestamp:
        """Split a ``BPF_T_*`` word into format and clock."""
        return cls(TimestampFormat(value & lib.BPF_T_FORMAT_MASK),
                   Clock(value & lib.BPF_T_FLAG_MASK))


def parse_records(buffer: Any, start: int, end: int, tstamp: int) -> list[int]:
    """Walk the records in ``buffer[start:end]``; ``tstamp`` is BIOCGTSTAMP's value.

    Returns the flat list ``[data_offset, caplen, datalen, timestamp_ns, ...]``
    (``BSDBPF_REC_FIELDS`` ints per record; offsets are into ``buffer``).
    A record that would run past ``end`` raises :class:`InternalError`
    naming its offset; nothing past ``end`` is read.
    """
    ptr = buffer if isinstance(buffer, ffi.CData) else ffi.from_buffer(buffer)
    if not 0 <= start <= end <= len(ptr):
        raise from_errno(errno.EIO, "parse records", cls=InternalError, hint=(
            f"the data [{start}, {end}) does not fit the {len(ptr)}-byte buffer"))
    out = ffi.new("int64_t[]", _FIELDS * _CHUNK)
    nxt = ffi.new("uint32_t *")
    fields: list[int] = []
    off = start
    while off < end:
        n = lib.bsdbpf_parse_records(ptr, off, end, tstamp, out, _CHUNK, nxt)
        fields += ffi.unpack(out, _FIELDS * n)
        if n < _CHUNK and nxt[0] < end:
            raise from_errno(errno.EIO, "parse records", cls=InternalError, hint=(
                f"corrupt buffer: the record at offset {nxt[0]} runs past the data "
                f"length {end} (BPF timestamp format {tstamp:#x})"))
        off = nxt[0]
    return fields


class Packet:
    """One captured packet.

    ``data`` is a memoryview of the kernel's buffer, not a copy: it is valid
    until the iterator that produced the packet advances (or the
    :class:`Batch` it belongs to is released); using it afterwards raises
    :class:`ValueError`.  ``bytes(pkt.data)`` or :meth:`copy` keeps the bytes.
    """

    __slots__ = ("caplen", "data", "timestamp_ns", "tstamp", "wirelen")

    def __init__(
        self, data: memoryview, wirelen: int, timestamp_ns: int, tstamp: int = 0
    ) -> None:
        self.data = data
        self.caplen = len(data)  #: bytes captured (bh_caplen)
        self.wirelen = wirelen  #: length on the wire (bh_datalen)
        self.timestamp_ns = timestamp_ns  #: integer nanoseconds (since boot if monotonic)
        self.tstamp = tstamp  #: the BPF_T_* word the record was stamped with

    @property
    def monotonic(self) -> bool:
        """True if the timestamp is time since boot (BPF_T_MONOTONIC*), not wall clock."""
        return bool(self.tstamp & lib.BPF_T_MONOTONIC)

    @property
    def timestamp(self) -> float:
        """Seconds as a float: since the epoch, or since boot if :attr:`monotonic`."""
        return self.timestamp_ns / 1e9

    @property
    def datetime(self) -> _dt.datetime:
        """The capture time as an aware UTC datetime (microsecond precision).

        Raises :class:`ValueError` for monotonic clocks (time since boot is not
        a date) and for ``TimestampFormat.NONE`` (records carry no time).
        """
        if self.tstamp & lib.BPF_T_FORMAT_MASK == lib.BPF_T_NONE:
            raise ValueError("the record has no timestamp (BPF_T_NONE)")
        if self.monotonic:
            raise ValueError("the timestamp is time since boot (a monotonic clock), not a "
                             "date; use timestamp_ns")
        return _EPOCH + _dt.timedelta(microseconds=self.timestamp_ns // 1000)

    def copy(self) -> Packet:
        """A packet that owns a copy of the data, valid for as long as you keep it."""
        return Packet(memoryview(bytes(self.data)), self.wirelen, self.timestamp_ns, self.tstamp)

    def __bytes__(self) -> bytes:
        return bytes(self.data)

    def __repr__(self) -> str:
        return (f"<Packet caplen={self.caplen} wirelen={self.wirelen} "
                f"timestamp_ns={self.timestamp_ns}>")


class Batch:
    """The records of one buffer, as handed over by the kernel.

    Use it as a context manager: on exit (or :meth:`release`) every view
    handed out is released and the buffer goes back to the kernel (in
    zero-copy mode the buffer is acknowledged).  Records are memoryviews into
    the kernel's buffer; no data is copied.
    """

    def __init__(
        self,
        view: memoryview,
        fields: list[int],
        tstamp: int,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._view = view  # the whole buffer; released with the batch
        self._fields = fields
        self._count = len(fields) // _FIELDS
        self._cursor = 0  # records already taken by Descriptor.packets()
        self._resumable = True  # packets() may go on with it; not once handed out whole
        self._tstamp = tstamp
        self._views: list[memoryview] = []
        self._on_release = on_release
        self.released = False  #: True once the buffer went back to the kernel

    def _packet(self, i: int) -> Packet:
        if self.released:
            raise ValueError("the batch was released: its buffer belongs to the kernel again")
        f, base = self._fields, _FIELDS * i
        start = f[base + _DATA]
        data = self._view[start: start + f[base + _CAPLEN]]
        self._views.append(data)
        return Packet(data, f[base + _DATALEN], f[base + _TS], self._tstamp)

    def __len__(self) -> int:
        """Records not yet taken (by :meth:`bsdbpf.Descriptor.packets`)."""
        return self._count - self._cursor

    def __iter__(self) -> Iterator[Packet]:
        for i in range(self._cursor, self._count):
            yield self._packet(i)

    def _take(self) -> Iterator[Packet]:
        """Yield the remaining records, marking each as taken."""
        while self._cursor < self._count:
            pkt = self._packet(self._cursor)
            self._cursor += 1
            yield pkt

    @property
    def _partial(self) -> bool:
        return self._resumable and 0 < self._cursor < self._count

    def release(self) -> None:
        """Release every view and give the buffer back to the kernel (idempotent)."""
        if self.released:
            return
        self.released = True
        for view in self._views:
            view.release()
        self._views.clear()
        self._view.release()
        if self._on_release is not None:
            self._on_release()

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else f"{len(self)} records"
        return f"<Batch {state}>"
