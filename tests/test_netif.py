"""bsdbpf.interfaces() and the System seam's if_nameindex(3) and SIOCGIFFLAGS."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest
from conftest import Recorder

from bsdbpf import InterfaceNotFound, interfaces
from bsdbpf._abi import request_name
from bsdbpf._native import ffi, lib
from bsdbpf.errors import BPFError, InvalidArgument, from_errno
from bsdbpf.sim import Kernel
from bsdbpf.system import HostSystem, System


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



class _FreeBSDFlags:
    """HostSystem's SIOCGIFFLAGS against a stand-in for FreeBSD's ifhwioctl(),
    which splits the 32-bit if_flags into ifr_flags (ifru_flags[0], the low 16
    bits) and ifr_flagshigh (ifru_flags[1], the high 16) at the start of the
    union."""

    def __init__(self, flags: int | None) -> None:
        self.flags = flags  # None: no such interface (ifunit_ref() fails)
        self.host = object.__new__(HostSystem)  # HostSystem() itself refuses other hosts
        self.host.ioctl = self.ioctl  # type: ignore[method-assign]

    def ioctl(self, fd: int, request: int, arg: Any = None) -> int:
        assert request == lib.SIOCGIFFLAGS
        if self.flags is None:
            raise from_errno(errno.ENXIO, request_name(request))
        union = ffi.cast("unsigned short *",
                         ffi.cast("char *", arg) + lib.BSDBPF_OFFSETOF_IFR_IFRU)
        union[0], union[1] = self.flags & 0xFFFF, self.flags >> 16
        return 0


# IFF_UP | IFF_MULTICAST (0x8000, the sign bit of the short) | IFF_PPROMISC (0x20000,
# in ifr_flagshigh), and a down interface.
@pytest.mark.parametrize("flags", [0x28001, 0x8002, 0x1])
def test_host_flags_join_ifr_flags_and_ifr_flagshigh(flags: int) -> None:
    host = _FreeBSDFlags(flags).host
    assert host.if_flags("em0") == flags
    assert [i.up for i in interfaces(_Listing(host), link_types=False)] == [
        bool(flags & lib.IFF_UP)]


def test_host_flags_of_a_missing_interface_are_interface_not_found() -> None:
    """ENXIO from SIOCGIFFLAGS is the class the simulator raises, with a hint
    about interfaces, not the descriptor's "not attached"."""
    with pytest.raises(InterfaceNotFound) as info:
        _FreeBSDFlags(None).host.if_flags("nosuch0")
    assert (info.value.errno, info.value.op, info.value.ifname) == (
        errno.ENXIO, "SIOCGIFFLAGS", "nosuch0")
    assert "attached" not in str(info.value)


class _Listing:
    """One interface, em0, and the host's flags for it."""

    def __init__(self, host: HostSystem) -> None:
        self.host = host

    def if_nameindex(self) -> list[tuple[int, str]]:
        return [(1, "em0")]

    def if_flags(self, ifname: str) -> int:
        return self.host.if_flags(ifname)


def test_host_flags_need_no_internet_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A jail without IPv4 (ip4=disable) refuses AF_INET sockets; ifconfig(8)
    asks on an AF_LOCAL socket, which every kernel has.  A socket that cannot
    be made at all is a BPFError naming SIOCGIFFLAGS, not a bare OSError."""
    real_socket = socket.socket

    def jailed(family: int = -1, *args: Any) -> socket.socket:
        if family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
        return real_socket(family, *args)

    monkeypatch.setattr(socket, "socket", jailed)
    host = _FreeBSDFlags(0x1).host
    assert host.if_flags("em0") == 0x1

    def exhausted(*args: Any) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socket, "socket", exhausted)
    with pytest.raises(BPFError) as info:
        host.if_flags("em0")
    assert (info.value.errno, info.value.op, info.value.ifname) == (
        errno.EMFILE, "SIOCGIFFLAGS", "em0")
    assert [i.up for i in interfaces(_Listing(host), link_types=False)] == [None]
