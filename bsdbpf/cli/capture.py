"""``bsdbpf capture``: tcpdump's conventions on FreeBSD's /dev/bpf.

The order of a capture is tcpdump's: open and configure the descriptor,
install the filter, lock it (with ``-Z``), open the output file, drop
privileges (``-Z``), then read until ``-c`` packets, ``--timeout`` or a stop
signal; at the end take what the kernel still holds, finish the file and
print the counters.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import math
import os
import pwd
import select
import sys
import time
from typing import IO, Any, Callable

from bsdbpf import filter as bpf_filter
from bsdbpf._native import lib
from bsdbpf.cli.common import CommandError, note, plural
from bsdbpf.cli.host import SIM_RATE, Host, Traffic
from bsdbpf.cli.output import PacketPrinter
from bsdbpf.cli.signals import CaptureSignals
from bsdbpf.descriptor import Descriptor, Direction
from bsdbpf.errors import BPFError, InterfaceNotFound, from_errno
from bsdbpf.pcap import MAX_SNAPLEN, PcapReader, PcapWriter
from bsdbpf.records import Batch, Packet

__all__ = ["cmd_capture", "summary_lines"]

STATUS_INTERVAL = 1.0  # seconds between updates of the status line (and longest wait)
DRAIN_BATCHES = 4  # at stop: at most the kernel's two buffers, twice over
IDLE_BACKOFF = 0.005  # readable yet nothing to take (zero-copy reclaim): wait a little
DIRECTIONS = {"in": Direction.IN, "out": Direction.OUT, "inout": Direction.INOUT}
ZEROCOPY_ARG: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}
# DLT value -> name; where two names share a value the first in sorted order wins.
DLT_NAMES = {getattr(lib, n): n[4:] for n in sorted(dir(lib), reverse=True) if n[:4] == "DLT_"}


def dlt_name(dlt: int) -> str:
    return f"{DLT_NAMES.get(dlt, '?')} ({dlt})"


# -- the output ---------------------------------------------------------------------


class Output:
    """Where packets go: printed lines, or a pcap file (``-w``)."""

    def __init__(self, args: argparse.Namespace, dlt: int, snaplen: int) -> None:
        self.per_packet = args.packet_buffered
        self.stdout: IO[str] = sys.stdout
        self.writer: PcapWriter | None = None
        self.name = args.write or "standard output"
        self.printer = PacketPrinter(dlt, stamp=args.stamp, nano=args.precision == "nano",
                                     verbose=args.verbose, hex_level=args.hex,
                                     ascii_level=args.hex_ascii)
        if args.write is None:
            return
        nano = args.precision != "micro"
        try:
            if args.write == "-":
                self.name = "standard output"
                self.writer = PcapWriter(sys.stdout.buffer, dlt, snaplen, nanoseconds=nano)
            else:
                self.writer = PcapWriter(args.write, dlt, snaplen, nanoseconds=nano)
        except OSError as err:
            raise CommandError(f"cannot write {args.write}: {err.strerror or err}") from None

    def put(self, pkt: Packet) -> None:
        if self.writer is not None:
            self.writer.write_packet(pkt)
        else:
            lines = self.printer.lines(bytes(pkt.data), pkt.wirelen, pkt.timestamp_ns,
                                       pkt.tstamp)
            self.stdout.write("\n".join(lines) + "\n")
        if self.per_packet:
            self.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        else:
            self.stdout.flush()

    def failure(self, err: OSError) -> CommandError:
        """The one line for a write that failed (a full disk, say)."""
        kept = ""
        if self.writer is not None and self.writer.name is not None:
            kept = (f"; {self.name} keeps the {plural(self.writer.packets_written, 'packet')} "
                    "written before, up to the last whole record")
        return CommandError(f"cannot write {self.name}: {err.strerror or err}{kept}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        else:
            self.stdout.flush()


# -- privileges -------------------------------------------------------------------


def drop_privileges(user: str, output: Output, host: Host) -> str:
    """Become ``user`` (its uid, gid and groups), as tcpdump's ``-Z`` does, after
    handing it the output file.  Refuses to go on as root if that fails."""
    try:
        pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        raise CommandError(f"-Z {user}: no such user") from None
    if os.geteuid() != 0:
        if pw.pw_uid == os.geteuid():
            return f"already running as {pw.pw_name}"
        raise CommandError(f"-Z {user}: only root can change to another user; run without "
                           "-Z, or as root")
    if output.writer is not None and output.writer.name is not None:
        try:
            os.fchown(output.writer.fileno(), pw.pw_uid, pw.pw_gid)
        except OSError as err:
            raise CommandError(f"-Z {user}: cannot give {output.name} to {pw.pw_name}: "
                               f"{err.strerror}") from None
    try:
        os.setgroups(os.getgrouplist(pw.pw_name, pw.pw_gid))
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except OSError as err:
        raise CommandError(f"-Z {user}: cannot become {pw.pw_name} ({err.strerror}); "
                           "refusing to go on with root's privileges") from None
    if pw.pw_uid != 0 and 0 in (os.getuid(), os.geteuid(), os.getgid(), os.getegid()):
        raise CommandError(f"-Z {user}: the process kept root's ids after the change; "
                           "refusing to go on with root's privileges")
    host.privileges_dropped()
    group = grp.getgrgid(pw.pw_gid).gr_name if pw.pw_gid else "wheel"
    return f"running as {pw.pw_name} (uid {pw.pw_uid}, group {group}) from now on"


# -- the capture loop ---------------------------------------------------------------


def summary_lines(taken: int, d: Descriptor) -> list[str]:
    """tcpdump's three counters, and the zero-copy buffers consumed."""
    stats = d.stats()
    lines = [f"{plural(taken, 'packet')} captured",
             f"{plural(stats.recv, 'packet')} received by filter",
             f"{plural(stats.drop, 'packet')} dropped by kernel"]
    if d.zerocopy:
        lines.append(f"{plural(d.buffers_consumed, 'zero-copy buffer')} consumed")
    else:
        lines.append("0 zero-copy buffers consumed (buffered mode)")
    return lines


class StatusLine:
    """The live line on a terminal: packets, drops, rate, buffer mode."""

    def __init__(self, stream: IO[str], enabled: bool, mode: str) -> None:
        self.stream, self.enabled, self.mode = stream, enabled, mode
        self._last = time.monotonic()
        self._last_taken = 0
        self._shown = False

    def update(self, taken: int, d: Descriptor, now: float, force: bool = False) -> None:
        if not self.enabled or (now - self._last < STATUS_INTERVAL and not force):
            return
        rate = (taken - self._last_taken) / max(now - self._last, 1e-3)
        self._last, self._last_taken = now, taken
        stats = d.stats()
        self.stream.write(f"\r\x1b[K{plural(taken, 'packet')} captured, {stats.drop} dropped "
                          f"by kernel, {rate:.0f} packets/s, {self.mode}")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


class CaptureLoop:
    """Reads batches until ``count`` packets, the deadline or a stop signal."""

    def __init__(self, d: Descriptor, output: Output, count: int | None, *,
                 signals: CaptureSignals, status: StatusLine,
                 info: Callable[[int], None]) -> None:
        self.d, self.output, self.count = d, output, count
        self.signals, self.status, self.info = signals, status, info
        self.taken = 0

    @property
    def done(self) -> bool:
        return self.count is not None and self.taken >= self.count

    def _take(self, batch: Batch) -> None:
        with batch:
            for pkt in batch:
                if self.done:
                    break
                self.output.put(pkt)
                self.taken += 1
        self.output.flush()

    def run(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = select.poll()
        fd = self.d.fileno()
        poller.register(fd, select.POLLIN)
        wakeup = self.signals.fileno()
        if wakeup is not None:
            poller.register(wakeup, select.POLLIN)
        while not self.done and self.signals.stop is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if self.signals.info:
                self.signals.info = False
                self.status.clear()
                self.info(self.taken)
            self.status.update(self.taken, self.d, now)
            wait = STATUS_INTERVAL if deadline is None else min(STATUS_INTERVAL, deadline - now)
            events = poller.poll(math.ceil(wait * 1000))
            self.signals.clear()
            if not any(f == fd for f, _ in events):
                continue
            batch = self.d.next_batch(0)
            if batch is None:
                time.sleep(IDLE_BACKOFF)
                continue
            self._take(batch)

    def drain(self) -> None:
        """Take what the kernel still holds, including a partly filled buffer."""
        if self.done:
            return
        with contextlib.suppress(BPFError):
            self.d.immediate = True  # the store buffer becomes readable; allowed when locked
        for _ in range(DRAIN_BATCHES):
            batch = self.d.next_batch(0)
            if batch is None:
                return
            self._take(batch)
            if self.done:
                return


# -- the command --------------------------------------------------------------------


def open_on(host: Host, ifname: str, **options: Any) -> Descriptor:
    """:meth:`Descriptor.open` on the host's system; a missing interface's
    error lists the ones there are."""
    try:
        return Descriptor.open(ifname, system=host.system, **options)
    except InterfaceNotFound as err:
        names = ", ".join(i.name for i in host.interfaces(link_types=False)) or "none"
        raise from_errno(err.errno or 0, err.op, ifname=ifname, cls=type(err),
                         hint=f"the interfaces are: {names} (`bsdbpf capture -D`)") from None


def _open_descriptor(args: argparse.Namespace, host: Host, ifname: str) -> Descriptor:
    return open_on(
        host, ifname, zerocopy=ZEROCOPY_ARG[args.zerocopy], buffer_size=args.buffer_size,
        immediate=args.immediate, snaplen=args.snaplen, promiscuous=not args.no_promisc,
        filter=" ".join(args.expression) or None,
        direction=DIRECTIONS[args.direction] if args.direction else None)


def _zerocopy_fallback(d: Descriptor, host: Host) -> str | None:
    """Why --zerocopy auto fell back to buffered mode, if it did."""
    reason = d.zerocopy_fallback_reason
    if reason and host.simulated:  # `bsdbpf zerocopy on` would not outlive its own process
        reason = ("the simulated kernel has net.bpf.zerocopy_enable=0, as FreeBSD does; "
                  "--zerocopy on sets it")
    return reason


def list_interfaces(host: Host) -> int:
    """``-D``: one line per interface, numbered as tcpdump numbers them."""
    for i, iface in enumerate(host.interfaces(), 1):
        state = {True: "Up", False: "Down", None: "?"}[iface.up]
        types = ", ".join(DLT_NAMES.get(t, str(t)) for t in iface.dlts) or "? (needs root)"
        print(f"{i}.{iface.name} [{state}] link-types {types}")
    return 0


def dump_program(args: argparse.Namespace, host: Host) -> int:
    """``-d``, ``-dd``, ``-ddd``: print the filter compiled for the interface's
    link type and exit, as tcpdump does."""
    dlt = lib.DLT_EN10MB
    ifname = args.interface or host.default_interface()
    for iface in host.interfaces():
        if iface.name == ifname and iface.dlts:
            dlt = iface.dlts[0]
    program = bpf_filter.compile(" ".join(args.expression), dlt, args.snaplen or MAX_SNAPLEN)
    print(program.dump(min(args.dump, 3)), end="")
    return 0


def link_type(text: str) -> int:
    """A ``DLT_*`` value from its name (``EN10MB``, ``DLT_NULL``) or number."""
    name = text.upper().removeprefix("DLT_")
    value = getattr(lib, f"DLT_{name}", None)
    if isinstance(value, int):
        return value
    try:
        return int(text, 0)
    except ValueError:
        raise CommandError(f"-y {text}: not a link type; use a name such as EN10MB, NULL, "
                           "LOOP or RAW, or a DLT number") from None


def cmd_filter(args: argparse.Namespace, host: Host) -> int:
    """``bsdbpf filter EXPRESSION``: compile it and print the program, no device needed."""
    program = bpf_filter.compile(" ".join(args.expression), link_type(args.linktype),
                                 args.snaplen or MAX_SNAPLEN, optimize=not args.no_optimize)
    print(program.dump(min(max(args.dump, 1), 3)), end="")
    return 0


def read_file(args: argparse.Namespace, host: Host) -> int:
    """``-r FILE``: print (or ``-w``: copy) the packets of a pcap file."""
    try:
        reader = PcapReader(sys.stdin.buffer if args.read == "-" else args.read)
    except OSError as err:
        raise CommandError(f"cannot read {args.read}: {err.strerror or err}") from None
    except ValueError as err:
        raise CommandError(f"{args.read}: {err}") from None
    with reader:
        note(f"reading from file {args.read}, link-type {dlt_name(reader.dlt)}, snapshot "
             f"length {reader.snaplen}")
        program = None
        if args.expression:
            program = bpf_filter.compile(" ".join(args.expression), reader.dlt,
                                         reader.snaplen or MAX_SNAPLEN)
        output = Output(args, reader.dlt, reader.snaplen or MAX_SNAPLEN)
        taken = 0
        tstamp = lib.BPF_T_NANOTIME
        try:
            for rec in reader:
                if args.count is not None and taken >= args.count:
                    break
                if program is not None and not program.run(rec.data, rec.wirelen):
                    continue
                output.put(Packet(memoryview(rec.data), rec.wirelen, rec.timestamp_ns, tstamp))
                taken += 1
        except BrokenPipeError:
            _quiet_stdout()
        except OSError as err:
            raise output.failure(err) from None
        finally:
            with contextlib.suppress(BrokenPipeError):
                output.close()
        if reader.truncated:
            note(f"{args.read}: the file ends inside a record (still being written, or cut "
                 f"short); {plural(taken, 'packet')} read before it")
    return 0


def _quiet_stdout() -> None:
    # Nothing more can go to stdout; keep Python's exit flush quiet too.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _announce(args: argparse.Namespace, host: Host, d: Descriptor, *, zerocopy_set: bool,
              dropped: str | None) -> None:
    """The notes before the packets: the simulator, the user, where it listens."""
    if host.simulated:
        said = ["net.bpf.zerocopy_enable set to 1 for --zerocopy on"] if zerocopy_set else []
        said.append("no traffic generated (--no-traffic)" if args.no_traffic else
                    f"generating traffic on {d.interface} ({SIM_RATE} frames/s)")
        note(f"{host.note}: " + "; ".join(said))
    if dropped:
        note(dropped)
    mode = (f"zero-copy, 2 buffers of {d.buffer_size} bytes" if d.zerocopy else
            f"buffered, buffer of {d.buffer_size} bytes")
    note(f"listening on {d.interface}, link-type {dlt_name(d.dlt)}, snapshot length "
         f"{args.snaplen or MAX_SNAPLEN} bytes; {mode}")
    fallback = _zerocopy_fallback(d, host)
    if fallback:
        note(f"zero-copy not used: {fallback}")


def cmd_capture(args: argparse.Namespace, host: Host) -> int:
    if args.list_interfaces:
        return list_interfaces(host)
    if args.dump:
        return dump_program(args, host)
    if args.read is not None:
        return read_file(args, host)
    ifname = args.interface or host.default_interface()
    if ifname is None:
        raise CommandError("no network interface found: name one with -i")
    zerocopy_set = args.zerocopy == "on" and host.allow_zerocopy()
    failure: BPFError | CommandError | None = None
    with contextlib.ExitStack() as stack:
        d = stack.enter_context(_open_descriptor(args, host, ifname))
        snaplen = args.snaplen or MAX_SNAPLEN
        if args.user is not None:
            d.lock()  # nobody can reconfigure it once privileges are gone
        output = Output(args, d.dlt, snaplen)
        stack.callback(_close_quietly, output)
        dropped = drop_privileges(args.user, output, host) if args.user is not None else None
        _announce(args, host, d, zerocopy_set=zerocopy_set, dropped=dropped)
        traffic: Traffic | None = None
        if not args.no_traffic:
            traffic = host.start_traffic(ifname, d.dlt)
        if traffic is not None:
            stack.callback(traffic.stop)
        status = StatusLine(sys.stderr, not args.quiet and sys.stderr.isatty() and (
            args.write is not None or not sys.stdout.isatty()),
            "zero-copy" if d.zerocopy else "buffered")

        def info(taken: int) -> None:
            try:
                lines = summary_lines(taken, d)
            except BPFError as err:  # the kernel's counters are out of reach
                lines = [f"{plural(taken, 'packet')} captured", f"(kernel counters: {err})"]
            for line in lines:
                print(line, file=sys.stderr, flush=True)

        with CaptureSignals() as signals:
            loop = CaptureLoop(d, output, args.count, signals=signals, status=status,
                               info=info)
            try:
                loop.run(args.timeout)
                if traffic is not None:
                    traffic.stop()  # what the kernel holds now is all there is
                loop.drain()
            except BrokenPipeError:
                _quiet_stdout()
            except OSError as err:
                failure = err if isinstance(err, BPFError) else output.failure(err)
            try:
                output.close()
            except BrokenPipeError:
                _quiet_stdout()
            except OSError as err:
                failure = failure or output.failure(err)
            status.clear()
            info(loop.taken)
    if failure is not None:
        raise failure
    return 0


def _close_quietly(output: Output) -> None:
    with contextlib.suppress(OSError):
        output.close()
