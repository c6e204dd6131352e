"""Capture throughput on the simulated kernel, the C traffic generator flat out.

For each case a fresh :class:`bsdbpf.sim.Kernel` gets ``--count`` frames of
``--size`` bytes from its C generator (``rate=0``) on ``em0``, and one
Descriptor (``--buffer-size`` bytes per buffer) takes them:

* ``generator, no reader``: nobody reads while the generator runs; the rate
  is frames offered per second (the ceiling every other case works under).
* ``buffered packets()`` / ``buffered batches()``: read(2) mode.
* ``zero-copy packets()`` / ``zero-copy batches()``: shared buffers.

``packets()`` yields a Packet per record; ``batches()`` walks each batch's
records (a Packet each, made in C, nothing copied).  The rate is
generator frames received per second, from just before the generator starts
to the moment the last one was taken.  The consumer waits with a 10 ms
timeout, so each run ends with up to about 20 ms of waiting for the partly
filled last buffer (no immediate mode).  After the run every frame offered
must be received or counted as dropped (BIOCGSTATS); a run where it is not is
reported and marked invalid.

    python bench/capture_throughput.py --count 20000000 --size 64 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, NamedTuple

from machine import describe, machine, spread

from bsdbpf import Descriptor, raw
from bsdbpf.sim import Kernel, TrafficGenerator

IFNAME = "em0"
POLL = 0.01  # packets()/batches() timeout while the generator runs
SENTINEL_TRIES = 8

# A walk takes what the descriptor yields within `timeout`; it returns how many
# packets it took and the caplen of the last one (-1 if none).
Walk = Callable[[Descriptor, float], tuple[int, int]]


def walk_packets(d: Descriptor, timeout: float) -> tuple[int, int]:
    n, last = 0, -1
    for pkt in d.packets(timeout=timeout):
        n += 1
        last = pkt.caplen  # read now: the packet is gone once its buffer goes back
    return n, last


def walk_batches(d: Descriptor, timeout: float) -> tuple[int, int]:
    n, last = 0, -1
    for batch in d.batches(timeout=timeout):
        for pkt in batch:
            last = pkt.caplen
        n += len(batch)
    return n, last


CASES: dict[str, tuple[bool, Walk | None]] = {
    "generator, no reader": (False, None),
    "buffered packets()": (False, walk_packets),
    "buffered batches()": (False, walk_batches),
    "zero-copy packets()": (True, walk_packets),
    "zero-copy batches()": (True, walk_batches),
}


class Run(NamedTuple):
    seconds: float  # wall clock
    cpu: float  # CPU time of the consumer's thread (time.thread_time) in that span
    offered: int  # by the generator
    received: int  # generator frames taken by the consumer
    dropped: int  # BIOCGSTATS bs_drop
    sentinels: int
    granted: int  # BIOCGBLEN

    @property
    def valid(self) -> bool:
        return self.received + self.dropped == self.offered


def consume(
    d: Descriptor, kernel: Kernel, gen: TrafficGenerator, walk: Walk, size: int,
    *, poll: float = POLL,
) -> tuple[int, int]:
    """Take packets until the generator is done and nothing it offered is left
    in the kernel; returns (packets taken, sentinel frames injected).

    FreeBSD reclaims an acknowledged zero-copy buffer only when the next packet
    arrives, so the last frames may wait for one: live traffic provides it,
    here sentinel frames (of another size) do.  Once one is taken, every frame
    before it has been taken or dropped.
    """
    sentinel = bytes(size + 1)
    received, last = 0, -1
    while gen.running:
        n, tail = walk(d, poll)
        received, last = received + n, tail if n else last
    gen.wait()
    n, tail = walk(d, 0)
    received, last = received + n, tail if n else last
    sentinels = 0
    while last != len(sentinel) and sentinels < SENTINEL_TRIES:
        kernel.inject(IFNAME, sentinel)
        sentinels += 1
        n, tail = walk(d, 0)
        received, last = received + n, tail if n else last
    return received, sentinels


def run_once(case: str, count: int, size: int, buffer_size: int) -> Run:
    zerocopy, walk = CASES[case]
    with Kernel() as kernel:
        kernel.add_interface(IFNAME)
        raw.sysctl_int(kernel, "net.bpf.zerocopy_enable", 1)
        with Descriptor.open(IFNAME, zerocopy=zerocopy, buffer_size=buffer_size,
                             system=kernel) as d:
            start, cpu = time.perf_counter(), time.thread_time()
            gen = kernel.generate(IFNAME, count, size=size, rate=0)
            if walk is None:
                gen.wait()
                seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
                received, sentinels = consume(d, kernel, gen, walk_packets, size)
            else:
                received, sentinels = consume(d, kernel, gen, walk, size)
                seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
            stats = d.stats()
            return Run(seconds, cpu, gen.offered, received - sentinels, stats.drop, sentinels,
                       d.buffer_size)


def show(s: dict[str, float], spec: str) -> str:
    return f"{s['median']:{spec}} [{s['min']:{spec}}-{s['max']:{spec}}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="frames per run")
    ap.add_argument("--size", type=int, default=64, help="bytes per frame (>= 22)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per case")
    ap.add_argument("--buffer-size", type=int, default=512 * 1024,
                    help="bytes per buffer (buffered mode: at most net.bpf.maxbufsize, 512 KiB)")
    ap.add_argument("--case", nargs="+", choices=list(CASES), default=list(CASES),
                    help="only these cases (default: all)")
    ap.add_argument("--json", metavar="OUT", help="also write every run as JSON")
    args = ap.parse_args(argv)

    info = machine()
    print(describe(info))
    print(f"{args.count} frames of {args.size} bytes, --buffer-size {args.buffer_size}, "
          f"{args.repeat} runs per case: median [min-max]\n")
    runs: dict[str, list[Run]] = {case: [] for case in args.case}
    for _ in range(args.repeat):  # interleaved, so a burst of load hits every case alike
        for case in args.case:
            run = run_once(case, args.count, args.size, args.buffer_size)
            if not run.valid:
                print(f"WARNING: {case}: received {run.received} + dropped {run.dropped} "
                      f"!= offered {run.offered}: run marked invalid", file=sys.stderr)
            runs[case].append(run)

    print("| case | packets/s | consumer CPU ns/packet | consumer CPU/wall | dropped | valid |")
    print("|---|---|---|---|---|---|")
    rows = []
    for case, rs in runs.items():
        idle = CASES[case][1] is None
        rate = spread([(r.offered if idle else r.received) / r.seconds for r in rs])
        cost = spread([r.cpu / max(r.received, 1) * 1e9 for r in rs])
        share = spread([r.cpu / r.seconds for r in rs])
        drop = spread([r.dropped / r.offered for r in rs])
        valid = all(r.valid for r in rs)
        what = "offered" if idle else "received"
        print(f"| {case} | {show(rate, ',.0f')} {what} | {'-' if idle else show(cost, ',.0f')} "
              f"| {'-' if idle else show(share, '.0%')} | {show(drop, '.2%')} "
              f"| {'yes' if valid else 'NO'} |")
        rows.append({"case": case, "rate": what, "packets_per_s": rate, "drop_fraction": drop,
                     "cpu_ns_per_packet": None if idle else cost, "valid": valid,
                     "runs": [r._asdict() for r in rs]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "cases": rows}, f, indent=1)
    return 0 if all(row["valid"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
