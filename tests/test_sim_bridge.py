"""The simulator's AF_PACKET bridge: real traffic on a Linux interface, captured through bsdbpf.

Traffic stays on this machine: the loopback interface, bridged into a fresh
simulated kernel as an Ethernet interface.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import textwrap

import pytest

from bsdbpf import Descriptor, InterfaceNotFound
from bsdbpf.sim import Kernel

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="AF_PACKET is Linux's"),
    pytest.mark.skipif(os.geteuid() != 0, reason="an AF_PACKET socket needs CAP_NET_RAW"),
]

ETHERTYPE_IPV4 = 0x0800
ETH_P_ALL = 0x0003


@pytest.fixture
def kernel() -> Kernel:
    with Kernel() as k:
        k.bridge("lo", name="lo0")
        yield k


def udp_frame(payload: bytes, port: int) -> bytes:
    """An Ethernet frame carrying one UDP datagram 127.0.0.1 -> 127.0.0.1:port."""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                               socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1")))
    words = sum(struct.unpack("!10H", ip))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    struct.pack_into("!H", ip, 10, ~words & 0xFFFF)
    return bytes(6) + bytes(6) + struct.pack("!H", ETHERTYPE_IPV4) + bytes(ip) + udp


def udp_payload(frame: memoryview | bytes) -> tuple[int, bytes] | None:
    """(destination port, payload) of an IPv4/UDP Ethernet frame, else None."""
    if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != ETHERTYPE_IPV4:
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[23] != 17:
        return None
    dport, length = struct.unpack_from("!HH", frame, 14 + ihl + 2)
    start = 14 + ihl + 8
    return dport, bytes(frame[start:start + length - 8])


def test_bridge_captures_real_loopback_traffic(kernel: Kernel) -> None:
    marker = os.urandom(16)
    with Descriptor.open("lo0", immediate=True, system=kernel) as d, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        tx.sendto(marker, ("127.0.0.1", port))
        assert rx.recv(100) == marker
        seen = [udp_payload(p.data) for p in d.packets(count=50, timeout=2)]
        assert (port, marker) in seen
        assert d.stats().recv >= 1


def test_frames_written_to_the_bridge_are_sent_on_the_host_interface(kernel: Kernel) -> None:
    # Linux drops a 127.0.0.1 datagram that arrives from a packet socket
    # (a martian destination), so a raw observer on lo checks the frame left.
    marker = os.urandom(16)
    frame = udp_frame(marker, 9)
    with Descriptor.open("lo0", system=kernel) as d, \
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as obs:
        obs.bind(("lo", ETH_P_ALL))
        obs.settimeout(5)
        d.header_complete = True  # keep the all-zero source address lo uses
        assert d.write(frame) == len(frame)
        while (got := obs.recv(65536)) != frame:
            assert marker not in got, "the frame was changed on the way out"


def test_unknown_host_interface() -> None:
    with Kernel() as k, pytest.raises(InterfaceNotFound, match="ip link"):
        k.bridge("no-such-if0")
    assert "no-such-if0" not in k.interfaces()


def test_without_cap_net_raw_the_error_says_what_is_needed() -> None:
    # A child process without CAP_NET_RAW (dropped from its bounding set, so
    # root's exec does not regain it): the host refuses the AF_PACKET socket.
    code = textwrap.dedent("""
        from bsdbpf import PermissionDenied
        from bsdbpf.sim import Kernel
        with Kernel() as k:
            try:
                k.bridge("lo")
            except PermissionDenied as err:
                print(err.errno, err.op, "|", err)
                print("interfaces:", k.interfaces())
    """)
    out = subprocess.run(["setpriv", "--bounding-set", "-net_raw", sys.executable, "-c", code],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert "1 bridge |" in out  # EPERM, operation "bridge"
    assert "CAP_NET_RAW" in out
    assert "interfaces: []" in out  # nothing half-made is left behind
