"""The stress test's raw zero-copy consumer, with its counts printed.

Runs ``tests/test_sim_stress.py``'s ``run()`` (a consumer driving the
zero-copy protocol by hand against the C traffic generator) and prints what
the kernel offered, received and dropped, so the balance can be read off:

    python bench/zerocopy_balance.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_sim_stress import run

CASES = [  # (frames, frames per second (0: flat out), bytes per buffer)
    (10_000_000, 0, 2 * 1024 * 1024),
    (1_000_000, 250_000, 256 * 1024),
]


def main() -> None:
    print("| frames | rate | buffer | offered | received | dropped | balanced | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for count, rate, size in CASES:
        start = time.perf_counter()
        tally, offered, _recv, drop = run(count, rate=rate, size=size)
        seconds = time.perf_counter() - start
        balanced = "yes" if tally.received + drop == offered else "NO"
        print(f"| {count:,} | {rate or 'flat out'} | {size // 1024} KiB | {offered:,} | "
              f"{tally.received:,} | {drop:,} | {balanced} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
