/*
 * FreeBSD's BPF userland ABI, stated for hosts that are not FreeBSD.
 *
 * On FreeBSD the extension is compiled against <net/bpf.h> and friends
 * instead (see build_bpf.py); this header exists so that the very same names,
 * layouts and request numbers exist on every other host, for the simulator.
 * Layouts follow the host's word size: LP64 gives amd64/arm64, ILP32 gives
 * i386.  Request numbers are built from FreeBSD's <sys/ioccom.h> encoding and
 * sizeof, never written as literals.  tests/test_abi.py checks every number
 * here against spec/freebsd-abi.json.
 */
#ifndef BSDBPF_FREEBSD_ABI_H
#define BSDBPF_FREEBSD_ABI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/time.h>   /* struct timeval: same layout as FreeBSD's on LP64 and ILP32 */

/* u_int, u_short, u_char come from <sys/types.h> (glibc, musl, macOS). */
_Static_assert(sizeof(struct timeval) == 2 * sizeof(long),
    "struct timeval must be FreeBSD's {time_t; long} for this word size");

typedef int32_t  bpf_int32;
typedef uint32_t bpf_u_int32;
typedef int64_t  bpf_int64;
typedef uint64_t bpf_u_int64;

/* <sys/ioccom.h> */
#define IOCPARM_SHIFT 13
#define IOCPARM_MASK  ((1 << IOCPARM_SHIFT) - 1)
#define IOCPARM_MAX   (1 << IOCPARM_SHIFT)
#undef IOC_VOID
#undef IOC_OUT
#undef IOC_IN
#undef IOC_INOUT
#define IOC_VOID   0x20000000UL
#define IOC_OUT    0x40000000UL
#define IOC_IN     0x80000000UL
#define IOC_INOUT  (IOC_IN | IOC_OUT)
#define IOC_DIRMASK (IOC_VOID | IOC_OUT | IOC_IN)
#define BSDBPF_IOC(inout, group, num, len) \
    ((unsigned long)((inout) | (((len) & IOCPARM_MASK) << 16) | ((group) << 8) | (num)))
#define BSDBPF_IO(g, n)       BSDBPF_IOC(IOC_VOID, (g), (n), 0)
#define BSDBPF_IOR(g, n, t)   BSDBPF_IOC(IOC_OUT, (g), (n), sizeof(t))
#define BSDBPF_IOW(g, n, t)   BSDBPF_IOC(IOC_IN, (g), (n), sizeof(t))
#define BSDBPF_IOWR(g, n, t)  BSDBPF_IOC(IOC_INOUT, (g), (n), sizeof(t))

/* <sys/time.h> */
struct bintime {
    time_t   sec;
    uint64_t frac;
};

/* <net/if.h>: BPF needs the name, SIOCGIFFLAGS the flags; the union is 16
 * bytes on both arches. */
#undef IFNAMSIZ
#define IFNAMSIZ 16
struct ifreq {
    char ifr_name[IFNAMSIZ];
    union {
        unsigned char ifru_bytes[16];
        void *ifru_ptr[16 / sizeof(void *)];
        short ifru_flags[2];
    } ifr_ifru;
};
#undef ifr_flags
#undef ifr_flagshigh
#define ifr_flags     ifr_ifru.ifru_flags[0]  /* if_flags' low 16 bits */
#define ifr_flagshigh ifr_ifru.ifru_flags[1]  /* and its high 16 */

/* <net/bpf.h> */
#define BPF_RELEASE 199606
#define BPF_ALIGNMENT sizeof(long)
#define BPF_WORDALIGN(x) (((x) + (BPF_ALIGNMENT - 1)) & ~(BPF_ALIGNMENT - 1))
#define BPF_MAXINSNS 512
#define BPF_MAXBUFSIZE 0x80000
#define BPF_MINBUFSIZE 32
#define BPF_MAJOR_VERSION 1
#define BPF_MINOR_VERSION 1

struct bpf_insn {
    u_short     code;
    u_char      jt;
    u_char      jf;
    bpf_u_int32 k;
};

struct bpf_program {
    u_int bf_len;
    struct bpf_insn *bf_insns;
};

struct bpf_stat {
    u_int bs_recv;
    u_int bs_drop;
};

struct bpf_version {
    u_short bv_major;
    u_short bv_minor;
};

struct bpf_zbuf {
    void   *bz_bufa;
    void   *bz_bufb;
    size_t  bz_buflen;
};

struct bpf_zbuf_header {
    volatile u_int bzh_kernel_gen;
    volatile u_int bzh_kernel_len;
    volatile u_int bzh_user_gen;
    u_int _bzh_pad[5];
};

struct bpf_ts {
    bpf_int64   bt_sec;
    bpf_u_int64 bt_frac;
};

struct bpf_xhdr {
    struct bpf_ts bh_tstamp;
    bpf_u_int32   bh_caplen;
    bpf_u_int32   bh_datalen;
    u_short       bh_hdrlen;
};

struct bpf_hdr {
    struct timeval bh_tstamp;
    bpf_u_int32    bh_caplen;
    bpf_u_int32    bh_datalen;
    u_short        bh_hdrlen;
};

struct bpf_dltlist {
    u_int  bfl_len;
    u_int *bfl_list;
};

struct bpf_iflist {
    u_int bi_size;
    u_int bi_count;
    void *bi_ubuf;
};

#define BPF_BUFMODE_BUFFER 1
#define BPF_BUFMODE_ZBUF   2

enum bpf_direction {
    BPF_D_IN,
    BPF_D_INOUT,
    BPF_D_OUT
};

#define BPF_T_MICROTIME     0x0000
#define BPF_T_NANOTIME      0x0001
#define BPF_T_BINTIME       0x0002
#define BPF_T_NONE          0x0003
#define BPF_T_FORMAT_MASK   0x0003
#define BPF_T_NORMAL        0x0000
#define BPF_T_FAST          0x0100
#define BPF_T_MONOTONIC     0x0200
#define BPF_T_MONOTONIC_FAST (BPF_T_FAST | BPF_T_MONOTONIC)
#define BPF_T_FLAG_MASK     0x0300
#define BPF_T_FORMAT(t)     ((t) & BPF_T_FORMAT_MASK)
#define BPF_T_FLAG(t)       ((t) & BPF_T_FLAG_MASK)
#define BPF_T_VALID(t) \
    ((t) == BPF_T_NONE || (BPF_T_FORMAT(t) != BPF_T_NONE && \
    ((t) & ~(BPF_T_FORMAT_MASK | BPF_T_FLAG_MASK)) == 0))
#define BPF_T_MICROTIME_FAST            (BPF_T_MICROTIME | BPF_T_FAST)
#define BPF_T_NANOTIME_FAST             (BPF_T_NANOTIME | BPF_T_FAST)
#define BPF_T_BINTIME_FAST              (BPF_T_BINTIME | BPF_T_FAST)
#define BPF_T_MICROTIME_MONOTONIC       (BPF_T_MICROTIME | BPF_T_MONOTONIC)
#define BPF_T_NANOTIME_MONOTONIC        (BPF_T_NANOTIME | BPF_T_MONOTONIC)
#define BPF_T_BINTIME_MONOTONIC         (BPF_T_BINTIME | BPF_T_MONOTONIC)
#define BPF_T_MICROTIME_MONOTONIC_FAST  (BPF_T_MICROTIME | BPF_T_MONOTONIC_FAST)
#define BPF_T_NANOTIME_MONOTONIC_FAST   (BPF_T_NANOTIME | BPF_T_MONOTONIC_FAST)
#define BPF_T_BINTIME_MONOTONIC_FAST    (BPF_T_BINTIME | BPF_T_MONOTONIC_FAST)

#define BIOCGBLEN       BSDBPF_IOR('B', 102, u_int)
#define BIOCSBLEN       BSDBPF_IOWR('B', 102, u_int)
#define BIOCSETF        BSDBPF_IOW('B', 103, struct bpf_program)
#define BIOCFLUSH       BSDBPF_IO('B', 104)
#define BIOCPROMISC     BSDBPF_IO('B', 105)
#define BIOCGDLT        BSDBPF_IOR('B', 106, u_int)
#define BIOCGETIF       BSDBPF_IOR('B', 107, struct ifreq)
#define BIOCSETIF       BSDBPF_IOW('B', 108, struct ifreq)
#define BIOCSRTIMEOUT   BSDBPF_IOW('B', 109, struct timeval)
#define BIOCGRTIMEOUT   BSDBPF_IOR('B', 110, struct timeval)
#define BIOCGSTATS      BSDBPF_IOR('B', 111, struct bpf_stat)
#define BIOCIMMEDIATE   BSDBPF_IOW('B', 112, u_int)
#define BIOCVERSION     BSDBPF_IOR('B', 113, struct bpf_version)
#define BIOCGRSIG       BSDBPF_IOR('B', 114, u_int)
#define BIOCSRSIG       BSDBPF_IOW('B', 115, u_int)
#define BIOCGHDRCMPLT   BSDBPF_IOR('B', 116, u_int)
#define BIOCSHDRCMPLT   BSDBPF_IOW('B', 117, u_int)
#define BIOCGDIRECTION  BSDBPF_IOR('B', 118, u_int)
#define BIOCSDIRECTION  BSDBPF_IOW('B', 119, u_int)
#define BIOCSDLT        BSDBPF_IOW('B', 120, u_int)
#define BIOCGDLTLIST    BSDBPF_IOWR('B', 121, struct bpf_dltlist)
#define BIOCLOCK        BSDBPF_IO('B', 122)
#define BIOCSETWF       BSDBPF_IOW('B', 123, struct bpf_program)
#define BIOCFEEDBACK    BSDBPF_IOW('B', 124, u_int)
#define BIOCGETBUFMODE  BSDBPF_IOR('B', 125, u_int)
#define BIOCSETBUFMODE  BSDBPF_IOW('B', 126, u_int)
#define BIOCGETZMAX     BSDBPF_IOR('B', 127, size_t)
#define BIOCROTZBUF     BSDBPF_IOR('B', 128, struct bpf_zbuf)
#define BIOCSETZBUF     BSDBPF_IOW('B', 129, struct bpf_zbuf)
#define BIOCSETFNR      BSDBPF_IOW('B', 130, struct bpf_program)
#define BIOCGTSTAMP     BSDBPF_IOR('B', 131, u_int)
#define BIOCSTSTAMP     BSDBPF_IOW('B', 132, u_int)
#define BIOCSETVLANPCP  BSDBPF_IOW('B', 133, u_int)
#define BIOCGETIFLIST   BSDBPF_IOWR('B', 134, struct bpf_iflist)
#define BIOCGSEESENT    BIOCGDIRECTION
#define BIOCSSEESENT    BIOCSDIRECTION

/* Instruction encoding. */
#define BPF_CLASS(code) ((code) & 0x07)
#define BPF_LD   0x00
#define BPF_LDX  0x01
#define BPF_ST   0x02
#define BPF_STX  0x03
#define BPF_ALU  0x04
#define BPF_JMP  0x05
#define BPF_RET  0x06
#define BPF_MISC 0x07
#define BPF_SIZE(code) ((code) & 0x18)
#define BPF_W 0x00
#define BPF_H 0x08
#define BPF_B 0x10
#define BPF_MODE(code) ((code) & 0xe0)
#define BPF_IMM 0x00
#define BPF_ABS 0x20
#define BPF_IND 0x40
#define BPF_MEM 0x60
#define BPF_LEN 0x80
#define BPF_MSH 0xa0
#define BPF_OP(code) ((code) & 0xf0)
#define BPF_ADD 0x00
#define BPF_SUB 0x10
#define BPF_MUL 0x20
#define BPF_DIV 0x30
#define BPF_OR  0x40
#define BPF_AND 0x50
#define BPF_LSH 0x60
#define BPF_RSH 0x70
#define BPF_NEG 0x80
#define BPF_MOD 0x90
#define BPF_XOR 0xa0
#define BPF_JA   0x00
#define BPF_JEQ  0x10
#define BPF_JGT  0x20
#define BPF_JGE  0x30
#define BPF_JSET 0x40
#define BPF_SRC(code) ((code) & 0x08)
#define BPF_K 0x00
#define BPF_X 0x08
#define BPF_RVAL(code) ((code) & 0x18)
#define BPF_A 0x10
#define BPF_MISCOP(code) ((code) & 0xf8)
#define BPF_TAX 0x00
#define BPF_TXA 0x80
#define BPF_MEMWORDS 16

/* <net/dlt.h> (FreeBSD's values, not OpenBSD's). */
#define DLT_NULL 0
#define DLT_EN10MB 1
#define DLT_SLIP 8
#define DLT_PPP 9
#define DLT_RAW 12
#define DLT_IEEE802_11 105
#define DLT_LOOP 108
#define DLT_ENC 109
#define DLT_PFLOG 117
#define DLT_PFSYNC 121
#define DLT_IEEE802_11_RADIO 127

/* <sys/filio.h>, <sys/ttycom.h>: FreeBSD's numbers replace the host's. */
#undef FIOCLEX
#undef FIONCLEX
#undef FIONREAD
#undef FIONBIO
#undef FIOASYNC
#undef FIOSETOWN
#undef FIOGETOWN
#undef TIOCSPGRP
#undef TIOCGPGRP
#define FIOCLEX   BSDBPF_IO('f', 1)
#define FIONCLEX  BSDBPF_IO('f', 2)
#define FIONREAD  BSDBPF_IOR('f', 127, int)
#define FIONBIO   BSDBPF_IOW('f', 126, int)
#define FIOASYNC  BSDBPF_IOW('f', 125, int)
#define FIOSETOWN BSDBPF_IOW('f', 124, int)
#define FIOGETOWN BSDBPF_IOR('f', 123, int)
#define TIOCSPGRP BSDBPF_IOW('t', 118, int)
#define TIOCGPGRP BSDBPF_IOR('t', 119, int)

/* <sys/sockio.h>, <net/if.h>: an interface's flags, asked on any socket. */
#undef SIOCGIFFLAGS
#undef IFF_UP
#define SIOCGIFFLAGS BSDBPF_IOWR('i', 17, struct ifreq)
#define IFF_UP 0x1

/* <net/bpfdesc.h>: one record of the net.bpf.stats sysctl. */
struct xbpf_d {
    u_int     bd_structsize;
    u_char    bd_promisc;
    u_char    bd_immediate;
    u_char    __bd_pad[6];
    int       bd_hdrcmplt;
    int       bd_direction;
    int       bd_feedback;
    int       bd_async;
    uint64_t  bd_rcount;
    uint64_t  bd_dcount;
    uint64_t  bd_fcount;
    int       bd_sig;
    int       bd_slen;
    int       bd_hlen;
    int       bd_bufsize;
    pid_t     bd_pid;
    char      bd_ifname[IFNAMSIZ];
    int       bd_locked;
    uint64_t  bd_wcount;
    uint64_t  bd_wfcount;
    uint64_t  bd_wdcount;
    uint64_t  bd_zcopy;
    int       bd_bufmode;
    uint64_t  bd_spare[4];
};

#endif
