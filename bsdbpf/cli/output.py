"""How ``capture`` prints a packet: tcpdump's timestamp styles, the decoded line,
the hex dump."""

from __future__ import annotations

import time

from bsdbpf._native import lib
from bsdbpf.cli.decode import describe, hex_dump, link_header_length

__all__ = ["PacketPrinter"]

NS = 1_000_000_000


class PacketPrinter:
    """Turns packets into the lines tcpdump would print.

    ``stamp`` is the number of ``-t`` given: 0 local time of day, 1 none,
    2 seconds since the epoch, 3 delta since the previous packet, 4 date and
    local time, 5 delta since the first packet.  ``nano``: nine digits of
    fraction instead of six.  ``hex_level``/``ascii_level``: the number of
    ``-x``/``-X`` (1: from the network header, 2: with the link header).
    """

    def __init__(self, dlt: int, *, stamp: int = 0, nano: bool = False, verbose: int = 0,
                 hex_level: int = 0, ascii_level: int = 0) -> None:
        self.dlt = dlt
        self.stamp = stamp
        self.nano = nano
        self.verbose = verbose
        self.dump_level = max(hex_level, ascii_level)
        self.ascii = ascii_level > 0
        self._first: int | None = None
        self._previous: int | None = None

    def _fraction(self, ns: int) -> str:
        return f"{ns:09d}" if self.nano else f"{ns // 1000:06d}"

    def _delta(self, ns: int) -> str:
        seconds, frac = divmod(max(ns, 0), NS)
        hours, rest = divmod(seconds, 3600)
        return f"{hours:2d}:{rest // 60:02d}:{rest % 60:02d}.{self._fraction(frac)}"

    def timestamp(self, ns: int, tstamp: int) -> str:
        """The timestamp column for a record stamped ``ns`` (BPF_T_* word ``tstamp``)."""
        first = self._first = ns if self._first is None else self._first
        previous, self._previous = self._previous if self._previous is not None else ns, ns
        seconds, frac = divmod(ns, NS)
        if self.stamp == 1:
            return ""
        if self.stamp == 3:
            return self._delta(ns - previous)
        if self.stamp == 5:
            return self._delta(ns - first)
        no_date = tstamp & lib.BPF_T_MONOTONIC or (
            tstamp & lib.BPF_T_FORMAT_MASK == lib.BPF_T_NONE)
        if self.stamp == 2 or no_date:  # a monotonic clock counts from boot: not a date
            return f"{seconds}.{self._fraction(frac)}"
        layout = "%Y-%m-%d %H:%M:%S" if self.stamp == 4 else "%H:%M:%S"
        return f"{time.strftime(layout, time.localtime(seconds))}.{self._fraction(frac)}"

    def lines(self, data: bytes, wirelen: int, ns: int, tstamp: int) -> list[str]:
        """The line for one packet, then its hex dump if asked for."""
        stamp = self.timestamp(ns, tstamp)
        text = describe(data, self.dlt, wirelen, self.verbose)
        out = [f"{stamp} {text}" if stamp else text]
        if self.dump_level:
            skip = 0 if self.dump_level > 1 else link_header_length(data, self.dlt)
            out += hex_dump(data[skip:], self.ascii)
        return out
