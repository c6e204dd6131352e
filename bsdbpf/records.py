"""Records in a BPF buffer: :class:`Packet`, :class:`Batch`, :func:`parse` and
the timestamp enums.

A buffer filled by the kernel (the one ``read(2)`` returns, or a zero-copy
buffer handed over by the kernel) holds records: a header (``struct bpf_hdr``
or ``struct bpf_xhdr``, chosen by the descriptor's timestamp format), then
``bh_caplen`` bytes of packet at ``bh_hdrlen``, the next record at
``BPF_WORDALIGN(bh_hdrlen + bh_caplen)``.  The C extension
``bsdbpf._capture`` walks a buffer once into columns (:class:`Batch`) and
makes :class:`Packet` objects from them as they are asked for; nothing is
copied.

Lifetime: packets, ``pkt.data`` and the batch's columns are valid until the
batch is released (by :meth:`Batch.release`, its ``with`` block, or the
descriptor fetching the next buffer); then every access raises
:class:`Released`.  A view you derive yourself (``memoryview(pkt)``, a slice
of ``pkt.data``, ``numpy.frombuffer(pkt)``) cannot be revoked: it keeps
showing the bytes it had, never bytes the kernel writes later.  Keep packets
with ``bytes(pkt)``, :meth:`Packet.copy` or ``packets(copy=True)``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import errno
from typing import Any, Callable, NamedTuple

from bsdbpf._capture import Batch, Packet, Released, Stream
from bsdbpf._native import lib
from bsdbpf.errors import InternalError, from_errno

__all__ = [
    "Batch",
    "Clock",
    "Packet",
    "Released",
    "Stream",
    "Timestamp",
    "TimestampFormat",
    "parse",
]

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


def parse(
    buffer: Any,
    tstamp: int | Timestamp = 0,
    *,
    start: int = 0,
    end: int | None = None,
    on_release: Callable[[Batch], object] | None = None,
) -> Batch:
    """A :class:`Batch` over the records in ``buffer[start:end]``.

    ``buffer`` is any object with the buffer protocol: a ``read(2)`` result,
    a saved buffer, a zero-copy buffer (records from offset 32).  ``tstamp``
    is the descriptor's timestamp setting (BIOCGTSTAMP), as a
    :class:`Timestamp` or a ``BPF_T_*`` word: it says which header the
    records carry.  ``on_release(batch)`` runs when the batch is released.
    A record that would run past ``end`` raises :class:`bsdbpf.InternalError`
    naming its offset; nothing past ``end`` is read.
    """
    word = tstamp.value if isinstance(tstamp, Timestamp) else int(tstamp)
    try:
        return Batch(buffer, tstamp=word, start=start, end=-1 if end is None else end,
                     on_release=on_release)
    except ValueError as err:
        raise from_errno(errno.EIO, "parse records", cls=InternalError,
                         hint=str(err)) from None


def _datetime(timestamp_ns: int, tstamp: int) -> _dt.datetime:
    """``Packet.datetime``: the capture time as an aware UTC datetime."""
    if tstamp & lib.BPF_T_FORMAT_MASK == lib.BPF_T_NONE:
        raise ValueError("the record has no timestamp (BPF_T_NONE)")
    if tstamp & lib.BPF_T_MONOTONIC:
        raise ValueError("the timestamp is time since boot (a monotonic clock), not a "
                         "date; use timestamp_ns")
    return _EPOCH + _dt.timedelta(microseconds=timestamp_ns // 1000)
