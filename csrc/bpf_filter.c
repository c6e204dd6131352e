/* Classic BPF validator and interpreter with FreeBSD's semantics (spec section
 * h; sys/net/bpf_filter.c).  One interpreter serves both entry points; they
 * differ only in how a packet load is bounds-checked, which is what `mbuf`
 * selects below.
 *
 * Choices where the kernel's behaviour is not fixed by C:
 *  - Shifts (LSH/RSH, K or X) use the count modulo 32, as the amd64 shl/shr
 *    instructions of a GENERIC kernel do; C leaves counts >= 32 undefined.
 *  - bsdbpf_filter() with buflen == 0 rejects every packet load: the buffer
 *    is empty (the kernel would instead reinterpret the pointer as an mbuf).
 *  - Programs must have passed bsdbpf_validate(): the interpreter has no
 *    length, so it trusts jumps and scratch indexes as the kernel does.  A
 *    DIV/MOD by a constant 0 (which the validator refuses; the kernel would
 *    trap) drops the packet, like a zero X does.
 *
 * Arithmetic is on uint32_t, which never promotes to signed int on the
 * platforms we build for (int is 32 bits), so wrap-around is well defined. */
#include <string.h>
#include "bpf_filter.h"

/* The packet as the interpreter sees it. */
struct bpf_pkt {
    const unsigned char *data;
    uint32_t len;   /* bytes present: buflen, or the mbuf's m_len */
    int mbuf;       /* 1: bpf_mtap path (buflen 0, chain helpers) */
};

/* Fetch n (1, 2 or 4) bytes big-endian at x + k into *v; 0 if out of range.
 * The contiguous path checks the true sum, so X + k never wraps into the
 * buffer.  The mbuf path first forms k = X + k in 32 bits and then walks the
 * chain, so a wrapped address that lands inside the data is loaded. */
static int bpf_fetch(const struct bpf_pkt *pk, uint32_t x, uint32_t k,
                     unsigned n, uint32_t *v)
{
    uint64_t off = pk->mbuf ? (uint64_t)(uint32_t)(x + k) : (uint64_t)x + k;
    uint32_t r = 0;

    if (off + n > pk->len)
        return 0;
    for (unsigned i = 0; i < n; i++)
        r = r << 8 | pk->data[off + i];
    *v = r;
    return 1;
}

static uint32_t bpf_run(const struct bpf_insn *pc, const struct bpf_pkt *pk,
                        uint32_t wirelen)
{
    uint32_t A = 0, X = 0, v;
    uint32_t mem[BPF_MEMWORDS];

    if (pc == NULL)
        return 0xffffffffu;     /* no filter: accept the whole packet */
    memset(mem, 0, sizeof(mem));

    for (;; pc++) {
        uint32_t k = pc->k;

        switch (pc->code) {
        case BPF_RET | BPF_K:
            return k;
        case BPF_RET | BPF_A:
            return A;

        case BPF_LD | BPF_W | BPF_ABS:
            if (!bpf_fetch(pk, 0, k, 4, &A))
                return 0;
            break;
        case BPF_LD | BPF_H | BPF_ABS:
            /* The kernel ignores m_xhalf()'s error here: on the mbuf path an
             * out-of-range halfword reads as 0 and the program goes on. */
            if (!bpf_fetch(pk, 0, k, 2, &A)) {
                if (!pk->mbuf)
                    return 0;
                A = 0;
            }
            break;
        case BPF_LD | BPF_B | BPF_ABS:
            if (!bpf_fetch(pk, 0, k, 1, &A))
                return 0;
            break;
        case BPF_LD | BPF_W | BPF_IND:
            if (!bpf_fetch(pk, X, k, 4, &A))
                return 0;
            break;
        case BPF_LD | BPF_H | BPF_IND:
            if (!bpf_fetch(pk, X, k, 2, &A))
                return 0;
            break;
        case BPF_LD | BPF_B | BPF_IND:
            if (!bpf_fetch(pk, X, k, 1, &A))
                return 0;
            break;
        case BPF_LDX | BPF_B | BPF_MSH:
            if (!bpf_fetch(pk, 0, k, 1, &v))
                return 0;
            X = (v & 0xf) << 2;
            break;

        case BPF_LD | BPF_W | BPF_LEN:
            A = wirelen;
            break;
        case BPF_LDX | BPF_W | BPF_LEN:
            X = wirelen;
            break;
        case BPF_LD | BPF_IMM:
            A = k;
            break;
        case BPF_LDX | BPF_IMM:
            X = k;
            break;
        case BPF_LD | BPF_MEM:
            A = mem[k];
            break;
        case BPF_LDX | BPF_MEM:
            X = mem[k];
            break;
        case BPF_ST:
            mem[k] = A;
            break;
        case BPF_STX:
            mem[k] = X;
            break;

        /* The loop's pc++ supplies the "+ 1" of every jump. */
        case BPF_JMP | BPF_JA:
            pc += k;
            break;
        case BPF_JMP | BPF_JEQ | BPF_K:
            pc += A == k ? pc->jt : pc->jf;
            break;
        case BPF_JMP | BPF_JGT | BPF_K:
            pc += A > k ? pc->jt : pc->jf;
            break;
        case BPF_JMP | BPF_JGE | BPF_K:
            pc += A >= k ? pc->jt : pc->jf;
            break;
        case BPF_JMP | BPF_JSET | BPF_K:
            pc += (A & k) ? pc->jt : pc->jf;
            break;
        case BPF_JMP | BPF_JEQ | BPF_X:
            pc += A == X ? pc->jt : pc->jf;
            break;
        case BPF_JMP | BPF_JGT | BPF_X:
            pc += A > X ? pc->jt : pc->jf;
            break;
        case BPF_JMP | BPF_JGE | BPF_X:
            pc += A >= X ? pc->jt : pc->jf;
            break;
        case BPF_JMP | BPF_JSET | BPF_X:
            pc += (A & X) ? pc->jt : pc->jf;
            break;

        /* ALU: the K forms were vetted for a zero divisor by the validator;
         * the X forms reject the packet at run time instead. */
        case BPF_ALU | BPF_ADD | BPF_K: A += k; break;
        case BPF_ALU | BPF_SUB | BPF_K: A -= k; break;
        case BPF_ALU | BPF_MUL | BPF_K: A *= k; break;
        case BPF_ALU | BPF_DIV | BPF_K: if (k == 0) return 0; A /= k; break;
        case BPF_ALU | BPF_MOD | BPF_K: if (k == 0) return 0; A %= k; break;
        case BPF_ALU | BPF_OR | BPF_K:  A |= k; break;
        case BPF_ALU | BPF_AND | BPF_K: A &= k; break;
        case BPF_ALU | BPF_XOR | BPF_K: A ^= k; break;
        case BPF_ALU | BPF_LSH | BPF_K: A <<= k & 31; break;
        case BPF_ALU | BPF_RSH | BPF_K: A >>= k & 31; break;
        case BPF_ALU | BPF_ADD | BPF_X: A += X; break;
        case BPF_ALU | BPF_SUB | BPF_X: A -= X; break;
        case BPF_ALU | BPF_MUL | BPF_X: A *= X; break;
        case BPF_ALU | BPF_DIV | BPF_X: if (X == 0) return 0; A /= X; break;
        case BPF_ALU | BPF_MOD | BPF_X: if (X == 0) return 0; A %= X; break;
        case BPF_ALU | BPF_OR | BPF_X:  A |= X; break;
        case BPF_ALU | BPF_AND | BPF_X: A &= X; break;
        case BPF_ALU | BPF_XOR | BPF_X: A ^= X; break;
        case BPF_ALU | BPF_LSH | BPF_X: A <<= X & 31; break;
        case BPF_ALU | BPF_RSH | BPF_X: A >>= X & 31; break;
        case BPF_ALU | BPF_NEG:         A = 0u - A; break;

        case BPF_MISC | BPF_TAX:
            X = A;
            break;
        case BPF_MISC | BPF_TXA:
            A = X;
            break;

        default:
            return 0;   /* unknown opcode: the kernel drops the packet */
        }
    }
}

uint32_t bsdbpf_filter(const struct bpf_insn *pc, const unsigned char *pkt,
                       uint32_t wirelen, uint32_t buflen)
{
    struct bpf_pkt pk = { pkt, buflen, 0 };

    return bpf_run(pc, &pk, wirelen);
}

uint32_t bsdbpf_filter_mbuf(const struct bpf_insn *pc, const unsigned char *pkt,
                            uint32_t wirelen, uint32_t datalen)
{
    struct bpf_pkt pk = { pkt, datalen, 1 };

    return bpf_run(pc, &pk, wirelen);
}

/* The 49 opcodes the kernel's validator accepts (its bpf_code_map). */
static int bpf_code_ok(uint16_t code)
{
    switch (code) {
    case BPF_LD | BPF_W | BPF_IMM:
    case BPF_LD | BPF_W | BPF_ABS:
    case BPF_LD | BPF_H | BPF_ABS:
    case BPF_LD | BPF_B | BPF_ABS:
    case BPF_LD | BPF_W | BPF_IND:
    case BPF_LD | BPF_H | BPF_IND:
    case BPF_LD | BPF_B | BPF_IND:
    case BPF_LD | BPF_W | BPF_MEM:
    case BPF_LD | BPF_W | BPF_LEN:
    case BPF_LDX | BPF_W | BPF_IMM:
    case BPF_LDX | BPF_W | BPF_MEM:
    case BPF_LDX | BPF_W | BPF_LEN:
    case BPF_LDX | BPF_B | BPF_MSH:
    case BPF_ST:
    case BPF_STX:
    case BPF_ALU | BPF_ADD | BPF_K: case BPF_ALU | BPF_ADD | BPF_X:
    case BPF_ALU | BPF_SUB | BPF_K: case BPF_ALU | BPF_SUB | BPF_X:
    case BPF_ALU | BPF_MUL | BPF_K: case BPF_ALU | BPF_MUL | BPF_X:
    case BPF_ALU | BPF_DIV | BPF_K: case BPF_ALU | BPF_DIV | BPF_X:
    case BPF_ALU | BPF_MOD | BPF_K: case BPF_ALU | BPF_MOD | BPF_X:
    case BPF_ALU | BPF_OR | BPF_K:  case BPF_ALU | BPF_OR | BPF_X:
    case BPF_ALU | BPF_AND | BPF_K: case BPF_ALU | BPF_AND | BPF_X:
    case BPF_ALU | BPF_XOR | BPF_K: case BPF_ALU | BPF_XOR | BPF_X:
    case BPF_ALU | BPF_LSH | BPF_K: case BPF_ALU | BPF_LSH | BPF_X:
    case BPF_ALU | BPF_RSH | BPF_K: case BPF_ALU | BPF_RSH | BPF_X:
    case BPF_ALU | BPF_NEG:
    case BPF_JMP | BPF_JA:
    case BPF_JMP | BPF_JEQ | BPF_K: case BPF_JMP | BPF_JEQ | BPF_X:
    case BPF_JMP | BPF_JGT | BPF_K: case BPF_JMP | BPF_JGT | BPF_X:
    case BPF_JMP | BPF_JGE | BPF_K: case BPF_JMP | BPF_JGE | BPF_X:
    case BPF_JMP | BPF_JSET | BPF_K: case BPF_JMP | BPF_JSET | BPF_X:
    case BPF_RET | BPF_K:
    case BPF_RET | BPF_A:
    case BPF_MISC | BPF_TAX:
    case BPF_MISC | BPF_TXA:
        return 1;
    default:
        return 0;
    }
}

int bsdbpf_validate_rule(const struct bpf_insn *f, int len, int *where)
{
    *where = -1;
    if (len < 0)
        return BSDBPF_RULE_LENGTH;
    /* The kernel calls an empty program valid (accept all); BIOCSETF with
     * bf_len 0 never gets here, it just removes the filter. */
    if (len == 0)
        return BSDBPF_VALID;

    for (int i = 0; i < len; i++) {
        const struct bpf_insn *p = &f[i];
        uint16_t c = p->code;

        *where = i;
        if (!bpf_code_ok(c))
            return BSDBPF_RULE_OPCODE;
        if (BPF_CLASS(c) == BPF_JMP) {
            /* Unsigned offsets: jumps only go forward, and the target
             * i + 1 + offset must be an instruction. */
            uint32_t off = c == (BPF_JMP | BPF_JA) ? p->k
                         : (p->jt > p->jf ? p->jt : p->jf);
            if (off >= (uint32_t)(len - i) - 1)
                return BSDBPF_RULE_JUMP;
        } else if (c == BPF_ST || c == BPF_STX || c == (BPF_LD | BPF_MEM) ||
                   c == (BPF_LDX | BPF_MEM)) {
            if (p->k >= BPF_MEMWORDS)
                return BSDBPF_RULE_MEMWORD;
        } else if ((c == (BPF_ALU | BPF_DIV | BPF_K) ||
                    c == (BPF_ALU | BPF_MOD | BPF_K)) && p->k == 0) {
            return BSDBPF_RULE_DIVZERO;
        }
    }
    *where = len - 1;
    return BPF_CLASS(f[len - 1].code) == BPF_RET ? BSDBPF_VALID : BSDBPF_RULE_LAST_RET;
}

int bsdbpf_validate(const struct bpf_insn *f, int len)
{
    int where;

    return bsdbpf_validate_rule(f, len, &where) == BSDBPF_VALID;
}
