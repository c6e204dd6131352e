/*
 * The simulated kernel's packet path (see sim_engine.h and spec section f).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>
unsigned int if_nametoindex(const char *);
#endif
#include <sys/socket.h>
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0                 /* SIGPIPE is ignored in Python anyway */
#endif
#include "bpf_filter.h"
#include "helpers.h"
#include "sim_engine.h"

#define NS 1000000000LL
#define TICK_NS (NS / BSDBPF_SIM_HZ)
#define ZBUF_HDR ((uint32_t)sizeof(struct bpf_zbuf_header))
#define GEN_ETHERTYPE 0x88b5   /* IEEE local experimental */

/* What the engine keeps behind the public descriptor. */
struct sim_d {
    struct bsdbpf_sim_d pub;           /* first: Python holds a pointer to it */
    pthread_mutex_t mtx;
    pthread_cond_t cv;                 /* read(2) sleepers */
    struct sim_d *if_next;             /* the tap's descriptor list */
    struct sim_d *k_next, *k_prev;     /* the kernel's descriptor list */
    int peer;                          /* the other end of the readiness socket pair */
    int read_timed_out;                /* TIMED_OUT seen when read(2) began */
    unsigned char *kmem[2];            /* BUFFER mode kernel buffers */
};

struct job {                           /* one injected frame for the packet thread */
    struct bsdbpf_sim_if *ifp;
    const void *frame;
    size_t len;
    int outgoing, done;
    struct job *next;
};

struct bsdbpf_sim_kernel {
    pthread_mutex_t mtx;               /* descriptor list */
    struct sim_d *dlist;
    struct bintime boottime;           /* wall clock = uptime + boottime */
    pthread_mutex_t qmtx;              /* packet thread queue */
    pthread_cond_t qcv, donecv;
    struct job *qhead, **qtail;
    int stop;
    pthread_t packet_thread, clock_thread;
};

struct worker {                        /* a generator or bridge thread */
    pthread_t thread;
    int running;                       /* thread exists and must be joined */
    int stop;                          /* atomic */
    int done;                          /* atomic: the thread's work is over */
    uint64_t offered;                  /* atomic */
    int error;
};

struct bsdbpf_sim_if {
    struct bsdbpf_sim_kernel *k;
    char name[IFNAMSIZ];
    unsigned int dlt, hdrlen, mtu;
    unsigned char lladdr[6];
    pthread_rwlock_t lock;             /* descriptor list */
    struct sim_d *dlist;
    struct worker gen, bridge;
    uint64_t gen_count, gen_rate;
    uint32_t gen_size;
    int gen_outgoing;
    int bridge_fd;
};

static struct sim_d *priv(struct bsdbpf_sim_d *d) { return (struct sim_d *)d; }

int64_t bsdbpf_sim_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static int64_t coarse_monotonic_ns(void)
{
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#elif defined(CLOCK_MONOTONIC_FAST)
    clock_gettime(CLOCK_MONOTONIC_FAST, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

/* FreeBSD keeps time as struct bintime; conversions follow sys/time.h. */
static struct bintime ns_to_bintime(int64_t ns)
{
    struct bintime bt;
    bt.sec = (time_t)(ns / NS);
    bt.frac = (uint64_t)(ns % NS) * (uint64_t)18446744073ULL;
    return bt;
}

static void bintime_add(struct bintime *bt, const struct bintime *add)
{
    uint64_t u = bt->frac;
    bt->frac += add->frac;
    if (u > bt->frac)
        bt->sec++;
    bt->sec += add->sec;
}

static void abs_timespec(int64_t ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ns / NS);
    ts->tv_nsec = (long)(ns % NS);
}

/* --- readiness: the pollable fd follows bpf_ready() --------------------- */

static int canfreebuf(struct sim_d *d)
{
    struct bsdbpf_sim_buf *h = d->pub.hbuf;
    if (d->pub.bufmode != BPF_BUFMODE_ZBUF || h == NULL)
        return 0;
    return h->zh->bzh_kernel_gen ==
           bsdbpf_load_acquire(&h->zh->bzh_user_gen);
}

static int canwritebuf(struct sim_d *d)
{
    return d->pub.bufmode != BPF_BUFMODE_ZBUF || !d->pub.sbuf->assigned;
}

static int bpf_ready(struct sim_d *d)
{
    if (d->pub.bif == NULL)    /* poll on a detached descriptor returns at once */
        return 1;
    if (!canfreebuf(d) && d->pub.hlen != 0)
        return 1;
    return (d->pub.immediate || d->pub.state == BSDBPF_SIM_TIMED_OUT) && d->pub.slen != 0;
}

/* The process's fd is one end of a socket pair: readable while one byte sent
 * from the other end is queued, always writable.  Its O_NONBLOCK belongs to
 * the process (FIONBIO, fcntl), so the engine's own I/O never blocks per call. */
static void set_fd_ready(struct sim_d *d, int ready)
{
    char c = 0;
    ssize_t rc;
    if (ready == d->pub.ready)
        return;
    d->pub.ready = ready;
    rc = ready ? send(d->peer, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL)
               : recv(d->pub.fd, &c, 1, MSG_DONTWAIT);
    (void)rc;
}

void bsdbpf_sim_update_ready(struct bsdbpf_sim_d *pd)
{
    struct sim_d *d = priv(pd);
    int ready = bpf_ready(d);
    set_fd_ready(d, ready);
    /* The kernel arms its timeout callout when a poller finds nothing to
     * read; the simulator arms it as if a poller were always waiting. */
    if (!ready && pd->rtout > 0 && pd->state == BSDBPF_SIM_IDLE && pd->bif != NULL) {
        pd->state = BSDBPF_SIM_WAITING;
        pd->callout = bsdbpf_sim_monotonic_ns() + (int64_t)pd->rtout * TICK_NS;
    }
}

static void wakeup(struct sim_d *d)
{
    if (d->pub.state == BSDBPF_SIM_WAITING) {
        d->pub.callout = 0;
        d->pub.state = BSDBPF_SIM_IDLE;
    }
    pthread_cond_broadcast(&d->cv);
    if (d->pub.fasync && d->pub.sig && d->pub.owner)
        kill(d->pub.owner, d->pub.sig);
    bsdbpf_sim_update_ready(&d->pub);
}

void bsdbpf_sim_enter(struct bsdbpf_sim_d *pd)
{
    pd->callout = 0;
    pd->state = BSDBPF_SIM_IDLE;
    bsdbpf_sim_update_ready(pd);
}

/* --- buffers ---------------------------------------------------------- */

/* Hand a buffer to the process: length first, then the generation with
 * release order, so a consumer that acquires the generation sees the data. */
static void zbuf_assign(struct bsdbpf_sim_buf *b, uint32_t len)
{
    if (b->assigned)
        return;
    b->assigned = 1;
    b->zh->bzh_kernel_len = len;
    __atomic_fetch_add(&b->zh->bzh_kernel_gen, 1, __ATOMIC_RELEASE);
}

static void rotate(struct sim_d *d)
{
    struct bsdbpf_sim_d *p = &d->pub;
    p->hbuf = p->sbuf;
    p->hlen = p->slen;
    p->sbuf = p->fbuf;
    p->slen = 0;
    p->fbuf = NULL;
    if (p->bufmode == BPF_BUFMODE_ZBUF)
        zbuf_assign(p->hbuf, p->hlen);
}

static void reclaim(struct sim_d *d)
{
    struct bsdbpf_sim_d *p = &d->pub;
    p->fbuf = p->hbuf;
    p->fbuf->assigned = 0;
    p->hbuf = NULL;
    p->hlen = 0;
}

int bsdbpf_sim_canfreebuf(struct bsdbpf_sim_d *pd) { return canfreebuf(priv(pd)); }

static void free_kmem(struct sim_d *d)
{
    free(d->kmem[0]);
    free(d->kmem[1]);
    d->kmem[0] = d->kmem[1] = NULL;
}

int bsdbpf_sim_alloc_buffers(struct bsdbpf_sim_d *pd, uint32_t size)
{
    struct sim_d *d = priv(pd);
    /* Slack for the tail of a record header written past a tiny last record. */
    unsigned char *a = calloc(1, (size_t)size + sizeof(struct bpf_xhdr));
    unsigned char *b = calloc(1, (size_t)size + sizeof(struct bpf_xhdr));
    if (a == NULL || b == NULL) {
        free(a);
        free(b);
        return -ENOMEM;
    }
    free_kmem(d);
    d->kmem[0] = a;
    d->kmem[1] = b;
    memset(pd->bufs, 0, sizeof(pd->bufs));
    pd->bufs[0].data = a;
    pd->bufs[1].data = b;
    pd->sbuf = &pd->bufs[0];
    pd->fbuf = &pd->bufs[1];
    pd->hbuf = NULL;
    pd->slen = pd->hlen = 0;
    pd->bufsize = size;
    return 0;
}

/* The control plane checked both buffers and zeroed their headers (zbuf_setup). */
int bsdbpf_sim_setzbuf(struct bsdbpf_sim_d *pd, void *a, void *b, size_t buflen)
{
    void *addrs[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        pd->bufs[i].zh = addrs[i];
        pd->bufs[i].data = (unsigned char *)addrs[i] + ZBUF_HDR;
        pd->bufs[i].assigned = 0;
    }
    pd->sbuf = &pd->bufs[0];
    pd->fbuf = &pd->bufs[1];
    pd->hbuf = NULL;
    pd->slen = pd->hlen = 0;
    pd->bufsize = (uint32_t)buflen - ZBUF_HDR;
    return 0;
}

void bsdbpf_sim_reset(struct bsdbpf_sim_d *pd)
{
    struct sim_d *d = priv(pd);
    if (pd->hbuf != NULL && (pd->bufmode == BPF_BUFMODE_BUFFER || canfreebuf(d)))
        reclaim(d);
    if (canwritebuf(d))
        pd->slen = 0;
    pd->rcount = pd->dcount = pd->fcount = 0;
    pd->wcount = pd->wfcount = pd->wdcount = pd->zcopy = 0;
    bsdbpf_sim_update_ready(pd);
}

void bsdbpf_sim_rotzbuf(struct bsdbpf_sim_d *pd, struct bpf_zbuf *out)
{
    memset(out, 0, sizeof(*out));
    if (pd->hbuf == NULL && pd->slen != 0) {
        rotate(priv(pd));
        out->bz_bufa = pd->hbuf->zh;
        out->bz_buflen = pd->hlen;
        /* No wakeup (bpf_zerocopy_ioctl_rotzbuf): poll sees the new hold buffer. */
        bsdbpf_sim_update_ready(pd);
    }
}

struct bpf_insn *bsdbpf_sim_copy_program(const struct bpf_insn *insns, uint32_t len)
{
    struct bpf_insn *copy;
    if (len == 0)
        return NULL;
    copy = malloc(sizeof(*copy) * len);
    if (copy != NULL)
        memcpy(copy, insns, sizeof(*copy) * len);
    return copy;
}

void bsdbpf_sim_set_filter(struct bsdbpf_sim_d *pd, int write, struct bpf_insn *insns,
                           uint32_t len)
{
    if (write) {
        free(pd->wfilter);
        pd->wfilter = insns;
        pd->wflen = len;
    } else {
        free(pd->rfilter);
        pd->rfilter = insns;
        pd->rflen = len;
    }
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

static void put_bytes(struct sim_d *d, uint32_t off, const void *src, uint32_t len)
{
    memcpy(d->pub.sbuf->data + off, src, len);
    if (d->pub.bufmode == BPF_BUFMODE_ZBUF)
        d->pub.zcopy++;
}

static void make_header(struct sim_d *d, struct stamp *st, uint32_t caplen, uint32_t pktlen,
                        uint32_t hdrlen, union rec_hdr *hdr,
                        uint32_t *hdrsize)
{
    unsigned int t = d->pub.tstamp;
    struct bintime bt = {0, 0};
    memset(hdr, 0, sizeof(*hdr));
    if (BPF_T_FORMAT(t) != BPF_T_NONE) {
        int64_t up;
        if (t & BPF_T_FAST) {
            if (!st->have_coarse) {
                st->coarse = coarse_monotonic_ns();
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
        bt = ns_to_bintime(up);
        if (!(t & BPF_T_MONOTONIC))
            bintime_add(&bt, &d->pub.kernel->boottime);
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

static void catchpacket(struct sim_d *d, const unsigned char *pkt, uint32_t pktlen,
                        uint32_t datalen, uint32_t snaplen, struct stamp *st)
{
    struct bsdbpf_sim_d *p = &d->pub;
    union rec_hdr hdr;
    uint32_t hdrlen, totlen, curlen, caplen, hdrsize;
    int do_wakeup = 0;

    if (p->fbuf == NULL && canfreebuf(d))
        reclaim(d);
    hdrlen = bsdbpf_hdrlen(p->bif->hdrlen, p->tstamp);
    totlen = hdrlen + (snaplen < pktlen ? snaplen : pktlen);
    if (totlen > p->bufsize)
        totlen = p->bufsize;
    curlen = (uint32_t)BPF_WORDALIGN(p->slen);
    if (curlen + totlen > p->bufsize || !canwritebuf(d)) {
        if (p->fbuf == NULL) {
            if (p->bufmode == BPF_BUFMODE_ZBUF)
                zbuf_assign(p->sbuf, p->slen);   /* bpf_buffull */
            p->dcount++;
            bsdbpf_sim_update_ready(p);
            return;
        }
        rotate(d);
        do_wakeup = 1;
        curlen = 0;
    } else {
        if (p->immediate || p->state == BSDBPF_SIM_TIMED_OUT)
            do_wakeup = 1;
        if (curlen > p->slen) {
            static const unsigned char zeros[sizeof(long)];
            put_bytes(d, p->slen, zeros, curlen - p->slen);
        }
    }
    caplen = totlen - hdrlen;
    make_header(d, st, caplen, pktlen, hdrlen, &hdr, &hdrsize);
    /* The kernel appends the whole struct; its tail past hdrlen is then
     * overwritten by the packet.  Never write past the buffer's end. */
    if (hdrsize > p->bufsize - curlen)
        hdrsize = p->bufsize - curlen;
    put_bytes(d, curlen, &hdr, hdrsize);
    if (caplen > datalen)             /* a bridged frame truncated on receipt */
        caplen = datalen;
    put_bytes(d, curlen + hdrlen, pkt, caplen);
    p->slen = curlen + totlen;
    if (do_wakeup)
        wakeup(d);
}

/* bpf_mtap(): every reader of the tap sees the frame. */
static void tap(struct bsdbpf_sim_if *ifp, const unsigned char *pkt, uint32_t wirelen,
                uint32_t datalen, int outgoing)
{
    struct stamp st = {0, 0, 0, 0};
    pthread_rwlock_rdlock(&ifp->lock);
    for (struct sim_d *d = ifp->dlist; d != NULL; d = d->if_next) {
        struct bsdbpf_sim_d *p = &d->pub;
        uint32_t snaplen;
        pthread_mutex_lock(&d->mtx);
        if (p->writer || (p->direction == BPF_D_IN && outgoing) ||
            (p->direction == BPF_D_OUT && !outgoing)) {
            pthread_mutex_unlock(&d->mtx);
            continue;
        }
        p->rcount++;
        snaplen = bsdbpf_filter_mbuf(p->rfilter, pkt, wirelen, datalen);
        if (snaplen != 0) {
            p->fcount++;
            catchpacket(d, pkt, wirelen, datalen, snaplen, &st);
        }
        pthread_mutex_unlock(&d->mtx);
    }
    pthread_rwlock_unlock(&ifp->lock);
}

/* --- descriptors -------------------------------------------------------- */

struct bsdbpf_sim_d *bsdbpf_sim_d_new(struct bsdbpf_sim_kernel *k, uint32_t bufsize)
{
    struct sim_d *d = calloc(1, sizeof(*d));
    pthread_condattr_t ca;
    int fds[2];
    if (d == NULL)
        return NULL;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
        free(d);
        return NULL;
    }
    for (int i = 0; i < 2; i++)
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    d->pub.fd = fds[0];
    d->peer = fds[1];
    pthread_mutex_init(&d->mtx, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
    d->pub.kernel = k;
    d->pub.bufmode = BPF_BUFMODE_BUFFER;
    d->pub.bufsize = bufsize;
    d->pub.direction = BPF_D_INOUT;
    d->pub.sig = SIGIO;
    bsdbpf_sim_update_ready(&d->pub);  /* not attached: readable at once */
    pthread_mutex_lock(&k->mtx);
    d->k_next = k->dlist;
    if (k->dlist)
        k->dlist->k_prev = d;
    k->dlist = d;
    pthread_mutex_unlock(&k->mtx);
    return &d->pub;
}

void bsdbpf_sim_d_free(struct bsdbpf_sim_d *pd)
{
    struct sim_d *d = priv(pd);
    struct bsdbpf_sim_kernel *k = pd->kernel;
    /* bpf_dtor(): stop the callout and funsetown() before detaching, so
     * closing never signals. */
    pthread_mutex_lock(&d->mtx);
    pd->callout = 0;
    pd->state = BSDBPF_SIM_IDLE;
    pd->owner = 0;
    pthread_mutex_unlock(&d->mtx);
    bsdbpf_sim_attach(pd, NULL);
    pthread_mutex_lock(&k->mtx);
    if (d->k_prev)
        d->k_prev->k_next = d->k_next;
    else
        k->dlist = d->k_next;
    if (d->k_next)
        d->k_next->k_prev = d->k_prev;
    pthread_mutex_unlock(&k->mtx);
    close(pd->fd);
    close(d->peer);
    free_kmem(d);
    free(pd->rfilter);
    free(pd->wfilter);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mtx);
    free(d);
}

void bsdbpf_sim_lock(struct bsdbpf_sim_d *pd) { pthread_mutex_lock(&priv(pd)->mtx); }
void bsdbpf_sim_unlock(struct bsdbpf_sim_d *pd) { pthread_mutex_unlock(&priv(pd)->mtx); }

static void unlink_from_tap(struct sim_d *d, struct bsdbpf_sim_if *ifp)
{
    for (struct sim_d **pp = &ifp->dlist; *pp != NULL; pp = &(*pp)->if_next) {
        if (*pp == d) {
            *pp = d->if_next;
            d->if_next = NULL;
            return;
        }
    }
}

int bsdbpf_sim_attach(struct bsdbpf_sim_d *pd, struct bsdbpf_sim_if *ifp)
{
    struct sim_d *d = priv(pd);
    struct bsdbpf_sim_if *old = pd->bif;
    if (old != NULL) {
        pthread_rwlock_wrlock(&old->lock);
        pthread_mutex_lock(&d->mtx);
        unlink_from_tap(d, old);
        pd->bif = NULL;
        pthread_mutex_unlock(&d->mtx);
        pthread_rwlock_unlock(&old->lock);
    }
    if (ifp == NULL) {
        pthread_mutex_lock(&d->mtx);
        bsdbpf_sim_update_ready(pd);   /* a plain detach wakes nobody */
        pthread_mutex_unlock(&d->mtx);
        return 0;
    }
    pthread_rwlock_wrlock(&ifp->lock);
    pthread_mutex_lock(&d->mtx);
    d->if_next = ifp->dlist;
    ifp->dlist = d;
    pd->bif = ifp;
    bsdbpf_sim_reset(pd);              /* bpf_attachd() ends with reset_d() */
    wakeup(d);                         /* and a wakeup (EVFILT_WRITE) */
    pthread_mutex_unlock(&d->mtx);
    pthread_rwlock_unlock(&ifp->lock);
    return 0;
}

int64_t bsdbpf_sim_read(struct bsdbpf_sim_d *pd, void *buf, size_t len, int nonblock,
                        int64_t deadline_ns, int64_t slice_end_ns, int first)
{
    struct sim_d *d = priv(pd);
    int64_t n;
    pthread_mutex_lock(&d->mtx);
    if (first) {
        d->read_timed_out = pd->state == BSDBPF_SIM_TIMED_OUT;
        pd->callout = 0;
        pd->state = BSDBPF_SIM_IDLE;
    }
    while (pd->hbuf == NULL) {
        struct timespec until;
        int64_t wait_end;
        if (pd->slen != 0 && (pd->immediate || nonblock || d->read_timed_out)) {
            rotate(d);
            break;
        }
        if (pd->bif == NULL) {
            bsdbpf_sim_update_ready(pd);
            pthread_mutex_unlock(&d->mtx);
            return -ENXIO;
        }
        if (nonblock) {
            bsdbpf_sim_update_ready(pd);
            pthread_mutex_unlock(&d->mtx);
            return -EAGAIN;
        }
        wait_end = deadline_ns && deadline_ns < slice_end_ns ? deadline_ns : slice_end_ns;
        abs_timespec(wait_end, &until);
        if (pthread_cond_timedwait(&d->cv, &d->mtx, &until) == ETIMEDOUT) {
            int64_t now = bsdbpf_sim_monotonic_ns();
            if (deadline_ns && now >= deadline_ns) {
                if (pd->hbuf != NULL)
                    break;
                if (pd->slen == 0) {
                    bsdbpf_sim_update_ready(pd);
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
    n = pd->hlen;
    if ((size_t)n > len)
        n = (int64_t)len;
    memcpy(buf, pd->hbuf->data, (size_t)n);
    reclaim(d);
    bsdbpf_sim_update_ready(pd);
    pthread_mutex_unlock(&d->mtx);
    return n;
}

/* bpfwrite() and bpf_movein(): the checks in the kernel's order. */
int bsdbpf_sim_write(struct bsdbpf_sim_d *pd, const void *buf, size_t len)
{
    struct sim_d *d = priv(pd);
    struct bsdbpf_sim_if *ifp;
    unsigned char *frame;
    int feedback, inout, err = 0;
    uint32_t hlen;

    pthread_mutex_lock(&d->mtx);
    pd->wcount++;
    ifp = pd->bif;
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
        else if (bsdbpf_filter(pd->wfilter, buf, (uint32_t)len, (uint32_t)len) == 0)
            err = EPERM;
    }
    if (err != 0) {
        pd->wdcount++;
        pthread_mutex_unlock(&d->mtx);
        return err < 0 ? 0 : -err;
    }
    pd->wfcount++;
    feedback = pd->feedback;
    inout = pd->direction == BPF_D_INOUT;
    frame = malloc(len);
    if (frame == NULL) {
        pthread_mutex_unlock(&d->mtx);
        return -ENOBUFS;
    }
    memcpy(frame, buf, len);
    if (ifp->dlt == DLT_EN10MB && !pd->hdrcmplt)
        memcpy(frame + 6, ifp->lladdr, 6);   /* the interface's source address */
    pthread_mutex_unlock(&d->mtx);

    /* The interface is held by this descriptor until the control plane,
     * which serialises write(2) with detach, lets go of it. */
    if (ifp->bridge_fd >= 0) {
#ifdef __linux__
        if (send(ifp->bridge_fd, frame, len, 0) < 0)
            err = errno;
#endif
    } else {
        /* Output path tap; with feedback on an INOUT descriptor the outgoing
         * copy is flagged M_PROMISC and skipped, the looped-back copy seen. */
        if (!(feedback && inout))
            tap(ifp, frame, (uint32_t)len, (uint32_t)len, 1);
        if (feedback)
            tap(ifp, frame, (uint32_t)len, (uint32_t)len, 0);
    }
    free(frame);
    return err ? -err : (int)len;
}

/* --- interfaces, injection, the packet and clock threads -------------- */

struct bsdbpf_sim_if *bsdbpf_sim_if_new(struct bsdbpf_sim_kernel *k, const char *name,
                                        unsigned int dlt, unsigned int hdrlen,
                                        const unsigned char *lladdr, unsigned int mtu)
{
    struct bsdbpf_sim_if *ifp = calloc(1, sizeof(*ifp));
    if (ifp == NULL)
        return NULL;
    ifp->k = k;
    strncpy(ifp->name, name, IFNAMSIZ - 1);
    ifp->dlt = dlt;
    ifp->hdrlen = hdrlen;
    ifp->mtu = mtu;
    if (lladdr != NULL)
        memcpy(ifp->lladdr, lladdr, 6);
    ifp->bridge_fd = -1;
    pthread_rwlock_init(&ifp->lock, NULL);
    return ifp;
}

void bsdbpf_sim_if_free(struct bsdbpf_sim_if *ifp)
{
    bsdbpf_sim_gen_stop(ifp);
    bsdbpf_sim_bridge_stop(ifp);
    pthread_rwlock_wrlock(&ifp->lock);
    while (ifp->dlist != NULL) {       /* bpfdetach(): wake everybody */
        struct sim_d *d = ifp->dlist;
        pthread_mutex_lock(&d->mtx);
        ifp->dlist = d->if_next;
        d->if_next = NULL;
        d->pub.bif = NULL;
        wakeup(d);
        pthread_mutex_unlock(&d->mtx);
    }
    pthread_rwlock_unlock(&ifp->lock);
    pthread_rwlock_destroy(&ifp->lock);
    free(ifp);
}

static void *packet_main(void *arg)
{
    struct bsdbpf_sim_kernel *k = arg;
    pthread_mutex_lock(&k->qmtx);
    for (;;) {
        struct job *j;
        while (k->qhead == NULL && !k->stop)
            pthread_cond_wait(&k->qcv, &k->qmtx);
        if (k->qhead == NULL)
            break;
        j = k->qhead;
        k->qhead = j->next;
        if (k->qhead == NULL)
            k->qtail = &k->qhead;
        pthread_mutex_unlock(&k->qmtx);
        tap(j->ifp, j->frame, (uint32_t)j->len, (uint32_t)j->len, j->outgoing);
        pthread_mutex_lock(&k->qmtx);
        j->done = 1;
        pthread_cond_broadcast(&k->donecv);
    }
    pthread_mutex_unlock(&k->qmtx);
    return NULL;
}

int bsdbpf_sim_inject(struct bsdbpf_sim_if *ifp, const void *frame, size_t len, int outgoing)
{
    struct bsdbpf_sim_kernel *k = ifp->k;
    struct job j = {ifp, frame, len, outgoing, 0, NULL};
    pthread_mutex_lock(&k->qmtx);
    if (k->stop) {
        pthread_mutex_unlock(&k->qmtx);
        return -ENXIO;
    }
    *k->qtail = &j;
    k->qtail = &j.next;
    pthread_cond_signal(&k->qcv);
    while (!j.done)
        pthread_cond_wait(&k->donecv, &k->qmtx);
    pthread_mutex_unlock(&k->qmtx);
    return 0;
}

/* hz: fire read timeouts, and notice acknowledgements made by a store into a
 * buffer header, which no system call announces. */
static void *clock_main(void *arg)
{
    struct bsdbpf_sim_kernel *k = arg;
    struct timespec tick = {0, TICK_NS};
    while (!__atomic_load_n(&k->stop, __ATOMIC_ACQUIRE)) {
        int64_t now = bsdbpf_sim_monotonic_ns();
        pthread_mutex_lock(&k->mtx);
        for (struct sim_d *d = k->dlist; d != NULL; d = d->k_next) {
            pthread_mutex_lock(&d->mtx);
            if (d->pub.state == BSDBPF_SIM_WAITING && d->pub.callout && now >= d->pub.callout) {
                d->pub.callout = 0;
                d->pub.state = BSDBPF_SIM_TIMED_OUT;
                if (d->pub.slen != 0)
                    wakeup(d);
            }
            bsdbpf_sim_update_ready(&d->pub);
            pthread_mutex_unlock(&d->mtx);
        }
        pthread_mutex_unlock(&k->mtx);
        nanosleep(&tick, NULL);
    }
    return NULL;
}

struct bsdbpf_sim_kernel *bsdbpf_sim_kernel_new(void)
{
    struct bsdbpf_sim_kernel *k = calloc(1, sizeof(*k));
    pthread_condattr_t ca;
    struct timespec rt;
    if (k == NULL)
        return NULL;
    pthread_mutex_init(&k->mtx, NULL);
    pthread_mutex_init(&k->qmtx, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->qcv, &ca);
    pthread_cond_init(&k->donecv, &ca);
    pthread_condattr_destroy(&ca);
    k->qtail = &k->qhead;
    clock_gettime(CLOCK_REALTIME, &rt);
    k->boottime = ns_to_bintime((int64_t)rt.tv_sec * NS + rt.tv_nsec -
                                bsdbpf_sim_monotonic_ns());
    if (pthread_create(&k->packet_thread, NULL, packet_main, k) != 0) {
        free(k);
        return NULL;
    }
    if (pthread_create(&k->clock_thread, NULL, clock_main, k) != 0) {
        pthread_mutex_lock(&k->qmtx);
        k->stop = 1;
        pthread_cond_broadcast(&k->qcv);
        pthread_mutex_unlock(&k->qmtx);
        pthread_join(k->packet_thread, NULL);
        free(k);
        return NULL;
    }
    return k;
}

void bsdbpf_sim_kernel_free(struct bsdbpf_sim_kernel *k)
{
    pthread_mutex_lock(&k->qmtx);
    __atomic_store_n(&k->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&k->qcv);
    pthread_mutex_unlock(&k->qmtx);
    pthread_join(k->packet_thread, NULL);
    pthread_join(k->clock_thread, NULL);
    pthread_cond_destroy(&k->qcv);
    pthread_cond_destroy(&k->donecv);
    pthread_mutex_destroy(&k->qmtx);
    pthread_mutex_destroy(&k->mtx);
    free(k);
}

/* --- traffic generator ------------------------------------------------- */

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static void *gen_main(void *arg)
{
    struct bsdbpf_sim_if *ifp = arg;
    struct worker *w = &ifp->gen;
    uint32_t size = ifp->gen_size, h = ifp->hdrlen;
    unsigned char *frame = calloc(1, size);
    int64_t start = bsdbpf_sim_monotonic_ns();
    if (frame == NULL) {
        w->error = ENOMEM;
        __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
        return NULL;
    }
    if (ifp->dlt == DLT_EN10MB) {
        memset(frame, 0xff, 6);
        memcpy(frame + 6, ifp->lladdr, 6);
        frame[12] = GEN_ETHERTYPE >> 8;
        frame[13] = GEN_ETHERTYPE & 0xff;
    } else if (ifp->dlt == DLT_NULL) {
        uint32_t af = 2;              /* AF_INET, in host order as lo0 has it */
        memcpy(frame, &af, 4);
    }
    for (uint32_t i = h + 8; i + 8 < size; i++)
        frame[i] = (unsigned char)i;
    for (uint64_t seq = 0; seq < ifp->gen_count; seq++) {
        if (__atomic_load_n(&w->stop, __ATOMIC_RELAXED))
            break;
        if (ifp->gen_rate) {
            uint64_t r = ifp->gen_rate;
            int64_t due = start + (int64_t)(seq / r * NS + seq % r * NS / r);
            int64_t now = bsdbpf_sim_monotonic_ns();
            if (due - now > 50000) {
                struct timespec ts;
                abs_timespec(due, &ts);
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            }
        }
        /* The sequence number opens and closes the payload, so a torn
         * record shows two different numbers. */
        put_be64(frame + h, seq);
        if (size >= h + 16)
            put_be64(frame + size - 8, seq);
        tap(ifp, frame, size, size, ifp->gen_outgoing);
        __atomic_store_n(&w->offered, seq + 1, __ATOMIC_RELEASE);
    }
    free(frame);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void worker_join(struct worker *w)
{
    if (w->running) {
        pthread_join(w->thread, NULL);
        w->running = 0;
    }
}

int bsdbpf_sim_gen_start(struct bsdbpf_sim_if *ifp, uint64_t count, uint32_t size,
                         uint64_t rate_pps, int outgoing)
{
    worker_join(&ifp->gen);
    if (size < ifp->hdrlen + 8)
        return -EINVAL;
    ifp->gen_count = count;
    ifp->gen_size = size;
    ifp->gen_rate = rate_pps;
    ifp->gen_outgoing = outgoing;
    ifp->gen.stop = 0;
    ifp->gen.done = 0;
    ifp->gen.offered = 0;
    ifp->gen.error = 0;
    if (pthread_create(&ifp->gen.thread, NULL, gen_main, ifp) != 0)
        return -EAGAIN;
    ifp->gen.running = 1;
    return 0;
}

void bsdbpf_sim_gen_wait(struct bsdbpf_sim_if *ifp) { worker_join(&ifp->gen); }

void bsdbpf_sim_gen_stop(struct bsdbpf_sim_if *ifp)
{
    __atomic_store_n(&ifp->gen.stop, 1, __ATOMIC_RELAXED);
    worker_join(&ifp->gen);
}

static void worker_stats(struct worker *w, struct bsdbpf_sim_stats *out)
{
    out->offered = __atomic_load_n(&w->offered, __ATOMIC_ACQUIRE);
    out->running = w->running && !__atomic_load_n(&w->done, __ATOMIC_ACQUIRE);
    out->error = w->error;
}

void bsdbpf_sim_gen_stats(struct bsdbpf_sim_if *ifp, struct bsdbpf_sim_stats *out)
{
    worker_stats(&ifp->gen, out);
}

/* --- AF_PACKET bridge ---------------------------------------------------- */

#ifdef __linux__
static void *bridge_main(void *arg)
{
    struct bsdbpf_sim_if *ifp = arg;
    struct worker *w = &ifp->bridge;
    size_t cap = 256 * 1024;          /* room for GRO-merged frames */
    unsigned char *buf = malloc(cap);
    struct pollfd pfd = {ifp->bridge_fd, POLLIN, 0};
    if (buf == NULL) {
        w->error = ENOMEM;
        __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
        return NULL;
    }
    while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
        struct sockaddr_ll from;
        socklen_t fromlen = sizeof(from);
        ssize_t n;
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        n = recvfrom(ifp->bridge_fd, buf, cap, MSG_TRUNC | MSG_DONTWAIT,
                     (struct sockaddr *)&from, &fromlen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            w->error = errno;
            break;
        }
        tap(ifp, buf, (uint32_t)n, (uint32_t)((size_t)n < cap ? (size_t)n : cap),
            from.sll_pkttype == PACKET_OUTGOING);
        __atomic_fetch_add(&w->offered, 1, __ATOMIC_RELEASE);
    }
    free(buf);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}
#endif

int bsdbpf_sim_bridge_start(struct bsdbpf_sim_if *ifp, const char *host_ifname)
{
#ifdef __linux__
    struct sockaddr_ll sll;
    unsigned int index = if_nametoindex(host_ifname);
    int fd;
    if (index == 0)
        return -ENXIO;
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0)
        return -errno;
    memset(&sll, 0, sizeof(sll));
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = (int)index;
    if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    ifp->bridge_fd = fd;
    ifp->bridge.stop = 0;
    ifp->bridge.done = 0;
    ifp->bridge.offered = 0;
    ifp->bridge.error = 0;
    if (pthread_create(&ifp->bridge.thread, NULL, bridge_main, ifp) != 0) {
        close(fd);
        ifp->bridge_fd = -1;
        return -EAGAIN;
    }
    ifp->bridge.running = 1;
    return 0;
#else
    (void)ifp;
    (void)host_ifname;
    return -EOPNOTSUPP;
#endif
}

void bsdbpf_sim_bridge_stop(struct bsdbpf_sim_if *ifp)
{
    __atomic_store_n(&ifp->bridge.stop, 1, __ATOMIC_RELAXED);
    worker_join(&ifp->bridge);
    if (ifp->bridge_fd >= 0) {
        close(ifp->bridge_fd);
        ifp->bridge_fd = -1;
    }
}

void bsdbpf_sim_bridge_stats(struct bsdbpf_sim_if *ifp, struct bsdbpf_sim_stats *out)
{
    worker_stats(&ifp->bridge, out);
}
