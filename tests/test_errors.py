"""errno -> exception: every errno the spec names, in the operation that returns it.

The table below follows spec/freebsd-bpf.md (Appendix A, §d, §e, §i) and the
error table of the style guide (§3.3).  Each row is built through
:func:`bsdbpf.errors.from_errno`, the one place exceptions are made, so the same
class comes out whether the errno came from FreeBSD or from the simulator.
Errno values are the host's constants looked up by name, never FreeBSD's
numbers (EOPNOTSUPP is 45 on FreeBSD and 95 on Linux).
"""

from __future__ import annotations

import errno
import os
import pickle
import sys
from typing import Any, NamedTuple

import pytest

import bsdbpf
from bsdbpf import _abi, backend, errors, sim, system
from bsdbpf._native import ffi, lib
from bsdbpf.errors import (
    BadAddress,
    BPFError,
    BufferTooSmall,
    DescriptorLocked,
    DeviceNotFound,
    InterfaceDown,
    InterfaceNotFound,
    InternalError,
    InvalidArgument,
    InvalidBuffer,
    InvalidFilter,
    InvalidStateError,
    NotAttached,
    PermissionDenied,
    SysctlNotFound,
    UnsupportedError,
    WouldBlock,
    WriteRejected,
    WrongBufferMode,
    ZeroCopyDisabled,
    from_errno,
)


class Case(NamedTuple):
    op: str
    err: str  # errno name; the host's number is looked up at run time
    cls: type[BPFError]
    builtin: type[BaseException] | None  # the mixed-in builtin a caller catches
    hint: str  # a fragment of the hint ("" where the errno alone says enough)

    @property
    def errnum(self) -> int:
        return int(getattr(errno, self.err))

    def id(self) -> str:
        return f"{self.op}-{self.err}"


LOCKED = "locked (BIOCLOCK)"
WRONG_MODE = "buffer mode (BIOCGETBUFMODE)"

CASES = [
    # --- open(2) (§e Opening): devfs mode 0600 root:wheel, never EBUSY.
    Case("open", "EACCES", PermissionDenied, PermissionError, "devfs.rules"),
    Case("open", "ENOENT", DeviceNotFound, FileNotFoundError, "/dev/bpf"),
    # --- sysctls (§d): writes need PRIV_SYSCTL_WRITE, reading stats needs PRIV_NET_BPF.
    Case("sysctl net.bpf.stats", "EPERM", PermissionDenied, PermissionError, "need root"),
    Case("sysctl net.bpf.zerocopy_enable", "EPERM", PermissionDenied, PermissionError, "root"),
    Case("sysctl net.bpf.maxbufsize", "EACCES", PermissionDenied, PermissionError, "root"),
    Case("sysctl net.bpf_jitter.enable", "ENOENT", SysctlNotFound, LookupError, "no such"),
    Case("sysctl net.bpf.stats", "EINVAL", InvalidArgument, ValueError, ""),
    Case("sysctl net.bpf.stats", "ENOMEM", BufferTooSmall, None, "too small"),
    # --- BIOCLOCK (§e): every request off the whitelist gets EPERM.
    Case("BIOCSETBUFMODE", "EPERM", DescriptorLocked, PermissionError, LOCKED),
    Case("BIOCSETZBUF", "EPERM", DescriptorLocked, PermissionError, LOCKED),
    Case("BIOCGETZMAX", "EPERM", DescriptorLocked, PermissionError, LOCKED),
    Case("BIOCSBLEN", "EPERM", DescriptorLocked, PermissionError, LOCKED),
    Case("BIOCSETIF", "EPERM", DescriptorLocked, PermissionError, LOCKED),
    Case("BIOCSETF", "EPERM", DescriptorLocked, PermissionError, LOCKED),
    Case("BIOCGTSTAMP", "EPERM", DescriptorLocked, PermissionError, LOCKED),
    Case("FIONBIO", "EPERM", DescriptorLocked, PermissionError, LOCKED),
    # --- BIOCSETBUFMODE (Appendix A).
    Case("BIOCSETBUFMODE", "EINVAL", InvalidArgument, ValueError, "zerocopy_enable=1"),
    Case("BIOCSETBUFMODE", "EBUSY", InvalidStateError, None, "buffer mode is fixed"),
    # --- BIOCSETZBUF (Appendix A): alignment/size EINVAL, unmapped memory EFAULT.
    Case("BIOCSETZBUF", "EINVAL", InvalidBuffer, ValueError, "page-aligned"),
    Case("BIOCSETZBUF", "EOPNOTSUPP", WrongBufferMode, None, WRONG_MODE),
    Case("BIOCSETZBUF", "EFAULT", BadAddress, None, "mapped readable and writable"),
    # --- Zero-copy requests in BUFFER mode, BIOCSBLEN in ZBUF mode (Appendix A).
    Case("BIOCGETZMAX", "EOPNOTSUPP", WrongBufferMode, None, WRONG_MODE),
    Case("BIOCROTZBUF", "EOPNOTSUPP", WrongBufferMode, None, WRONG_MODE),
    Case("BIOCSBLEN", "EOPNOTSUPP", WrongBufferMode, None, WRONG_MODE),
    Case("BIOCSBLEN", "EINVAL", InvalidStateError, None, "before the descriptor is attached"),
    # --- BIOCSETIF (§e, §i): unknown name ENXIO wins over missing zero-copy buffers.
    Case("BIOCSETIF", "ENXIO", InterfaceNotFound, LookupError, "ifconfig -l"),
    Case("BIOCSETIF", "EINVAL", InvalidStateError, None, "before attaching"),
    # --- Filters (§h): too long or refused by bpf_validate.
    Case("BIOCSETF", "EINVAL", InvalidFilter, ValueError, "net.bpf.maxinsns"),
    Case("BIOCSETFNR", "EINVAL", InvalidFilter, ValueError, "bpf_validate"),
    Case("BIOCSETWF", "EINVAL", InvalidFilter, ValueError, "bpf_validate"),
    # --- Other argument checks (§e per-ioctl table).
    Case("BIOCSTSTAMP", "EINVAL", InvalidArgument, ValueError, ""),
    Case("BIOCSDIRECTION", "EINVAL", InvalidArgument, ValueError, ""),
    Case("BIOCSRSIG", "EINVAL", InvalidArgument, ValueError, ""),
    Case("BIOCSRTIMEOUT", "EINVAL", InvalidArgument, ValueError, ""),
    Case("BIOCSETVLANPCP", "EINVAL", InvalidArgument, ValueError, ""),
    Case("BIOCSDLT", "EINVAL", InvalidArgument, ValueError, "BIOCGDLTLIST"),
    # Not attached: BIOCGETIF/BIOCGDLT/BIOCGDLTLIST/BIOCPROMISC return EINVAL (§i).
    Case("BIOCGETIF", "EINVAL", InvalidArgument, ValueError, "first (BIOCSETIF)"),
    Case("BIOCGDLT", "EINVAL", InvalidArgument, ValueError, "first (BIOCSETIF)"),
    Case("BIOCGDLTLIST", "EINVAL", InvalidArgument, ValueError, "first (BIOCSETIF)"),
    Case("BIOCPROMISC", "EINVAL", InvalidArgument, ValueError, "first (BIOCSETIF)"),
    # --- The generic layers: unknown request encodings, SIGIO owner, access mode.
    Case("ioctl 0x7fffffff", "ENOTTY", InvalidArgument, ValueError, "does not know"),
    Case("open", "EPERM", PermissionDenied, PermissionError, "security policy"),
    Case("FIOSETOWN", "EPERM", DescriptorLocked, PermissionError, "your session"),
    Case("TIOCSPGRP", "EPERM", DescriptorLocked, PermissionError, "your session"),
    # --- Output buffers too small (§d, §e).
    Case("BIOCGDLTLIST", "ENOMEM", BufferTooSmall, None, "number of link types"),
    Case("BIOCGDLTLIST", "EFAULT", BadAddress, None, "mapped"),
    Case("BIOCGETIFLIST", "ENOSPC", BufferTooSmall, None, "too small"),
    Case("BIOCGETIFLIST", "EFAULT", BadAddress, None, "mapped"),
    # --- read(2) (§e): length first, then mode; then attach, then O_NONBLOCK.
    Case("read", "EINVAL", InvalidArgument, ValueError, "exactly BIOCGBLEN bytes"),
    Case("read", "EOPNOTSUPP", WrongBufferMode, None, "shared buffers, not read(2)"),
    Case("read", "ENXIO", NotAttached, None, "not attached"),
    Case("read", "EAGAIN", WouldBlock, BlockingIOError, "non-blocking"),
    Case("read", "EWOULDBLOCK", WouldBlock, BlockingIOError, "non-blocking"),
    Case("read", "EIO", InternalError, None, "I/O error"),
    # --- write(2) (§e).
    Case("write", "ENXIO", NotAttached, None, "not attached"),
    Case("write", "ENETDOWN", InterfaceDown, None, "ifconfig IF up"),
    Case("write", "EPERM", WriteRejected, PermissionError, "write filter (BIOCSETWF)"),
    Case("write", "EMSGSIZE", InvalidArgument, ValueError, "MTU"),
    Case("read", "EBADF", InvalidStateError, None, "O_RDONLY or O_RDWR"),
    Case("write", "EBADF", InvalidStateError, None, "O_WRONLY or O_RDWR"),
]

# Classes the style guide gives no builtin mixin ("—"): a caller catches them
# by their own name, so they must not pass for one of the builtins.
NO_MIXIN = [InvalidStateError, NotAttached, WrongBufferMode, UnsupportedError,
            ZeroCopyDisabled, InternalError, BadAddress, BufferTooSmall, InterfaceDown]
MIXINS = (PermissionError, LookupError, ValueError, BlockingIOError, FileNotFoundError)

ERROR_CLASSES = [getattr(errors, name) for name in errors.__all__ if name[0].isupper()]

def _hint_in_str(text: str, hint: str) -> bool:
    # __str__ capitalises the hint's first letter.
    return hint[1:] in text


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize("case", CASES, ids=Case.id)
def test_class_errno_and_mixin(case: Case) -> None:
    err = from_errno(case.errnum, case.op)
    assert type(err) is case.cls
    assert isinstance(err, BPFError)
    assert isinstance(err, OSError)
    if case.builtin is not None:
        assert isinstance(err, case.builtin)
    assert err.errno == case.errnum
    assert err.strerror == os.strerror(case.errnum)
    assert err.args == (case.errnum, os.strerror(case.errnum))
    assert err.op == case.op
    assert err.ifname is None


@pytest.mark.parametrize("case", CASES, ids=Case.id)
def test_str_names_the_operation_and_carries_the_hint(case: Case) -> None:
    err = from_errno(case.errnum, case.op)
    text = str(err)
    assert text.startswith(f"[Errno {case.errnum}] {case.op}: {os.strerror(case.errnum)}")
    assert case.hint in err.hint
    if case.hint:
        assert _hint_in_str(text, err.hint)
        assert text.endswith(err.hint[1:])


@pytest.mark.parametrize("case", [c for c in CASES if c.builtin], ids=Case.id)
def test_except_clause_by_builtin(case: Case) -> None:
    """What a caller writes: ``except PermissionError`` etc. catches the error."""
    assert case.builtin is not None
    with pytest.raises(case.builtin) as info:
        raise from_errno(case.errnum, case.op)
    assert info.value.errno == case.errnum


def test_every_spec_errno_is_covered() -> None:
    covered = {case.err for case in CASES}
    spec = {"EPERM", "EACCES", "ENXIO", "ENOENT", "EBUSY", "EINVAL", "EOPNOTSUPP", "EFAULT",
            "ENOMEM", "ENOSPC", "EAGAIN", "EMSGSIZE", "ENETDOWN", "EIO"}
    assert spec <= covered


# ------------------------------------------------------------------ ifname, refinements


def test_ifname_is_kept_and_named_in_str() -> None:
    err = from_errno(errno.ENXIO, "BIOCSETIF", ifname="em9")
    assert isinstance(err, InterfaceNotFound)
    assert isinstance(err, LookupError)
    assert err.ifname == "em9"
    assert str(err).startswith(f"[Errno {errno.ENXIO}] BIOCSETIF on em9: ")


def test_ifname_on_other_errors() -> None:
    err = from_errno(errno.ENETDOWN, "write", ifname="em0")
    assert isinstance(err, InterfaceDown)
    assert err.ifname == "em0"
    assert "write on em0" in str(err)


def test_cls_refines_a_second_setzbuf_keeping_einval() -> None:
    """The Descriptor knows a second BIOCSETZBUF is a state error, not bad memory."""
    err = from_errno(errno.EINVAL, "BIOCSETZBUF", cls=InvalidStateError,
                     hint="buffers can be registered once, before BIOCSETIF")
    assert type(err) is InvalidStateError
    assert not isinstance(err, ValueError)
    assert err.errno == errno.EINVAL
    assert err.op == "BIOCSETZBUF"
    assert str(err).endswith("Buffers can be registered once, before BIOCSETIF")


def test_cls_refines_setbufmode_to_zero_copy_disabled() -> None:
    err = from_errno(errno.EINVAL, "BIOCSETBUFMODE", cls=ZeroCopyDisabled,
                     hint=errors.ZEROCOPY_ENABLE_HINT)
    assert type(err) is ZeroCopyDisabled
    assert isinstance(err, UnsupportedError)
    assert err.errno == errno.EINVAL
    assert "sysctl net.bpf.zerocopy_enable=1" in str(err)


def test_cls_refines_locked_from_a_plain_permission_error() -> None:
    err = from_errno(errno.EPERM, "BIOCSETIF", cls=PermissionDenied, hint="")
    assert type(err) is PermissionDenied
    assert err.hint == ""


def test_cls_alone_keeps_the_default_hint() -> None:
    default = from_errno(errno.EINVAL, "BIOCSETZBUF")
    refined = from_errno(errno.EINVAL, "BIOCSETZBUF", cls=InvalidStateError)
    assert type(refined) is InvalidStateError
    assert refined.hint == default.hint


def test_hint_alone_keeps_the_default_class() -> None:
    err = from_errno(errno.ENXIO, "BIOCSETIF", ifname="tap0", hint="create it with ifconfig")
    assert type(err) is InterfaceNotFound
    assert err.hint == "create it with ifconfig"
    assert str(err) == (f"[Errno {errno.ENXIO}] BIOCSETIF on tap0: {os.strerror(errno.ENXIO)}. "
                        "Create it with ifconfig")


def test_empty_hint_leaves_no_trailing_sentence() -> None:
    err = from_errno(errno.EBUSY, "BIOCSETBUFMODE", hint="")
    assert str(err) == f"[Errno {errno.EBUSY}] BIOCSETBUFMODE: {os.strerror(errno.EBUSY)}"


def test_unknown_errno_falls_back_to_the_base_class() -> None:
    err = from_errno(errno.EXDEV, "BIOCFLUSH")
    assert type(err) is BPFError
    assert err.errno == errno.EXDEV
    assert err.op == "BIOCFLUSH"


def test_enotty_keeps_errno_and_operation() -> None:
    """ENOTTY comes from the generic ioctl layer for malformed request encodings (§b)."""
    err = from_errno(errno.ENOTTY, _abi.request_name(0x7FFF_FFFF))
    assert isinstance(err, BPFError)
    assert err.errno == errno.ENOTTY
    assert err.op == "ioctl 0x7fffffff"


def test_enotty_is_not_the_bare_base_class() -> None:
    err = from_errno(errno.ENOTTY, "ioctl 0x7fffffff")
    assert type(err) is not BPFError
    assert isinstance(err, ValueError)


def test_eperm_from_open_is_not_a_locked_descriptor() -> None:
    err = from_errno(errno.EPERM, "open")
    assert type(err) is PermissionDenied


# ------------------------------------------------------------ class design (style §3.3)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_public_module(cls: type[BPFError]) -> None:
    assert cls.__module__ == "bsdbpf"
    assert issubclass(cls, BPFError)
    assert issubclass(cls, OSError)


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (PermissionDenied, PermissionError),
        (DescriptorLocked, PermissionDenied),
        (WriteRejected, PermissionDenied),
        (InterfaceNotFound, LookupError),
        (SysctlNotFound, LookupError),
        (DeviceNotFound, FileNotFoundError),
        (InvalidArgument, ValueError),
        (InvalidFilter, InvalidArgument),
        (InvalidBuffer, InvalidArgument),
        (NotAttached, InvalidStateError),
        (WrongBufferMode, InvalidStateError),
        (ZeroCopyDisabled, UnsupportedError),
        (WouldBlock, BlockingIOError),
    ],
    ids=lambda c: c.__name__,
)
def test_hierarchy(cls: type[BPFError], parent: type[BaseException]) -> None:
    assert issubclass(cls, parent)


@pytest.mark.parametrize("cls", NO_MIXIN, ids=lambda c: c.__name__)
def test_no_builtin_mixin(cls: type[BPFError]) -> None:
    assert not issubclass(cls, MIXINS)


def test_from_errno_is_the_only_constructor_it_needs() -> None:
    """Every class takes (errno, op, hint, ifname): what __reduce__ and from_errno pass."""
    for cls in ERROR_CLASSES:
        err = cls(errno.EINVAL, "BIOCFLUSH", "a hint", "lo0")
        assert (err.errno, err.op, err.hint, err.ifname) == (errno.EINVAL, "BIOCFLUSH",
                                                              "a hint", "lo0")


# -------------------------------------------------------------------------- pickling


PICKLE_CASES = [
    *(pytest.param(case.errnum, case.op, None, id=case.id()) for case in CASES),
    pytest.param(errno.ENXIO, "BIOCSETIF", "em0", id="BIOCSETIF-ENXIO-ifname"),
]


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``bsdbpf.<Class>`` resolvable, as the package's re-export does.

    pickle finds a class by ``__module__`` and name, and ``__module__`` is
    ``"bsdbpf"``; this checks ``__reduce__`` whether or not the re-export has
    landed (test_reexported_from_the_package checks that separately).
    """
    for cls in ERROR_CLASSES:
        monkeypatch.setattr(bsdbpf, cls.__name__, cls, raising=False)


@pytest.mark.usefixtures("exported")
@pytest.mark.parametrize(("errnum", "op", "ifname"), PICKLE_CASES)
def test_pickle_round_trip(errnum: int, op: str, ifname: str | None) -> None:
    err = from_errno(errnum, op, ifname=ifname)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back: Any = pickle.loads(pickle.dumps(err, protocol=protocol))
        assert type(back) is type(err)
        assert (back.errno, back.strerror, back.op, back.hint, back.ifname) == (
            err.errno, err.strerror, err.op, err.hint, err.ifname)
        assert back.args == err.args
        assert str(back) == str(err)


@pytest.mark.usefixtures("exported")
def test_pickle_keeps_a_refined_class_and_hint() -> None:
    err = from_errno(errno.EINVAL, "BIOCSETBUFMODE", cls=ZeroCopyDisabled, hint="turn it on")
    back: Any = pickle.loads(pickle.dumps(err))
    assert type(back) is ZeroCopyDisabled
    assert back.hint == "turn it on"
    assert back.errno == errno.EINVAL


@pytest.mark.usefixtures("exported")
def test_pickle_keeps_the_cause_out() -> None:
    """A pickled error carries its own attributes; a chained cause is not required."""
    try:
        try:
            raise OSError(errno.EINVAL, "inner")
        except OSError as inner:
            raise from_errno(errno.EINVAL, "BIOCSETF") from inner
    except BPFError as err:
        back: Any = pickle.loads(pickle.dumps(err))
    assert type(back) is InvalidFilter
    assert back.op == "BIOCSETF"


def test_reexported_from_the_package() -> None:
    for cls in ERROR_CLASSES:
        assert getattr(bsdbpf, cls.__name__, None) is cls
    err = from_errno(errno.EACCES, "open")
    assert type(pickle.loads(pickle.dumps(err))) is PermissionDenied


# --------------------------------------------------------------------- the system seam


@pytest.mark.skipif(sys.platform.startswith("freebsd"), reason="this host is FreeBSD")
def test_host_system_refuses_off_freebsd_and_points_at_the_simulator() -> None:
    with pytest.raises(UnsupportedError) as info:
        system.HostSystem()
    err = info.value
    assert err.errno == errno.ENOSYS
    assert err.op == "HostSystem"
    assert sys.platform in str(err)
    assert "bsdbpf.sim.Kernel()" in str(err)
    assert "BSDBPF_SYSTEM=sim" in str(err)


@pytest.mark.skipif(sys.platform.startswith("freebsd"), reason="this host is FreeBSD")
def test_bsdbpf_system_host_off_freebsd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSDBPF_SYSTEM", "host")
    with pytest.raises(UnsupportedError, match="BSDBPF_SYSTEM=sim"):
        backend.default_system()


def test_bsdbpf_system_rejects_unknown_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSDBPF_SYSTEM", "linux")
    with pytest.raises(ValueError, match="expected 'host' or 'sim'"):
        backend.default_system()


class _Libc:
    """A libc call that fails with the given errnos, in order, then returns 0."""

    def __init__(self, *errnos: int) -> None:
        self.errnos = list(errnos)
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.errnos:
            ffi.errno = self.errnos.pop(0)
            return -1
        return 0


def test_eintr_never_surfaces() -> None:
    call = _Libc(errno.EINTR, errno.EINTR, errno.EINTR)
    assert system._retry("read", call) == 0
    assert call.calls == 4


def test_the_seam_raises_through_from_errno() -> None:
    call = _Libc(errno.EINTR, errno.EOPNOTSUPP)
    with pytest.raises(WrongBufferMode) as info:
        system._retry("read", call)
    assert info.value.errno == errno.EOPNOTSUPP
    assert info.value.op == "read"
    assert call.calls == 2


def test_the_seam_names_ioctls_by_request() -> None:
    op = _abi.request_name(lib.BIOCSETZBUF)
    with pytest.raises(InvalidBuffer) as info:
        system._retry(op, _Libc(errno.EINVAL))
    assert info.value.op == "BIOCSETZBUF"
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------- request_name

ALIASES = {"BIOCGSEESENT": "BIOCGDIRECTION", "BIOCSSEESENT": "BIOCSDIRECTION"}
REQUESTS = sorted(name for name in dir(lib)
                  if name.startswith(("BIOC", "FIO", "TIOC")) and getattr(lib, name))


def test_requests_are_present() -> None:
    bioc = [name for name in REQUESTS if name.startswith("BIOC")]
    assert {"BIOCSETBUFMODE", "BIOCSETZBUF", "BIOCROTZBUF", "BIOCGETZMAX", "BIOCSETIF",
            "BIOCSETF", "BIOCLOCK"} <= set(bioc)
    assert len(bioc) >= 30


@pytest.mark.parametrize("name", REQUESTS)
def test_request_name_round_trip(name: str) -> None:
    value = getattr(lib, name)
    assert _abi.request_name(value) == ALIASES.get(name, name)
    assert getattr(lib, _abi.request_name(value)) == value


def test_request_names_are_unique() -> None:
    values = [getattr(lib, name) for name in REQUESTS if name not in ALIASES]
    assert len(values) == len(set(values))


@pytest.mark.parametrize("number", [0xDEADBEEF, 0x1, 0x20004200])
def test_request_name_unknown_number(number: int) -> None:
    assert number not in {getattr(lib, name) for name in REQUESTS}
    assert _abi.request_name(number) == f"ioctl {number:#x}"


# ------------------------------------------------- the simulator raises the same classes
#
# Appendix A's situations on a fresh simulated host: what comes out must be the
# class from_errno gives for that (operation, errno), with the errno FreeBSD returns.

@pytest.fixture
def fd(kernel: Any) -> int:
    return int(kernel.open("/dev/bpf", os.O_RDWR))


def _uint(value: int) -> Any:
    return ffi.new("unsigned int *", value)


def _ifreq(name: str) -> Any:
    ifr = ffi.new("struct ifreq *")
    ifr.ifr_name = name.encode()
    return ifr


def _sim_error(call: Any, *args: Any) -> BPFError:
    with pytest.raises(BPFError) as info:
        call(*args)
    err = info.value
    # Whatever the simulator adds (a hint, an ifname), the class is the table's.
    assert type(err) is type(from_errno(err.errno, err.op))
    return err


def _zerocopy_on(kernel: Any) -> None:
    kernel.sysctlbyname("net.bpf.zerocopy_enable", (1).to_bytes(4, sys.byteorder))


def test_sim_unprivileged_open_sysctl_and_stats() -> None:
    with sim.Kernel(uid=1001) as k:
        err = _sim_error(k.open, "/dev/bpf", os.O_RDWR)
        assert (type(err), err.errno, err.op) == (PermissionDenied, errno.EACCES, "open")
        err = _sim_error(k.sysctlbyname, "net.bpf.stats")
        assert (type(err), err.errno) == (PermissionDenied, errno.EPERM)
        assert err.op == "sysctl net.bpf.stats"
        err = _sim_error(k.sysctlbyname, "net.bpf.zerocopy_enable", bytes(4))
        assert (type(err), err.errno) == (PermissionDenied, errno.EPERM)
        assert isinstance(err, PermissionError)


def test_sim_missing_device_and_sysctl(kernel: Any) -> None:
    err = _sim_error(kernel.open, "/dev/bpf7", os.O_RDWR)
    assert (type(err), err.errno) == (DeviceNotFound, errno.ENOENT)
    err = _sim_error(kernel.sysctlbyname, "net.bpf.no_such_oid")
    assert (type(err), err.errno) == (SysctlNotFound, errno.ENOENT)
    assert isinstance(err, LookupError)


def test_sim_setif_unknown_interface(kernel: Any, fd: int) -> None:
    err = _sim_error(kernel.ioctl, fd, lib.BIOCSETIF, _ifreq("nosuch0"))
    assert (type(err), err.errno, err.op) == (InterfaceNotFound, errno.ENXIO, "BIOCSETIF")
    assert err.ifname == "nosuch0"
    assert "BIOCSETIF on nosuch0" in str(err)


def test_sim_setbufmode_zbuf_while_disabled(kernel: Any, fd: int) -> None:
    err = _sim_error(kernel.ioctl, fd, lib.BIOCSETBUFMODE, _uint(lib.BPF_BUFMODE_ZBUF))
    assert (type(err), err.errno) == (InvalidArgument, errno.EINVAL)
    assert "zerocopy_enable" in str(err)


def test_sim_setbufmode_after_sblen_is_busy(kernel: Any, fd: int) -> None:
    kernel.ioctl(fd, lib.BIOCSBLEN, _uint(8192))
    err = _sim_error(kernel.ioctl, fd, lib.BIOCSETBUFMODE, _uint(lib.BPF_BUFMODE_BUFFER))
    assert (type(err), err.errno) == (InvalidStateError, errno.EBUSY)


def test_sim_zero_copy_requests_in_buffer_mode(kernel: Any, fd: int) -> None:
    for request, arg in ((lib.BIOCGETZMAX, ffi.new("size_t *")),
                         (lib.BIOCROTZBUF, ffi.new("struct bpf_zbuf *")),
                         (lib.BIOCSETZBUF, ffi.new("struct bpf_zbuf *"))):
        err = _sim_error(kernel.ioctl, fd, request, arg)
        assert (type(err), err.errno) == (WrongBufferMode, errno.EOPNOTSUPP)
        assert err.op == _abi.request_name(request)


def test_sim_zbuf_mode_errors(kernel: Any, fd: int) -> None:
    _zerocopy_on(kernel)
    kernel.ioctl(fd, lib.BIOCSETBUFMODE, _uint(lib.BPF_BUFMODE_ZBUF))
    err = _sim_error(kernel.ioctl, fd, lib.BIOCSETZBUF, ffi.new("struct bpf_zbuf *"))
    assert (type(err), err.errno) == (InvalidBuffer, errno.EINVAL)
    err = _sim_error(kernel.ioctl, fd, lib.BIOCSETIF, _ifreq("em0"))
    assert (type(err), err.errno) == (InvalidStateError, errno.EINVAL)
    err = _sim_error(kernel.ioctl, fd, lib.BIOCSBLEN, _uint(4096))
    assert (type(err), err.errno) == (WrongBufferMode, errno.EOPNOTSUPP)
    blen = _uint(0)
    kernel.ioctl(fd, lib.BIOCGBLEN, blen)
    err = _sim_error(kernel.read, fd, bytearray(blen[0] + 1))
    assert (type(err), err.errno, err.op) == (InvalidArgument, errno.EINVAL, "read")
    err = _sim_error(kernel.read, fd, bytearray(blen[0]))
    assert (type(err), err.errno, err.op) == (WrongBufferMode, errno.EOPNOTSUPP, "read")


def test_sim_locked_descriptor(kernel: Any, fd: int) -> None:
    kernel.ioctl(fd, lib.BIOCLOCK)
    for request, arg in ((lib.BIOCSETBUFMODE, _uint(lib.BPF_BUFMODE_BUFFER)),
                         (lib.BIOCSETIF, _ifreq("em0")),
                         (lib.BIOCGETZMAX, ffi.new("size_t *"))):
        err = _sim_error(kernel.ioctl, fd, request, arg)
        assert (type(err), err.errno) == (DescriptorLocked, errno.EPERM)
        assert isinstance(err, PermissionError)
    kernel.ioctl(fd, lib.BIOCGBLEN, _uint(0))  # on the whitelist


def test_sim_bad_filter(kernel: Any, fd: int) -> None:
    insns = ffi.new("struct bpf_insn[1]")  # BPF_LD|BPF_W|BPF_ABS with no RET: not valid
    insns[0].code = lib.BPF_LD | lib.BPF_W | lib.BPF_ABS
    prog = ffi.new("struct bpf_program *")
    prog.bf_len = 1
    prog.bf_insns = insns
    for request in (lib.BIOCSETF, lib.BIOCSETFNR, lib.BIOCSETWF):
        err = _sim_error(kernel.ioctl, fd, request, prog)
        assert (type(err), err.errno) == (InvalidFilter, errno.EINVAL)


def test_sim_not_attached(kernel: Any, fd: int) -> None:
    err = _sim_error(kernel.ioctl, fd, lib.BIOCGETIF, _ifreq(""))
    assert (type(err), err.errno) == (InvalidArgument, errno.EINVAL)
    err = _sim_error(kernel.write, fd, bytes(60))
    assert (type(err), err.errno, err.op) == (NotAttached, errno.ENXIO, "write")


def test_sim_nonblocking_read_and_dltlist(kernel: Any) -> None:
    fd = kernel.open("/dev/bpf", os.O_RDWR | os.O_NONBLOCK)
    kernel.ioctl(fd, lib.BIOCSETIF, _ifreq("em0"))
    blen = _uint(0)
    kernel.ioctl(fd, lib.BIOCGBLEN, blen)
    err = _sim_error(kernel.read, fd, bytearray(blen[0]))
    assert (type(err), err.errno) == (WouldBlock, errno.EAGAIN)
    assert isinstance(err, BlockingIOError)
    dlts = ffi.new("unsigned int[1]")
    bfl = ffi.new("struct bpf_dltlist *")
    bfl.bfl_list = dlts
    bfl.bfl_len = 0
    err = _sim_error(kernel.ioctl, fd, lib.BIOCGDLTLIST, bfl)
    assert (type(err), err.errno) == (BufferTooSmall, errno.ENOMEM)
