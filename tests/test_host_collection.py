"""``BSDBPF_SYSTEM=host`` off FreeBSD: the whole suite is collected, and every test
either runs on the simulator or is skipped because it needs FreeBSD's real
kernel; no data-path or zero-copy conformance test is simulator-only.

The suite runs once in a child pytest with ``--setup-only`` (every fixture is
set up and every skip decided, no test body runs) and a small plugin that
writes, per test, its fixtures, its ``sim_only`` reason and the type of the
System its ``system`` fixture gave.  Test bodies are not run here (that would
be the whole suite a second time): a body that picks its kernel from the
environment itself is caught only by running ``BSDBPF_SYSTEM=host python -m
pytest`` in full.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI_TRAFFIC, DEPARTURE, GENERATOR, USES_SIMULATOR

from bsdbpf.sim import Kernel

pytestmark = pytest.mark.skipif(
    sys.platform.startswith("freebsd"),
    reason="checks BSDBPF_SYSTEM=host off FreeBSD (on FreeBSD that run is the real one)")

TESTS = Path(__file__).resolve().parent
NEEDS_FREEBSD = "needs FreeBSD's real kernel"
# Skips that say what this machine lacks, whatever the system: they hold in
# a user's clone with BSDBPF_SYSTEM=host or without.
ENVIRONMENT_SKIPS = (
    "shared spec is not beside this checkout",  # test_abi: the bundled copy's check
    "is not installed (",  # test_filter_libpcap: libpcap or tcpdump, naming the package
)

PLUGIN = '''
import json, os
import pytest

SYSTEMS = {}

@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    result = yield
    if "system" in getattr(item, "funcargs", {}):
        system = item.funcargs["system"]
        SYSTEMS[item.nodeid] = type(system).__module__ + "." + type(system).__name__
    return result

def pytest_sessionfinish(session):
    items = []
    for item in session.items:
        mark = item.get_closest_marker("sim_only")
        items.append({"nodeid": item.nodeid,
                      "fixtures": sorted(getattr(item, "fixturenames", ())),
                      "sim_only": mark.kwargs.get("reason") if mark else None,
                      "system": SYSTEMS.get(item.nodeid)})
    with open(os.environ["BSDBPF_COLLECTION_REPORT"], "w") as out:
        json.dump(items, out)
'''


@functools.cache
def host_run() -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]], ET.Element]:
    """The child run (once per session): its process, its items, its JUnit report.
    Not a fixture: the child sets fixtures up, and must not start a child itself."""
    with tempfile.TemporaryDirectory(prefix="bsdbpf-host-collection-") as tmp:
        work = Path(tmp)
        (work / "collection_report.py").write_text(PLUGIN)
        report, junit = work / "items.json", work / "junit.xml"
        env = dict(os.environ, BSDBPF_SYSTEM="host", BSDBPF_COLLECTION_REPORT=str(report),
                   PYTHONPATH=os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")])))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "-p", "collection_report", "--setup-only", "-rs", f"--junitxml={junit}",
             str(TESTS)],
            cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900,
            check=False)
        items = json.loads(report.read_text()) if report.exists() else []
        root = ET.parse(junit).getroot() if junit.exists() else ET.Element("testsuites")
    return proc, items, root


def conformance(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i["nodeid"].startswith("tests/conformance/")]


def test_every_test_is_collected_and_set_up_without_error() -> None:
    proc, items, root = host_run()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = root.iter("testcase")
    bad = [(c.get("classname"), c.get("name"), child.tag) for c in cases for child in c
           if child.tag in ("error", "failure")]
    assert bad == []
    assert len(items) > 1000  # the whole suite, not a stray subset
    assert len(list(root.iter("testcase"))) == len(items)


def test_skips_only_for_needing_freebsd() -> None:
    _, _, root = host_run()
    reasons = {s.get("message", "") for s in root.iter("skipped")}
    assert reasons, "the host-only tests are collected and skipped here"
    others = [r for r in reasons
              if NEEDS_FREEBSD not in r and not any(e in r for e in ENVIRONMENT_SKIPS)]
    assert others == []


def test_tests_with_a_system_get_the_simulator() -> None:
    _, items, _ = host_run()
    systems = {i["system"] for i in items if i["system"] is not None}
    assert systems == {f"{Kernel.__module__}.{Kernel.__name__}"}


def test_kernel_users_are_marked_simulator_only() -> None:
    _, items, _ = host_run()
    unmarked = [i["nodeid"] for i in items if "kernel" in i["fixtures"] and not i["sim_only"]]
    assert unmarked == []
    assert any(i["sim_only"] == USES_SIMULATOR for i in items)


#: The only conformance tests with traffic that stay simulator-only, and why.
SIM_ONLY_WITH_TRAFFIC = {
    "test_read.py::test_read_hold_buffer_after_detach": "interface to depart",
    "test_read.py::test_read_store_after_detach_immediate": "interface to depart",
    "test_zerocopy.py::test_rotzbuf_after_departure": "interface to depart",
    "test_sim_faults.py::test_buffer_below_a_record_header_drops": "would panic",
    "test_sim_faults.py::test_signals_never_reach_another_process": "deliver the SIGTERM",
    "test_sim_faults.py::test_ethernet_runts_never_reach_bpf": "cannot carry a runt",
}


def test_no_conformance_data_path_test_is_simulator_only() -> None:
    """Traffic goes through the ``traffic`` fixture on both kernels; what stays
    simulator-only needs the simulator itself, and says precisely why."""
    _, items, _ = host_run()
    conf = conformance(items)
    generic = [i["nodeid"] for i in conf if i["sim_only"] == USES_SIMULATOR]
    assert generic == []
    sim_only_traffic = {i["nodeid"].removeprefix("tests/conformance/"): i["sim_only"]
                        for i in conf if "traffic" in i["fixtures"] and i["sim_only"]}
    assert set(sim_only_traffic) == set(SIM_ONLY_WITH_TRAFFIC)
    for name, why in SIM_ONLY_WITH_TRAFFIC.items():
        assert why in sim_only_traffic[name], name
    for name in ("test_datapath.py", "test_zerocopy.py", "test_readiness.py"):
        on_both = [i for i in conf if i["nodeid"].startswith(f"tests/conformance/{name}")
                   and "traffic" in i["fixtures"] and i["sim_only"] is None]
        assert len(on_both) >= 10, name


#: The Descriptor's and the command line's test files: per file, the only tests that stay
#: simulator-only (parametrised ones once), a word of their reason, and the
#: least number of tests that run on either kernel.
DESCRIPTOR_FILES: dict[str, tuple[dict[str, str], int]] = {
    "test_descriptor.py": ({
        "test_interface_dlt_and_dlt_list": "DLT_RAW",
        "test_reading_after_the_interface_departed": DEPARTURE,
        "test_dlt_null_records": "lo0",
        "test_generator_run_balances_in_buffered_mode": GENERATOR,
    }, 96),
    "test_zerocopy.py": ({
        "test_interface_departure_while_waiting": DEPARTURE,
        "test_generator_run_with_small_buffers_balances": GENERATOR,
        "test_million_generated_packets_lose_none_uncounted": GENERATOR,
    }, 25),
    "test_capture.py": ({
        "test_packets_buffered_at_departure_come_before_not_attached": DEPARTURE,
    }, 12),
    "test_records.py": ({}, 60),
    "test_cli_api_defaults.py": ({}, 7),
    "test_cli.py": ({
        "test_the_simulator_brings_traffic_and_stops_it": CLI_TRAFFIC,
        "test_huge_timeouts_are_just_long": CLI_TRAFFIC,
        "test_status_line_on_a_terminal": CLI_TRAFFIC,
        "test_capture_writes_the_injected_frames_to_pcap": "lo0",
        "test_dd_and_ddd": "lo0",
        "test_stats_interface_filter_and_zeroing": "lo0",
        "test_list_interfaces": "own interfaces",
        "test_a_missing_interface_is_one_line": "own interfaces",
        "test_the_interface_going_away_ends_with_the_counters_and_the_error": DEPARTURE,
    }, 74),
    "test_cli_process.py": ({
        "test_quick_start_command": CLI_TRAFFIC,
        "test_tcpdump_reads_standard_output_through_a_pipe": CLI_TRAFFIC,
    }, 9),
}


@pytest.mark.parametrize("name", sorted(DESCRIPTOR_FILES))
def test_descriptor_tests_run_on_the_real_kernel_but_the_pinned_few(name: str) -> None:
    """The Descriptor, zero-copy and capture tests take the System under test;
    a test that goes back to the simulator has to be added here, with why."""
    _, items, _ = host_run()
    tests = [i for i in items if i["nodeid"].startswith(f"tests/{name}::")]
    pinned, least_on_both = DESCRIPTOR_FILES[name]
    sim_only = {i["nodeid"].split("::")[1].split("[")[0]: i["sim_only"]
                for i in tests if i["sim_only"]}
    assert set(sim_only) == set(pinned)
    for test, why in pinned.items():
        assert why in sim_only[test], test
    assert USES_SIMULATOR not in sim_only.values()
    assert len([i for i in tests if not i["sim_only"]]) >= least_on_both
