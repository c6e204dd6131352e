"""Which kernel bsdbpf uses when none is given: the only module that knows both.

The seam (:mod:`bsdbpf.system`) does not import the simulator and the
simulator imports nothing above the seam; this selector sits beside them and
picks one.
"""

from __future__ import annotations

import os
import sys

from bsdbpf.system import HostSystem, System

__all__ = ["SYSTEM_VARIABLE", "default_system"]

SYSTEM_VARIABLE = "BSDBPF_SYSTEM"


def default_system() -> System:
    """The system bsdbpf uses when none is given.

    FreeBSD's kernel on FreeBSD, the process's shared simulated kernel
    (:func:`bsdbpf.sim.default_kernel`) elsewhere; ``BSDBPF_SYSTEM=host`` or
    ``BSDBPF_SYSTEM=sim`` overrides.  Any other value raises ValueError.
    """
    choice = os.environ.get(SYSTEM_VARIABLE, "").strip().lower()
    if choice not in ("", "host", "sim"):
        raise ValueError(f"{SYSTEM_VARIABLE}={choice!r}: expected 'host' or 'sim'")
    if choice == "host" or (not choice and sys.platform.startswith("freebsd")):
        return HostSystem()
    # Imported on first use: a FreeBSD host that never simulates never loads it.
    from bsdbpf.sim import default_kernel  # noqa: PLC0415

    return default_kernel()
