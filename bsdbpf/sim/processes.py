"""Who may own a descriptor's SIGIO: fsetown()'s checks against the host's
processes.  Looking is all the simulator does with other processes; it only
ever signals the process it runs in."""

from __future__ import annotations

import errno
import os

__all__ = ["owner_error"]

PROC = "/proc"


def _session_of_process(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None
    except PermissionError:  # exists, in a session we may not ask about
        return -1


def _session_of_group(pgid: int) -> int | None:
    """The session of any member of process group ``pgid`` (from Linux's
    /proc/PID/stat), or of its leader elsewhere: FreeBSD's /proc is empty
    unless procfs(5) is mounted, and procfs has no stat files."""
    if not os.path.exists(f"{PROC}/self/stat"):
        return _session_of_process(pgid)
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        try:
            with open(f"{PROC}/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # after the command: state, ppid, pgrp, session
        if int(fields[2]) == pgid:
            return int(fields[3])
    return None


def owner_error(pgid: int) -> int:
    """fsetown(): 0 if ``pgid`` (a pid if > 0, a process group if < 0) may own
    the caller's descriptor, else ESRCH (no such process or group) or EPERM
    (it is in another session)."""
    if pgid == 0:
        return 0
    session = _session_of_process(pgid) if pgid > 0 else _session_of_group(-pgid)
    if session is None:
        return errno.ESRCH
    return 0 if session == os.getsid(0) else errno.EPERM
