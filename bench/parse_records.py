"""The record parser alone: bsdbpf's C walk against a pure-Python struct walk.

A ``--buffer-size`` buffer is filled in memory with records of 64, 512 and
1500 bytes of packet (``struct bpf_hdr``, BPF_T_MICROTIME, Ethernet header
length, word-aligned as the kernel lays them out), and walked by:

* ``C helper``: ``lib.bsdbpf_parse_records`` once over the buffer into a
  preallocated array (the walk itself);
* ``parse()``: :func:`bsdbpf.records.parse`, what a Batch costs to build
  and release (the C walk into its columns);
* ``Python struct``: ``struct.unpack_from`` per header, producing the same list;
* ``Batch iteration`` (for scale): ``for pkt in batch`` after the parse.

    python bench/parse_records.py --repeat 7
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from typing import Any, Callable

from machine import describe, machine, spread

from bsdbpf._native import ffi, lib
from bsdbpf.records import parse

TSTAMP = lib.BPF_T_MICROTIME
ETHER = 14
LONG = "q" if ffi.sizeof("long") == 8 else "i"
HDR = struct.Struct(f"={LONG}{LONG}IIH")  # bpf_hdr up to and including bh_hdrlen
ALIGN = ffi.sizeof("long")  # BPF_ALIGNMENT
assert HDR.size == ffi.offsetof("struct bpf_hdr", "bh_hdrlen") + 2


def build(size: int, buffer_size: int) -> tuple[bytearray, int, int]:
    """A buffer of records with ``size`` bytes of packet each; returns it, the
    data length and the record count."""
    hdrlen = lib.bsdbpf_hdrlen(ETHER, TSTAMP)
    buf = bytearray(buffer_size)
    off = n = 0
    while off + hdrlen + size <= buffer_size:
        HDR.pack_into(buf, off, 1_700_000_000 + n, n % 1_000_000, size, size + 4, hdrlen)
        buf[off + hdrlen: off + hdrlen + size] = bytes([n & 0xFF]) * size
        off = lib.bsdbpf_wordalign(off + hdrlen + size)
        n += 1
    return buf, min(off, buffer_size), n


def walk_python(buf: Any, start: int, end: int) -> list[int]:
    """parse_records' walk in Python (bpf_hdr records only)."""
    fields: list[int] = []
    unpack, need, mask = HDR.unpack_from, HDR.size, ALIGN - 1
    off = start
    while off < end:
        if end - off < need:
            raise ValueError(f"truncated header at {off}")
        sec, usec, caplen, datalen, hdrlen = unpack(buf, off)
        if hdrlen < need or off + hdrlen + caplen > end:
            raise ValueError(f"corrupt record at {off}")
        fields += (off + hdrlen, caplen, datalen, sec * 1_000_000_000 + usec * 1000)
        off = (off + hdrlen + caplen + mask) & ~mask
    return fields


def columns(buf: bytearray, end: int) -> list[int]:
    """parse()'s columns as walk_python's flat list."""
    with parse(buf, TSTAMP, end=end) as b:
        rows = zip(b.offset, b.caplen, b.wirelen, b.timestamp_ns)
        return [x for row in rows for x in row]


def walkers(buf: bytearray, end: int, count: int) -> dict[str, Callable[[], object]]:
    ptr = ffi.from_buffer(buf)
    out = ffi.new("int64_t[]", lib.BSDBPF_REC_FIELDS * count)
    nxt = ffi.new("uint32_t *")
    def batch() -> None:
        with parse(buf, TSTAMP, end=end) as b:
            for _ in b:
                pass

    def parsed() -> None:
        parse(buf, TSTAMP, end=end).release()

    return {
        "C helper": lambda: lib.bsdbpf_parse_records(ptr, 0, end, TSTAMP, out, count, nxt),
        "parse()": parsed,
        "Python struct": lambda: walk_python(buf, 0, end),
        "Batch iteration": batch,
    }


def timed(fn: Callable[[], object], repeat: int, at_least: float) -> list[float]:
    """Seconds per call, one figure per repeat; each repeat loops for about
    ``at_least`` seconds."""
    start = time.perf_counter()
    fn()
    loops = max(1, int(at_least / max(time.perf_counter() - start, 1e-9)))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops)
    return samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 1500],
                    help="packet bytes per record")
    ap.add_argument("--buffer-size", type=int, default=512 * 1024, help="bytes of records")
    ap.add_argument("--repeat", type=int, default=7, help="samples per walker")
    ap.add_argument("--seconds", type=float, default=0.2, help="time per sample")
    ap.add_argument("--json", metavar="OUT", help="also write the samples as JSON")
    args = ap.parse_args(argv)

    info = machine()
    print(describe(info))
    print(f"--buffer-size {args.buffer_size}, {args.repeat} samples of ~{args.seconds} s: "
          "median [min-max]\n")
    print("| packet bytes | records | walker | ns/record | records/s |")
    print("|---|---|---|---|---|")
    rows = []
    for size in args.sizes:
        buf, end, count = build(size, args.buffer_size)
        assert columns(buf, end) == walk_python(buf, 0, end)
        for name, fn in walkers(buf, end, count).items():
            per_record = [s / count for s in timed(fn, args.repeat, args.seconds)]
            ns = spread([s * 1e9 for s in per_record])
            rate = spread([1 / s for s in per_record])
            print(f"| {size} | {count} | {name} | {ns['median']:,.1f} [{ns['min']:,.1f}-"
                  f"{ns['max']:,.1f}] | {rate['median']:,.0f} |")
            rows.append({"size": size, "records": count, "walker": name,
                         "ns_per_record": ns, "records_per_s": rate})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
