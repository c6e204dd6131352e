"""python3 -m tests.differential [--against sim|host] [SCENARIO...]: print every difference.

Exit status 0 when the two kernels agree on every scenario, 1 when they do
not, 2 when a kernel cannot be reached.
"""

from __future__ import annotations

import argparse
import sys

from . import SCENARIOS, differences, host_side, sim_side
from .runner import report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.differential", description=(
        "Run scripted sequences of ioctls, sysctls, reads and injected frames on the "
        "simulator and on a second kernel, and print every field that differs."))
    parser.add_argument("--against", choices=("sim", "host"), default="sim",
                        help="the second kernel: host is FreeBSD's (as root, with "
                             "BSDBPF_TEST_IFNAME); default: the simulator again")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"default: all of {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}: expected one of {', '.join(SCENARIOS)}")
    other = host_side if args.against == "host" else sim_side
    try:
        found = differences(sim_side, other, args.scenarios or None)
    except (OSError, RuntimeError) as err:  # no kernel or no pair to run on
        print(f"differential: {err}", file=sys.stderr)
        return 2
    for name, diffs in found.items():
        for line in report(name, "sim", args.against, diffs):
            print(line)
    total = sum(len(d) for d in found.values())
    print(f"{total} difference{'s' if total != 1 else ''} in {len(found)} scenarios")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
