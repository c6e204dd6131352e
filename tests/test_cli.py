"""The ``bsdbpf`` command line, run in-process on the system under test (the
simulator with em0 and lo0, or FreeBSD's kernel with BSDBPF_SYSTEM=host); the
few tests that need the simulator itself are marked so, with the reason."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import CLI_TRAFFIC, DEPARTURE, Sysctl, sim_kernel, sim_only
from conftest import ether_frame as ether
from conftest import null_frame as loopback
from test_filter import TCP_PORT_80_D

import bsdbpf
from bsdbpf import Descriptor
from bsdbpf._native import lib
from bsdbpf.cli import main
from bsdbpf.cli.admin import process_name
from bsdbpf.cli.host import SIM_NOTE, make_host, sample_frames
from bsdbpf.errors import from_errno
from bsdbpf.sim import Kernel
from bsdbpf.stats import DescriptorStats, read_stats
from bsdbpf.system import System

SIM_LINE = f"bsdbpf: {SIM_NOTE}: generating traffic on em0"
NO_TRAFFIC = "no traffic generated (--no-traffic)"
FILLER = bytes(60)  # a frame that only keeps traffic going
Traffic = Callable[..., None]  # the traffic fixture
#: Why a test stays simulator-only: it reads a loopback interface (DLT_NULL).
LOOPBACK = ("captures on the simulator's lo0 (DLT_NULL), where FreeBSD's traffic source "
            "cannot inject")
#: ... or it expects the interfaces of its own simulated kernel (em0 and lo0
#: only, and no link types for an ordinary user: kernel.uid).
FRESH = "lists the simulated kernel's own interfaces (em0, lo0), as root and as a user"
TIME = r"\d\d:\d\d:\d\d\.\d{6}"
PACKET_LINE = re.compile(rf"^{TIME} (IP|IP6|ARP)[ ,]")
FILE_HEADER = struct.Struct("=IHHiIII")
RECORD_HEADER = struct.Struct("=IIII")
FRAMES = list(sample_frames(lib.DLT_EN10MB))
# What tcpdump -n prints for FRAMES (checked against tcpdump 4.99 reading their pcap).
DECODED = [
    "IP 10.0.0.1.40000 > 10.0.0.2.53: UDP, length 25",
    "IP 10.0.0.2.22 > 10.0.0.1.50000: Flags [P.], seq 1000:1017, ack 2000, win 65535, "
    "length 17",
    "IP 10.0.0.1.123 > 10.0.0.2.123: UDP, length 48",
    "IP 10.0.0.1 > 10.0.0.2: ICMP echo request, id 7, seq 1, length 64",
    "IP6 fd00::1.5353 > fd00::2.5353: UDP, length 25",
    "IP 10.0.0.2 > 10.0.0.1: ICMP echo reply, id 7, seq 1, length 64",
    "IP 10.0.0.1.514 > 10.0.0.2.514: UDP, length 17",
    "IP 10.0.0.1.50000 > 10.0.0.2.22: Flags [.], ack 1017, win 65535, length 0",
    "ARP, Request who-has 10.0.0.2 tell 10.0.0.1, length 46",
]


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    """em0 and lo0 only: the messages list the interfaces."""
    with sim_kernel("em0", "lo0") as k:
        yield k


def run(capsys: pytest.CaptureFixture[str], argv: Sequence[str],
        system: System | None) -> tuple[int, list[str], list[str]]:
    """main(argv) in-process: exit status, stdout lines, stderr lines."""
    status = main(argv, system=system)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out.splitlines(), err.splitlines()


def after_sim_note(err: list[str], system: System, said: str = NO_TRAFFIC) -> list[str]:
    """The notes after the simulator's first one, which says ``said`` (FreeBSD's
    kernel has no such note)."""
    if not make_host(system).simulated:
        return err
    assert err[0] == f"bsdbpf: {SIM_NOTE}: {said}"
    return err[1:]


def summary(err: list[str]) -> tuple[int, int, int, str]:
    """captured, received, dropped and the zero-copy line from the last four lines."""
    m = [re.fullmatch(rf"(\d+) packets? {what}", line) for line, what in zip(
        err[-4:-1], ("captured", "received by filter", "dropped by kernel"))]
    assert all(m), err[-4:]
    captured, received, dropped = (int(x[1]) for x in m if x)
    assert "zero-copy buffer" in err[-1]
    return captured, received, dropped, err[-1]


def ours(system: System, ifname: str | None = None) -> list[DescriptorStats]:
    """The descriptors this process has attached (to ``ifname``); on FreeBSD
    the traffic source's own are another process's."""
    return [r for r in read_stats(system)
            if r.pid == os.getpid() and ifname in (None, r.ifname)]


def wait_attached(system: System, ifname: str, timeout: float = 120.0) -> None:
    """Wait until this process has a descriptor attached to ``ifname``, as
    FreeBSD's own bpf tests wait for their consumer to show up in ``netstat -B``."""
    deadline = time.monotonic() + timeout
    while not ours(system, ifname):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing attached to {ifname}")
        time.sleep(0.005)


@contextlib.contextmanager
def injecting(system: System, traffic: Traffic, ifname: str, frames: Sequence[bytes], *,
              keep_alive: bool = False, repeat: bool = False,
              settle: float = 0.0) -> Iterator[list[str]]:
    """Send ``frames`` to ``ifname`` once the command under test has attached;
    yields the descriptor flags (``netstat -B``) seen then, or ``settle``
    seconds later: what is set after BIOCSETIF (promiscuous mode) needs that
    moment, and a command waiting for the frames is still there.

    ``keep_alive``: then go on sending filler frames until the command is
    done.  In zero-copy mode FreeBSD reclaims an acknowledged buffer only when
    the next packet arrives (spec section f), so frames that landed in the
    other buffer reach the consumer only once more traffic comes, as it does
    on a live interface.  ``repeat``: send ``frames`` again and again until
    the command is done.
    """
    errors: list[BaseException] = []
    flags: list[str] = []
    done = threading.Event()

    def inject() -> None:
        try:
            wait_attached(system, ifname)
            time.sleep(settle)
            flags.extend(r.flags for r in ours(system, ifname))
            for f in frames:
                traffic(ifname, f)
            while repeat and not done.wait(0.01):
                for f in frames:
                    traffic(ifname, f)
            while keep_alive and not done.wait(0.01):
                traffic(ifname, FILLER)
        except BaseException as err:  # reported by the test's thread below
            errors.append(err)

    thread = threading.Thread(target=inject)
    thread.start()
    try:
        yield flags
    finally:
        done.set()
        thread.join(120)
    assert not thread.is_alive()
    assert not errors, errors


def read_pcap(path: Path) -> tuple[tuple[int, ...], list[tuple[int, int, int, bytes]]]:
    """Parse a classic pcap file: its header, and (timestamp ns, caplen, wirelen, data)."""
    blob = path.read_bytes()
    header = FILE_HEADER.unpack_from(blob)
    records, off = [], FILE_HEADER.size
    while off < len(blob):
        sec, nsec, caplen, wirelen = RECORD_HEADER.unpack_from(blob, off)
        off += RECORD_HEADER.size
        records.append((sec * 10**9 + nsec, caplen, wirelen, blob[off:off + caplen]))
        off += caplen
    assert off == len(blob), "the last record is cut short"
    return header, records


QUIET = ["--no-traffic", "--timeout", "120"]  # an upper bound, for a loaded machine


# -- capture: what it prints ------------------------------------------------------


def test_capture_prints_what_tcpdump_n_prints(
        system: System, ifname: str, traffic: Traffic, sysctl: Sysctl,
        capsys: pytest.CaptureFixture[str]) -> None:
    sysctl.set("net.bpf.zerocopy_enable", 0)
    with injecting(system, traffic, ifname, FRAMES):
        status, out, err = run(capsys, ["capture", "-i", ifname, "-c", str(len(FRAMES)),
                                        "--immediate", *QUIET], system)
    assert status == 0
    assert [re.sub(rf"^{TIME} ", "", line) for line in out] == DECODED
    assert all(re.match(rf"^{TIME} ", line) for line in out)
    notes = after_sim_note(err, system)
    assert notes[0] == (f"bsdbpf: listening on {ifname}, link-type EN10MB (1), snapshot "
                        "length 262144 bytes; buffered, buffer of 524288 bytes")
    if make_host(system).simulated:
        assert notes[1] == ("bsdbpf: zero-copy not used: the simulated kernel has "
                            "net.bpf.zerocopy_enable=0, as FreeBSD does; --zerocopy on sets it")
    else:
        assert notes[1].startswith("bsdbpf: zero-copy not used: ")
    assert err[-4:] == [
        "9 packets captured", "9 packets received by filter", "0 packets dropped by kernel",
        "0 zero-copy buffers consumed (buffered mode)"]


@pytest.mark.parametrize(("flag", "pattern"), [
    ("-t", r"IP 10\.0\.0\.1\.40000 > "),
    ("-tt", r"\d{10}\.\d{6} IP 10\.0\.0\.1\.40000 > "),
    ("-tttt", rf"\d{{4}}-\d\d-\d\d {TIME} IP 10\.0\.0\.1\.40000 > "),
    ("--time-stamp-precision=nano", r"\d\d:\d\d:\d\d\.\d{9} IP 10\.0\.0\.1\.40000 > "),
    ("-ttt", r" 0:00:00\.000000 IP 10\.0\.0\.1\.40000 > "),
])
def test_timestamp_styles(system: System, ifname: str, traffic: Traffic, *,
                          capsys: pytest.CaptureFixture[str], flag: str, pattern: str) -> None:
    with injecting(system, traffic, ifname, FRAMES[:1]):
        status, out, _ = run(capsys, ["capture", "-i", ifname, "-c", "1", "--immediate", flag,
                                      "--no-traffic", "--timeout", "3"], system)
    assert status == 0
    assert re.fullmatch(pattern + r".*", out[0] if out else ""), "\n".join(_)


def test_epoch_time_is_the_capture_time(
        system: System, ifname: str, traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    before = time.time()
    with injecting(system, traffic, ifname, FRAMES[:1]):
        _, out, _ = run(capsys, ["capture", "-i", ifname, "-c", "1", "--immediate", "-tt",
                                 *QUIET], system)
    assert before - 1 <= float(out[0].split()[0]) <= time.time() + 1


def test_hex_and_ascii_dumps(system: System, ifname: str, traffic: Traffic,
                             capsys: pytest.CaptureFixture[str]) -> None:
    def dump(flag: str) -> list[str]:
        with injecting(system, traffic, ifname, FRAMES[:1]):
            return run(capsys, ["capture", "-i", ifname, "-c", "1", "--immediate", "-t", flag,
                                *QUIET], system)[1]

    out, out_x, out_xx = dump("-X"), dump("-x"), dump("-xx")
    assert out[0] == DECODED[0]
    assert out[1] == "\t0x0000:  4500 0035 0001 4000 4011 26b5 0a00 0001  E..5..@.@.&....."
    assert out[3] == "\t0x0020:  0001 0000 0000 0000 0765 7861 6d70 6c65  .........example"
    assert out_x[1] == "\t0x0000:  4500 0035 0001 4000 4011 26b5 0a00 0001"
    assert out_xx[1] == "\t0x0000:  0200 0000 0002 0200 0000 0001 0800 4500"


def test_verbose_prints_the_ip_header(
        system: System, ifname: str, traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    with injecting(system, traffic, ifname, FRAMES[:1]):
        _, out, _ = run(capsys, ["capture", "-i", ifname, "-c", "1", "--immediate", "-t", "-v",
                                 *QUIET], system)
    assert out == ["IP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto UDP (17), "
                   "length 53)", "    10.0.0.1.40000 > 10.0.0.2.53: UDP, length 25"]


@sim_only(CLI_TRAFFIC)
def test_the_simulator_brings_traffic_and_stops_it(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, ["capture", "--count", "10", "--timeout", "30"], kernel)
    assert status == 0
    assert len(out) == 10
    assert all(PACKET_LINE.match(line) for line in out), out
    assert err[0] == f"{SIM_LINE} (1000 frames/s)"
    captured, received, dropped, _ = summary(err)
    assert (captured, dropped) == (10, 0)
    assert received >= 10
    # The traffic stopped with the command: a new descriptor sees nothing.
    with Descriptor.open("em0", immediate=True, system=kernel) as d:
        assert list(d.packets(timeout=0.3)) == []


# -- capture: to a file -----------------------------------------------------------


Link = tuple[str, Callable[[int, int], bytes], int]  # interface, frame maker, LINKTYPE


@pytest.mark.parametrize("link", [
    pytest.param(("em0", ether, 1), id="em0"),
    pytest.param(("lo0", loopback, 0), id="lo0", marks=sim_only(LOOPBACK)),
])
@pytest.mark.parametrize("zerocopy", ["off", "on"])
def test_capture_writes_the_injected_frames_to_pcap(
        system: System, ifname: str, traffic: Traffic, sysctl: Sysctl, *,
        capsys: pytest.CaptureFixture[str], tmp_path: Path, link: Link, zerocopy: str) -> None:
    simulated = make_host(system).simulated
    if link[0] != "em0":  # the loopback, on the simulator only
        ifname = link[0]
    _, make, linktype = link
    if not simulated and zerocopy == "on":  # on FreeBSD --zerocopy on needs it set
        sysctl.set("net.bpf.zerocopy_enable", 1)
    frames = [make(i, size) for i, size in enumerate((60, 61, 200, 1514, 333))]
    path = tmp_path / "out.pcap"
    before = time.time_ns()
    with injecting(system, traffic, ifname, frames, keep_alive=zerocopy == "on"):
        status, out, err = run(capsys, [
            "capture", "-i", ifname, "-c", "5", "-w", str(path), "--snaplen", "300",
            "--immediate", "--zerocopy", zerocopy, *QUIET], system)
    after = time.time_ns()
    assert status == 0
    assert out == []  # packets go to the file only
    header, records = read_pcap(path)
    assert header == (0xA1B23C4D, 2, 4, 0, 0, 300, linktype)
    assert [r[3] for r in records] == [f[:300] for f in frames]  # byte for byte
    assert [r[1] for r in records] == [min(len(f), 300) for f in frames]
    assert [r[2] for r in records] == [len(f) for f in frames]
    assert all(before <= r[0] <= after for r in records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pcap"]  # nothing beside it
    captured, received, dropped, zc_line = summary(err)
    assert (captured, dropped) == (5, 0)
    if zerocopy == "on":
        if simulated:
            assert "net.bpf.zerocopy_enable set to 1 for --zerocopy on" in err[0]
        assert re.fullmatch(r"[1-9]\d* zero-copy buffers? consumed", zc_line)
        assert received >= 5  # the filler frames are counted too
    else:
        assert zc_line == "0 zero-copy buffers consumed (buffered mode)"
        assert not any("zero-copy not used" in line for line in err)  # it was asked for
        assert received == 5


def test_microsecond_files_with_time_stamp_precision_micro(
        system: System, ifname: str, traffic: Traffic, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    path = tmp_path / "us.pcap"
    with injecting(system, traffic, ifname, FRAMES[:2]):
        status, _, _ = run(capsys, ["capture", "-i", ifname, "-c", "2", "--immediate", "-w",
                                    str(path), "--time-stamp-precision", "micro", *QUIET],
                           system)
    assert status == 0
    header, records = read_pcap(path)
    assert header[0] == 0xA1B2C3D4
    assert [r[3] for r in records] == FRAMES[:2]


def test_read_prints_a_file_as_a_live_capture_would(
        system: System, ifname: str, traffic: Traffic, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    path = tmp_path / "r.pcap"
    with injecting(system, traffic, ifname, FRAMES):
        run(capsys, ["capture", "-i", ifname, "-c", str(len(FRAMES)), "--immediate", "-w",
                     str(path), *QUIET], system)
    status, out, err = run(capsys, ["capture", "-r", str(path), "-tt"], None)
    assert status == 0
    assert [line.split(" ", 1)[1] for line in out] == DECODED
    stamps = [r[0] for r in read_pcap(path)[1]]
    assert [line.split(" ", 1)[0] for line in out] == [
        f"{ns // 10**9}.{ns % 10**9 // 1000:06d}" for ns in stamps]
    assert err == [f"bsdbpf: reading from file {path}, link-type EN10MB (1), snapshot length "
                   "262144"]
    status, out, _ = run(capsys, ["capture", "-r", str(path), "-c", "2"], None)
    assert (status, len(out)) == (0, 2)
    status, out, _ = run(capsys, ["capture", "-r", str(path), "-t", "icmp"], None)
    assert (status, out) == (0, [DECODED[3], DECODED[5]])
    copy = tmp_path / "icmp.pcap"
    status, out, _ = run(capsys, ["capture", "-r", str(path), "-w", str(copy), "icmp"], None)
    assert (status, out) == (0, [])
    assert [r[3] for r in read_pcap(copy)[1]] == [FRAMES[3], FRAMES[5]]


def test_read_takes_tcpdumps_microsecond_big_endian_files(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "tcpdump.pcap"
    blob = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    blob += struct.pack(">IIII", 1_700_000_000, 250_000, len(FRAMES[3]), len(FRAMES[3]))
    path.write_bytes(blob + FRAMES[3] + b"\x00\x00\x00")  # and a cut-short record
    status, out, err = run(capsys, ["capture", "-r", str(path), "-tt"], None)
    assert status == 0
    assert out == [f"1700000000.250000 {DECODED[3]}"]
    assert "the file ends inside a record" in err[-1]


def test_a_file_that_is_not_pcap_is_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    path.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(60))
    status, _, err = run(capsys, ["capture", "-r", str(path)], None)
    assert status == 1
    assert err == [f"bsdbpf: {path}: not a classic pcap file (it starts 0a0d0d0a); a pcapng "
                   "file can be converted with `editcap -F pcap IN OUT` or `tcpdump -r IN "
                   "-w OUT`"]
    status, _, err = run(capsys, ["capture", "-r", str(tmp_path / "none.pcap")], None)
    assert (status, err) == (1, [f"bsdbpf: cannot read {tmp_path / 'none.pcap'}: No such "
                                 "file or directory"])


# -- capture: filters ------------------------------------------------------------




def test_the_trailing_words_are_a_filter_expression(
        system: System, ifname: str, traffic: Traffic,
        capsys: pytest.CaptureFixture[str]) -> None:
    wanted = [line for line in DECODED if "UDP" in line and ".53:" not in line]
    # Frames that arrive between BIOCSETIF and BIOCSETF are discarded with the
    # unfiltered buffer: send them until the capture is done.
    with injecting(system, traffic, ifname, FRAMES, repeat=True):
        status, out, err = run(capsys, ["capture", "-i", ifname, "-c", "6", "--immediate", "-t",
                                        "udp", "and", "not", "port", "53", *QUIET], system)
    assert status == 0
    assert len(out) == 6
    assert set(out) == set(wanted)
    assert summary(err)[0] == 6


@pytest.mark.parametrize("argv", [["capture", "-d"], ["filter"], ["filter", "-d"],
                                  ["filter", "-y", "EN10MB"]])
def test_d_prints_what_tcpdump_d_prints(system: System, ifname: str,
                                        capsys: pytest.CaptureFixture[str],
                                        argv: list[str]) -> None:
    if argv[0] == "capture":  # the link type of the interface (Ethernet)
        argv = [*argv, "-i", ifname]
    status, out, _ = run(capsys, [*argv, "tcp", "port", "80"], system)
    assert status == 0
    assert "\n".join(out) + "\n" == TCP_PORT_80_D  # tcpdump -d 'tcp port 80', Ethernet
    assert ours(system) == []  # nothing left open


@sim_only(LOOPBACK)
def test_dd_and_ddd(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    af_inet = int.from_bytes((2).to_bytes(4, sys.byteorder), "big")  # as the header holds it
    _, out, _ = run(capsys, ["filter", "-dd", "-y", "NULL", "ip"], kernel)
    assert out == ["{ 0x20, 0, 0, 0x00000000 },", f"{{ 0x15, 0, 1, 0x{af_inet:08x} }},",
                   "{ 0x6, 0, 0, 0x00040000 },", "{ 0x6, 0, 0, 0x00000000 },"]
    _, out, _ = run(capsys, ["capture", "-ddd", "-i", "lo0", "ip"], kernel)
    assert out == ["4", "32 0 0 0", f"21 0 1 {af_inet}", "6 0 0 262144", "6 0 0 0"]
    status, _, err = run(capsys, ["filter", "-y", "ETHERNETISH", "ip"], kernel)
    assert (status, err) == (1, ["bsdbpf: -y ETHERNETISH: not a link type; use a name such as "
                                 "EN10MB, NULL, LOOP or RAW, or a DLT number"])


# -- capture: tcpdump's options ---------------------------------------------------


def test_promiscuous_by_default_and_p_turns_it_off(
        system: System, ifname: str, traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    # BIOCPROMISC comes just after BIOCSETIF: read the flags once the setup is over.
    with injecting(system, traffic, ifname, FRAMES[:1], settle=0.1) as flags:
        run(capsys, ["capture", "-i", ifname, "-c", "1", "--immediate", *QUIET], system)
    assert flags[0].startswith("p")
    with injecting(system, traffic, ifname, FRAMES[:1], settle=0.1) as flags:
        run(capsys, ["capture", "-i", ifname, "-c", "1", "--immediate", "-p", *QUIET], system)
    assert flags[0].startswith("-")


@pytest.mark.parametrize(("direction", "flag"), [("in", "-"), ("out", "o"), ("inout", "s")])
def test_direction(system: System, ifname: str, traffic: Traffic, *,
                   capsys: pytest.CaptureFixture[str], direction: str, flag: str) -> None:
    with injecting(system, traffic, ifname, []) as flags:
        status, _, _ = run(capsys, ["capture", "-i", ifname, "-Q", direction, "--timeout", "0.2",
                                    "--no-traffic"], system)
    assert status == 0
    assert flags[0][3] == flag
    assert flags[0][2] == "-"  # header complete: written frames leave unchanged


@pytest.mark.parametrize(("args", "granted"), [
    (["-B", "1"], "buffer of 1024 bytes"),  # KiB, as tcpdump counts
    (["-B", "4096"], "buffer of 524288 bytes"),  # capped at net.bpf.maxbufsize
    (["-s", "0"], "snapshot length 262144 bytes"),  # 0 is the maximum, as in tcpdump
    (["-s", "96"], "snapshot length 96 bytes"),
])
def test_buffer_and_snapshot_lengths(system: System, ifname: str,
                                     capsys: pytest.CaptureFixture[str],
                                     args: list[str], granted: str) -> None:
    status, _, err = run(capsys, ["capture", "-i", ifname, *args, "--timeout", "0",
                                  "--no-traffic"], system)
    assert status == 0
    assert granted in after_sim_note(err, system)[0]


@sim_only(FRESH)
def test_list_interfaces(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, ["capture", "-D"], kernel)
    assert (status, out) == (0, ["1.em0 [Up] link-types EN10MB", "2.lo0 [Up] link-types NULL"])
    assert read_stats(kernel) == []  # the descriptors that asked are closed
    kernel.uid = 1000
    status, out, _ = run(capsys, ["capture", "-D"], kernel)
    assert (status, out[0]) == (0, "1.em0 [Up] link-types ? (needs root)")


@pytest.mark.parametrize("argv", [["--version"], ["capture", "--version"]])
def test_version(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"bsdbpf version {bsdbpf.__version__}\n"


def test_timeout_zero_takes_what_the_kernel_holds(
        system: System, ifname: str, traffic: Traffic, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = Descriptor.open

    def open_then_two_frames(*args: Any, **kw: Any) -> Descriptor:
        d = real_open(*args, **kw)
        for f in FRAMES[:2]:
            traffic(ifname, f)
        return d

    monkeypatch.setattr(Descriptor, "open", open_then_two_frames)
    status, out, err = run(capsys, ["capture", "-i", ifname, "--timeout", "0", "-c", "1",
                                    "--no-traffic"],
                           system)
    assert status == 0
    assert len(out) == 1
    assert summary(err)[:3] == (1, 2, 0)


def test_a_quiet_capture_ends_at_the_timeout(
        system: System, ifname: str, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    status, out, err = run(capsys, ["capture", "-i", ifname, "--no-traffic", "--timeout", "0.3",
                                    "-c", "5"],
                           system)
    assert status == 0
    assert 0.3 <= time.monotonic() - start < 10
    assert out == []
    assert summary(err)[:3] == (0, 0, 0)


@sim_only(CLI_TRAFFIC)
@pytest.mark.parametrize("timeout", ["inf", "1e10"])
def test_huge_timeouts_are_just_long(kernel: Kernel, capsys: pytest.CaptureFixture[str],
                                     timeout: str) -> None:
    status, out, _ = run(capsys, ["capture", "-c", "3", "--timeout", timeout], kernel)
    assert (status, len(out)) == (0, 3)


@pytest.mark.usefixtures("zerocopy")
def test_zero_copy_when_the_kernel_allows_it(
        system: System, ifname: str, traffic: Traffic,
        capsys: pytest.CaptureFixture[str]) -> None:
    with injecting(system, traffic, ifname, FRAMES[:1]):
        status, _, err = run(capsys, ["capture", "-i", ifname, "-c", "1", "--immediate",
                                      *QUIET], system)
    assert status == 0
    assert after_sim_note(err, system)[0].endswith("; zero-copy, 2 buffers of 524256 bytes")
    assert err[-1] == "1 zero-copy buffer consumed"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@sim_only(CLI_TRAFFIC)
@pytest.mark.parametrize("quiet", [False, True])
def test_status_line_on_a_terminal(kernel: Kernel, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, quiet: bool) -> None:
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    argv = ["capture", "-w", str(tmp_path / "s.pcap"), "--timeout", "4"]
    assert main([*argv, "-q"] if quiet else argv, system=kernel) == 0
    text = term.getvalue()
    if quiet:
        assert "\r" not in text
    else:
        assert re.search(r"\r\x1b\[K\d+ packets captured, 0 dropped by kernel, \d+ packets/s, "
                         r"buffered", text), text
        assert text.count("\n") == 7  # three notes, four summary lines: the status line went


# -- capture: errors are one line ----------------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["-c", "0"], "argument -c/--count: 0: must be at least 1"),
    (["-c", "ten"], "argument -c/--count: 'ten' is not an integer"),
    (["-B", "999999999999"], "argument -B/--buffer-size: 999999999999: must be between 1 and "
                             "4194303 KiB"),
    (["-B", "0"], "argument -B/--buffer-size: 0: must be between 1 and 4194303 KiB"),
    (["-s", "99999999999"], "argument -s/--snapshot-length/--snaplen: 99999999999: must be "
                            "between 0 and 262144 (0 means 262144, as in tcpdump)"),
    (["-s", "-1"], "must be between 0 and 262144"),
    (["--timeout", "nan"], "argument --timeout: nan: must be 0 or more"),
    (["--timeout", "-1"], "argument --timeout: -1: must be 0 or more"),
    (["--timeout", "soon"], "argument --timeout: 'soon' is not a number of seconds"),
    (["-Q", "sideways"], "argument -Q/--direction: invalid choice: 'sideways'"),
])
def test_bad_numbers_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                                      message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["capture", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@sim_only(DEPARTURE)
def test_the_interface_going_away_ends_with_the_counters_and_the_error(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    def depart() -> None:
        wait_attached(kernel, "em0")
        for f in FRAMES[:2]:
            kernel.inject("em0", f)
        time.sleep(0.3)
        kernel.remove_interface("em0")

    thread = threading.Thread(target=depart)
    thread.start()
    status, out, err = run(capsys, ["capture", "-c", "5", "--immediate", *QUIET], kernel)
    thread.join(120)
    assert status == 1
    assert len(out) == 2
    assert err[-5:-1] == ["2 packets captured", "2 packets received by filter",
                          "0 packets dropped by kernel", err[-2]]
    assert err[-1] == ("bsdbpf: [Errno 6] read: No such device or address. The descriptor "
                       "is not attached (BIOCSETIF) or its interface went away")


def test_counters_out_of_reach_still_end_with_the_packets_captured(
        system: System, ifname: str, traffic: Traffic, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(self: Descriptor) -> None:
        raise from_errno(errno.ENXIO, "BIOCGSTATS")

    monkeypatch.setattr(Descriptor, "stats", gone)
    with injecting(system, traffic, ifname, FRAMES[:2]):
        status, out, err = run(capsys, ["capture", "-i", ifname, "-c", "2", "--immediate",
                                        *QUIET], system)
    assert (status, len(out)) == (0, 2)
    assert err[-2] == "2 packets captured"
    assert err[-1].startswith("(kernel counters: [Errno 6] BIOCGSTATS")


@sim_only(FRESH)
def test_a_missing_interface_is_one_line(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, ["capture", "-i", "nope0", "--no-traffic"], kernel)
    assert (status, out) == (1, [])
    assert err == ["bsdbpf: [Errno 6] BIOCSETIF on nope0: No such device or address. The "
                   "interfaces are: em0, lo0 (`bsdbpf capture -D`)"]


def test_without_root_says_so(system: System, ifname: str, unprivileged: Callable[[], Any],
                              capsys: pytest.CaptureFixture[str]) -> None:
    with unprivileged():
        status, _, err = run(capsys, ["capture", "-i", ifname], system)
    assert status == 1
    assert len(err) == 1
    assert err[0].startswith("bsdbpf: [Errno 13] open: Permission denied. Opening /dev/bpf "
                             "needs root")


@pytest.mark.parametrize(("where", "reason"), [
    ("missing/x.pcap", "No such file or directory"),
    (".", "Is a directory"),
])
def test_an_unwritable_path_is_one_line(
        system: System, ifname: str, *, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        where: str, reason: str) -> None:
    path = tmp_path / where
    status, _, err = run(capsys, ["capture", "-i", ifname, "--no-traffic", "-w", str(path)],
                         system)
    assert status == 1
    assert err == [f"bsdbpf: cannot write {path}: {reason}"]
    assert ours(system) == []  # the descriptor was closed


def test_a_file_without_permission_is_one_line(
        system: System, ifname: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "theirs.pcap"
    path.write_bytes(b"")
    path.chmod(0o444)
    real_open = os.open

    def as_a_user(name: Any, flags: int, mode: int = 0o777) -> int:  # root ignores 0444
        if str(name) == str(path) and flags & os.O_WRONLY:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(name))
        return real_open(name, flags, mode)

    monkeypatch.setattr(os, "open", as_a_user)
    status, _, err = run(capsys, ["capture", "-i", ifname, "--no-traffic", "-w", str(path)],
                         system)
    assert (status, err) == (1, [f"bsdbpf: cannot write {path}: Permission denied"])


def test_a_full_device_is_one_line(system: System, ifname: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    status, _, err = run(capsys, ["capture", "-i", ifname, "--no-traffic", "-w", "/dev/full"],
                         system)
    assert (status, err) == (1, ["bsdbpf: cannot write /dev/full: No space left on device"])


def test_a_disk_filling_up_keeps_the_whole_records(
        system: System, ifname: str, traffic: Traffic, *, capsys: pytest.CaptureFixture[str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "full.pcap"
    real_write = os.write
    room = [FILE_HEADER.size + 2 * (RECORD_HEADER.size + len(FRAMES[0])) + 10]

    def the_file(fd: int) -> bool:
        # fstat, not /proc/self/fd (Linux's only: FreeBSD's /proc is empty).
        try:
            return os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            return False

    def small_disk(fd: int, data: Any) -> int:
        if not the_file(fd):
            return real_write(fd, data)
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(data[:room[0]]))
        room[0] -= n
        return n

    monkeypatch.setattr(os, "write", small_disk)
    with injecting(system, traffic, ifname, FRAMES[:1] * 5):
        status, _, err = run(capsys, ["capture", "-i", ifname, "-c", "5", "-w", str(path), "-U",
                                      "--immediate", *QUIET], system)
    monkeypatch.undo()
    assert status == 1
    assert summary(err[:-1])[0] >= 2
    assert err[-1] == (f"bsdbpf: cannot write {path}: No space left on device; {path} keeps "
                       "the 2 packets written before, up to the last whole record")
    assert [r[3] for r in read_pcap(path)[1]] == FRAMES[:1] * 2


def test_an_unknown_user_for_Z_is_one_line(
        system: System, ifname: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, ["capture", "-i", ifname, "-Z", "no-such-user-here",
                                  "--no-traffic"], system)
    assert (status, err) == (1, ["bsdbpf: -Z no-such-user-here: no such user"])


def test_Z_without_root_says_only_root_can(
        system: System, ifname: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    status, _, err = run(capsys, ["capture", "-i", ifname, "-Z", "nobody", "--no-traffic"],
                         system)
    assert (status, err) == (1, ["bsdbpf: -Z nobody: only root can change to another user; "
                                 "run without -Z, or as root"])


def test_a_failing_terminal_is_one_line(
        system: System, ifname: str, traffic: Traffic, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(sys, "stdout", Broken())
    with injecting(system, traffic, ifname, FRAMES[:1]):
        status = main(["capture", "-i", ifname, "-c", "1", "--immediate", *QUIET], system=system)
    err = capsys.readouterr().err.splitlines()
    assert status == 1
    assert err[-1] == "bsdbpf: cannot write standard output: Input/output error"
    assert summary(err[:-1])[0] == 0


def test_Z_refuses_to_go_on_as_root_when_the_change_fails(
        system: System, ifname: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: Any) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    for name in ("setgroups", "setgid", "setuid"):
        monkeypatch.setattr(os, name, refused)
    monkeypatch.setattr(os, "fchown", lambda *a: None)
    path = tmp_path / "z.pcap"
    status, out, err = run(capsys, ["capture", "-i", ifname, "-Z", "nobody", "-w", str(path)],
                              system)
    assert (status, out) == (1, [])
    assert err == ["bsdbpf: -Z nobody: cannot become nobody (Operation not permitted); "
                   "refusing to go on with root's privileges"]
    assert ours(system) == []
    assert read_pcap(path)[1] == []  # nothing was captured


def test_a_bad_expression_is_one_line(
        system: System, ifname: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, ["capture", "-i", ifname, "--no-traffic", "tcp", "portx",
                                    "80"], system)
    assert (status, out) == (1, [])
    assert err == ["bsdbpf: [Errno 22] BIOCSETF: Invalid argument. Cannot compile 'tcp portx "
                   "80': can't parse filter expression: syntax error"]
    assert ours(system) == []


# -- zerocopy, sysctl -------------------------------------------------------------


def test_zerocopy_on_off_round_trip(system: System, sysctl: Sysctl,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    sysctl.set("net.bpf.zerocopy_enable", 0)  # and put back what it was, after
    status, out, _ = run(capsys, ["zerocopy"], system)
    assert (status, out[0][:30]) == (0, "zero-copy BPF is disabled (net")
    status, out, err = run(capsys, ["zerocopy", "on"], system)
    assert (status, out) == (0, ["net.bpf.zerocopy_enable: 0 -> 1"])
    if make_host(system).simulated:
        assert "the change lasts only until this command exits" in err[0]
    assert sysctl.get("net.bpf.zerocopy_enable") == 1
    status, out, _ = run(capsys, ["zerocopy", "status"], system)
    assert (status, out) == (0, ["zero-copy BPF is enabled (net.bpf.zerocopy_enable=1)"])
    status, out, _ = run(capsys, ["zerocopy", "off"], system)
    assert (status, out) == (0, ["net.bpf.zerocopy_enable: 1 -> 0"])
    assert sysctl.get("net.bpf.zerocopy_enable") == 0


#: FreeBSD's defaults for the net.bpf integers; a test sets them (and puts the
#: values it found back afterwards).
DEFAULTS = {"net.bpf.bufsize": 4096, "net.bpf.maxbufsize": 524288, "net.bpf.maxinsns": 512,
            "net.bpf.optimize_writers": 0, "net.bpf.zerocopy_enable": 0}
BPF_INTS = ["net.bpf.bufsize: 4096", "net.bpf.maxbufsize: 524288", "net.bpf.maxinsns: 4096",
            "net.bpf.optimize_writers: 0", "net.bpf.zerocopy_enable: 0"]


@pytest.fixture
def defaults(sysctl: Sysctl) -> Sysctl:
    """The net.bpf integers at FreeBSD's defaults for this test."""
    for name, value in DEFAULTS.items():
        sysctl.set(name, value)
    return sysctl


@pytest.mark.parametrize("argv", [[], ["-a"], ["net.bpf"]])
def test_sysctl_lists_the_bpf_tree_like_sysctl_8(
        system: System, defaults: Sysctl, capsys: pytest.CaptureFixture[str],
        argv: list[str]) -> None:
    defaults.set("net.bpf.maxinsns", 4096)
    status, out, err = run(capsys, ["sysctl", *argv], system)
    assert (status, out, err) == (0, BPF_INTS, [])


@pytest.mark.usefixtures("defaults")
def test_sysctl_values_only_and_descriptions(
        system: System, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, ["sysctl", "-n", "maxbufsize", "net.bpf.maxinsns"], system)[1] == [
        "524288", "512"]
    _, out, _ = run(capsys, ["sysctl", "-d", "net.bpf"], system)
    assert out[0] == "net.bpf.bufsize: Default capture buffer size in bytes"
    assert len(out) == 5
    assert run(capsys, ["sysctl", "-nd", "bufsize"], system)[1] == [
        "Default capture buffer size in bytes"]


@pytest.mark.usefixtures("defaults")
def test_sysctl_sets_and_reads_back(system: System, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, ["sysctl", "bufsize=0x2000", "net.bpf.maxbufsize=1048576",
                                  "net.bpf.bufsize"], system)
    assert status == 0
    assert out == ["net.bpf.bufsize: 4096 -> 8192", "net.bpf.maxbufsize: 524288 -> 1048576",
                   "net.bpf.bufsize: 8192"]
    with Descriptor(system=system) as d:
        assert d.buffer_size == 8192  # the kernel took it


@pytest.mark.parametrize(("argv", "message"), [
    (["sysctl", "net.bpf.nope"],
     "bsdbpf: [Errno 2] sysctl net.bpf.nope: No such file or directory. Bsdbpf lists the "
     "net.bpf tree, which has no net.bpf.nope: its sysctls are net.bpf.bufsize, "
     "net.bpf.maxbufsize, net.bpf.maxinsns, net.bpf.optimize_writers, net.bpf.stats, "
     "net.bpf.zerocopy_enable"),
    (["sysctl", "net.bpf.nope=1"],
     "bsdbpf: [Errno 2] sysctl net.bpf.nope: No such file or directory. This kernel has no "
     "sysctl net.bpf.nope under net.bpf: bsdbpf.sysctl.list() shows those there are"),
    (["sysctl", "bufsize=big"], "bsdbpf: net.bpf.bufsize=big: the value must be an integer"),
    (["sysctl", "bufsize=4294967296"],
     "bsdbpf: [Errno 22] sysctl net.bpf.bufsize: Invalid argument. The value 4294967296 does "
     "not fit a C int"),
    (["sysctl", "net.bpf.stats"],
     "bsdbpf: net.bpf.stats is a table, not an integer: `bsdbpf stats` shows it"),
])
def test_sysctl_errors_are_one_clear_line(
        system: System, defaults: Sysctl, capsys: pytest.CaptureFixture[str],
        argv: list[str], message: str) -> None:
    status, out, err = run(capsys, argv, system)
    assert (status, out, err) == (1, [], [message])
    assert defaults.get("net.bpf.bufsize") == 4096


@pytest.mark.usefixtures("defaults")
def test_sysctl_goes_on_after_an_error(
        system: System, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, ["sysctl", "nope", "maxinsns"], system)
    assert status == 1
    assert out == ["net.bpf.maxinsns: 512"]
    assert len(err) == 1


@pytest.mark.parametrize("argv", [
    ["sysctl", "bufsize=8192"], ["zerocopy", "on"], ["stats"], ["stats", "--zero"],
])
def test_unprivileged_writes_and_stats_need_root(
        system: System, defaults: Sysctl, unprivileged: Callable[[], Any],
        capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with unprivileged():
        status, out, err = run(capsys, argv, system)
    assert defaults.get("net.bpf.bufsize") == 4096
    assert defaults.get("net.bpf.zerocopy_enable") == 0
    assert (status, out) == (1, [])
    assert len(err) == 1
    assert err[0].endswith("Operation not permitted. Writing sysctls and reading "
                           "net.bpf.stats need root")


@pytest.mark.usefixtures("defaults")
def test_unprivileged_reads_work(system: System, unprivileged: Callable[[], Any],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with unprivileged():
        status, out, _ = run(capsys, ["sysctl", "maxbufsize"], system)
    assert (status, out) == (0, ["net.bpf.maxbufsize: 524288"])


def test_a_bad_bsdbpf_system_is_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BSDBPF_SYSTEM", "vax")
    status, _, err = run(capsys, ["sysctl"], None)
    assert status == 1
    assert err == ["bsdbpf: BSDBPF_SYSTEM='vax': expected 'host' or 'sim'"]


# -- stats ------------------------------------------------------------------------


def test_stats_lists_the_attached_descriptor(
        system: System, ifname: str, traffic: Traffic,
        capsys: pytest.CaptureFixture[str]) -> None:
    with Descriptor.open(ifname, immediate=True, promiscuous=True, header_complete=False,
                         system=system) as d, \
            Descriptor(system=system):  # not attached: not listed
        for i in range(3):
            traffic(ifname, ether(i, 80))
        status, out, err = run(capsys, ["stats"], system)
        assert d.stats().recv == 3
    if not make_host(system).simulated:  # FreeBSD lists the traffic source's too
        out = out[:1] + [line for line in out[1:] if line.split()[0] == str(os.getpid())]
    assert status == 0
    assert out[0] == ("  Pid  Netif   Flags      Recv      Drop     Match Sblen Hblen "
                      "Command")
    assert out[1].split() == [str(os.getpid()), ifname, "pifs---", "3", "0", "3",
                              "330", "0", process_name(os.getpid())]  # 2 * 112 + 106
    assert len(out) == 2
    if make_host(system).simulated:
        assert "only descriptors this process attached are listed" in err[0]
    else:
        assert err == []


def test_process_name_from_ps_where_proc_has_no_comm(monkeypatch: pytest.MonkeyPatch) -> None:
    """FreeBSD's procfs(5) has no comm file: the Command column comes from
    ps(1) there, the same name netstat -B prints (ki_comm)."""
    comm = Path(f"/proc/{os.getpid()}/comm")
    if not comm.exists() or shutil.which("ps") is None:
        pytest.skip("compares ps(1) with Linux's /proc/PID/comm")
    monkeypatch.setattr("bsdbpf.cli.admin.Path", lambda _: Path("/nonexistent/comm"))
    monkeypatch.delenv("LD_PRELOAD", raising=False)  # a sanitizer's runtime would break ps
    assert process_name(os.getpid()) == comm.read_text().strip()


@sim_only(LOOPBACK)
def test_stats_interface_filter_and_zeroing(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    with Descriptor.open("em0", system=kernel), Descriptor.open("lo0", system=kernel):
        kernel.inject("em0", ether(0, 64))
        _, out, _ = run(capsys, ["stats", "-i", "lo0"], kernel)
        assert [line.split()[1] for line in out[1:]] == ["lo0"]
        status, out, err = run(capsys, ["stats", "-z", "-i", "em0"], kernel)
        assert (status, out) == (1, [])
        assert err == ["bsdbpf: -z zeroes the counters of every descriptor (net.bpf.stats has "
                       "no per-interface reset, as with netstat -B -z): leave out -i"]
        assert {r.ifname: r.recv for r in read_stats(kernel)} == {"em0": 1, "lo0": 0}
        status, out, _ = run(capsys, ["stats", "--zero"], kernel)
        assert (status, out) == (0, ["net.bpf.stats: counters zeroed"])
        assert [r.recv for r in read_stats(kernel)] == [0, 0]
