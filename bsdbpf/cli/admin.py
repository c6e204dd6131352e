"""``bsdbpf zerocopy``, ``bsdbpf sysctl`` and ``bsdbpf stats``: the administrator's
view of the bpf driver, as ``sysctl(8)`` and ``netstat -B`` give it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bsdbpf.cli.common import PROG, CommandError, note
from bsdbpf.cli.host import Host
from bsdbpf.errors import BPFError, SysctlNotFound
from bsdbpf.stats import STATS_SYSCTL, DescriptorStats, read_stats, zero_stats
from bsdbpf.system import System

__all__ = ["cmd_stats", "cmd_sysctl", "cmd_zerocopy", "process_name", "stats_table"]

ZEROCOPY_ENABLE = "net.bpf.zerocopy_enable"
BPF_SYSCTLS = (
    ZEROCOPY_ENABLE,
    "net.bpf.bufsize",
    "net.bpf.maxbufsize",
    "net.bpf.maxinsns",
    "net.bpf.optimize_writers",
)
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
SIM_ZEROCOPY_TIP = f"`{PROG} capture --zerocopy on` turns zero-copy on for its capture"


def _full_name(name: str) -> str:
    """``bufsize`` is short for ``net.bpf.bufsize``."""
    return name if "." in name else f"net.bpf.{name}"


def _get_int(system: System, name: str) -> int:
    if name == STATS_SYSCTL:
        raise CommandError(f"{name} is a table, not an integer: `{PROG} stats` shows it")
    value = system.sysctlbyname(name)
    if len(value) != 4:
        raise CommandError(f"{name} is not an integer sysctl ({len(value)} bytes)")
    return int.from_bytes(value, sys.byteorder, signed=True)


def _set_int(system: System, name: str, value: int) -> tuple[int, int]:
    """Write an int sysctl; returns (old, new) as the kernel reports them."""
    if not INT_MIN <= value <= INT_MAX:
        raise CommandError(f"{name}={value}: out of range for a 4-byte int")
    old = _get_int(system, name)  # also refuses sysctls that are not ints
    system.sysctlbyname(name, value.to_bytes(4, sys.byteorder, signed=True))
    return old, _get_int(system, name)


def _settings_note(host: Host, tip: str = "") -> None:
    if host.simulated:
        note(f"{host.note}: the change lasts only until this command exits"
             + (f"; {tip}" if tip else ""))


def cmd_zerocopy(args: Any, host: Host) -> int:
    if args.action == "status":
        value = _get_int(host.system, ZEROCOPY_ENABLE)
        if value:
            print(f"zero-copy BPF is enabled ({ZEROCOPY_ENABLE}={value})")
        else:
            print(f"zero-copy BPF is disabled ({ZEROCOPY_ENABLE}=0); "
                  f"`{PROG} zerocopy on` (as root) enables it for new descriptors")
            if host.simulated:
                note(f"{host.note}: each command has a fresh one; {SIM_ZEROCOPY_TIP}")
        return 0
    old, new = _set_int(host.system, ZEROCOPY_ENABLE, int(args.action == "on"))
    print(f"{ZEROCOPY_ENABLE}: {old} -> {new}")
    _settings_note(host, SIM_ZEROCOPY_TIP)
    return 0


def cmd_sysctl(args: Any, host: Host) -> int:
    failed = changed = False
    for item in args.settings or BPF_SYSCTLS:
        name, sep, text = item.partition("=")
        name = _full_name(name.strip())
        try:
            if not sep:
                print(f"{name}: {_get_int(host.system, name)}")
                continue
            try:
                value = int(text.strip(), 0)
            except ValueError:
                raise CommandError(f"{name}={text}: the value must be an integer") from None
            old, new = _set_int(host.system, name, value)
            print(f"{name}: {old} -> {new}")
            changed = True
        except SysctlNotFound as err:
            if not args.settings:  # the listing: an older kernel may lack one
                note(f"{name}: not in this kernel")
                continue
            note(str(err))
            failed = True
        except (BPFError, CommandError) as err:
            note(str(err))
            failed = True
    if changed:
        _settings_note(host)
    return 1 if failed else 0


def process_name(pid: int) -> str:
    """The command name of a process, as ``netstat -B`` shows it (``??????``
    if it cannot be found)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()  # Linux; FreeBSD's procfs
    except OSError:
        pass
    try:
        ps = subprocess.run(["ps", "-o", "comm=", "-p", str(pid)], capture_output=True,
                            text=True, timeout=5, check=False)
        name = ps.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return os.path.basename(name) or "??????"


def stats_table(records: Sequence[DescriptorStats]) -> list[str]:
    """The lines ``netstat -B`` prints for these records, header first."""
    row = "{:>5} {:>6} {:>7} {:>9} {:>9} {:>9} {:>5} {:>5} {}"
    lines = [row.format("Pid", "Netif", "Flags", "Recv", "Drop", "Match", "Sblen", "Hblen",
                        "Command")]
    names: dict[int, str] = {}
    for r in records:
        if r.pid not in names:
            names[r.pid] = process_name(r.pid)
        lines.append(row.format(r.pid, r.ifname, r.flags, r.recv, r.drop, r.match,
                                r.store_len, r.hold_len, names[r.pid]))
    return lines


def cmd_stats(args: Any, host: Host) -> int:
    if args.zero:
        if args.interface is not None:
            raise CommandError("-z zeroes the counters of every descriptor (net.bpf.stats has "
                               "no per-interface reset, as with netstat -B -z): leave out -i")
        zero_stats(host.system)
        print("net.bpf.stats: counters zeroed")
        return 0
    records = [r for r in read_stats(host.system)
               if args.interface is None or r.ifname == args.interface]
    for line in stats_table(records):
        print(line)
    if host.simulated:
        note(f"{host.note}: it lives in this process, so only descriptors this process "
             "attached are listed")
    return 0
