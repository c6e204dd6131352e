"""The simulated host's network interfaces: their BPF taps, the traffic
generator and the AF_PACKET bridge to a host interface."""

from __future__ import annotations

import errno
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from bsdbpf._native import ffi, lib
from bsdbpf.errors import (
    BPFError,
    InterfaceNotFound,
    PermissionDenied,
    UnsupportedError,
    from_errno,
)

__all__ = ["LINK_HEADER", "Interfaces", "TrafficGenerator"]

# Link-header length of each supported DLT, as its driver attaches it.
LINK_HEADER = {lib.DLT_EN10MB: 14, lib.DLT_NULL: 4, lib.DLT_LOOP: 4, lib.DLT_RAW: 0,
               lib.DLT_PPP: 4}

# Why bridge() can fail, and what to do about it.
BRIDGE_ERRORS: dict[int, tuple[type[BPFError], str]] = {
    errno.EPERM: (PermissionDenied, "an AF_PACKET socket needs CAP_NET_RAW: run as root"),
    errno.ENXIO: (InterfaceNotFound, "the host has no interface of that name (`ip link`)"),
    errno.EOPNOTSUPP: (UnsupportedError, "bridging uses AF_PACKET, which only Linux has"),
}


@dataclass
class Tap:
    """One (interface, DLT) pair: a bpf_if."""

    iface: Interface
    dlt: int
    c: Any  # struct bsdbpf_sim_if *
    seq: int  # attach order: net.bpf.stats lists the newest first


@dataclass
class Interface:
    name: str
    index: int  # if_index: never reused while the kernel lives
    taps: list[Tap] = field(default_factory=list)
    promisc: int = 0  # ifpromisc() reference count
    generator: TrafficGenerator | None = None
    bridged: bool = False

    def tap(self, dlt: int | None = None) -> Tap | None:
        for t in self.taps:
            if dlt is None or t.dlt == dlt:
                return t
        return None


class TrafficGenerator:
    """Frames offered to an interface by a C thread: see :meth:`Kernel.generate`."""

    def __init__(self, tap: Tap) -> None:
        self._tap = tap

    def _stats(self) -> Any:
        out = ffi.new("struct bsdbpf_sim_stats *")
        lib.bsdbpf_sim_gen_stats(self._tap.c, out)
        return out

    @property
    def offered(self) -> int:
        """Frames offered to the interface so far."""
        return int(self._stats().offered)

    @property
    def running(self) -> bool:
        """True while the thread is still offering frames."""
        return bool(self._stats().running)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every frame was offered (or the generator was stopped);
        True when done, False if ``timeout`` seconds passed first."""
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while self.running:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.001)
        lib.bsdbpf_sim_gen_wait(self._tap.c)
        return True

    def stop(self) -> None:
        """Stop offering frames and wait for the thread to end."""
        lib.bsdbpf_sim_gen_stop(self._tap.c)

    def __enter__(self) -> TrafficGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Interfaces:
    """The interfaces of one simulated kernel, by name, in the order added.
    The caller (the kernel) serialises every call with its lock."""

    def __init__(self, kernel_c: Any) -> None:
        self._kernel_c = kernel_c
        self._by_name: dict[str, Interface] = {}
        self._taps_made = 0
        self._indexes_made = 0

    def __iter__(self) -> Any:
        return iter(list(self._by_name.values()))

    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str) -> Interface | None:
        return self._by_name.get(name)

    def find(self, name: str, op: str) -> Interface:
        iface = self._by_name.get(name)
        if iface is None:
            raise from_errno(errno.ENXIO, op, ifname=name, cls=InterfaceNotFound,
                             hint=f"the simulated kernel has {self.names()}")
        return iface

    def add(self, name: str, dlts: tuple[int, ...], mtu: int, lladdr: bytes | None) -> Interface:
        raw = name.encode()
        if not raw or len(raw) >= lib.IFNAMSIZ or b"\0" in raw:
            raise ValueError(f"interface name {name!r}: 1 to {lib.IFNAMSIZ - 1} bytes, no NUL")
        if name in self._by_name:
            raise ValueError(f"interface {name!r} exists already")
        for dlt in dlts:
            if dlt not in LINK_HEADER:
                raise ValueError(f"DLT {dlt} is not simulated; use one of {sorted(LINK_HEADER)}")
        # A stable locally administered address derived from the name.
        mac = lladdr or b"\x02" + zlib.crc32(raw).to_bytes(4, "big") + b"\x01"
        if len(mac) != 6:
            raise ValueError("lladdr must be 6 bytes")
        self._indexes_made += 1
        iface = Interface(name, self._indexes_made)
        for dlt in dlts:
            c = lib.bsdbpf_sim_if_new(self._kernel_c, raw, dlt, LINK_HEADER[dlt], mac, mtu)
            if c == ffi.NULL:
                self._free(iface)
                raise MemoryError("out of memory adding an interface")
            self._taps_made += 1
            iface.taps.append(Tap(iface, dlt, c, self._taps_made))
        self._by_name[name] = iface
        return iface

    def remove(self, iface: Interface) -> None:
        """bpfdetach(): the engine wakes every descriptor of its taps."""
        self._free(iface)
        del self._by_name[iface.name]

    @staticmethod
    def _free(iface: Interface) -> None:
        for t in iface.taps:
            lib.bsdbpf_sim_if_free(t.c)

    def clear(self) -> None:
        for iface in list(self._by_name.values()):
            self.remove(iface)

    def inject(self, name: str, frame: bytes, outgoing: bool) -> None:
        tap = self.find(name, "inject").taps[0]
        data = ffi.from_buffer(frame)
        lib.bsdbpf_sim_inject(tap.c, data, len(data), int(outgoing))

    def generate(self, name: str, count: int, size: int, rate: int,
                 outgoing: bool) -> TrafficGenerator:
        tap = self.find(name, "generate").taps[0]
        rc = lib.bsdbpf_sim_gen_start(tap.c, count, size, rate, int(outgoing))
        if rc == -errno.EBUSY:
            raise from_errno(errno.EBUSY, "generate", ifname=name, hint=(
                f"a generator is still running on {name}: stop() it or wait() for it "
                "before starting another"))
        if rc < 0:
            raise from_errno(-rc, "generate", ifname=name,
                             hint=f"frames need at least {LINK_HEADER[tap.dlt] + 8} bytes")
        gen = TrafficGenerator(tap)
        tap.iface.generator = gen
        return gen

    def bridge(self, host_ifname: str, name: str) -> None:
        iface = self.add(name, (lib.DLT_EN10MB,), 65535, None)
        rc = lib.bsdbpf_sim_bridge_start(iface.taps[0].c, host_ifname.encode())
        if rc < 0:
            self.remove(iface)
            cls, hint = BRIDGE_ERRORS.get(-rc, (None, None))
            raise from_errno(-rc, "bridge", ifname=host_ifname, cls=cls, hint=hint)
        iface.bridged = True
