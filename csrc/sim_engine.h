/*
 * The simulated kernel's packet path: descriptors' buffers, catchpacket,
 * zero-copy hand-over, read(2), readiness, interfaces, injection, a traffic
 * generator and an AF_PACKET bridge.  The control plane (bsdbpf/sim) is in
 * Python and drives this through cffi; everything that touches packets or
 * memory shared with the consumer is here, in C, on threads of its own.
 *
 * Locking (as in the kernel): kernel lock -> interface lock -> descriptor lock;
 * C never takes the GIL.  Python changes descriptor fields only between
 * bsdbpf_sim_lock()/bsdbpf_sim_unlock().
 */
#ifndef BSDBPF_SIM_ENGINE_H
#define BSDBPF_SIM_ENGINE_H
#include <stdint.h>
#include "bsdbpf_abi.h"

#define BSDBPF_SIM_IDLE      0   /* bd_state values */
#define BSDBPF_SIM_WAITING   1
#define BSDBPF_SIM_TIMED_OUT 2
#define BSDBPF_SIM_HZ        1000
#define BSDBPF_SIM_SLICE     (-100000)  /* read(): slice over, call again */

struct bsdbpf_sim_kernel;
struct bsdbpf_sim_if;

/* One buffer: kernel memory in BUFFER mode, the process's pages in ZBUF mode. */
struct bsdbpf_sim_buf {
    unsigned char *data;               /* where records start */
    struct bpf_zbuf_header *zh;        /* ZBUF: header at the user address */
    int assigned;                      /* ZBUF: handed to the user */
};

struct bsdbpf_sim_d {
    struct bsdbpf_sim_kernel *kernel;
    struct bsdbpf_sim_if *bif;         /* attached tap, or NULL */
    int bufmode;
    uint32_t bufsize;
    struct bsdbpf_sim_buf bufs[2];
    struct bsdbpf_sim_buf *sbuf, *hbuf, *fbuf;
    uint32_t slen, hlen;
    int immediate, direction, hdrcmplt, feedback, promisc, locked;
    int writer;                        /* on the writer-only list */
    int hbuf_in_use;                   /* read(2) is copying the hold buffer */
    unsigned int tstamp;
    int rtout;                         /* read timeout, ticks */
    int state;
    uint64_t rcount, dcount, fcount, wcount, wfcount, wdcount, zcopy;
    struct bpf_insn *rfilter;          /* owned copies; NULL = accept all */
    uint32_t rflen;
    struct bpf_insn *wfilter;
    uint32_t wflen;
    int fd;                            /* the pollable fd handed to the process */
    int ready;                         /* fd currently readable */
    int64_t callout;                   /* monotonic ns when the timeout fires, 0 = none */
    int fasync, sig, owner;            /* FIOASYNC, BIOCSRSIG, FIOSETOWN */
    /* the engine allocates more behind this: locks, condition, list links */
};

struct bsdbpf_sim_stats {              /* generator / bridge progress */
    uint64_t offered;
    int running;
    int error;                         /* errno of a failure, 0 = none */
};

/* kernel */
struct bsdbpf_sim_kernel *bsdbpf_sim_kernel_new(void);
void bsdbpf_sim_kernel_free(struct bsdbpf_sim_kernel *);

/* descriptors */
struct bsdbpf_sim_d *bsdbpf_sim_d_new(struct bsdbpf_sim_kernel *, uint32_t bufsize);
void bsdbpf_sim_d_free(struct bsdbpf_sim_d *);
void bsdbpf_sim_lock(struct bsdbpf_sim_d *);
void bsdbpf_sim_unlock(struct bsdbpf_sim_d *);
/* The rest expect the descriptor lock held, unless noted. */
void bsdbpf_sim_enter(struct bsdbpf_sim_d *);          /* any ioctl: stop callout, IDLE */
int bsdbpf_sim_alloc_buffers(struct bsdbpf_sim_d *, uint32_t size);
int bsdbpf_sim_setzbuf(struct bsdbpf_sim_d *, void *a, void *b, size_t buflen);
void bsdbpf_sim_reset(struct bsdbpf_sim_d *);          /* reset_d */
void bsdbpf_sim_rotzbuf(struct bsdbpf_sim_d *, struct bpf_zbuf *out);
/* Takes ownership of a malloc()ed copy of the program (NULL, 0 = none). */
void bsdbpf_sim_set_filter(struct bsdbpf_sim_d *, int write, struct bpf_insn *insns, uint32_t len);
struct bpf_insn *bsdbpf_sim_copy_program(const struct bpf_insn *insns, uint32_t len);
int bsdbpf_sim_canfreebuf(struct bsdbpf_sim_d *);  /* ZBUF: hold buffer acknowledged */
void bsdbpf_sim_update_ready(struct bsdbpf_sim_d *);
/* Lock not held: */
/* bpf_attachd(): moves the descriptor to a tap, then resets it (reset_d) and
 * wakes it up; NULL only detaches, with neither (bpf_dtor). */
int bsdbpf_sim_attach(struct bsdbpf_sim_d *, struct bsdbpf_sim_if *);
int64_t bsdbpf_sim_read(struct bsdbpf_sim_d *, void *buf, size_t len, int nonblock,
                        int64_t deadline_ns, int64_t slice_end_ns, int first);
int bsdbpf_sim_write(struct bsdbpf_sim_d *, const void *buf, size_t len);

/* interfaces */
struct bsdbpf_sim_if *bsdbpf_sim_if_new(struct bsdbpf_sim_kernel *, const char *name,
                                        unsigned int dlt, unsigned int hdrlen,
                                        const unsigned char *lladdr, unsigned int mtu);
void bsdbpf_sim_if_free(struct bsdbpf_sim_if *);   /* detaches every descriptor first */
int bsdbpf_sim_inject(struct bsdbpf_sim_if *, const void *frame, size_t len, int outgoing);

/* traffic generator: frames of `size` bytes carrying a 64-bit big-endian sequence
 * number after the link header; rate 0 = as fast as possible. */
int bsdbpf_sim_gen_start(struct bsdbpf_sim_if *, uint64_t count, uint32_t size,
                         uint64_t rate_pps, int outgoing);
void bsdbpf_sim_gen_wait(struct bsdbpf_sim_if *);
void bsdbpf_sim_gen_stop(struct bsdbpf_sim_if *);
void bsdbpf_sim_gen_stats(struct bsdbpf_sim_if *, struct bsdbpf_sim_stats *);

/* AF_PACKET bridge: a host interface as a simulated tap (Linux only). */
int bsdbpf_sim_bridge_start(struct bsdbpf_sim_if *, const char *host_ifname);
void bsdbpf_sim_bridge_stop(struct bsdbpf_sim_if *);
void bsdbpf_sim_bridge_stats(struct bsdbpf_sim_if *, struct bsdbpf_sim_stats *);

/* time in the kernel's clocks */
int64_t bsdbpf_sim_monotonic_ns(void);

#endif
