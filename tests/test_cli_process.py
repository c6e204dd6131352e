"""The ``bsdbpf`` command as a real ``python3 -m bsdbpf`` process: signals,
privilege drop, pipes, a filling disk, and other programs reading its files.

On the simulator the command makes its own kernel and traffic; on FreeBSD's
kernel (BSDBPF_SYSTEM=host) it captures on the test interface while the
``traffic`` fixture sends the same sample frames there."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import CLI_TRAFFIC, ON_HOST, sim_only

from bsdbpf._native import lib
from bsdbpf.cli.host import sample_frames
from bsdbpf.pcap import PcapReader

ROOT = Path(__file__).resolve().parent.parent
PACKET_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{6} (IP|IP6|ARP)[ ,]")
SUMMARY = re.compile(r"(\d+) packets? captured\n(\d+) packets? received by filter\n"
                     r"(\d+) packets? dropped by kernel\n(.*zero-copy buffers? consumed.*)\n$")
WAIT = 600  # seconds: an upper bound for a loaded machine, not a speed
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change user")


STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_capture_left_running() -> Iterator[None]:
    """A test that fails half-way leaves no capture running behind it."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def start(*args: str, system: str = "sim", **kw: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, BSDBPF_SYSTEM=system, PYTHONPATH=str(ROOT))
    kw.setdefault("stdout", subprocess.PIPE)
    proc = subprocess.Popen([sys.executable, "-m", "bsdbpf", *args], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True, **kw)
    STARTED.append(proc)
    return proc


class Bsdbpf:
    """``bsdbpf(*args, **popen_kw)``: the command started on the system under
    test.  On the simulator it makes its own kernel and traffic.  On FreeBSD a
    capture gets ``-i`` the test interface, where a thread sends the
    simulator's sample frames (about 1000/s, as the simulator does) until
    :meth:`stop_traffic`."""

    def __init__(self, ifname: str | None = None,
                 traffic: Callable[..., None] | None = None) -> None:
        self.ifname, self.traffic = ifname, traffic
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        if traffic is not None:
            self.thread = threading.Thread(target=self._send)
            self.thread.start()

    def _send(self) -> None:
        assert self.traffic is not None
        frames = list(sample_frames(lib.DLT_EN10MB))
        try:
            sent = 0
            while not self.done.wait(0.001):
                self.traffic(self.ifname, frames[sent % len(frames)])
                sent += 1
        except BaseException as err:  # reported by the test's thread, at the end
            self.errors.append(err)

    def __call__(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        if self.ifname is None:
            return start(*args, **kw)
        if args[:1] == ("capture",):
            args = ("capture", "-i", self.ifname, *args[1:])
        return start(*args, system="host", **kw)

    def stop_traffic(self) -> None:
        """No more frames (the simulated command stops its own when it stops)."""
        self.done.set()
        if self.thread is not None:
            self.thread.join(WAIT)
            assert not self.thread.is_alive()
        assert not self.errors, self.errors


@pytest.fixture
def bsdbpf(request: pytest.FixtureRequest) -> Iterator[Bsdbpf]:
    """The command on the system under test (see :class:`Bsdbpf`)."""
    if not ON_HOST:
        yield Bsdbpf()
        return
    command = Bsdbpf(request.getfixturevalue("ifname"), request.getfixturevalue("traffic"))
    try:
        yield command
    finally:
        command.stop_traffic()


def finish(proc: subprocess.Popen[str]) -> None:
    """Wait for a command whose standard output another process read."""
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err


def wait_listening(proc: subprocess.Popen[str]) -> list[str]:
    """The notes up to the ``listening on`` line (the capture has started)."""
    assert proc.stderr is not None
    lines: list[str] = []
    while not lines or "listening on" not in lines[-1]:
        line = proc.stderr.readline()
        assert line, f"the command ended early: {lines}"
        lines.append(line)
    return lines


def until_written(path: Path, timeout: float = WAIT) -> None:
    """Wait until the capture's file holds at least one whole record."""
    deadline = time.monotonic() + timeout
    while True:
        if path.exists() and path.stat().st_size > 24:
            with PcapReader(path) as reader:  # a write may be under way: a cut record is fine
                if next(iter(reader), None) is not None:
                    return
        assert time.monotonic() < deadline, f"nothing written to {path}"
        time.sleep(0.05)


def counters(err: str) -> tuple[int, int, int]:
    m = SUMMARY.search(err)
    assert m, err
    return int(m[1]), int(m[2]), int(m[3])


def records(path: Path) -> list[Any]:
    with PcapReader(path) as reader:
        got = list(reader)
    assert not reader.truncated, "the last record is cut short"
    return got


@sim_only(CLI_TRAFFIC)
def test_quick_start_command() -> None:
    """The README's first command: ``python3 -m bsdbpf capture --count 10``."""
    proc = start("capture", "--count", "10")
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert len(out.splitlines()) == 10
    assert all(PACKET_LINE.match(line) for line in out.splitlines()), out
    assert err.splitlines()[0] == ("bsdbpf: simulated FreeBSD kernel (not FreeBSD): "
                                   "generating traffic on em0 (1000 frames/s)")
    assert counters(err)[0] == 10
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_drains_counts_and_finishes_the_file(bsdbpf: Bsdbpf, tmp_path: Path,
                                                            sig: int) -> None:
    path = tmp_path / "cut.pcap"
    proc = bsdbpf("capture", "-w", str(path))
    wait_listening(proc)
    until_written(path)  # the named file is there and readable while it grows
    bsdbpf.stop_traffic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    captured, received, dropped = counters(err)
    assert len(records(path)) == captured > 0
    # The traffic stopped before the kernel's buffers were drained: every packet the
    # descriptor received was written or dropped, none left behind.
    assert captured + dropped == received
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pcap"]


def test_sigint_stops_a_background_job_that_inherited_it_ignored(bsdbpf: Bsdbpf,
                                                                  tmp_path: Path) -> None:
    def background_job() -> None:  # what the shell does for `cmd &`
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = bsdbpf("capture", "-w", str(tmp_path / "bg.pcap"), preexec_fn=background_job)
    wait_listening(proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert counters(err)[0] == len(records(tmp_path / "bg.pcap"))


def test_sigusr1_prints_the_counters_and_goes_on(bsdbpf: Bsdbpf, tmp_path: Path) -> None:
    proc = bsdbpf("capture", "-w", str(tmp_path / "info.pcap"))
    assert proc.stderr is not None
    wait_listening(proc)
    time.sleep(1.2)
    proc.send_signal(signal.SIGUSR1)
    line = ""
    while "captured" not in line:  # after the notes
        line = proc.stderr.readline()
        assert line, "the command ended"
    first = [line] + [proc.stderr.readline() for _ in range(3)]
    assert re.fullmatch(r"\d+ packets? captured\n", first[0]), first
    assert first[1].endswith("received by filter\n")
    assert proc.poll() is None  # still capturing
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0
    assert counters(err)[0] >= int(first[0].split()[0])


def _uid_of(pid: int) -> int:
    """The real uid of ``pid``: Linux's /proc/PID/status, else ps(1).  FreeBSD has
    a /proc directory, empty unless procfs(5) is mounted, and procfs's status
    file has no Uid: line."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        status = ""
    found = re.search(r"^Uid:\s+(\d+)", status, re.M)
    if found:
        return int(found[1])
    ps = subprocess.run(["ps", "-o", "ruid=", "-p", str(pid)], capture_output=True,
                        text=True, timeout=60, check=True)
    return int(ps.stdout)


@root_only
def test_Z_drops_to_the_user_who_then_owns_the_file(bsdbpf: Bsdbpf, tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    path = tmp_path / "z.pcap"
    proc = bsdbpf("capture", "-Z", "nobody", "-w", str(path))
    notes = wait_listening(proc)
    assert any(f"running as nobody (uid {nobody.pw_uid}" in n for n in notes), notes
    until_written(path)
    assert _uid_of(proc.pid) == nobody.pw_uid
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert (path.stat().st_uid, path.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert len(records(path)) == counters(err)[0] > 0


def test_write_to_standard_output_feeds_a_pipe(bsdbpf: Bsdbpf) -> None:
    reader = "import sys; from bsdbpf.pcap import PcapReader; " \
             "print(len(list(PcapReader(sys.stdin.buffer))))"
    for target in ("-", "/dev/stdout"):
        proc = bsdbpf("capture", "-c", "20", "-w", target)
        counter = subprocess.run([sys.executable, "-c", reader], stdin=proc.stdout,
                                 capture_output=True, text=True, timeout=WAIT, check=True,
                                 cwd=ROOT)
        finish(proc)
        assert counter.stdout.strip() == "20"


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
@pytest.mark.parametrize("target", ["-", "/dev/stdout"])
@sim_only(CLI_TRAFFIC)  # the second frame the command generates is the SSH one
def test_tcpdump_reads_standard_output_through_a_pipe(target: str) -> None:
    proc = start("capture", "-c", "9", "-w", target, "--time-stamp-precision", "micro")
    dump = subprocess.run(["tcpdump", "-n", "-r", "-"], stdin=proc.stdout,
                          capture_output=True, text=True, timeout=WAIT, check=True)
    finish(proc)
    lines = dump.stdout.splitlines()
    assert len(lines) == 9
    assert lines[1].split(" ", 1)[1] == ("IP 10.0.0.2.22 > 10.0.0.1.50000: Flags [P.], seq "
                                         "1000:1017, ack 2000, win 65535, length 17: SSH: "
                                         "SSH-2.0-OpenSSH")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_back_exactly_what_was_written(bsdbpf: Bsdbpf, tmp_path: Path) -> None:
    """bsdbpf capture -c 100 -w x.pcap 'udp': 100 UDP packets that tshark reads back equal."""
    path = tmp_path / "x.pcap"
    proc = bsdbpf("capture", "-c", "100", "-w", str(path), "udp")
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert counters(err)[0] == 100
    udp = subprocess.run(["tshark", "-r", str(path), "-Y", "udp", "-T", "fields", "-e",
                          "frame.number"], capture_output=True, text=True, timeout=WAIT,
                         check=True)
    assert len(udp.stdout.split()) == 100
    shark = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e",
         "frame.len", "-e", "frame.cap_len"],
        capture_output=True, text=True, timeout=WAIT, check=True)
    rows = [line.split("\t") for line in shark.stdout.splitlines()]
    ours = records(path)
    assert len(rows) == len(ours) == 100
    for (epoch, wirelen, caplen), rec in zip(rows, ours):
        assert (int(wirelen), int(caplen)) == (rec.wirelen, len(rec.data))
        assert round(float(epoch) * 1e6) == rec.timestamp_ns // 1000
    # And the bytes: tshark reads the file and writes it again, unchanged.
    again = tmp_path / "again.pcap"
    subprocess.run(["tshark", "-r", str(path), "-F", "nsecpcap", "-w", str(again)],
                   capture_output=True, timeout=WAIT, check=True)
    assert records(again) == ours


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_ends_with_counters_one_line_and_whole_records(bsdbpf: Bsdbpf,
                                                                   small_disk: Path) -> None:
    path = small_disk / "full.pcap"
    proc = bsdbpf("capture", "-w", str(path), "--immediate")
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1
    assert "Traceback" not in err
    kept = records(path)  # readable to the end: no record cut in two
    last = err.splitlines()[-1]
    assert last == (f"bsdbpf: cannot write {path}: No space left on device; {path} keeps the "
                    f"{len(kept)} packets written before, up to the last whole record")
    assert counters(err[: err.rindex("bsdbpf: cannot write")])[0] >= len(kept) > 0
    assert os.path.getsize(path) > 32 * 1024

