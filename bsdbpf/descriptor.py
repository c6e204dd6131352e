"""The high-level capture API: :class:`Descriptor`, one open ``/dev/bpf``.

Every knob is a property or method named after what it does, and its
docstring names the ioctl behind it.  Reading has one API for both buffer
modes: :meth:`Descriptor.packets`, :meth:`Descriptor.batches` and their
``async`` forms.  Errors are :class:`bsdbpf.BPFError` subclasses with the
kernel's errno; see :mod:`bsdbpf.errors`.

A Descriptor is not safe to share between threads without a lock of your
own.  After ``fork()`` the child inherits the fd and, in zero-copy mode, the
shared buffers: use the Descriptor in one process only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import warnings
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Callable, TypeVar, Union

from bsdbpf import raw
from bsdbpf._native import lib
from bsdbpf.backend import default_system
from bsdbpf.capture import CLOSED, BufferedSource, Capture, ZeroCopySource
from bsdbpf.errors import (
    ZEROCOPY_ENABLE_HINT,
    BPFError,
    DescriptorLocked,
    FilterError,
    InvalidArgument,
    InvalidFilter,
    InvalidStateError,
    ZeroCopyDisabled,
    from_errno,
)
from bsdbpf.filter import (
    DEFAULT_SNAPLEN,
    Program,
    as_program,
    explain_rejection,
    is_program_text,
)
from bsdbpf.records import Batch, Packet, Timestamp, TimestampFormat
from bsdbpf.system import System
from bsdbpf.types import BpfStat, BpfVersion, BufferMode, Direction, Insn
from bsdbpf.zbuf import ZeroCopyBuffers, buffer_length

__all__ = [
    "BpfStat",
    "BpfVersion",
    "BufferMode",
    "Descriptor",
    "Direction",
    "snaplen_program",
]

# open()'s defaults, libpcap's: 512 KiB buffers (in both modes; the kernel caps
# them at net.bpf.maxbufsize) and a 1 s read timeout, so that a quiet link
# still delivers and a busy one does not overflow 4 KiB (net.bpf.bufsize).
DEFAULT_BUFFER_SIZE = 512 * 1024
DEFAULT_READ_TIMEOUT = 1.0
ZBUF_DEFAULT_SIZE = DEFAULT_BUFFER_SIZE

# Zero-copy buffers whose fd could not be closed: never unmapped, since the
# kernel may still write into them.
_ORPHANS: list[ZeroCopyBuffers] = []

_T = TypeVar("_T")
# A Program, (code, jt, jf, k) tuples (or objects with those attributes),
# tcpdump -d/-dd/-ddd text, or a tcpdump expression.
FilterSpec = Union[Program, Iterable[Any], str]
TimestampSpec = Union[Timestamp, TimestampFormat, tuple[int, int], int]


def snaplen_program(snaplen: int) -> tuple[Insn, ...]:
    """The one-instruction filter ``RET #snaplen``: accept every packet, keep
    at most ``snaplen`` bytes of it."""
    return ((lib.BPF_RET | lib.BPF_K, 0, 0, snaplen),)


class Descriptor:
    """One open ``/dev/bpf`` descriptor: configuration, capture and injection.

    ``Descriptor()`` opens ``/dev/bpf`` read-write on ``system`` (default:
    :func:`bsdbpf.backend.default_system`); :meth:`open` also configures and
    attaches it.  Close it with :meth:`close` or a ``with`` block; using it
    afterwards raises ``ValueError("I/O operation on closed Descriptor")``.
    """

    def __init__(self, system: System | None = None) -> None:
        # Everything __del__ and close() look at exists before the first call
        # that can fail.
        self._closed = True
        self._fd = -1
        self._lock = threading.RLock()  # state transitions vs touching shared memory
        self._zbuf: ZeroCopyBuffers | None = None
        self._retired: list[ZeroCopyBuffers] = []  # registration failed; free after close
        self._engine: Capture | None = None  # created by the first read
        self._bufmode = BufferMode.BUFFER
        self._tstamp: int | None = None
        self._locked = False
        self._immediate = False
        self._timed = False  # a read timeout is set (BIOCSRTIMEOUT)
        self._feedback = False
        self._nonblocking = False
        self._attached = False
        self._ifname: str | None = None
        self._filter: Program | None = None
        self._write_filter: Program | None = None
        self._snaplen = DEFAULT_SNAPLEN  # for expressions given to set_filter
        #: Why ``open(zerocopy="auto")`` fell back to buffered mode, else None.
        self.zerocopy_fallback_reason: str | None = None
        self._system: System = default_system() if system is None else system
        # Not inherited by programs this process runs, as Python's own files (PEP 446).
        self._fd = self._system.open("/dev/bpf", os.O_RDWR | os.O_CLOEXEC)
        self._closed = False

    # -- lifetime -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        ifname: str,
        *,
        zerocopy: bool | str = "auto",
        buffer_size: int | None = None,
        immediate: bool = False,
        filter: FilterSpec | None = None,
        snaplen: int | None = None,
        direction: Direction | None = None,
        timestamp: TimestampSpec | None = None,
        promiscuous: bool = False,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        nonblocking: bool = False,
        header_complete: bool = True,
        system: System | None = None,
    ) -> Descriptor:
        """Open ``/dev/bpf``, configure it and attach it to ``ifname``.

        The steps follow the order the kernel requires: BIOCSETBUFMODE, then
        the buffers (zero-copy: BIOCGETZMAX, two mmaps, BIOCSETZBUF; buffered:
        BIOCSBLEN), the filter (BIOCSETF), the options, BIOCSETIF, and
        BIOCPROMISC.  On any failure everything is released (fd first, then
        the buffers) and the error re-raised.

        ``zerocopy``: ``"auto"`` uses zero-copy buffers when the kernel allows
        them (``net.bpf.zerocopy_enable=1``) and otherwise falls back to
        buffered mode, saying why in :attr:`zerocopy_fallback_reason`;
        ``True`` raises :class:`bsdbpf.ZeroCopyDisabled` instead; ``False``
        never tries.

        The defaults are libpcap's, chosen to work both on a quiet link and
        under load:

        * ``buffer_size``: bytes per buffer, 512 KiB in both modes.  The
          kernel caps a buffered-mode size at ``net.bpf.maxbufsize``; a
          zero-copy size is rounded up to whole pages and capped at
          BIOCGETZMAX, so a script asking for more still runs once an
          administrator enables zero-copy.  :attr:`buffer_size` shows what
          was granted.  (The kernel's own default, ``net.bpf.bufsize``, is
          4 KiB: a few packets, dropped under load.)
        * ``read_timeout``: 1 second (BIOCSRTIMEOUT), so packets waiting in a
          partly filled buffer are delivered within a second instead of when
          the buffer fills; None waits for a full buffer.
        * ``header_complete=True`` (BIOCSHDRCMPLT): frames given to
          :meth:`write` leave byte for byte, source address included, as
          libpcap's ``pcap_inject`` sends them; False lets the kernel fill in
          the interface's own address.

        ``filter`` is what :meth:`set_filter` takes: a
        :class:`bsdbpf.filter.Program`, ``(code, jt, jf, k)`` instructions,
        ``tcpdump -d``/``-dd``/``-ddd`` text, or a tcpdump expression such as
        ``"udp and dst port 53"``, which is compiled for the interface's link
        type and ``snaplen`` (default 262144) and installed right after
        BIOCSETIF (BIOCSETF discards what arrived in between).  ``snaplen``
        alone installs ``RET #snaplen``.
        """
        if zerocopy not in ("auto", True, False):
            raise ValueError(f"zerocopy={zerocopy!r}: expected 'auto', True or False")
        expression = isinstance(filter, str) and not is_program_text(filter)
        if filter is not None and not expression and snaplen is not None:
            raise ValueError("give a program or a snaplen, not both: the program's RET "
                             "instructions set the snapshot length")
        d = cls(system)
        try:
            d._setup_buffers(zerocopy, buffer_size)
            if snaplen is not None:
                d._snaplen = snaplen
            if filter is not None and not expression:
                d.set_filter(filter)
            elif snaplen is not None:
                d.set_filter(snaplen_program(snaplen))
            if immediate:
                d.immediate = True
            if direction is not None:
                d.direction = direction
            if timestamp is not None:
                d.timestamp = timestamp
            if read_timeout is not None:
                d.read_timeout = read_timeout
            if nonblocking:
                d.nonblocking = True
            if header_complete:
                d.header_complete = True
            d.attach(ifname)
            if expression:
                d.set_filter(filter)
            if promiscuous:
                d.promiscuous()
        except BaseException:
            d.close()
            raise
        return d

    def _setup_buffers(self, zerocopy: bool | str, buffer_size: int | None) -> None:
        size = DEFAULT_BUFFER_SIZE if buffer_size is None else buffer_size
        if zerocopy is not False:
            try:
                self.buffer_mode = BufferMode.ZBUF
            except ZeroCopyDisabled as err:
                if zerocopy is True:
                    raise
                self.zerocopy_fallback_reason = err.hint
            else:
                # "auto" clamps to BIOCGETZMAX, as BIOCSBLEN clamps in buffered
                # mode: a script runs the same whichever mode the host allows.
                self._register_zbuf(size, clamp=zerocopy == "auto" or buffer_size is None)
                return
        self.buffer_size = size

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def fileno(self) -> int:
        """The file descriptor, for select/poll/kqueue/selectors/asyncio."""
        return self._check()

    def close(self) -> None:
        """Close the fd, then free the zero-copy buffers.  Idempotent.

        The order is fixed: the kernel unwires the shared pages when the fd
        closes, so they are unmapped only after that.
        """
        with self._lock:
            if self._closed:
                return
            fd, zbufs = self._fd, [*self._retired, *([self._zbuf] if self._zbuf else [])]
            try:
                if self._engine is not None:
                    self._engine.close()  # release every view handed out, wake readers
            finally:
                self._closed = True
                self._fd = -1
                self._zbuf = None
                self._retired = []
                try:
                    self._system.close(fd)
                except BaseException:
                    _ORPHANS.extend(zbufs)  # the kernel may still own the pages
                    raise
                for zbuf in zbufs:
                    zbuf.close()

    def __enter__(self) -> Descriptor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return  # closed, or __init__ never got an fd
        try:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
        finally:
            with contextlib.suppress(Exception):  # interpreter shutdown, broken system
                self.close()

    def __repr__(self) -> str:
        if getattr(self, "_closed", True):
            return "<bsdbpf.Descriptor closed>"
        mode = "zerocopy" if getattr(self, "_zbuf", None) else "buffered"
        where = f" {self._ifname}" if getattr(self, "_ifname", None) else ""
        return f"<bsdbpf.Descriptor fd={self._fd}{where} {mode}>"

    # -- plumbing -----------------------------------------------------------

    def _check(self) -> int:
        if self._closed:
            raise ValueError(CLOSED)
        return self._fd

    def _raw(self, call: Callable[..., _T], *args: Any) -> _T:
        """``call(system, fd, *args)``, a function of :mod:`bsdbpf.raw`; EPERM
        on a locked descriptor is :class:`bsdbpf.DescriptorLocked`."""
        fd = self._check()
        try:
            return call(self._system, fd, *args)
        except BPFError as err:
            if err.errno == errno.EPERM and self._locked and not isinstance(err, DescriptorLocked):
                raise from_errno(err.errno, err.op, ifname=err.ifname,
                                 cls=DescriptorLocked) from err
            raise

    # -- buffers ------------------------------------------------------------

    @property
    def buffer_mode(self) -> BufferMode:
        """The buffer mode (BIOCGETBUFMODE/BIOCSETBUFMODE).

        Set it first, right after opening: the kernel freezes it once buffers
        exist or an interface is attached (EBUSY, :class:`bsdbpf.InvalidStateError`).
        ``BufferMode.ZBUF`` while ``net.bpf.zerocopy_enable`` is 0 raises
        :class:`bsdbpf.ZeroCopyDisabled`.
        """
        return BufferMode(self._raw(raw.get_bufmode))

    @buffer_mode.setter
    def buffer_mode(self, mode: BufferMode) -> None:
        try:
            self._raw(raw.set_bufmode, mode)
        except BPFError as err:
            if err.errno == errno.EINVAL and int(mode) == BufferMode.ZBUF and (
                    self._zerocopy_disabled()):
                raise from_errno(err.errno, err.op, cls=ZeroCopyDisabled, hint=(
                    "zero-copy is disabled (net.bpf.zerocopy_enable=0): "
                    + ZEROCOPY_ENABLE_HINT)) from err
            raise
        self._bufmode = BufferMode(int(mode))

    def _zerocopy_disabled(self) -> bool:
        return raw.sysctl_int(self._system, "net.bpf.zerocopy_enable") == 0

    @property
    def zerocopy(self) -> bool:
        """True if packets arrive in zero-copy buffers shared with the kernel."""
        return self._zbuf is not None

    @property
    def zerocopy_buffers(self) -> ZeroCopyBuffers | None:
        """The shared buffers (zero-copy mode), owned by this Descriptor."""
        return self._zbuf

    def register_zerocopy_buffers(self, size: int | None = None) -> None:
        """Map two zero-copy buffers and register them (BIOCGETZMAX, BIOCSETZBUF).

        Needs ``buffer_mode = BufferMode.ZBUF`` first, and happens once,
        before :meth:`attach`.  ``size`` is each buffer's length, rounded up
        to whole pages; more than BIOCGETZMAX raises
        :class:`bsdbpf.InvalidArgument`.  Default: 512 KiB (or BIOCGBLEN if
        larger), at most BIOCGETZMAX.
        """
        self._register_zbuf(size, clamp=False)

    def _register_zbuf(self, size: int | None, clamp: bool) -> None:
        if self._zbuf is not None or self._attached:
            self._check()
            raise from_errno(errno.EINVAL, "BIOCSETZBUF", cls=InvalidStateError, hint=(
                "zero-copy buffers are registered once, before attaching (BIOCSETIF)"))
        zmax = self._raw(raw.get_zmax)
        if size is None:
            size = min(max(self.buffer_size, ZBUF_DEFAULT_SIZE), zmax)
        elif clamp:
            size = min(size, zmax)
        zbuf = ZeroCopyBuffers(buffer_length(size, zmax))
        try:
            self._raw(raw.set_zbuf, *zbuf.maps, zbuf.length)
        except BaseException:
            self._retired.append(zbuf)  # unmapped after close(), like registered ones
            raise
        self._zbuf = zbuf
        if self._engine is not None:
            # Made by a read before attaching, over read(2): it has nothing to
            # keep, and the next read makes one over the zero-copy buffers.
            self._engine.close()
            self._engine = None

    @property
    def buffer_size(self) -> int:
        """Bytes per buffer (BIOCGBLEN/BIOCSBLEN): what the kernel granted.

        Setting it (buffered mode, before attach) asks for a size; the kernel
        clamps it to [32, net.bpf.maxbufsize] and this property reports the
        result.  In zero-copy mode it is each shared buffer's length minus
        its 32-byte header.
        """
        return self._raw(raw.get_blen)

    @buffer_size.setter
    def buffer_size(self, size: int) -> None:
        self._raw(raw.set_blen, size)

    @property
    def buffers_held(self) -> bool:
        """True while a zero-copy buffer is held (not yet acknowledged)."""
        return self._zbuf is not None and self._zbuf.holding

    # -- options ------------------------------------------------------------

    @property
    def immediate(self) -> bool:
        """Deliver packets as they arrive rather than when a buffer fills
        (BIOCIMMEDIATE).  FreeBSD has no getter: this is the value last set
        through this object."""
        return self._immediate

    @immediate.setter
    def immediate(self, on: bool) -> None:
        self._raw(raw.set_immediate, on)
        self._immediate = bool(on)

    @property
    def feedback(self) -> bool:
        """Also capture the packets this descriptor writes (BIOCFEEDBACK).
        FreeBSD has no getter: this is the value last set through this object."""
        return self._feedback

    @feedback.setter
    def feedback(self, on: bool) -> None:
        self._raw(raw.set_feedback, on)
        self._feedback = bool(on)

    @property
    def header_complete(self) -> bool:
        """Written frames carry their own link-layer source address
        (BIOCGHDRCMPLT/BIOCSHDRCMPLT)."""
        return self._raw(raw.get_hdrcmplt)

    @header_complete.setter
    def header_complete(self, on: bool) -> None:
        self._raw(raw.set_hdrcmplt, on)

    @property
    def direction(self) -> Direction:
        """Which packets are captured (BIOCGDIRECTION/BIOCSDIRECTION)."""
        return Direction(self._raw(raw.get_direction))

    @direction.setter
    def direction(self, value: Direction) -> None:
        self._raw(raw.set_direction, value)

    @property
    def timestamp(self) -> Timestamp:
        """Format and clock of record timestamps (BIOCGTSTAMP/BIOCSTSTAMP).

        Set a :class:`Timestamp`, a ``(format, clock)`` pair, a
        :class:`TimestampFormat` (normal clock) or a raw ``BPF_T_*`` word.
        The kernel applies it to packets captured afterwards.
        """
        value = self._raw(raw.get_tstamp)
        self._tstamp = value
        return Timestamp.from_value(value)

    @timestamp.setter
    def timestamp(self, value: TimestampSpec) -> None:
        word = int(value[0]) | int(value[1]) if isinstance(value, tuple) else int(value)
        self._raw(raw.set_tstamp, word)
        self._tstamp = word

    def _tstamp_value(self) -> int:
        # Cached: BIOCGTSTAMP is refused once the descriptor is locked.
        if self._tstamp is None:
            self._tstamp = self._raw(raw.get_tstamp)
        return self._tstamp

    @property
    def read_timeout(self) -> float | None:
        """Seconds a read waits before returning what it has; None: no timeout
        (BIOCGRTIMEOUT/BIOCSRTIMEOUT).

        The kernel keeps it in clock ticks, so the value read back is rounded
        (with hz=1000, 0.0005 reads back as 0.001).  In zero-copy mode it makes
        the descriptor readable when the time passes with data buffered.
        """
        sec, usec = self._raw(raw.get_rtimeout)
        seconds = sec + usec / 1e6
        return seconds or None

    @read_timeout.setter
    def read_timeout(self, seconds: float | None) -> None:
        sec, usec = divmod(round((seconds or 0) * 1_000_000), 1_000_000)
        self._raw(raw.set_rtimeout, sec, usec)
        self._timed = bool(sec or usec)

    @property
    def nonblocking(self) -> bool:
        """Non-blocking reads (FIONBIO); the value last set through this object."""
        return self._nonblocking

    @nonblocking.setter
    def nonblocking(self, on: bool) -> None:
        self._raw(raw.set_nonblocking, on)
        self._nonblocking = bool(on)

    def promiscuous(self) -> None:
        """Put the attached interface in promiscuous mode (BIOCPROMISC).

        It stays so until the descriptor is closed or re-attached.
        """
        self._raw(raw.promisc)

    # -- interface and link type -------------------------------------------

    def attach(self, ifname: str) -> None:
        """Attach to the interface ``ifname`` (BIOCSETIF); capture starts.

        An unknown name raises :class:`bsdbpf.InterfaceNotFound` (ENXIO).
        """
        try:
            self._raw(raw.set_if, ifname)
        except BPFError as err:
            if err.ifname is not None:
                raise
            raise from_errno(err.errno or errno.EINVAL, err.op, ifname=ifname, cls=type(err),
                             hint=err.hint or None) from err
        self._attached = True
        self._ifname = ifname
        if self._engine is not None:
            self._engine.source.reset()  # e.g. read buffers of the size granted now

    @property
    def interface(self) -> str | None:
        """The attached interface's name (BIOCGETIF), or None if not attached."""
        try:
            return self._raw(raw.get_if)
        except InvalidArgument:
            return None  # EINVAL: not attached

    @property
    def dlt(self) -> int:
        """The link type of captured packets, a ``DLT_*`` value (BIOCGDLT/BIOCSDLT).

        Setting picks another link type the interface offers (see :attr:`dlt_list`).
        """
        return self._raw(raw.get_dlt)

    @dlt.setter
    def dlt(self, value: int) -> None:
        self._raw(raw.set_dlt, value)

    @property
    def dlt_list(self) -> list[int]:
        """The link types the attached interface offers (BIOCGDLTLIST)."""
        return self._raw(raw.get_dltlist)

    # -- filters ------------------------------------------------------------

    def _as_program(self, program: FilterSpec | None) -> Program:
        """A Program from what set_filter takes; an expression is compiled
        for the attached interface's link type and this descriptor's snap
        length."""
        if isinstance(program, str) and not is_program_text(program):
            self._check()
            if not self._attached:
                raise from_errno(errno.EINVAL, "BIOCGDLT", cls=InvalidStateError, hint=(
                    "an expression is compiled for the interface's link type: attach first, "
                    "or pass a Program (bsdbpf.filter.compile(expression, dlt=...))"))
            return as_program(program, dlt=self.dlt, snaplen=self._snaplen)
        return as_program(program)

    def _program(self, setter: Callable[..., Any], op: str,
                 program: FilterSpec | None) -> Program | None:
        """Install ``program`` with ``setter`` (a :mod:`bsdbpf.raw` function
        for the request ``op``)."""
        self._check()
        try:
            prog = self._as_program(program)
        except FilterError as err:
            err.op = op  # the request the program was for
            raise
        try:
            self._raw(setter, prog)
        except InvalidFilter:
            # The kernel says only EINVAL: name the instruction and the rule
            # where bpf_validate is the reason (else too long, or unmapped).
            explain_rejection(prog, op)
            raise
        return prog or None

    def set_filter(self, program: FilterSpec | None, flush: bool = True) -> None:
        """Install the read filter: BIOCSETF, or BIOCSETFNR with ``flush=False``.

        ``program`` is a :class:`bsdbpf.filter.Program`, a sequence of
        ``(code, jt, jf, k)`` instructions, the text ``tcpdump -d``, ``-dd``
        or ``-ddd`` prints, or a tcpdump expression (``"tcp port 80"``),
        compiled for the attached interface's link type and the snap length
        given to :meth:`open` (default 262144).  None or an empty program
        removes the filter.  BIOCSETF also discards buffered packets and
        zeroes the counters; BIOCSETFNR keeps them.
        """
        if flush and self._bufmode == BufferMode.ZBUF and self._zbuf is None:
            self._zbuf_first("BIOCSETF")
        if flush:
            self._filter = self._program(raw.set_filter, "BIOCSETF", program)
        else:
            self._filter = self._program(raw.set_filter_nr, "BIOCSETFNR", program)

    @property
    def filter(self) -> Program | None:
        """The read filter last installed through this object (BIOCSETF).

        FreeBSD cannot read a filter back; None means none was set here.
        """
        return self._filter

    @filter.setter
    def filter(self, program: FilterSpec | None) -> None:
        self.set_filter(program)

    @property
    def write_filter(self) -> Program | None:
        """The filter frames must pass to be written (BIOCSETWF); as last set
        here.  Takes what :meth:`set_filter` takes."""
        return self._write_filter

    @write_filter.setter
    def write_filter(self, program: FilterSpec | None) -> None:
        self._write_filter = self._program(raw.set_write_filter, "BIOCSETWF", program)

    def _zbuf_first(self, op: str) -> None:
        self._check()
        raise from_errno(errno.EINVAL, op, cls=InvalidStateError, hint=(
            f"in zero-copy mode {op} needs the buffers registered first "
            "(register_zerocopy_buffers, BIOCSETZBUF): FreeBSD's kernel would dereference "
            "a NULL buffer and panic"))

    # -- counters, control --------------------------------------------------

    @property
    def version(self) -> BpfVersion:
        """The kernel's BPF version (BIOCVERSION); FreeBSD reports 1.1."""
        return self._raw(raw.get_version)

    def stats(self) -> BpfStat:
        """Packets offered to and dropped by this descriptor (BIOCGSTATS)."""
        return self._raw(raw.get_stats)

    @property
    def bytes_available(self) -> int:
        """Bytes of captured packets waiting in the kernel's buffers (FIONREAD)."""
        return self._raw(raw.nread)

    def flush(self) -> None:
        """Discard buffered packets and zero the counters (BIOCFLUSH).

        A zero-copy buffer the process holds is not touched.
        """
        if self._bufmode == BufferMode.ZBUF and self._zbuf is None:
            self._zbuf_first("BIOCFLUSH")
        self._raw(raw.flush)

    def lock(self) -> None:
        """Lock the descriptor against reconfiguration (BIOCLOCK); cannot be undone.

        Afterwards requests FreeBSD forbids raise :class:`bsdbpf.DescriptorLocked`
        (EPERM); capture goes on.
        """
        self._tstamp_value()  # BIOCGTSTAMP is refused once locked; parsing needs it
        self._raw(raw.lock)
        self._locked = True

    @property
    def locked(self) -> bool:
        """True after :meth:`lock`."""
        return self._locked

    def write(self, frame: Any) -> int:
        """Send one link-layer frame out of the attached interface (write(2)).

        A descriptor from :meth:`open` sends it byte for byte, as libpcap's
        ``pcap_inject`` does (``header_complete=True``); with
        :attr:`header_complete` False the kernel writes the interface's own
        source address into an Ethernet frame.  Returns the number of bytes
        written.
        """
        return self._system.write(self._check(), frame)

    inject = write

    # -- reading ------------------------------------------------------------

    def _capture(self) -> Capture:
        """The capture engine, over the source the buffer mode calls for."""
        self._check()
        engine = self._engine
        if engine is None:
            source = (BufferedSource(self) if self._zbuf is None
                      else ZeroCopySource(self, self._zbuf))
            engine = self._engine = Capture(self, source)
        return engine

    @property
    def buffers_consumed(self) -> int:
        """Buffers (batches) taken from the kernel so far, in either mode."""
        return self._engine.buffers if self._engine is not None else 0

    @property
    def records_consumed(self) -> int:
        """Records in those buffers."""
        return self._engine.records if self._engine is not None else 0

    def packets(
        self, count: int | None = None, timeout: float | None = None, *, copy: bool = False
    ) -> Iterator[Packet]:
        """Yield captured packets, in both buffer modes, without copying them.

        Stops after ``count`` packets (None: no limit), or when ``timeout``
        seconds pass without a packet (None: wait forever; 0: take what is
        buffered now and stop).  At a timeout the kernel's partly filled
        buffer is fetched too (BIOCROTZBUF, or a read with BIOCIMMEDIATE).

        A packet points into the kernel's buffer and is valid until the next
        buffer is fetched (or the descriptor closes): after that every use
        raises :class:`bsdbpf.records.Released`.  So ``list(d.packets(n))``
        may hold packets of a buffer already given back; keep them with
        ``packets(copy=True)``, :meth:`Packet.copy` or ``bytes(pkt)``.
        Stopping early keeps the rest of the buffer for the next call.
        The iteration runs in C; it calls back into Python once per buffer.
        """
        return self._capture().packets(count, timeout, copy)

    def batches(self, timeout: float | None = None) -> Iterator[Batch]:
        """Yield each buffer the kernel hands over as a :class:`Batch`.

        ``timeout`` as in :meth:`packets`.  Records are views of the kernel's
        buffer; the batch is released (zero-copy: acknowledged) when you
        leave its ``with`` block, or at the latest when the iterator advances.
        """
        while True:
            batch = self.next_batch(timeout)
            if batch is None:
                return
            yield batch

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        """The next :class:`Batch`, or None if ``timeout`` passed without one.

        Releases the previous batch first.
        """
        return self._capture().fetch(timeout, resume=False)

    async def apackets(
        self, count: int | None = None, timeout: float | None = None, *, copy: bool = False
    ) -> AsyncIterator[Packet]:
        """``async for`` form of :meth:`packets` (waits with ``loop.add_reader``).

        Closing the descriptor from another task ends the iteration with
        ``ValueError("I/O operation on closed Descriptor")`` at once.
        """
        engine = self._capture()
        taken = 0
        while count is None or taken < count:
            batch = await engine.afetch(timeout, resume=True)
            if batch is None:
                return
            for pkt in batch.take(None if count is None else count - taken, copy=copy):
                taken += 1
                yield pkt

    async def abatches(self, timeout: float | None = None) -> AsyncIterator[Batch]:
        """``async for`` form of :meth:`batches`."""
        engine = self._capture()
        while True:
            batch = await engine.afetch(timeout, resume=False)
            if batch is None:
                return
            yield batch
