"""bsdbpf against FreeBSD's own tools, on the real kernel only.

Each test compares what bsdbpf says or does with what FreeBSD's base system
says (``sysctl(8)``, ``netstat -B``) or with the epair(4) pair's traffic.
On any other system they are collected and skipped (see conftest.py).

Command-line options used: ``capture -i -c -w --timeout``, ``stats -i``,
``sysctl NAME`` (all present today) and ``capture -Z USER`` (required by the
command-line issue: tcpdump's privilege drop).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from bsdbpf import interfaces
from bsdbpf import sysctl as bsdbpf_sysctl
from bsdbpf.descriptor import Descriptor
from bsdbpf.errors import ZeroCopyDisabled

pytestmark = [pytest.mark.kernel, pytest.mark.root]

ZEROCOPY_ENABLE = "net.bpf.zerocopy_enable"
BPF_INT_SYSCTLS = ("net.bpf.zerocopy_enable", "net.bpf.bufsize", "net.bpf.maxbufsize",
                   "net.bpf.maxinsns", "net.bpf.optimize_writers")
WAIT = 10.0


def frame(n: int, size: int = 80) -> bytes:
    """A broadcast frame of the IEEE local experimental ethertype, numbered ``n``."""
    head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5"
    return head + n.to_bytes(4, "big") + bytes(size - len(head) - 4)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=check)


def bsdbpf(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The command line, as a user runs it."""
    return run(sys.executable, "-m", "bsdbpf", *args, check=check)


def sysctl8(name: str) -> int:
    return int(run("sysctl", "-n", name).stdout.strip())


def until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- sysctl -----------------------------------------------------------------

def test_sysctl_agrees_with_sysctl8() -> None:
    """`bsdbpf sysctl NAME` prints the value sysctl(8) prints, for every net.bpf int."""
    for name in BPF_INT_SYSCTLS:
        line = bsdbpf("sysctl", name).stdout.strip()
        m = re.fullmatch(rf"{re.escape(name)}: (-?\d+)", line)
        assert m, f"unexpected `bsdbpf sysctl {name}` output: {line!r}"
        assert int(m.group(1)) == sysctl8(name), name


def test_interfaces_agree_with_ifconfig(epair: tuple[str, str]) -> None:
    """bsdbpf.interfaces() (if_nameindex and SIOCGIFFLAGS) against ifconfig -l [-u]."""
    found = interfaces(link_types=False)
    assert {i.name for i in found} == set(run("ifconfig", "-l").stdout.split())
    assert {i.name for i in found if i.up} == set(run("ifconfig", "-l", "-u").stdout.split())
    assert set(epair) <= {i.name for i in found if i.up}


@pytest.mark.zerocopy
def test_zerocopy_toggled_and_restored(epair: tuple[str, str], traffic: Any) -> None:
    """bsdbpf.sysctl.zerocopy_enabled switches net.bpf.zerocopy_enable for a
    block: off, a zero-copy descriptor is refused; on, it captures over the
    pair; afterwards sysctl(8) shows the value from before, even after an error."""
    ifname, _ = epair
    original = sysctl8(ZEROCOPY_ENABLE)
    with bsdbpf_sysctl.zerocopy_enabled(False):
        assert sysctl8(ZEROCOPY_ENABLE) == 0
        with pytest.raises(ZeroCopyDisabled):
            Descriptor.open(ifname, zerocopy=True).close()
    assert sysctl8(ZEROCOPY_ENABLE) == original
    with bsdbpf_sysctl.zerocopy_enabled(True):
        assert sysctl8(ZEROCOPY_ENABLE) == 1
        with Descriptor.open(ifname, zerocopy=True, immediate=True) as d:
            assert d.zerocopy
            sent = [frame(i) for i in range(3)]
            for f in sent:
                traffic(ifname, f)
            got = [bytes(p.data) for p in d.packets(count=3, timeout=WAIT)]
        assert got == sent
    assert sysctl8(ZEROCOPY_ENABLE) == original
    with pytest.raises(KeyError), bsdbpf_sysctl.zerocopy_enabled(not original):
        raise KeyError("the block fails")
    assert sysctl8(ZEROCOPY_ENABLE) == original


@pytest.mark.zerocopy
def test_bench_measures_both_modes_over_the_epair(epair: tuple[str, str]) -> None:
    """bsdbpf bench on the pair: both rows with zero-copy enabled, the zero-copy row
    skipped (with the advice) when it is not; the sysctl is left as it was."""
    ifname, _ = epair
    original = sysctl8(ZEROCOPY_ENABLE)
    with bsdbpf_sysctl.zerocopy_enabled(True):
        done = bsdbpf("bench", "-i", ifname, "--seconds", "0.5", "--json")
        report = json.loads(done.stdout)
        assert [r["mode"] for r in report["results"]] == ["buffered", "zero-copy"]
        assert all(r["received"] >= r["packets"] >= 0 for r in report["results"])
        assert report["skipped"] == {}
        assert report["simulated"] is False
    with bsdbpf_sysctl.zerocopy_enabled(False):
        done = bsdbpf("bench", "-i", ifname, "--seconds", "0.2", "--json")
        report = json.loads(done.stdout)
        assert [r["mode"] for r in report["results"]] == ["buffered"]
        assert "bsdbpf zerocopy on" in report["skipped"]["zero-copy"]
        refused = bsdbpf("bench", "-i", ifname, "--mode", "zerocopy", check=False)
        assert refused.returncode == 1
        assert "net.bpf.zerocopy_enable=0" in refused.stderr
    assert sysctl8(ZEROCOPY_ENABLE) == original


# -- stats --------------------------------------------------------------------

ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+\d+\s+.*$")


def table(text: str) -> dict[tuple[int, str], tuple[str, int, int, int]]:
    """netstat -B's rows: (pid, netif) -> (flags, recv, drop, match); Sblen and
    Hblen change with every packet and are left out."""
    rows = {}
    for line in text.splitlines()[1:]:
        m = ROW.match(line)
        if m:
            pid, netif, flags, recv, drop, match = m.groups()
            rows[int(pid), netif] = (flags, int(recv), int(drop), int(match))
    return rows


def test_stats_agrees_with_netstat_B(epair: tuple[str, str], traffic: Any) -> None:
    """`bsdbpf stats -i IF` lists this process's descriptor with the counters
    `netstat -B` shows."""
    ifname, _ = epair
    with Descriptor.open(ifname, zerocopy=False, immediate=True):
        for i in range(5):
            traffic(ifname, frame(i))
        ours = (os.getpid(), ifname)
        theirs = table(run("netstat", "-B").stdout)
        mine = table(bsdbpf("stats", "-i", ifname).stdout)
    assert ours in theirs, f"netstat -B does not list this process on {ifname}"
    assert mine[ours] == theirs[ours]
    assert mine[ours][1] == 5  # recv: the five frames, nothing else crosses the pair
    assert {k: v for k, v in theirs.items() if k[1] == ifname} == mine


# -- capture --------------------------------------------------------------------

def pcap_frames(path: Path) -> list[bytes]:
    """The packets of a pcap file (either byte order, µs or ns)."""
    data = path.read_bytes()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out, off = [], 24
    while off < len(data):
        _, _, incl, _ = struct.unpack_from(order + "IIII", data, off)
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out


def capturing(pid: int, ifname: str) -> bool:
    """Whether process ``pid`` has a descriptor on ``ifname`` yet."""
    return (pid, ifname) in table(run("netstat", "-B").stdout)


def capture_three(ifname: str, traffic: Any, out: Path, *extra: str,
                  after_first: Callable[[int], None] | None = None) -> subprocess.Popen[str]:
    """Run `bsdbpf capture -c 3 -w out` and send it three frames; ``after_first``
    is called with the capture's pid once it has the first frame."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bsdbpf", "capture", "-i", ifname, "-c", "3",
         "--timeout", "60", "-w", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert until(lambda: capturing(proc.pid, ifname) or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()[1]
        for i in range(3):
            traffic(ifname, frame(i))
            if i == 0 and after_first is not None:
                after_first(proc.pid)
        proc.wait(timeout=WAIT * 3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc


def test_capture_over_the_epair(epair: tuple[str, str], traffic: Any, tmp_path: Path) -> None:
    """`bsdbpf capture -i IF -c 3 -w FILE` writes the three frames sent across the pair."""
    ifname, _ = epair
    out = tmp_path / "three.pcap"
    proc = capture_three(ifname, traffic, out)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert pcap_frames(out) == [frame(i) for i in range(3)]


def test_capture_drops_privileges(epair: tuple[str, str], traffic: Any, tmp_path: Path) -> None:
    """`capture -Z nobody`: the descriptor is opened as root, then the process
    runs as nobody and the file it writes belongs to nobody."""
    ifname, _ = epair
    nobody = pwd.getpwnam("nobody")
    out = tmp_path / "dropped.pcap"
    uids: list[int] = []

    def running_as(pid: int) -> None:
        uids.append(int(run("ps", "-o", "uid=", "-p", str(pid)).stdout))

    proc = capture_three(ifname, traffic, out, "-Z", "nobody", after_first=running_as)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert uids == [nobody.pw_uid]
    assert out.stat().st_uid == nobody.pw_uid
    assert pcap_frames(out) == [frame(i) for i in range(3)]
