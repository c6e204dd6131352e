"""Where the command runs: FreeBSD's kernel or the simulated one.

:func:`make_host` is called once, by :func:`bsdbpf.cli.main`; the commands
ask the :class:`Host` it returns, never the system, what kind of kernel is
underneath.  A simulated host also brings traffic (the simulated interfaces
are otherwise silent) and lets ``--zerocopy on`` and ``-Z`` act on the
simulated kernel as they would on FreeBSD.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from bsdbpf import sysctl
from bsdbpf._native import lib
from bsdbpf.netif import Interface, interfaces
from bsdbpf.system import System

if TYPE_CHECKING:  # the simulator is imported only where one is running
    from bsdbpf.sim import Kernel, TrafficGenerator

__all__ = ["Host", "SimulatedHost", "make_host", "sample_frames"]

SIM_NOTE = "simulated FreeBSD kernel (not FreeBSD)"
SIM_RATE = 1000  # frames per second the simulated traffic offers
SIM_TICK = 0.01  # seconds between bursts of simulated frames
UNTIL_STOPPED = 1 << 62  # a generator's frame count that no run reaches


class Host:
    """FreeBSD itself: nothing to simulate."""

    simulated = False
    note = ""  #: said on standard error before a command's own output

    def __init__(self, system: System) -> None:
        self.system = system

    def interfaces(self, link_types: bool = True) -> list[Interface]:
        """The interfaces, as :func:`bsdbpf.interfaces` lists them."""
        return interfaces(self.system, link_types=link_types)

    def default_interface(self) -> str | None:
        """The first interface that is up and not a loopback (as tcpdump picks),
        else the first one; None if there is none."""
        found = self.interfaces(link_types=False)  # no descriptor attaches anywhere
        for iface in found:
            if iface.up is not False and not iface.name.startswith("lo"):
                return iface.name
        return found[0].name if found else None

    def start_traffic(self, ifname: str, dlt: int) -> Traffic | None:
        """Traffic for a capture on ``ifname``; a real interface has its own."""
        return None

    def start_generator(self, ifname: str, size: int, rate: int) -> TrafficGenerator | None:
        """Frames of ``size`` bytes at ``rate`` per second (0: flat out) for
        ``bench`` on ``ifname``, until stopped; a real interface has its own."""
        return None

    def allow_zerocopy(self) -> bool:
        """Make ``--zerocopy on`` possible; True if a setting was changed for it.
        On FreeBSD that is the administrator's decision (``net.bpf.zerocopy_enable``)."""
        return False

    def privileges_dropped(self) -> None:
        """Called after the process changed its user id."""


class Traffic:
    """Frames offered to a simulated interface by a thread, until :meth:`stop`."""

    def __init__(self, kernel: Kernel, ifname: str, dlt: int, rate: int) -> None:
        self._kernel, self._ifname = kernel, ifname
        self._frames = list(sample_frames(dlt))
        self._rate = rate
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bsdbpf-sim-traffic",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start, sent, per_tick = time.monotonic(), 0, max(1, round(self._rate * SIM_TICK))
        while not self._done.is_set():
            due = int((time.monotonic() - start) * self._rate)
            for _ in range(min(due - sent, per_tick * 4)):  # catch up, in bounded bursts
                if self._done.is_set():
                    return  # stop() waits for one frame at most
                frame = self._frames[sent % len(self._frames)]
                try:
                    self._kernel.inject(self._ifname, frame)
                except Exception:  # the interface went away: nothing left to feed
                    return
                sent += 1
            self._done.wait(SIM_TICK)

    def stop(self) -> None:
        """Stop offering frames; returns once the thread has ended."""
        self._done.set()
        self._thread.join()


class SimulatedHost(Host):
    """A simulated FreeBSD kernel (:class:`bsdbpf.sim.Kernel`) in this process."""

    simulated = True
    note = SIM_NOTE

    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel)
        self.kernel = kernel

    def start_traffic(self, ifname: str, dlt: int) -> Traffic | None:
        return Traffic(self.kernel, ifname, dlt, SIM_RATE)

    def start_generator(self, ifname: str, size: int, rate: int) -> TrafficGenerator | None:
        return self.kernel.generate(ifname, UNTIL_STOPPED, size, rate)

    def allow_zerocopy(self) -> bool:
        # A fresh simulated kernel has FreeBSD's default, 0, and nothing else
        # could change it: do what the administrator would have done.
        if sysctl.get(sysctl.ZEROCOPY_ENABLE, system=self.kernel):
            return False
        sysctl.set(sysctl.ZEROCOPY_ENABLE, 1, system=self.kernel)
        return True

    def privileges_dropped(self) -> None:
        self.kernel.uid = os.geteuid()  # the simulated kernel checks its caller's uid


def make_host(system: System) -> Host:
    """The :class:`Host` for ``system``: simulated if it is a simulated kernel
    (the one kind of system that can generate traffic)."""
    if callable(getattr(system, "generate", None)):
        return SimulatedHost(cast("Kernel", system))
    return Host(system)


# -- sample traffic ----------------------------------------------------------------

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
IP_A, IP_B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
IP6_A = bytes.fromhex("fd000000000000000000000000000001")
IP6_B = bytes.fromhex("fd000000000000000000000000000002")
ETH_IP, ETH_ARP, ETH_IP6 = 0x0800, 0x0806, 0x86DD
AF_INET, AF_INET6_BSD = 2, 28  # FreeBSD's AF_INET6 in a DLT_NULL header


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto,
                       0, src, dst)
    return head[:10] + struct.pack("!H", _checksum(head)) + head[12:] + payload


def _ipv6(src: bytes, dst: bytes, nxt: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nxt, 64, src, dst) + payload


def _udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def _tcp(ports: tuple[int, int], seq: int, ack: int, flags: int, data: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", *ports, seq, ack, 5 << 4, flags, 65535, 0, 0) + data


def _icmp_echo(kind: int, ident: int, seq: int, data: bytes) -> bytes:
    body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


def _arp_request(sha: bytes, spa: bytes, tpa: bytes) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_IP, 6, 4, 1, sha, spa, bytes(6), tpa)


def sample_frames(dlt: int) -> Iterator[bytes]:
    """A short cycle of ordinary traffic between two hosts, framed for ``dlt``:
    DNS over UDP, a TCP exchange, ping, ARP and IPv6 (half the frames are UDP)."""
    dns_query = bytes.fromhex("12340100000100000000000007" "6578616d706c65" "0000010001")
    ip_packets = [
        (4, _ipv4(IP_A, IP_B, 17, _udp(40000, 53, dns_query), 1)),
        (4, _ipv4(IP_B, IP_A, 6, _tcp((22, 50000), 1000, 2000, 0x18, b"SSH-2.0-OpenSSH\r\n"), 2)),
        (4, _ipv4(IP_A, IP_B, 17, _udp(123, 123, bytes(48)), 3)),
        (4, _ipv4(IP_A, IP_B, 1, _icmp_echo(8, 7, 1, bytes(range(56))), 4)),
        (6, _ipv6(IP6_A, IP6_B, 17, _udp(5353, 5353, dns_query))),
        (4, _ipv4(IP_B, IP_A, 1, _icmp_echo(0, 7, 1, bytes(range(56))), 5)),
        (4, _ipv4(IP_A, IP_B, 17, _udp(514, 514, b"<13>bsdbpf: hello"), 6)),
        (4, _ipv4(IP_A, IP_B, 6, _tcp((50000, 22), 2000, 1017, 0x10, b""), 7)),
    ]
    for version, packet in ip_packets:
        if dlt == lib.DLT_EN10MB:
            kind = ETH_IP if version == 4 else ETH_IP6
            frame = MAC_B + MAC_A + struct.pack("!H", kind) + packet
            yield frame + bytes(max(0, 60 - len(frame)))  # Ethernet's minimum frame
        elif dlt in (lib.DLT_NULL, lib.DLT_LOOP):
            family = AF_INET if version == 4 else AF_INET6_BSD
            order = "big" if dlt == lib.DLT_LOOP else sys.byteorder
            yield family.to_bytes(4, order) + packet
        else:
            yield packet
    if dlt == lib.DLT_EN10MB:
        yield b"\xff" * 6 + MAC_A + struct.pack("!H", ETH_ARP) + _arp_request(
            MAC_A, IP_A, IP_B) + bytes(18)
