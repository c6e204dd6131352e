/*
 * Traffic that comes from outside the descriptors: the generator thread and
 * the AF_PACKET bridge to a host interface (Linux only).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#ifdef __linux__
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>
unsigned int if_nametoindex(const char *);
#endif
#include "sim_engine_priv.h"

#define GEN_ETHERTYPE 0x88b5   /* IEEE local experimental */

/* --- traffic generator ------------------------------------------------- */

static void worker_fail(struct worker *w, int err)
{
    __atomic_store_n(&w->error, err, __ATOMIC_RELAXED);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
}

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
        worker_fail(w, ENOMEM);
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
                sim_abs_timespec(due, &ts);
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            }
        }
        /* The sequence number opens and closes the payload, so a torn
         * record shows two different numbers. */
        put_be64(frame + h, seq);
        if (size >= h + 16)
            put_be64(frame + size - 8, seq);
        sim_tap(ifp, frame, size, size, ifp->gen_outgoing);
        __atomic_store_n(&w->offered, seq + 1, __ATOMIC_RELEASE);
    }
    free(frame);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Joins the worker's thread once, whoever asks (wait(), stop(), a new start). */
static void worker_join(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    if (__atomic_load_n(&w->running, __ATOMIC_ACQUIRE)) {
        pthread_join(w->thread, NULL);
        __atomic_store_n(&w->running, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&w->lock);
}

static int worker_busy(struct worker *w)
{
    return __atomic_load_n(&w->running, __ATOMIC_ACQUIRE) &&
           !__atomic_load_n(&w->done, __ATOMIC_ACQUIRE);
}

/* Starts `main` on a worker that is not running (the caller joined it). */
static int worker_start(struct worker *w, void *(*main)(void *), void *arg)
{
    __atomic_store_n(&w->stop, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&w->done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&w->offered, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&w->error, 0, __ATOMIC_RELAXED);
    pthread_mutex_lock(&w->lock);
    if (sim_thread_create(&w->thread, main, arg) != 0) {
        pthread_mutex_unlock(&w->lock);
        return -EAGAIN;
    }
    __atomic_store_n(&w->running, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void sim_worker_init(struct worker *w) { pthread_mutex_init(&w->lock, NULL); }
void sim_worker_destroy(struct worker *w) { pthread_mutex_destroy(&w->lock); }

int bsdbpf_sim_gen_start(struct bsdbpf_sim_if *ifp, uint64_t count, uint32_t size,
                         uint64_t rate_pps, int outgoing)
{
    /* An endless generator would never be joined: refuse rather than hang. */
    if (worker_busy(&ifp->gen))
        return -EBUSY;
    worker_join(&ifp->gen);            /* a finished one: at once */
    if (size < ifp->hdrlen + 8)
        return -EINVAL;
    ifp->gen_count = count;
    ifp->gen_size = size;
    ifp->gen_rate = rate_pps;
    ifp->gen_outgoing = outgoing;
    return worker_start(&ifp->gen, gen_main, ifp);
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
    out->running = worker_busy(w);
    out->error = __atomic_load_n(&w->error, __ATOMIC_RELAXED);
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
        worker_fail(w, ENOMEM);
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
            __atomic_store_n(&w->error, errno, __ATOMIC_RELAXED);
            break;
        }
        sim_tap(ifp, buf, (uint32_t)n, (uint32_t)((size_t)n < cap ? (size_t)n : cap),
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
    if (worker_start(&ifp->bridge, bridge_main, ifp) != 0) {
        close(fd);
        ifp->bridge_fd = -1;
        return -EAGAIN;
    }
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
