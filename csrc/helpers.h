/* Small C helpers for consumers of BPF buffers (both systems). */
#ifndef BSDBPF_HELPERS_H
#define BSDBPF_HELPERS_H
#include <stddef.h>
#include <stdint.h>
#include "bsdbpf_abi.h"

/* The zero-copy ownership protocol needs ordered accesses to the shared
 * header (bpf(4)); plain Python loads and stores are not ordered. */
u_int bsdbpf_load_acquire(const volatile u_int *p);
void bsdbpf_store_release(volatile u_int *p, u_int v);
size_t bsdbpf_wordalign(size_t x);

/* The interface's flags from a SIOCGIFFLAGS answer: the kernel splits its
 * 32-bit if_flags into two shorts, ifr_flags and ifr_flagshigh. */
unsigned int bsdbpf_ifr_flags(const struct ifreq *ifr);

/* bpf_hdrlen(): the record header length for a tap whose link header is
 * `linkhdrlen` bytes, chosen so the network header lands word-aligned. */
unsigned int bsdbpf_hdrlen(unsigned int linkhdrlen, unsigned int tstamp);

/* Fields of one parsed record in the output array of bsdbpf_parse_records. */
#define BSDBPF_REC_DATA    0   /* offset of the packet data in the buffer */
#define BSDBPF_REC_CAPLEN  1
#define BSDBPF_REC_DATALEN 2
#define BSDBPF_REC_TS_NS   3   /* timestamp, integer nanoseconds */
#define BSDBPF_REC_FIELDS  4

/* Walk the records in buf[start, len): header, data at bh_hdrlen, next record
 * at BPF_WORDALIGN(bh_hdrlen + bh_caplen).  `tstamp` (BIOCGTSTAMP's value)
 * picks struct bpf_hdr or bpf_xhdr and the timestamp's meaning.  Fills up to
 * `max` records into out[BSDBPF_REC_FIELDS * i + field], sets *next to the
 * offset after the last one parsed (at most len) and returns how many it
 * parsed.  Fewer than `max` with *next < len means the record at *next is
 * corrupt (it would run past len); nothing past len is ever read. */
int bsdbpf_parse_records(const unsigned char *buf, uint32_t start, uint32_t len,
                         unsigned int tstamp, int64_t *out, uint32_t max,
                         uint32_t *next);
#endif
