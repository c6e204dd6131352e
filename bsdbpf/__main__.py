"""The ``bsdbpf`` command line: ``capture``, ``zerocopy``, ``sysctl`` and ``stats``.

Run ``python3 -m bsdbpf --help`` (or ``bsdbpf --help`` once installed).  On a
host that is not FreeBSD the commands run against the simulated kernel,
:mod:`bsdbpf.sim`, which lives inside the process: every invocation starts
with a fresh one, so a setting made by one command is gone for the next.

:func:`main` takes the arguments and, for tests and embedding, the system to
use; it returns the exit status.  Errors print one line (the exception's
message, which names the operation and what to do) and exit with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable

from bsdbpf import raw
from bsdbpf._native import lib
from bsdbpf.backend import default_system
from bsdbpf.descriptor import BpfStat, Descriptor
from bsdbpf.errors import BPFError, InterfaceNotFound, SysctlNotFound, from_errno
from bsdbpf.pcap import MAX_SNAPLEN, PcapWriter
from bsdbpf.records import Packet
from bsdbpf.sim import Kernel, TrafficGenerator
from bsdbpf.stats import STATS_SYSCTL, DescriptorStats, read_stats, zero_stats
from bsdbpf.system import System

__all__ = ["main"]

PROG = "bsdbpf"
SIM_NOTE = "simulated FreeBSD kernel (not FreeBSD)"
ZEROCOPY_ENABLE = "net.bpf.zerocopy_enable"
BPF_SYSCTLS = (
    ZEROCOPY_ENABLE,
    "net.bpf.bufsize",
    "net.bpf.maxbufsize",
    "net.bpf.maxinsns",
    "net.bpf.optimize_writers",
)
DEFAULT_BUFFER_SIZE = 512 * 1024  # libpcap's; the kernel caps it at net.bpf.maxbufsize
READ_TIMEOUT = 1.0  # seconds a partly filled buffer waits (libpcap's default, 1000 ms)
HEX_BYTES = 24  # bytes shown per packet line: a link header and the start of the next
SIM_RATE = 1000  # frames per second the simulator's generator offers
SIM_FRAME = 64  # bytes per generated frame
SIM_FOREVER = 1 << 62  # frames to generate: until the capture stops it
NS = 1_000_000_000
_ZEROCOPY_ARG: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}
# DLT value -> name; where two names share a value the first in sorted order wins.
_DLT_NAMES = {getattr(lib, n): n[4:] for n in sorted(dir(lib), reverse=True) if n[:4] == "DLT_"}


class CommandError(Exception):
    """A usage problem found by the command line itself (exit status 1)."""


def _note(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr)


# -- sysctl values ------------------------------------------------------------


def _full_name(name: str) -> str:
    """``bufsize`` is short for ``net.bpf.bufsize``."""
    return name if "." in name else f"net.bpf.{name}"


def _get_int(system: System, name: str) -> int:
    if name == STATS_SYSCTL:
        raise CommandError(f"{name} is a table, not an integer: `{PROG} stats` shows it")
    return raw.sysctl_int(system, name)


def _set_int(system: System, name: str, value: int) -> tuple[int, int]:
    """Write an int sysctl; returns (old, new) as the kernel reports them."""
    if not raw.INT_MIN <= value <= raw.INT_MAX:
        raise CommandError(f"{name}={value}: out of range for a 4-byte int")
    old = _get_int(system, name)  # also refuses sysctls that are not ints
    raw.sysctl_int(system, name, value)
    return old, _get_int(system, name)


# -- capture ------------------------------------------------------------------


def _default_interface(system: System) -> str:
    """The first interface that is not a loopback (as tcpdump picks), else the first."""
    if isinstance(system, Kernel):
        names = system.interfaces()
    else:
        try:
            names = [name for _, name in socket.if_nameindex()]
        except OSError:
            names = []
    for name in names:
        if not name.startswith("lo"):
            return name
    if names:
        return names[0]
    raise CommandError("no network interface found: name one with -i")


def _timestamp(pkt: Packet) -> str:
    """ISO 8601 UTC for wall-clock stamps, else seconds.microseconds."""
    try:
        return pkt.datetime.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:  # monotonic clock or no timestamp: not a date
        seconds, ns = divmod(pkt.timestamp_ns, NS)
        return f"{seconds}.{ns // 1000:06d}"


def packet_line(pkt: Packet) -> str:
    """One packet as ``capture`` prints it: time, caplen/wire length, first bytes in hex."""
    head = bytes(pkt.data[:HEX_BYTES]).hex(" ", -2)
    more = " ..." if pkt.caplen > HEX_BYTES else ""
    return f"{_timestamp(pkt)} {pkt.caplen}/{pkt.wirelen} {head}{more}"


def _open_descriptor(args: argparse.Namespace, system: System, ifname: str) -> Descriptor:
    zerocopy = _ZEROCOPY_ARG[args.zerocopy]
    try:
        return Descriptor.open(
            ifname, zerocopy=zerocopy, buffer_size=args.buffer_size,
            immediate=args.immediate, snaplen=args.snaplen, read_timeout=READ_TIMEOUT,
            system=system)
    except InterfaceNotFound as err:
        if not isinstance(system, Kernel):
            raise
        names = ", ".join(system.interfaces()) or "none"
        raise from_errno(err.errno or 0, err.op, ifname=ifname, cls=type(err),
                         hint=f"the simulated kernel's interfaces are: {names}") from None


def _open_writer(path: str, dlt: int, snaplen: int) -> PcapWriter:
    if path == "-":
        return PcapWriter(sys.stdout.buffer, dlt, snaplen)
    try:
        return PcapWriter(path, dlt, snaplen)
    except OSError as err:
        raise CommandError(f"cannot write {path}: {err.strerror or err}") from None


_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                      if hasattr(signal, n))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_signals(handler: Callable[[int, object], None] | int) -> Iterator[None]:
    """Route SIGINT, SIGTERM and SIGHUP to ``handler`` for a while, as tcpdump
    does, so that ``kill`` too ends a capture with its file and summary.
    Signals the process ignores (``nohup``, ``&``) stay ignored; only the main
    thread can set handlers, elsewhere this does nothing."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _STOP_SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


class _Capture:
    """Packets handed to ``emit`` so far, counted as they go (Ctrl-C may stop it
    anywhere)."""

    def __init__(self, d: Descriptor, emit: Callable[[Packet], None],
                 flush: Callable[[], None]) -> None:
        self.d, self.emit, self.flush = d, emit, flush
        self.taken = 0

    def run(self, count: int | None, timeout: float | None) -> None:
        """Take packets until ``count`` of them, or ``timeout`` seconds in all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while count is None or self.taken < count:
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
            batch = self.d.next_batch(remaining)
            if batch is None:
                break  # the deadline came with nothing more
            with batch:
                for pkt in batch:
                    self.emit(pkt)
                    self.taken += 1
                    if self.taken == count:
                        break
            self.flush()


def _start_traffic(system: Kernel, ifname: str, args: argparse.Namespace,
                   zerocopy_set: bool) -> TrafficGenerator | None:
    said = ["net.bpf.zerocopy_enable set to 1 for --zerocopy on"] if zerocopy_set else []
    gen = None
    if args.no_traffic:
        said.append("no traffic generated (--no-traffic)")
    else:
        gen = system.generate(ifname, SIM_FOREVER, size=SIM_FRAME, rate=SIM_RATE)
        said.append(f"generating traffic on {ifname} ({SIM_RATE} frames/s)")
    _note(f"{SIM_NOTE}: " + "; ".join(said))
    return gen


def cmd_capture(args: argparse.Namespace, system: System) -> int:
    ifname = args.interface or _default_interface(system)
    zerocopy_set = False
    if isinstance(system, Kernel) and args.zerocopy == "on" and not _get_int(
            system, ZEROCOPY_ENABLE):
        # A fresh simulated kernel has FreeBSD's default, 0, and nothing else
        # could have changed it: do what the administrator would have done.
        _set_int(system, ZEROCOPY_ENABLE, 1)
        zerocopy_set = True
    out = sys.stdout
    interrupted = broken_pipe = False
    failure: BPFError | CommandError | None = None
    with contextlib.ExitStack() as stack:
        d = stack.enter_context(_open_descriptor(args, system, ifname))
        writer = None
        if args.write:
            writer = stack.enter_context(
                _open_writer(args.write, d.dlt, args.snaplen or MAX_SNAPLEN))
        gen = None
        if isinstance(system, Kernel):
            gen = _start_traffic(system, ifname, args, zerocopy_set)
            if gen is not None:
                stack.callback(gen.stop)
        dlt = d.dlt
        mode = "zero-copy, 2 buffers" if d.zerocopy else "buffered, buffer"
        _note(f"capturing on {ifname}, link-type {_DLT_NAMES.get(dlt, '?')} ({dlt}), "
              f"{mode} of {d.buffer_size} bytes")

        if writer is not None:
            capture = _Capture(d, writer.write_packet, writer.flush)
        else:
            capture = _Capture(d, lambda pkt: print(packet_line(pkt), file=out), out.flush)
        try:
            with _stop_signals(_interrupt):
                capture.run(args.count, args.timeout)
        except KeyboardInterrupt:
            interrupted = True
        except BrokenPipeError:
            broken_pipe = True
        except BPFError as err:  # e.g. the interface went away: summary, then the error
            failure = err
        with _stop_signals(signal.SIG_IGN):  # a second Ctrl-C must not cut this short
            if gen is not None:
                gen.stop()
            if writer is not None:
                try:
                    writer.close()
                except BrokenPipeError:  # -w - into a pipe that was closed
                    broken_pipe = True
                except OSError as err:  # a full disk, say
                    kept = f"; what was written is in {writer.temporary}" if (
                        writer.temporary) else ""
                    failure = CommandError(f"cannot finish {args.write}: "
                                           f"{err.strerror or err}{kept}")
            summary = _summary(d, capture.taken, d.stats(), interrupted,
                               isinstance(system, Kernel))
    if broken_pipe:
        # Nothing more can go to stdout; keep Python's exit flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    _note(summary)
    if failure is not None:
        raise failure
    return 0


def _summary(d: Descriptor, taken: int, stats: BpfStat, interrupted: bool,
             simulated: bool) -> str:
    captured = f"{taken} packet{'s' if taken != 1 else ''} captured"
    mode = "zero-copy" if d.zerocopy else "buffered"
    reason = d.zerocopy_fallback_reason
    if reason and simulated:  # `bsdbpf zerocopy on` would not outlive its own process
        reason = ("the simulated kernel starts with net.bpf.zerocopy_enable=0, as FreeBSD "
                  "does; --zerocopy on turns it on for the capture")
    if reason:
        mode += f" (zero-copy not used: {reason})"
    stop = " (interrupted)" if interrupted else ""
    return (f"{captured}{stop}; kernel: {stats.recv} received, {stats.drop} dropped; "
            f"buffer mode: {mode}")


# -- zerocopy, sysctl ---------------------------------------------------------


SIM_ZEROCOPY_TIP = f"`{PROG} capture --zerocopy on` turns zero-copy on for its capture"


def _sim_settings_note(system: System, tip: str = "") -> None:
    if isinstance(system, Kernel):
        _note(f"{SIM_NOTE}: the change lasts only until this command exits"
              + (f"; {tip}" if tip else ""))


def cmd_zerocopy(args: argparse.Namespace, system: System) -> int:
    if args.action == "status":
        value = _get_int(system, ZEROCOPY_ENABLE)
        if value:
            print(f"zero-copy BPF is enabled ({ZEROCOPY_ENABLE}={value})")
        else:
            print(f"zero-copy BPF is disabled ({ZEROCOPY_ENABLE}=0); "
                  f"`{PROG} zerocopy on` (as root) enables it for new descriptors")
            if isinstance(system, Kernel):
                _note(f"{SIM_NOTE}: each command has a fresh one; {SIM_ZEROCOPY_TIP}")
        return 0
    old, new = _set_int(system, ZEROCOPY_ENABLE, int(args.action == "on"))
    print(f"{ZEROCOPY_ENABLE}: {old} -> {new}")
    _sim_settings_note(system, SIM_ZEROCOPY_TIP)
    return 0


def cmd_sysctl(args: argparse.Namespace, system: System) -> int:
    failed = changed = False
    for item in args.settings or BPF_SYSCTLS:
        name, sep, text = item.partition("=")
        name = _full_name(name.strip())
        try:
            if not sep:
                print(f"{name}: {_get_int(system, name)}")
                continue
            try:
                value = int(text.strip(), 0)
            except ValueError:
                raise CommandError(f"{name}={text}: the value must be an integer") from None
            old, new = _set_int(system, name, value)
            print(f"{name}: {old} -> {new}")
            changed = True
        except SysctlNotFound as err:
            if not args.settings:  # the listing: an older kernel may lack one
                _note(f"{name}: not in this kernel")
                continue
            _note(str(err))
            failed = True
        except (BPFError, CommandError) as err:
            _note(str(err))
            failed = True
    if changed:
        _sim_settings_note(system)
    return 1 if failed else 0


# -- stats --------------------------------------------------------------------


def process_name(pid: int) -> str:
    """The command name of a process, as ``netstat -B`` shows it (``??????``
    if it cannot be found)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()  # Linux; FreeBSD's procfs
    except OSError:
        pass
    try:
        ps = subprocess.run(["ps", "-o", "comm=", "-p", str(pid)], capture_output=True,
                            text=True, timeout=5, check=False)
        name = ps.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return os.path.basename(name) or "??????"


def stats_table(records: Sequence[DescriptorStats]) -> list[str]:
    """The lines ``netstat -B`` prints for these records, header first."""
    row = "{:>5} {:>6} {:>7} {:>9} {:>9} {:>9} {:>5} {:>5} {}"
    lines = [row.format("Pid", "Netif", "Flags", "Recv", "Drop", "Match", "Sblen", "Hblen",
                        "Command")]
    names: dict[int, str] = {}
    for r in records:
        if r.pid not in names:
            names[r.pid] = process_name(r.pid)
        lines.append(row.format(r.pid, r.ifname, r.flags, r.recv, r.drop, r.match,
                                r.store_len, r.hold_len, names[r.pid]))
    return lines


def cmd_stats(args: argparse.Namespace, system: System) -> int:
    if args.zero:
        zero_stats(system)
        print("net.bpf.stats: counters zeroed")
        return 0
    records = [r for r in read_stats(system)
               if args.interface is None or r.ifname == args.interface]
    for line in stats_table(records):
        print(line)
    if isinstance(system, Kernel):
        _note(f"{SIM_NOTE}: it lives in this process, so only descriptors this process "
              "attached are listed")
    return 0


# -- arguments ----------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bsdbpf`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="FreeBSD's /dev/bpf: capture packets, switch zero-copy buffers, read "
                    "and set net.bpf sysctls, list BPF descriptors. Off FreeBSD it runs on "
                    "a simulated FreeBSD kernel, fresh for every command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    cap = sub.add_parser(
        "capture", help="capture packets and print them or write a pcap file",
        description="Capture packets on an interface. Prints one line per packet (time, "
                    "captured/wire length, first bytes in hex) or writes a pcap file; a "
                    "summary goes to stderr at the end, or on Ctrl-C.")
    cap.add_argument("-i", "--interface", metavar="IFACE",
                     help="interface to capture on (default: the first that is not a "
                          "loopback)")
    cap.add_argument("-c", "--count", type=_positive_int, metavar="N",
                     help="stop after N packets (default: until Ctrl-C)")
    cap.add_argument("--timeout", type=_seconds, metavar="S",
                     help="stop after S seconds in all, even if fewer than N packets came")
    cap.add_argument("-w", "--write", metavar="FILE",
                     help="write packets to FILE as a pcap file (nanosecond timestamps) "
                          "instead of printing them; - is standard output")
    cap.add_argument("-s", "--snaplen", type=_positive_int, metavar="N",
                     help="keep at most N bytes of each packet (a RET #N filter)")
    cap.add_argument("--zerocopy", choices=("auto", "on", "off"), default="auto",
                     help="zero-copy buffers: auto uses them if net.bpf.zerocopy_enable=1 "
                          "and says why not otherwise; on fails without them (the simulated "
                          "kernel turns them on); default: auto")
    cap.add_argument("-B", "--buffer-size", type=_positive_int, default=DEFAULT_BUFFER_SIZE,
                     metavar="N",
                     help=f"bytes per kernel buffer (default: {DEFAULT_BUFFER_SIZE}; the "
                          "kernel caps it at net.bpf.maxbufsize)")
    cap.add_argument("--immediate", action="store_true",
                     help="hand each packet over as it arrives instead of when a buffer "
                          f"fills or {READ_TIMEOUT:g} s pass")
    cap.add_argument("--no-traffic", action="store_true",
                     help="on the simulated kernel, do not generate traffic")
    cap.set_defaults(run=cmd_capture)

    zc = sub.add_parser(
        "zerocopy", help="show or switch net.bpf.zerocopy_enable",
        description="Show whether zero-copy BPF buffers are allowed "
                    "(net.bpf.zerocopy_enable), or allow (on) or forbid (off) them for "
                    "descriptors opened afterwards. Switching needs root.")
    zc.add_argument("action", nargs="?", choices=("status", "on", "off"), default="status")
    zc.set_defaults(run=cmd_zerocopy)

    ctl = sub.add_parser(
        "sysctl", help="read or set net.bpf integer sysctls",
        description="Without arguments, list the net.bpf integer sysctls. NAME reads one, "
                    "NAME=VALUE sets it (as root); a NAME without dots is under net.bpf.")
    ctl.add_argument("settings", nargs="*", metavar="NAME[=VALUE]")
    ctl.set_defaults(run=cmd_sysctl)

    st = sub.add_parser(
        "stats", help="list BPF descriptors and their counters, like netstat -B",
        description="List every BPF descriptor attached to an interface, from "
                    "net.bpf.stats, as netstat -B does. Needs root.")
    st.add_argument("-i", "--interface", metavar="IFACE", help="only descriptors on IFACE")
    st.add_argument("-z", "--zero", action="store_true",
                    help="zero the counters instead (netstat -B -z)")
    st.set_defaults(run=cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None, *, system: System | None = None) -> int:
    """Run the ``bsdbpf`` command with ``argv`` (default: ``sys.argv[1:]``) on
    ``system`` (default: :func:`bsdbpf.backend.default_system`); returns the
    exit status."""
    args = build_parser().parse_args(argv)
    try:
        if system is None:
            try:
                system = default_system()
            except ValueError as err:  # a bad BSDBPF_SYSTEM
                raise CommandError(str(err)) from None
        status: int = args.run(args, system)
    except (BPFError, CommandError) as err:
        _note(str(err))
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
