/*
 * The simulated kernel's engine: what the control plane (bsdbpf/sim, in
 * Python through cffi) may call.  Everything that touches packets, buffers or
 * memory shared with the consumer is behind it, in C, on threads of its own.
 *
 * This file is valid cffi cdef as it stands (build_bpf.py reads it verbatim),
 * so it has no preprocessor lines but integer #defines and no include guard:
 * C files include "sim_engine_priv.h", which includes it once after the ABI.
 *
 * Descriptors are reference counted: the open file holds one reference, and
 * the control plane takes another around a read(2) that sleeps.  Every call
 * below takes the locks it needs itself; Python never touches engine memory.
 */

#define BSDBPF_SIM_IDLE      0   /* bd_state values */
#define BSDBPF_SIM_WAITING   1
#define BSDBPF_SIM_TIMED_OUT 2
#define BSDBPF_SIM_HZ        1000
#define BSDBPF_SIM_SLICE     -100000  /* read(): slice over, call again */

struct bsdbpf_sim_kernel;
struct bsdbpf_sim_if;
struct bsdbpf_sim_d;

/* A descriptor as the control plane sees it, copied under its lock. */
struct bsdbpf_sim_dstate {
    int fd;                            /* the pollable fd handed to the process */
    int attached;                      /* on a tap (bd_bif != NULL) */
    int bufmode;
    uint32_t bufsize;
    int has_sbuf;                      /* buffers allocated or registered */
    int has_hbuf;                      /* a hold buffer exists */
    uint32_t slen, hlen;
    int immediate, direction, hdrcmplt, feedback, promisc, locked, writer;
    unsigned int tstamp;
    int rtout;                         /* read timeout, ticks */
    int state;
    uint64_t rcount, dcount, fcount, wcount, wfcount, wdcount, zcopy;
    int fasync, sig, owner;            /* FIOASYNC, BIOCSRSIG, FIOSETOWN */
};

/* The fields the control plane sets with bsdbpf_sim_set(). */
enum bsdbpf_sim_knob {
    BSDBPF_SIM_IMMEDIATE = 0,
    BSDBPF_SIM_DIRECTION = 1,
    BSDBPF_SIM_HDRCMPLT = 2,
    BSDBPF_SIM_FEEDBACK = 3,
    BSDBPF_SIM_PROMISC = 4,
    BSDBPF_SIM_LOCKED = 5,
    BSDBPF_SIM_WRITER = 6,
    BSDBPF_SIM_TSTAMP = 7,
    BSDBPF_SIM_RTOUT = 8,
    BSDBPF_SIM_FASYNC = 9,
    BSDBPF_SIM_SIG = 10,
    BSDBPF_SIM_OWNER = 11,
    BSDBPF_SIM_BUFMODE = 12
};

struct bsdbpf_sim_stats {              /* generator / bridge progress */
    uint64_t offered;
    int running;
    int error;                         /* errno of a failure, 0 = none */
};

/* kernel: starts the packet and clock threads */
struct bsdbpf_sim_kernel *bsdbpf_sim_kernel_new(void);
void bsdbpf_sim_kernel_free(struct bsdbpf_sim_kernel *);

/* descriptors */
struct bsdbpf_sim_d *bsdbpf_sim_d_new(struct bsdbpf_sim_kernel *, uint32_t);
void bsdbpf_sim_d_hold(struct bsdbpf_sim_d *);
void bsdbpf_sim_d_release(struct bsdbpf_sim_d *);
/* close(2): marks it closing, wakes every sleeper, detaches it, closes its fd
 * and drops the open file's reference. */
void bsdbpf_sim_d_close(struct bsdbpf_sim_d *);

/* Any ioctl: stop the callout, back to IDLE; returns the state after that. */
void bsdbpf_sim_enter(struct bsdbpf_sim_d *, struct bsdbpf_sim_dstate *);
void bsdbpf_sim_get_state(struct bsdbpf_sim_d *, struct bsdbpf_sim_dstate *);
void bsdbpf_sim_set(struct bsdbpf_sim_d *, int, int64_t);
int bsdbpf_sim_fionread(struct bsdbpf_sim_d *);
void bsdbpf_sim_zero_counters(struct bsdbpf_sim_d *);   /* net.bpf.stats write */
int bsdbpf_sim_alloc_buffers(struct bsdbpf_sim_d *, uint32_t);
/* Registers two zero-copy buffers the control plane checked and zeroed; the
 * engine keeps mappings of their pages of its own until the descriptor is
 * freed.  `shared`: the buffer lies in one MAP_SHARED mapping. */
int bsdbpf_sim_setzbuf(struct bsdbpf_sim_d *, void *, void *, size_t, int, int);
void bsdbpf_sim_reset(struct bsdbpf_sim_d *);          /* reset_d */
void bsdbpf_sim_rotzbuf(struct bsdbpf_sim_d *, struct bpf_zbuf *);
/* Installs a copy of a program already in kernel memory (NULL, 0 = none);
 * `reset` (BIOCSETF) also resets the descriptor in the same critical section. */
int bsdbpf_sim_set_filter(struct bsdbpf_sim_d *, int, const struct bpf_insn *, uint32_t, int);
/* bpf_attachd(): moves the descriptor to a tap, resets and wakes it;
 * NULL only detaches. */
int bsdbpf_sim_attach(struct bsdbpf_sim_d *, struct bsdbpf_sim_if *);
int64_t bsdbpf_sim_read(struct bsdbpf_sim_d *, void *, size_t, int, int64_t, int64_t, int);
int bsdbpf_sim_write(struct bsdbpf_sim_d *, const void *, size_t);

/* copyin/copyout: 0, or -EFAULT when the process's memory is not mapped. */
int bsdbpf_sim_copyin(void *, const void *, size_t);
int bsdbpf_sim_copyout(void *, const void *, size_t);

/* interfaces */
struct bsdbpf_sim_if *bsdbpf_sim_if_new(struct bsdbpf_sim_kernel *, const char *,
                                        unsigned int, unsigned int,
                                        const unsigned char *, unsigned int);
void bsdbpf_sim_if_free(struct bsdbpf_sim_if *);   /* detaches every descriptor first */
int bsdbpf_sim_inject(struct bsdbpf_sim_if *, const void *, size_t, int);

/* traffic generator: frames of `size` bytes carrying a 64-bit big-endian
 * sequence number after the link header; rate 0 = as fast as possible.
 * -EBUSY while the interface's generator is still running. */
int bsdbpf_sim_gen_start(struct bsdbpf_sim_if *, uint64_t, uint32_t, uint64_t, int);
void bsdbpf_sim_gen_wait(struct bsdbpf_sim_if *);
void bsdbpf_sim_gen_stop(struct bsdbpf_sim_if *);
void bsdbpf_sim_gen_stats(struct bsdbpf_sim_if *, struct bsdbpf_sim_stats *);

/* AF_PACKET bridge: a host interface as a simulated tap (Linux only). */
int bsdbpf_sim_bridge_start(struct bsdbpf_sim_if *, const char *);
void bsdbpf_sim_bridge_stop(struct bsdbpf_sim_if *);
void bsdbpf_sim_bridge_stats(struct bsdbpf_sim_if *, struct bsdbpf_sim_stats *);

/* time in the kernel's clocks */
int64_t bsdbpf_sim_monotonic_ns(void);
