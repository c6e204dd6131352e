"""bsdbpf.sysctl: get, set, list and zerocopy_enabled for scripts."""

from __future__ import annotations

import errno
import sys

import pytest
from conftest import Recorder

from bsdbpf import (
    BufferMode,
    Descriptor,
    InvalidArgument,
    PermissionDenied,
    SysctlNotFound,
    ZeroCopyDisabled,
    sysctl,
)
from bsdbpf.sim import Kernel

ZC = "net.bpf.zerocopy_enable"


def test_get_and_set_return_ints(kernel: Kernel) -> None:
    assert sysctl.get("net.bpf.maxbufsize", system=kernel) == 524288
    assert sysctl.set("net.bpf.bufsize", 65536, system=kernel) == 4096  # the old value
    assert sysctl.get("net.bpf.bufsize", system=kernel) == 65536
    assert kernel.sysctlbyname("net.bpf.bufsize") == (65536).to_bytes(4, sys.byteorder)
    assert sysctl.set("net.bpf.maxinsns", -1, system=kernel) == 512
    assert sysctl.get("net.bpf.maxinsns", system=kernel) == -1


def test_unknown_name_is_a_lookup_error_that_points_at_list(kernel: Kernel) -> None:
    with pytest.raises(SysctlNotFound) as info:
        sysctl.get("net.bpf.nosuch", system=kernel)
    err = info.value
    assert isinstance(err, LookupError)
    assert err.errno == errno.ENOENT
    assert err.op == "sysctl net.bpf.nosuch"
    assert "bsdbpf.sysctl.list()" in str(err)
    with pytest.raises(SysctlNotFound, match=r"no sysctl kern\.nosuch"):
        sysctl.set("kern.nosuch", 1, system=kernel)


def test_not_root_is_a_permission_error_that_says_so(kernel: Kernel) -> None:
    kernel.uid = 1000
    assert sysctl.get(ZC, system=kernel) == 0  # reading needs no privilege
    with pytest.raises(PermissionDenied) as info:
        sysctl.set(ZC, 1, system=kernel)
    assert isinstance(info.value, PermissionError)
    assert info.value.errno == errno.EPERM
    assert "need root" in str(info.value)
    kernel.uid = 0
    assert sysctl.get(ZC, system=kernel) == 0  # nothing was written


@pytest.mark.parametrize(("name", "pointer"), [("net.bpf.stats", "bsdbpf.stats.read_stats"),
                                               ("net.bpf", "bsdbpf.sysctl.list")])
def test_tables_and_nodes_are_not_ints(rec: Recorder, name: str, pointer: str) -> None:
    for call in (lambda: sysctl.get(name, system=rec), lambda: sysctl.set(name, 0, system=rec)):
        with pytest.raises(InvalidArgument, match=pointer) as info:
            call()
        assert info.value.op == f"sysctl {name}"
    assert rec.calls == []  # never sent to the kernel


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1])
def test_values_outside_an_int_are_refused(kernel: Kernel, value: int) -> None:
    with pytest.raises(InvalidArgument, match="does not fit a C int"):
        sysctl.set("net.bpf.bufsize", value, system=kernel)
    assert sysctl.get("net.bpf.bufsize", system=kernel) == 4096


def test_list_is_the_net_bpf_tree_with_kinds_descriptions_and_values(kernel: Kernel) -> None:
    entries = sysctl.list(system=kernel)
    assert [e.name for e in entries] == [
        "net.bpf.bufsize", "net.bpf.maxbufsize", "net.bpf.maxinsns",
        "net.bpf.optimize_writers", "net.bpf.stats", "net.bpf.zerocopy_enable"]
    by_name = {e.name: e for e in entries}
    assert by_name[ZC] == sysctl.SysctlEntry(
        ZC, "integer", "Enable new zero-copy BPF buffer sessions", 0)
    assert by_name["net.bpf.bufsize"].value == 4096
    assert by_name["net.bpf.stats"].kind == "node"
    assert by_name["net.bpf.stats"].value == b""  # no descriptor attached
    assert all(e.description for e in entries)


def test_list_of_one_name_and_of_an_unknown_prefix(kernel: Kernel) -> None:
    (entry,) = sysctl.list("net.bpf.maxinsns", system=kernel)
    assert (entry.name, entry.value) == ("net.bpf.maxinsns", 512)
    with pytest.raises(SysctlNotFound, match=r"net\.bpf\.bufsize, net\.bpf\.maxbufsize"):
        sysctl.list("kern", system=kernel)
    with pytest.raises(SysctlNotFound):
        sysctl.list("net.bp", system=kernel)  # a prefix is whole name components


def test_list_without_root_leaves_out_what_it_may_not_read(kernel: Kernel) -> None:
    with Descriptor.open("em0", zerocopy=False, system=kernel):
        kernel.uid = 1000
        by_name = {e.name: e.value for e in sysctl.list(system=kernel)}
        kernel.uid = 0
        assert by_name["net.bpf.stats"] is None  # EPERM without root
        assert by_name["net.bpf.maxbufsize"] == 524288
        assert len(sysctl.list("net.bpf.stats", system=kernel)[0].value or b"") > 0


def test_list_skips_what_an_older_kernel_lacks(kernel: Kernel) -> None:
    del kernel.sysctls["net.bpf.optimize_writers"]
    assert "net.bpf.optimize_writers" not in [e.name for e in sysctl.list(system=kernel)]


def test_zerocopy_enabled_sets_and_restores(kernel: Kernel) -> None:
    with sysctl.zerocopy_enabled(system=kernel) as before:
        assert before == 0
        assert sysctl.get(ZC, system=kernel) == 1
        with Descriptor.open("em0", zerocopy=True, system=kernel) as d:
            assert d.buffer_mode is BufferMode.ZBUF
    assert sysctl.get(ZC, system=kernel) == 0
    with pytest.raises(ZeroCopyDisabled):
        Descriptor.open("em0", zerocopy=True, system=kernel).close()


def test_zerocopy_enabled_restores_when_the_block_raises(kernel: Kernel) -> None:
    sysctl.set(ZC, 7, system=kernel)  # any non-zero value enables: it comes back as it was
    seen = []

    def job() -> None:
        with sysctl.zerocopy_enabled(False, system=kernel):
            seen.append(sysctl.get(ZC, system=kernel))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        job()
    assert seen == [0]
    assert sysctl.get(ZC, system=kernel) == 7


def test_zerocopy_enabled_writes_nothing_when_already_so(kernel: Kernel) -> None:
    rec = Recorder(kernel)
    kernel.uid = 1000  # would need root to write
    with sysctl.zerocopy_enabled(False, system=rec) as before:
        assert before == 0
    assert rec.calls == [("sysctl", ZC)]


def test_zerocopy_enabled_without_root_fails_before_the_block(kernel: Kernel) -> None:
    kernel.uid = 1000
    entered = False
    with pytest.raises(PermissionDenied), sysctl.zerocopy_enabled(system=kernel):
        entered = True
    assert not entered


def test_default_system_is_used_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSDBPF_SYSTEM", "sim")
    assert sysctl.get("net.bpf.maxinsns") == 512
