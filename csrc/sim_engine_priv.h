/*
 * The engine's own structures and the calls between its files:
 *   sim_capture.c  buffers, catchpacket, readiness, read(2), write(2), the tap
 *   sim_kernel.c   the kernel object, descriptors, interfaces, its threads
 *   sim_user.c     the process's memory: copyin/copyout, zero-copy pages
 *   sim_traffic.c  the traffic generator and the AF_PACKET bridge (Linux)
 *
 * Locking (as in the kernel): kernel lock -> interface lock -> descriptor lock.
 * C never takes the GIL.
 */
#ifndef BSDBPF_SIM_ENGINE_PRIV_H
#define BSDBPF_SIM_ENGINE_PRIV_H
#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <time.h>
#include "bsdbpf_abi.h"
#include "sim_engine.h"

#define NS 1000000000LL
#define TICK_NS (NS / BSDBPF_SIM_HZ)
#define ZBUF_HDR ((uint32_t)sizeof(struct bpf_zbuf_header))

/* One buffer: kernel memory in BUFFER mode, the process's pages in ZBUF mode. */
struct sim_buf {
    unsigned char *data;               /* where records start */
    struct bpf_zbuf_header *zh;        /* ZBUF: header, in the engine's mapping */
    void *uaddr;                       /* ZBUF: the process's address of it */
    int assigned;                      /* ZBUF: handed to the user */
};

struct bsdbpf_sim_d {
    pthread_mutex_t mtx;
    pthread_cond_t cv;                 /* read(2) sleepers */
    int refs;                          /* atomic: the open file + sleeping readers */
    int closing;                       /* close(2) began: readers give up */
    struct bsdbpf_sim_kernel *kernel;
    struct bsdbpf_sim_if *bif;         /* attached tap, or NULL */
    struct bsdbpf_sim_d *if_next;      /* the tap's descriptor list */
    struct bsdbpf_sim_d *k_next, *k_prev;  /* the kernel's descriptor list */
    int bufmode;
    uint32_t bufsize;
    struct sim_buf bufs[2];
    struct sim_buf *sbuf, *hbuf, *fbuf;
    uint32_t slen, hlen;
    int immediate, direction, hdrcmplt, feedback, promisc, locked;
    int writer;                        /* on the writer-only list */
    unsigned int tstamp;
    int rtout;                         /* read timeout, ticks */
    int state;
    uint64_t rcount, dcount, fcount, wcount, wfcount, wdcount, zcopy;
    struct bpf_insn *rfilter;          /* owned copies; NULL = accept all */
    uint32_t rflen;
    struct bpf_insn *wfilter;
    uint32_t wflen;
    int fd, peer;                      /* the process's end of a socket pair, and ours */
    int ready;                         /* fd currently readable */
    int read_timed_out;                /* TIMED_OUT seen when read(2) began */
    int64_t callout;                   /* monotonic ns when the timeout fires, 0 = none */
    int fasync, sig, owner;
    unsigned char *kmem[2];            /* BUFFER mode kernel buffers */
    void *zmap[2];                     /* ZBUF mode: the engine's own mappings */
    size_t zmaplen;
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
    struct bsdbpf_sim_d *dlist;
    struct bintime boottime;           /* wall clock = uptime + boottime */
    pthread_mutex_t qmtx;              /* packet thread queue */
    pthread_cond_t qcv, donecv;
    struct job *qhead, **qtail;
    int stop;
    pthread_t packet_thread, clock_thread;
};

struct worker {                        /* a generator or bridge thread */
    pthread_mutex_t lock;              /* thread and running: one joiner */
    pthread_t thread;
    int running;                       /* atomic: thread exists and must be joined */
    int stop;                          /* atomic */
    int done;                          /* atomic: the thread's work is over */
    uint64_t offered;                  /* atomic */
    int error;                         /* atomic */
};

struct bsdbpf_sim_if {
    struct bsdbpf_sim_kernel *k;
    char name[IFNAMSIZ];
    unsigned int dlt, hdrlen, mtu;
    unsigned char lladdr[6];
    pthread_rwlock_t lock;             /* descriptor list */
    struct bsdbpf_sim_d *dlist;
    struct worker gen, bridge;
    uint64_t gen_count, gen_rate;
    uint32_t gen_size;
    int gen_outgoing;
    int bridge_fd;
};

/* sim_capture.c; the descriptor lock is held */
void sim_update_ready(struct bsdbpf_sim_d *);
void sim_wakeup(struct bsdbpf_sim_d *);
void sim_reset(struct bsdbpf_sim_d *);
void sim_free_kmem(struct bsdbpf_sim_d *);
/* bpf_mtap(): every reader of the tap sees the frame (takes the locks) */
void sim_tap(struct bsdbpf_sim_if *, const unsigned char *, uint32_t, uint32_t, int);

/* sim_traffic.c */
void sim_worker_init(struct worker *);
void sim_worker_destroy(struct worker *);

/* sim_user.c */
void *sim_zbuf_map(void *uaddr, size_t len, int shared);  /* NULL + errno on failure */
void sim_zbuf_unmap(void *map, size_t len);

/* sim_kernel.c: threads and clocks */
int sim_thread_create(pthread_t *thread, void *(*main)(void *), void *arg);
int64_t sim_coarse_monotonic_ns(void);
struct bintime sim_ns_to_bintime(int64_t ns);
void sim_abs_timespec(int64_t ns, struct timespec *ts);
#endif
