"""poll/select/kqueue readiness, bpf_ready (spec §e "poll/select/kqueue readiness",
§f "Read timeout / immediate in ZBUF mode", Interface departure).

Each behaviour is checked with select.select, select.poll and asyncio's
loop.add_reader.  "Never readable" is checked with a short wait, "becomes
readable" with a generous deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading

import pytest

from bsdbpf._native import ffi, lib

from .helpers import (
    IFACE_DEPARTURE,
    PAGE,
    RET_K,
    WAIT,
    WAITERS,
    eth_frame,
    insn,
    sim_bug,
    until,
)

SHORT = 0.2  # long enough for a wrong wakeup to show, short enough to keep tests quick


@pytest.fixture(params=list(WAITERS))
def readable(request):
    """readable(fd, timeout) → bool, by select, poll or asyncio."""
    return WAITERS[request.param]


def attached(bpf, ifname, blen=None, immediate=False):
    fd = bpf.open()
    if blen is not None:
        bpf.set_uint(fd, lib.BIOCSBLEN, blen)
    bpf.attach(fd, ifname)
    if immediate:
        bpf.set_uint(fd, lib.BIOCIMMEDIATE, 1)
    return fd


@pytest.mark.parametrize("waiter", ["select", "poll"])
def test_detached_readable_at_once(bpf, waiter):
    """§e poll: not attached → poll returns immediately (readable), right after
    open(2).  Twenty fresh descriptors, each polled with a zero timeout."""
    for _ in range(20):
        fd = bpf.open()
        assert WAITERS[waiter](fd, 0)


def test_detached_readable(bpf, readable):
    """§e poll: not attached → readable (select, poll and asyncio)."""
    fd = bpf.open()
    assert readable(fd, WAIT)
    assert readable(fd, 0)


def test_detached_poll_reports_requested_subset(bpf):
    """§e poll: not attached → the requested subset of
    POLLHUP|POLLIN|POLLRDNORM|POLLOUT|POLLWRNORM (here: only POLLOUT asked)."""
    fd = bpf.open()
    p = select.poll()
    p.register(fd, select.POLLOUT)
    ((_, ev),) = p.poll(0)
    assert ev & select.POLLOUT
    assert not ev & (select.POLLIN | select.POLLRDNORM)


@sim_bug(
    "the descriptor's fd is one end of a Unix socket pair: readable and writable, never "
    "hung up, so poll reports POLLIN without the POLLHUP the kernel returns (bpfpoll: "
    "events & (POLLHUP|POLLIN|POLLRDNORM|POLLOUT|POLLWRNORM)); no file the simulator can "
    "use both reports POLLOUT and has a POLLHUP that can be set and cleared (see README)")
def test_detached_poll_reports_pollhup(bpf):
    """§e poll: not attached → POLLHUP is among the reported events when asked for."""
    fd = bpf.open()
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLHUP)
    ((_, ev),) = p.poll(int(WAIT * 1000))
    assert ev & select.POLLIN
    assert ev & select.POLLHUP


def test_attached_idle_not_readable(bpf, ifname, readable):
    """§e poll: attached, nothing captured → not readable (a filter that drops
    everything keeps a real interface's traffic out)."""
    fd = attached(bpf, ifname, immediate=True)
    bpf.setf(fd, [insn(RET_K, 0)])
    assert not readable(fd, SHORT)


def test_attached_writable(bpf, ifname):
    """§e poll: attached → POLLOUT/POLLWRNORM always reported if requested."""
    fd = attached(bpf, ifname)
    p = select.poll()
    p.register(fd, select.POLLOUT | select.POLLWRNORM)
    ((_, ev),) = p.poll(0)
    assert ev & select.POLLOUT
    _, w, _ = select.select([], [fd], [], 0)
    assert w == [fd]


def test_immediate_readable_after_one_packet(bpf, ifname, traffic, readable):
    """§e bpf_ready (b): immediate and slen ≠ 0 → readable after one packet; reading
    it makes the descriptor not readable again."""
    fd = attached(bpf, ifname, immediate=True)
    assert not readable(fd, 0)
    traffic(ifname, eth_frame(60))
    assert readable(fd, WAIT)
    bpf.read(fd)
    assert not readable(fd, SHORT)


def test_without_immediate_readable_after_rotation(bpf, ifname, traffic, readable):
    """§e bpf_ready (a): without immediate, readable only once a rotation made a
    non-empty hold buffer."""
    fd = attached(bpf, ifname, blen=200)
    traffic(ifname, eth_frame(60))
    traffic(ifname, eth_frame(60))
    assert not readable(fd, SHORT)
    traffic(ifname, eth_frame(60))  # does not fit: rotation
    assert readable(fd, WAIT)
    bpf.read(fd)  # takes the hold buffer; one record stays in the store
    assert not readable(fd, SHORT)


def test_wakes_a_waiting_poller(bpf, ifname, traffic, readable):
    """§e Wakeups: a packet in immediate mode wakes a poller that is already waiting."""
    fd = attached(bpf, ifname, immediate=True)
    sender = threading.Thread(target=traffic, args=(ifname, eth_frame(60)))
    sender.start()
    try:
        assert readable(fd, WAIT)
    finally:
        sender.join(WAIT)


def test_timeout_makes_readable(bpf, ifname, traffic, readable):
    """§e poll: with bd_rtout > 0 a poller that finds nothing to read starts the
    timeout; when it fires (TIMED_OUT) a descriptor with data becomes readable."""
    fd = attached(bpf, ifname)
    traffic(ifname, eth_frame(60))
    assert not readable(fd, SHORT)  # no immediate, no rotation, no timeout
    bpf.timeout(fd, 0, 50_000)
    assert readable(fd, WAIT)


@IFACE_DEPARTURE
def test_departure_makes_readable(bpf, kernel, ifname, readable):
    """§e Interface departure: descriptors are detached with a wakeup; poll then
    reports them readable (a detached descriptor is readable at once)."""
    fd = attached(bpf, ifname)
    assert not readable(fd, 0)
    kernel.remove_interface(ifname)
    assert readable(fd, WAIT)


# -- zero-copy ------------------------------------------------------------------------------

def test_zbuf_readable_while_unacked(bpf, zerocopy, ifname, traffic, readable):
    """§e bpf_ready (a) in ZBUF mode: readable while a non-empty hold buffer exists that
    the user has not acknowledged; an acknowledgement made only by a release store
    into the shared header (no system call) clears it."""
    fd, a, _ = bpf.zbuf_descriptor(ifname)
    traffic(ifname, eth_frame(60))
    assert not readable(fd, SHORT)  # data only in the store
    bpf.rotzbuf(fd)
    assert readable(fd, WAIT)
    a.ack()
    assert until(lambda: not readable(fd, 0), 0.1), "the ack did not clear readability"


def test_zbuf_readable_after_buffer_full(bpf, zerocopy, ifname, traffic, readable):
    """§f step 5b / §e bpf_ready: a rotation caused by a full store hands the
    buffer over and wakes pollers — readable without BIOCROTZBUF."""
    fd, a, _ = bpf.zbuf_descriptor(ifname)
    for i in range(3):
        traffic(ifname, eth_frame(1000, fill=i))
    assert not readable(fd, SHORT)
    traffic(ifname, eth_frame(1000, fill=3))  # rotation: a handed over
    assert readable(fd, WAIT)
    assert a.user_owned()


def test_zbuf_immediate_readable_with_store_data(bpf, zerocopy, ifname, traffic, readable):
    """§f "Read timeout / immediate in ZBUF mode": BIOCIMMEDIATE makes the descriptor
    readable as soon as slen ≠ 0 (the consumer then calls BIOCROTZBUF)."""
    fd, a, _ = bpf.zbuf_descriptor(ifname)
    bpf.set_uint(fd, lib.BIOCIMMEDIATE, 1)
    assert not readable(fd, 0)
    traffic(ifname, eth_frame(60))
    assert readable(fd, WAIT)
    assert a.kernel_gen == 0  # nothing handed over by immediate mode itself
    bpf.rotzbuf(fd)
    a.ack()
    assert until(lambda: not readable(fd, 0), 0.1)


def test_zbuf_timeout_makes_readable(bpf, zerocopy, ifname, traffic, readable):
    """§f "Read timeout / immediate in ZBUF mode": a BIOCSRTIMEOUT value works with
    select/poll the same way (TIMED_OUT makes slen ≠ 0 readable)."""
    fd, _, _ = bpf.zbuf_descriptor(ifname)
    traffic(ifname, eth_frame(60))
    assert not readable(fd, SHORT)
    bpf.timeout(fd, 0, 50_000)
    assert readable(fd, WAIT)



# -- asynchronous notification ------------------------------------------------------------------

@contextlib.contextmanager
def caught(bpf, signum):
    """An Event set when ``signum`` arrives during the block.  Every descriptor is
    closed before the old disposition comes back, so no late signal can kill the run."""
    got = threading.Event()
    old = signal.signal(signum, lambda *_: got.set())
    try:
        yield got
    finally:
        bpf.cleanup()
        signal.signal(signum, old)


def async_descriptor(bpf, immediate=False):
    """Unattached; SIGUSR1 to this process on every wakeup."""
    fd = bpf.open()
    bpf.set_int(fd, lib.FIOSETOWN, os.getpid())
    bpf.set_uint(fd, lib.BIOCSRSIG, signal.SIGUSR1)
    bpf.set_int(fd, lib.FIOASYNC, 1)
    bpf.set_uint(fd, lib.BIOCIMMEDIATE, int(immediate))
    return fd


def test_async_signal_on_wakeup(bpf, ifname, traffic):
    """§e Wakeups: each wakeup also sends bd_sig (BIOCSRSIG) to the owner (FIOSETOWN)
    when async (FIOASYNC) is on; nothing is sent with async off."""
    with caught(bpf, signal.SIGUSR1) as got:
        fd = async_descriptor(bpf, immediate=True)
        bpf.attach(fd, ifname)
        bpf.set_int(fd, lib.FIOASYNC, 0)
        got.clear()
        traffic(ifname, eth_frame(60))
        assert not until(got.is_set, SHORT)
        bpf.set_int(fd, lib.FIOASYNC, 1)
        traffic(ifname, eth_frame(60))
        assert until(got.is_set, WAIT)


def test_no_signal_on_rotzbuf(bpf, zerocopy, ifname, traffic):
    """§e Wakeups / §e BIOCROTZBUF: BIOCROTZBUF rotates without a wakeup, so no signal
    is sent to an async owner."""
    with caught(bpf, signal.SIGUSR1) as got:
        fd = async_descriptor(bpf)
        a, b = bpf.zbuf(), bpf.zbuf()
        bpf.ioctl(fd, lib.BIOCSETBUFMODE, ffi.new("u_int *", lib.BPF_BUFMODE_ZBUF))
        bpf.setzbuf(fd, a, b, PAGE)
        bpf.attach(fd, ifname)
        traffic(ifname, eth_frame(60))
        until(got.is_set, SHORT)
        got.clear()
        assert bpf.rotzbuf(fd) == (a.address, 0, 86)
        assert not until(got.is_set, SHORT)


def test_no_signal_on_close(bpf, ifname):
    """§e close(2): close clears the SIGIO owner before detaching, so closing an async
    descriptor sends no signal."""
    with caught(bpf, signal.SIGUSR1) as got:
        fd = async_descriptor(bpf)
        bpf.attach(fd, ifname)
        until(got.is_set, SHORT)  # bpf.c-2024's attach itself wakes up (EVFILT_WRITE)
        got.clear()
        bpf.close(fd)
        assert not until(got.is_set, SHORT)
