"""A small expression language for the Program's validation rules.

A rule is data: ``Rule("SIZE", F("rows") <= P("max_tokens"))``. The same expression
evaluates in Python (the loader and the golden executor), prints as C++ (the HLS
kernel's ``check_layer``) and as SystemVerilog (the RTL controller's check), so the
three executors cannot drift. Arithmetic is on 64-bit signed integers everywhere; every
rule runs only after the rules before it passed, so sizes are bounded by then (a range
rule on a count comes before any product that uses it).

Operands: ``F`` a descriptor field, ``H`` a header value, ``P`` a parameter of the kernel
build (``max_tokens``, ``bus_bytes``, ...), ``C`` a constant; ``frac``/``width``/``fmt_ok``
of a format field; ``ceil_div``/``round_up`` by a parameter; ``divides``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# ----------------------------------------------------------------------------- nodes


class Expr:
    """An integer or boolean expression over fields, header values and parameters."""

    def __add__(self, other):
        return Bin("+", self, lift(other))

    def __radd__(self, other):
        return Bin("+", lift(other), self)

    def __sub__(self, other):
        return Bin("-", self, lift(other))

    def __mul__(self, other):
        return Bin("*", self, lift(other))

    def __rmul__(self, other):
        return Bin("*", lift(other), self)

    def __lt__(self, other):
        return Cmp("<", self, lift(other))

    def __le__(self, other):
        return Cmp("<=", self, lift(other))

    def __gt__(self, other):
        return Cmp(">", self, lift(other))

    def __ge__(self, other):
        return Cmp(">=", self, lift(other))

    def eq(self, other) -> Expr:
        return Cmp("==", self, lift(other))

    def ne(self, other) -> Expr:
        return Cmp("!=", self, lift(other))

    def __and__(self, other):
        return Logic("&&", self, lift(other))

    def __or__(self, other):
        return Logic("||", self, lift(other))

    def __invert__(self):
        return Not(self)

    def __bool__(self):  # `a < b < c` or `if expr` would silently misbehave
        raise TypeError("a rule expression has no truth value; combine with & | ~")

    def fields(self) -> set[str]:
        return set()


def lift(value) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"cannot use {value!r} in a rule")
    return C(value)


@dataclass(frozen=True, eq=False)
class C(Expr):
    value: int


@dataclass(frozen=True, eq=False)
class F(Expr):
    """A descriptor field, read as its kind says (unsigned address, signed count...)."""

    name: str

    def fields(self) -> set[str]:
        return {self.name}


@dataclass(frozen=True, eq=False)
class H(Expr):
    """A header value: data_offset, total_bytes, arena_bytes, n_tasks, a table word..."""

    name: str


@dataclass(frozen=True, eq=False)
class P(Expr):
    """A constant of the kernel build (from the ArchConfig), known at render time."""

    name: str


@dataclass(frozen=True, eq=False)
class FmtPart(Expr):
    part: str  # "frac", "width", "bits" (signed bits a value needs), "overflow" or "ok"
    field: Expr  # an F or an H holding a format word

    def fields(self) -> set[str]:
        return self.field.fields()


def frac(field: Expr) -> Expr:
    return FmtPart("frac", field)


def width(field: Expr) -> Expr:
    return FmtPart("width", field)


def bits(field: Expr) -> Expr:
    """The two's-complement bits a value of the format needs: its width, one more when
    unsigned. What a signed datapath of that many bits carries."""
    return FmtPart("bits", field)


def overflow(field: Expr) -> Expr:
    """The format's overflow mode (``numerics.fixed.OVERFLOW_CODE``)."""
    return FmtPart("overflow", field)


def fmt_ok(field: Expr) -> Expr:
    return FmtPart("ok", field)


@dataclass(frozen=True, eq=False)
class Bin(Expr):
    op: str
    a: Expr
    b: Expr

    def fields(self) -> set[str]:
        return self.a.fields() | self.b.fields()


@dataclass(frozen=True, eq=False)
class CeilDiv(Expr):
    a: Expr
    by: P | C


def ceil_div(a, by) -> Expr:
    return CeilDiv(lift(a), lift(by))


def round_up(a, to) -> Expr:
    return ceil_div(a, to) * lift(to)


@dataclass(frozen=True, eq=False)
class Cmp(Expr):
    op: str
    a: Expr
    b: Expr

    def fields(self) -> set[str]:
        return self.a.fields() | self.b.fields()


@dataclass(frozen=True, eq=False)
class Logic(Expr):
    op: str
    a: Expr
    b: Expr

    def fields(self) -> set[str]:
        return self.a.fields() | self.b.fields()


@dataclass(frozen=True, eq=False)
class Not(Expr):
    a: Expr

    def fields(self) -> set[str]:
        return self.a.fields()


@dataclass(frozen=True, eq=False)
class Divides(Expr):
    """``b`` divides ``a`` (b a field bounded by the parameter ``b_max``, checked before)."""

    a: Expr
    b: Expr
    b_max: str

    def fields(self) -> set[str]:
        return self.a.fields() | self.b.fields()


@dataclass(frozen=True, eq=False)
class OneOf(Expr):
    """``a`` equals one of the values of a tuple parameter."""

    a: Expr
    values: str

    def fields(self) -> set[str]:
        return self.a.fields()


def divides(b, a, b_max: str) -> Expr:
    return Divides(lift(a), lift(b), b_max)


def one_of(a, values: str) -> Expr:
    return OneOf(lift(a), values)


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True, eq=False)
class Rule:
    """``must`` holds (when ``when`` holds), else the check reports ``error``."""

    error: str  # a name of contract.CHECK_ERRORS
    must: Expr
    when: Expr | None = None
    why: str = ""

    def fields(self) -> set[str]:
        return self.must.fields() | (self.when.fields() if self.when is not None else set())


# ----------------------------------------------------------------------------- Python


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


@dataclass
class Env:
    """What a Python evaluation reads: raw field words and how each is read."""

    field: Callable[[str], int]  # raw 32-bit word of a field
    kind: Callable[[str], str]  # "u"/"p" unsigned, else signed
    header: Callable[[str], int]
    param: Callable[[str], object]


def _read(env: Env, name: str) -> int:
    raw = env.field(name) & 0xFFFFFFFF
    return raw if env.kind(name) in ("u", "p") else _signed32(raw)


def _raw_word(node: Expr, env: Env) -> int:
    if isinstance(node, F):
        return env.field(node.name) & 0xFFFFFFFF
    if isinstance(node, H):
        return env.header(node.name) & 0xFFFFFFFF
    raise TypeError(f"a format part needs a field or header word, got {node!r}")


def evaluate(node: Expr, env: Env):
    if isinstance(node, C):
        return node.value
    if isinstance(node, F):
        return _read(env, node.name)
    if isinstance(node, H):
        return env.header(node.name)
    if isinstance(node, P):
        return env.param(node.name)
    if isinstance(node, FmtPart):
        word = _raw_word(node.field, env)
        if node.part == "width":
            return word & 0xFF
        if node.part == "bits":
            return (word & 0xFF) + 1 - ((word >> 16) & 1)
        if node.part == "frac":
            value = (word >> 8) & 0xFF
            return value - 256 if value >= 128 else value
        if node.part == "overflow":
            return (word >> 20) & 7
        return 1 <= (word & 0xFF) <= 63 and (word >> 17) & 7 <= 6 and (word >> 20) & 7 <= 3
    if isinstance(node, Bin):
        a, b = evaluate(node.a, env), evaluate(node.b, env)
        return a + b if node.op == "+" else a - b if node.op == "-" else a * b
    if isinstance(node, CeilDiv):
        by = evaluate(node.by, env)
        return -(-evaluate(node.a, env) // by)
    if isinstance(node, Cmp):
        a, b = evaluate(node.a, env), evaluate(node.b, env)
        return {
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
            "==": a == b,
            "!=": a != b,
        }[node.op]
    if isinstance(node, Logic):
        if node.op == "&&":
            return evaluate(node.a, env) and evaluate(node.b, env)
        return evaluate(node.a, env) or evaluate(node.b, env)
    if isinstance(node, Not):
        return not evaluate(node.a, env)
    if isinstance(node, Divides):
        b = evaluate(node.b, env)
        return b != 0 and evaluate(node.a, env) % b == 0
    if isinstance(node, OneOf):
        return evaluate(node.a, env) in env.param(node.values)
    raise TypeError(f"unknown rule node {node!r}")


def text(node: Expr) -> str:
    """A readable form of a rule for messages and docs."""
    if isinstance(node, C):
        return hex(node.value) if node.value >= 0xFFFF else str(node.value)
    if isinstance(node, F):
        return node.name
    if isinstance(node, H):
        return f"hdr.{node.name}"
    if isinstance(node, P):
        return f"kernel.{node.name}"
    if isinstance(node, FmtPart):
        return f"{'fmt_ok' if node.part == 'ok' else node.part}({text(node.field)})"
    if isinstance(node, (Bin, Cmp, Logic)):
        op = {"&&": "and", "||": "or"}.get(node.op, node.op)
        return f"({text(node.a)} {op} {text(node.b)})"
    if isinstance(node, CeilDiv):
        return f"ceil({text(node.a)} / {text(node.by)})"
    if isinstance(node, Not):
        return f"not {text(node.a)}"
    if isinstance(node, Divides):
        return f"({text(node.a)} % {text(node.b)} == 0)"
    if isinstance(node, OneOf):
        return f"({text(node.a)} in {node.values})"
    raise TypeError(f"unknown rule node {node!r}")


# ----------------------------------------------------------------------------- C++ / SV


@dataclass
class Target:
    """How one language spells operands; the operators are shared."""

    field: Callable[[str], str]
    header: Callable[[str], str]
    param: Callable[[str], object]
    const: Callable[[int], str]
    fmt_word: Callable[[str], str]  # raw 32-bit word of a field, for format parts
    sv: bool


def _pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def emit(node: Expr, t: Target) -> str:
    if isinstance(node, C):
        return t.const(node.value)
    if isinstance(node, F):
        return t.field(node.name)
    if isinstance(node, H):
        return t.header(node.name)
    if isinstance(node, P):
        return t.const(int(t.param(node.name)))
    if isinstance(node, FmtPart):
        word = (
            t.fmt_word(node.field.name) if isinstance(node.field, F) else t.header(node.field.name)
        )
        if t.sv:
            if node.part == "width":
                return f"longint'({{56'd0, {word}[7:0]}})"
            if node.part == "bits":
                return f"(longint'({{56'd0, {word}[7:0]}}) + longint'({{63'd0, !{word}[16]}}))"
            if node.part == "frac":
                return f"longint'($signed({word}[15:8]))"
            if node.part == "overflow":
                return f"longint'({{61'd0, {word}[22:20]}})"
            return f"fmt_ok({word})"
        if node.part == "width":
            return f"(i64)((u32){word} & 0xFFu)"
        if node.part == "bits":
            return f"(i64)(((u32){word} & 0xFFu) + 1u - (((u32){word} >> 16) & 1u))"
        if node.part == "frac":
            return f"(i64)(signed char)(((u32){word} >> 8) & 0xFFu)"
        if node.part == "overflow":
            return f"(i64)(((u32){word} >> 20) & 7u)"
        return f"fmt_valid((u32){word})"
    if isinstance(node, Bin):
        return f"({emit(node.a, t)} {node.op} {emit(node.b, t)})"
    if isinstance(node, CeilDiv):
        by = int(t.param(node.by.name)) if isinstance(node.by, P) else node.by.value
        a = emit(node.a, t)
        if _pow2(by):
            shift = by.bit_length() - 1
            return (
                f"(({a} + {t.const(by - 1)}) >>> {shift})"
                if t.sv
                else (f"(({a} + {by - 1}) >> {shift})")
            )
        return f"(({a} + {t.const(by - 1)}) / {t.const(by)})"
    if isinstance(node, Cmp):
        return f"({emit(node.a, t)} {node.op} {emit(node.b, t)})"
    if isinstance(node, Logic):
        return f"({emit(node.a, t)} {node.op} {emit(node.b, t)})"
    if isinstance(node, Not):
        return f"!{emit(node.a, t)}"
    if isinstance(node, Divides):
        a, b = emit(node.a, t), emit(node.b, t)
        if not t.sv:
            return f"({b} != 0 && {a} % {b} == 0)"
        # constant moduli only: one comparison per possible divisor
        limit = int(t.param(node.b_max))
        terms = [
            f"({b} == {t.const(k)} && {a} % {t.const(k)} == {t.const(0)})"
            for k in range(1, limit + 1)
        ]
        return "(" + " || ".join(terms) + ")"
    if isinstance(node, OneOf):
        a = emit(node.a, t)
        values = tuple(t.param(node.values))
        return "(" + " || ".join(f"{a} == {t.const(v)}" for v in values) + ")"
    raise TypeError(f"unknown rule node {node!r}")
