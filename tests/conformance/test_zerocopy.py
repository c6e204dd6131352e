"""The zero-copy protocol step by step, with the raw shared headers (spec §f buffer
slots, catchpacket, zero-copy helpers; §g consumer protocol; §e BIOCROTZBUF and
reset_d; Appendix A rows 18, 19 and 21).

Ownership is read with an acquire load of bzh_kernel_gen
(``lib.bsdbpf_load_acquire``) and returned with a release store into
bzh_user_gen (``lib.bsdbpf_store_release``) — never through a system call.
"""

from __future__ import annotations

import pytest

from bsdbpf._native import ffi, lib

from .helpers import (
    IFACE_DEPARTURE,
    PAGE,
    ZHDR,
    bpf_hdrlen,
    eth_frame,
    expected_buffer,
    parse_records,
    stats_record,
)

pytestmark = pytest.mark.usefixtures("zerocopy")

ZERO = (0, 0, 0)


def records(z, length):
    """Frames in [32, 32 + length) of a zero-copy buffer."""
    return [r.data for r in parse_records(z.map, 0, ZHDR, ZHDR + length)]


def test_protocol_step_by_step(bpf, ifname, traffic):
    """Appendix A rows 18-19, §f "bufa is always the first store buffer … strictly
    alternately", §f quirk, §g: headers zeroed by BIOCSETZBUF; nothing handed over
    until a rotation; BIOCROTZBUF returns {bufa address, NULL, data length} and sets
    kernel_len then kernel_gen; all zero when there is nothing to rotate, while the
    user holds the other buffer, and after an ack until the next packet reclaims it."""
    fd, a, b = bpf.zbuf_descriptor(ifname, fill=0xEE)
    assert a.header_bytes() == b.header_bytes() == b"\0" * ZHDR
    assert bpf.rotzbuf(fd) == ZERO  # no data
    f1, f2, f3, f4 = (eth_frame(n) for n in (60, 60, 61, 62))

    traffic(ifname, f1)
    assert not a.user_owned()
    assert not b.user_owned()  # both kernel-owned: nothing handed over yet
    assert bpf.rotzbuf(fd) == (a.address, 0, 86)  # bufa first
    assert (a.kernel_gen, a.kernel_len, a.user_gen) == (1, 86, 0)
    assert a.user_owned()
    assert (b.kernel_gen, b.user_gen) == (0, 0)
    assert records(a, 86) == [f1]
    assert bpf.rotzbuf(fd) == ZERO  # the store (b) is empty

    traffic(ifname, f2)  # into b
    assert bpf.rotzbuf(fd) == ZERO  # the user still holds a
    a.ack()
    assert not a.user_owned()
    assert bpf.rotzbuf(fd) == ZERO  # quirk: a is not reclaimed until a packet arrives

    traffic(ifname, f3)  # reclaims a, appended to b
    assert bpf.rotzbuf(fd) == (b.address, 0, 88 + 87)
    assert (b.kernel_gen, b.kernel_len) == (1, 175)
    assert records(b, 175) == [f2, f3]
    assert a.kernel_gen == 1

    b.ack()
    traffic(ifname, f4)  # reclaims b, stored in a
    assert bpf.rotzbuf(fd) == (a.address, 0, 88)
    assert (a.kernel_gen, a.kernel_len) == (2, 88)
    assert records(a, 88) == [f4]
    assert b.kernel_gen == 1


def test_records_byte_exact_in_shared_buffer(bpf, ifname, traffic):
    """§f "Example (amd64, Ethernet tap, BPF_T_MICROTIME, ZBUF with buflen 4096)":
    record 1 at data offset 0 (buffer offset 32), 2 zero pad bytes, record 2 at 88,
    slen 174; the pre-existing bytes under the padding are overwritten with zeros."""
    fd, a, _ = bpf.zbuf_descriptor(ifname, fill=0xFF)
    f1, f2 = eth_frame(60), eth_frame(60)
    traffic(ifname, f1)
    traffic(ifname, f2)
    assert bpf.rotzbuf(fd) == (a.address, 0, 174)
    data = a.data(174)
    recs = parse_records(data)
    assert [r.offset for r in recs] == [0, 88]
    hdrlen = bpf_hdrlen(14)
    want = expected_buffer([(f, 60, r.sec, r.frac, 60) for f, r in zip((f1, f2), recs)], 0,
                           hdrlen)
    assert data == want
    assert data[86:88] == b"\0\0"


def test_kernel_leaves_pad_and_user_gen(bpf, ifname, traffic):
    """§f "Zero-copy writes never touch _bzh_pad or bzh_user_gen"; headers are only
    written at setup and at hand-over (kernel_len, kernel_gen)."""
    fd, a, b = bpf.zbuf_descriptor(ifname)
    for z in (a, b):
        for i in range(5):
            z.hdr._bzh_pad[i] = 0x5A5A0000 + i
    traffic(ifname, eth_frame(60))
    bpf.rotzbuf(fd)
    a.ack()
    traffic(ifname, eth_frame(60))
    bpf.rotzbuf(fd)
    for z in (a, b):
        assert list(z.hdr._bzh_pad) == [0x5A5A0000 + i for i in range(5)]
    assert (a.user_gen, b.user_gen) == (1, 0)


def test_buffer_full_while_user_holds(bpf, system, ifname, traffic):
    """Appendix A row 21 / §f step 5a and notes: the store fills while the user still
    owns the hold buffer → the store is handed over too (kernel_len = slen,
    kernel_gen++), the packet dropped, dcount++; every later packet is dropped
    (no second generation bump) until the user acks the older (hold) buffer; the
    first packet after that ack rotates (without a new bump) and is stored."""
    fd, a, b = bpf.zbuf_descriptor(ifname)
    frames = [eth_frame(1000, fill=i) for i in range(12)]
    # bufsize 4064, a 1000-byte record takes 1026 (+6 padding): 3 per buffer
    for f in frames[:4]:
        traffic(ifname, f)  # p0-p2 fill a, p3 rotates: a handed over, p3 in b
    assert (a.kernel_gen, a.kernel_len) == (1, 3090)
    assert records(a, 3090) == frames[:3]
    assert b.kernel_gen == 0
    for f in frames[4:6]:
        traffic(ifname, f)  # b: p3 p4 p5, full
    traffic(ifname, frames[6])  # no free buffer: buffull
    assert (b.kernel_gen, b.kernel_len) == (1, 3090)
    assert a.user_owned()
    assert b.user_owned()  # the process holds both buffers
    assert records(b, 3090) == frames[3:6]
    assert bpf.gstats(fd) == (7, 1)
    traffic(ifname, frames[7])  # dropped, no second bump
    assert (b.kernel_gen, bpf.gstats(fd)) == (1, (8, 2))
    assert bpf.rotzbuf(fd) == ZERO  # the hold slot is still occupied

    a.ack()  # the older buffer
    traffic(ifname, frames[8])  # reclaims a, rotates b into hold (no bump), stored in a
    assert bpf.gstats(fd) == (9, 2)
    assert (a.kernel_gen, b.kernel_gen) == (1, 1)
    assert bpf.rotzbuf(fd) == ZERO  # b is the un-acked hold buffer
    b.ack()
    traffic(ifname, frames[9])  # reclaims b; appended to a
    assert bpf.rotzbuf(fd) == (a.address, 0, 1032 + 1026)
    assert (a.kernel_gen, a.kernel_len) == (2, 2058)
    assert records(a, 2058) == frames[8:10]
    assert stats_record(system, ifname).bd_dcount == 2


def test_early_ack_of_store_does_not_help(bpf, ifname, traffic):
    """Appendix A row 21: packets are dropped until the user acks the *older* (hold)
    buffer — acknowledging the newer one first changes nothing."""
    fd, a, b = bpf.zbuf_descriptor(ifname)
    frames = [eth_frame(1000, fill=i) for i in range(9)]
    for f in frames[:7]:
        traffic(ifname, f)  # a handed over at p3, b at p6 (buffull, dropped)
    assert (a.kernel_gen, b.kernel_gen, bpf.gstats(fd)[1]) == (1, 1, 1)
    b.ack()
    traffic(ifname, frames[7])
    assert bpf.gstats(fd)[1] == 2
    a.ack()
    traffic(ifname, frames[8])
    assert bpf.gstats(fd)[1] == 2  # stored at last


def test_rotzbuf_after_buffull_no_second_bump(bpf, ifname, traffic):
    """Appendix A row 19 "(unless it had already been announced by a buffer-full
    event)" / §e reset_d: after buffull, an ack of the hold buffer and a BIOCFLUSH
    (which reclaims it but keeps the user-owned store's data), BIOCROTZBUF hands
    the store over with its data length and no second kernel_gen increment."""
    fd, a, b = bpf.zbuf_descriptor(ifname)
    for i in range(7):
        traffic(ifname, eth_frame(1000, fill=i))
    assert (a.kernel_gen, b.kernel_gen) == (1, 1)
    a.ack()
    bpf.flush(fd)
    assert bpf.rotzbuf(fd) == (b.address, 0, 3090)
    assert (b.kernel_gen, b.kernel_len) == (1, 3090)


def test_flush_never_touches_user_buffer(bpf, ifname, traffic):
    """§e reset_d: a user-owned ZBUF buffer is never touched or rotated by a flush
    and its generation numbers do not change; the store is emptied. FIONREAD
    counts the un-acked hold buffer; after an ack a flush reclaims it."""
    fd, a, _ = bpf.zbuf_descriptor(ifname)
    traffic(ifname, eth_frame(60))
    bpf.rotzbuf(fd)
    traffic(ifname, eth_frame(60))  # in b
    assert bpf.fionread(fd) == 86 + 86
    header = a.header_bytes()
    data = a.data(86)
    bpf.flush(fd)
    assert (a.header_bytes(), a.data(86)) == (header, data)
    assert a.user_owned()
    assert bpf.fionread(fd) == 86
    a.ack()
    bpf.flush(fd)
    assert bpf.fionread(fd) == 0


def test_user_gen_must_equal_kernel_gen(bpf, ifname, traffic):
    """§f bpf_zerocopy_canfreebuf: ownership returns only when user_gen equals
    kernel_gen ("equality, not ≥"); any other value keeps the buffer user-owned."""
    fd, a, b = bpf.zbuf_descriptor(ifname)
    traffic(ifname, eth_frame(60))
    bpf.rotzbuf(fd)
    lib.bsdbpf_store_release(ffi.addressof(a.hdr, "bzh_user_gen"), 7)
    traffic(ifname, eth_frame(60))  # into b; a is not reclaimed
    traffic(ifname, eth_frame(60))
    assert bpf.rotzbuf(fd) == ZERO
    a.ack()
    traffic(ifname, eth_frame(60))  # now a is reclaimed
    assert bpf.rotzbuf(fd) == (b.address, 0, 88 * 2 + 86)


def test_immediate_does_not_hand_over(bpf, ifname, traffic):
    """§f "Read timeout / immediate in ZBUF mode": BIOCIMMEDIATE does not make the
    kernel hand over buffers per packet; the consumer must call BIOCROTZBUF."""
    fd, a, b = bpf.zbuf_descriptor(ifname)
    bpf.set_uint(fd, lib.BIOCIMMEDIATE, 1)
    traffic(ifname, eth_frame(60))
    traffic(ifname, eth_frame(60))
    assert (a.kernel_gen, b.kernel_gen) == (0, 0)
    assert bpf.rotzbuf(fd) == (a.address, 0, 174)


@pytest.mark.parametrize(("size", "per_packet_pad"), [(60, True), (62, False)])
def test_zcopy_counter(bpf, ifname, traffic, size, per_packet_pad):
    """§d bd_zcopy: zero-copy append operations — 2 per captured packet (header and
    data) plus 1 when inter-record padding is written."""
    fd, _, _ = bpf.zbuf_descriptor(ifname)
    for _ in range(3):
        traffic(ifname, eth_frame(size))
    want = 6 + (2 if per_packet_pad else 0)
    assert stats_record(bpf.system, ifname).bd_zcopy == want
    bpf.rotzbuf(fd)  # a hand-over appends nothing
    assert stats_record(bpf.system, ifname).bd_zcopy == want


def test_zcopy_counter_buffer_mode(bpf, system, ifname, traffic):
    """§d bd_zcopy: counted in ZBUF mode only."""
    fd = bpf.open()
    bpf.attach(fd, ifname)
    for _ in range(3):
        traffic(ifname, eth_frame(60))
    assert stats_record(system, ifname).bd_zcopy == 0


def test_truncated_to_zbuf_size(bpf, ifname, traffic):
    """§f step 3 in ZBUF mode: a packet longer than bufsize (buflen - 32) is cut to
    fill one buffer exactly."""
    fd, a, _ = bpf.zbuf_descriptor(ifname, size=PAGE)
    big = eth_frame(5000)
    traffic(ifname, big)
    assert bpf.rotzbuf(fd) == (a.address, 0, PAGE - ZHDR)
    (rec,) = parse_records(a.map, 0, ZHDR, PAGE)
    assert (rec.caplen, rec.datalen) == (PAGE - ZHDR - 26, 5000)
    assert rec.data == big[:rec.caplen]


def test_rotzbuf_unattached(bpf):
    """§e BIOCROTZBUF: works unattached (a no-op, all-zero result)."""
    fd, _, _ = bpf.zbuf_descriptor()
    assert bpf.rotzbuf(fd) == ZERO


@IFACE_DEPARTURE
def test_rotzbuf_after_departure(bpf, kernel, ifname, traffic):
    """§e Interface departure: in ZBUF mode BIOCROTZBUF still works on whatever is in
    the store buffer."""
    fd, a, _ = bpf.zbuf_descriptor(ifname)
    frame = eth_frame(60)
    traffic(ifname, frame)
    kernel.remove_interface(ifname)
    assert bpf.rotzbuf(fd) == (a.address, 0, 86)
    assert records(a, 86) == [frame]


def test_close_leaves_memory(bpf, ifname, traffic):
    """§e close(2): the kernel does not write to the shared headers and unmaps
    nothing; the process still owns its memory."""
    fd, a, b = bpf.zbuf_descriptor(ifname)
    traffic(ifname, eth_frame(60))
    bpf.rotzbuf(fd)
    traffic(ifname, eth_frame(60))
    before = (bytes(a.map[:PAGE]), bytes(b.map[:PAGE]))
    bpf.close(fd)
    assert (bytes(a.map[:PAGE]), bytes(b.map[:PAGE])) == before
    traffic(ifname, eth_frame(60))  # the kernel no longer touches the memory
    traffic(ifname, eth_frame(1000))
    assert (bytes(a.map[:PAGE]), bytes(b.map[:PAGE])) == before
    a.map[ZHDR] = 1  # still mapped and writable
