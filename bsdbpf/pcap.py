"""Classic pcap files: :class:`PcapWriter` writes them, :class:`PcapReader` reads them.

The format is the one libpcap, tcpdump and Wireshark read: a 24-byte file
header, then one record per packet.  :class:`PcapWriter` writes nanosecond
timestamps (magic ``0xa1b23c4d``) by default, or microseconds as tcpdump does,
in the host's byte order; :class:`PcapReader` reads both resolutions in
either byte order (not pcapng).

A file written by :class:`PcapWriter` always ends at a whole record: when a
write fails (a full disk) the file is cut back to the last record that was
written completely, and the error says so.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator
from typing import IO, Any, NamedTuple, Union

from bsdbpf._native import lib
from bsdbpf.records import Packet

__all__ = [
    "MAGIC_MICROSECONDS",
    "MAGIC_NANOSECONDS",
    "MAX_SNAPLEN",
    "PcapReader",
    "PcapRecord",
    "PcapWriter",
    "dlt_of_linktype",
    "linktype",
]

MAGIC_NANOSECONDS = 0xA1B23C4D  #: classic pcap, timestamps in nanoseconds
MAGIC_MICROSECONDS = 0xA1B2C3D4  #: classic pcap, timestamps in microseconds (tcpdump's)
VERSION = (2, 4)
MAX_SNAPLEN = 262144  #: libpcap's largest snapshot length, the default here
FILE_HEADER = struct.Struct("=IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
RECORD_HEADER = struct.Struct("=IIII")  # seconds, fraction, caplen, wire length
NS = 1_000_000_000
U32 = 0xFFFFFFFF
FLUSH_AT = 1 << 20  # bytes of records kept in memory before they are written out

# DLT values whose LINKTYPE differs (libpcap's dlt_to_linktype); every other
# DLT FreeBSD uses has the same number in a file.
_LINKTYPE_OF_DLT: dict[int, int] = {
    lib.DLT_RAW: 101,  # LINKTYPE_RAW: DLT_RAW is 12 on FreeBSD, 14 on OpenBSD
    lib.DLT_PFSYNC: 246,  # LINKTYPE_PFSYNC: DLT_PFSYNC 121 collides elsewhere
}
_DLT_OF_LINKTYPE: dict[int, int] = {v: k for k, v in _LINKTYPE_OF_DLT.items()}

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


def linktype(dlt: int) -> int:
    """The LINKTYPE a pcap file header carries for packets of link type ``dlt``.

    Equal to the DLT except where the DLT's number differs between systems
    (``DLT_RAW`` is written as ``LINKTYPE_RAW``, 101).
    """
    return _LINKTYPE_OF_DLT.get(dlt, dlt)


def dlt_of_linktype(value: int) -> int:
    """The FreeBSD ``DLT_*`` value of a file's LINKTYPE (the inverse of :func:`linktype`)."""
    return _DLT_OF_LINKTYPE.get(value, value)


class PcapWriter:
    """A classic pcap file being written.

    ``file`` is a path or a binary file object.  ``dlt`` is the link type of
    the packets (:attr:`bsdbpf.Descriptor.dlt`); ``snaplen`` goes into the
    file header, and packets longer than it are cut to it (their wire length
    is kept).  ``nanoseconds=False`` writes microsecond timestamps, as
    tcpdump does by default.

    A path is opened as ``open(2)`` with ``O_CREAT|O_TRUNC`` would: the named
    file itself is written (mode 0666 less the umask when created; an
    existing file keeps its inode, owner and mode), so other programs can
    read it while it grows.  ``/dev/stdout``, a FIFO or a terminal work too.
    With a file object, records are written to it; it is flushed, not
    closed, by :meth:`close`.

    Records are kept in memory and written out by :meth:`flush` (or when
    1 MiB has gathered); :meth:`close`, and leaving a ``with`` block even
    through an exception, writes every record given so far.  If a write
    fails (``ENOSPC``, ``EFBIG``), the file is cut back to the last whole
    record before the ``OSError`` is raised, so it stays readable;
    :attr:`packets_written` says how many records it keeps.
    """

    def __init__(self, file: PathOrFile, dlt: int, snaplen: int = MAX_SNAPLEN, *,
                 nanoseconds: bool = True) -> None:
        if not 0 < snaplen <= U32:
            raise ValueError(f"snaplen={snaplen}: must be between 1 and {U32}")
        self.snaplen = snaplen
        self.linktype = linktype(dlt)
        self.nanoseconds = nanoseconds
        self.packets = 0  #: records given to :meth:`write` so far
        self.packets_written = 0  #: records that reached the file whole
        self.closed = False
        self._pending = bytearray()
        self._ends: list[int] = []  # where each pending record ends, in _pending
        self._file: IO[bytes] | None = None
        self._fd = -1
        self._path: str | None = None
        self._written = 0  # bytes of whole records (and the header) in the file
        self._regular = False  # a regular file: it can be cut back after a failed write
        if isinstance(file, (str, os.PathLike)):
            self._path = os.fspath(file)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                               0o666)
            self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        else:
            self._file = file
        magic = MAGIC_NANOSECONDS if nanoseconds else MAGIC_MICROSECONDS
        self._pending += FILE_HEADER.pack(magic, *VERSION, 0, 0, snaplen, self.linktype)
        try:
            self.flush()  # the header goes out at once: a reader sees a valid file
        except BaseException:
            self.close()
            raise

    @property
    def name(self) -> str | None:
        """The path being written (None for a file object)."""
        return self._path

    def fileno(self) -> int:
        """The file descriptor written to (for ``fchown``, ``fstat``)."""
        return self._fd if self._file is None else self._file.fileno()

    def _add(self, record: bytes) -> None:
        if self.closed:
            raise ValueError("write to a closed PcapWriter")
        self._pending += record
        self._ends.append(len(self._pending))
        self.packets += 1
        if len(self._pending) >= FLUSH_AT:
            self.flush()

    def write(self, data: Any, timestamp_ns: int, wirelen: int | None = None) -> None:
        """Append one packet: its bytes, capture time in integer nanoseconds, and
        its length on the wire (default: ``len(data)``, before any cut to snaplen)."""
        wirelen = len(data) if wirelen is None else wirelen
        data = bytes(data[: self.snaplen])
        seconds, fraction = divmod(timestamp_ns, NS)
        if not self.nanoseconds:
            fraction //= 1000
        if not 0 <= seconds <= U32:
            raise ValueError(f"timestamp {timestamp_ns} ns does not fit a pcap record "
                             "(unsigned 32-bit seconds)")
        if not len(data) <= wirelen <= U32:
            raise ValueError(f"wire length {wirelen}: at least the {len(data)} bytes captured "
                             "and at most 2**32 - 1")
        self._add(RECORD_HEADER.pack(seconds, fraction, len(data), wirelen) + data)

    def write_packet(self, packet: Packet) -> None:
        """Append a :class:`bsdbpf.Packet` (its data, timestamp and wire length)."""
        self.write(packet.data, packet.timestamp_ns, packet.wirelen)

    def flush(self) -> None:
        """Write the records gathered so far to the file.

        On failure the file is cut back to its last whole record (a regular
        file) and the ``OSError`` re-raised; the records not written are lost.
        """
        if not self._pending:
            return
        pending, ends = self._pending, self._ends
        self._pending, self._ends = bytearray(), []
        done = 0
        try:
            if self._file is not None:
                self._file.write(pending)
                self._file.flush()
                done = len(pending)
            else:
                view = memoryview(pending)
                while done < len(pending):
                    done += os.write(self._fd, view[done:])
        except OSError:
            whole = [end for end in ends if end <= done]
            self.packets_written += len(whole)
            self._written += whole[-1] if whole else 0
            if self._regular:
                os.ftruncate(self._fd, self._written)
            raise
        self.packets_written += len(ends)
        self._written += len(pending)

    def close(self) -> None:
        """Write what is pending and close the file (a file object is only
        flushed).  Idempotent; the file is closed even if the last write fails."""
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True
            if self._file is None:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<bsdbpf.PcapWriter {self._path or '<file>'} {state}, {self.packets} packets>"


class PcapRecord(NamedTuple):
    """One packet read from a pcap file."""

    timestamp_ns: int  #: capture time in nanoseconds since the epoch
    wirelen: int  #: length on the wire
    data: bytes  #: the captured bytes (``len(data)`` is the caplen)


class PcapReader:
    """A classic pcap file being read: iterate over it for :class:`PcapRecord`.

    ``file`` is a path or a binary file object.  Reads tcpdump's microsecond
    files and nanosecond ones, in either byte order.  A file whose last
    record is cut short (a capture still being written, or killed) yields
    the whole records and sets :attr:`truncated`.  Anything that is not a
    classic pcap file (pcapng, say) raises ``ValueError``.
    """

    def __init__(self, file: PathOrFile) -> None:
        self._owned = isinstance(file, (str, os.PathLike))
        self._f: IO[bytes] = open(file, "rb") if isinstance(  # noqa: SIM115
            file, (str, os.PathLike)) else file
        self.truncated = False  #: the file ended inside a record
        try:
            head = self._f.read(FILE_HEADER.size)
            order = self._byte_order(head)
        except BaseException:
            self.close()
            raise
        fields = struct.unpack(order + FILE_HEADER.format[1:], head)
        self.nanoseconds = fields[0] == MAGIC_NANOSECONDS  #: timestamps in nanoseconds
        self.snaplen: int = fields[5]  #: the snapshot length in the header
        self.linktype: int = fields[6] & 0x03FFFFFF  #: LINKTYPE (FCS bits masked off)
        self.dlt = dlt_of_linktype(self.linktype)  #: the matching ``DLT_*`` value
        self._record = struct.Struct(order + RECORD_HEADER.format[1:])

    @staticmethod
    def _byte_order(head: bytes) -> str:
        if len(head) == FILE_HEADER.size:
            for order in "<>":
                magic = struct.unpack_from(order + "I", head)[0]
                if magic in (MAGIC_NANOSECONDS, MAGIC_MICROSECONDS):
                    return order
        raise ValueError(
            f"not a classic pcap file (it starts {head[:4].hex() or 'empty'}); a pcapng file "
            "can be converted with `editcap -F pcap IN OUT` or `tcpdump -r IN -w OUT`")

    def __iter__(self) -> Iterator[PcapRecord]:
        scale = 1 if self.nanoseconds else 1000
        size = self._record.size
        while True:
            head = self._f.read(size)
            if not head:
                return
            if len(head) < size:
                self.truncated = True
                return
            seconds, fraction, caplen, wirelen = self._record.unpack(head)
            data = self._f.read(caplen)
            if len(data) < caplen:
                self.truncated = True
                return
            yield PcapRecord(seconds * NS + fraction * scale, wirelen, data)

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owned:
            self._f.close()

    def __enter__(self) -> PcapReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
