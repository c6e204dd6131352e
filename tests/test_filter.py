"""bsdbpf.filter without libpcap: Instruction and Program, the three tcpdump
text forms, validate() naming the rule, run() on both kernel paths, and
programs installed on a simulated descriptor."""

from __future__ import annotations

import copy
import errno
import gc
import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sim_kernel
from hypothesis import given, settings
from hypothesis import strategies as st

from bsdbpf import Descriptor, FilterError, InvalidFilter, InvalidStateError
from bsdbpf import filter as bpf_filter
from bsdbpf._native import ffi, lib
from bsdbpf.errors import from_errno
from bsdbpf.filter import Instruction, Program, as_program, is_program_text, validate
from bsdbpf.sim import Kernel

SPEC_JSON = Path(__file__).resolve().parent / "data" / "freebsd-abi.json"
VALID_OPCODES = json.loads(SPEC_JSON.read_text())["derived"]["bpf_validate_valid_opcodes"]
M32 = 0xFFFFFFFF
RET_K, RET_A = lib.BPF_RET | lib.BPF_K, lib.BPF_RET | lib.BPF_A
LDH_ABS = lib.BPF_LD | lib.BPF_H | lib.BPF_ABS
JEQ_K = lib.BPF_JMP | lib.BPF_JEQ | lib.BPF_K

# `tcpdump -d -y EN10MB 'tcp port 80'` (tcpdump 4.99, libpcap 1.10): the
# program, then exactly what -d, -dd and -ddd print for it.
TCP_PORT_80 = [
    (0x28, 0, 0, 12), (0x15, 0, 6, 0x86DD), (0x30, 0, 0, 20), (0x15, 0, 15, 6),
    (0x28, 0, 0, 54), (0x15, 12, 0, 80), (0x28, 0, 0, 56), (0x15, 10, 11, 80),
    (0x15, 0, 10, 0x800), (0x30, 0, 0, 23), (0x15, 0, 8, 6), (0x28, 0, 0, 20),
    (0x45, 6, 0, 0x1FFF), (0xB1, 0, 0, 14), (0x48, 0, 0, 14), (0x15, 2, 0, 80),
    (0x48, 0, 0, 16), (0x15, 0, 1, 80), (0x6, 0, 0, 262144), (0x6, 0, 0, 0),
]
TCP_PORT_80_D = """\
(000) ldh      [12]
(001) jeq      #0x86dd          jt 2\tjf 8
(002) ldb      [20]
(003) jeq      #0x6             jt 4\tjf 19
(004) ldh      [54]
(005) jeq      #0x50            jt 18\tjf 6
(006) ldh      [56]
(007) jeq      #0x50            jt 18\tjf 19
(008) jeq      #0x800           jt 9\tjf 19
(009) ldb      [23]
(010) jeq      #0x6             jt 11\tjf 19
(011) ldh      [20]
(012) jset     #0x1fff          jt 19\tjf 13
(013) ldxb     4*([14]&0xf)
(014) ldh      [x + 14]
(015) jeq      #0x50            jt 18\tjf 16
(016) ldh      [x + 16]
(017) jeq      #0x50            jt 18\tjf 19
(018) ret      #262144
(019) ret      #0
"""
TCP_PORT_80_DD_HEAD = "{ 0x28, 0, 0, 0x0000000c },\n{ 0x15, 0, 6, 0x000086dd },\n"
TCP_PORT_80_DDD_HEAD = "20\n40 0 0 12\n21 0 6 34525\n"

# Every other form bpf_image has, with what libpcap 1.10 prints at index 7.
IMAGES = [
    ((0x00, 0, 0, 0xFFFFFFFF), "(007) ld       #0xffffffff"),
    ((0x01, 0, 0, 5), "(007) ldx      #0x5"),
    ((0x02, 0, 0, 15), "(007) st       M[15]"),
    ((0x03, 0, 0, M32), "(007) stx      M[-1]"),
    ((0x04, 0, 0, 0x80000000), "(007) add      #-2147483648"),
    ((0x05, 0, 0, 5), "(007) ja       13"),
    ((0x05, 0, 0, M32), "(007) ja       7"),
    ((0x06, 0, 0, M32), "(007) ret      #-1"),
    ((0x07, 0, 0, 0), "(007) tax      "),
    ((0x0C, 0, 0, 0), "(007) add      x"),
    ((0x16, 0, 0, 0), "(007) ret      "),
    ((0x1D, 3, 250, 0), "(007) jeq      x                jt 11\tjf 258"),
    ((0x20, 0, 0, M32), "(007) ld       [-1]"),
    ((0x40, 0, 0, 5), "(007) ld       [x + 5]"),
    ((0x45, 0, 0, 0x1FFF), "(007) jset     #0x1fff          jt 8\tjf 8"),
    ((0x50, 0, 0, 2), "(007) ldb      [x + 2]"),
    ((0x54, 0, 0, 0xFF), "(007) and      #0xff"),
    ((0x61, 0, 0, 3), "(007) ldx      M[3]"),
    ((0x74, 0, 0, 33), "(007) rsh      #33"),
    ((0x80, 0, 0, 0), "(007) ld       #pktlen"),
    ((0x81, 0, 0, 0), "(007) unimp    0x81"),  # LDX|LEN: bpf_image has no name for it
    ((0x84, 0, 0, 0), "(007) neg      "),
    ((0x87, 0, 0, 0), "(007) txa      "),
    ((0x94, 0, 0, 7), "(007) mod      #7"),
    ((0xA4, 0, 0, 7), "(007) xor      #0x7"),
    ((0xB1, 0, 0, 14), "(007) ldxb     4*([14]&0xf)"),
    ((0x0E, 0, 0, 0), "(007) unimp    0xe"),
    ((0x55, 1, 2, 0), "(007) unimp    0x55             jt 9\tjf 10"),  # class JMP, op 0x50
    ((0xFFFF, 0, 0, 0), "(007) unimp    0xffff"),
]


# --------------------------------------------------------------------------
# Instruction and Program as values
# --------------------------------------------------------------------------

def test_instruction_is_a_checked_tuple() -> None:
    ins = Instruction(0x15, 1, 2, 0x800)
    assert ins == (0x15, 1, 2, 0x800)
    assert (ins.code, ins.jt, ins.jf, ins.k) == (0x15, 1, 2, 0x800)
    assert Instruction.jump(0x15, 0x800, 1, 2) == ins
    assert Instruction.stmt(RET_K, 96) == (RET_K, 0, 0, 96)
    assert hash(ins) == hash((0x15, 1, 2, 0x800))
    assert pickle.loads(pickle.dumps(ins)) == ins
    assert type(pickle.loads(pickle.dumps(ins))) is Instruction
    assert repr(ins) == "Instruction(0x15, 1, 2, 0x800)"
    assert ins.image(7) == "(007) jeq      #0x800           jt 9\tjf 10"


@pytest.mark.parametrize("fields", [
    (0x10000, 0, 0, 0), (-1, 0, 0, 0), (6, 256, 0, 0), (6, 0, -1, 0), (6, 0, 0, 1 << 32),
    (6, 0, 0, -1), (6.0, 0, 0, 0), ("6", 0, 0, 0),
])
def test_instruction_fields_out_of_range(fields) -> None:
    with pytest.raises(InvalidFilter) as info:
        Instruction(*fields)
    assert info.value.errno == errno.EINVAL
    assert info.value.rule == "field"


def test_program_is_an_immutable_hashable_picklable_sequence() -> None:
    p = Program.from_tuples(TCP_PORT_80)
    assert len(p) == 20
    assert p[0] == Instruction(0x28, 0, 0, 12)
    assert p[-1] == (RET_K, 0, 0, 0)
    assert isinstance(p[0], Instruction)
    assert list(p) == TCP_PORT_80
    assert p[:2] == Program(TCP_PORT_80[:2])
    assert isinstance(p[:2], Program)
    assert p == Program(p) == Program(Instruction(*t) for t in TCP_PORT_80)
    assert p != Program(TCP_PORT_80[:-1])
    assert p != TCP_PORT_80
    assert hash(p) == hash(Program(TCP_PORT_80))
    assert len({p, Program(TCP_PORT_80), Program()}) == 2
    assert pickle.loads(pickle.dumps(p)) == p
    assert copy.deepcopy(p) == p
    assert eval(repr(p), {"Program": Program}) == p
    assert len(Program()) == 0
    with pytest.raises(AttributeError):
        p.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        p[0] = (6, 0, 0, 1)  # type: ignore[index]


def test_program_from_cdata_and_objects() -> None:
    arr = ffi.new("struct bpf_insn[]", [(0x28, 0, 0, 12), (RET_K, 0, 0, 1)])

    class Look:
        code, jt, jf, k = RET_A, 0, 0, 0

    assert Program(arr) == Program([(0x28, 0, 0, 12), (RET_K, 0, 0, 1)])
    assert Program([Look()]) == Program([(RET_A, 0, 0, 0)])


def test_program_names_the_bad_instruction() -> None:
    with pytest.raises(InvalidFilter, match=r"Instruction 1 \(6, 256, 0, 0\)") as info:
        Program([(RET_K, 0, 0, 1), (RET_K, 256, 0, 0)])
    assert (info.value.index, info.value.rule) == (1, "field")
    with pytest.raises(InvalidFilter, match=r"Instruction 0 .*an instruction is"):
        Program([(6, 0, 0)])
    with pytest.raises(TypeError, match=r"Program\.parse"):
        Program("(000) ret #0")


def test_bpf_program_points_at_the_instructions() -> None:
    p = Program.from_tuples(TCP_PORT_80)
    bp = p.bpf_program()
    assert bp.bf_len == 20
    assert [(i.code, i.jt, i.jf, i.k) for i in bp.bf_insns[0:20]] == TCP_PORT_80
    assert ffi.typeof(bp) is ffi.typeof("struct bpf_program *")
    empty = Program().bpf_program()
    assert (empty.bf_len, empty.bf_insns) == (0, ffi.NULL)


def test_bpf_program_is_a_copy_that_outlives_the_program() -> None:
    p = Program([(0x60, 0, 0, 3), (RET_A, 0, 0, 0)])
    assert p.run(b"") == 0
    bp = p.bpf_program()
    bp.bf_insns[0].k = 1 << 20  # written through the pointer: the Program is not changed
    assert p[0] == (0x60, 0, 0, 3)
    assert p.run(b"") == 0
    assert p.bpf_program().bf_insns[0].k == 3
    del p
    gc.collect()
    assert [(i.code, i.k) for i in bp.bf_insns[0:2]] == [(0x60, 1 << 20), (RET_A, 0)]


# --------------------------------------------------------------------------
# tcpdump -d, -dd, -ddd
# --------------------------------------------------------------------------

def test_dump_prints_what_tcpdump_prints() -> None:
    p = Program.from_tuples(TCP_PORT_80)
    assert p.dump(1) == TCP_PORT_80_D == str(p)
    assert p.dump() == p.dump(1)
    dd, ddd = p.dump(2), p.dump(3)
    assert dd.startswith(TCP_PORT_80_DD_HEAD)
    assert dd.endswith("{ 0x6, 0, 0, 0x00000000 },\n")
    assert ddd.startswith(TCP_PORT_80_DDD_HEAD)
    assert ddd.endswith("6 0 0 262144\n6 0 0 0\n")
    assert len(dd.splitlines()) == 20
    assert len(ddd.splitlines()) == 21
    assert Program().dump(1) == ""
    assert Program().dump(3) == "0\n"
    with pytest.raises(ValueError, match="dump level 4"):
        p.dump(4)


@pytest.mark.parametrize(("fields", "text"), IMAGES)
def test_image_of_each_form(fields, text) -> None:
    assert Instruction(*fields).image(7) == text


def test_index_widens_past_999() -> None:
    p = Program([(0x05, 0, 0, 0)] * 1000 + [(RET_K, 0, 0, 1)])
    assert p.dump(1).splitlines()[-1] == "(1000) ret      #1"


@pytest.mark.parametrize("level", [1, 2, 3])
def test_parse_round_trips_tcpdump_text(level) -> None:
    p = Program.from_tuples(TCP_PORT_80)
    assert Program.parse(p.dump(level)) == p


def test_parse_accepts_pasted_text() -> None:
    # Indented, blank lines, spaces where tcpdump writes a tab, CRLF.
    text = "\r\n  (000) ldh [12]\r\n\r\n(001) jeq #0x800 jt 2 jf 3\n(002) ret #-1\n(003) ret\n"
    assert Program.parse(text) == Program(
        [(LDH_ABS, 0, 0, 12), (JEQ_K, 0, 1, 0x800), (RET_K, 0, 0, M32), (RET_A, 0, 0, 0)])
    assert Program.parse("{0x6,0,0,0x60}") == Program([(RET_K, 0, 0, 0x60)])
    assert Program.parse("1\n6 0 0 96") == Program([(RET_K, 0, 0, 96)])
    assert Program.parse("") == Program() == Program.parse("0\n")


@pytest.mark.parametrize(("text", "message"), [
    ("(000) ldq [12]", "Line 1 .*no BPF instruction is written ldq"),
    ("(000) ld [x + y]", "no BPF instruction is written ld"),
    ("(000) jeq #0x800\n", "needs its 'jt N jf M' targets"),
    ("(000) ret #1 jt 1 jf 1", "ret does not take jump targets"),
    ("(000) ret #1\n(002) ret #2", r"Line 2 .*\(002\) where \(001\) was expected"),
    ("(000) jeq #0x1 jt 0 jf 1\n(001) ret #0", "1 to 256 instructions ahead"),
    ("(000) jeq #0x1 jt 1 jf 258\n(001) ret #0", "1 to 256 instructions ahead"),
    ("(000) unimp 0x10000", "no BPF instruction"),
    ("{ 0x6, 0, 0 },", "Line 1 .*code, jt, jf, k"),
    ("{ 0x6, 0, 0, 0x1ffffffff },", "k a 32-bit"),
    ("{ 0x6, 0, 0, zz },", "Line 1"),
    ("2\n6 0 0 1\n", "the count says 2 instructions, 1 follow"),
    ("1\n6 0 0\n", "Line 2 .*code jt jf k"),
    ("ret #1", "not tcpdump -d"),
])
def test_parse_errors_name_the_line(text, message) -> None:
    with pytest.raises(FilterError, match=message) as info:
        Program.parse(text)
    assert info.value.errno == errno.EINVAL


def unused_fields_zeroed(p: Program) -> Program:
    """What the assembler keeps: jt/jf only for conditional jumps, k only
    where the operand shows it (libpcap's bpf_image prints no k for RET A,
    TAX, TXA, NEG, LEN loads, X-operand ALU and jumps, or unknown codes)."""
    out = []
    for code, jt, jf, k in p:
        text = Instruction(code, 0, 0, 0x5A5A5).image(0)
        shows_k = "0x5a5a5" in text or "370085" in text
        jumps = code & 7 == lib.BPF_JMP and code & 0xF0 != lib.BPF_JA
        out.append((code, jt if jumps else 0, jf if jumps else 0,
                    k if shows_k or code == lib.BPF_JMP | lib.BPF_JA else 0))
    return Program(out)


@st.composite
def any_programs(draw):
    n = draw(st.integers(0, 40))
    code = st.sampled_from(VALID_OPCODES) | st.integers(0, 0xFFFF)
    k = st.integers(0, M32) | st.integers(0, 64) | st.sampled_from([M32, 0x80000000, 0x7FFFFFFF])
    return Program([(draw(code), draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(k))
                    for _ in range(n)])


@settings(max_examples=300, deadline=None)
@given(p=any_programs())
def test_parse_round_trips_any_program(p) -> None:
    assert Program.parse(p.dump(2)) == p
    assert Program.parse(p.dump(3)) == p
    assert Program.parse(p.dump(1)) == unused_fields_zeroed(p)
    assert Program.parse(p.dump(1)).dump(1) == p.dump(1)


# --------------------------------------------------------------------------
# validate(): bpf_validate, naming the rule
# --------------------------------------------------------------------------

def rejected(insns, maxinsns: int | None = 512) -> InvalidFilter:
    with pytest.raises(InvalidFilter) as info:
        validate(insns, maxinsns)
    assert info.value.errno == errno.EINVAL
    assert info.value.op == "bpf_validate"
    return info.value


def test_validate_returns_the_program() -> None:
    assert validate(TCP_PORT_80) == Program(TCP_PORT_80)
    p = Program(TCP_PORT_80)
    assert validate(p) is p
    assert validate([]) == Program()  # the kernel's "accept all"


@pytest.mark.parametrize(("insns", "index", "rule", "message"), [
    ([(0x0E, 0, 0, 0), (RET_K, 0, 0, 0)], 0, "opcode",
     r"Instruction 0 `\(000\) unimp 0xe` \(14, 0, 0, 0\): 0xe is not one of the 49 opcodes"),
    ([(RET_K, 0, 0, 0), (0x106, 0, 0, 0)], 1, "opcode", "0x106 is not one of the 49"),
    ([(0x00, 0, 0, 0), (0x05, 0, 0, 1), (RET_K, 0, 0, 0)], 1, "jump",
     r"`\(001\) ja 3`.*jumps to instruction 3, past the last one \(2\)"),
    ([(JEQ_K, 0, 2, 0), (RET_K, 0, 0, 0), (RET_K, 0, 0, 1)], 0, "jump",
     r"`\(000\) jeq #0x0 jt 1 jf 3`.*jumps to instruction 3"),
    ([(RET_K, 0, 0, 0), (JEQ_K, 0, 0, 0)], 1, "jump", "jumps to instruction 2"),
    ([(lib.BPF_ST, 0, 0, 16), (RET_K, 0, 0, 0)], 0, "memory",
     r"`\(000\) st M\[16\]`.*16 words, M\[0\] to M\[15\]; k is 16"),
    ([(0x00, 0, 0, 0), (0x61, 0, 0, M32), (RET_A, 0, 0, 0)], 1, "memory", "k is 4294967295"),
    ([(0x34, 0, 0, 0), (RET_A, 0, 0, 0)], 0, "division", r"`\(000\) div #0`.*constant 0"),
    ([(0x94, 0, 0, 0), (RET_A, 0, 0, 0)], 0, "division", r"`\(000\) mod #0`"),
    ([(LDH_ABS, 0, 0, 12)], 0, "last-ret", r"`\(000\) ldh \[12\]`.*last instruction must be a ret"),
    # The first broken rule in the kernel's order is the one reported.
    ([(RET_K, 0, 0, 0), (lib.BPF_ST, 0, 0, 99), (0x0E, 0, 0, 0)], 1, "memory", "k is 99"),
])
def test_validate_names_instruction_and_rule(insns, index, rule, message) -> None:
    err = rejected(insns)
    assert (err.index, err.rule) == (index, rule)
    with pytest.raises(InvalidFilter, match=message):
        validate(insns)


def test_invalid_filter_pickles_with_index_and_rule() -> None:
    err = rejected([(lib.BPF_ST, 0, 0, 16), (RET_K, 0, 0, 0)])
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is InvalidFilter
    assert (back.errno, back.op, back.hint, back.index, back.rule) == (
        err.errno, err.op, err.hint, 0, "memory")
    assert str(back) == str(err)


def test_validate_length_limit() -> None:
    prog = [(RET_K, 0, 0, 1)] * 513
    err = rejected(prog)
    assert (err.index, err.rule) == (None, "length")
    assert "513 instructions; the kernel accepts at most 512 (net.bpf.maxinsns)" in str(err)
    assert rejected(prog[:4], maxinsns=3).rule == "length"
    assert len(validate(prog, maxinsns=None)) == 513
    assert len(validate(prog, maxinsns=513)) == 513


RULES = {lib.BSDBPF_RULE_OPCODE: "opcode", lib.BSDBPF_RULE_JUMP: "jump",
         lib.BSDBPF_RULE_MEMWORD: "memory", lib.BSDBPF_RULE_DIVZERO: "division",
         lib.BSDBPF_RULE_LAST_RET: "last-ret"}
MEM_CODES = {lib.BPF_ST, lib.BPF_STX, 0x60, 0x61}


def first_broken_rule(insns) -> tuple[int | None, str | None]:
    """bpf_validate's checks restated from spec section h, in its order."""
    n = len(insns)
    for i, (code, jt, jf, k) in enumerate(insns):
        if code not in VALID_OPCODES:
            return i, "opcode"
        if code & 7 == lib.BPF_JMP:
            if (k if code == 0x05 else max(jt, jf)) >= n - i - 1:
                return i, "jump"
        elif code in MEM_CODES and k >= 16:
            return i, "memory"
        elif code in (0x34, 0x94) and k == 0:
            return i, "division"
    if n and insns[-1][0] & 7 != lib.BPF_RET:
        return n - 1, "last-ret"
    return None, None


@st.composite
def near_valid_programs(draw):
    """Programs of valid-looking instructions with fields at the rules' edges."""
    n = draw(st.integers(1, 12))
    insns = []
    for i in range(n):
        code = draw(st.sampled_from(VALID_OPCODES) | st.sampled_from([0x0E, 0x18, 0x100]))
        room = n - i - 1
        edge = st.sampled_from([0, max(room - 1, 0), room, room + 1])
        k = draw(st.sampled_from([0, 1, 15, 16, M32]) | edge)
        jt, jf = draw(st.integers(0, 255) | edge), draw(st.integers(0, 255) | edge)
        insns.append((code, min(jt, 255), min(jf, 255), k))
    return insns


@settings(max_examples=400, deadline=None)
@given(insns=near_valid_programs())
def test_validate_reports_the_first_broken_rule(insns) -> None:
    index, rule = first_broken_rule(insns)
    if rule is None:
        assert validate(insns) == Program(insns)
    else:
        err = rejected(insns)
        assert (err.index, err.rule) == (index, rule)
    assert lib.bsdbpf_validate(Program(insns).bpf_program().bf_insns, len(insns)) == (rule is None)


def test_c_validator_reports_index_and_rule() -> None:
    where = ffi.new("int *")
    p = Program([(RET_K, 0, 0, 0), (0x0E, 0, 0, 0)])
    assert lib.bsdbpf_validate_rule(p.bpf_program().bf_insns, 2, where) == lib.BSDBPF_RULE_OPCODE
    assert where[0] == 1
    assert lib.bsdbpf_validate_rule(ffi.NULL, -1, where) == lib.BSDBPF_RULE_LENGTH
    assert where[0] == -1
    assert lib.bsdbpf_validate_rule(ffi.NULL, 0, where) == lib.BSDBPF_VALID
    assert set(RULES) == {2, 3, 4, 5, 6}


# --------------------------------------------------------------------------
# run(): the simulator's interpreter, validated first
# --------------------------------------------------------------------------

def test_run_returns_the_filters_result() -> None:
    tcp80 = Program.from_tuples(TCP_PORT_80)
    eth_ip_tcp = (b"\x00" * 12 + b"\x08\x00" + b"\x45" + b"\x00" * 8 + b"\x06" + b"\x00" * 10
                  + b"\x04\xd2\x00\x50" + b"\x00" * 16)
    assert tcp80.run(eth_ip_tcp) == 262144
    assert tcp80.run(eth_ip_tcp, path="write") == 262144
    assert tcp80.run(eth_ip_tcp.replace(b"\x00\x50", b"\x00\x51")) == 0
    assert tcp80.run(bytearray(eth_ip_tcp)) == 262144
    assert tcp80.run(memoryview(eth_ip_tcp)) == 262144
    assert Program([(0x80, 0, 0, 0), (RET_A, 0, 0, 0)]).run(b"abc", wirelen=1500) == 1500
    assert Program([(0x80, 0, 0, 0), (RET_A, 0, 0, 0)]).run(b"abc") == 3
    assert Program().run(b"abc") == M32  # no filter: the whole packet


def test_run_validates_first() -> None:
    # Unvalidated, this program would index scratch memory with k = 2**32 - 1.
    bad = Program([(0x60, 0, 0, M32), (RET_A, 0, 0, 0)])
    with pytest.raises(InvalidFilter, match="k is 4294967295") as info:
        bad.run(b"x" * 64)
    assert (info.value.op, info.value.rule) == ("Program.run", "memory")
    with pytest.raises(InvalidFilter, match="jumps to instruction"):
        Program([(0x05, 0, 0, 10**6), (RET_K, 0, 0, 1)]).run(b"")
    # No length limit: that is the kernel's net.bpf.maxinsns, checked at install.
    assert Program([(0x00, 0, 0, 1)] * 600 + [(RET_A, 0, 0, 0)]).run(b"") == 1


TAMPERED = """
import sys
from bsdbpf import InvalidFilter
from bsdbpf.filter import Program
bad = [(0x02, 0, 0, 10**8), (0x16, 0, 0, 0)]  # st M[100000000]
good = Program([(0x02, 0, 0, 3), (0x16, 0, 0, 0)])
good.run(b"x")
class Trusting(Program):
    def _rule(self):
        return (0, 0)
swapped = Program(good)
swapped.run(b"x")
swapped._insns = tuple(Program(bad))  # validated once, then changed
forged = Program(bad)
forged._verdict = (0, 0)
for p in (Trusting(bad), swapped, forged):
    try:
        p.run(b"x" * 64)
    except InvalidFilter as err:
        print(err.rule, err.index)
"""


def test_run_never_runs_an_unchecked_program() -> None:
    """Whatever is done to a Program's private state (a forged verdict, a
    subclass's, instructions swapped after validation), run() validates the
    very copy it hands the interpreter, which trusts it (here: a scratch
    index 10**8 would write far outside its stack)."""
    proc = subprocess.run([sys.executable, "-c", TAMPERED], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (proc.returncode, proc.stdout.split("\n")) == (0, ["memory 0"] * 3 + [""])


def test_run_arguments() -> None:
    p = Program([(RET_K, 0, 0, 1)])
    with pytest.raises(ValueError, match="path='mbuf'"):
        p.run(b"", path="mbuf")
    with pytest.raises(ValueError, match="wirelen=-1"):
        p.run(b"", wirelen=-1)
    with pytest.raises(ValueError, match="wirelen"):
        p.run(b"", wirelen=1 << 32)
    with pytest.raises(TypeError):
        p.run("text")  # type: ignore[arg-type]


def ldh_then_add(k: int) -> Program:
    return Program([(0x00, 0, 0, 7), (LDH_ABS, 0, 0, k), (0x04, 0, 0, 3), (RET_A, 0, 0, 0)])


@pytest.mark.parametrize("k", [9, 10, M32])
def test_receive_path_ldh_out_of_range_reads_zero_and_goes_on(k) -> None:
    # FreeBSD's mbuf path ignores m_xhalf()'s error for LD H|ABS: A = 0.
    pkt = bytes(range(1, 11))
    assert ldh_then_add(k).run(pkt, path="receive") == 3
    assert ldh_then_add(k).run(pkt, path="write") == 0
    assert ldh_then_add(8).run(pkt, path="receive") == ldh_then_add(8).run(pkt, path="write") \
        == 0x090A + 3


@pytest.mark.parametrize(("code", "x", "k", "offset", "size"), [
    (0x40, M32, 5, 4, 4),              # ld [x + 5] with X = -1: word at 4
    (0x48, 0xFFFFFFF0, 0x11, 1, 2),    # ldh: halfword at 1
    (0x50, M32, 9, 8, 1),              # ldb: byte at 8
])
def test_receive_path_x_plus_k_wraps(code, x, k, offset, size) -> None:
    # The mbuf path adds X + k in 32 bits and loads from the wrapped offset;
    # the contiguous path checks the true sum and drops the packet.
    pkt = bytes(range(0x10, 0x1A))
    p = Program([(0x01, 0, 0, x), (code, 0, 0, k), (RET_A, 0, 0, 0)])
    assert p.run(pkt, path="receive") == int.from_bytes(pkt[offset:offset + size], "big")
    assert p.run(pkt, path="write") == 0


@pytest.mark.parametrize("code", [0x20, 0x30, 0x40, 0x48, 0x50, 0xB1])
def test_both_paths_drop_on_other_out_of_range_loads(code) -> None:
    p = Program([(0x00, 0, 0, 7), (code, 0, 0, 10), (RET_K, 0, 0, 99)])
    for path in ("receive", "write"):
        assert p.run(bytes(10), path=path) == 0
        last = 10 - {0x20: 4, 0x40: 4, 0x48: 2}.get(code, 1)  # the last k that fits
        assert Program([(0x00, 0, 0, 7), (code, 0, 0, last),
                        (RET_K, 0, 0, 99)]).run(bytes(10), path=path) == 99


# --------------------------------------------------------------------------
# On a simulated descriptor
# --------------------------------------------------------------------------

@pytest.fixture
def kernel() -> Iterator[Kernel]:
    with sim_kernel("em0") as k:
        yield k


def frame(ethertype: int, size: int = 64) -> bytes:
    head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + ethertype.to_bytes(2, "big")
    return head + bytes(size - len(head))


ETHERTYPE_IS = Program([(LDH_ABS, 0, 0, 12), (JEQ_K, 0, 1, 0x88B5), (RET_K, 0, 0, 64),
                        (RET_K, 0, 0, 0)])


def captured(d: Descriptor) -> list[bytes]:
    return [bytes(p.data) for p in d.packets(timeout=0)]


def test_program_on_a_descriptor(kernel: Kernel) -> None:
    with Descriptor.open("em0", filter=ETHERTYPE_IS, zerocopy=False, immediate=True,
                         system=kernel) as d:
        assert d.filter == ETHERTYPE_IS
        for ethertype in (0x88B5, 0x0800, 0x88B5, 0x86DD):
            kernel.inject("em0", frame(ethertype))
        assert captured(d) == [frame(0x88B5)] * 2


def test_set_filter_text_and_tuples(kernel: Kernel) -> None:
    with Descriptor.open("em0", zerocopy=False, immediate=True, system=kernel) as d:
        d.set_filter(Program.parse(ETHERTYPE_IS.dump(2)))
        assert d.filter == ETHERTYPE_IS
        d.filter = list(ETHERTYPE_IS)
        assert isinstance(d.filter, Program)
        assert d.filter == ETHERTYPE_IS
        d.set_filter(None)
        assert d.filter is None
        d.set_filter(Program())
        assert d.filter is None


def test_set_filter_flush_false_keeps_buffered_packets(kernel: Kernel) -> None:
    with Descriptor.open("em0", zerocopy=False, immediate=True, system=kernel) as d:
        kernel.inject("em0", frame(0x0800))
        d.set_filter(ETHERTYPE_IS, flush=False)  # BIOCSETFNR
        kernel.inject("em0", frame(0x0800))
        kernel.inject("em0", frame(0x88B5))
        assert d.stats().recv == 3
        assert captured(d) == [frame(0x0800), frame(0x88B5)]
        kernel.inject("em0", frame(0x88B5))
        d.set_filter(ETHERTYPE_IS)  # BIOCSETF: flushes and zeroes the counters
        assert d.stats().recv == 0
        assert captured(d) == []


def test_write_filter_program(kernel: Kernel) -> None:
    with Descriptor.open("em0", zerocopy=False, system=kernel) as d:
        d.write_filter = ETHERTYPE_IS
        assert d.write_filter == ETHERTYPE_IS
        assert d.write(frame(0x88B5)) == 64
        with pytest.raises(PermissionError):
            d.write(frame(0x0800))


def test_kernels_einval_names_the_rule(kernel: Kernel) -> None:
    with Descriptor.open("em0", zerocopy=False, system=kernel) as d:
        with pytest.raises(InvalidFilter, match=r"Instruction 1 `\(001\) ja 3`") as info:
            d.set_filter([(0x00, 0, 0, 0), (0x05, 0, 0, 1), (RET_K, 0, 0, 0)])
        assert (info.value.errno, info.value.op) == (errno.EINVAL, "BIOCSETF")
        assert (info.value.index, info.value.rule) == (1, "jump")
        assert isinstance(info.value.__context__, InvalidFilter)  # the kernel's own EINVAL
        with pytest.raises(InvalidFilter, match="0xe is not one of") as info:
            d.write_filter = [(0x0E, 0, 0, 0)]
        assert (info.value.op, info.value.rule) == ("BIOCSETWF", "opcode")


def test_kernels_einval_for_length_points_to_validate(kernel: Kernel) -> None:
    kernel.sysctlbyname("net.bpf.maxinsns", (2).to_bytes(4, sys.byteorder))
    with Descriptor.open("em0", zerocopy=False, system=kernel) as d:
        with pytest.raises(InvalidFilter) as info:
            d.set_filter([(RET_K, 0, 0, 1)] * 3)
        err = info.value
        assert (err.op, err.index, err.rule) == ("BIOCSETF", None, None)
        assert "net.bpf.maxinsns" in err.hint
        with pytest.raises(InvalidFilter, match="at most 2"):
            validate([(RET_K, 0, 0, 1)] * 3, maxinsns=2)


@pytest.mark.parametrize("op", ["BIOCSETF", "BIOCSETFNR", "BIOCSETWF"])
def test_einval_hint_points_to_validate(op) -> None:
    # What FreeBSD's EINVAL becomes when validate() finds nothing (too long,
    # or bf_insns not readable): a hint naming the function that explains.
    err = from_errno(errno.EINVAL, op)
    assert isinstance(err, InvalidFilter)
    assert "net.bpf.maxinsns" in err.hint
    assert "bsdbpf.filter.validate(program) names the instruction and the rule" in err.hint
    assert callable(validate)


def test_bad_instruction_fields_are_refused_before_the_kernel(kernel: Kernel) -> None:
    with Descriptor.open("em0", zerocopy=False, system=kernel) as d:
        with pytest.raises(InvalidFilter, match="Instruction 1") as info:
            d.set_filter([(RET_K, 0, 0, 1), (RET_K, 256, 0, 0)])
        assert (info.value.op, info.value.rule, info.value.index) == ("BIOCSETF", "field", 1)


@pytest.mark.parametrize(("text", "is_program"), [
    (TCP_PORT_80_D, True), (TCP_PORT_80_DD_HEAD, True), (TCP_PORT_80_DDD_HEAD, True),
    ("\n  (000) ret #0\n", True), ("0\n", True),
    ("tcp port 80", False), ("(tcp or udp) and port 53", False), ("( 1 = 1 )", False),
    ("ether[0] & 1 != 0", False), ("", False),
])
def test_is_program_text(text, is_program) -> None:
    assert is_program_text(text) is is_program


def test_as_program_takes_every_form() -> None:
    p = Program.from_tuples(TCP_PORT_80)
    assert as_program(p) is p
    assert as_program(TCP_PORT_80) == p
    assert as_program(p.dump(1)) == as_program(p.dump(2)) == as_program(p.dump(3)) == p
    assert as_program(None) == Program() == as_program([])


def test_tcpdump_text_on_a_descriptor(kernel: Kernel) -> None:
    # Pasted `tcpdump -dd` output is a program, not an expression: no libpcap,
    # and it can be given before the descriptor is attached.
    with Descriptor.open("em0", filter=ETHERTYPE_IS.dump(2), zerocopy=False, immediate=True,
                         system=kernel) as d:
        assert d.filter == ETHERTYPE_IS
        kernel.inject("em0", frame(0x0800))
        kernel.inject("em0", frame(0x88B5))
        assert captured(d) == [frame(0x88B5)]
        d.set_filter(ETHERTYPE_IS.dump(1))
        d.write_filter = ETHERTYPE_IS.dump(3)
        assert d.filter == d.write_filter == ETHERTYPE_IS
    with Descriptor(system=kernel) as d:
        d.set_filter(ETHERTYPE_IS.dump(1))
        assert d.filter == ETHERTYPE_IS


def test_expression_needs_an_attached_descriptor(kernel: Kernel) -> None:
    with Descriptor(system=kernel) as d, pytest.raises(InvalidStateError, match="attach first"):
        d.set_filter("tcp port 80")


def test_open_refuses_a_program_and_a_snaplen(kernel: Kernel) -> None:
    with pytest.raises(ValueError, match="give a program or a snaplen"):
        Descriptor.open("em0", filter=ETHERTYPE_IS, snaplen=96, system=kernel)


def test_instruction_fields_are_the_c_names() -> None:
    """bsdbpf.filter has every instruction field of <net/bpf.h> under its C name."""
    fields = [n for n in bpf_filter.__all__ if n.startswith("BPF_")]
    assert len(fields) == 38
    assert {n: getattr(bpf_filter, n) for n in fields} == {n: getattr(lib, n) for n in fields}
    assert bpf_filter.BPF_LD | bpf_filter.BPF_H | bpf_filter.BPF_ABS == 0x28  # ldh [k]
