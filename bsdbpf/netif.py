"""The network interfaces BPF can capture on: :func:`interfaces`, as ``tcpdump -D`` lists them."""

from __future__ import annotations

import errno
from typing import NamedTuple

from bsdbpf._native import lib
from bsdbpf.backend import default_system
from bsdbpf.descriptor import Descriptor
from bsdbpf.errors import BPFError
from bsdbpf.system import System

__all__ = ["Interface", "interfaces"]


class Interface(NamedTuple):
    """One interface."""

    name: str
    #: The link types (``DLT_*``) BPF offers on it (BIOCGDLTLIST); empty when it
    #: could not be asked (opening ``/dev/bpf`` needs root).
    dlts: tuple[int, ...]
    #: True if administratively up (``IFF_UP``), False if down, None if unknown.
    up: bool | None


def _up(name: str, system: System) -> bool | None:
    try:
        return bool(system.if_flags(name) & lib.IFF_UP)
    except BPFError:
        return None  # departed since it was listed, or not ours to ask


def _dlts(name: str, system: System) -> tuple[int, ...]:
    try:
        with Descriptor(system=system) as d:
            d.attach(name)
            return tuple(d.dlt_list) or (d.dlt,)
    except BPFError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.ENXIO, errno.ENETDOWN):
            return ()
        raise


def interfaces(system: System | None = None, *, link_types: bool = True) -> list[Interface]:
    """The interfaces of ``system`` (default: :func:`bsdbpf.backend.default_system`):
    name, link types and whether they are up, in the system's order.

    The names come from the system's ``if_nameindex(3)`` and the flags from
    ``SIOCGIFFLAGS`` (a simulated kernel's interfaces are always up).  The
    link types are asked through ``/dev/bpf`` (a descriptor attaches to each
    interface for a moment), so without root they are left empty;
    ``link_types=False`` leaves them out.
    """
    system = default_system() if system is None else system
    try:
        names = [name for _, name in system.if_nameindex()]
    except BPFError:
        names = []
    return [Interface(n, _dlts(n, system) if link_types else (), _up(n, system)) for n in names]
