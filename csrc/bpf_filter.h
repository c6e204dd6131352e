/* Classic BPF: the kernel's validator and interpreter (FreeBSD bpf_filter.c
 * semantics, spec section h).  Shared by the simulator and the filter API. */
#ifndef BSDBPF_FILTER_H
#define BSDBPF_FILTER_H
#include <stdint.h>
#include "bsdbpf_abi.h"

/* bpf_validate(): 1 if the kernel would accept the program, else 0. */
int bsdbpf_validate(const struct bpf_insn *f, int len);

/* The same checks, saying which one failed: BSDBPF_VALID (0) or the rule
 * broken, with *where set to the index of the offending instruction (-1 for
 * a negative length).  The rules are checked in the kernel's order, so the
 * first instruction it would stop at is the one reported. */
#define BSDBPF_VALID 0
#define BSDBPF_RULE_LENGTH 1    /* len < 0 */
#define BSDBPF_RULE_OPCODE 2    /* not one of the 49 opcodes */
#define BSDBPF_RULE_JUMP 3      /* jump target past the last instruction */
#define BSDBPF_RULE_MEMWORD 4   /* scratch index k >= BPF_MEMWORDS */
#define BSDBPF_RULE_DIVZERO 5   /* DIV or MOD by the constant 0 */
#define BSDBPF_RULE_LAST_RET 6  /* the last instruction is not a RET */
int bsdbpf_validate_rule(const struct bpf_insn *f, int len, int *where);

/* bpf_filter() over a contiguous buffer (bpf_tap, the write filter):
 * pc == NULL accepts the whole packet (0xffffffff). */
uint32_t bsdbpf_filter(const struct bpf_insn *pc, const unsigned char *pkt,
                       uint32_t wirelen, uint32_t buflen);

/* bpf_filter() as bpf_mtap runs it (buflen 0, packet in an mbuf chain, here
 * one segment of datalen bytes), with the mbuf path's quirks. */
uint32_t bsdbpf_filter_mbuf(const struct bpf_insn *pc, const unsigned char *pkt,
                            uint32_t wirelen, uint32_t datalen);
#endif
