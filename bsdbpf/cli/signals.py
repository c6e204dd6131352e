"""Signals during a capture, as tcpdump handles them.

SIGINT, SIGTERM and SIGHUP ask the capture to stop; SIGINFO (FreeBSD's
Ctrl-T) and SIGUSR1 ask for the counters.  The handlers only record the
request: the capture loop acts on it between buffers, so a signal never
cuts a record in two.  A wake-up pipe (``signal.set_wakeup_fd``) ends the
loop's wait at once.  The handlers are installed even where the signal was
inherited as ignored (a background job ignores SIGINT), as tcpdump does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

__all__ = ["CaptureSignals"]

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, n))
INFO_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINFO", "SIGUSR1") if hasattr(signal, n))


class CaptureSignals:
    """While entered: :attr:`stop` and :attr:`info` record what was asked for."""

    def __init__(self) -> None:
        self.stop: int | None = None  #: the stop signal received, if any
        self.info = False  #: counters asked for and not yet printed
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1
        self._pipe: tuple[int, int] | None = None

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when a signal arrives (None when
        no handler could be installed, outside the main thread)."""
        return None if self._pipe is None else self._pipe[0]

    def clear(self) -> None:
        """Empty the wake-up pipe."""
        if self._pipe is not None:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._pipe[0], 512):
                    pass

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop = signum

    def _on_info(self, signum: int, frame: object) -> None:
        self.info = True

    def __enter__(self) -> CaptureSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers; the loop still polls
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._pipe = (r, w)
        self._previous_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_stop)
        for sig in INFO_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_info)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)
        self._previous.clear()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
