"""The C filter engine (csrc/bpf_filter.c) against FreeBSD's bpf_filter.c
semantics (spec section h): validator, contiguous interpreter, mbuf path.

Packets are passed with guard bytes after the `buflen` bytes that count, so a
load that ignores its bounds reads a non-zero value instead of passing by luck.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bsdbpf._native import ffi, lib

SPEC_JSON = Path(__file__).resolve().parent / "data" / "freebsd-abi.json"
VALID_OPCODES = json.loads(SPEC_JSON.read_text())["derived"]["bpf_validate_valid_opcodes"]

M32 = 0xFFFFFFFF
GUARD = b"\xee" * 8
DATA = bytes(range(0x10, 0x10 + 48))  # 10 11 12 ...: every byte non-zero

LD, LDX, ST, STX, ALU, JMP, RET, MISC = (
    lib.BPF_LD, lib.BPF_LDX, lib.BPF_ST, lib.BPF_STX,
    lib.BPF_ALU, lib.BPF_JMP, lib.BPF_RET, lib.BPF_MISC,
)
W, H, B = lib.BPF_W, lib.BPF_H, lib.BPF_B
IMM, ABS, IND, MEM, LEN, MSH = (
    lib.BPF_IMM, lib.BPF_ABS, lib.BPF_IND, lib.BPF_MEM, lib.BPF_LEN, lib.BPF_MSH,
)
K, X, A = lib.BPF_K, lib.BPF_X, lib.BPF_A


def stmt(code: int, k: int = 0) -> tuple[int, int, int, int]:
    return (code, 0, 0, k)


def jump(code: int, k: int, jt: int, jf: int) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


def prog(insns):
    return ffi.new("struct bpf_insn[]", list(insns))


def validate(insns) -> int:
    return lib.bsdbpf_validate(prog(insns), len(insns))


def run(insns, data: bytes = DATA, buflen: int | None = None, wirelen: int | None = None,
        *, mbuf: bool = False, check_valid: bool = True) -> int:
    """Run insns on data[:buflen] (guard bytes follow) through one entry point."""
    if check_valid:
        assert validate(insns) == 1, insns
    buflen = len(data) if buflen is None else buflen
    wirelen = buflen if wirelen is None else wirelen
    fn = lib.bsdbpf_filter_mbuf if mbuf else lib.bsdbpf_filter
    return fn(prog(insns), data[:buflen] + GUARD, wirelen, buflen)


def run_both(insns, data: bytes = DATA, buflen: int | None = None,
             wirelen: int | None = None) -> int:
    """Run through both entry points, which must agree; return the result."""
    r = run(insns, data, buflen, wirelen)
    assert run(insns, data, buflen, wirelen, mbuf=True) == r
    return r


# --------------------------------------------------------------------------
# Validator
# --------------------------------------------------------------------------

def test_valid_opcode_list_is_the_49_of_the_spec():
    assert len(VALID_OPCODES) == 49 == len(set(VALID_OPCODES))


def test_validator_opcode_table_all_16_bit_codes():
    # [insn, RET, RET]: k = 1 satisfies the mem and divisor rules, jump
    # offsets 0/1 are in range, so only the opcode decides.
    p = prog([stmt(0, 1), stmt(RET | K), stmt(RET | K)])
    accepted = []
    for code in range(0x10000):
        p[0].code = code
        if lib.bsdbpf_validate(p, 3):
            accepted.append(code)
    assert accepted == sorted(VALID_OPCODES)


def test_validator_length_rules():
    assert lib.bsdbpf_validate(ffi.NULL, 0) == 1  # empty: FreeBSD "accept all"
    assert lib.bsdbpf_validate(ffi.NULL, -1) == 0
    assert lib.bsdbpf_validate(prog([stmt(RET | K, 1)]), -1) == 0
    assert validate([stmt(RET | K, 1)]) == 1
    assert validate([stmt(RET | A)]) == 1


@pytest.mark.parametrize("code", [RET | X, RET | X | A, ALU | lib.BPF_NEG | X, JMP | X])
def test_validator_rejects_near_miss_opcodes(code):
    assert validate([stmt(code), stmt(RET | K)]) == 0


def _jump_prog(kind: str, off: int, n: int = 6, at: int = 1):
    body = [stmt(LD | IMM, 0)] * at
    if kind == "ja":
        j = jump(JMP | lib.BPF_JA, off, 0, 0)
    elif kind == "jt":
        j = jump(JMP | lib.BPF_JEQ | K, 0, off, 0)
    else:
        j = jump(JMP | lib.BPF_JGT | X, 0, 0, off)
    rest = [stmt(RET | K, 100 + i) for i in range(n - at - 1)]
    return [*body, j, *rest]


@pytest.mark.parametrize("kind", ["ja", "jt", "jf"])
def test_validator_jump_bounds(kind):
    n, at = 6, 1
    edge = n - at - 1  # offset == len - i - 1 would land one past the end
    assert validate(_jump_prog(kind, edge, n, at)) == 0
    assert validate(_jump_prog(kind, edge + 1, n, at)) == 0
    ok = _jump_prog(kind, edge - 1, n, at)
    assert validate(ok) == 1
    # ...and it lands on the last instruction (JEQ 0 on A == 0 takes jt; JGT
    # X on 0 > 0 takes jf).
    assert run_both(ok) == 100 + (n - at - 2)


def test_validator_jump_huge_and_last():
    assert validate([jump(JMP | lib.BPF_JA, M32, 0, 0), stmt(RET | K)]) == 0
    assert validate([jump(JMP | lib.BPF_JA, 0, 0, 0), stmt(RET | K)]) == 1
    # A jump can never be the last instruction, even with offset 0.
    assert validate([stmt(RET | K), jump(JMP | lib.BPF_JA, 0, 0, 0)]) == 0
    assert validate([stmt(RET | K), jump(JMP | lib.BPF_JEQ | K, 0, 0, 0)]) == 0


def test_validator_jump_max_byte_offset():
    insns = [jump(JMP | lib.BPF_JEQ | K, 0, 255, 0)] + [stmt(RET | K, 1)] * 256
    assert validate(insns) == 1
    assert validate(insns[:-1]) == 0


@pytest.mark.parametrize("code", [ST, STX, LD | W | MEM, LDX | W | MEM])
def test_validator_memory_index(code):
    assert validate([stmt(code, 15), stmt(RET | K)]) == 1
    assert validate([stmt(code, 16), stmt(RET | K)]) == 0
    assert validate([stmt(code, M32), stmt(RET | K)]) == 0


@pytest.mark.parametrize("op", [lib.BPF_DIV, lib.BPF_MOD])
def test_validator_constant_division_by_zero(op):
    assert validate([stmt(ALU | op | K, 0), stmt(RET | A)]) == 0
    assert validate([stmt(ALU | op | K, 1), stmt(RET | A)]) == 1
    assert validate([stmt(ALU | op | X, 0), stmt(RET | A)]) == 1  # X: run time


def test_validator_last_instruction_must_be_ret():
    assert validate([stmt(RET | K), stmt(LD | IMM, 1)]) == 0
    assert validate([stmt(RET | K), stmt(MISC | lib.BPF_TAX)]) == 0
    assert validate([stmt(LD | IMM, 1), stmt(RET | A)]) == 1


def test_validator_bad_opcode_anywhere():
    good = [stmt(LD | IMM, 1), stmt(LD | IMM, 2), stmt(RET | A)]
    assert validate(good) == 1
    for i in range(2):
        bad = list(good)
        bad[i] = stmt(LD | H | IMM, 1)  # size H with mode IMM: not in the map
        assert validate(bad) == 0


# --------------------------------------------------------------------------
# Interpreter: ALU, jumps, registers, scratch memory
# --------------------------------------------------------------------------

def alu(op: int, a: int, x: int, src: int) -> int:
    k = x if src == K else 0
    insns = [stmt(LD | IMM, a), stmt(LDX | IMM, x), stmt(ALU | op | src, k), stmt(RET | A)]
    return run_both(insns)


ALU_CASES = [
    ("ADD", 0xFFFFFFFF, 2, 1),
    ("ADD", 5, 7, 12),
    ("SUB", 1, 2, 0xFFFFFFFF),
    ("SUB", 9, 4, 5),
    ("MUL", 0x10000, 0x10001, 0x10000),
    ("MUL", 0xFFFFFFFF, 0xFFFFFFFF, 1),
    ("DIV", 0xFFFFFFFF, 16, 0x0FFFFFFF),
    ("DIV", 7, 2, 3),
    ("MOD", 0xFFFFFFFF, 10, 5),
    ("MOD", 17, 5, 2),
    ("OR", 0xF0, 0x0F, 0xFF),
    ("AND", 0xF3, 0x3F, 0x33),
    ("XOR", 0xFF, 0x0F, 0xF0),
    ("LSH", 0x80000001, 1, 2),
    ("LSH", 1, 31, 0x80000000),
    ("RSH", 0x80000000, 31, 1),
    ("RSH", 0xF0, 4, 0x0F),
    # Shift counts >= 32: the engine uses count mod 32 (amd64 shl/shr).
    ("LSH", 1, 32, 1),
    ("LSH", 1, 33, 2),
    ("LSH", 3, 0xFFFFFFFF, 0x80000000),
    ("RSH", 0x80000000, 32, 0x80000000),
    ("RSH", 0x80000000, 36, 0x08000000),
]


@pytest.mark.parametrize("src", [K, X], ids=["K", "X"])
@pytest.mark.parametrize(("name", "a", "x", "want"), ALU_CASES)
def test_alu(name, a, x, want, src):
    assert alu(getattr(lib, "BPF_" + name), a, x, src) == want


@pytest.mark.parametrize("op", [lib.BPF_DIV, lib.BPF_MOD])
def test_division_by_x_zero_rejects_packet(op):
    # Continuing with A = 0 would return 1 here, not 0.
    insns = [stmt(LD | IMM, 7), stmt(LDX | IMM, 0), stmt(ALU | op | X),
             stmt(ALU | lib.BPF_ADD | K, 1), stmt(RET | A)]
    assert run_both(insns) == 0
    insns[1] = stmt(LDX | IMM, 3)
    assert run_both(insns) == (7 // 3 if op == lib.BPF_DIV else 7 % 3) + 1


@pytest.mark.parametrize(("a", "want"), [(1, M32), (0, 0), (0x80000000, 0x80000000), (M32, 1)])
def test_neg(a, want):
    assert run_both([stmt(LD | IMM, a), stmt(ALU | lib.BPF_NEG), stmt(RET | A)]) == want


JUMP_CASES = [
    ("JEQ", 5, 5, True), ("JEQ", 5, 6, False),
    ("JGT", 0x80000000, 1, True), ("JGT", 5, 5, False), ("JGT", 1, M32, False),
    ("JGE", 5, 5, True), ("JGE", M32, 0, True), ("JGE", 1, M32, False),
    ("JSET", 6, 2, True), ("JSET", 6, 9, False), ("JSET", 0x80000000, 0x80000000, True),
]


@pytest.mark.parametrize("src", [K, X], ids=["K", "X"])
@pytest.mark.parametrize(("name", "a", "b", "taken"), JUMP_CASES)
def test_conditional_jumps(name, a, b, taken, src):
    # jt skips 2, jf skips 1, so each branch lands on a distinct RET.
    k = b if src == K else 0
    insns = [stmt(LD | IMM, a), stmt(LDX | IMM, b),
             jump(JMP | getattr(lib, "BPF_" + name) | src, k, 2, 1),
             stmt(RET | K, 10), stmt(RET | K, 20), stmt(RET | K, 30)]
    assert run_both(insns) == (30 if taken else 20)


def test_ja():
    insns = [jump(JMP | lib.BPF_JA, 2, 0, 0), stmt(RET | K, 1), stmt(RET | K, 2),
             stmt(RET | K, 3)]
    assert run_both(insns) == 3
    insns[0] = jump(JMP | lib.BPF_JA, 0, 7, 7)  # jt/jf are ignored by JA
    assert run_both(insns) == 1


def test_ret_k_and_a():
    assert run_both([stmt(RET | K, 0xDEADBEEF)]) == 0xDEADBEEF
    assert run_both([stmt(RET | K, 0)]) == 0
    assert run_both([stmt(LD | IMM, 1234), stmt(RET | A)]) == 1234
    assert run_both([stmt(LD | IMM, 1234), stmt(RET | K, 9)]) == 9


def test_null_program_accepts_everything():
    assert lib.bsdbpf_filter(ffi.NULL, DATA, 10, 10) == M32
    assert lib.bsdbpf_filter_mbuf(ffi.NULL, DATA, 10, 10) == M32
    assert lib.bsdbpf_filter(ffi.NULL, ffi.NULL, 0, 0) == M32


@pytest.mark.parametrize("code", [RET | X, LD | H | IMM, 0x100 | RET | K, 0xFFFF])
def test_unknown_opcode_at_run_time_drops(code):
    insns = [stmt(LD | IMM, 5), stmt(code, 7), stmt(RET | K, 9)]
    assert run(insns, check_valid=False) == 0
    assert run(insns, check_valid=False, mbuf=True) == 0


def test_len_loads_wirelen_not_buflen():
    insns = [stmt(LD | W | LEN), stmt(LDX | W | LEN), stmt(ALU | lib.BPF_MUL | X), stmt(RET | A)]
    assert run_both(insns, buflen=10, wirelen=1500) == 1500 * 1500
    assert run_both([stmt(LD | W | LEN), stmt(RET | A)], buflen=0, wirelen=60) == 60


def test_tax_txa():
    assert run_both([stmt(LD | IMM, 42), stmt(MISC | lib.BPF_TAX), stmt(LD | IMM, 0),
                     stmt(MISC | lib.BPF_TXA), stmt(RET | A)]) == 42
    assert run_both([stmt(LDX | IMM, 17), stmt(LD | IMM, 3), stmt(MISC | lib.BPF_TXA),
                     stmt(RET | A)]) == 17


def test_scratch_memory():
    insns = [stmt(LD | IMM, 11), stmt(ST, 15), stmt(LDX | IMM, 22), stmt(STX, 0),
             stmt(LD | IMM, 0), stmt(LDX | IMM, 0),
             stmt(LD | MEM, 0), stmt(LDX | MEM, 15),        # A = 22, X = 11
             stmt(ALU | lib.BPF_LSH | K, 8), stmt(ALU | lib.BPF_OR | X),
             stmt(RET | A)]
    assert run_both(insns) == (22 << 8) | 11


def test_scratch_memory_starts_zeroed():
    fill = []
    for i in range(16):
        fill += [stmt(LD | IMM, 0xDEAD0000 | i), stmt(ST, i)]
    run_both([*fill, stmt(RET | K, 1)])  # leave junk where the next call's mem may lie
    read = [stmt(LD | IMM, 1)]
    for i in range(16):
        read += [stmt(LDX | MEM, i), stmt(ALU | lib.BPF_OR | X)]
    assert run_both([*read, stmt(RET | A)]) == 1


# --------------------------------------------------------------------------
# Packet loads at their bounds: contiguous buffer and mbuf path
# --------------------------------------------------------------------------

def load(code: int, k: int, x: int, buflen: int, *, mbuf: bool) -> int:
    """A preset to 0x55, X = x, then the load, then RET A."""
    insns = [stmt(LD | IMM, 0x55), stmt(LDX | IMM, x), stmt(code, k), stmt(RET | A)]
    return run(insns, buflen=buflen, mbuf=mbuf)


def word(off: int, n: int) -> int:
    return int.from_bytes(DATA[off:off + n], "big")


# (code, k, x, buflen, contiguous result, mbuf result); 0 = packet dropped,
# except where the mbuf LD H|ABS quirk makes A = 0.
LOAD_EDGES = [
    (LD | W | ABS, 6, 0, 10, word(6, 4), word(6, 4)),
    (LD | W | ABS, 7, 0, 10, 0, 0),
    (LD | W | ABS, 10, 0, 10, 0, 0),
    (LD | W | ABS, 11, 0, 10, 0, 0),
    (LD | W | ABS, 0xFFFFFFFE, 0, 10, 0, 0),
    (LD | W | ABS, 0, 0, 3, 0, 0),
    (LD | W | ABS, 0, 0, 4, word(0, 4), word(0, 4)),
    (LD | H | ABS, 8, 0, 10, word(8, 2), word(8, 2)),
    (LD | H | ABS, 9, 0, 10, 0, 0),
    (LD | H | ABS, 10, 0, 10, 0, 0),
    (LD | H | ABS, M32, 0, 10, 0, 0),
    (LD | B | ABS, 9, 0, 10, word(9, 1), word(9, 1)),
    (LD | B | ABS, 10, 0, 10, 0, 0),
    (LD | B | ABS, 0, 0, 0, 0, 0),
    (LD | B | ABS, M32, 0, 10, 0, 0),
    (LD | W | IND, 2, 4, 10, word(6, 4), word(6, 4)),
    (LD | W | IND, 3, 4, 10, 0, 0),
    (LD | W | IND, 0, 7, 10, 0, 0),
    (LD | W | IND, 11, 0, 10, 0, 0),
    (LD | H | IND, 4, 4, 10, word(8, 2), word(8, 2)),
    (LD | H | IND, 5, 4, 10, 0, 0),
    (LD | H | IND, 0, 11, 10, 0, 0),
    (LD | B | IND, 5, 4, 10, word(9, 1), word(9, 1)),
    (LD | B | IND, 6, 4, 10, 0, 0),
    (LD | B | IND, 0, 10, 10, 0, 0),
    (LD | B | IND, 10, 0, 10, 0, 0),
    # X + k wraps past 2^32: the buffer checks refuse it, but the mbuf path
    # adds in 32 bits and loads from the wrapped offset.
    (LD | W | IND, 5, M32, 10, 0, word(4, 4)),
    (LD | W | IND, 10, 0xFFFFFFFC, 10, 0, word(6, 4)),
    (LD | W | IND, 0, 0xFFFFFFFA, 10, 0, 0),
    (LD | H | IND, 0xFFFFFFF0, 0x11, 10, 0, word(1, 2)),
    (LD | H | IND, 0xFFFFFFF0, 0x19, 10, 0, 0),
    (LD | B | IND, M32, 9, 10, 0, word(8, 1)),
    (LD | B | IND, M32, M32, 10, 0, 0),
]


@pytest.mark.parametrize("edge", LOAD_EDGES)
def test_load_bounds(edge):
    code, k, x, buflen, want, want_mbuf = edge
    assert load(code, k, x, buflen, mbuf=False) == want
    assert load(code, k, x, buflen, mbuf=True) == want_mbuf


def msh(k: int, buflen: int, *, mbuf: bool) -> int:
    insns = [stmt(LDX | IMM, 0x77), stmt(LDX | B | MSH, k), stmt(MISC | lib.BPF_TXA),
             stmt(ALU | lib.BPF_ADD | K, 1), stmt(RET | A)]
    return run(insns, buflen=buflen, mbuf=mbuf)


@pytest.mark.parametrize("mbuf", [False, True], ids=["buffer", "mbuf"])
def test_ldx_msh(mbuf):
    data = bytes([0x45, 0xAB, 0x4F]) + DATA
    insns = [stmt(LDX | B | MSH, 0), stmt(MISC | lib.BPF_TXA), stmt(RET | A)]
    assert run(insns, data, buflen=3, mbuf=mbuf) == 20       # IPv4 IHL 5 -> 20
    insns[0] = stmt(LDX | B | MSH, 1)
    assert run(insns, data, buflen=3, mbuf=mbuf) == 0xB * 4  # only the low nibble
    insns[0] = stmt(LDX | B | MSH, 2)
    assert run(insns, data, buflen=3, mbuf=mbuf) == 60
    # Bounds: the last byte loads, one past it drops the packet (X+1 would be
    # returned otherwise).
    assert msh(9, 10, mbuf=mbuf) == (DATA[9] & 0xF) * 4 + 1
    assert msh(10, 10, mbuf=mbuf) == 0
    assert msh(M32, 10, mbuf=mbuf) == 0
    assert msh(0, 0, mbuf=mbuf) == 0


@pytest.mark.parametrize(("k", "buflen"), [(9, 10), (10, 10), (M32, 10), (0, 0), (0, 1)])
def test_mbuf_ld_h_abs_out_of_range_sets_a_zero_and_continues(k, buflen):
    # FreeBSD ignores m_xhalf()'s error for LD H|ABS: A = 0, execution goes on.
    insns = [stmt(LD | IMM, 7), stmt(LD | H | ABS, k), stmt(ALU | lib.BPF_ADD | K, 3),
             stmt(RET | A)]
    assert run(insns, buflen=buflen, mbuf=True) == 3
    assert run(insns, buflen=buflen, mbuf=False) == 0


@pytest.mark.parametrize(("code", "k", "x"), [
    (LD | W | ABS, 7, 0), (LD | B | ABS, 10, 0), (LD | W | IND, 3, 4),
    (LD | H | IND, 5, 4), (LD | B | IND, 6, 4), (LDX | B | MSH, 10, 0),
])
def test_mbuf_other_loads_out_of_range_drop_packet(code, k, x):
    # Unlike LD H|ABS, these stop the program with 0 on the mbuf path too.
    insns = [stmt(LD | IMM, 7), stmt(LDX | IMM, x), stmt(code, k),
             stmt(ALU | lib.BPF_ADD | K, 3), stmt(RET | K, 99)]
    assert run(insns, buflen=10, mbuf=True) == 0
    assert run(insns, buflen=10, mbuf=False) == 0
    insns[2] = stmt(code, k - 1)  # one byte earlier fits
    assert run(insns, buflen=10, mbuf=True) == 99
    assert run(insns, buflen=10, mbuf=False) == 99


def test_loads_are_big_endian_and_unsigned():
    data = bytes([0xFF, 0xFE, 0x80, 0x01, 0x7F])
    assert run_both([stmt(LD | W | ABS, 0), stmt(RET | A)], data) == 0xFFFE8001
    assert run_both([stmt(LD | H | ABS, 2), stmt(RET | A)], data) == 0x8001
    assert run_both([stmt(LD | B | ABS, 0), stmt(RET | A)], data) == 0xFF
    assert run_both([stmt(LDX | IMM, 1), stmt(LD | W | IND, 0), stmt(RET | A)], data) == 0xFE80017F


# --------------------------------------------------------------------------
# Randomised: a Python model of the machine, and the two entry points
# --------------------------------------------------------------------------

def model(insns, data: bytes, wirelen: int, *, mbuf: bool) -> tuple[int, bool]:
    """Spec section h in Python.  Returns (result, whether a load was out of
    range).  Shift counts are taken mod 32, as the engine documents."""
    a = x = 0
    mem = [0] * 16
    oob = False
    pc = 0

    def fetch(base: int, k: int, n: int) -> int | None:
        off = (base + k) & M32 if mbuf else base + k
        if off + n > len(data):
            return None
        return int.from_bytes(data[off:off + n], "big")

    sizes = {W: 4, H: 2, B: 1}
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 7
        if cls == RET:
            return (k if code & 0x18 == K else a), oob
        if cls in (LD, LDX):
            mode, size = code & 0xE0, code & 0x18
            if mode == IMM:
                v = k
            elif mode == MEM:
                v = mem[k]
            elif mode == LEN:
                v = wirelen
            else:
                base = x if mode == IND else 0
                v = fetch(base, k, sizes[size])
                if v is None:
                    oob = True
                    if mbuf and code == LD | H | ABS:
                        v = 0
                    else:
                        return 0, oob
                if mode == MSH:
                    v = (v & 0xF) << 2
            if cls == LD:
                a = v
            else:
                x = v
        elif cls == ST:
            mem[k] = a
        elif cls == STX:
            mem[k] = x
        elif cls == MISC:
            if code & 0xF8 == lib.BPF_TAX:
                x = a
            else:
                a = x
        elif cls == JMP:
            op = code & 0xF0
            b = x if code & 0x08 else k
            if op == lib.BPF_JA:
                pc += k
            else:
                cond = {lib.BPF_JEQ: a == b, lib.BPF_JGT: a > b,
                        lib.BPF_JGE: a >= b, lib.BPF_JSET: (a & b) != 0}[op]
                pc += jt if cond else jf
        else:  # ALU
            op = code & 0xF0
            b = x if code & 0x08 else k
            if op in (lib.BPF_DIV, lib.BPF_MOD) and b == 0:
                return 0, oob
            a = alu_model(op, a, b)


def alu_model(op: int, a: int, b: int) -> int:
    results = {
        lib.BPF_ADD: a + b, lib.BPF_SUB: a - b, lib.BPF_MUL: a * b,
        lib.BPF_DIV: a // b if b else 0, lib.BPF_MOD: a % b if b else 0,
        lib.BPF_OR: a | b, lib.BPF_AND: a & b, lib.BPF_XOR: a ^ b,
        lib.BPF_LSH: a << (b & 31), lib.BPF_RSH: a >> (b & 31), lib.BPF_NEG: -a,
    }
    return results[op] & M32


BODY_OPCODES = sorted(c for c in VALID_OPCODES if c & 7 != RET)
LOAD_OPCODES = [LD | W | ABS, LD | H | ABS, LD | B | ABS, LD | W | IND, LD | H | IND,
                LD | B | IND, LDX | B | MSH, LDX | W | IMM]
MEM_CODES = {ST, STX, LD | W | MEM, LDX | W | MEM}
# Values that make edges likely: equal small operands, shift counts around
# 32, and X + k sums that wrap past 2^32 back into a short packet.
small_or_edge = st.one_of(
    st.integers(0, 3),
    st.integers(0, 40),
    st.sampled_from([31, 32, 33, 63, M32, M32 - 1, M32 - 3, 0x80000000, 0xFFFFFFF0]),
    st.integers(0, M32),
)


WRAPS = [M32, M32 - 1, M32 - 3, 0xFFFFFFF0]  # X + k wraps back into a short packet


@st.composite
def cases(draw):
    """(program, packet, wirelen): a valid program of random non-RET opcodes
    with in-range forward jumps, then RET K or RET A.  Load offsets and
    LDX IMM values are mostly within or just past the packet, so that many
    runs get past their loads and the bounds edges are hit."""
    size = draw(st.integers(0, 48))
    data = draw(st.binary(min_size=size, max_size=size))
    near = st.integers(0, len(data) + 1)
    n = draw(st.integers(1, 24))
    insns = []
    for i in range(n - 1):
        code = draw(st.sampled_from(BODY_OPCODES) | st.sampled_from(BODY_OPCODES)
                    | st.sampled_from(LOAD_OPCODES))
        room = n - i - 2  # largest offset the validator allows here
        k = draw(small_or_edge)
        jt = jf = 0
        if code & 7 == JMP:
            if code == JMP | lib.BPF_JA:
                k = draw(st.integers(0, room))
            else:
                jt, jf = draw(st.integers(0, min(room, 255))), draw(st.integers(0, min(room, 255)))
        elif code in MEM_CODES:
            k = draw(st.integers(0, 15))
        elif code in (ALU | lib.BPF_DIV | K, ALU | lib.BPF_MOD | K) and k == 0:
            k = 1
        elif code in LOAD_OPCODES:
            pick = draw(st.integers(0, 9))  # mostly near, sometimes wrapping/wild
            k = draw(near if pick < 8 else st.sampled_from(WRAPS) if pick == 8 else small_or_edge)
        insns.append((code, jt, jf, k))
    insns.append(draw(st.sampled_from([(RET | A, 0, 0, 0)]) | st.builds(
        lambda k: (RET | K, 0, 0, k), small_or_edge)))
    return insns, data, draw(small_or_edge)


@settings(max_examples=500, deadline=None)
@given(case=cases())
def test_random_programs_match_model_and_entry_points_agree_in_range(case):
    insns, data, wirelen = case
    assert validate(insns) == 1
    p = prog(insns)
    buf = data + GUARD
    got = lib.bsdbpf_filter(p, buf, wirelen, len(data))
    got_mbuf = lib.bsdbpf_filter_mbuf(p, buf, wirelen, len(data))
    want, oob = model(insns, data, wirelen, mbuf=False)
    want_mbuf, oob_mbuf = model(insns, data, wirelen, mbuf=True)
    assert got == want
    assert got_mbuf == want_mbuf
    # The differential property: the paths differ only in out-of-range
    # handling, so a run in which no load left the packet gives one answer.
    if not oob and not oob_mbuf:
        assert got == got_mbuf


def rules_model(insns) -> int:
    """bpf_validate() restated from spec section h."""
    n = len(insns)
    for i, (code, jt, jf, k) in enumerate(insns):
        if code not in VALID_OPCODES:
            return 0
        if code & 7 == JMP:
            off = k if code == JMP | lib.BPF_JA else max(jt, jf)
            if off >= n - i - 1:
                return 0
        elif code in MEM_CODES:
            if k >= 16:
                return 0
        elif code in (ALU | lib.BPF_DIV | K, ALU | lib.BPF_MOD | K) and k == 0:
            return 0
    return int(insns[-1][0] & 7 == RET)


any_code = st.integers(0, 0xFFFF)
EDITS = ["none", "code", "ja", "jt", "jf", "mem", "div", "last"]


@st.composite
def edited_programs(draw):
    """A valid program with at most one edit placed at the edge of one of
    the validator's rules."""
    insns, _, _ = draw(cases())
    n = len(insns)
    i = draw(st.integers(0, n - 1))
    first_bad = n - i - 1  # smallest jump offset rejected at index i
    edge = st.sampled_from([max(first_bad - 1, 0), first_bad, first_bad + 1])
    code, jt, jf, k = insns[i]
    edit = draw(st.sampled_from(EDITS))
    if edit == "code":
        code = draw(any_code)
    elif edit == "ja":
        code, k = JMP | lib.BPF_JA, draw(edge | st.just(M32))
    elif edit in ("jt", "jf"):
        code = draw(st.sampled_from([c for c in VALID_OPCODES if c & 7 == JMP and c & 0xF0]))
        off = min(draw(edge), 255)
        other = draw(st.integers(0, off))
        jt, jf = (off, other) if edit == "jt" else (other, off)
    elif edit == "mem":
        code, k = draw(st.sampled_from(sorted(MEM_CODES))), draw(st.sampled_from([15, 16, M32]))
    elif edit == "div":
        op = draw(st.sampled_from([lib.BPF_DIV, lib.BPF_MOD]))
        code = ALU | op | draw(st.sampled_from([K, X]))
        k = draw(st.sampled_from([0, 1]))
    elif edit == "last":
        i, code = n - 1, draw(st.sampled_from(BODY_OPCODES))
    insns[i] = (code, jt, jf, k)
    return insns


@settings(max_examples=500, deadline=None)
@given(insns=edited_programs())
def test_random_programs_validator_matches_rules(insns):
    assert validate(insns) == rules_model(insns)
