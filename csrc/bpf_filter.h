/* Classic BPF: the kernel's validator and interpreter (FreeBSD bpf_filter.c
 * semantics, spec section h).  Shared by the simulator and the filter API. */
#ifndef BSDBPF_FILTER_H
#define BSDBPF_FILTER_H
#include <stdint.h>
#include "bsdbpf_abi.h"

/* bpf_validate(): 1 if the kernel would accept the program, else 0. */
int bsdbpf_validate(const struct bpf_insn *f, int len);

/* bpf_filter() over a contiguous buffer (bpf_tap, the write filter):
 * pc == NULL accepts the whole packet (0xffffffff). */
uint32_t bsdbpf_filter(const struct bpf_insn *pc, const unsigned char *pkt,
                       uint32_t wirelen, uint32_t buflen);

/* bpf_filter() as bpf_mtap runs it (buflen 0, packet in an mbuf chain, here
 * one segment of datalen bytes), with the mbuf path's quirks. */
uint32_t bsdbpf_filter_mbuf(const struct bpf_insn *pc, const unsigned char *pkt,
                            uint32_t wirelen, uint32_t datalen);
#endif
