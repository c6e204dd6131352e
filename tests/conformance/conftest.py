"""Fixtures of the conformance suite: one body per test, run on either kernel.

``system``, ``kernel``, ``ifname``, ``traffic``, ``sysctl``, ``zerocopy`` and
``unprivileged`` come from ``tests/conftest.py``:

* ``BSDBPF_SYSTEM=host`` on FreeBSD (as root): ``system`` is
  :class:`bsdbpf.system.HostSystem`, the interface comes from
  ``BSDBPF_TEST_IFNAME`` (the capture end of a quiet, up epair(4) pair, so
  that counters stay predictable; ``traffic`` injects through its peer),
  ``BSDBPF_TEST_IFNAME_MULTI`` names one offering several DLTs and ``lo0`` is
  the DLT_NULL one.  Tests marked ``sim_only`` (and those using ``kernel``)
  are skipped there, with the reason.
* Anywhere else: a fresh :class:`bsdbpf.sim.Kernel` per test with ``em0``
  (Ethernet), ``lo0`` (DLT_NULL, MTU 16384) and ``multi0`` (Ethernet + DLT_RAW),
  shut down after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import interface

from .helpers import Bpf


@pytest.fixture
def null_ifname() -> str:
    """A DLT_NULL interface (FreeBSD's loopback)."""
    return "lo0"


@pytest.fixture
def multi_ifname() -> str:
    """An interface offering DLT_EN10MB and another DLT."""
    return interface("multi0", "BSDBPF_TEST_IFNAME_MULTI", "an interface with several DLTs")


@pytest.fixture
def bpf(system: Any) -> Iterator[Bpf]:
    """Descriptors and zero-copy buffers of one test; fds closed before mmaps."""
    harness = Bpf(system)
    try:
        yield harness
    finally:
        harness.cleanup()
