"""The RTL controller's rule engine: the op registry's rules compiled to microcode.

The rules (``codesign.ops.expr``) are hundreds of 64-bit comparisons, sums and products
of descriptor fields. Spelled as one combinational expression per rule (as the C++ check
is, where HLS schedules and shares the operators) they would be ~130 wide multipliers and
a priority chain two hundred deep in the controller: more DSPs than a small part has, and
more than Yosys's mux-tree pass can walk. The controller therefore runs them as a program
on one small 64-bit ALU, one rule after another, the first failing rule's error code
being the result, as in :func:`codesign.ops.check_blob`.

Machine: 16 registers of 64 bits; an instruction is ``op dst, a, b, imm``. ``a`` and
``b`` select a register, a descriptor field (zero- or sign-extended, as the field's kind
says), a latched header word, the layer's task or the run's task; ``b`` may instead be
the instruction's signed immediate. Arithmetic is two's complement on 64 bits, the
same as the C++ (``-fwrapv``) and the Python checks, whose rules keep every value far
from overflow. The engine is a pipeline of four stages (fetch, operands read, selected,
executed) taking an instruction a cycle; a result reaches the operand stage of an
instruction four issue slots after its own (written to the register file a cycle after
it executes, read from there: no forwarding multiplexer in front of the operand's zero
test), so the compiler schedules each op's rules together, filling the slots a
rule's chain of results would leave empty with other rules' instructions, and writes
the empty slots it cannot fill into the next instruction's ``wait`` field: the pipeline
detects no hazard. ASSERTs keep the rules' order, so the first failing rule still
answers. A multiply holds the pipeline one cycle more per four bits of ``b`` up to its
top one (no DSP), a divisibility test 65 more (magnitudes, then one remainder bit per
cycle). The cycles depend only on the Program, so the cycle model charges exactly what
:func:`verdict` counts.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from functools import lru_cache

from .expr import (
    Bin,
    C,
    CeilDiv,
    Cmp,
    Divides,
    Expr,
    F,
    FmtPart,
    H,
    Logic,
    Not,
    OneOf,
    P,
    Rule,
)

#: operation codes of the engine (the SV decodes these names)
OPCODES = (
    "END",  # no rule failed: result 0
    "ASSERT",  # if a == 0 and b != 0: result imm, stop
    "LDI",  # dst = imm (b selects the immediate)
    "ADD",
    "SUB",
    "MUL",  # low 64 bits, up to 17 extra cycles
    "SRA",  # a >>> b
    "LT",
    "LE",
    "GT",
    "GE",
    "EQ",
    "NE",
    "AND",  # logical
    "OR",  # logical
    "FMTW",  # width field of a format word: a[7:0]
    "FMTF",  # fraction field: signed a[15:8]
    "FMTOK",  # a well-formed format word
    "FMTB",  # signed bits a value of the format needs: a[7:0] + !a[16]
    "FMTO",  # overflow mode: a[22:20]
    "DIVIDES",  # b != 0 and a % b == 0, 65 extra cycles (magnitudes, then 64 steps)
)
OP = {name: code for code, name in enumerate(OPCODES)}
OP_BITS = 5

#: operand kinds (bits [9:7] of a selector; bits [6:0] index)
SRC_REG, SRC_IMM, SRC_FIELD_U, SRC_FIELD_S, SRC_HDR_U, SRC_HDR_S, SRC_TASK, SRC_RUN_TASK = range(8)
SEL_BITS = 10
REGISTERS = 16
IMM_BITS = 48
WAIT_BITS = 2  # empty issue slots before an instruction (the scheduler's, not a hazard check)
BASE_CYCLES = 1  # an issue slot
START_CYCLES = 1  # the first fetch
DRAIN_CYCLES = 2  # the last instruction's operand selection and execution
DEPENDENT_SLOTS = 4  # issue slots from an instruction to the first that may read its result
EXTRA_CYCLES = {"DIVIDES": 65}  # MUL: 3a, then one per 4 bits of b up to its top one
LOOKAHEAD_RULES = 6  # rules past the oldest unfinished one the scheduler may take from
RESERVED_REGISTERS = 6  # kept for the oldest unfinished rule when taking from later ones
_COMMUTATIVE = {"ADD", "MUL", "EQ", "NE", "AND", "OR"}
_SWAPPED = {"LT": "GT", "LE": "GE", "GT": "LT", "GE": "LE", "EQ": "EQ", "NE": "NE"}
_CMP = {"<": "LT", "<=": "LE", ">": "GT", ">=": "GE", "==": "EQ", "!=": "NE"}
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
            "==": operator.eq, "!=": operator.ne}  # fmt: skip
UNSIGNED = ("u", "p")


class MicrocodeError(ValueError):
    """A rule the engine cannot run (a constant too wide, a division by a non-power of two)."""


@dataclass(frozen=True)
class Instr:
    op: str
    dst: int = 0
    a: int = 0  # selector
    b: int = 0  # selector
    imm: int = 0
    wait: int = 0  # empty issue slots before this instruction

    def word(self) -> int:
        """The ROM word: {wait, op, dst, a, b, imm} (imm two's complement)."""
        if not 0 <= self.wait < 1 << WAIT_BITS:
            raise MicrocodeError(f"{self.wait} empty slots do not fit the {WAIT_BITS}-bit wait")
        imm = self.imm & ((1 << IMM_BITS) - 1)
        word = (self.wait << OP_BITS) | OP[self.op]
        for value, bits in ((self.dst, 4), (self.a, SEL_BITS), (self.b, SEL_BITS), (imm, IMM_BITS)):
            word = (word << bits) | value
        return word


WORD_BITS = WAIT_BITS + OP_BITS + 4 + 2 * SEL_BITS + IMM_BITS


@dataclass(frozen=True)
class _Step:
    """An instruction before scheduling: results in virtual registers (each written once);
    operands ("v", register) or ("s", selector)."""

    op: str
    dst: int | None
    a: tuple
    b: tuple
    imm: int
    rule: int

    def reads(self) -> list[int]:
        return list(dict.fromkeys(ref[1] for ref in (self.a, self.b) if ref[0] == "v"))


def sel(kind: int, index: int = 0) -> int:
    if not 0 <= index < 128:
        raise MicrocodeError(f"operand index {index} does not fit the engine's 7-bit selector")
    return (kind << 7) | index


IMM = sel(SRC_IMM)


class _Compiler:
    def __init__(self, params: dict, kinds: dict[str, str], fields: dict[str, int],
                 header_words: dict[str, tuple[int, bool]]):  # fmt: skip
        self.params = params
        self.kinds = kinds
        self.fields = fields
        self.header = header_words  # name -> (selector index, signed)
        self.code: list[_Step] = []
        self.registers = 0  # virtual registers used
        self.rule_index = 0

    # -- registers: virtual, each written once; the scheduler maps them onto the 16
    def alloc(self) -> int:
        self.registers += 1
        return self.registers - 1

    # -- constants
    def const(self, node: Expr):
        """The value of a node made of constants and kernel parameters only, else None."""
        if isinstance(node, C):
            return node.value
        if isinstance(node, P):
            value = self.params[node.name]
            return int(value) if not isinstance(value, tuple) else None
        if isinstance(node, Bin):
            a, b = self.const(node.a), self.const(node.b)
            if a is None or b is None:
                return None
            return a + b if node.op == "+" else a - b if node.op == "-" else a * b
        if isinstance(node, (Cmp, Logic)):  # a guard on kernel parameters folds away
            a, b = self.const(node.a), self.const(node.b)
            if a is None or b is None:
                return None
            if isinstance(node, Logic):
                return int(bool(a) and bool(b)) if node.op == "&&" else int(bool(a) or bool(b))
            return int(_COMPARE[node.op](a, b))
        return None

    # -- operands: ("imm", value) | ("reg", r) | ("src", selector)
    def selector(self, operand) -> tuple:
        return ("v", operand[1]) if operand[0] == "reg" else ("s", operand[1])

    def in_reg_or_src(self, operand):
        if operand[0] != "imm":
            return operand
        reg = self.alloc()
        self.emit("LDI", reg, ("s", 0), ("s", IMM), operand[1])
        return ("reg", reg)

    def emit(self, op: str, dst: int | None, a: tuple, b: tuple, imm: int = 0) -> None:
        if not -(1 << (IMM_BITS - 1)) <= imm < (1 << (IMM_BITS - 1)):
            raise MicrocodeError(f"constant {imm} does not fit the {IMM_BITS}-bit immediate")
        self.code.append(_Step(op, dst, a, b, imm, self.rule_index))

    def binary(self, op: str, x, y):
        """dst = op(x, y); x must not be an immediate (swapped or loaded if it is)."""
        if x[0] == "imm" and y[0] != "imm" and (op in _COMMUTATIVE or op in _SWAPPED):
            x, y, op = y, x, _SWAPPED.get(op, op)
        x = self.in_reg_or_src(x)
        dst = self.alloc()
        if y[0] == "imm":
            self.emit(op, dst, self.selector(x), ("s", IMM), y[1])
        else:
            self.emit(op, dst, self.selector(x), self.selector(y))
        return ("reg", dst)

    def unary(self, op: str, x):
        x = self.in_reg_or_src(x)
        dst = self.alloc()
        self.emit(op, dst, self.selector(x), ("s", IMM), 0)
        return ("reg", dst)

    def word_source(self, node: Expr):
        """The raw 32-bit word of a format field or header word."""
        if isinstance(node, F):
            return ("src", sel(SRC_FIELD_U, self.fields[node.name]))
        if isinstance(node, H):
            return ("src", sel(SRC_HDR_U, self.header[node.name][0]))
        raise MicrocodeError(f"a format part needs a field or header word, got {node!r}")

    def node(self, node: Expr):
        value = self.const(node)
        if value is not None:
            return ("imm", value)
        if isinstance(node, F):
            if node.name == "task":
                return ("src", sel(SRC_TASK))
            kind = SRC_FIELD_U if self.kinds[node.name] in UNSIGNED else SRC_FIELD_S
            return ("src", sel(kind, self.fields[node.name]))
        if isinstance(node, H):
            if node.name == "task":
                return ("src", sel(SRC_RUN_TASK))
            index, signed = self.header[node.name]
            return ("src", sel(SRC_HDR_S if signed else SRC_HDR_U, index))
        if isinstance(node, FmtPart):
            op = {"width": "FMTW", "frac": "FMTF", "ok": "FMTOK", "bits": "FMTB",
                  "overflow": "FMTO"}[node.part]  # fmt: skip
            return self.unary(op, self.word_source(node.field))
        if isinstance(node, Bin):
            op = {"+": "ADD", "-": "SUB", "*": "MUL"}[node.op]
            return self.binary(op, self.node(node.a), self.node(node.b))
        if isinstance(node, CeilDiv):
            by = self.const(node.by)
            if by is None or by <= 0 or by & (by - 1):
                raise MicrocodeError(f"ceil_div by {by}: the engine divides by powers of two only")
            total = self.binary("ADD", self.node(node.a), ("imm", by - 1))
            return self.binary("SRA", total, ("imm", by.bit_length() - 1))
        if isinstance(node, Cmp):
            return self.binary(_CMP[node.op], self.node(node.a), self.node(node.b))
        if isinstance(node, Logic):
            op = "AND" if node.op == "&&" else "OR"
            return self.binary(op, self.node(node.a), self.node(node.b))
        if isinstance(node, Not):
            return self.binary("EQ", self.node(node.a), ("imm", 0))
        if isinstance(node, Divides):
            return self.binary("DIVIDES", self.node(node.a), self.node(node.b))
        if isinstance(node, OneOf):
            values = tuple(self.params[node.values])
            result = None
            for value in values:
                term = self.binary("EQ", self.node(node.a), ("imm", int(value)))
                result = term if result is None else self.binary("OR", result, term)
            return result if result is not None else ("imm", 0)
        raise MicrocodeError(f"unknown rule node {node!r}")

    def rule(self, rule: Rule, code: int) -> None:
        """ASSERT must (when `when`): the guard is a register, or imm[8] when constant."""
        if rule.when is not None and self.const(rule.when) == 0:
            return  # never applies to this kernel (e.g. a window rule without a window)
        must = self.in_reg_or_src(self.node(rule.must))
        when = self.node(rule.when) if rule.when is not None else ("imm", 1)
        if when[0] != "imm":
            self.emit("ASSERT", None, self.selector(must), self.selector(when), code)
        elif when[1]:
            self.emit("ASSERT", None, self.selector(must), ("s", IMM), code | (1 << 8))
        self.rule_index += 1


def compile_rules(
    rules,
    error_codes: dict[str, int],
    params: dict,
    kinds: dict[str, str],
    fields: dict[str, int],
    header_words: dict[str, tuple[int, bool]],
) -> list[Instr]:
    """Microcode for `rules`, scheduled (``schedule``), ending in END; the first failing
    rule answers, as in the order given."""
    compiler = _Compiler(params, kinds, fields, header_words)
    for rule in rules:
        compiler.rule(rule, error_codes[rule.error])
    try:
        return schedule(compiler.code)
    except MicrocodeError:  # no interleaving fits the registers: the rules one by one
        return schedule(compiler.code, lookahead=0, in_order=True)


def schedule(steps: list[_Step], lookahead: int = LOOKAHEAD_RULES,
             in_order: bool = False) -> list[Instr]:  # fmt: skip
    """Issue order, empty slots and registers for `steps`, ending in END. Each slot takes
    the first step (in rule order) whose operands are ready (DEPENDENT_SLOTS after their
    producer's slot), ASSERTs in order, from at most `lookahead` rules past the oldest
    unfinished one, which alone may use the last RESERVED_REGISTERS registers (so it can
    always finish); `in_order`: the steps as written, only the empty slots added."""
    producer = {step.dst: k for k, step in enumerate(steps) if step.dst is not None}
    readers: dict[int, int] = {}
    for step in steps:
        for reg in step.reads():
            readers[reg] = readers.get(reg, 0) + 1
    asserts = [k for k, step in enumerate(steps) if step.op == "ASSERT"]
    placed: dict[int, int] = {}  # step -> slot
    order: list[int] = []
    left = dict(readers)
    live: set[int] = set()
    waiting = list(range(len(steps)))
    slot = next_assert = 0
    while waiting:
        oldest = steps[asserts[next_assert]].rule if next_assert < len(asserts) else None
        chosen = None
        for k in waiting:
            step = steps[k]
            if oldest is not None and step.rule > oldest + lookahead:
                break
            ready = all(
                producer[reg] in placed and placed[producer[reg]] + DEPENDENT_SLOTS <= slot
                for reg in step.reads()
            )
            if not ready or (step.op == "ASSERT" and k != asserts[next_assert]):
                if in_order:
                    break
                continue
            after = len(live) - sum(1 for reg in step.reads() if left[reg] == 1)
            after += step.dst is not None and readers.get(step.dst, 0) > 0
            cap = REGISTERS if step.rule == oldest else REGISTERS - RESERVED_REGISTERS
            if after > cap:
                if in_order and after > REGISTERS:
                    raise MicrocodeError(f"a rule needs more than {REGISTERS} registers")
                continue
            chosen = k
            break
        if chosen is not None:
            step = steps[chosen]
            waiting.remove(chosen)
            placed[chosen] = slot
            order.append(chosen)
            for reg in step.reads():
                left[reg] -= 1
                if not left[reg]:
                    live.discard(reg)
            if step.dst is not None and readers.get(step.dst, 0):
                live.add(step.dst)
            if step.op == "ASSERT":
                next_assert += 1
        elif order and slot - placed[order[-1]] >= DEPENDENT_SLOTS:
            raise MicrocodeError("the rule scheduler found nothing to issue")
        slot += 1
    return _allocate(steps, order, placed)


def _allocate(steps: list[_Step], order: list[int], placed: dict[int, int]) -> list[Instr]:
    """The scheduled steps on the 16 registers (a register is free again once its last
    reader has issued: a later write lands DEPENDENT_SLOTS after its own issue), with each
    instruction's empty slots before it; END last."""
    last_read: dict[int, int] = {}
    for position, k in enumerate(order):
        for reg in steps[k].reads():
            last_read[reg] = position
    free = list(range(REGISTERS))
    home: dict[int, int] = {}
    code, previous = [], -1

    def ref(operand) -> int:
        return sel(SRC_REG, home[operand[1]]) if operand[0] == "v" else operand[1]

    for position, k in enumerate(order):
        step = steps[k]
        a, b = ref(step.a), ref(step.b)
        for reg in step.reads():
            if last_read[reg] == position:
                free.append(home[reg])
        dst = 0
        if step.dst is not None:
            if not free:
                raise MicrocodeError(f"a schedule needs more than {REGISTERS} registers")
            free.sort()
            dst = free.pop(0)
            home[step.dst] = dst
            if step.dst not in last_read:  # never read: free at once
                free.append(dst)
        code.append(Instr(step.op, dst, a, b, step.imm, placed[k] - previous - 1))
        previous = placed[k]
    code.append(Instr("END"))
    return code


@dataclass(frozen=True)
class EngineImage:
    """The ROM and entry points of one kernel build's rule engine."""

    words: tuple[int, ...]
    header_entry: int
    unknown_entry: int  # refuses with ERR_OP
    entries: dict  # op code -> first instruction
    header_index: tuple[tuple[str, int], ...]  # selector index -> header word name
    _decoded: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def addr_bits(self) -> int:
        return max(1, (len(self.words) - 1).bit_length())

    def program_at(self, entry: int) -> tuple[Instr, ...]:
        """The instructions from `entry` to its END (or the ROM's end), decoded once."""
        if entry not in self._decoded:
            code = []
            for word in self.words[entry:]:
                code.append(_decode(word))
                if code[-1].op == "END":
                    break
            self._decoded[entry] = tuple(code)
        return self._decoded[entry]


def build_image(params: dict) -> EngineImage:
    """Compile the header rules and every op's rules (after the task rule) for `params`."""
    from ..contract import CHECK_ERRORS
    from . import HEADER_WORD_INDEX, SPECS, TASK_RULE, _header_rules

    codes = {name: code for code, name, _ in CHECK_ERRORS}
    names = list(HEADER_WORD_INDEX)
    header_words = {name: (index, HEADER_WORD_INDEX[name][1]) for index, name in enumerate(names)}
    header = compile_rules(_header_rules(), codes, params, {}, {}, header_words)
    words = [instr.word() for instr in header]
    entries = {}
    for op in SPECS:
        fields = {name: index for index, name in enumerate(op.field_names)}
        rules = (TASK_RULE, *op.rules)
        program = compile_rules(rules, codes, params, dict(op.fields), fields, header_words)
        entries[op.code] = len(words)
        words += [instr.word() for instr in program]
    unknown_entry = len(words)
    refuse = codes["OP"] | (1 << 8)
    words += [
        Instr("LDI", 0, 0, IMM, 0).word(),
        Instr("ASSERT", 0, sel(SRC_REG, 0), IMM, refuse, DEPENDENT_SLOTS - 1).word(),
    ]
    return EngineImage(
        words=tuple(words),
        header_entry=0,
        unknown_entry=unknown_entry,
        entries=entries,
        header_index=tuple((name, index) for index, name in enumerate(names)),
    )


@lru_cache(maxsize=16)
def _image_for(key, registry: int) -> EngineImage:
    return build_image(dict(key))


def image(params: dict) -> EngineImage:
    """build_image, cached by the parameters' values and the registry in use."""
    from . import SPECS

    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))
    return _image_for(key, id(SPECS))


def _mul_cycles(b: int) -> int:
    """Extra cycles of MUL when b != 0: one forming 3a, then one per 4 bits of b (as
    unsigned 64-bit) up to its top one (b = 0 ends at once)."""
    nibbles = -(-((b & ((1 << 64) - 1)).bit_length()) // 4)
    return nibbles + 1 if nibbles else 0


def run(program, read, regs: list[int] | None = None) -> tuple[int, int]:
    """Reference interpreter of the engine: `read(selector)` gives an operand's value;
    returns (error code or 0 when every rule held, cycles from start to result). `regs`
    are the engine's registers, which keep their values from one program to the next as
    the hardware's do (a program must not read a register it has not written)."""
    mask = (1 << 64) - 1

    def signed(value: int) -> int:
        value &= mask
        return value - (1 << 64) if value >> 63 else value

    regs = [0] * REGISTERS if regs is None else regs
    spent = START_CYCLES + DRAIN_CYCLES
    for instr in program:

        def operand(selector: int, instr: Instr = instr) -> int:
            kind, index = selector >> 7, selector & 127
            if kind == SRC_REG:
                return regs[index]
            if kind == SRC_IMM:
                return signed(instr.imm)
            return signed(read(selector))

        a, b = operand(instr.a), operand(instr.b)
        op = instr.op
        spent += BASE_CYCLES + instr.wait
        if op == "END":
            return 0, spent
        if op == "ASSERT":
            guard = bool(instr.imm >> 8 & 1) if (instr.b >> 7) == SRC_IMM else b != 0
            if a == 0 and guard:
                return instr.imm & 0xFF, spent
            continue
        if op == "LDI":
            result = b  # the operand b selects: the immediate, as the compiler emits it
        elif op == "ADD":
            result = a + b
        elif op == "SUB":
            result = a - b
        elif op == "MUL":
            result = a * b
            spent += _mul_cycles(b)
        elif op == "SRA":
            result = a >> (b & 63)
        elif op in ("LT", "LE", "GT", "GE", "EQ", "NE"):
            result = {"LT": a < b, "LE": a <= b, "GT": a > b, "GE": a >= b, "EQ": a == b,
                      "NE": a != b}[op]  # fmt: skip
        elif op == "AND":
            result = a != 0 and b != 0
        elif op == "OR":
            result = a != 0 or b != 0
        elif op == "FMTW":
            result = a & 0xFF
        elif op == "FMTF":
            result = ((a >> 8) & 0xFF) - (256 if (a >> 15) & 1 else 0)
        elif op == "FMTB":
            result = (a & 0xFF) + 1 - ((a >> 16) & 1)
        elif op == "FMTO":
            result = (a >> 20) & 7
        elif op == "FMTOK":
            result = 1 <= (a & 0xFF) <= 63 and (a >> 17) & 7 <= 6 and (a >> 20) & 7 <= 3
        elif op == "DIVIDES":
            result = b != 0 and abs(a) % abs(b) == 0
            spent += EXTRA_CYCLES["DIVIDES"]
        else:
            raise MicrocodeError(f"unknown op {op}")
        regs[instr.dst] = signed(int(result))
    raise MicrocodeError("program ran off its end")


@dataclass(frozen=True)
class Verdict:
    """The engine's answer for a Program: error code (0 = every rule held), the refused
    layer (None for the header or a pass), engine cycles spent on the header and on
    each layer checked."""

    code: int
    layer: int | None
    header_cycles: int
    layer_cycles: tuple[int, ...]


def verdict(blob: bytes, params: dict, task: int = 0) -> Verdict:
    """What the RTL engine answers for a Program (header, then each layer's rules).
    The CSR index stream and the buffer-size checks are separate (``check_blob``)."""
    import numpy as np

    from ..program import HEADER_BYTES, LAYER_WORDS
    from . import HEADER_WORD_INDEX

    img = image(params)
    words = np.frombuffer(blob[:HEADER_BYTES], "<u4")
    names = [name for name, _ in img.header_index]

    def extend(value: int, signed: bool) -> int:
        value &= 0xFFFFFFFF
        return value - (1 << 32) if signed and value >> 31 else value

    def make_read(row):
        def read(selector: int) -> int:
            kind, index = selector >> 7, selector & 127
            if kind in (SRC_HDR_U, SRC_HDR_S):
                return extend(int(words[HEADER_WORD_INDEX[names[index]][0]]), kind == SRC_HDR_S)
            if kind == SRC_RUN_TASK:
                return task & 0xFFFFFFFF
            if kind == SRC_TASK:
                return extend(int(row[1]), True)
            return extend(int(row[2 + index]), kind == SRC_FIELD_S)

        return read

    regs = [0x5A5A5A5A5A5A5A5A] * REGISTERS  # not zero: a read before a write shows
    code, header_cycles = run(img.program_at(img.header_entry), make_read(None), regs)
    if code:
        return Verdict(code, None, header_cycles, ())
    n_layers = extend(int(words[HEADER_WORD_INDEX["n_layers"][0]]), True)
    rows = np.frombuffer(blob, "<u4", n_layers * LAYER_WORDS, HEADER_BYTES).reshape(-1, LAYER_WORDS)
    spent = []
    for index, row in enumerate(rows):
        entry = img.entries.get(int(row[0]), img.unknown_entry)
        code, cycles = run(img.program_at(entry), make_read(row), regs)
        spent.append(cycles)
        if code:
            return Verdict(code, index, header_cycles, tuple(spent))
    return Verdict(0, None, header_cycles, tuple(spent))


def _decode(word: int) -> Instr:
    imm = word & ((1 << IMM_BITS) - 1)
    word >>= IMM_BITS
    b = word & ((1 << SEL_BITS) - 1)
    word >>= SEL_BITS
    a = word & ((1 << SEL_BITS) - 1)
    word >>= SEL_BITS
    dst = word & 15
    word >>= 4
    op, wait = OPCODES[word & ((1 << OP_BITS) - 1)], word >> OP_BITS
    return Instr(op, dst, a, b, imm - (1 << IMM_BITS) if imm >> (IMM_BITS - 1) else imm, wait)


__all__ = [
    "OPCODES",
    "EngineImage",
    "Instr",
    "MicrocodeError",
    "Verdict",
    "build_image",
    "compile_rules",
    "image",
    "run",
    "verdict",
]
