/* One BPF record, decoded: the single definition of the record walk, shared
 * by the cffi helpers (helpers.c) and the bsdbpf._capture extension. */
#ifndef BSDBPF_CAPTURE_RECORDS_H
#define BSDBPF_CAPTURE_RECORDS_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "bsdbpf_abi.h"

struct bsdbpf_record {
    uint32_t data;     /* offset of the packet data in the buffer */
    uint32_t caplen;
    uint32_t datalen;
    int64_t ts_ns;     /* integer nanoseconds */
    uint32_t next;     /* offset of the following record */
};

/* struct bpf_xhdr (NANOTIME, BINTIME) or struct bpf_hdr (MICROTIME, NONE). */
static inline int bsdbpf_uses_xhdr(unsigned int tstamp)
{
    return BPF_T_FORMAT(tstamp) == BPF_T_NANOTIME || BPF_T_FORMAT(tstamp) == BPF_T_BINTIME;
}

/* Header bytes up to and including bh_hdrlen: what must exist to decode one. */
static inline size_t bsdbpf_header_need(int xhdr)
{
    return xhdr ? offsetof(struct bpf_xhdr, bh_hdrlen) + 2
                : offsetof(struct bpf_hdr, bh_hdrlen) + 2;
}

/* Decode the record at buf[off] within buf[0, len).  Returns 0 and fills
 * *rec, or -1 if the record would run past len (a corrupt or truncated
 * buffer).  Nothing at or past len is read.  The data is at bh_hdrlen (never
 * sizeof the header), the next record at BPF_WORDALIGN(bh_hdrlen + caplen);
 * BINTIME fractions become nanoseconds as FreeBSD's bintime2timespec does. */
static inline int bsdbpf_record_at(const unsigned char *buf, uint32_t off, uint32_t len,
                                   unsigned int tstamp, struct bsdbpf_record *rec)
{
    int xhdr = bsdbpf_uses_xhdr(tstamp);
    size_t need = bsdbpf_header_need(xhdr);
    uint16_t hdrlen;
    uint64_t end;

    if (off > len || len - off < need)
        return -1;
    if (xhdr) {
        struct bpf_xhdr h;
        memcpy(&h, buf + off, need);  /* records are aligned, but be safe */
        rec->caplen = h.bh_caplen;
        rec->datalen = h.bh_datalen;
        hdrlen = h.bh_hdrlen;
        rec->ts_ns = (int64_t)h.bh_tstamp.bt_sec * 1000000000;
        rec->ts_ns += BPF_T_FORMAT(tstamp) == BPF_T_NANOTIME
            ? (int64_t)h.bh_tstamp.bt_frac
            : (int64_t)(((uint64_t)1000000000 * (uint32_t)(h.bh_tstamp.bt_frac >> 32)) >> 32);
    } else {
        struct bpf_hdr h;
        memcpy(&h, buf + off, need);
        rec->caplen = h.bh_caplen;
        rec->datalen = h.bh_datalen;
        hdrlen = h.bh_hdrlen;
        rec->ts_ns = (int64_t)h.bh_tstamp.tv_sec * 1000000000 +
                     (int64_t)h.bh_tstamp.tv_usec * 1000;
    }
    end = (uint64_t)off + hdrlen + rec->caplen;
    if (hdrlen < need || end > len)
        return -1;
    rec->data = off + hdrlen;
    end = BPF_WORDALIGN(end);
    rec->next = end < len ? (uint32_t)end : len;
    return 0;
}
#endif
