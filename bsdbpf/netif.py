"""The network interfaces BPF can capture on: :func:`interfaces`, as ``tcpdump -D`` lists them."""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
from typing import NamedTuple

from bsdbpf.backend import default_system
from bsdbpf.descriptor import Descriptor
from bsdbpf.errors import BPFError
from bsdbpf.system import System

__all__ = ["Interface", "interfaces"]

# FreeBSD's SIOCGIFFLAGS, _IOWR('i', 17, struct ifreq): struct ifreq is 32 bytes,
# ifr_flags (short) at offset 16.
SIOCGIFFLAGS = 0xC0206911
IFF_UP = 0x1


class Interface(NamedTuple):
    """One interface."""

    name: str
    #: The link types (``DLT_*``) BPF offers on it (BIOCGDLTLIST); empty when it
    #: could not be asked (opening ``/dev/bpf`` needs root).
    dlts: tuple[int, ...]
    #: True if administratively up (``IFF_UP``), False if down, None if unknown.
    up: bool | None


def _host_flags_up(name: str) -> bool | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            ifr = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16s16x", name.encode()))
    except OSError:
        return None
    return bool(struct.unpack_from("H", ifr, 16)[0] & IFF_UP)


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

    On FreeBSD the names come from ``if_nameindex(3)`` and the flags from
    ``SIOCGIFFLAGS``; a simulated kernel lists its own interfaces, which are
    always up.  The link types are asked through ``/dev/bpf`` (a descriptor
    attaches to each interface for a moment), so without root they are left
    empty; ``link_types=False`` leaves them out.
    """
    system = default_system() if system is None else system
    simulated_names = getattr(system, "interfaces", None)  # a simulated kernel lists its own
    found: list[tuple[str, bool | None]]
    if simulated_names is not None:
        found = [(n, True) for n in simulated_names()]
    else:
        try:
            found = [(n, _host_flags_up(n)) for _, n in socket.if_nameindex()]
        except OSError:
            found = []
    return [Interface(n, _dlts(n, system) if link_types else (), up) for n, up in found]

