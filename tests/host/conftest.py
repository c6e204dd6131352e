"""Fixtures of the tests that need FreeBSD's real kernel (run them with vagrant/run-tests).

Tests marked ``kernel`` run only on FreeBSD with ``BSDBPF_SYSTEM=host``; ``root``
ones only as root.  Elsewhere they are collected and skipped, saying so.
``BSDBPF_TEST_IFNAME`` names the capture end of the epair(4) pair that
vagrant/provision.sh creates (``BSDBPF_TEST_PEER`` its other end).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

try:
    import hosttraffic  # tests/ is on sys.path (pytest's default import mode)
except ImportError:  # tests/ is a package
    from tests import hosttraffic  # type: ignore[no-redef]

ON_FREEBSD_HOST = sys.platform.startswith("freebsd") and os.environ.get("BSDBPF_SYSTEM") == "host"
NEEDS_FREEBSD = ("needs FreeBSD's real kernel (BSDBPF_SYSTEM=host on FreeBSD): "
                 "run vagrant/run-tests, see docs/vm.rst")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None and not ON_FREEBSD_HOST:
        pytest.skip(NEEDS_FREEBSD)
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip("needs root: /dev/bpf is root:wheel 0600 and the sysctls are root's")


@pytest.fixture
def epair() -> tuple[str, str]:
    """(capture end, peer) of the test pair."""
    name = os.environ.get("BSDBPF_TEST_IFNAME")
    if not name:
        pytest.skip("set BSDBPF_TEST_IFNAME to the epair(4) end vagrant/provision.sh made")
    return name, os.environ.get("BSDBPF_TEST_PEER") or hosttraffic.peer_of(name)


@pytest.fixture
def traffic(epair: tuple[str, str]) -> Iterator[object]:
    """traffic(ifname, frame, outgoing=False) on the real pair."""
    with hosttraffic.HostTraffic(*epair) as source:
        yield source
