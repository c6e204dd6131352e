/*
 * The capture path: readiness, the buffers, catchpacket, the tap, read(2)
 * and write(2) (spec section f).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0                 /* SIGPIPE is ignored in Python anyway */
#endif
#include "bpf_filter.h"
#include "helpers.h"
#include "sim_engine_priv.h"

#define ETHER_HDR_LEN 14
/* bpf_movein() puts a written frame in one mbuf, whose largest cluster is
 * MJUM16BYTES: a longer frame is EIO, even where the MTU check let it by
 * (lo0, MTU 16384, 4-byte header). */
#define MJUM16BYTES (16 * 1024)

/* --- readiness: the pollable fd follows bpf_ready() --------------------- */

static int canfreebuf(struct bsdbpf_sim_d *d)
{
    struct sim_buf *h = d->hbuf;
    if (d->bufmode != BPF_BUFMODE_ZBUF || h == NULL)
        return 0;
    return h->zh->bzh_kernel_gen == bsdbpf_load_acquire(&h->zh->bzh_user_gen);
}

static int canwritebuf(struct bsdbpf_sim_d *d)
{
    return d->bufmode != BPF_BUFMODE_ZBUF || !d->sbuf->assigned;
}

static int bpf_ready(struct bsdbpf_sim_d *d)
{
    if (d->bif == NULL)    /* poll on a detached descriptor returns at once */
        return 1;
    if (!canfreebuf(d) && d->hlen != 0)
        return 1;
    return (d->immediate || d->state == BSDBPF_SIM_TIMED_OUT) && d->slen != 0;
}

/* The process's fd is one end of a socket pair: readable while one byte sent
 * from the other end is queued, always writable.  Its O_NONBLOCK belongs to
 * the process (FIONBIO, fcntl), so the engine's own I/O never blocks per call.
 * Once close(2) began the fd number is the process's again: hands off. */
static void set_fd_ready(struct bsdbpf_sim_d *d, int ready)
{
    char c = 0;
    ssize_t rc;
    if (ready == d->ready || d->closing)
        return;
    d->ready = ready;
    rc = ready ? send(d->peer, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL)
               : recv(d->fd, &c, 1, MSG_DONTWAIT);
    (void)rc;
}

void sim_update_ready(struct bsdbpf_sim_d *d)
{
    int ready = bpf_ready(d);
    set_fd_ready(d, ready);
    /* The kernel arms its timeout callout when a poller finds nothing to
     * read; the simulator arms it as if a poller were always waiting. */
    if (!ready && d->rtout > 0 && d->state == BSDBPF_SIM_IDLE && d->bif != NULL) {
        d->state = BSDBPF_SIM_WAITING;
        d->callout = bsdbpf_sim_monotonic_ns() + (int64_t)d->rtout * TICK_NS;
    }
}

/* FreeBSD discards these when nobody catches them; Linux kills for SIGIO. */
static int ignored_by_default(int sig)
{
    return sig == SIGIO || sig == SIGURG || sig == SIGCHLD || sig == SIGWINCH ||
           sig == SIGCONT;
}

/* pgsigio(): the owner was checked by FIOSETOWN (same session, exists), but
 * the simulator signals only the process it runs in, when the owner names it
 * or its process group; other processes never hear from it. */
static void pgsigio(struct bsdbpf_sim_d *d)
{
    pid_t me = getpid();
    struct sigaction sa;
    if (d->sig <= 0 || !(d->owner == me || (d->owner < 0 && -d->owner == getpgrp())))
        return;
    if (sigaction(d->sig, NULL, &sa) != 0)
        return;
    if (!(sa.sa_flags & SA_SIGINFO) &&
        (sa.sa_handler == SIG_IGN ||
         (sa.sa_handler == SIG_DFL && ignored_by_default(d->sig))))
        return;
    kill(me, d->sig);
}

void sim_wakeup(struct bsdbpf_sim_d *d)
{
    if (d->state == BSDBPF_SIM_WAITING) {
        d->callout = 0;
        d->state = BSDBPF_SIM_IDLE;
    }
    pthread_cond_broadcast(&d->cv);
    if (d->fasync && d->owner && !d->closing)
        pgsigio(d);
    sim_update_ready(d);
}

/* --- buffers ---------------------------------------------------------- */

/* Hand a buffer to the process: length first, then the generation with
 * release order, so a consumer that acquires the generation sees the data. */
static void zbuf_assign(struct sim_buf *b, uint32_t len)
{
    if (b->assigned)
        return;
    b->assigned = 1;
    b->zh->bzh_kernel_len = len;
    __atomic_fetch_add(&b->zh->bzh_kernel_gen, 1, __ATOMIC_RELEASE);
}

static void rotate(struct bsdbpf_sim_d *d)
{
    d->hbuf = d->sbuf;
    d->hlen = d->slen;
    d->sbuf = d->fbuf;
    d->slen = 0;
    d->fbuf = NULL;
    if (d->bufmode == BPF_BUFMODE_ZBUF)
        zbuf_assign(d->hbuf, d->hlen);
}

static void reclaim(struct bsdbpf_sim_d *d)
{
    d->fbuf = d->hbuf;
    d->fbuf->assigned = 0;
    d->hbuf = NULL;
    d->hlen = 0;
}

void sim_free_kmem(struct bsdbpf_sim_d *d)
{
    free(d->kmem[0]);
    free(d->kmem[1]);
    d->kmem[0] = d->kmem[1] = NULL;
}

int bsdbpf_sim_alloc_buffers(struct bsdbpf_sim_d *d, uint32_t size)
{
    /* Slack for the tail of a record header written past a tiny last record. */
    unsigned char *a = calloc(1, (size_t)size + sizeof(struct bpf_xhdr));
    unsigned char *b = calloc(1, (size_t)size + sizeof(struct bpf_xhdr));
    if (a == NULL || b == NULL) {
        free(a);
        free(b);
        return -ENOMEM;
    }
    pthread_mutex_lock(&d->mtx);
    sim_free_kmem(d);
    d->kmem[0] = a;
    d->kmem[1] = b;
    memset(d->bufs, 0, sizeof(d->bufs));
    d->bufs[0].data = a;
    d->bufs[1].data = b;
    d->sbuf = &d->bufs[0];
    d->fbuf = &d->bufs[1];
    d->hbuf = NULL;
    d->slen = d->hlen = 0;
    d->bufsize = size;
    pthread_mutex_unlock(&d->mtx);
    return 0;
}

/* The control plane checked both buffers and zeroed their headers
 * (zbuf_setup); FreeBSD wires the pages, the engine maps them a second time,
 * so unmapping them in the process cannot pull them from under the tap. */
int bsdbpf_sim_setzbuf(struct bsdbpf_sim_d *d, void *a, void *b, size_t buflen,
                       int a_shared, int b_shared)
{
    void *addrs[2] = {a, b};
    int shared[2] = {a_shared, b_shared};
    void *maps[2];
    uintptr_t ua = (uintptr_t)a, ub = (uintptr_t)b;
    /* A private bufa overlapping bufb is a memfd by the time bufb is mapped:
     * copy bufb too rather than alias past the end of that memfd. */
    if (!a_shared && ua < ub + buflen && ub < ua + buflen)
        shared[1] = 0;
    for (int i = 0; i < 2; i++) {
        maps[i] = sim_zbuf_map(addrs[i], buflen, shared[i]);
        if (maps[i] == NULL) {
            int err = errno;
            if (i == 1)
                sim_zbuf_unmap(maps[0], buflen);
            return -err;
        }
    }
    pthread_mutex_lock(&d->mtx);
    for (int i = 0; i < 2; i++) {
        d->zmap[i] = maps[i];
        d->bufs[i].zh = maps[i];
        d->bufs[i].uaddr = addrs[i];
        d->bufs[i].data = (unsigned char *)maps[i] + ZBUF_HDR;
        d->bufs[i].assigned = 0;
    }
    d->zmaplen = buflen;
    d->sbuf = &d->bufs[0];
    d->fbuf = &d->bufs[1];
    d->hbuf = NULL;
    d->slen = d->hlen = 0;
    d->bufsize = (uint32_t)buflen - ZBUF_HDR;
    pthread_mutex_unlock(&d->mtx);
    return 0;
}

void sim_reset(struct bsdbpf_sim_d *d)
{
    if (d->hbuf != NULL && (d->bufmode == BPF_BUFMODE_BUFFER || canfreebuf(d)))
        reclaim(d);
    if (canwritebuf(d))
        d->slen = 0;
    d->rcount = d->dcount = d->fcount = 0;
    d->wcount = d->wfcount = d->wdcount = d->zcopy = 0;
    sim_update_ready(d);
}

void bsdbpf_sim_reset(struct bsdbpf_sim_d *d)
{
    pthread_mutex_lock(&d->mtx);
    sim_reset(d);
    pthread_mutex_unlock(&d->mtx);
}

void bsdbpf_sim_rotzbuf(struct bsdbpf_sim_d *d, struct bpf_zbuf *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&d->mtx);
    if (d->sbuf != NULL && d->hbuf == NULL && d->slen != 0) {
        rotate(d);
        out->bz_bufa = d->hbuf->uaddr;
        out->bz_buflen = d->hlen;
        /* No wakeup (bpf_zerocopy_ioctl_rotzbuf): poll sees the new hold buffer. */
        sim_update_ready(d);
    }
    pthread_mutex_unlock(&d->mtx);
}

int bsdbpf_sim_set_filter(struct bsdbpf_sim_d *d, int write, const struct bpf_insn *insns,
                          uint32_t len, int reset)
{
    struct bpf_insn *copy = NULL, *old;
    if (len != 0) {
        copy = malloc(sizeof(*copy) * len);
        if (copy == NULL)
            return -ENOMEM;
        memcpy(copy, insns, sizeof(*copy) * len);
    }
    pthread_mutex_lock(&d->mtx);
    if (write) {
        old = d->wfilter;
        d->wfilter = copy;
        d->wflen = len;
    } else {
        old = d->rfilter;
        d->rfilter = copy;
        d->rflen = len;
    }
    if (reset)
        sim_reset(d);
    pthread_mutex_unlock(&d->mtx);
    free(old);
    return 0;
}

/* --- catchpacket (spec section f) ------------------------------------- */

union rec_hdr {
    struct bpf_hdr h;
    struct bpf_xhdr x;
};

struct stamp {                         /* one timestamp per packet, taken lazily */
    int have_fine, have_coarse;
    int64_t fine, coarse;
};

/* Not bintime_add: FreeBSD's <sys/time.h> defines that one for userland. */
static void sim_bintime_add(struct bintime *bt, const struct bintime *add)
{
    uint64_t u = bt->frac;
    bt->frac += add->frac;
    if (u > bt->frac)
        bt->sec++;
    bt->sec += add->sec;
}

static void put_bytes(struct bsdbpf_sim_d *d, uint32_t off, const void *src, uint32_t len)
{
    memcpy(d->sbuf->data + off, src, len);
    if (d->bufmode == BPF_BUFMODE_ZBUF)
        d->zcopy++;
}

static void make_header(struct bsdbpf_sim_d *d, struct stamp *st, uint32_t caplen,
                        uint32_t pktlen, uint32_t hdrlen, union rec_hdr *hdr,
                        uint32_t *hdrsize)
{
    unsigned int t = d->tstamp;
    struct bintime bt = {0, 0};
    memset(hdr, 0, sizeof(*hdr));
    if (BPF_T_FORMAT(t) != BPF_T_NONE) {
        int64_t up;
        if (t & BPF_T_FAST) {
            if (!st->have_coarse) {
                st->coarse = sim_coarse_monotonic_ns();
                st->have_coarse = 1;
            }
            up = st->coarse;
        } else {
            if (!st->have_fine) {
                st->fine = bsdbpf_sim_monotonic_ns();
                st->have_fine = 1;
            }
            up = st->fine;
        }
        bt = sim_ns_to_bintime(up);
        if (!(t & BPF_T_MONOTONIC))
            sim_bintime_add(&bt, &d->kernel->boottime);
    }
    switch (BPF_T_FORMAT(t)) {
    case BPF_T_NANOTIME:
    case BPF_T_BINTIME:
        hdr->x.bh_tstamp.bt_sec = bt.sec;
        hdr->x.bh_tstamp.bt_frac = BPF_T_FORMAT(t) == BPF_T_BINTIME ? bt.frac :
            (((uint64_t)1000000000 * (uint32_t)(bt.frac >> 32)) >> 32);
        hdr->x.bh_caplen = caplen;
        hdr->x.bh_datalen = pktlen;
        hdr->x.bh_hdrlen = (u_short)hdrlen;
        *hdrsize = sizeof(struct bpf_xhdr);
        break;
    default:
        hdr->h.bh_tstamp.tv_sec = bt.sec;
        hdr->h.bh_tstamp.tv_usec = (suseconds_t)
            (((uint64_t)1000000 * (uint32_t)(bt.frac >> 32)) >> 32);
        hdr->h.bh_caplen = caplen;
        hdr->h.bh_datalen = pktlen;
        hdr->h.bh_hdrlen = (u_short)hdrlen;
        *hdrsize = sizeof(struct bpf_hdr);
    }
}

static void catchpacket(struct bsdbpf_sim_d *d, const unsigned char *pkt, uint32_t pktlen,
                        uint32_t datalen, uint32_t snaplen, struct stamp *st)
{
    union rec_hdr hdr;
    uint32_t hdrlen, totlen, curlen, caplen, hdrsize;
    int do_wakeup = 0;

    if (d->fbuf == NULL && canfreebuf(d)) {
        reclaim(d);
        /* bpf_ready() is false from the acknowledgement on: say so now,
         * not at the next tick, unless this packet makes it true again. */
        sim_update_ready(d);
    }
    hdrlen = bsdbpf_hdrlen(d->bif->hdrlen, d->tstamp);
    totlen = hdrlen + (snaplen < pktlen ? snaplen : pktlen);
    if (totlen > d->bufsize)
        totlen = d->bufsize;
    if (totlen < hdrlen) {
        /* net.bpf.maxbufsize let the buffer shrink below one record header:
         * FreeBSD's caplen would underflow and overrun kernel memory.  The
         * simulator drops the packet instead. */
        d->dcount++;
        return;
    }
    curlen = (uint32_t)BPF_WORDALIGN(d->slen);
    if (curlen + totlen > d->bufsize || !canwritebuf(d)) {
        if (d->fbuf == NULL) {
            if (d->bufmode == BPF_BUFMODE_ZBUF)
                zbuf_assign(d->sbuf, d->slen);   /* bpf_buffull */
            d->dcount++;
            sim_update_ready(d);
            return;
        }
        rotate(d);
        do_wakeup = 1;
        curlen = 0;
    } else {
        if (d->immediate || d->state == BSDBPF_SIM_TIMED_OUT)
            do_wakeup = 1;
        if (curlen > d->slen) {
            static const unsigned char zeros[sizeof(long)];
            put_bytes(d, d->slen, zeros, curlen - d->slen);
        }
    }
    caplen = totlen - hdrlen;
    make_header(d, st, caplen, pktlen, hdrlen, &hdr, &hdrsize);
    /* The kernel appends the whole struct; its tail past hdrlen is then
     * overwritten by the packet.  Never write past the buffer's end. */
    if (hdrsize > d->bufsize - curlen)
        hdrsize = d->bufsize - curlen;
    put_bytes(d, curlen, &hdr, hdrsize);
    if (caplen > datalen)             /* a bridged frame truncated on receipt */
        caplen = datalen;
    put_bytes(d, curlen + hdrlen, pkt, caplen);
    d->slen = curlen + totlen;
    if (do_wakeup)
        sim_wakeup(d);
}

void sim_tap(struct bsdbpf_sim_if *ifp, const unsigned char *pkt, uint32_t wirelen,
             uint32_t datalen, int outgoing)
{
    struct stamp st = {0, 0, 0, 0};
    /* ether_input() discards runt frames before the tap. */
    if (!outgoing && ifp->dlt == DLT_EN10MB && wirelen < ETHER_HDR_LEN)
        return;
    pthread_rwlock_rdlock(&ifp->lock);
    for (struct bsdbpf_sim_d *d = ifp->dlist; d != NULL; d = d->if_next) {
        uint32_t snaplen;
        pthread_mutex_lock(&d->mtx);
        if (d->writer || (d->direction == BPF_D_IN && outgoing) ||
            (d->direction == BPF_D_OUT && !outgoing)) {
            pthread_mutex_unlock(&d->mtx);
            continue;
        }
        d->rcount++;
        snaplen = bsdbpf_filter_mbuf(d->rfilter, pkt, wirelen, datalen);
        if (snaplen != 0) {
            d->fcount++;
            catchpacket(d, pkt, wirelen, datalen, snaplen, &st);
        }
        pthread_mutex_unlock(&d->mtx);
    }
    pthread_rwlock_unlock(&ifp->lock);
}

/* --- read(2) and write(2) ---------------------------------------------- */

int64_t bsdbpf_sim_read(struct bsdbpf_sim_d *d, void *buf, size_t len, int nonblock,
                        int64_t deadline_ns, int64_t slice_end_ns, int first)
{
    int64_t n;
    pthread_mutex_lock(&d->mtx);
    if (first) {
        d->read_timed_out = d->state == BSDBPF_SIM_TIMED_OUT;
        d->callout = 0;
        d->state = BSDBPF_SIM_IDLE;
    }
    while (d->hbuf == NULL) {
        struct timespec until;
        int64_t wait_end;
        if (d->closing) {              /* closed by another thread */
            pthread_mutex_unlock(&d->mtx);
            return -EBADF;
        }
        if (d->slen != 0 && (d->immediate || nonblock || d->read_timed_out)) {
            rotate(d);
            break;
        }
        if (d->bif == NULL) {
            sim_update_ready(d);
            pthread_mutex_unlock(&d->mtx);
            return -ENXIO;
        }
        if (nonblock) {
            sim_update_ready(d);
            pthread_mutex_unlock(&d->mtx);
            return -EAGAIN;
        }
        wait_end = deadline_ns && deadline_ns < slice_end_ns ? deadline_ns : slice_end_ns;
        sim_abs_timespec(wait_end, &until);
        if (pthread_cond_timedwait(&d->cv, &d->mtx, &until) == ETIMEDOUT && !d->closing) {
            int64_t now = bsdbpf_sim_monotonic_ns();
            if (deadline_ns && now >= deadline_ns) {
                if (d->hbuf != NULL)
                    break;
                if (d->slen == 0) {
                    sim_update_ready(d);
                    pthread_mutex_unlock(&d->mtx);
                    return 0;
                }
                rotate(d);
                break;
            }
            if (now >= slice_end_ns) {
                pthread_mutex_unlock(&d->mtx);
                return BSDBPF_SIM_SLICE;
            }
        }
    }
    n = d->hlen;
    if ((size_t)n > len)
        n = (int64_t)len;
    /* uiomove() to a buffer that is not mapped is EFAULT; the hold buffer
     * is reclaimed all the same, as bpfread() does. */
    if (bsdbpf_sim_copyout(buf, d->hbuf->data, (size_t)n) != 0)
        n = -EFAULT;
    reclaim(d);
    sim_update_ready(d);
    pthread_mutex_unlock(&d->mtx);
    return n;
}

/* bpfwrite() and bpf_movein(): the checks in the kernel's order. */
int bsdbpf_sim_write(struct bsdbpf_sim_d *d, const void *buf, size_t len)
{
    struct bsdbpf_sim_if *ifp;
    unsigned char *frame = NULL;
    int feedback, inout, err = 0;
    uint32_t hlen;

    pthread_mutex_lock(&d->mtx);
    d->wcount++;
    ifp = d->bif;
    if (ifp == NULL)
        err = ENXIO;
    else if (len == 0)
        err = -1;                      /* nothing to send; counted as not sent */
    else {
        switch (ifp->dlt) {
        case DLT_EN10MB: hlen = 14; break;
        case DLT_NULL: case DLT_PPP: hlen = 4; break;
        case DLT_RAW: case DLT_SLIP: case DLT_IEEE802_11: hlen = 0; break;
        default: hlen = UINT32_MAX;
        }
        if (hlen == UINT32_MAX)
            err = EIO;
        else if (len < hlen || len - hlen > ifp->mtu)
            err = EMSGSIZE;
        else if (len > MJUM16BYTES)
            err = EIO;                 /* no mbuf cluster holds it (m_get3) */
        else if ((frame = malloc(len)) == NULL)
            err = ENOBUFS;
        else {
            /* bpf_movein() copies the frame in (EFAULT from memory that is
             * not mapped), then filters its copy. */
            if (bsdbpf_sim_copyin(frame, buf, len) != 0)
                err = EFAULT;
            else if (bsdbpf_filter(d->wfilter, frame, (uint32_t)len, (uint32_t)len) == 0)
                err = EPERM;
            if (err != 0)
                free(frame);
        }
    }
    if (err != 0) {
        d->wdcount++;
        pthread_mutex_unlock(&d->mtx);
        return err < 0 ? 0 : -err;
    }
    d->wfcount++;
    feedback = d->feedback;
    inout = d->direction == BPF_D_INOUT;
    if (ifp->dlt == DLT_EN10MB && !d->hdrcmplt)
        memcpy(frame + 6, ifp->lladdr, 6);   /* the interface's source address */
    pthread_mutex_unlock(&d->mtx);

    /* The interface is held by this descriptor until the control plane,
     * which serialises write(2) with detach, lets go of it. */
    if (ifp->bridge_fd >= 0) {
        if (send(ifp->bridge_fd, frame, len, 0) < 0)
            err = errno;
    } else {
        /* Output path tap; with feedback on an INOUT descriptor the outgoing
         * copy is flagged M_PROMISC and skipped, the looped-back copy seen. */
        if (!(feedback && inout))
            sim_tap(ifp, frame, (uint32_t)len, (uint32_t)len, 1);
        if (feedback)
            sim_tap(ifp, frame, (uint32_t)len, (uint32_t)len, 0);
    }
    free(frame);
    return err ? -err : (int)len;
}
