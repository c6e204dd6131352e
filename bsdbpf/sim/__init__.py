"""bsdbpf.sim: a simulated FreeBSD kernel — the bpf driver, zero-copy buffers, sysctls.

:class:`Kernel` behaves like FreeBSD 14's /dev/bpf down to the errno, so the
library, scripts built on it and their tests run on any machine.  Its
descriptors are real, pollable file descriptors; its packet path runs in C on
threads of its own, writing into zero-copy buffers while the consumer reads
them, as the real kernel does.
"""

from __future__ import annotations

import threading

from bsdbpf._native import lib
from bsdbpf.sim.kernel import Kernel, TrafficGenerator

__all__ = ["Kernel", "TrafficGenerator", "default_kernel"]

_default: Kernel | None = None
_default_lock = threading.Lock()


def default_kernel() -> Kernel:
    """The process's shared simulated host, made on first use.

    It has ``em0`` (Ethernet) and ``lo0`` (DLT_NULL, like FreeBSD's loopback),
    runs as root, and keeps FreeBSD's defaults (zero-copy off until
    ``net.bpf.zerocopy_enable`` is set to 1).
    """
    global _default
    with _default_lock:
        if _default is None:
            kernel = Kernel(uid=0)
            kernel.add_interface("em0", lib.DLT_EN10MB)
            kernel.add_interface("lo0", lib.DLT_NULL, mtu=16384)
            _default = kernel
        return _default
