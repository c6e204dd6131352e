"""bsdbpf.filter against libpcap and tcpdump: compile(), the -d/-dd/-ddd text,
a differential test of the interpreter against libpcap's bpf_filter, and
compiled expressions selecting crafted frames on a simulated descriptor.

libpcap is part of FreeBSD's base system; on Debian/Ubuntu it is the
libpcap0.8 package and tcpdump the tcpdump package.  Tests that need them
skip, saying which package, when they are missing.
"""

from __future__ import annotations

import errno
import random
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import sim_kernel

from bsdbpf import Descriptor, FilterError, UnsupportedError, _libpcap, raw
from bsdbpf._native import lib
from bsdbpf.filter import DEFAULT_SNAPLEN, Instruction, Program, compile
from bsdbpf.sim import Kernel

M32 = 0xFFFFFFFF


@pytest.fixture(scope="module")
def pcap() -> Any:
    try:
        return _libpcap.library()
    except UnsupportedError:
        pytest.skip("libpcap is not installed (Debian/Ubuntu: the libpcap0.8 package; "
                    "FreeBSD: base system)")


@pytest.fixture(scope="module")
def tcpdump() -> str:
    path = shutil.which("tcpdump")
    if path is None:
        pytest.skip("tcpdump is not installed (Debian/Ubuntu: the tcpdump package; "
                    "FreeBSD: base system)")
    return path


def offline_filter(pcap: Any, program: Program, packet: bytes, wirelen: int) -> int:
    """libpcap's own bpf_filter() on a contiguous buffer (pcap_offline_filter)."""
    ffi = _libpcap.ffi
    insns = ffi.new("struct bpf_insn[]", [tuple(i) for i in program])
    prog = ffi.new("struct bpf_program *", (len(program), insns))
    header = ffi.new("struct pcap_pkthdr *")
    header.caplen, header.len = len(packet), wirelen
    return int(pcap.pcap_offline_filter(prog, header, packet)) & M32


# --------------------------------------------------------------------------
# Text: Instruction.image is libpcap's bpf_image; compile is tcpdump's -d
# --------------------------------------------------------------------------

def test_image_is_bpf_image_for_every_code(pcap: Any) -> None:
    rng = random.Random(11)
    ffi = _libpcap.ffi
    ins = ffi.new("struct bpf_insn *")
    for code in range(0x10000):
        k = rng.choice([0, 1, 15, 0x7FFFFFFF, 0x80000000, M32, rng.getrandbits(32)])
        jt, jf, n = rng.getrandbits(8), rng.getrandbits(8), rng.randrange(2000)
        ins.code, ins.jt, ins.jf, ins.k = code, jt, jf, k
        want = ffi.string(pcap.bpf_image(ins, n)).decode()
        assert Instruction(code, jt, jf, k).image(n) == want


EXPRESSIONS = [
    "tcp port 80",
    "udp and dst port 53",
    "ip and len > 100",
    "tcp[tcpflags] & tcp-syn != 0 or ip6 and ip6[6] = 17",
    "icmp[icmptype] = icmp-echo or arp",
    "vlan 100 and udp",
    "ip[6:2] & 0x3fff != 0",
    "ether broadcast or ether multicast",
    "ip[2:2] - 3 > 100 and tcp[1] % 3 = 1 and ip[4] ^ 7 = 2 and ip[0] & 0xf0 >> 4 = 4",
    "ip6 protochain 6",
    "net 10.0.0.0/8 and not host 10.1.2.3",
    "greater 1000 or less 64",
    "portrange 6000-6010",
    "",
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_compile_prints_what_tcpdump_prints(pcap: Any, tcpdump: str, expression: str) -> None:
    program = compile(expression)
    for level in (1, 2, 3):
        want = subprocess.run([tcpdump, "-" + "d" * level, "-y", "EN10MB", expression],
                              capture_output=True, text=True, check=True).stdout
        assert program.dump(level) == want
        assert Program.parse(want) == program


@pytest.mark.parametrize("case", [
    (lib.DLT_NULL, "NULL", "ip and udp port 53", DEFAULT_SNAPLEN, True),
    (lib.DLT_RAW, "RAW", "tcp port 80", 96, True),
    (lib.DLT_EN10MB, "EN10MB", "tcp port 80 or udp port 53", 1500, False),
])
def test_compile_link_type_snaplen_optimize(pcap: Any, tcpdump: str, case: tuple[Any, ...]) -> None:
    dlt, name, expression, snaplen, optimize = case
    program = compile(expression, dlt=dlt, snaplen=snaplen, optimize=optimize)
    args = [tcpdump, "-d", "-y", name, "-s", str(snaplen)] + ([] if optimize else ["-O"])
    want = subprocess.run([*args, expression], capture_output=True, text=True,
                          check=True).stdout
    assert program.dump(1) == want
    assert program[-2] == (lib.BPF_RET | lib.BPF_K, 0, 0, snaplen)


def test_compile_result_is_valid_and_runs(pcap: Any) -> None:
    program = compile("udp and dst port 53")
    assert isinstance(program, Program)
    assert program.run(frames()["udp53"]) == DEFAULT_SNAPLEN
    assert program.run(frames()["tcp80"]) == 0


def test_compile_error_is_libpcaps_message(pcap: Any) -> None:
    with pytest.raises(FilterError, match="can't parse filter expression: syntax error") as info:
        compile("tcp prot 80")
    assert (info.value.errno, info.value.op) == (errno.EINVAL, "pcap_compile")
    assert "'tcp prot 80'" in str(info.value)
    with pytest.raises(FilterError, match="netmask not known"):
        compile("ip broadcast")
    assert len(compile("ip broadcast", netmask=0xFFFFFF00)) > 2
    with pytest.raises(TypeError, match="must be a str"):
        compile(b"tcp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="snaplen=-1"):
        compile("tcp", snaplen=-1)
    with pytest.raises(FilterError, match="ASCII"):
        compile("host \udcff")
    with pytest.raises(FilterError, match="contains a NUL character"):
        compile("tcp\0 and no such words")  # not "tcp", as C would read it


def test_missing_libpcap_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_libpcap, "SONAMES", ("libpcap-absent.so.99",))
    monkeypatch.setattr(_libpcap, "_loaded", [])
    with pytest.raises(UnsupportedError) as info:
        compile("tcp port 80")
    message = str(info.value)
    assert "libpcap0.8" in message
    assert "FreeBSD's base system" in message
    assert "libpcap-absent.so.99" in message


# --------------------------------------------------------------------------
# Differential: Program.run (write path: contiguous) against libpcap
# --------------------------------------------------------------------------

LOADS = [0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0xB1]
ALU_K = [0x04, 0x14, 0x24, 0x34, 0x44, 0x54, 0x64, 0x74, 0x94, 0xA4]
ALU_X = [0x0C, 0x1C, 0x2C, 0x3C, 0x4C, 0x5C, 0x9C, 0xAC]
SHIFT_X = [0x6C, 0x7C]
OTHERS = [0x00, 0x01, 0x80, 0x81, 0x02, 0x03, 0x60, 0x61, 0x84, 0x07, 0x87]
COND = [0x15, 0x25, 0x35, 0x45, 0x1D, 0x2D, 0x3D, 0x4D]
SIMPLE = LOADS * 3 + ALU_K + ALU_X + OTHERS


def random_k(rng: random.Random, code: int, size: int) -> int:
    """k for a non-jump: loads mostly just inside or past the packet, scratch
    indexes 0..15, no constant divisor 0, shift counts below 32 (libpcap's
    own choice for larger counts differs from FreeBSD's, see below)."""
    if code in LOADS or code == 0x01:
        pick = rng.random()
        if pick < 0.85:
            return rng.randrange(size + 6)
        return rng.choice([M32, M32 - 1, 0x80000000, 0xFFFFFFF0, rng.getrandbits(32)])
    if code in (0x02, 0x03, 0x60, 0x61):
        return rng.randrange(16)
    if code in (0x64, 0x74):
        return rng.randrange(32)
    if code in (0x34, 0x94):
        return rng.choice([1, 2, 3, 7, 255, rng.getrandbits(32) | 1])
    return rng.choice([0, 1, 2, 4, 0xFF, 0x800, rng.randrange(64), rng.getrandbits(32)])


def random_program(rng: random.Random, size: int) -> Program:
    """A valid program of blocks; jumps land only on block starts, so an
    `ldx #n; lsh x` pair always shifts by n < 32.  Scratch words that are read
    are stored first: libpcap leaves its scratch memory uninitialised."""
    blocks: list[list[tuple[Any, ...]]] = []
    count = rng.randrange(1, 14)
    for b in range(count):
        pick = rng.random()
        if pick < 0.55:
            code = rng.choice(SIMPLE)
            blocks.append([(code, 0, 0, random_k(rng, code, size))])
        elif pick < 0.62:
            blocks.append([(0x01, 0, 0, rng.randrange(32)), (rng.choice(SHIFT_X), 0, 0, 0)])
        elif pick < 0.85:
            t, f = rng.randrange(b + 1, count + 1), rng.randrange(b + 1, count + 1)
            k = rng.choice([0, 1, 6, 0x800, rng.randrange(256), rng.getrandbits(32)])
            blocks.append([("cond", rng.choice(COND), t, f, k)])
        elif pick < 0.92:
            blocks.append([("ja", rng.randrange(b + 1, count + 1))])
        else:
            blocks.append([(0x16, 0, 0, 0)] if rng.random() < 0.5
                          else [(0x06, 0, 0, rng.getrandbits(32))])
    last = (0x16, 0, 0, 0) if rng.random() < 0.7 else (0x06, 0, 0, rng.randrange(1, 2000))
    blocks.append([last])
    starts = []
    at = 0
    for block in blocks:
        starts.append(at)
        at += len(block)
    body = []
    for block in blocks:
        for spec in block:
            here = len(body)
            if spec[0] == "cond":
                _, code, t, f, k = spec
                body.append((code, starts[t] - here - 1, starts[f] - here - 1, k))
            elif spec[0] == "ja":
                body.append((0x05, 0, 0, starts[spec[1]] - here - 1))
            else:
                body.append(spec)
    read = sorted({k for code, _, _, k in body if code in (0x60, 0x61)})
    prologue = []
    for word in read:
        prologue += [(0x00, 0, 0, rng.getrandbits(32)), (0x02, 0, 0, word)]
    if prologue:
        prologue.append((0x00, 0, 0, 0))
    return Program(prologue + body)


def test_differential_against_libpcap(pcap: Any) -> None:
    rng = random.Random(20261130)
    programs = runs = accepted = 0
    results = set()
    while programs < 10_000:
        size = rng.randrange(0, 72)
        program = random_program(rng, size)
        programs += 1
        for _ in range(3):
            packet = rng.randbytes(size)
            wirelen = rng.choice([size, size, size + rng.randrange(2000), rng.randrange(size + 1)])
            got = program.run(packet, wirelen, path="write")
            want = offline_filter(pcap, program, packet, wirelen)
            assert got == want, (program.dump(1), packet.hex(), wirelen)
            runs += 1
            accepted += got != 0
            results.add(got)
    # The programs do work: most are not dropped at their first load.
    assert runs == 30_000
    assert accepted > runs // 4
    assert len(results) > 1000


def test_where_libpcap_differs_shift_by_x_of_32_or_more(pcap: Any) -> None:
    # FreeBSD's interpreter shifts by X with C's <<, which amd64 (and the
    # simulator) take modulo 32; libpcap's userland bpf_filter gives 0.
    program = Program([(0x00, 0, 0, 0xDEADBEEF), (0x01, 0, 0, 33), (0x6C, 0, 0, 0),
                       (0x16, 0, 0, 0)])
    assert program.run(b"", path="write") == (0xDEADBEEF << 1) & M32
    assert offline_filter(pcap, program, b"", 0) == 0


# --------------------------------------------------------------------------
# Expressions on a simulated descriptor select exactly the right frames
# --------------------------------------------------------------------------

MAC_A, MAC_B, BROADCAST = bytes.fromhex("020000000001"), bytes.fromhex("020000000002"), b"\xff" * 6


def ether(ethertype: int, payload: bytes, dst: bytes = MAC_B, vlan: int | None = None) -> bytes:
    tag = b"" if vlan is None else struct.pack(">HH", 0x8100, vlan)
    frame = dst + MAC_A + tag + struct.pack(">H", ethertype) + payload
    return frame.ljust(60, b"\x00")  # Ethernet's minimum, without the FCS


def ipv4(proto: int, payload: bytes, src: str = "10.0.0.1", dst: str = "10.0.0.2",
         fragment: int = 0) -> bytes:
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, fragment, 64, proto,
                         0, socket.inet_aton(src), socket.inet_aton(dst))
    return header + payload


def ipv6(next_header: int, payload: bytes) -> bytes:
    return struct.pack(">IHBB16s16s", 0x60000000, len(payload), next_header, 64,
                       socket.inet_pton(socket.AF_INET6, "fd00::1"),
                       socket.inet_pton(socket.AF_INET6, "fd00::2")) + payload


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0)


def udp(sport: int, dport: int, data: bytes = b"") -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data


def icmp(kind: int) -> bytes:
    return struct.pack(">BBHI", kind, 0, 0, 0x12340001)


def frames() -> dict[str, bytes]:
    arp = struct.pack(">HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC_A, socket.inet_aton("10.0.0.1"),
                      b"\x00" * 6, socket.inet_aton("10.0.0.2"))
    return {
        "tcp80": ether(0x0800, ipv4(6, tcp(1234, 80))),
        "tcp443": ether(0x0800, ipv4(6, tcp(5555, 443))),
        "udp53": ether(0x0800, ipv4(17, udp(5353, 53), dst="10.0.0.53")),
        "udp53_reply": ether(0x0800, ipv4(17, udp(53, 5353), src="10.0.0.53", dst="10.0.0.1")),
        "icmp_echo": ether(0x0800, ipv4(1, icmp(8))),
        "icmp_reply": ether(0x0800, ipv4(1, icmp(0))),
        "arp": ether(0x0806, arp, dst=BROADCAST),
        "ip6_tcp80": ether(0x86DD, ipv6(6, tcp(1234, 80))),
        "ip6_udp53": ether(0x86DD, ipv6(17, udp(5353, 53))),
        "ip6_icmp": ether(0x86DD, ipv6(58, icmp(128))),
        "vlan100_udp53": ether(0x0800, ipv4(17, udp(5353, 53)), vlan=100),
        "vlan200_udp53": ether(0x0800, ipv4(17, udp(5353, 53)), vlan=200),
        # A datagram to port 53 in two fragments: MF set; then offset 185*8.
        "frag_first": ether(0x0800, ipv4(17, udp(5353, 53, b"q" * 32), fragment=0x2000)),
        "frag_later": ether(0x0800, ipv4(17, b"\x00\x35" * 16, fragment=185)),
        "broadcast": ether(0x0800, ipv4(17, udp(68, 67), src="0.0.0.0", dst="255.255.255.255"),
                           dst=BROADCAST),
        "big": ether(0x0800, ipv4(17, udp(9999, 9999, bytes(1000)))),
    }


IPV4 = {"tcp80", "tcp443", "udp53", "udp53_reply", "icmp_echo", "icmp_reply", "frag_first",
        "frag_later", "broadcast", "big"}
IPV6 = {"ip6_tcp80", "ip6_udp53", "ip6_icmp"}
SELECTIONS = [
    ("udp and dst port 53", {"udp53", "frag_first", "ip6_udp53"}),
    ("tcp port 80", {"tcp80", "ip6_tcp80"}),
    ("src port 53", {"udp53_reply"}),
    ("ip", IPV4),
    ("ip6", IPV6),
    ("ip6 and udp", {"ip6_udp53"}),
    ("host 10.0.0.53", {"udp53", "udp53_reply"}),
    ("tcp or icmp", {"tcp80", "tcp443", "icmp_echo", "icmp_reply", "ip6_tcp80"}),
    ("icmp[icmptype] = icmp-echo", {"icmp_echo"}),
    ("icmp6 and ip6[40] = 128", {"ip6_icmp"}),
    ("arp", {"arp"}),
    ("vlan", {"vlan100_udp53", "vlan200_udp53"}),
    ("vlan 100 and udp dst port 53", {"vlan100_udp53"}),
    ("not ip and not ip6", {"arp", "vlan100_udp53", "vlan200_udp53"}),
    ("ip[6:2] & 0x3fff != 0", {"frag_first", "frag_later"}),
    ("ip[6:2] & 0x1fff != 0", {"frag_later"}),
    ("ether broadcast", {"arp", "broadcast"}),
    ("ip dst host 255.255.255.255", {"broadcast"}),
    ("len > 500", {"big"}),
    ("greater 1000", {"big"}),
    ("len <= 60", {name for name, f in frames().items() if len(f) <= 60}),
]


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    with sim_kernel("em0", "lo0") as k:
        yield k


def test_the_crafted_set_is_what_it_claims() -> None:
    f = frames()
    assert len(f["big"]) > 1000
    assert 0 < len({n for n in f if len(f[n]) <= 60}) < len(f)
    assert f["frag_first"][14 + 6:14 + 8] == b"\x20\x00"


@pytest.mark.parametrize(("expression", "want"), SELECTIONS)
def test_expression_on_a_simulated_descriptor(pcap: Any, kernel: Kernel, expression: str,
                                              want: set[str]) -> None:
    crafted = frames()
    with Descriptor.open("em0", filter=expression, zerocopy=False, immediate=True,
                         buffer_size=1 << 16, system=kernel) as d:
        for frame in crafted.values():
            kernel.inject("em0", frame)
        got = [bytes(p.data) for p in d.packets(timeout=0)]
        assert d.stats().recv == len(crafted)
    assert got == [f for name, f in crafted.items() if name in want]
    # The same program's verdicts, on both of the kernel's paths and in libpcap.
    program = compile(expression)
    for name, frame in crafted.items():
        expected = DEFAULT_SNAPLEN if name in want else 0
        assert program.run(frame) == expected, name
        assert program.run(frame, path="write") == expected, name
        assert offline_filter(pcap, program, frame, len(frame)) == expected, name


def test_open_with_expression_and_snaplen(pcap: Any, kernel: Kernel) -> None:
    crafted = frames()
    with Descriptor.open("em0", filter="udp and dst port 53", snaplen=42, zerocopy=False,
                         immediate=True, system=kernel) as d:
        assert d.filter == compile("udp and dst port 53", snaplen=42)
        for frame in crafted.values():
            kernel.inject("em0", frame)
        got = [(bytes(p.data), p.wirelen) for p in d.packets(timeout=0)]
    assert got == [(crafted[n][:42], len(crafted[n])) for n in ("udp53", "ip6_udp53",
                                                               "frag_first")]


def test_expression_is_compiled_for_the_descriptors_link_type(pcap: Any,
                                                              kernel: Kernel) -> None:
    with Descriptor.open("lo0", filter="udp", zerocopy=False, system=kernel) as d:
        assert d.filter == compile("udp", dlt=lib.DLT_NULL)
        assert d.filter != compile("udp")
        d.set_filter("tcp", flush=False)
        assert d.filter == compile("tcp", dlt=lib.DLT_NULL)


def test_zero_copy_descriptor_with_expression(pcap: Any, kernel: Kernel) -> None:
    raw.sysctl_int(kernel, "net.bpf.zerocopy_enable", 1)
    crafted = frames()
    with Descriptor.open("em0", filter="udp and dst port 53", zerocopy=True, immediate=True,
                         buffer_size=1 << 16, system=kernel) as d:
        for frame in crafted.values():
            kernel.inject("em0", frame)
        got = [bytes(p.data) for p in d.packets(timeout=0)]
    assert got == [crafted[n] for n in ("udp53", "ip6_udp53", "frag_first")]


def test_write_filter_expression(pcap: Any, kernel: Kernel) -> None:
    crafted = frames()
    with Descriptor.open("em0", zerocopy=False, system=kernel) as d:
        d.write_filter = "arp"
        assert d.write_filter == compile("arp")
        assert d.write(crafted["arp"]) == len(crafted["arp"])
        with pytest.raises(PermissionError):
            d.write(crafted["tcp80"])


def test_bad_expression_on_a_descriptor(pcap: Any, kernel: Kernel) -> None:
    with Descriptor.open("em0", zerocopy=False, system=kernel) as d:
        with pytest.raises(FilterError, match="syntax error") as info:
            d.set_filter("tcp prot 80")
        assert (info.value.errno, info.value.op) == (errno.EINVAL, "BIOCSETF")
        assert d.filter is None
    with pytest.raises(FilterError, match="syntax error"):
        Descriptor.open("em0", filter="udp and", zerocopy=False, system=kernel)


# -- loopback headers carry FreeBSD's address family --------------------------------

FREEBSD_AF_INET6 = 28


def loopback(family: int, packet: bytes, dlt: int = lib.DLT_NULL) -> bytes:
    """A loopback packet: the family in host byte order (DLT_NULL) or network order (DLT_LOOP)."""
    order = "big" if dlt == lib.DLT_LOOP else sys.byteorder
    return family.to_bytes(4, order) + packet  # type: ignore[arg-type]


@pytest.mark.parametrize("dlt", [lib.DLT_NULL, lib.DLT_LOOP])
def test_loopback_ip6_is_freebsds_family(pcap: Any, dlt: int) -> None:
    """libpcap compiles the host's AF_INET6 (Linux 10, macOS 30); the program is for
    FreeBSD, whose loopback header says 28, on every path that tests it."""
    v6 = ipv6(6, tcp(1234, 80))
    v4 = ipv4(6, tcp(1234, 80))
    for expression in ("ip6", "tcp", "ip or ip6", "not ip6"):
        program = compile(expression, dlt=dlt)
        matches = {name: program.run(loopback(af, packet, dlt)) != 0 for name, af, packet in (
            ("freebsd6", FREEBSD_AF_INET6, v6), ("ip4", 2, v4), ("linux6", 10, v6))}
        negated = expression.startswith("not")
        assert matches["freebsd6"] is not negated, expression
        assert matches["linux6"] is negated, expression
        assert matches["ip4"] is (expression != "ip6"), expression


def test_a_payload_word_equal_to_the_hosts_family_is_left_alone(pcap: Any) -> None:
    host_word = int.from_bytes(socket.AF_INET6.to_bytes(4, sys.byteorder), "big")
    expression = f"ip and udp[8:4] = {host_word:#x}"
    program = compile(expression, dlt=lib.DLT_NULL)
    assert (lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K, host_word) in {(i.code, i.k) for i in program}
    payload = host_word.to_bytes(4, "big")
    assert program.run(loopback(2, ipv4(17, udp(1, 2, payload)))) == DEFAULT_SNAPLEN


def test_other_link_types_are_libpcaps_own(pcap: Any, tcpdump: str) -> None:
    for name, dlt in (("EN10MB", lib.DLT_EN10MB), ("RAW", lib.DLT_RAW)):
        want = subprocess.run([tcpdump, "-d", "-y", name, "ip6 or tcp"], capture_output=True,
                              text=True, check=True).stdout
        assert compile("ip6 or tcp", dlt=dlt).dump(1) == want


def test_ip6_on_the_simulated_loopback(pcap: Any, kernel: Kernel) -> None:
    v6 = loopback(FREEBSD_AF_INET6, ipv6(17, udp(5353, 5353)))
    v4 = loopback(2, ipv4(17, udp(5353, 5353)))
    with Descriptor.open("lo0", filter="ip6", zerocopy=False, system=kernel) as d:
        kernel.inject("lo0", v4)
        kernel.inject("lo0", v6)
        assert [bytes(p.data) for p in d.packets(timeout=0)] == [v6]


# Where each link type's header holds an address family, and how many bytes.
FAMILY_HEADERS = {lib.DLT_NULL: "host", lib.DLT_ENC: "host", lib.DLT_LOOP: "big",
                  lib.DLT_PFLOG: "byte"}
# Every expression whose family tests libpcap generates itself (no link[] of the
# user's: its constants are the user's), with and without the optimizer.
FAMILY_EXPRESSIONS = [
    "ip6", "tcp", "udp port 53", "ip6 or arp", "not ip", "not ip6", "ip or ip6", "icmp6",
    "host ::1", "ip6 and tcp", "tcp or udp", "ip6 and ip6[6] = 6", "ip6 multicast",
    "udp[8:4] = 0x0a000000", "ip6[40:4] = 0x0a000000", "ip[12:4] = 0x0a000000 or ip6",
    "ip6[6] = 6 and not ip", "(ip6 or ip) and len > 50", "proto 6", "ip6 proto 17",
    "tcp port 80 and ip6", "greater 50 and ip6", "ip6 and (udp or tcp[13] & 2 != 0)",
]


def family_packet(dlt: int, family: int, body: bytes) -> bytes:
    """``body`` behind ``dlt``'s header carrying ``family``: DLT_NULL and DLT_ENC
    (with its spi and flags words) in host byte order, DLT_LOOP in network order,
    pflog's ``af`` byte after the header's length byte."""
    if FAMILY_HEADERS[dlt] == "byte":
        return bytes([64, family]) + bytes(62) + body
    order = "big" if FAMILY_HEADERS[dlt] == "big" else sys.byteorder
    header = family.to_bytes(4, order)  # type: ignore[arg-type]
    return header + (bytes(8) if dlt == lib.DLT_ENC else b"") + body


@pytest.mark.parametrize("dlt", sorted(FAMILY_HEADERS))
def test_family_tests_differ_from_the_hosts_by_the_family_alone(pcap: Any, dlt: int) -> None:
    """Differential: compile(e) on a packet of family F does what libpcap's own
    program (the host's AF_INET6) does on the same packet with FreeBSD's 28 and
    the host's value exchanged in the header, for every family and payload,
    payload words equal to the host's value included."""
    swap = {FREEBSD_AF_INET6: socket.AF_INET6, socket.AF_INET6: FREEBSD_AF_INET6}
    rng = random.Random(dlt)
    bodies = [ipv4(6, tcp(1234, 80)), ipv4(17, udp(53, 53, b"\x0a\0\0\0" * 3)),
              ipv6(6, tcp(1234, 80)), ipv6(17, udp(5353, 53, b"\0\0\0\x0a" * 3)),
              ipv6(58, icmp(128)), b"\x0a\0\0\0" * 16,
              bytes(rng.getrandbits(8) for _ in range(64))]
    families = [2, 10, 24, 28, 30, 0, 7]
    for expression in FAMILY_EXPRESSIONS:
        for optimize in (True, False):
            ours = compile(expression, dlt=dlt, optimize=optimize)
            hosts = Program.from_tuples(_libpcap.compile_expression(
                expression, dlt, DEFAULT_SNAPLEN, optimize, 0xFFFFFFFF))
            for body in bodies:
                for family in families:
                    got = ours.run(family_packet(dlt, family, body))
                    want = hosts.run(family_packet(dlt, swap.get(family, family), body))
                    assert got == want, (expression, optimize, family, body.hex())


def test_pflog_ip6_is_freebsds_family(pcap: Any) -> None:
    """pflog(4)'s header has the family in its ``af`` byte: 28 for IPv6 on FreeBSD."""
    program = compile("ip6", dlt=lib.DLT_PFLOG)
    v6 = ipv6(6, tcp(1234, 80))
    assert program.run(family_packet(lib.DLT_PFLOG, FREEBSD_AF_INET6, v6)) == DEFAULT_SNAPLEN
    assert program.run(family_packet(lib.DLT_PFLOG, 2, ipv4(6, tcp(1, 2)))) == 0
