"""Classic BPF filter programs: build, read, write, check and run them, and
compile tcpdump expressions.

A :class:`Program` is an immutable sequence of :class:`Instruction`. It can be
made from ``(code, jt, jf, k)`` tuples, from the text ``tcpdump -d``, ``-dd``
or ``-ddd`` prints (:meth:`Program.parse`), or from a tcpdump expression
(:func:`compile`, through libpcap), and printed back in any of those forms
(:meth:`Program.dump`).  :func:`validate` applies FreeBSD's ``bpf_validate``
and names the instruction and the rule where the kernel only says EINVAL.
:meth:`Program.run` runs it through the same C interpreter as the simulator.
"""

from __future__ import annotations

import errno
import re
import socket
import sys
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Union, cast, overload

from bsdbpf import _libpcap
from bsdbpf._native import ffi, lib
from bsdbpf.errors import FilterError, InvalidFilter, from_errno

__all__ = [
    "BPF_A", "BPF_ABS", "BPF_ADD", "BPF_ALU", "BPF_AND", "BPF_B", "BPF_DIV", "BPF_H",
    "BPF_IMM", "BPF_IND", "BPF_JA", "BPF_JEQ", "BPF_JGE", "BPF_JGT", "BPF_JMP", "BPF_JSET",
    "BPF_K", "BPF_LD", "BPF_LDX", "BPF_LEN", "BPF_LSH", "BPF_MEM", "BPF_MISC", "BPF_MOD",
    "BPF_MSH", "BPF_MUL", "BPF_NEG", "BPF_OR", "BPF_RET", "BPF_RSH", "BPF_ST", "BPF_STX",
    "BPF_SUB", "BPF_TAX", "BPF_TXA", "BPF_W", "BPF_X", "BPF_XOR",
    "DEFAULT_SNAPLEN",
    "Instruction",
    "Program",
    "as_program",
    "compile",
    "is_program_text",
    "validate",
]

# The instruction fields of <net/bpf.h>, to build programs by hand as in C:
# class, size, addressing mode, ALU operation, jump, source, and misc operation.
BPF_LD, BPF_LDX, BPF_ST, BPF_STX = lib.BPF_LD, lib.BPF_LDX, lib.BPF_ST, lib.BPF_STX
BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = lib.BPF_ALU, lib.BPF_JMP, lib.BPF_RET, lib.BPF_MISC
BPF_W, BPF_H, BPF_B = lib.BPF_W, lib.BPF_H, lib.BPF_B
BPF_IMM, BPF_ABS, BPF_IND = lib.BPF_IMM, lib.BPF_ABS, lib.BPF_IND
BPF_MEM, BPF_LEN, BPF_MSH = lib.BPF_MEM, lib.BPF_LEN, lib.BPF_MSH
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV = lib.BPF_ADD, lib.BPF_SUB, lib.BPF_MUL, lib.BPF_DIV
BPF_OR, BPF_AND, BPF_LSH, BPF_RSH = lib.BPF_OR, lib.BPF_AND, lib.BPF_LSH, lib.BPF_RSH
BPF_NEG, BPF_MOD, BPF_XOR = lib.BPF_NEG, lib.BPF_MOD, lib.BPF_XOR
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = (
    lib.BPF_JA, lib.BPF_JEQ, lib.BPF_JGT, lib.BPF_JGE, lib.BPF_JSET)
BPF_K, BPF_X, BPF_A, BPF_TAX, BPF_TXA = lib.BPF_K, lib.BPF_X, lib.BPF_A, lib.BPF_TAX, lib.BPF_TXA

#: tcpdump's default snapshot length: what ``ret`` returns for a match.
DEFAULT_SNAPLEN = 262144
#: FreeBSD's AF_INET6, in the header of a loopback (DLT_NULL) or pflog packet.
FREEBSD_AF_INET6 = 28
#: libpcap's PCAP_NETMASK_UNKNOWN: ``ip broadcast`` cannot be compiled with it.
NETMASK_UNKNOWN = 0xFFFFFFFF
U32 = 0xFFFFFFFF
PATHS = ("receive", "write")
_KEEP_ALIVE: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class _Fields(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


class Instruction(_Fields):
    """One ``struct bpf_insn``: ``code`` (u_short), ``jt`` and ``jf`` (the
    u_char offsets a conditional jump skips), ``k`` (u_int32).  A tuple, so it
    compares equal to ``(code, jt, jf, k)``."""

    __slots__ = ()

    def __new__(cls, code: int, jt: int = 0, jf: int = 0, k: int = 0) -> Instruction:
        if not all(isinstance(v, int) for v in (code, jt, jf, k)):
            raise _field_error(f"{(code, jt, jf, k)!r}: the fields are integers")
        if not (0 <= code <= 0xFFFF and 0 <= jt <= 0xFF and 0 <= jf <= 0xFF and 0 <= k <= U32):
            raise _field_error(f"{(code, jt, jf, k)!r}: code is a u_short (0..0xffff), jt and "
                               "jf u_chars (0..255), k a 32-bit unsigned int")
        return super().__new__(cls, int(code), int(jt), int(jf), int(k))

    @classmethod
    def stmt(cls, code: int, k: int = 0) -> Instruction:
        """An instruction that does not jump (C's ``BPF_STMT``)."""
        return cls(code, 0, 0, k)

    @classmethod
    def jump(cls, code: int, k: int, jt: int, jf: int) -> Instruction:
        """A jump (C's ``BPF_JUMP``): skip ``jt`` instructions if the
        comparison holds, ``jf`` if not."""
        return cls(code, jt, jf, k)

    def image(self, index: int) -> str:
        """This instruction as ``tcpdump -d`` prints it at ``index``."""
        return _image(self, index)

    def __repr__(self) -> str:
        return f"Instruction(0x{self.code:02x}, {self.jt}, {self.jf}, {self.k:#x})"


# An Instruction, a (code, jt, jf, k) tuple, or an object with those
# attributes (a struct bpf_insn cdata).
InstructionLike = Any
ReadableBuffer = Union[bytes, bytearray, memoryview]


def _field_error(what: str) -> InvalidFilter:
    return _invalid("bpf_insn", what, "field")


def _instruction(ins: InstructionLike) -> Instruction:
    if isinstance(ins, Instruction):
        return ins
    if hasattr(ins, "code"):  # struct bpf_insn cdata, or a look-alike
        return Instruction(ins.code, ins.jt, ins.jf, ins.k)
    try:
        code, jt, jf, k = ins
    except (TypeError, ValueError):
        raise _field_error(f"{ins!r}: an instruction is (code, jt, jf, k)") from None
    return Instruction(code, jt, jf, k)


class Program(Sequence[Instruction]):
    """A classic BPF program: an immutable, hashable, picklable sequence of
    :class:`Instruction`.  ``Program()`` is the empty program (no filter)."""

    __slots__ = ("_insns", "_verdict")

    def __init__(self, instructions: Iterable[InstructionLike] = ()) -> None:
        if isinstance(instructions, str):
            raise TypeError("Program() takes instructions; use Program.parse(text) for "
                            "tcpdump -d/-dd/-ddd text, or bsdbpf.filter.compile(expression)")
        insns = []
        for index, ins in enumerate(instructions):
            try:
                insns.append(_instruction(ins))
            except InvalidFilter as err:
                raise _invalid(err.op, f"instruction {index} {err.hint}", "field", index) from None
        self._insns = tuple(insns)
        self._verdict: tuple[int, int] | None = None  # bsdbpf_validate_rule's answer

    @classmethod
    def from_tuples(cls, tuples: Iterable[tuple[int, int, int, int]]) -> Program:
        """From ``(code, jt, jf, k)`` tuples, as ``tcpdump -dd`` writes them."""
        return cls(tuples)

    @classmethod
    def parse(cls, text: str) -> Program:
        """Read what ``tcpdump -d``, ``-dd`` or ``-ddd`` printed (the format is
        recognised from the first line).  Blank lines are ignored.

        :class:`bsdbpf.FilterError` names the line that does not parse.
        """
        lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
                 if line.strip()]
        if not lines:
            return cls()
        first = lines[0][1]
        if first.startswith("("):
            return cls(_parse_assembler(i, n, line) for i, (n, line) in enumerate(lines))
        if first.startswith("{"):
            return cls(_parse_c_array(n, line) for n, line in lines)
        return cls(_parse_decimal(lines))

    # -- the sequence ------------------------------------------------------

    def __len__(self) -> int:
        return len(self._insns)

    @overload
    def __getitem__(self, index: int) -> Instruction: ...
    @overload
    def __getitem__(self, index: slice) -> Program: ...
    def __getitem__(self, index: int | slice) -> Instruction | Program:
        if isinstance(index, slice):
            return Program(self._insns[index])
        return self._insns[index]

    def __iter__(self) -> Iterator[Instruction]:
        return iter(self._insns)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Program):
            return self._insns == other._insns
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._insns)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Program, (self._insns,))

    def __repr__(self) -> str:
        return f"Program.from_tuples({[tuple(i) for i in self._insns]!r})"

    # -- text --------------------------------------------------------------

    def dump(self, level: int = 1) -> str:
        """The program as ``tcpdump -d`` (level 1), ``-dd`` (2) or ``-ddd`` (3)
        prints it, byte for byte: one instruction a line, each line ending
        in a newline (write it as is: ``print(p.dump(), end="")``)."""
        if level == 1:
            lines = [_image(ins, i) for i, ins in enumerate(self._insns)]
        elif level == 2:
            lines = [f"{{ 0x{c:x}, {jt}, {jf}, 0x{k:08x} }}," for c, jt, jf, k in self._insns]
        elif level == 3:
            lines = [str(len(self._insns))] + [f"{c} {jt} {jf} {k}" for c, jt, jf, k in self._insns]
        else:
            raise ValueError(f"dump level {level!r}: 1 (-d, assembler), 2 (-dd, C array) "
                             "or 3 (-ddd, decimal)")
        return "".join(line + "\n" for line in lines)

    def __str__(self) -> str:
        return self.dump(1)

    # -- the kernel's view -------------------------------------------------

    def _rule(self) -> tuple[int, int]:
        """(BSDBPF_RULE_* or BSDBPF_VALID, index) from the C validator."""
        if self._verdict is None:
            where = ffi.new("int *")
            array, n = _c_array(self._insns)
            rule = lib.bsdbpf_validate_rule(array, n, where)
            self._verdict = (int(rule), int(where[0]))
        return self._verdict

    def bpf_program(self) -> Any:
        """A new ``struct bpf_program *`` for BIOCSETF, BIOCSETFNR or
        BIOCSETWF, pointing at a copy of the instructions that lives as long
        as the returned object.  An empty program has ``bf_insns == NULL``
        (BIOCSETF then removes the filter)."""
        prog = ffi.new("struct bpf_program *")
        prog.bf_len = len(self._insns)
        if self._insns:
            array, _ = _c_array(self._insns)
            prog.bf_insns = array
            _KEEP_ALIVE[prog] = array  # cffi's idiom: the struct owns the array
        else:
            prog.bf_insns = ffi.NULL
        return prog

    def run(self, packet: ReadableBuffer, wirelen: int | None = None,
            path: str = "receive") -> int:
        """What FreeBSD's ``bpf_filter()`` returns for ``packet``: the number
        of bytes to capture, 0 to drop it (0xffffffff for the empty program,
        the kernel's "no filter").

        ``wirelen`` is the length on the wire (default ``len(packet)``: LEN
        loads it).  ``path`` is ``"receive"``, the mbuf path most drivers tap
        (``bpf_mtap``), or ``"write"``, the contiguous-buffer path of the
        write filter and of ``bpf_tap``; they differ only when a load falls
        outside the packet (see the Filters page).  The program is validated
        first (:func:`validate`, without a length limit).
        """
        if path not in PATHS:
            raise ValueError(f"path={path!r}: 'receive' (mbuf chain) or 'write' (contiguous)")
        _check(self, None, "Program.run")
        data = ffi.from_buffer(packet)
        buflen = len(data)
        if wirelen is None:
            wirelen = buflen
        if not 0 <= wirelen <= U32 or buflen > U32:
            raise ValueError(f"wirelen={wirelen}: a 32-bit unsigned length is expected")
        # The interpreter trusts its program (scratch indexes, jumps): it runs
        # a copy of its own, validated again, so that no change to this
        # object's private state can make it run an unchecked one.
        insns, n = _c_array(self._insns)
        if n and not lib.bsdbpf_validate(insns, n):
            _check(Program(self._insns), None, "Program.run")
            raise _invalid("Program.run", "the program changed while it was run", "field")
        run = lib.bsdbpf_filter_mbuf if path == "receive" else lib.bsdbpf_filter
        return int(run(insns if n else ffi.NULL, data, wirelen, buflen))


def _c_array(instructions: Iterable[InstructionLike]) -> tuple[Any, int]:
    """A new ``struct bpf_insn[]`` holding ``instructions``, and their number."""
    rows = [tuple(i) for i in instructions]
    return ffi.new("struct bpf_insn[]", rows or 1), len(rows)


# -- the assembler -----------------------------------------------------------

# How tcpdump -d (libpcap's bpf_image) writes each opcode: mnemonic and
# operand, where {} is k in decimal (printed signed), {x} in hex.  Codes
# missing here print as "unimp 0xCODE" (LDX|LEN among them, as in libpcap).
_D, _H = "{}", "{x}"
_ALU_OPS = [("add", 0x00), ("sub", 0x10), ("mul", 0x20), ("div", 0x30), ("or", 0x40),
            ("and", 0x50), ("lsh", 0x60), ("rsh", 0x70), ("mod", 0x90), ("xor", 0xA0)]
_HEX_ALU = {"or", "and", "xor"}
_IMAGES: dict[int, tuple[str, str]] = {
    0x06: ("ret", "#" + _D), 0x16: ("ret", ""),
    0x20: ("ld", f"[{_D}]"), 0x28: ("ldh", f"[{_D}]"), 0x30: ("ldb", f"[{_D}]"),
    0x80: ("ld", "#pktlen"),
    0x40: ("ld", f"[x + {_D}]"), 0x48: ("ldh", f"[x + {_D}]"), 0x50: ("ldb", f"[x + {_D}]"),
    0x00: ("ld", "#0x" + _H), 0x01: ("ldx", "#0x" + _H),
    0xB1: ("ldxb", f"4*([{_D}]&0xf)"),
    0x60: ("ld", f"M[{_D}]"), 0x61: ("ldx", f"M[{_D}]"),
    0x02: ("st", f"M[{_D}]"), 0x03: ("stx", f"M[{_D}]"),
    0x05: ("ja", _D),
    0x84: ("neg", ""), 0x07: ("tax", ""), 0x87: ("txa", ""),
    **{0x05 | op: (name, "#0x" + _H) for name, op in
       [("jeq", 0x10), ("jgt", 0x20), ("jge", 0x30), ("jset", 0x40)]},
    **{0x0D | op: (name, "x") for name, op in
       [("jeq", 0x10), ("jgt", 0x20), ("jge", 0x30), ("jset", 0x40)]},
    **{0x04 | op: (name, "#0x" + _H if name in _HEX_ALU else "#" + _D) for name, op in _ALU_OPS},
    **{0x0C | op: (name, "x") for name, op in _ALU_OPS},
}
_JA = BPF_JMP | BPF_JA


def _signed(v: int) -> int:
    v &= U32
    return v - (1 << 32) if v & 0x80000000 else v


def _has_targets(code: int) -> bool:
    """bpf_image prints "jt N jf M" for class JMP unless the op is JA."""
    return code & 0x07 == 0x05 and code & 0xF0 != 0x00


def _image(ins: Instruction, n: int) -> str:
    code, jt, jf, k = ins
    mnemonic, operand = _IMAGES.get(code, ("unimp", f"0x{code:x}"))
    if code == _JA:
        operand = str(_signed(n + 1 + k))
    else:
        operand = operand.replace(_D, str(_signed(k))).replace(_H, f"{k:x}")
    if _has_targets(code):
        return f"({n:03d}) {mnemonic:<8} {operand:<16} jt {n + 1 + jt}\tjf {n + 1 + jf}"
    return f"({n:03d}) {mnemonic:<8} {operand}"


def _operand_pattern(operand: str) -> re.Pattern[str]:
    """A regex for one operand form, matched with all blanks removed."""
    text = re.escape(operand.replace(" ", ""))
    text = text.replace(re.escape(_D), r"(-?\d+)").replace(re.escape(_H), r"([0-9a-fA-F]+)")
    return re.compile(text + r"\Z")


_PARSERS: dict[str, list[tuple[re.Pattern[str], int, int]]] = {}
for _code, (_mnemonic, _operand) in _IMAGES.items():
    _PARSERS.setdefault(_mnemonic, []).append(
        (_operand_pattern(_operand), _code, 16 if _H in _operand else 10))
_LINE = re.compile(r"\((\d+)\)\s+(\S+)\s*(.*?)(?:\s+jt\s+(-?\d+)\s+jf\s+(-?\d+))?\s*\Z")


def _parse_error(n: int, line: str, why: str) -> FilterError:
    return cast(FilterError, from_errno(errno.EINVAL, "Program.parse", cls=FilterError,
                                        hint=f"line {n} {line!r}: {why}"))


def _parse_assembler(position: int, n: int, line: str) -> Instruction:
    m = _LINE.match(line)
    if m is None:
        raise _parse_error(n, line, "expected tcpdump -d's form: (INDEX) OP OPERAND")
    index, mnemonic, operand = int(m[1]), m[2], re.sub(r"\s", "", m[3])
    if index != position:
        raise _parse_error(n, line, f"({index:03d}) where ({position:03d}) was expected")
    if mnemonic == "unimp":
        found = re.fullmatch(r"0x([0-9a-fA-F]+)", operand)
        code, k = (int(found[1], 16), 0) if found else (-1, 0)
    else:
        code, k = -1, 0
        for pattern, candidate, base in _PARSERS.get(mnemonic, []):
            found = pattern.match(operand)
            if found:
                code = candidate
                k = int(found[1], base) if found.groups() else 0
                break
    if code < 0 or code > 0xFFFF:
        raise _parse_error(n, line, f"no BPF instruction is written {mnemonic} {operand}")
    if code == _JA:
        k -= index + 1
    jt = jf = 0
    if _has_targets(code):
        if m[4] is None:
            raise _parse_error(n, line, "a conditional jump needs its 'jt N jf M' targets")
        jt, jf = int(m[4]) - index - 1, int(m[5]) - index - 1
        if not (0 <= jt <= 0xFF and 0 <= jf <= 0xFF):
            raise _parse_error(n, line, "jump targets lie 1 to 256 instructions ahead")
    elif m[4] is not None:
        raise _parse_error(n, line, f"{mnemonic} does not take jump targets")
    return Instruction(code, jt, jf, k & U32)


def _parse_c_array(n: int, line: str) -> Instruction:
    m = re.fullmatch(r"\{\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*\}\s*,?", line)
    if m is None:
        raise _parse_error(n, line, "expected tcpdump -dd's form: { code, jt, jf, k },")
    try:
        return Instruction(*(int(v, 0) for v in m.groups()))
    except ValueError as err:
        raise _parse_error(n, line, str(err)) from None


def _parse_decimal(lines: list[tuple[int, str]]) -> list[Instruction]:
    (n, first), body = lines[0], lines[1:]
    if not first.isdigit():
        raise _parse_error(n, first, "not tcpdump -d (\"(000) ...\"), -dd (\"{ ... },\") "
                           "or -ddd (a count, then one \"code jt jf k\" line each) output")
    if int(first) != len(body):
        raise _parse_error(n, first, f"the count says {first} instructions, {len(body)} follow")
    insns = []
    for n, line in body:
        fields = line.split()
        if len(fields) != 4 or not all(f.isdigit() for f in fields):
            raise _parse_error(n, line, "expected tcpdump -ddd's form: code jt jf k")
        insns.append(Instruction(*(int(f) for f in fields)))
    return insns


# -- validation ----------------------------------------------------------------

_RULES = {
    lib.BSDBPF_RULE_OPCODE: "opcode",
    lib.BSDBPF_RULE_JUMP: "jump",
    lib.BSDBPF_RULE_MEMWORD: "memory",
    lib.BSDBPF_RULE_DIVZERO: "division",
    lib.BSDBPF_RULE_LAST_RET: "last-ret",
}


def _explain(rule: int, index: int, ins: Instruction, size: int) -> str:
    code, jt, jf, k = ins
    if rule == lib.BSDBPF_RULE_OPCODE:
        return (f"0x{code:x} is not one of the 49 opcodes bpf_validate accepts "
                "(see the table on the Filters page)")
    if rule == lib.BSDBPF_RULE_JUMP:
        target = index + 1 + (k if code == _JA else max(jt, jf))
        return (f"it jumps to instruction {target}, past the last one ({size - 1}); jumps go "
                "forward, to an instruction of the program")
    if rule == lib.BSDBPF_RULE_MEMWORD:
        return f"scratch memory has 16 words, M[0] to M[15]; k is {k}"
    if rule == lib.BSDBPF_RULE_DIVZERO:
        return "it divides by the constant 0"
    return "the last instruction must be a ret (ret #k or ret), so that every path returns"


def _invalid(op: str, hint: str, rule: str, index: int | None = None) -> InvalidFilter:
    err = cast(InvalidFilter, from_errno(errno.EINVAL, op, cls=InvalidFilter, hint=hint))
    err.rule, err.index = rule, index
    return err


def explain_rejection(program: Program, op: str) -> None:
    """After the kernel's EINVAL from ``op`` (BIOCSETF...), raise the
    InvalidFilter that names the instruction and rule if bpf_validate is the
    reason; return if the program passes it."""
    _check(program, None, op)


def _check(program: Program, maxinsns: int | None, op: str) -> None:
    """Raise InvalidFilter (for ``op``) where the kernel would say EINVAL."""
    if maxinsns is not None and len(program) > maxinsns:
        raise _invalid(op, f"the program has {len(program)} instructions; the kernel accepts "
                       f"at most {maxinsns} (net.bpf.maxinsns)", "length")
    rule, index = program._rule()
    if rule == lib.BSDBPF_VALID:
        return
    ins = program[index]
    line = " ".join(_image(ins, index).split())
    raise _invalid(op, f"instruction {index} `{line}` {tuple(ins)}: "
                   f"{_explain(rule, index, ins, len(program))}", _RULES[rule], index)


def validate(program: Program | Iterable[InstructionLike], maxinsns: int | None = 512) -> Program:
    """Check ``program`` as FreeBSD's kernel does before installing it: no
    more than ``maxinsns`` instructions (``net.bpf.maxinsns``; None: no
    limit), then ``bpf_validate``'s rules, in its order.

    Returns the program (as a :class:`Program`); raises
    :class:`bsdbpf.InvalidFilter` naming the instruction's index, the
    instruction as ``tcpdump -d`` prints it, and the rule it breaks.
    """
    prog = program if isinstance(program, Program) else Program(program)
    _check(prog, maxinsns, "bpf_validate")
    return prog


def is_program_text(text: str) -> bool:
    """Whether ``text`` is ``tcpdump -d``/``-dd``/``-ddd`` output rather than
    an expression: it starts with ``(000) op``, ``{`` or a count line."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return bool(re.match(r"\(\d+\)\s*[a-z]|\{|\d+\Z", first))


def as_program(
    spec: Program | Iterable[InstructionLike] | str | None,
    dlt: int = lib.DLT_EN10MB,
    snaplen: int = DEFAULT_SNAPLEN,
) -> Program:
    """A Program from whatever a filter may be given as: a Program,
    ``(code, jt, jf, k)`` instructions, the text ``tcpdump -d``, ``-dd`` or
    ``-ddd`` prints, or a tcpdump expression (compiled for ``dlt`` and
    ``snaplen``).  None is the empty program."""
    if isinstance(spec, Program):
        return spec
    if isinstance(spec, str):
        if is_program_text(spec):
            return Program.parse(spec)
        return compile(spec, dlt=dlt, snaplen=snaplen)
    return Program(spec or ())


def compile(  # shadows the builtin inside this module only: libpcap's name
    expression: str,
    dlt: int = lib.DLT_EN10MB,
    snaplen: int = DEFAULT_SNAPLEN,
    optimize: bool = True,
    netmask: int = NETMASK_UNKNOWN,
) -> Program:
    """Compile a tcpdump filter expression for link type ``dlt`` with
    libpcap's ``pcap_compile``, as ``tcpdump -d -y DLT -s SNAPLEN`` does.

    ``netmask`` is the IPv4 netmask ``ip broadcast`` needs (default: unknown).
    The program is for FreeBSD wherever it is compiled: on a loopback link
    type (``DLT_NULL``, ``DLT_LOOP``, ``DLT_ENC``) and on ``DLT_PFLOG`` it
    tests FreeBSD's AF_INET6, 28, where libpcap elsewhere tests its own
    host's (Linux's 10).
    A bad expression raises :class:`bsdbpf.FilterError` with libpcap's
    message; without libpcap, :class:`bsdbpf.UnsupportedError` says which
    package to install.
    """
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a str, not {type(expression).__name__}")
    if not 0 <= snaplen <= 0x7FFFFFFF:
        raise ValueError(f"snaplen={snaplen}: between 0 and 2**31 - 1")
    if not 0 <= netmask <= U32:
        raise ValueError(f"netmask={netmask:#x}: a 32-bit IPv4 netmask")
    insns = _libpcap.compile_expression(expression, dlt, snaplen, optimize, netmask)
    return Program(_freebsd_address_family(insns, dlt))


# Where a link type's header holds an address family: the load libpcap reads
# it with, and whether it is a word in host byte order (which BPF loads
# big-endian).  DLT_NULL and DLT_ENC: a host-order word; DLT_LOOP: a word in
# network order; DLT_PFLOG: struct pfloghdr's af byte.
_FAMILY_FIELDS = {
    lib.DLT_NULL: ((BPF_LD | BPF_W | BPF_ABS, 0), True),
    lib.DLT_ENC: ((BPF_LD | BPF_W | BPF_ABS, 0), True),
    lib.DLT_LOOP: ((BPF_LD | BPF_W | BPF_ABS, 0), False),
    lib.DLT_PFLOG: ((BPF_LD | BPF_B | BPF_ABS, 1), False),
}


def _freebsd_address_family(
    insns: list[tuple[int, int, int, int]], dlt: int,
) -> list[tuple[int, int, int, int]]:
    """Loopback and pflog headers carry an address family, and libpcap
    compares it with the AF_INET6 of the host it runs on: Linux's 10, macOS's
    30.  The program is for FreeBSD, whose AF_INET6 is 28: rewrite each
    ``jeq`` of the host's value that tests the family field, loaded as in
    ``_FAMILY_FIELDS``, on every path to it."""
    if dlt not in _FAMILY_FIELDS:
        return insns
    load_family, host_order = _FAMILY_FIELDS[dlt]
    host, freebsd = int(socket.AF_INET6), FREEBSD_AF_INET6
    if host_order:
        host, freebsd = (int.from_bytes(af.to_bytes(4, sys.byteorder), "big")
                         for af in (host, freebsd))
    if host == freebsd:
        return insns
    jeq_k = BPF_JMP | BPF_JEQ | BPF_K
    # holds[i]: A holds the family field on every path into i (None: no path yet).
    # Programs only jump forward, so one pass in order sees every path first.
    holds: list[bool | None] = [False] + [None] * (len(insns) - 1)
    out = list(insns)
    for i, (code, jt, jf, k) in enumerate(insns):
        here = holds[i]
        if here is None:
            continue  # unreachable
        cls = code & 0x07  # BPF_CLASS()
        if (code, k) == load_family:
            after = True
        elif cls in (BPF_LD, BPF_ALU) or code == BPF_MISC | BPF_TXA:
            after = False
        else:
            after = here
        if code == jeq_k and here and k == host:
            out[i] = (code, jt, jf, freebsd)
        if cls == BPF_RET:
            nexts: tuple[int, ...] = ()
        elif cls == BPF_JMP:
            nexts = (i + 1 + k,) if code == _JA else (i + 1 + jt, i + 1 + jf)
        else:
            nexts = (i + 1,)
        for n in nexts:
            if n < len(insns):
                holds[n] = after if holds[n] is None else bool(holds[n]) and after
    return out
