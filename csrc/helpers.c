#include <string.h>
#include "helpers.h"
#include "capture_records.h"

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

unsigned int bsdbpf_ifr_flags(const struct ifreq *ifr)
{
    return (unsigned short)ifr->ifr_flags | (unsigned int)(unsigned short)ifr->ifr_flagshigh << 16;
}

unsigned int bsdbpf_hdrlen(unsigned int linkhdrlen, unsigned int tstamp)
{
    size_t hdrsize = bsdbpf_header_need(bsdbpf_uses_xhdr(tstamp));
    return (unsigned int)(BPF_WORDALIGN(linkhdrlen + hdrsize) - linkhdrlen);
}

int bsdbpf_parse_records(const unsigned char *buf, uint32_t start, uint32_t len,
                         unsigned int tstamp, int64_t *out, uint32_t max,
                         uint32_t *next)
{
    uint32_t off = start;
    uint32_t n = 0;
    struct bsdbpf_record rec;

    while (n < max && off < len && bsdbpf_record_at(buf, off, len, tstamp, &rec) == 0) {
        out[BSDBPF_REC_FIELDS * n + BSDBPF_REC_DATA] = rec.data;
        out[BSDBPF_REC_FIELDS * n + BSDBPF_REC_CAPLEN] = rec.caplen;
        out[BSDBPF_REC_FIELDS * n + BSDBPF_REC_DATALEN] = rec.datalen;
        out[BSDBPF_REC_FIELDS * n + BSDBPF_REC_TS_NS] = rec.ts_ns;
        n++;
        off = rec.next;
    }
    *next = off < len ? off : len;
    return (int)n;
}
