"""One line per packet, as ``tcpdump -n`` prints it, and ``-x``/``-X`` hex dumps.

Only the common protocols are decoded (Ethernet, 802.1Q, ARP, IPv4, IPv6,
TCP, UDP, ICMP, ICMPv6, on ``DLT_EN10MB``, ``DLT_NULL``, ``DLT_LOOP`` and
``DLT_RAW``); anything else is named by its number, as tcpdump does for what
it does not know.  Names are never resolved: addresses and ports stay numbers.
"""

from __future__ import annotations

import socket
import struct
import sys

from bsdbpf._native import lib

__all__ = ["describe", "hex_dump", "link_header_length"]

ETH_IP, ETH_ARP, ETH_IP6, ETH_VLAN = 0x0800, 0x0806, 0x86DD, 0x8100
ETHERTYPE_NAMES = {ETH_IP: "IPv4", ETH_ARP: "ARP", ETH_IP6: "IPv6", ETH_VLAN: "802.1Q",
                   0x88CC: "LLDP", 0x8035: "RARP", 0x88A8: "802.1Q-QinQ"}
IP_PROTO_NAMES = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP",
                  58: "ICMP6", 112: "VRRP", 132: "SCTP"}
ICMP_TYPES = {0: "echo reply", 3: "unreachable", 5: "redirect", 8: "echo request",
              11: "time exceeded in-transit", 13: "time stamp request",
              14: "time stamp reply"}
ICMP6_TYPES = {1: "destination unreachable", 2: "packet too big", 3: "time exceeded in-transit",
               128: "echo request", 129: "echo reply", 133: "router solicitation",
               134: "router advertisement", 135: "neighbor solicitation",
               136: "neighbor advertisement"}
TCP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x20, "U"), (0x40, "E"),
             (0x80, "W"), (0x10, "."))
AF_INET6_VALUES = (10, 24, 28, 30)  # AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _ip4(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, b)


def _ip6(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, b)


def link_header_length(data: bytes, dlt: int) -> int:
    """Bytes of link-layer header at the start of a packet of link type ``dlt``."""
    if dlt == lib.DLT_EN10MB:
        return 18 if len(data) >= 14 and data[12:14] == b"\x81\x00" else 14
    if dlt in (lib.DLT_NULL, lib.DLT_LOOP):
        return 4
    return 0


def describe(data: bytes, dlt: int, wirelen: int, verbose: int = 0) -> str:
    """The text tcpdump ``-n`` prints after the timestamp for this packet."""
    try:
        if dlt == lib.DLT_EN10MB:
            return _ether(data, wirelen, verbose)
        if dlt in (lib.DLT_NULL, lib.DLT_LOOP):
            return _null(data, dlt, wirelen, verbose)
        if dlt == lib.DLT_RAW:
            return _raw_ip(data, wirelen, verbose)
    except (struct.error, IndexError, ValueError):
        return f"[|truncated], length {wirelen}"
    return f"link-type {dlt}, length {wirelen}"


def _ether(data: bytes, wirelen: int, verbose: int) -> str:
    if len(data) < 14:
        return f"[|ether], length {wirelen}"
    dst, src, kind = data[0:6], data[6:12], struct.unpack_from("!H", data, 12)[0]
    offset = 14
    vlan = ""
    if kind == ETH_VLAN and len(data) >= 18:
        tci, kind = struct.unpack_from("!HH", data, 14)
        vlan, offset = f"vlan {tci & 0xFFF}, p {tci >> 13}, ", 18
    payload = data[offset:]
    if kind == ETH_IP:
        return vlan + _ipv4(payload, verbose)
    if kind == ETH_IP6:
        return vlan + _ipv6(payload, verbose)
    if kind == ETH_ARP:
        return vlan + _arp(payload, wirelen - offset)
    head = f"{_mac(src)} > {_mac(dst)}, "
    if kind < 0x0600:
        return f"{head}802.3, length {wirelen}"
    name = ETHERTYPE_NAMES.get(kind, "Unknown")
    return f"{head}{vlan}ethertype {name} (0x{kind:04x}), length {wirelen}"


def _null(data: bytes, dlt: int, wirelen: int, verbose: int) -> str:
    if len(data) < 4:
        return f"[|null], length {wirelen}"
    order = "big" if dlt == lib.DLT_LOOP else sys.byteorder
    family = int.from_bytes(data[:4], order)
    if family == 2:
        return _ipv4(data[4:], verbose)
    if family in AF_INET6_VALUES:
        return _ipv6(data[4:], verbose)
    return f"AF {family}, length {wirelen}"


def _raw_ip(data: bytes, wirelen: int, verbose: int) -> str:
    version = data[0] >> 4 if data else 0
    if version == 4:
        return _ipv4(data, verbose)
    if version == 6:
        return _ipv6(data, verbose)
    return f"IP{version}, length {wirelen}"


def _arp(p: bytes, length: int) -> str:
    if len(p) < 28:
        return f"ARP, [|arp], length {length}"
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", p)
    if (htype, ptype, hlen, plen) != (1, ETH_IP, 6, 4):
        return f"ARP, hardware {htype}, protocol 0x{ptype:04x}, length {length}"
    sha, spa, tpa = p[8:14], _ip4(p[14:18]), _ip4(p[24:28])
    if op == 1:
        return f"ARP, Request who-has {tpa} tell {spa}, length {length}"
    if op == 2:
        return f"ARP, Reply {spa} is-at {_mac(sha)}, length {length}"
    return f"ARP, op {op}, length {length}"


def _ipv4(p: bytes, verbose: int) -> str:
    if len(p) < 20 or p[0] >> 4 != 4:
        return "IP [|ip]"
    ihl = (p[0] & 0x0F) * 4
    tos, total, ident, frag, ttl, proto = struct.unpack_from("!xBHHHBB", p)
    src, dst = _ip4(p[12:16]), _ip4(p[16:20])
    offset = (frag & 0x1FFF) * 8
    body = p[ihl:total] if total >= ihl else b""
    length = max(total - ihl, 0)
    prefix = "IP "
    if verbose:
        flags = "+" if frag & 0x2000 else ("DF" if frag & 0x4000 else "none")
        name = IP_PROTO_NAMES.get(proto, "unknown")
        prefix = (f"IP (tos 0x{tos:x}, ttl {ttl}, id {ident}, offset {offset}, flags [{flags}], "
                  f"proto {name} ({proto}), length {total})\n    ")
    if offset:  # not the first fragment: no transport header
        return f"{prefix}{src} > {dst}: ip-proto-{proto}"
    return prefix + _transport(proto, src, dst, body, length, icmp6=False)


def _ipv6(p: bytes, verbose: int) -> str:
    if len(p) < 40 or p[0] >> 4 != 6:
        return "IP6 [|ip6]"
    plen, nxt, hlim = struct.unpack_from("!HBB", p, 4)
    src, dst = _ip6(p[8:24]), _ip6(p[24:40])
    prefix = "IP6 "
    if verbose:
        flow = struct.unpack_from("!I", p)[0] & 0xFFFFF
        name = IP_PROTO_NAMES.get(nxt, "unknown")
        prefix = (f"IP6 (flowlabel 0x{flow:05x}, hlim {hlim}, next-header {name} ({nxt}) "
                  f"payload length: {plen})\n    ")
    return prefix + _transport(nxt, src, dst, p[40:40 + plen], plen, icmp6=True)


def _transport(proto: int, src: str, dst: str, body: bytes, length: int, *,
               icmp6: bool) -> str:
    if proto == 17:
        if len(body) < 8:
            return f"{src} > {dst}: [|udp]"
        sport, dport, ulen = struct.unpack_from("!HHH", body)
        return f"{src}.{sport} > {dst}.{dport}: UDP, length {max(ulen - 8, 0)}"
    if proto == 6:
        return _tcp(src, dst, body, length)
    if proto == 1 and not icmp6:
        return f"{src} > {dst}: " + _icmp(body, length)
    if proto == 58 and icmp6:
        return f"{src} > {dst}: " + _icmp6(body, length)
    return f"{src} > {dst}: ip-proto-{proto} {length}"


def _tcp(src: str, dst: str, t: bytes, length: int) -> str:
    if len(t) < 20:
        return f"{src} > {dst}: [|tcp]"
    sport, dport, seq, ack, off, flags, win = struct.unpack_from("!HHIIBBH", t)
    data = max(length - (off >> 4) * 4, 0)
    names = "".join(ch for bit, ch in TCP_FLAGS if flags & bit) or "none"
    parts = [f"Flags [{names}]"]
    if data:
        parts.append(f"seq {seq}:{(seq + data) & 0xFFFFFFFF}")
    elif flags & 0x07:  # SYN, FIN, RST
        parts.append(f"seq {seq}")
    if flags & 0x10:
        parts.append(f"ack {ack}")
    parts += [f"win {win}", f"length {data}"]
    return f"{src}.{sport} > {dst}.{dport}: " + ", ".join(parts)


def _icmp(b: bytes, length: int) -> str:
    if len(b) < 4:
        return "ICMP [|icmp]"
    kind = b[0]
    if kind in (0, 8) and len(b) >= 8:
        ident, seq = struct.unpack_from("!HH", b, 4)
        return f"ICMP {ICMP_TYPES[kind]}, id {ident}, seq {seq}, length {length}"
    if kind == 3:
        return f"ICMP unreachable, code {b[1]}, length {length}"
    name = ICMP_TYPES.get(kind, f"type-#{kind}")
    return f"ICMP {name}, length {length}"


def _icmp6(b: bytes, length: int) -> str:
    if len(b) < 4:
        return "ICMP6 [|icmp6]"
    kind = b[0]
    name = ICMP6_TYPES.get(kind, f"type-#{kind}")
    if kind in (128, 129) and len(b) >= 8:
        ident, seq = struct.unpack_from("!HH", b, 4)
        return f"ICMP6, {name}, id {ident}, seq {seq}, length {length}"
    return f"ICMP6, {name}, length {length}"


def hex_dump(data: bytes, ascii_too: bool) -> list[str]:
    """The lines tcpdump ``-x`` (``ascii_too``: ``-X``) prints under a packet."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        pairs = "".join(f" {chunk[i:i + 2].hex()}" for i in range(0, len(chunk), 2))
        if ascii_too:
            text = "".join(chr(c) if 0x21 <= c < 0x7F else "." for c in chunk)
            pairs = f"{pairs:<40}  {text}"  # 8 groups of 5 characters, then the text
        lines.append(f"\t0x{off:04x}: {pairs}")
    return lines
