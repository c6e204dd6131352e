"""``bsdbpf bench``: how fast this host's bsdbpf takes packets from the kernel,
in buffered and in zero-copy mode, on one interface.

Each mode gets a fresh descriptor for the same time (or packet count); the
figures are packets taken per second, the consuming thread's CPU time per
packet (``time.thread_time``: user and system, so ``read(2)``'s copy counts),
and the kernel's own counters (BIOCGSTATS).  On FreeBSD the interface's own
traffic is measured, so the two modes see whatever traffic each one's
interval brings; on the simulated kernel its C generator offers the same
frames at the same rate to both.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any, NamedTuple

from bsdbpf import sysctl
from bsdbpf.cli.capture import open_on
from bsdbpf.cli.common import PROG, CommandError, note
from bsdbpf.cli.host import Host
from bsdbpf.descriptor import Descriptor

__all__ = ["Measurement", "cmd_bench"]

POLL = 0.05  # longest wait for a buffer; the clock is checked at least this often
SIM_BENCH_RATE = 1_000_000  # frames per second the simulated kernel offers by default
SIM_BENCH_SIZE = 64
MODES = {"buffered": (False,), "zerocopy": (True,), "both": (False, True)}
ZEROCOPY_OFF = (f"zero-copy buffers are disabled ({sysctl.ZEROCOPY_ENABLE}=0): "
                f"`{PROG} zerocopy on` (as root) enables them")


class Measurement(NamedTuple):
    """One mode's run."""

    mode: str  #: ``buffered`` or ``zero-copy``
    packets: int  #: packets taken
    seconds: float  #: wall clock from the first wait to the deadline or the count
    cpu_seconds: float  #: the consuming thread's CPU time in that span
    received: int  #: BIOCGSTATS bs_recv: packets the kernel offered the descriptor
    dropped: int  #: BIOCGSTATS bs_drop: of those, dropped for lack of buffer space
    buffers: int  #: buffers taken from the kernel

    @property
    def packets_per_second(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ns_per_packet(self) -> float | None:
        return self.cpu_seconds * 1e9 / self.packets if self.packets else None

    @property
    def drop_fraction(self) -> float:
        return self.dropped / self.received if self.received else 0.0


def _take_batches(d: Descriptor, deadline: float, count: int | None) -> int:
    taken = 0
    while (count is None or taken < count) and time.perf_counter() < deadline:
        batch = d.next_batch(min(POLL, max(0.0, deadline - time.perf_counter())))
        if batch is not None:
            taken += len(batch)
    return taken


def _take_packets(d: Descriptor, deadline: float, count: int | None) -> int:
    # A timer raises the flag at the deadline: reading the clock per packet would
    # be measured too, and every Nth packet is late when packets come slowly
    # (packets() times out only after POLL without one).
    expired = [False]
    timer = threading.Timer(max(0.0, deadline - time.perf_counter()),
                            expired.__setitem__, (0, True))
    timer.start()
    try:
        taken = 0
        while (count is None or taken < count) and not expired[0]:
            for _ in d.packets(None if count is None else count - taken, timeout=POLL):
                taken += 1
                if expired[0]:
                    break
        return taken
    finally:
        timer.cancel()


def _measure(args: argparse.Namespace, host: Host, ifname: str, zerocopy: bool) -> Measurement:
    take = _take_packets if args.api == "packets" else _take_batches
    with open_on(host, ifname, zerocopy=zerocopy, buffer_size=args.buffer_size,
                 promiscuous=not args.no_promisc) as d:
        traffic = host.start_generator(ifname, args.size or SIM_BENCH_SIZE,
                                       SIM_BENCH_RATE if args.rate is None else args.rate)
        try:
            wall, cpu = time.perf_counter(), time.thread_time()
            taken = take(d, wall + args.seconds, args.count)
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        finally:
            if traffic is not None:
                traffic.stop()
        stats = d.stats()
        return Measurement("zero-copy" if zerocopy else "buffered", taken, wall, cpu,
                           stats.recv, stats.drop, d.buffers_consumed)


def _table(results: list[Measurement]) -> list[str]:
    row = "{:<10} {:>10} {:>11} {:>13} {:>12} {:>18} {:>8}"
    lines = [row.format("mode", "packets", "packets/s", "CPU ns/pkt", "kernel recv",
                        "dropped", "buffers")]
    for m in results:
        ns = "-" if m.cpu_ns_per_packet is None else f"{m.cpu_ns_per_packet:,.0f}"
        lines.append(row.format(m.mode, m.packets, f"{m.packets_per_second:,.0f}", ns,
                                m.received, f"{m.dropped} ({m.drop_fraction:.2%})", m.buffers))
    return lines


def cmd_bench(args: argparse.Namespace, host: Host) -> int:
    ifname = args.interface or host.default_interface()
    if ifname is None:
        raise CommandError("no interface to measure on: name one with -i")
    if not host.simulated and (args.rate is not None or args.size is not None):
        raise CommandError("--rate and --size shape the simulated kernel's traffic; on "
                           "FreeBSD bench measures the interface's own traffic")
    results: list[Measurement] = []
    skipped: dict[str, str] = {}
    zerocopy_allowed = args.mode != "buffered" and (
        host.allow_zerocopy() or bool(sysctl.get(sysctl.ZEROCOPY_ENABLE, system=host.system)))
    for zerocopy in MODES[args.mode]:
        if zerocopy and not zerocopy_allowed:
            if args.mode == "zerocopy":
                raise CommandError(ZEROCOPY_OFF)
            skipped["zero-copy"] = ZEROCOPY_OFF
            continue
        results.append(_measure(args, host, ifname, zerocopy))
    if args.json:
        print(json.dumps(_report(args, host, ifname, results, skipped), indent=2))
    else:
        print(f"{PROG} bench: {ifname}, {args.seconds:g} s per mode"
              + (f" or {args.count} packets" if args.count else "")
              + f", {args.buffer_size // 1024} KiB buffers, {args.api}()")
        for line in _table(results):
            print(line)
        for mode, why in skipped.items():
            note(f"{mode} skipped: {why}")
    if not host.simulated and results and not any(m.received for m in results):
        note(f"no packet reached {ifname} in {args.seconds:g} s per mode: bench measures "
             "the interface's own traffic")
    if host.simulated:
        rate = SIM_BENCH_RATE if args.rate is None else args.rate
        note(f"{host.note}: its generator offered {args.size or SIM_BENCH_SIZE}-byte frames "
             + (f"at {rate:,} per second" if rate else "flat out"))
    return 0


def _report(args: argparse.Namespace, host: Host, ifname: str, results: list[Measurement],
            skipped: dict[str, str]) -> dict[str, Any]:
    return {
        "interface": ifname,
        "simulated": host.simulated,
        "api": args.api,
        "seconds_per_mode": args.seconds,
        "count": args.count,
        "buffer_size": args.buffer_size,
        "results": [{**m._asdict(), "packets_per_second": m.packets_per_second,
                     "cpu_ns_per_packet": m.cpu_ns_per_packet} for m in results],
        "skipped": skipped,
    }
