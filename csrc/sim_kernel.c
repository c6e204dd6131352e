/*
 * The kernel object and its threads (packet, clock), descriptors and their
 * lifetime, interfaces and injection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include "sim_engine_priv.h"

/* --- clocks ------------------------------------------------------------ */

int64_t bsdbpf_sim_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

int64_t sim_coarse_monotonic_ns(void)
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
struct bintime sim_ns_to_bintime(int64_t ns)
{
    struct bintime bt;
    bt.sec = (time_t)(ns / NS);
    bt.frac = (uint64_t)(ns % NS) * (uint64_t)18446744073ULL;
    return bt;
}

void sim_abs_timespec(int64_t ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ns / NS);
    ts->tv_nsec = (long)(ns % NS);
}

/* Engine threads block every signal, so signals (the simulator's own SIGIO
 * among them) interrupt the interpreter's threads, never the packet path. */
int sim_thread_create(pthread_t *thread, void *(*main)(void *), void *arg)
{
    sigset_t all, old;
    int rc;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(thread, NULL, main, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static void monotonic_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* --- descriptors -------------------------------------------------------- */

struct bsdbpf_sim_d *bsdbpf_sim_d_new(struct bsdbpf_sim_kernel *k, uint32_t bufsize)
{
    struct bsdbpf_sim_d *d = calloc(1, sizeof(*d));
    int fds[2];
    if (d == NULL)
        return NULL;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
        free(d);
        return NULL;
    }
    for (int i = 0; i < 2; i++)
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    d->fd = fds[0];
    d->peer = fds[1];
    d->refs = 1;                       /* the open file's */
    pthread_mutex_init(&d->mtx, NULL);
    monotonic_cond_init(&d->cv);
    d->kernel = k;
    d->bufmode = BPF_BUFMODE_BUFFER;
    d->bufsize = bufsize;
    d->direction = BPF_D_INOUT;
    d->sig = SIGIO;
    sim_update_ready(d);               /* not attached: readable at once */
    pthread_mutex_lock(&k->mtx);
    d->k_next = k->dlist;
    if (k->dlist)
        k->dlist->k_prev = d;
    k->dlist = d;
    pthread_mutex_unlock(&k->mtx);
    return d;
}

void bsdbpf_sim_d_hold(struct bsdbpf_sim_d *d)
{
    __atomic_fetch_add(&d->refs, 1, __ATOMIC_RELAXED);
}

void bsdbpf_sim_d_release(struct bsdbpf_sim_d *d)
{
    if (__atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (int i = 0; i < 2; i++)
        if (d->zmap[i] != NULL)
            sim_zbuf_unmap(d->zmap[i], d->zmaplen);
    sim_free_kmem(d);
    free(d->rfilter);
    free(d->wfilter);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mtx);
    free(d);
}

void bsdbpf_sim_d_close(struct bsdbpf_sim_d *d)
{
    struct bsdbpf_sim_kernel *k = d->kernel;
    /* bpf_dtor(): stop the callout and funsetown() before detaching, so
     * closing never signals; readers wake up and give up. */
    pthread_mutex_lock(&d->mtx);
    d->callout = 0;
    d->state = BSDBPF_SIM_IDLE;
    d->owner = 0;
    d->closing = 1;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mtx);
    bsdbpf_sim_attach(d, NULL);
    pthread_mutex_lock(&k->mtx);
    if (d->k_prev)
        d->k_prev->k_next = d->k_next;
    else
        k->dlist = d->k_next;
    if (d->k_next)
        d->k_next->k_prev = d->k_prev;
    pthread_mutex_unlock(&k->mtx);
    /* No thread can reach the descriptor now but its sleeping readers,
     * which never touch the socket pair once closing is set. */
    close(d->fd);
    close(d->peer);
    bsdbpf_sim_d_release(d);
}

static void fill_state(struct bsdbpf_sim_d *d, struct bsdbpf_sim_dstate *s)
{
    s->fd = d->fd;
    s->attached = d->bif != NULL;
    s->bufmode = d->bufmode;
    s->bufsize = d->bufsize;
    s->has_sbuf = d->sbuf != NULL;
    s->has_hbuf = d->hbuf != NULL;
    s->slen = d->slen;
    s->hlen = d->hlen;
    s->immediate = d->immediate;
    s->direction = d->direction;
    s->hdrcmplt = d->hdrcmplt;
    s->feedback = d->feedback;
    s->promisc = d->promisc;
    s->locked = d->locked;
    s->writer = d->writer;
    s->tstamp = d->tstamp;
    s->rtout = d->rtout;
    s->state = d->state;
    s->rcount = d->rcount;
    s->dcount = d->dcount;
    s->fcount = d->fcount;
    s->wcount = d->wcount;
    s->wfcount = d->wfcount;
    s->wdcount = d->wdcount;
    s->zcopy = d->zcopy;
    s->fasync = d->fasync;
    s->sig = d->sig;
    s->owner = d->owner;
}

void bsdbpf_sim_get_state(struct bsdbpf_sim_d *d, struct bsdbpf_sim_dstate *out)
{
    pthread_mutex_lock(&d->mtx);
    fill_state(d, out);
    pthread_mutex_unlock(&d->mtx);
}

void bsdbpf_sim_enter(struct bsdbpf_sim_d *d, struct bsdbpf_sim_dstate *out)
{
    pthread_mutex_lock(&d->mtx);
    d->callout = 0;
    d->state = BSDBPF_SIM_IDLE;
    sim_update_ready(d);
    fill_state(d, out);
    pthread_mutex_unlock(&d->mtx);
}

void bsdbpf_sim_set(struct bsdbpf_sim_d *d, int knob, int64_t value)
{
    int v = (int)value;
    pthread_mutex_lock(&d->mtx);
    switch (knob) {
    case BSDBPF_SIM_IMMEDIATE: d->immediate = v; break;
    case BSDBPF_SIM_DIRECTION: d->direction = v; break;
    case BSDBPF_SIM_HDRCMPLT: d->hdrcmplt = v; break;
    case BSDBPF_SIM_FEEDBACK: d->feedback = v; break;
    case BSDBPF_SIM_PROMISC: d->promisc = v; break;
    case BSDBPF_SIM_LOCKED: d->locked = v; break;
    case BSDBPF_SIM_WRITER: d->writer = v; break;
    case BSDBPF_SIM_TSTAMP: d->tstamp = (unsigned int)value; break;
    case BSDBPF_SIM_RTOUT: d->rtout = v; break;
    case BSDBPF_SIM_FASYNC: d->fasync = v; break;
    case BSDBPF_SIM_SIG: d->sig = v; break;
    case BSDBPF_SIM_OWNER: d->owner = v; break;
    case BSDBPF_SIM_BUFMODE: d->bufmode = v; break;
    default: break;
    }
    sim_update_ready(d);               /* BIOCIMMEDIATE can make it readable */
    pthread_mutex_unlock(&d->mtx);
}

int bsdbpf_sim_fionread(struct bsdbpf_sim_d *d)
{
    int n;
    pthread_mutex_lock(&d->mtx);
    n = (int)(d->slen + (d->hbuf != NULL ? d->hlen : 0));
    pthread_mutex_unlock(&d->mtx);
    return n;
}

void bsdbpf_sim_zero_counters(struct bsdbpf_sim_d *d)
{
    pthread_mutex_lock(&d->mtx);
    d->rcount = d->dcount = d->fcount = d->wcount = d->wfcount = d->zcopy = 0;
    pthread_mutex_unlock(&d->mtx);
}

static void unlink_from_tap(struct bsdbpf_sim_d *d, struct bsdbpf_sim_if *ifp)
{
    for (struct bsdbpf_sim_d **pp = &ifp->dlist; *pp != NULL; pp = &(*pp)->if_next) {
        if (*pp == d) {
            *pp = d->if_next;
            d->if_next = NULL;
            return;
        }
    }
}

int bsdbpf_sim_attach(struct bsdbpf_sim_d *d, struct bsdbpf_sim_if *ifp)
{
    struct bsdbpf_sim_if *old = d->bif;
    if (old != NULL) {
        pthread_rwlock_wrlock(&old->lock);
        pthread_mutex_lock(&d->mtx);
        unlink_from_tap(d, old);
        d->bif = NULL;
        pthread_mutex_unlock(&d->mtx);
        pthread_rwlock_unlock(&old->lock);
    }
    if (ifp == NULL) {
        pthread_mutex_lock(&d->mtx);
        sim_update_ready(d);           /* a plain detach wakes nobody */
        pthread_mutex_unlock(&d->mtx);
        return 0;
    }
    pthread_rwlock_wrlock(&ifp->lock);
    pthread_mutex_lock(&d->mtx);
    d->if_next = ifp->dlist;
    ifp->dlist = d;
    d->bif = ifp;
    sim_reset(d);                      /* bpf_attachd() ends with reset_d() */
    sim_wakeup(d);                     /* and a wakeup (EVFILT_WRITE) */
    pthread_mutex_unlock(&d->mtx);
    pthread_rwlock_unlock(&ifp->lock);
    return 0;
}

/* --- interfaces and injection ---------------------------------------- */

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
    sim_worker_init(&ifp->gen);
    sim_worker_init(&ifp->bridge);
    return ifp;
}

void bsdbpf_sim_if_free(struct bsdbpf_sim_if *ifp)
{
    bsdbpf_sim_gen_stop(ifp);
    bsdbpf_sim_bridge_stop(ifp);
    pthread_rwlock_wrlock(&ifp->lock);
    while (ifp->dlist != NULL) {       /* bpfdetach(): wake everybody */
        struct bsdbpf_sim_d *d = ifp->dlist;
        pthread_mutex_lock(&d->mtx);
        ifp->dlist = d->if_next;
        d->if_next = NULL;
        d->bif = NULL;
        sim_wakeup(d);
        pthread_mutex_unlock(&d->mtx);
    }
    pthread_rwlock_unlock(&ifp->lock);
    pthread_rwlock_destroy(&ifp->lock);
    sim_worker_destroy(&ifp->gen);
    sim_worker_destroy(&ifp->bridge);
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
        sim_tap(j->ifp, j->frame, (uint32_t)j->len, (uint32_t)j->len, j->outgoing);
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

/* --- the kernel and its clock ------------------------------------------ */

/* hz: fire read timeouts, and notice acknowledgements made by a store into a
 * buffer header, which no system call announces. */
static void *clock_main(void *arg)
{
    struct bsdbpf_sim_kernel *k = arg;
    struct timespec tick = {0, TICK_NS};
    while (!__atomic_load_n(&k->stop, __ATOMIC_ACQUIRE)) {
        int64_t now = bsdbpf_sim_monotonic_ns();
        pthread_mutex_lock(&k->mtx);
        for (struct bsdbpf_sim_d *d = k->dlist; d != NULL; d = d->k_next) {
            pthread_mutex_lock(&d->mtx);
            if (d->state == BSDBPF_SIM_WAITING && d->callout && now >= d->callout) {
                d->callout = 0;
                d->state = BSDBPF_SIM_TIMED_OUT;
                if (d->slen != 0)
                    sim_wakeup(d);
            }
            sim_update_ready(d);
            pthread_mutex_unlock(&d->mtx);
        }
        pthread_mutex_unlock(&k->mtx);
        nanosleep(&tick, NULL);
    }
    return NULL;
}

static struct bintime boottime_now(void)
{
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    return sim_ns_to_bintime((int64_t)rt.tv_sec * NS + rt.tv_nsec - bsdbpf_sim_monotonic_ns());
}

static void kernel_destroy(struct bsdbpf_sim_kernel *k)
{
    pthread_cond_destroy(&k->qcv);
    pthread_cond_destroy(&k->donecv);
    pthread_mutex_destroy(&k->qmtx);
    pthread_mutex_destroy(&k->mtx);
    free(k);
}

static void stop_packet_thread(struct bsdbpf_sim_kernel *k)
{
    pthread_mutex_lock(&k->qmtx);
    __atomic_store_n(&k->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&k->qcv);
    pthread_mutex_unlock(&k->qmtx);
    pthread_join(k->packet_thread, NULL);
}

struct bsdbpf_sim_kernel *bsdbpf_sim_kernel_new(void)
{
    struct bsdbpf_sim_kernel *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    pthread_mutex_init(&k->mtx, NULL);
    pthread_mutex_init(&k->qmtx, NULL);
    monotonic_cond_init(&k->qcv);
    monotonic_cond_init(&k->donecv);
    k->qtail = &k->qhead;
    k->boottime = boottime_now();
    if (sim_thread_create(&k->packet_thread, packet_main, k) != 0) {
        kernel_destroy(k);
        return NULL;
    }
    if (sim_thread_create(&k->clock_thread, clock_main, k) != 0) {
        stop_packet_thread(k);
        kernel_destroy(k);
        return NULL;
    }
    return k;
}

void bsdbpf_sim_kernel_free(struct bsdbpf_sim_kernel *k)
{
    stop_packet_thread(k);
    pthread_join(k->clock_thread, NULL);
    kernel_destroy(k);
}
