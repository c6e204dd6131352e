"""The differential runner: the same scripted sequences on two kernels, compared.

Each scenario in :mod:`.scenarios` (ioctls, sysctls, reads, zero-copy buffers
and injected frames) runs on two :class:`~.runner.Side` s, each fresh, and
every field of every step's outcome is compared: values the kernel wrote
back, errno, record layout and bytes.  On FreeBSD it keeps the simulator
honest (``--against host``); here it runs the simulator against itself.

    python3 -m tests.differential [--against sim|host] [SCENARIO...]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from bsdbpf.sim import Kernel

from .runner import Difference, Side, compare, run
from .scenarios import SCENARIOS

__all__ = ["SCENARIOS", "differences", "host_side", "sim_side"]


def sim_side() -> Side:
    """A fresh simulated kernel capturing on ``em0``."""
    kernel = Kernel(uid=0)
    kernel.add_interface("em0")
    return Side("sim", kernel, "em0",
                lambda frame, outgoing: kernel.inject("em0", frame, outgoing=outgoing),
                kernel.shutdown)


def host_side() -> Side:
    """FreeBSD's kernel, capturing on BSDBPF_TEST_IFNAME (an epair(4) end),
    frames injected through its peer (see tests/hosttraffic.py)."""
    from bsdbpf.system import HostSystem  # noqa: PLC0415  (FreeBSD only)

    try:  # under pytest tests/ is on sys.path; under python3 -m tests.differential not
        from hosttraffic import HostTraffic  # noqa: PLC0415
    except ImportError:
        from tests.hosttraffic import HostTraffic  # noqa: PLC0415

    ifname = os.environ.get("BSDBPF_TEST_IFNAME")
    if not ifname:
        raise SystemExit("the host side needs BSDBPF_TEST_IFNAME (an epair(4) end): "
                         "vagrant/provision.sh writes it to /var/db/bsdbpf/env")
    traffic = HostTraffic(ifname)
    return Side("host", HostSystem(), ifname,
                lambda frame, outgoing: traffic(ifname, frame, outgoing), traffic.close)


def differences(left: Callable[[], Side], right: Callable[[], Side],
                names: Iterable[str] | None = None) -> dict[str, list[Difference]]:
    """Run each scenario on a fresh side of each kind; their differences by name."""
    out = {}
    for name in names or SCENARIOS:
        script = SCENARIOS[name]
        results = []
        for make in (left, right):
            side = make()
            try:
                results.append(run(side, script))
            finally:
                side.close()
        out[name] = compare(script, *results)
    return out
