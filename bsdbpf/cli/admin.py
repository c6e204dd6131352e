"""``bsdbpf zerocopy``, ``bsdbpf sysctl`` and ``bsdbpf stats``: the administrator's
view of the bpf driver, as ``sysctl(8)`` and ``netstat -B`` give it."""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bsdbpf import sysctl
from bsdbpf.cli.common import PROG, CommandError, note
from bsdbpf.cli.host import Host
from bsdbpf.errors import BPFError
from bsdbpf.stats import DescriptorStats, read_stats, zero_stats
from bsdbpf.sysctl import ROOT, ZEROCOPY_ENABLE

__all__ = ["cmd_stats", "cmd_sysctl", "cmd_zerocopy", "process_name", "stats_table"]

SIM_ZEROCOPY_TIP = f"`{PROG} capture --zerocopy on` turns zero-copy on for its capture"


def _full_name(name: str) -> str:
    """``bufsize`` is short for ``net.bpf.bufsize``."""
    return name if "." in name else f"net.bpf.{name}"


def _settings_note(host: Host, tip: str = "") -> None:
    if host.simulated:
        note(f"{host.note}: the change lasts only until this command exits"
             + (f"; {tip}" if tip else ""))


def cmd_zerocopy(args: argparse.Namespace, host: Host) -> int:
    if args.action == "status":
        value = sysctl.get(ZEROCOPY_ENABLE, system=host.system)
        if value:
            print(f"zero-copy BPF is enabled ({ZEROCOPY_ENABLE}={value})")
        else:
            print(f"zero-copy BPF is disabled ({ZEROCOPY_ENABLE}=0); "
                  f"`{PROG} zerocopy on` (as root) enables it for new descriptors")
            if host.simulated:
                note(f"{host.note}: each command has a fresh one; {SIM_ZEROCOPY_TIP}")
        return 0
    old = sysctl.set(ZEROCOPY_ENABLE, int(args.action == "on"), system=host.system)
    print(f"{ZEROCOPY_ENABLE}: {old} -> {sysctl.get(ZEROCOPY_ENABLE, system=host.system)}")
    _settings_note(host, SIM_ZEROCOPY_TIP)
    return 0


def _show(args: argparse.Namespace, entry: sysctl.SysctlEntry) -> str:
    """One line of a listing, as sysctl(8) prints it with -n and -d."""
    shown = entry.description if args.describe else str(entry.value)
    return shown if args.values_only else f"{entry.name}: {shown}"


def _one_setting(args: argparse.Namespace, host: Host, item: str) -> bool:
    """Print or set one NAME or NAME=VALUE; True if something was changed."""
    name, sep, text = item.partition("=")
    name = _full_name(name.strip())
    if not sep:
        entries = sysctl.list(name, system=host.system)
        if [e.name for e in entries] == [name] and entries[0].kind != sysctl.INTEGER:
            raise CommandError(f"{name} is a table, not an integer: `{PROG} stats` shows it")
        for entry in entries:
            if entry.kind == sysctl.INTEGER:  # sysctl(8) lists opaque nodes only with -o
                print(_show(args, entry))
        return False
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise CommandError(f"{name}={text}: the value must be an integer") from None
    old = sysctl.set(name, value, system=host.system)
    new = sysctl.get(name, system=host.system)
    print(new if args.values_only else f"{name}: {old} -> {new}")
    return True


def cmd_sysctl(args: argparse.Namespace, host: Host) -> int:
    failed = changed = False
    for item in ([ROOT] if args.all or not args.settings else []) + args.settings:
        try:
            changed = _one_setting(args, host, item) or changed
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
        # Linux; FreeBSD's procfs(5), when mounted, has no comm file: ps(1) answers there.
        return Path(f"/proc/{pid}/comm").read_text().strip()
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


def cmd_stats(args: argparse.Namespace, host: Host) -> int:
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
