"""The capture engine: one wait/fetch loop over a source of buffers.

:class:`Capture` hands out :class:`~bsdbpf.records.Batch` objects, one per
buffer the kernel hands over, to a sync or an asyncio driver.  The loop
(:meth:`Capture._steps`) is written once; what differs between the buffer
modes lives in the two sources:

* :class:`BufferedSource`: ``read(2)`` into a buffer of BIOCGBLEN bytes;
* :class:`ZeroCopySource`: the shared buffers of :mod:`bsdbpf.zbuf`.

Each source owns its fetch (``take``), how it drains a partly filled buffer
at a deadline, and how a batch goes back (``on_release``).  While buffers
are ready no system call is made beyond the transfer itself: zero-copy takes
the next buffer by looking at its header, buffered mode reads without
polling first when there is no deadline.  The :class:`~bsdbpf.Descriptor`
owns the lifetime and the knobs; this module only reads.
"""

from __future__ import annotations

import asyncio
import errno
import math
import select
import threading
import time
from collections.abc import Generator
from typing import Any, Callable, Optional, Protocol, TypeVar

from bsdbpf import raw
from bsdbpf.errors import NotAttached, WouldBlock, from_errno
from bsdbpf.records import Batch, Stream, parse
from bsdbpf.system import System
from bsdbpf.zbuf import HEADER_SIZE, ZeroCopyBuffers

__all__ = ["BufferedSource", "Capture", "Device", "ZeroCopySource"]

CLOSED = "I/O operation on closed Descriptor"
# Readable, yet nothing to take: a kernel whose readiness lags the
# acknowledgement (the simulator's, until its clock tick).  Back off between
# these bounds instead of spinning; start short, as a buffer may fill in a
# millisecond.  Whether the interface departed is asked from DETACHED_CHECK on.
BACKOFF_MIN = 0.0001
BACKOFF_MAX = 0.05
DETACHED_CHECK = 0.0008

# What _steps asks its driver for: wait for readability, or sleep.
_WAIT, _SLEEP = "wait", "sleep"
# How hard a source tries: look only, the fd was found readable, or the
# deadline came (also hand over a partly filled buffer).
CHECK, READY, DRAIN = "check", "ready", "drain"
Steps = Generator[tuple[str, Optional[float]], bool, Optional[Batch]]


_T = TypeVar("_T")


class Device(Protocol):
    """What the engine needs from its descriptor (a :class:`bsdbpf.Descriptor`)."""

    _system: System
    _lock: threading.RLock
    _locked: bool
    _immediate: bool
    _timed: bool
    _nonblocking: bool

    def _check(self) -> int: ...
    def _raw(self, call: Callable[..., _T], *args: Any) -> _T: ...
    def _tstamp_value(self) -> int: ...

    @property
    def buffer_size(self) -> int: ...

    @property
    def bytes_available(self) -> int: ...

    @property
    def interface(self) -> str | None: ...


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class BufferedSource:
    """Buffers copied out by ``read(2)``."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.buffer: bytearray | None = None  # reused while no view of it is exported

    def reset(self) -> None:
        """The buffer size may have changed (attach): size the next buffer anew."""
        self.buffer = None

    @property
    def blocking_read(self) -> bool:
        """read(2) waits by itself (without the GIL) when there is no deadline."""
        return not self.device._nonblocking

    @property
    def looks_without_waiting(self) -> bool:
        """take(CHECK) returns at once: only a non-blocking read(2) does."""
        return self.device._nonblocking

    def take(self, how: str) -> Batch | None:
        if how == DRAIN:
            return self._read_partial()
        try:
            return self.read()
        except NotAttached:
            # bpfread answers ENXIO only when nothing can be handed over
            # without waiting: packets still in the store buffer come first.
            batch = self._read_partial()
            if batch is None:
                raise
            return batch

    def read(self) -> Batch | None:
        """One read(2); None if it returned nothing (timeout, non-blocking)."""
        device = self.device
        fd = device._check()
        buf = self.buffer
        if buf is None:
            buf = self.buffer = bytearray(device.buffer_size)
        try:
            n = device._system.read(fd, buf)
        except WouldBlock:
            return None
        if n == 0:
            return None
        return parse(buf, device._tstamp_value(), end=n, on_release=self._on_release)

    def _read_partial(self) -> Batch | None:
        """Whatever the kernel holds, without waiting: with BIOCIMMEDIATE on
        (allowed on a locked descriptor, unlike FIONBIO) bpfread hands over a
        partly filled store buffer at once."""
        device = self.device
        if device._nonblocking:
            return self.read()
        if device.bytes_available == 0:
            if device.interface is None:
                raise from_errno(errno.ENXIO, "read")  # NotAttached, as read(2) gives
            return None  # a read now would wait
        if device._immediate:
            return self.read()
        device._raw(raw.set_immediate, True)
        try:
            return self.read()
        finally:
            device._raw(raw.set_immediate, False)

    def _on_release(self, batch: Batch) -> None:
        if batch.exports:
            self.buffer = None  # a view still shows it: read into a new one


class ZeroCopySource:
    """The two buffers shared with the kernel."""

    blocking_read = False
    looks_without_waiting = True  # take(CHECK) reads a header, no system call

    def __init__(self, device: Device, zbuf: ZeroCopyBuffers) -> None:
        self.device = device
        self.zbuf = zbuf

    def reset(self) -> None:
        """Attaching changes nothing here: the buffers were registered before."""

    def take(self, how: str) -> Batch | None:
        device = self.device
        with device._lock:  # close() cannot unmap while we look
            device._check()
            zbuf = self.zbuf
            got = zbuf.take()
            partial_ready = device._immediate or device._timed
            if got is None and (how == DRAIN or (how == READY and partial_ready)):
                # A partly filled buffer the kernel made readable (immediate,
                # read timeout) or the deadline calls for: BIOCROTZBUF hands
                # it over.  Never otherwise: an acknowledged buffer waits for
                # the next packet, and rotating early only halves the batches.
                device._raw(raw.rot_zbuf)
                got = zbuf.take()
            if got is None:
                return None
            index, end = got
            try:
                return parse(zbuf.view(index), device._tstamp_value(), start=HEADER_SIZE,
                             end=end, on_release=self._on_release)
            except BaseException:
                zbuf.acknowledge()  # give it back, or the kernel stalls on it
                raise

    def _on_release(self, batch: Batch) -> None:
        with self.device._lock:
            zbuf = self.zbuf
            index = zbuf.held
            if zbuf.closed or index is None:
                return
            try:
                if batch.exports:
                    zbuf.freeze(index)  # the user's views keep these bytes
            finally:
                zbuf.acknowledge()


class Capture:
    """The wait/fetch loop of one descriptor over one source."""

    def __init__(self, device: Device, source: BufferedSource | ZeroCopySource) -> None:
        self.device = device
        self.source = source
        self.current: Batch | None = None
        self._resumable = False  # packets() may go on with current
        self._waiters: list[_Waiter] = []  # asyncio readers, woken by close()
        #: Buffers (batches) taken from the kernel so far.
        self.buffers = 0
        #: Records in those buffers.
        self.records = 0

    # -- what the Descriptor calls ------------------------------------------

    def packets(self, count: int | None, timeout: float | None, copy: bool) -> Stream:
        """The packets of the batches fetched with ``timeout``, iterated in C."""
        _check_timeout(timeout)
        return Stream(lambda: self.fetch(timeout, resume=True), count, copy=copy)

    def fetch(self, timeout: float | None, resume: bool) -> Batch | None:
        """The next batch (sync driver); None when ``timeout`` passed without one."""
        pending = self._settle(resume)
        if pending is not None:
            return pending
        steps = self._steps(timeout, can_block=True)
        try:
            kind, seconds = next(steps)
            while True:
                if kind == _WAIT:
                    kind, seconds = steps.send(self._wait_readable(seconds))
                else:
                    time.sleep(seconds or 0)
                    kind, seconds = steps.send(True)
        except StopIteration as stop:
            return self._adopt(stop.value, resume)

    async def afetch(self, timeout: float | None, resume: bool) -> Batch | None:
        """``fetch`` for asyncio: waits with ``loop.add_reader``."""
        pending = self._settle(resume)
        if pending is not None:
            return pending
        steps = self._steps(timeout, can_block=False)
        try:
            kind, seconds = next(steps)
            while True:
                if kind == _WAIT:
                    kind, seconds = steps.send(await self._areadable(seconds))
                else:
                    await asyncio.sleep(seconds or 0)
                    kind, seconds = steps.send(True)
        except StopIteration as stop:
            return self._adopt(stop.value, resume)

    def close(self) -> None:
        """Release the current batch and wake every asyncio reader (before the
        fd closes: a reader registered on a closed fd would never wake)."""
        try:
            self._settle(resume=False)
        finally:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.wake_closed()

    # -- the loop -----------------------------------------------------------

    def _settle(self, resume: bool) -> Batch | None:
        """The batch packets() stopped in, to go on with; else release the
        current one (acknowledging it: never wait while holding a buffer)."""
        batch, self.current = self.current, None
        if batch is None:
            return None
        if resume and self._resumable and not batch.released and 0 < batch.taken < batch.total:
            self.current = batch
            return batch
        batch.release()
        return None

    def _adopt(self, batch: Batch | None, resume: bool) -> Batch | None:
        if batch is not None:
            self.current = batch
            self._resumable = resume
            self.buffers += 1
            self.records += len(batch)
        return batch

    def _steps(self, timeout: float | None, can_block: bool) -> Steps:
        """How to get the next batch, for both sources and both drivers:
        yields what to wait for, returns the batch or None."""
        _check_timeout(timeout)
        source = self.source
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = BACKOFF_MIN
        while True:
            remaining = _remaining(deadline)
            if remaining is None and can_block and source.blocking_read:
                batch = source.take(READY)  # read(2) blocks, without the GIL
                if batch is not None:
                    return batch
                continue  # the kernel's read timeout passed with nothing
            if source.looks_without_waiting:
                batch = source.take(CHECK)
                if batch is not None:
                    return batch
            if remaining == 0:
                return source.take(DRAIN)
            readable = yield _WAIT, remaining
            if not readable:
                continue  # the deadline has come: drain on the next pass
            batch = source.take(READY)
            if batch is not None:
                return batch
            # Readable, yet nothing to take: detached (bpfpoll reports a
            # detached descriptor readable), or a kernel whose readiness lags
            # the acknowledgement.
            if backoff >= DETACHED_CHECK and self.device.interface is None:
                batch = source.take(DRAIN)  # what was captured before comes first
                if batch is not None:
                    return batch
                raise from_errno(errno.ENXIO, "read")  # NotAttached, as read(2) gives
            remaining = _remaining(deadline)
            yield _SLEEP, backoff if remaining is None else min(backoff, remaining)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _wait_readable(self, timeout: float | None) -> bool:
        poller = select.poll()
        poller.register(self.device._check(), select.POLLIN)
        ms = None if timeout is None else math.ceil(timeout * 1000)
        return bool(poller.poll(ms))  # releases the GIL; EINTR is retried (PEP 475)

    async def _areadable(self, timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bool] = loop.create_future()

        def on_readable() -> None:
            if not ready.done():
                ready.set_result(True)

        waiter = _Waiter(loop, self.device._check(), ready)
        loop.add_reader(waiter.fd, on_readable)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(ready, timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            if waiter in self._waiters:  # else close() removed it, before the fd closed
                self._waiters.remove(waiter)
                loop.remove_reader(waiter.fd)
        return True


class _Waiter:
    """An asyncio reader waiting for the fd: close() ends its wait at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 future: asyncio.Future[bool]) -> None:
        self.loop, self.fd, self.future = loop, fd, future

    def wake_closed(self) -> None:
        def wake() -> None:
            if not self.future.done():
                self.future.set_exception(ValueError(CLOSED))

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.loop.remove_reader(self.fd)
            wake()
        else:  # another thread: the fd may close first; the loop tolerates that
            self.loop.call_soon_threadsafe(self.loop.remove_reader, self.fd)
            self.loop.call_soon_threadsafe(wake)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout={timeout}: must be >= 0 or None")
