"""bsdbpf.interfaces() and the System seam's if_nameindex(3) and SIOCGIFFLAGS."""

from __future__ import annotations

import errno

import pytest
from conftest import Recorder

from bsdbpf import InterfaceNotFound, interfaces
from bsdbpf._native import ffi, lib
from bsdbpf.errors import BPFError, InvalidArgument
from bsdbpf.sim import Kernel
from bsdbpf.system import System


def test_siocgifflags_is_freebsds_number() -> None:
    # <sys/sockio.h>: _IOWR('i', 17, struct ifreq), and struct ifreq is 32 bytes.
    assert ffi.sizeof("struct ifreq") == 32
    assert lib.SIOCGIFFLAGS == 0xC0206911
    assert lib.IFF_UP == 1


def test_every_listed_interface_is_up_and_named_as_the_system_names_it(
        system: System, ifname: str) -> None:
    names = [name for _, name in system.if_nameindex()]
    found = interfaces(system, link_types=False)
    assert [i.name for i in found] == names
    assert ifname in names
    assert next(i for i in found if i.name == ifname).up is True
    indexes = [index for index, _ in system.if_nameindex()]
    assert len(set(indexes)) == len(indexes)
    assert min(indexes) >= 1


def test_flags_of_a_missing_interface_are_enxio_naming_it(system: System) -> None:
    with pytest.raises(InterfaceNotFound) as info:
        system.if_flags("nosuch0")
    assert (info.value.errno, info.value.op, info.value.ifname) == (
        errno.ENXIO, "SIOCGIFFLAGS", "nosuch0")


def test_simulated_indexes_are_not_reused(kernel: Kernel) -> None:
    before = {name: index for index, name in kernel.if_nameindex()}
    kernel.remove_interface("em0")
    kernel.add_interface("em9")
    after = {name: index for index, name in kernel.if_nameindex()}
    assert "em0" not in after
    assert after["em9"] > max(before.values())
    assert {n: after[n] for n in after if n != "em9"} == {
        n: before[n] for n in before if n != "em0"}


def test_interfaces_ask_only_through_the_system(rec: Recorder) -> None:
    found = interfaces(rec, link_types=False)
    assert [i.name for i in found] == rec.kernel.interfaces()
    assert rec.calls == [("if_nameindex",)] + [("if_flags", i.name) for i in found]


class _Departing(Recorder):
    """em0 departs between the listing and the flags; the listing fails on request."""

    fail_listing = False

    def if_nameindex(self) -> list[tuple[int, str]]:
        if self.fail_listing:
            raise BPFError(errno.EIO, "if_nameindex")
        return super().if_nameindex()

    def if_flags(self, ifname: str) -> int:
        if ifname == "em0":
            raise InterfaceNotFound(errno.ENXIO, "SIOCGIFFLAGS", None, ifname)
        return super().if_flags(ifname)


def test_an_interface_gone_before_its_flags_is_up_unknown(kernel: Kernel) -> None:
    system = _Departing(kernel)
    up = {i.name: i.up for i in interfaces(system, link_types=False)}
    assert up["em0"] is None
    assert set(up.values()) == {None, True}
    system.fail_listing = True
    assert interfaces(system) == []


def test_a_name_that_cannot_be_an_interface_is_refused_before_any_call(
        system: System) -> None:
    with pytest.raises(InvalidArgument) as info:
        system.if_flags("x" * 16)
    assert info.value.op == "SIOCGIFFLAGS"

