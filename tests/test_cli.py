"""The ``bsdbpf`` command line, run in-process against simulated kernels made here,
and as a real ``python3 -m bsdbpf`` process on the simulator."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable

import pytest
from conftest import ether_frame as ether
from conftest import null_frame as loopback
from conftest import sim_kernel

from bsdbpf import Descriptor, Packet
from bsdbpf.__main__ import main, packet_line, process_name
from bsdbpf._native import lib
from bsdbpf.sim import Kernel
from bsdbpf.stats import read_stats

ROOT = Path(__file__).resolve().parent.parent
SIM_LINE = "bsdbpf: simulated FreeBSD kernel (not FreeBSD): generating traffic on em0"
LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\d+)/(\d+) ([0-9a-f]{2,4}(?: [0-9a-f]{2,4})*)"
    r"( \.\.\.)?$")
FILE_HEADER = struct.Struct("=IHHiIII")
RECORD_HEADER = struct.Struct("=IIII")


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    """The shared test kernel's em0 and lo0 only: the messages list the interfaces."""
    with sim_kernel("em0", "lo0") as k:
        yield k


def run(capsys: pytest.CaptureFixture[str], argv: Sequence[str],
        system: Kernel | None) -> tuple[int, list[str], list[str]]:
    """main(argv) in-process: exit status, stdout lines, stderr lines."""
    status = main(argv, system=system)
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def wait_attached(kernel: Kernel, ifname: str, timeout: float = 10.0) -> None:
    """Wait until a descriptor is attached to ``ifname``, as FreeBSD's own bpf tests
    wait for their consumer to show up in ``netstat -B``."""
    deadline = time.monotonic() + timeout
    while not any(r.ifname == ifname for r in read_stats(kernel)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing attached to {ifname}")
        time.sleep(0.005)


@contextlib.contextmanager
def injecting(kernel: Kernel, ifname: str, frames: Sequence[bytes],
              keep_alive: bool = False) -> Iterator[None]:
    """Inject ``frames`` on ``ifname`` once the command under test has attached.

    ``keep_alive``: then go on injecting filler frames until the command is
    done.  In zero-copy mode FreeBSD reclaims an acknowledged buffer only when
    the next packet arrives (spec section f), so frames that landed in the
    other buffer reach the consumer only once more traffic comes, as it does
    on a live interface.
    """
    errors: list[BaseException] = []
    done = threading.Event()

    def inject() -> None:
        try:
            wait_attached(kernel, ifname)
            for f in frames:
                kernel.inject(ifname, f)
            while keep_alive and not done.wait(0.01):
                kernel.inject(ifname, bytes(60))
        except BaseException as err:  # reported by the test's thread below
            errors.append(err)

    thread = threading.Thread(target=inject)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(15)
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


# -- capture ----------------------------------------------------------------------


def test_capture_prints_one_line_per_packet(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    frames = [ether(i, size) for i, size in enumerate((60, 100, 1514))]
    with injecting(kernel, "em0", frames):
        status, out, err = run(capsys, ["capture", "-i", "em0", "--count", "3", "--immediate",
                                        "--no-traffic", "--timeout", "20"], kernel)
    assert status == 0
    assert len(out) == 3
    for line, f in zip(out, frames):
        m = LINE.match(line)
        assert m, line
        assert (int(m[2]), int(m[3])) == (len(f), len(f))
        assert bytes.fromhex(m[4].replace(" ", "")) == f[:24]
        assert m[5] == " ..."  # more than 24 bytes were captured
    assert err[-1] == ("bsdbpf: 3 packets captured; kernel: 3 received, 0 dropped; buffer "
                       "mode: buffered (zero-copy not used: the simulated kernel starts with "
                       "net.bpf.zerocopy_enable=0, as FreeBSD does; --zerocopy on turns it on "
                       "for the capture)")


Link = tuple[str, Callable[[int, int], bytes], int]  # interface, frame maker, LINKTYPE


@pytest.mark.parametrize("link", [("em0", ether, 1), ("lo0", loopback, 0)],
                         ids=["em0", "lo0"])
@pytest.mark.parametrize("zerocopy", ["off", "on"])
def test_capture_writes_the_injected_frames_to_pcap(
        kernel: Kernel, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        link: Link, zerocopy: str) -> None:
    ifname, make, linktype = link
    frames = [make(i, size) for i, size in enumerate((60, 61, 200, 1514, 333))]
    path = tmp_path / "out.pcap"
    before = time.time_ns()
    with injecting(kernel, ifname, frames, keep_alive=zerocopy == "on"):
        status, out, err = run(capsys, [
            "capture", "-i", ifname, "-c", "5", "-w", str(path), "--snaplen", "300",
            "--immediate", "--no-traffic", "--zerocopy", zerocopy, "--timeout", "20"], kernel)
    after = time.time_ns()
    assert status == 0
    assert out == []  # packets go to the file only
    header, records = read_pcap(path)
    assert header == (0xA1B23C4D, 2, 4, 0, 0, 300, linktype)
    assert [r[3] for r in records] == [f[:300] for f in frames]  # byte for byte
    assert [r[1] for r in records] == [min(len(f), 300) for f in frames]
    assert [r[2] for r in records] == [len(f) for f in frames]
    assert all(before <= r[0] <= after for r in records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pcap"]  # no temporary left
    mode = "zero-copy" if zerocopy == "on" else "buffered"
    summary = re.match(r"bsdbpf: 5 packets captured; kernel: (\d+) received, 0 dropped; "
                       r"buffer mode: ([a-z-]+)", err[-1])
    assert summary, err[-1]
    assert summary[2] == mode
    if zerocopy == "on":
        assert int(summary[1]) >= 5  # the filler frames are counted too
    else:
        assert int(summary[1]) == 5
    if zerocopy == "on":
        assert "net.bpf.zerocopy_enable set to 1 for --zerocopy on" in err[0]


def test_capture_generates_traffic_on_the_simulator(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, ["capture", "--count", "10", "--timeout", "30"], kernel)
    assert status == 0
    assert len(out) == 10
    assert all(LINE.match(line) for line in out)
    assert err[0] == f"{SIM_LINE} (1000 frames/s)"
    assert err[-1].startswith("bsdbpf: 10 packets captured;")
    # The generator stopped with the command: a new descriptor sees nothing.
    with Descriptor.open("em0", immediate=True, system=kernel) as d:
        assert list(d.packets(timeout=0.3)) == []


def test_capture_timeout_ends_a_quiet_capture(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    status, out, err = run(capsys, ["capture", "--no-traffic", "--timeout", "0.3", "-c", "5"],
                           kernel)
    assert status == 0
    assert 0.3 <= time.monotonic() - start < 10
    assert out == []
    assert err[0] == "bsdbpf: simulated FreeBSD kernel (not FreeBSD): no traffic generated " \
                     "(--no-traffic)"
    assert err[-1].startswith("bsdbpf: 0 packets captured; kernel: 0 received, 0 dropped;")


def test_capture_uses_zero_copy_when_the_kernel_allows_it(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    kernel.sysctlbyname("net.bpf.zerocopy_enable", (1).to_bytes(4, sys.byteorder))
    with injecting(kernel, "em0", [ether(0, 64)]):
        status, _, err = run(capsys, ["capture", "-c", "1", "--immediate", "--no-traffic",
                                      "--timeout", "20"], kernel)
    assert status == 0
    assert err[-2] == ("bsdbpf: capturing on em0, link-type EN10MB (1), zero-copy, 2 buffers "
                       "of 524256 bytes")
    assert err[-1].endswith("buffer mode: zero-copy")


def test_capture_ends_with_summary_and_error_when_the_interface_goes(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    def depart() -> None:
        wait_attached(kernel, "em0")
        for i in range(2):
            kernel.inject("em0", ether(i, 64))
        time.sleep(0.3)
        kernel.remove_interface("em0")

    thread = threading.Thread(target=depart)
    thread.start()
    status, out, err = run(capsys, ["capture", "-c", "5", "--immediate", "--no-traffic",
                                    "--timeout", "20"], kernel)
    thread.join(15)
    assert status == 1
    assert len(out) == 2
    assert err[-2].startswith("bsdbpf: 2 packets captured; kernel: 2 received, 0 dropped;")
    assert err[-1] == ("bsdbpf: [Errno 6] read: No such device or address. The descriptor "
                       "is not attached (BIOCSETIF) or its interface went away")


def test_capture_unknown_interface_is_one_line(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, ["capture", "-i", "nope0", "--no-traffic"], kernel)
    assert status == 1
    assert out == []
    assert err == ["bsdbpf: [Errno 6] BIOCSETIF on nope0: No such device or address. The "
                   "simulated kernel's interfaces are: em0, lo0"]


def test_capture_without_root_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with Kernel(uid=1000) as k:
        status, _, err = run(capsys, ["capture", "-i", "em0"], k)
    assert status == 1
    assert len(err) == 1
    assert err[0].startswith("bsdbpf: [Errno 13] open: Permission denied. Opening /dev/bpf "
                             "needs root")


def test_capture_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["capture", "--count", "0"])
    assert exit_.value.code == 2
    assert "--count: 0: must be at least 1" in capsys.readouterr().err


def test_capture_unwritable_file_is_one_line(
        kernel: Kernel, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "missing" / "x.pcap"
    status, _, err = run(capsys, ["capture", "--no-traffic", "-w", str(path)], kernel)
    assert status == 1
    assert err == [f"bsdbpf: cannot write {path}: No such file or directory"]
    assert read_stats(kernel) == []  # the descriptor was closed


def test_capture_says_where_the_packets_are_when_the_file_cannot_be_finished(
        kernel: Kernel, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    path = tmp_path / "full.pcap"
    with injecting(kernel, "em0", [ether(0, 64)]):
        status, _, err = run(capsys, ["capture", "-c", "1", "-w", str(path), "--immediate",
                                      "--no-traffic", "--timeout", "20"], kernel)
    assert status == 1
    assert err[-2].startswith("bsdbpf: 1 packet captured;")
    (temporary,) = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    assert err[-1] == (f"bsdbpf: cannot finish {path}: No space left on device; what was "
                       f"written is in {temporary}")
    assert len(read_pcap(temporary)[1]) == 1


def test_packet_line_without_a_wall_clock() -> None:
    pkt = Packet(memoryview(b"\x01\x02\x03"), 60, 12 * 10**9 + 345_678_901,
                 lib.BPF_T_MICROTIME | lib.BPF_T_MONOTONIC)
    assert packet_line(pkt) == "12.345678 3/60 0102 03"


def popen_capture(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, BSDBPF_SYSTEM="sim")
    return subprocess.Popen([sys.executable, "-m", "bsdbpf", "capture", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_quick_start_command_in_a_real_process() -> None:
    """The README's first command: ``python3 -m bsdbpf capture --count 10``."""
    proc = popen_capture("--count", "10")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(out.splitlines()) == 10
    assert all(LINE.match(line) for line in out.splitlines())
    lines = err.splitlines()
    assert lines[0] == f"{SIM_LINE} (1000 frames/s)"
    assert lines[-1].startswith("bsdbpf: 10 packets captured; kernel: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_cleanly_and_keeps_the_file(tmp_path: Path, sig: int) -> None:
    path = tmp_path / "cut.pcap"
    proc = popen_capture("-w", str(path))
    assert proc.stderr is not None
    first = [proc.stderr.readline() for _ in range(2)]
    assert first[1].startswith("bsdbpf: capturing on em0"), first
    time.sleep(1.5)  # over the 1 s read timeout: at least one buffer was taken
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    header, records = read_pcap(path)
    assert header[0] == 0xA1B23C4D
    summary = err.splitlines()[-1]
    assert summary.startswith(f"bsdbpf: {len(records)} packets captured (interrupted);")
    assert records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pcap"]


# -- zerocopy, sysctl -------------------------------------------------------------


def zerocopy_enable(kernel: Kernel) -> int:
    return int.from_bytes(kernel.sysctlbyname("net.bpf.zerocopy_enable"), sys.byteorder)


def test_zerocopy_on_off_round_trip(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, ["zerocopy"], kernel)
    assert (status, out[0][:30]) == (0, "zero-copy BPF is disabled (net")
    status, out, err = run(capsys, ["zerocopy", "on"], kernel)
    assert (status, out) == (0, ["net.bpf.zerocopy_enable: 0 -> 1"])
    assert "the change lasts only until this command exits" in err[0]
    assert zerocopy_enable(kernel) == 1
    status, out, _ = run(capsys, ["zerocopy", "status"], kernel)
    assert (status, out) == (0, ["zero-copy BPF is enabled (net.bpf.zerocopy_enable=1)"])
    status, out, _ = run(capsys, ["zerocopy", "off"], kernel)
    assert (status, out) == (0, ["net.bpf.zerocopy_enable: 1 -> 0"])
    assert zerocopy_enable(kernel) == 0


def test_sysctl_lists_the_bpf_integers(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    kernel.sysctlbyname("net.bpf.maxinsns", (4096).to_bytes(4, sys.byteorder))
    status, out, err = run(capsys, ["sysctl"], kernel)
    assert status == 0
    assert out == [
        "net.bpf.zerocopy_enable: 0",
        "net.bpf.bufsize: 4096",
        "net.bpf.maxbufsize: 524288",
        "net.bpf.maxinsns: 4096",
        "net.bpf.optimize_writers: 0",
    ]
    assert err == []


def test_sysctl_sets_and_reads_back(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, ["sysctl", "bufsize=0x2000", "net.bpf.maxbufsize=1048576",
                                  "net.bpf.bufsize"], kernel)
    assert status == 0
    assert out == ["net.bpf.bufsize: 4096 -> 8192", "net.bpf.maxbufsize: 524288 -> 1048576",
                   "net.bpf.bufsize: 8192"]
    with Descriptor(system=kernel) as d:
        assert d.buffer_size == 8192  # the kernel took it


@pytest.mark.parametrize(("argv", "message"), [
    (["sysctl", "net.bpf.nope"],
     "bsdbpf: [Errno 2] sysctl net.bpf.nope: No such file or directory. This kernel has no "
     "such sysctl"),
    (["sysctl", "net.bpf.nope=1"],
     "bsdbpf: [Errno 2] sysctl net.bpf.nope: No such file or directory. This kernel has no "
     "such sysctl"),
    (["sysctl", "bufsize=big"], "bsdbpf: net.bpf.bufsize=big: the value must be an integer"),
    (["sysctl", "bufsize=4294967296"],
     "bsdbpf: net.bpf.bufsize=4294967296: out of range for a 4-byte int"),
    (["sysctl", "net.bpf.stats"],
     "bsdbpf: net.bpf.stats is a table, not an integer: `bsdbpf stats` shows it"),
])
def test_sysctl_errors_are_one_clear_line(
        kernel: Kernel, capsys: pytest.CaptureFixture[str], argv: list[str],
        message: str) -> None:
    status, out, err = run(capsys, argv, kernel)
    assert (status, out, err) == (1, [], [message])
    assert kernel.sysctls["net.bpf.bufsize"] == 4096


def test_sysctl_goes_on_after_an_error(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, ["sysctl", "nope", "maxinsns"], kernel)
    assert status == 1
    assert out == ["net.bpf.maxinsns: 512"]
    assert len(err) == 1


@pytest.mark.parametrize("argv", [
    ["sysctl", "bufsize=8192"], ["zerocopy", "on"], ["stats"], ["stats", "--zero"],
])
def test_unprivileged_writes_and_stats_need_root(
        capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with Kernel(uid=1000) as k:
        k.add_interface("em0")
        status, out, err = run(capsys, argv, k)
        assert k.sysctls["net.bpf.bufsize"] == 4096
        assert k.sysctls["net.bpf.zerocopy_enable"] == 0
    assert (status, out) == (1, [])
    assert len(err) == 1
    assert err[0].endswith("Operation not permitted. Writing sysctls and reading "
                           "net.bpf.stats need root")


def test_unprivileged_reads_work(capsys: pytest.CaptureFixture[str]) -> None:
    with Kernel(uid=1000) as k:
        status, out, _ = run(capsys, ["sysctl", "maxbufsize"], k)
    assert (status, out) == (0, ["net.bpf.maxbufsize: 524288"])


def test_a_bad_bsdbpf_system_is_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BSDBPF_SYSTEM", "vax")
    status, _, err = run(capsys, ["sysctl"], None)
    assert status == 1
    assert err == ["bsdbpf: BSDBPF_SYSTEM='vax': expected 'host' or 'sim'"]


# -- stats ------------------------------------------------------------------------


def test_stats_lists_the_attached_descriptor(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    with Descriptor.open("em0", immediate=True, promiscuous=True, system=kernel) as d, \
            Descriptor(system=kernel):  # not attached: not listed
        for i in range(3):
            kernel.inject("em0", ether(i, 80))
        status, out, err = run(capsys, ["stats"], kernel)
        assert d.stats().recv == 3
    assert status == 0
    assert out[0] == ("  Pid  Netif   Flags      Recv      Drop     Match Sblen Hblen "
                      "Command")
    assert out[1].split() == [str(os.getpid()), "em0", "pifs---", "3", "0", "3",
                              "330", "0", process_name(os.getpid())]  # 2 * 112 + 106
    assert len(out) == 2
    assert "only descriptors this process attached are listed" in err[0]


def test_stats_interface_filter_and_zeroing(
        kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    with Descriptor.open("em0", system=kernel), Descriptor.open("lo0", system=kernel):
        kernel.inject("em0", ether(0, 64))
        _, out, _ = run(capsys, ["stats", "-i", "lo0"], kernel)
        assert [line.split()[1] for line in out[1:]] == ["lo0"]
        status, out, _ = run(capsys, ["stats", "--zero"], kernel)
        assert (status, out) == (0, ["net.bpf.stats: counters zeroed"])
        assert [r.recv for r in read_stats(kernel)] == [0, 0]
