"""Writing captured packets to a classic pcap file, with nanosecond timestamps.

:class:`PcapWriter` writes the format libpcap, tcpdump and Wireshark read:
a 24-byte file header with the magic ``0xa1b23c4d`` (timestamps in
nanoseconds), then one record per packet, all in the host's byte order.
Given a path, it writes to a temporary file beside it and renames that into
place when closed, so the file appears whole or not at all.
"""

from __future__ import annotations

import os
import stat
import struct
import tempfile
from typing import IO, Any, Union

from bsdbpf._native import lib
from bsdbpf.records import Packet

__all__ = ["MAGIC_NANOSECONDS", "MAX_SNAPLEN", "PcapWriter", "linktype"]

MAGIC_NANOSECONDS = 0xA1B23C4D  #: classic pcap, timestamps in nanoseconds
VERSION = (2, 4)
MAX_SNAPLEN = 262144  #: libpcap's largest snapshot length, the default here
FILE_HEADER = struct.Struct("=IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
RECORD_HEADER = struct.Struct("=IIII")  # seconds, nanoseconds, caplen, wire length
NS = 1_000_000_000
U32 = 0xFFFFFFFF

# DLT values whose LINKTYPE differs (libpcap's dlt_to_linktype); every other
# DLT FreeBSD uses has the same number in a file.
_LINKTYPE_OF_DLT = {
    lib.DLT_RAW: 101,  # LINKTYPE_RAW: DLT_RAW is 12 on FreeBSD, 14 on OpenBSD
    lib.DLT_PFSYNC: 246,  # LINKTYPE_PFSYNC: DLT_PFSYNC 121 collides elsewhere
}

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


def linktype(dlt: int) -> int:
    """The LINKTYPE a pcap file header carries for packets of link type ``dlt``.

    Equal to the DLT except where the DLT's number differs between systems
    (``DLT_RAW`` is written as ``LINKTYPE_RAW``, 101).
    """
    return _LINKTYPE_OF_DLT.get(dlt, dlt)


class PcapWriter:
    """A classic pcap file (nanosecond timestamps) being written.

    ``file`` is a path or a binary file object.  ``dlt`` is the link type of
    the packets (:attr:`bsdbpf.Descriptor.dlt`); ``snaplen`` goes into the
    file header, and packets longer than it are cut to it (their wire length
    is kept).

    With a path, packets go to a hidden temporary file in the same directory
    (``.NAME.XXXXXXXX.part``, mode 0600: captures can hold secrets) and
    :meth:`close` renames it to ``file``: readers never see a half-written
    file, and an existing file is replaced only then.  A path that is not a
    regular file (``/dev/stdout``, a FIFO) is written directly.  With a file
    object, records are written to it as they come; it is flushed, not
    closed, by :meth:`close`.

    :meth:`close`, and leaving a ``with`` block even through an exception or
    Ctrl-C, keeps every packet written so far; a record cut short by an
    interruption is dropped whole.  :meth:`discard` throws the file away.
    """

    def __init__(self, file: PathOrFile, dlt: int, snaplen: int = MAX_SNAPLEN) -> None:
        if not 0 < snaplen <= U32:
            raise ValueError(f"snaplen={snaplen}: must be between 1 and {U32}")
        self.snaplen = snaplen
        self.linktype = linktype(dlt)
        self.packets = 0  #: records written so far
        self.closed = False
        self._path: str | None = None  # the final name, when renaming into place
        self._tmp: str | None = None
        self._size = 0  # bytes of complete records (and the header) written
        self._regular = True  # an owned file that can be truncated and fsynced
        self._owned = isinstance(file, (str, os.PathLike))
        self._f: IO[bytes] = self._open(os.fspath(file)) if isinstance(
            file, (str, os.PathLike)) else file
        try:
            self._put(FILE_HEADER.pack(MAGIC_NANOSECONDS, *VERSION, 0, 0, snaplen,
                                       self.linktype))
        except BaseException:
            self.discard()
            raise

    def _open(self, path: str) -> IO[bytes]:
        target = os.path.realpath(path)  # keep a symlink; write the file it names
        try:
            regular = stat.S_ISREG(os.stat(target).st_mode)
        except FileNotFoundError:
            regular = True
        if not regular:
            self._regular = False
            return open(target, "wb")  # closed by close()
        folder, name = os.path.split(target)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        self._path = target
        return os.fdopen(fd, "wb")

    @property
    def name(self) -> str | None:
        """The path the file will have once closed (None for a file object)."""
        if not self._owned:
            return None
        return self._path or str(getattr(self._f, "name", ""))

    @property
    def temporary(self) -> str | None:
        """The temporary file being written, until :meth:`close` renames it.

        If finishing fails (a full disk), it stays, with what reached the disk.
        """
        return self._tmp

    def _put(self, data: bytes) -> None:
        if self.closed:
            raise ValueError("write to a closed PcapWriter")
        self._f.write(data)
        self._size += len(data)  # only once the whole record went in

    def write(self, data: Any, timestamp_ns: int, wirelen: int | None = None) -> None:
        """Append one packet: its bytes, capture time in integer nanoseconds, and
        its length on the wire (default: ``len(data)``, before any cut to snaplen)."""
        wirelen = len(data) if wirelen is None else wirelen
        data = bytes(data[: self.snaplen])
        seconds, nanoseconds = divmod(timestamp_ns, NS)
        if not 0 <= seconds <= U32:
            raise ValueError(f"timestamp {timestamp_ns} ns does not fit a pcap record "
                             "(unsigned 32-bit seconds)")
        if not len(data) <= wirelen <= U32:
            raise ValueError(f"wire length {wirelen}: at least the {len(data)} bytes captured "
                             "and at most 2**32 - 1")
        self._put(RECORD_HEADER.pack(seconds, nanoseconds, len(data), wirelen) + data)
        self.packets += 1

    def write_packet(self, packet: Packet) -> None:
        """Append a :class:`bsdbpf.Packet` (its data, timestamp and wire length)."""
        self.write(packet.data, packet.timestamp_ns, packet.wirelen)

    def flush(self) -> None:
        """Push buffered records to the operating system."""
        self._f.flush()

    def close(self) -> None:
        """Finish the file: flush it, drop a partly written record, and (for a
        path) rename it into place.  Idempotent."""
        if self.closed:
            return
        self.closed = True
        if not self._owned:
            self._f.flush()
            return
        try:
            self._f.flush()
            if self._regular:
                self._f.truncate(self._size)
                os.fsync(self._f.fileno())
        finally:
            self._f.close()  # on failure (disk full) the temporary file stays
        if self._tmp is not None and self._path is not None:
            os.replace(self._tmp, self._path)
            self._tmp = None

    def discard(self) -> None:
        """Stop without keeping the file: a temporary file is removed (a file
        object, or a path written directly, is left as it is)."""
        self.closed = True
        if self._owned:
            self._f.close()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            os.unlink(tmp)

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<bsdbpf.PcapWriter {self.name or '<file>'} {state}, {self.packets} packets>"
