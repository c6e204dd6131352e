"""Faults that once reached the host, and FreeBSD rules the model missed.

Each test here failed before the simulator was fixed.  Those that hold on
FreeBSD run on either kernel; those that use ``kernel`` need the simulator's
own controls (a generator, a tiny net.bpf.maxbufsize FreeBSD would panic on).
Tests whose failure was a crash run their body in a child interpreter.
"""

from __future__ import annotations

import errno
import select
import signal
import subprocess
import sys
import threading

import pytest
from conftest import int_bytes

from bsdbpf._native import ffi, lib
from bsdbpf.errors import BPFError
from bsdbpf.sim import processes

from .helpers import (
    PAGE,
    WAIT,
    eth_frame,
    run_isolated,
    sim_only,
    stats_records,
    until,
)

SHORT = 0.3  # how long "nothing happens" is watched for


# -- signals (FIOSETOWN / TIOCSPGRP) ------------------------------------------------------------

def _free_pid() -> int:
    """A pid no process has: that of a child already reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_fiosetown_nonexistent_pid_is_esrch(bpf):
    """fsetown(): an owner that is no process is ESRCH (it was accepted)."""
    fd = bpf.open()
    with pytest.raises(BPFError) as info:
        bpf.set_int(fd, lib.FIOSETOWN, _free_pid())
    assert info.value.errno == errno.ESRCH
    assert bpf.get_int(fd, lib.FIOGETOWN) == 0


def test_owner_outside_the_session_is_eperm(bpf):
    """fsetown(): a process or process group of another session is EPERM, so an
    owner of -1 (init's group) can never make the kernel signal the host."""
    fd = bpf.open()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             start_new_session=True)
    try:
        for request, value in ((lib.FIOSETOWN, other.pid), (lib.TIOCSPGRP, other.pid)):
            with pytest.raises(BPFError) as info:
                bpf.set_int(fd, request, value)
            assert info.value.errno == errno.EPERM
        # Group 1 is init's, in another session (EPERM), or none at all in a
        # container whose first process has no group of its own (ESRCH).
        with pytest.raises(BPFError) as info:
            bpf.set_int(fd, lib.FIOSETOWN, -1)
        assert info.value.errno in (errno.EPERM, errno.ESRCH)
    finally:
        other.kill()
        other.wait()
    assert bpf.get_int(fd, lib.FIOGETOWN) == 0


def test_group_owner_where_proc_has_no_stat_files(monkeypatch, tmp_path):
    """FreeBSD's /proc is empty unless procfs(5) is mounted, and procfs has no
    stat files: a group's session is then its leader's, where every group, the
    caller's own too, was "no such group" (ESRCH)."""
    leader = subprocess.Popen(
        [sys.executable, "-c", "import os, time; os.setpgid(0, 0); print(flush=True); "
                               "time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        assert leader.stdout is not None
        leader.stdout.readline()  # it leads its own group, in this session
        monkeypatch.setattr(processes, "PROC", str(tmp_path))
        assert processes.owner_error(-leader.pid) == 0
        assert processes.owner_error(-_free_pid()) == errno.ESRCH
    finally:
        leader.kill()
        leader.wait()
        if leader.stdout is not None:
            leader.stdout.close()


@sim_only("the simulator's promise: it signals only the process it runs in, where FreeBSD "
          "would deliver the SIGTERM to the sibling")
def test_signals_never_reach_another_process(bpf, ifname, traffic):
    """An owner in the caller's session is accepted, as FreeBSD does, but the
    simulator signals only the process it runs in: a sibling whose SIGTERM
    would end it lives on through many wakeups."""
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fd = bpf.open()
        bpf.set_int(fd, lib.FIOSETOWN, sibling.pid)
        bpf.set_uint(fd, lib.BIOCSRSIG, signal.SIGTERM)
        bpf.set_int(fd, lib.FIOASYNC, 1)
        bpf.set_uint(fd, lib.BIOCIMMEDIATE, 1)
        bpf.attach(fd, ifname)
        for _ in range(20):
            traffic(ifname, eth_frame(60))
        recv, _ = bpf.gstats(fd)
        assert recv == 20
        assert not until(lambda: sibling.poll() is not None, SHORT)
    finally:
        sibling.kill()
        sibling.wait()


def test_sigio_default_is_ignored_as_on_freebsd():
    """FreeBSD ignores SIGIO unless the process catches it; Linux's default would
    end the interpreter.  With a handler, the signal arrives."""
    status, out = run_isolated('''
import signal, threading
system.ioctl(fd, lib.FIOSETOWN, ffi.new("int *", os.getpid()))
system.ioctl(fd, lib.FIOASYNC, ffi.new("int *", 1))
system.ioctl(fd, lib.BIOCIMMEDIATE, ffi.new("u_int *", 1))
inject(FRAME)                         # SIG_DFL: discarded
got = threading.Event()
signal.signal(signal.SIGIO, lambda *_: got.set())
inject(FRAME)                         # caught
print("ok" if got.wait(5) else "no signal")
''', traffic=True)
    assert (status, out) == (0, "ok")


# -- the descriptor's lifetime --------------------------------------------------------------

@sim_only("the simulator's promise: a close() from another thread ends a sleeping read")
def test_close_from_another_thread_ends_a_blocked_read(bpf, ifname):
    """Closing is how a capture is stopped: the sleeping reader wakes at once
    with EBADF, holding its own reference (it used to sleep on a condition
    variable the close freed)."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            bpf.system.read(fd, bytearray(bpf.get_uint(fd, lib.BIOCGBLEN)))
        except BaseException as err:  # reported to the test below
            errors.append(err)

    t = threading.Thread(target=reader)
    t.start()
    assert not until(lambda: not t.is_alive(), SHORT)  # it sleeps
    bpf.close(fd)
    t.join(WAIT)
    assert not t.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], OSError)
    assert errors[0].errno == errno.EBADF
    assert "closed while reading" in str(errors[0])


@sim_only("the simulator's promise: a read racing a close() fails through bsdbpf.errors")
def test_close_just_after_read_checked_the_descriptor(kernel, bpf, ifname, monkeypatch):
    """A close() landing between read()'s lookup of the descriptor and its
    sleep: the read fails with the simulator's EBADF, never an OSError about
    the freed fd number (which another open could already reuse)."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    engine_state = kernel._state

    def close_first(desc):
        monkeypatch.setattr(kernel, "_state", engine_state)
        kernel.close(fd)
        return engine_state(desc)

    monkeypatch.setattr(kernel, "_state", close_first)
    with pytest.raises(BPFError) as info:
        kernel.read(fd, bytearray(PAGE))
    assert info.value.errno == errno.EBADF
    bpf.fds.remove(fd)


# -- user memory --------------------------------------------------------------------------

def test_unmapped_ioctl_argument_is_efault():
    """An argument pointing to unmapped memory is EFAULT, in and out (it crashed)."""
    status, out = run_isolated('''
report(lambda: system.ioctl(fd, lib.BIOCGBLEN, ffi.cast("u_int *", 8)))
report(lambda: system.ioctl(fd, lib.BIOCSBLEN, ffi.cast("u_int *", 8)))
report(lambda: system.ioctl(fd, lib.BIOCGSTATS, ffi.cast("struct bpf_stat *", 4096)))
''')
    assert (status, out.splitlines()) == (0, ["BadAddress EFAULT"] * 3)


def test_unmapped_read_and_write_buffers_are_efault():
    """read(2) into and write(2) from memory that is not mapped are EFAULT
    (uiomove); the read's data is gone, as bpfread() reclaims the hold
    buffer anyway (both crashed the simulator)."""
    status, out = run_isolated('''
blen = ffi.new("u_int *")
system.ioctl(fd, lib.BIOCGBLEN, blen)
system.ioctl(fd, lib.BIOCIMMEDIATE, ffi.new("u_int *", 1))
inject(FRAME)
report(lambda: system.read(fd, ffi.buffer(ffi.cast("char *", 8), blen[0])))
report(lambda: system.write(fd, ffi.buffer(ffi.cast("char *", 8), len(FRAME))))
n = ffi.new("int *")
system.ioctl(fd, lib.FIONREAD, n)
print(n[0])
''', traffic=True)
    assert (status, out.splitlines()) == (0, ["BadAddress EFAULT"] * 2 + ["0"])


@sim_only("replaces the simulator's validator with one that lets the process change its "
          "program right after the check")
def test_setf_validates_its_own_copy():
    """BIOCSETF copies the program in before validating it: the process
    changing its instructions right after the check (here: at the worst
    moment, from inside the validator) never gets the changed ones
    installed.  Installed, ``st M[0x3fffffff]`` would write far outside the
    interpreter's scratch memory on the next packet."""
    status, out = run_isolated('''
import bsdbpf.sim.ioctls as ioctls
insns = ffi.new("struct bpf_insn[]", [(lib.BPF_LD | lib.BPF_IMM, 0, 0, 1),
                                      (lib.BPF_ST, 0, 0, 0), (lib.BPF_RET | lib.BPF_A, 0, 0, 0)])
prog = ffi.new("struct bpf_program *", (3, insns))

class RacingProcess:
    def __getattr__(self, name):
        return getattr(lib, name)

    def bsdbpf_validate(self, f, n):
        valid = lib.bsdbpf_validate(f, n)
        insns[1].k = 0x3FFFFFFF
        return valid

ioctls.lib = RacingProcess()
system.ioctl(fd, lib.BIOCSETF, prog)
ioctls.lib = lib
inject(FRAME)
st = ffi.new("struct bpf_stat *")
system.ioctl(fd, lib.BIOCGSTATS, st)
print("ok" if st.bs_recv == 1 else st.bs_recv)
''', traffic=True)
    assert (status, out) == (0, "ok")


@pytest.mark.parametrize("flags", ["shared", "private"])
def test_unmapped_zero_copy_buffers_stay_the_kernels(flags, zerocopy):
    """FreeBSD wires registered buffers: unmapping them leaves the kernel writing
    into its pages, not into whatever the process maps there next (it crashed).
    (``zerocopy`` puts the real kernel's sysctl back after the child set it.)"""
    mapping = ("mmap.mmap(-1, 4096)" if flags == "shared" else
               "mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)")
    status, out = run_isolated(f'''
system.sysctlbyname("net.bpf.zerocopy_enable", (1).to_bytes(4, sys.byteorder))
zfd = system.open("/dev/bpf", os.O_RDWR)
system.ioctl(zfd, lib.BIOCSETBUFMODE, ffi.new("u_int *", lib.BPF_BUFMODE_ZBUF))
maps = [{mapping} for _ in range(2)]
ptrs = [ffi.from_buffer(m) for m in maps]
bz = ffi.new("struct bpf_zbuf *")
bz.bz_bufa, bz.bz_bufb, bz.bz_buflen = ptrs[0], ptrs[1], 4096
system.ioctl(zfd, lib.BIOCSETZBUF, bz)
system.ioctl(zfd, lib.BIOCSETIF, ifr)
inject(FRAME)
seen = FRAME in bytes(maps[0])                    # written where the process sees it
for p, m in zip(ptrs, maps):
    ffi.release(p)
    m.close()
fresh = [mmap.mmap(-1, 4096) for _ in range(4)]   # may land where the buffers were
for _ in range(300):
    inject(FRAME)
st = ffi.new("struct bpf_stat *")
system.ioctl(zfd, lib.BIOCGSTATS, st)
untouched = all(not any(m[:]) for m in fresh)
print("ok" if seen and st.bs_recv == 301 and untouched else
      f"seen={{seen}} recv={{st.bs_recv}} untouched={{untouched}}")
''', traffic=True)
    assert (status, out) == (0, "ok")


@sim_only("checks how the simulator maps zero-copy buffers (its internals): overlapping "
          "ones once ran past the end of its mapping")
def test_one_private_mapping_as_both_buffers():
    """The same private pages given as bufa and bufb: the simulator's second
    mapping must not run past the first one's end (it would raise SIGBUS)."""
    status, out = run_isolated('''
system.sysctlbyname("net.bpf.zerocopy_enable", (1).to_bytes(4, sys.byteorder))
zfd = system.open("/dev/bpf", os.O_RDWR)
system.ioctl(zfd, lib.BIOCSETBUFMODE, ffi.new("u_int *", lib.BPF_BUFMODE_ZBUF))
m = mmap.mmap(-1, 3 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
p = ffi.from_buffer(m)
bz = ffi.new("struct bpf_zbuf *")
bz.bz_bufa, bz.bz_bufb, bz.bz_buflen = p, p + 4096, 8192   # overlapping by a page
system.ioctl(zfd, lib.BIOCSETZBUF, bz)
system.ioctl(zfd, lib.BIOCSETIF, ifr)
for _ in range(300):
    inject(FRAME)
st = ffi.new("struct bpf_stat *")
system.ioctl(zfd, lib.BIOCGSTATS, st)
print("ok" if st.bs_recv == 300 else st.bs_recv)
''', traffic=True)
    assert (status, out) == (0, "ok")


@sim_only("FreeBSD would panic: a net.bpf.maxbufsize below a record header underflows caplen")
def test_buffer_below_a_record_header_drops(bpf, sysctl, ifname, traffic):
    """net.bpf.maxbufsize under a record header used to underflow caplen and
    corrupt the heap; the simulator drops such packets (FreeBSD would panic)."""
    sysctl.set("net.bpf.maxbufsize", 8)
    fd = bpf.open()
    assert bpf.set_uint(fd, lib.BIOCSBLEN, 4096) == 8
    bpf.attach(fd, ifname)
    for _ in range(10):
        traffic(ifname, eth_frame(1500))
    assert bpf.gstats(fd) == (10, 10)
    assert bpf.fionread(fd) == 0


# -- knobs -----------------------------------------------------------------------------------

def test_fioasync_negative_enables(bpf, system, ifname):
    """bpf.c stores FIOASYNC's int as given: a negative one enables too (it was
    an OverflowError)."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    bpf.set_int(fd, lib.FIOASYNC, -1)
    (rec,) = stats_records(system, ifname)
    assert rec.bd_async == -1


@sim_only("the traffic generator is the simulator's")
def test_second_generator_on_a_busy_interface_is_ebusy():
    """An endless generator is running: a second one is refused at once, and
    the kernel stays usable (it hung, holding the kernel's lock)."""
    code = '''
import errno, os
from bsdbpf.sim import Kernel
k = Kernel()
k.add_interface("em0")
gen = k.generate("em0", 2**62)
try:
    k.generate("em0", 10)
except OSError as err:
    print(errno.errorcode[err.errno], "generator is still running" in str(err))
k.close(k.open("/dev/bpf", os.O_RDWR))
gen.stop()
k.shutdown()
'''
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, "EBUSY True")


# -- the engine behind its boundary ---------------------------------------------------------

@sim_only("the simulator's engine")
def test_engine_descriptor_is_opaque():
    """Python reads the engine's descriptor only through locked getters: its
    struct is not even declared to cffi."""
    with pytest.raises(ffi.error):
        ffi.sizeof("struct bsdbpf_sim_d")
    assert ffi.sizeof("struct bsdbpf_sim_dstate") > 0


@sim_only("needs the simulator's traffic generator at full speed (kernel.generate)")
def test_fionread_and_stats_during_rotations(kernel, bpf, ifname):
    """FIONREAD and BIOCGSTATS while the packet thread rotates buffers: each is a
    consistent snapshot (FIONREAD never more than both buffers hold)."""
    fd = bpf.open()
    blen = bpf.set_uint(fd, lib.BIOCSBLEN, PAGE)
    bpf.attach(fd, ifname)
    # Endless, and stopped after the samples: a loaded machine cannot let a
    # finite generator finish before the first sample.
    gen = kernel.generate(ifname, 2**62, size=64)
    samples = []
    try:
        while len(samples) < 2000:
            samples.append(bpf.fionread(fd))
            recv, drop = bpf.gstats(fd)
            assert drop <= recv
    finally:
        gen.stop()
    assert bpf.gstats(fd)[0] > 0
    assert all(0 <= n <= 2 * blen for n in samples)


# -- FreeBSD rules --------------------------------------------------------------------------

def test_sysctl_node_is_eisdir(system):
    """net.bpf itself is a node without a handler: EISDIR (was ENOENT)."""
    with pytest.raises(BPFError) as info:
        system.sysctlbyname("net.bpf")
    assert info.value.errno == errno.EISDIR


def test_int_sysctl_takes_the_first_four_bytes(system, sysctl):
    """sysctl_handle_int copies in one int: a longer value is accepted and its
    first four bytes used; a shorter one is EINVAL."""
    name = "net.bpf.optimize_writers"
    sysctl.set(name, 0)  # restored after the test
    system.sysctlbyname(name, int_bytes(1) + b"\xff\xff\xff\xff")
    assert sysctl.get(name) == 1
    with pytest.raises(BPFError) as info:
        system.sysctlbyname(name, b"\0\0")
    assert info.value.errno == errno.EINVAL


def test_stats_lists_the_most_recently_attached_first(bpf, system, ifname):
    """bpf_attachd() inserts at the head of the tap's list."""
    first, second = bpf.open(), bpf.open()
    bpf.set_uint(first, lib.BIOCSBLEN, 8192)
    bpf.set_uint(second, lib.BIOCSBLEN, 16384)
    bpf.attach(first, ifname)
    bpf.attach(second, ifname)
    assert [r.bd_bufsize for r in stats_records(system, ifname)] == [16384, 8192]


@sim_only("adds an interface (kernel.add_interface); on FreeBSD that would create a cloned one")
def test_stats_lists_the_newest_interface_first(kernel, bpf):
    """bpfattach() inserts at the head of the interface list."""
    kernel.add_interface("new0")
    old, new = bpf.open(), bpf.open()
    bpf.attach(old, "em0")
    bpf.attach(new, "new0")
    names = [ffi.string(r.bd_ifname).decode() for r in stats_records(kernel)]
    assert names == ["new0", "em0"]


@sim_only("injects a 13-byte frame: FreeBSD's BPF writes nothing shorter than the link "
          "header (bpf_movein: EMSGSIZE), so the epair(4) traffic source cannot carry a runt")
def test_ethernet_runts_never_reach_bpf(bpf, ifname, traffic):
    """ether_input() discards a frame shorter than the Ethernet header before
    the tap."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    traffic(ifname, bytes(13))
    traffic(ifname, eth_frame(60))
    assert bpf.gstats(fd) == (1, 0)


# -- zero-copy readiness --------------------------------------------------------------------

def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_acknowledged_buffer_stops_readiness_with_the_next_packet(bpf, zerocopy, ifname,
                                                                   traffic):
    """bpf_ready() is false from the acknowledgement on; the simulator notices at
    the latest with the next packet, whose catchpacket reclaims the buffer."""
    fd, a, _ = bpf.zbuf_descriptor(ifname)
    per_buffer = (PAGE - 32) // 80
    for _ in range(per_buffer + 1):  # the last one rotates the full buffer
        traffic(ifname, eth_frame(60))
    assert until(lambda: _readable(fd), WAIT)
    assert a.user_owned()
    a.ack()
    traffic(ifname, eth_frame(60))
    assert not _readable(fd)

