"""The ``bsdbpf`` command line: ``capture``, ``filter``, ``zerocopy``, ``sysctl``,
``stats`` and ``bench``.

Run ``python3 -m bsdbpf --help`` (or ``bsdbpf --help`` once installed).  On a
host that is not FreeBSD the commands run against the simulated kernel,
:mod:`bsdbpf.sim`, which lives inside the process: every invocation starts
with a fresh one, so a setting made by one command is gone for the next.

:func:`main` takes the arguments and, for tests and embedding, the system to
use; it returns the exit status.  Errors print one line (naming what failed
and what to do) and exit with status 1; mistakes in the arguments exit with 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

from bsdbpf._version import __version__
from bsdbpf.backend import default_system
from bsdbpf.cli.admin import cmd_stats, cmd_sysctl, cmd_zerocopy
from bsdbpf.cli.bench import MODES, cmd_bench
from bsdbpf.cli.capture import cmd_capture, cmd_filter
from bsdbpf.cli.common import PROG, CommandError, note
from bsdbpf.cli.host import make_host
from bsdbpf.errors import BPFError
from bsdbpf.pcap import MAX_SNAPLEN
from bsdbpf.system import System

__all__ = ["build_parser", "main"]

DEFAULT_BUFFER_KIB = 512  # libpcap's default; the kernel caps it at net.bpf.maxbufsize
MAX_BUFFER_KIB = 0xFFFFFFFF // 1024  # BIOCSBLEN takes a u_int of bytes


def _integer(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _count(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def _snaplen(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= MAX_SNAPLEN:
        raise argparse.ArgumentTypeError(
            f"{value}: must be between 0 and {MAX_SNAPLEN} (0 means {MAX_SNAPLEN}, as in tcpdump)")
    return value or MAX_SNAPLEN


def _buffer_kib(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= MAX_BUFFER_KIB:
        raise argparse.ArgumentTypeError(
            f"{value}: must be between 1 and {MAX_BUFFER_KIB} KiB (the kernel caps it at "
            "net.bpf.maxbufsize anyway)")
    return value * 1024


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more")
    return value


def _duration(text: str) -> float:
    try:
        value = _seconds(text)
    except argparse.ArgumentTypeError:  # its "0 or more" would not do either
        value = 0.0
    if value == 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number of seconds above 0")
    return value


def _rate(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: must be 0 (flat out) or more")
    return value


def _add_descriptor_options(add: Callable[..., object]) -> None:
    """-B and -p: the descriptor settings capture and bench share."""
    add("-B", "--buffer-size", type=_buffer_kib, default=DEFAULT_BUFFER_KIB * 1024,
        metavar="KiB", help=f"kernel buffer size in KiB (default {DEFAULT_BUFFER_KIB})")
    add("-p", "--no-promiscuous-mode", dest="no_promisc", action="store_true",
        help="do not put the interface in promiscuous mode")


def _add_capture(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cap = sub.add_parser(
        "capture", help="capture packets and print them or write a pcap file (like tcpdump)",
        description="Capture packets on an interface, with tcpdump's options. Prints one line "
                    "per packet as `tcpdump -n` does, or writes a pcap file; the counters go "
                    "to stderr at the end. EXPRESSION is a tcpdump filter expression.")
    add = cap.add_argument
    add("expression", nargs="*", metavar="EXPRESSION",
        help="only packets matching this filter expression (pcap-filter(7) syntax)")
    add("-i", "--interface", metavar="IFACE",
        help="interface to capture on (default: the first up one that is not a loopback)")
    add("-D", "--list-interfaces", action="store_true",
        help="list the interfaces, their link types and state, and exit")
    add("-c", "--count", type=_count, metavar="N", help="stop after N packets")
    add("--timeout", type=_seconds, metavar="S",
        help="stop after S seconds, taking what the kernel holds at that moment")
    add("-w", "--write", metavar="FILE",
        help="write the packets to FILE as pcap (- is standard output)")
    add("-r", "--read", metavar="FILE", help="read packets from a pcap FILE (- is standard input)")
    add("-U", "--packet-buffered", action="store_true",
        help="write (or print) each packet at once, not per buffer")
    add("-s", "--snapshot-length", "--snaplen", dest="snaplen", type=_snaplen, metavar="N",
        help=f"keep at most N bytes of each packet (0: {MAX_SNAPLEN})")
    _add_descriptor_options(add)
    add("-Q", "--direction", choices=("in", "out", "inout"),
        help="only packets received (in), sent (out) or both (inout, the default)")
    add("-Z", "--relinquish-privileges", dest="user", metavar="USER",
        help="after opening the device and the output file, run as USER")
    add("--immediate-mode", "--immediate", dest="immediate", action="store_true",
        help="deliver each packet as it arrives rather than per buffer or second")
    add("--time-stamp-precision", dest="precision", choices=("micro", "nano"),
        help="print (and write with -w) micro- or nanosecond times (default: micro on "
             "screen, nano in files)")
    add("-t", dest="stamp", action="count", default=0,
        help="-t no time, -tt seconds since the epoch, -ttt delta since the previous "
             "packet, -tttt date and time, -ttttt delta since the first (default: local "
             "time of day)")
    add("-n", dest="numeric", action="store_true",
        help="do not resolve names (never done: accepted for tcpdump's sake)")
    add("-v", "--verbose", action="count", default=0, help="more detail (IP header fields)")
    add("-x", dest="hex", action="count", default=0,
        help="also print each packet in hex (-xx: with the link header)")
    add("-X", dest="hex_ascii", action="count", default=0,
        help="also print each packet in hex and ASCII (-XX: with the link header)")
    add("-q", "--quiet", action="store_true", help="no live status line on a terminal")
    add("-d", dest="dump", action="count", default=0,
        help="print the compiled filter as assembler (-dd: C array, -ddd: decimal) and exit")
    add("--zerocopy", choices=("auto", "on", "off"), default="auto",
        help="zero-copy buffers: auto uses them if net.bpf.zerocopy_enable=1; on fails "
             "without them (the simulated kernel turns them on); default: auto")
    add("--no-traffic", action="store_true",
        help="on the simulated kernel, do not generate traffic")
    add("--version", action="version", version=f"{PROG} version {__version__}")
    cap.set_defaults(run=cmd_capture)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bsdbpf`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="FreeBSD's /dev/bpf: capture packets, switch zero-copy buffers, read "
                    "and set net.bpf sysctls, list BPF descriptors. Off FreeBSD it runs on "
                    "a simulated FreeBSD kernel, fresh for every command.")
    parser.add_argument("--version", action="version", version=f"{PROG} version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_capture(sub)

    flt = sub.add_parser(
        "filter", help="compile a tcpdump filter expression and print the program",
        description="Compile EXPRESSION with libpcap, as tcpdump -d does, and print the BPF "
                    "program: as assembler (-d, the default), a C array (-dd) or decimal "
                    "numbers (-ddd). No device is opened: -y names the link type.")
    flt.add_argument("expression", nargs="+", metavar="EXPRESSION")
    flt.add_argument("-d", dest="dump", action="count", default=0,
                     help="-d assembler (default), -dd C array, -ddd decimal")
    flt.add_argument("-y", "--linktype", default="EN10MB", metavar="TYPE",
                     help="link type to compile for: EN10MB (default), NULL, LOOP, RAW, ... "
                          "or a DLT number")
    flt.add_argument("-s", "--snapshot-length", "--snaplen", dest="snaplen", type=_snaplen,
                     metavar="N", help=f"what ret returns for a match (default {MAX_SNAPLEN})")
    flt.add_argument("-O", "--no-optimize", action="store_true",
                     help="do not run libpcap's optimizer")
    flt.set_defaults(run=cmd_filter)

    zc = sub.add_parser(
        "zerocopy", help="show or switch net.bpf.zerocopy_enable",
        description="Show whether zero-copy BPF buffers are allowed "
                    "(net.bpf.zerocopy_enable), or allow (on) or forbid (off) them for "
                    "descriptors opened afterwards. Switching needs root.")
    zc.add_argument("action", nargs="?", choices=("status", "on", "off"), default="status")
    zc.set_defaults(run=cmd_zerocopy)

    ctl = sub.add_parser(
        "sysctl", help="read or set net.bpf sysctls, like sysctl(8)",
        description="Without arguments (or with -a), list the net.bpf sysctls. NAME reads "
                    "one, or a whole subtree (net.bpf); NAME=VALUE sets it (as root); a NAME "
                    "without dots is under net.bpf.")
    ctl.add_argument("settings", nargs="*", metavar="NAME[=VALUE]")
    ctl.add_argument("-a", dest="all", action="store_true",
                     help="list every sysctl bsdbpf knows (the net.bpf tree)")
    ctl.add_argument("-n", dest="values_only", action="store_true",
                     help="print values only, without names")
    ctl.add_argument("-d", dest="describe", action="store_true",
                     help="print the descriptions instead of the values")
    ctl.set_defaults(run=cmd_sysctl)

    st = sub.add_parser(
        "stats", help="list BPF descriptors and their counters, like netstat -B",
        description="List every BPF descriptor attached to an interface, from "
                    "net.bpf.stats, as netstat -B does. Needs root.")
    st.add_argument("-i", "--interface", metavar="IFACE", help="only descriptors on IFACE")
    st.add_argument("-z", "--zero", action="store_true",
                    help="zero the counters of every descriptor instead (netstat -B -z)")
    st.set_defaults(run=cmd_stats)

    bench = sub.add_parser(
        "bench", help="measure how fast packets are taken, buffered and zero-copy",
        description="Capture on IFACE for a while in each buffer mode and print packets "
                    "taken per second, the consuming thread's CPU time per packet and the "
                    "kernel's counters. On FreeBSD the interface's own traffic is measured "
                    "(needs root); the simulated kernel offers frames from its generator.")
    add = bench.add_argument
    add("-i", "--interface", metavar="IFACE",
        help="interface to measure on (default: the first up one that is not a loopback)")
    add("--mode", choices=sorted(MODES), default="both",
        help="buffered, zerocopy or both, one after the other (default: both; zero-copy "
             "needs net.bpf.zerocopy_enable=1)")
    add("--seconds", type=_duration, default=3.0, metavar="S",
        help="how long each mode runs (default 3)")
    add("-c", "--count", type=_count, metavar="N", help="end a mode early after N packets")
    add("--api", choices=("packets", "batches"), default="packets",
        help="take each packet with packets() (default) or each buffer with batches()")
    _add_descriptor_options(add)
    add("--rate", type=_rate, metavar="PPS",
        help="simulated kernel only: frames per second its generator offers (0: flat out; "
             "default 1000000)")
    add("--size", type=_count, metavar="BYTES",
        help="simulated kernel only: bytes per generated frame (default 64)")
    add("--json", action="store_true", help="print the results as JSON")
    bench.set_defaults(run=cmd_bench)
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
        status: int = args.run(args, make_host(system))
    except (BPFError, CommandError) as err:
        note(str(err))
        return 1
    except OSError as err:  # an environmental fault not met above: still one line
        note(f"{err.strerror or err}" + (f": {err.filename}" if err.filename else ""))
        return 1
    except KeyboardInterrupt:
        return 130
    return status
