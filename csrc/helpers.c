#include <string.h>
#include "helpers.h"

u_int bsdbpf_load_acquire(const volatile u_int *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

void bsdbpf_store_release(volatile u_int *p, u_int v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

size_t bsdbpf_wordalign(size_t x)
{
    return BPF_WORDALIGN(x);
}

unsigned int bsdbpf_hdrlen(unsigned int linkhdrlen, unsigned int tstamp)
{
    int xhdr = BPF_T_FORMAT(tstamp) == BPF_T_NANOTIME ||
               BPF_T_FORMAT(tstamp) == BPF_T_BINTIME;
    size_t hdrsize = xhdr ? offsetof(struct bpf_xhdr, bh_hdrlen) + 2
                          : offsetof(struct bpf_hdr, bh_hdrlen) + 2;
    return (unsigned int)(BPF_WORDALIGN(linkhdrlen + hdrsize) - linkhdrlen);
}

/* bintime2timespec: FreeBSD's conversion of a 2^-64 fraction to nanoseconds. */
static int64_t frac_to_ns(uint64_t frac)
{
    return (int64_t)(((uint64_t)1000000000 * (uint32_t)(frac >> 32)) >> 32);
}

int bsdbpf_parse_records(const unsigned char *buf, uint32_t start, uint32_t len,
                         unsigned int tstamp, int64_t *out, uint32_t max,
                         uint32_t *next)
{
    int xhdr = BPF_T_FORMAT(tstamp) == BPF_T_NANOTIME ||
               BPF_T_FORMAT(tstamp) == BPF_T_BINTIME;
    size_t need = xhdr ? offsetof(struct bpf_xhdr, bh_hdrlen) + 2
                       : offsetof(struct bpf_hdr, bh_hdrlen) + 2;
    uint64_t off = start;
    uint32_t n = 0;

    while (n < max && off < len) {
        uint32_t caplen, datalen;
        uint16_t hdrlen;
        int64_t ts;
        if (len - off < need)
            break;
        if (xhdr) {
            struct bpf_xhdr h;
            memcpy(&h, buf + off, need);  /* records are aligned, but be safe */
            caplen = h.bh_caplen;
            datalen = h.bh_datalen;
            hdrlen = h.bh_hdrlen;
            ts = (int64_t)h.bh_tstamp.bt_sec * 1000000000;
            ts += BPF_T_FORMAT(tstamp) == BPF_T_NANOTIME
                  ? (int64_t)h.bh_tstamp.bt_frac : frac_to_ns(h.bh_tstamp.bt_frac);
        } else {
            struct bpf_hdr h;
            memcpy(&h, buf + off, need);
            caplen = h.bh_caplen;
            datalen = h.bh_datalen;
            hdrlen = h.bh_hdrlen;
            ts = (int64_t)h.bh_tstamp.tv_sec * 1000000000 +
                 (int64_t)h.bh_tstamp.tv_usec * 1000;
        }
        if (hdrlen < need || off + hdrlen + (uint64_t)caplen > len)
            break;
        out[BSDBPF_REC_FIELDS * n + BSDBPF_REC_DATA] = (int64_t)(off + hdrlen);
        out[BSDBPF_REC_FIELDS * n + BSDBPF_REC_CAPLEN] = caplen;
        out[BSDBPF_REC_FIELDS * n + BSDBPF_REC_DATALEN] = datalen;
        out[BSDBPF_REC_FIELDS * n + BSDBPF_REC_TS_NS] = ts;
        n++;
        off = BPF_WORDALIGN(off + hdrlen + caplen);
    }
    *next = off < len ? (uint32_t)off : len;
    return (int)n;
}
