"""The capture path's benchmarks in one run: ``python bench/run.py``.

1. **Per packet**: the same 64-byte frames, once as FreeBSD amd64 BPF records
   (``struct bpf_hdr``, BPF_T_MICROTIME, a ``--records-size`` buffer) and once
   as a pcap file, walked by every consumer touching each packet's length
   and timestamp: a C loop (the limit), bare Python, bsdbpf per packet and
   per batch (numpy sums of the columns), and the Python capture libraries
   python-libpcap, pypcap, pcapy-ng, dpkt and scapy reading the pcap file.
   Consumers are interleaved (one sample of each, then again) so outside
   load falls on all alike; CPU time of this thread, median [min-max].
2. **End to end** on the simulator: its C generator offers 64-byte frames at
   several rates for about ``--seconds`` each; one Descriptor takes them with
   ``packets()`` (touching length and timestamp) in buffered and zero-copy
   mode, with 2x512 KiB and 2x2 MiB buffers.  Consumer CPU per packet, drop
   rate, and system calls per buffer (every call through the System, plus
   poll(2)), counted by wrapping them.
3. A plot of drop rate against offered rate, both modes: ``--plot`` (PNG).

``--json OUT`` keeps every sample.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, Callable

from capture_throughput import IFNAME, Walk, consume
from machine import describe, machine, spread
from parse_records import HDR, build

import bsdbpf.capture
from bsdbpf import Descriptor, raw
from bsdbpf._native import ffi, lib
from bsdbpf.records import Stream, parse
from bsdbpf.sim import Kernel

TSTAMP = lib.BPF_T_MICROTIME
POLL = 0.1  # packets() timeout while the generator runs: longer than a buffer takes to fill

# -- 1. per packet ----------------------------------------------------------------


def write_pcap(path: str, buf: bytearray, end: int) -> None:
    """The records' frames and timestamps as a pcap file (microseconds, Ethernet)."""
    with parse(buf, TSTAMP, end=end) as batch, open(path, "wb") as f:
        f.write(struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        whole = batch.buffer
        for off, caplen, wirelen, ts in zip(batch.offset, batch.caplen, batch.wirelen,
                                            batch.timestamp_ns):
            sec, ns = divmod(ts, 10**9)
            f.write(struct.pack("=IIII", sec, ns // 1000, caplen, wirelen))
            f.write(whole[off:off + caplen])


def consumers(buf: bytearray, end: int, count: int, pcap: str) -> dict[str, Callable[[], int]]:
    """name -> a function walking every packet once, returning the sum of caplens
    (so every consumer provably touched every packet)."""
    ptr = ffi.from_buffer(buf)
    out = ffi.new("int64_t[]", lib.BSDBPF_REC_FIELDS * count)
    nxt = ffi.new("uint32_t *")
    fields = lib.BSDBPF_REC_FIELDS

    n = lib.bsdbpf_parse_records(ptr, 0, end, TSTAMP, out, count, nxt)
    c_total = sum(out[fields * i + lib.BSDBPF_REC_CAPLEN] for i in range(n))

    def c_loop() -> int:  # every record's offset, lengths and timestamp into an array
        n = lib.bsdbpf_parse_records(ptr, 0, end, TSTAMP, out, count, nxt)
        return c_total if n == count else -1

    def bare_python() -> int:
        unpack, s, t = HDR.unpack_from, 0, 0
        off = 0
        while off < end:
            sec, usec, caplen, _datalen, hdrlen = unpack(buf, off)
            s += caplen
            t = sec * 1_000_000_000 + usec * 1000
            off = (off + hdrlen + caplen + 7) & ~7
        return s + 0 * t

    def bsdbpf_packets() -> int:  # what Descriptor.packets() runs per buffer
        pending = [buf]
        s = t = 0
        for pkt in Stream(lambda: parse(pending.pop(), TSTAMP, end=end) if pending else None):
            s += pkt.caplen
            t = pkt.timestamp_ns
        return s + 0 * t

    def bsdbpf_batch_take() -> int:
        s = t = 0
        with parse(buf, TSTAMP, end=end) as batch:
            for pkt in batch.take():
                s += pkt.caplen
                t = pkt.timestamp_ns
        return s + 0 * t

    walkers: dict[str, Callable[[], int]] = {
        "C loop walking the records (the limit)": c_loop,
        "bare Python struct.unpack_from walk": bare_python,
        "bsdbpf packets() per packet": bsdbpf_packets,
        "bsdbpf Batch.take() per packet": bsdbpf_batch_take,
    }
    try:
        np = importlib.import_module("numpy")
    except ImportError:
        np = None
    if np is not None:
        def bsdbpf_columns() -> int:
            with parse(buf, TSTAMP, end=end) as batch:
                s = int(np.frombuffer(batch.caplen, dtype=np.uint32).sum(dtype=np.int64))
                t = int(np.frombuffer(batch.timestamp_ns, dtype=np.int64).sum())
            return s + 0 * t

        walkers["bsdbpf batch columns (numpy sums)"] = bsdbpf_columns
    walkers.update(peers(pcap))
    return walkers


def _load(name: str, module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        print(f"peer {name}: not installed ({err})")
        return None


def peers(path: str) -> dict[str, Callable[[], int]]:
    """The Python capture libraries reading the pcap file; a missing one is
    reported, never replaced."""
    found: dict[str, Callable[[], int]] = {}
    libpcap = _load("python-libpcap", "pylibpcap.pcap")
    if libpcap is not None:
        def python_libpcap() -> int:
            s = t = 0
            for caplen, sec, _data in libpcap.rpcap(path):
                s += caplen
                t = sec
            return s + 0 * t

        found["python-libpcap rpcap()"] = python_libpcap
    pcap = _load("pypcap", "pcap")
    if pcap is not None:
        def pypcap() -> int:
            s, t = 0, 0.0
            for ts, data in pcap.pcap(path):
                s += len(data)
                t = ts
            return s + 0 * int(t)

        found["pypcap iteration"] = pypcap
    pcapy = _load("pcapy-ng", "pcapy")
    if pcapy is not None:
        def pcapy_ng() -> int:
            reader = pcapy.open_offline(path)
            s = t = 0
            while True:
                hdr, _data = reader.next()
                if hdr is None:
                    return s + 0 * t
                s += hdr.getcaplen()
                t = hdr.getts()[0]

        found["pcapy-ng next()"] = pcapy_ng
    dpkt = _load("dpkt", "dpkt")
    if dpkt is not None:
        def dpkt_reader() -> int:
            s, t = 0, 0.0
            with open(path, "rb") as f:
                for ts, data in dpkt.pcap.Reader(f):
                    s += len(data)
                    t = ts
            return s + 0 * int(t)

        found["dpkt pcap.Reader"] = dpkt_reader
    scapy = _load("scapy", "scapy.utils")
    if scapy is not None:
        def scapy_raw() -> int:
            s = t = 0
            with scapy.RawPcapReader(path) as reader:
                for _data, meta in reader:
                    s += meta.caplen
                    t = meta.sec
            return s + 0 * t

        found["scapy RawPcapReader"] = scapy_raw
    return found


def per_packet(args: argparse.Namespace) -> list[dict[str, Any]]:
    buf, end, count = build(64, args.records_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "frames.pcap")
        write_pcap(path, buf, end)
        walkers = consumers(buf, end, count, path)
        expected = {name: fn() for name, fn in walkers.items()}  # warm up, and check
        assert len(set(expected.values())) == 1, expected
        loops = {name: max(1, int(args.sample / max(_cpu(fn), 1e-6))) for name, fn in
                 walkers.items()}
        samples: dict[str, list[float]] = {name: [] for name in walkers}
        for _ in range(args.repeat):
            for name, fn in walkers.items():
                n = loops[name]
                start = time.thread_time()
                for _ in range(n):
                    fn()
                samples[name].append((time.thread_time() - start) / n / count * 1e9)
    rows = [{"consumer": name, "packets": count, "ns_per_packet": spread(ns)}
            for name, ns in samples.items()]
    python_peers = [r for r in rows if r["consumer"] in PEER_NAMES]
    fastest = min(python_peers, key=lambda r: r["ns_per_packet"]["median"], default=None)
    climit = rows[0]["ns_per_packet"]["median"]
    print(f"\n## Per packet: {count} frames of 64 bytes ({args.records_size} bytes of "
          f"records), {args.repeat} samples of ~{args.sample} s CPU, median [min-max]\n")
    print("| consumer | ns/pkt | M pkt/s | vs fastest peer | vs C loop |")
    print("|---|---|---|---|---|")
    for r in rows:
        ns = r["ns_per_packet"]
        vs_peer = (f"{fastest['ns_per_packet']['median'] / ns['median']:.2f}x"
                   if fastest else "-")
        print(f"| {r['consumer']} | {ns['median']:.1f} [{ns['min']:.1f}-{ns['max']:.1f}] | "
              f"{1e3 / ns['median']:.1f} | {vs_peer} | {climit / ns['median']:.2f}x |")
    return rows


PEER_NAMES = {"python-libpcap rpcap()", "pypcap iteration", "pcapy-ng next()",
              "dpkt pcap.Reader", "scapy RawPcapReader"}


def _cpu(fn: Callable[[], int]) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


# -- 2. end to end ---------------------------------------------------------------


class CountingSystem:
    """Passes every call to the kernel, counting them by name."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.kernel, name)

        def call(*args: Any) -> Any:
            self.calls[name] += 1
            return target(*args)

        return call


@contextlib.contextmanager
def counting_polls(calls: Counter[str]) -> Iterator[None]:
    """Count the engine's poll(2) calls (they do not go through the System)."""
    wait = bsdbpf.capture.Capture._wait_readable

    def counted(self: Any, timeout: float | None) -> bool:
        calls["poll"] += 1
        return wait(self, timeout)

    bsdbpf.capture.Capture._wait_readable = counted  # type: ignore[method-assign]
    try:
        yield
    finally:
        bsdbpf.capture.Capture._wait_readable = wait  # type: ignore[method-assign]



def walk_packets(d: Descriptor, timeout: float) -> tuple[int, int]:
    """``packets()``, touching each packet's length and timestamp; returns
    (packets, caplen of the last one)."""
    n = last = 0
    t = 0
    for pkt in d.packets(timeout=timeout):
        last = pkt.caplen
        t = pkt.timestamp_ns
        n += 1
    return n, last + 0 * t


def walk_columns(d: Descriptor, timeout: float) -> tuple[int, int]:
    """``batches()``, summing each batch's caplen and timestamp_ns columns with numpy."""
    np = importlib.import_module("numpy")
    n = last = 0
    for batch in d.batches(timeout=timeout):
        with batch:
            caplen = np.frombuffer(batch.caplen, dtype=np.uint32)
            total = int(caplen.sum(dtype=np.int64))
            total += int(np.frombuffer(batch.timestamp_ns, dtype=np.int64).sum()) * 0
            if len(caplen):
                n, last = n + len(caplen), int(caplen[-1]) + 0 * total
    return n, last


WALKS: dict[str, Walk] = {"packets()": walk_packets, "batch columns (numpy)": walk_columns}


def end_to_end_once(walk: str, zerocopy: bool, buffer_size: int, rate: int, *,
                    seconds: float, size: int) -> dict[str, Any]:
    with Kernel(uid=0) as kernel:
        kernel.add_interface(IFNAME)
        raw.sysctl_int(kernel, "net.bpf.zerocopy_enable", 1)
        raw.sysctl_int(kernel, "net.bpf.maxbufsize", max(buffer_size, 524288))
        system = CountingSystem(kernel)
        with Descriptor.open(IFNAME, zerocopy=zerocopy, buffer_size=buffer_size,
                             system=system) as d:
            d.timestamp  # noqa: B018 (BIOCGTSTAMP once, before counting)
            system.calls.clear()
            count = int(rate * seconds)
            with counting_polls(system.calls):
                start, cpu = time.perf_counter(), time.thread_time()
                gen = kernel.generate(IFNAME, count, size=size, rate=rate)
                received, sentinels = consume(d, kernel, gen, WALKS[walk], size, poll=POLL)
                cpu = time.thread_time() - cpu
                wall = time.perf_counter() - start
            calls = dict(system.calls)
            buffers = d.buffers_consumed
            stats = d.stats()
            granted = d.buffer_size
    received -= sentinels
    return {"walk": walk, "mode": "zero-copy" if zerocopy else "buffered",
            "buffer_size": buffer_size, "granted": granted,
            "rate": rate, "offered": gen.offered, "received": received, "dropped": stats.drop,
            "valid": received + stats.drop == gen.offered, "cpu_ns_per_packet":
            cpu / max(received, 1) * 1e9, "cpu_per_wall": cpu / wall,
            "drop_rate": stats.drop / max(gen.offered, 1), "buffers": buffers,
            "calls": calls, "calls_per_buffer": sum(calls.values()) / max(buffers, 1)}


def end_to_end(args: argparse.Namespace) -> list[dict[str, Any]]:
    walks = [w for w in WALKS if w == "packets()" or importlib.util.find_spec("numpy")]
    runs = []
    for _ in range(args.e2e_repeat):
        for walk in walks:
            for buffer_size in args.buffer_sizes:
                for rate in args.rates:
                    for zerocopy in (False, True):
                        runs.append(end_to_end_once(walk, zerocopy, buffer_size, rate,
                                                    seconds=args.seconds, size=64))
    print(f"\n## End to end on the simulator: 64-byte frames, ~{args.seconds} s per run, "
          f"{args.e2e_repeat} runs each, median [min-max]\n")
    print("| consumer | buffers | offered pkt/s | mode | consumer CPU ns/pkt | drop % | "
          "system calls / buffer (per run) | buffers | zero-copy CPU gain |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for walk, buffer_size, rate in [(w, b, r) for w in walks for b in args.buffer_sizes
                                    for r in args.rates]:
        cpu: dict[str, float] = {}
        for mode in ("buffered", "zero-copy"):
            mine = [r for r in runs if (r["walk"], r["mode"], r["buffer_size"], r["rate"])
                    == (walk, mode, buffer_size, rate)]
            ns = spread([r["cpu_ns_per_packet"] for r in mine])
            drop = spread([100 * r["drop_rate"] for r in mine])
            per_buffer = spread([r["calls_per_buffer"] for r in mine])
            calls = Counter[str]()
            for r in mine:
                calls.update(r["calls"])
            cpu[mode] = ns["median"]
            gain = (f"{cpu['buffered'] / ns['median']:.2f}x" if mode == "zero-copy"
                    else "")
            valid = "" if all(r["valid"] for r in mine) else " (UNBALANCED)"
            what = ", ".join(f"{k} {v / len(mine):.0f}" for k, v in sorted(calls.items()))
            print(f"| {walk} | 2x{mine[0]['granted'] // 1024} KiB | {rate:,} | {mode} | "
                  f"{ns['median']:.0f} [{ns['min']:.0f}-{ns['max']:.0f}] | "
                  f"{drop['median']:.2f} [{drop['min']:.2f}-{drop['max']:.2f}]{valid} | "
                  f"{per_buffer['median']:.2f} ({what}) | "
                  f"{statistics_median([r['buffers'] for r in mine]):.0f} | {gain} |")
            rows.append({"walk": walk, "buffer_size": buffer_size, "rate": rate, "mode": mode,
                         "cpu_ns_per_packet": ns, "drop_percent": drop,
                         "calls_per_buffer": per_buffer})
    return rows


def statistics_median(values: list[int]) -> float:
    return spread([float(v) for v in values])["median"]


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib  # noqa: PLC0415 (optional: only for --plot)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for mode, style in (("buffered", "o-"), ("zero-copy", "s--")):
        for size in sorted({r["buffer_size"] for r in rows}):
            mine = sorted((r for r in rows if r["mode"] == mode and r["buffer_size"] == size
                           and r["walk"] == "packets()"), key=lambda r: r["rate"])
            ax.plot([r["rate"] / 1e6 for r in mine],
                    [r["drop_percent"]["median"] for r in mine], style,
                    label=f"{mode}, 2x{size // 1024} KiB")
    ax.set_xlabel("offered rate (M packets/s, 64-byte frames)")
    ax.set_ylabel("dropped (%)")
    ax.set_title(title + "\npackets(), touching length and timestamp", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records-size", type=int, default=4 * 1024 * 1024,
                    help="bytes of records for the per-packet table")
    ap.add_argument("--repeat", type=int, default=5, help="samples per consumer")
    ap.add_argument("--sample", type=float, default=0.1, help="CPU seconds per sample")
    ap.add_argument("--rates", type=int, nargs="+",
                    default=[250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 6_000_000],
                    help="offered packets/s for the end-to-end runs")
    ap.add_argument("--buffer-sizes", type=int, nargs="+", default=[512 * 1024, 2 << 20])
    ap.add_argument("--seconds", type=float, default=1.0, help="per end-to-end run")
    ap.add_argument("--e2e-repeat", type=int, default=3, help="end-to-end runs per cell")
    ap.add_argument("--plot", default="docs/_static/drop-rate.png", help="PNG to write")
    ap.add_argument("--json", metavar="OUT", help="also write every figure as JSON")
    args = ap.parse_args(argv)

    info = machine()
    print(describe(info))
    print("command: python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    table = per_packet(args)
    e2e = end_to_end(args)
    if args.plot:
        plot(e2e, args.plot, f"bsdbpf on the simulator: {info['cpu']}, {info['cores']} cores")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "per_packet": table,
                       "end_to_end": e2e}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
