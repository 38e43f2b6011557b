"""What an op is to the toolkit: its code, descriptor fields and validation rules.

Each op module (``linear.py``, ...) builds one ``OpSpec``. The region helpers here turn
"this layer reads rows x cols int32 at src" into the rules every executor enforces:
aligned to the bus, a stride that holds a padded row, and an end inside the buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..contract import NONE
from .expr import C, Expr, F, H, P, Rule, bits, ceil_div, fmt_ok, frac, lift, round_up, text

# Field kinds: "u" unsigned word (an arena address, a stride, a byte count), "p" a
# program address (unsigned; relocated with the data section), "c" a count (signed;
# range-checked before any arithmetic uses it), "s" another signed word, "f" a format.
KINDS = ("u", "p", "c", "s", "f")
UNSIGNED = ("u", "p")


@dataclass(frozen=True)
class OpSpec:
    """One op of the Program: everything the executors and tools need to know of it."""

    name: str
    code: int
    fields: tuple[tuple[str, str], ...]  # (name, kind) in descriptor order
    rules: tuple[Rule, ...]  # in check order: the first that fails names the error
    doc: str = ""
    rows_field: str = "rows"  # what counts the rows it processes (for reports)
    # the activation it writes: base, stride, rows field (or None), extra rows (a count or a
    # field), cols field (None: the op writes no activation, e.g. MOE_GATE's queue)
    output: tuple[str, str, str | None, int | str, str] | None = (
        "dst", "dst_stride", "rows", 0, "dim",
    )  # fmt: skip
    extras: dict = field(default_factory=dict)
    # the bit-exact semantics: golden(executor, layer, task) -> the output it wrote (or
    # None), with the executor's arena, weights, tables and requantiser (codesign.golden)
    golden: Callable | None = None
    # the cycle model: estimate(program, layer, bus_bytes, expert_counts, stored,
    # stream) -> dict (``layer_model``; ``stored``: the weight tiles to cost a LINEAR
    # with, None as the Program stores them: all of them for the dense cycles of a
    # block-sparse layer, any count for pruning's costs; ``stream``: how the tiles arrive,
    # ``codesign.estimate.cycles.WeightStream``), and the DDR round trips
    # a layer leaves exposed (measured on the RTL top as the slope of its cycles over DDR
    # latency: docs/rtl-top.md)
    estimate: Callable | None = None
    round_trips: float = 3.0
    round_trips_per_expert: float = 0.0  # MOE_EXPERTS: more per expert with tokens
    # the same with every arena block in the on-chip window: what is left are the reads
    # of the Program (descriptor, weights, biases, parameters), measured the same way
    round_trips_on_chip: float = 1.0
    round_trips_on_chip_per_expert: float = 0.0
    # the hardware units it needs (their DSP/BRAM/LUT/FF: codesign.estimate.resources)
    units: tuple[str, ...] = ()

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)

    def kind(self, name: str) -> str:
        for key, kind in self.fields:
            if key == name:
                return kind
        raise KeyError(f"{self.name} has no field {name!r}")

    def output_region(self, fields: dict) -> tuple[int, int, int, int] | None:
        """(arena offset, rows, cols, stride) of the activation a layer writes, or None."""
        if self.output is None:
            return None
        base, stride, rows, extra, cols = self.output
        extra = extra if isinstance(extra, int) else fields[extra]
        return fields[base], (fields[rows] if rows else 0) + extra, fields[cols], fields[stride]

    @property
    def arena_addresses(self) -> tuple[str, ...]:
        """Fields holding arena byte offsets (the blocks ``arena_rows`` and the MoE queue
        rules bound)."""
        return tuple(name for name in self.field_names if name in ARENA_BASES)

    @property
    def program_addresses(self) -> tuple[str, ...]:
        """Fields holding program byte offsets (weights, biases, tables of the op)."""
        return tuple(name for name, kind in self.fields if kind == "p")

    def index(self, name: str) -> int:
        """Word index of a field inside the descriptor (word 0 op, word 1 task)."""
        return 2 + self.field_names.index(name)


def fields(spec: str) -> tuple[tuple[str, str], ...]:
    """``"src:u rows:c x_fmt"``: kinds after a colon; ``*_fmt`` are formats, else signed."""
    out = []
    for item in spec.split():
        name, _, kind = item.partition(":")
        kind = kind or ("f" if name.endswith("_fmt") else "s")
        if kind not in KINDS:
            raise ValueError(f"field {name}: unknown kind {kind!r}")
        out.append((name, kind))
    return tuple(out)


def present(name: str) -> Expr:
    return F(name).ne(NONE)


def in_range(name: str, lo, hi, error: str = "SIZE") -> Rule:
    low, high = text(lift(lo)), text(lift(hi))
    return Rule(error, (F(name) >= lo) & (F(name) <= hi), why=f"{name} in [{low}, {high}]")


def formats(*names: str, when: Expr | None = None) -> list[Rule]:
    return [Rule("FORMAT", fmt_ok(F(name)), when, f"{name} is a valid format") for name in names]


def narrow(name: str, bits: int, when: Expr | None = None) -> Rule:
    """A format kept in a 32-bit word may not be wider than it."""
    from .expr import width

    return Rule("FORMAT", width(F(name)) <= bits, when, f"{name} at most {bits} bits wide")


#: what a build's datapaths carry, as the signed bits of a value (``expr.bits``). The
#: HLS kernel and the golden executor compute in 32/64-bit words: any well-formed format.
#: An RTL build is specialised to its precision (``codesign.rtl.render.rtl_check_params``).
DATAPATH_BITS = {
    "act_bits": 64,  # activations: the arena words engines read and write
    "mul_bits": 64,  # activations the UCU multiplies (narrower than act_bits: w8a8r16)
    "weight_bits": 64,  # weights: the UCU's multiplier operand
    "prob_bits": 64,  # softmax probabilities and MoE gate scores
    "sum_bits": 64,  # attention's running softmax sums
    "norm_param_bits": 64,  # LayerNorm's gamma and beta
}


def datapath(param: str, *names: str, when: Expr | None = None) -> list[Rule]:
    """Formats a build's datapath of ``P(param)`` signed bits must carry: a wider one
    (a Program quantised for another precision) is refused, never run on truncated
    values."""
    return [
        Rule("FORMAT", bits(F(name)) <= P(param), when, f"{name} fits the {param} datapath")
        for name in names
    ]


def frac_le(name: str, *sum_of: str, when: Expr | None = None, error: str = "ALIGN") -> Rule:
    total = frac(F(sum_of[0]))
    for other in sum_of[1:]:
        total = total + frac(F(other))
    return Rule(
        error,
        frac(F(name)) <= total,
        when,
        f"frac({name}) <= " + " + ".join(f"frac({n})" for n in sum_of),
    )


# fraction bits a lookup-table input may have (codesign.numerics.tables)
TABLE_FRAC = (-32, 62)


def table_input(what: str, frac_bits: Expr, table: str | None = None, when=None) -> Rule:
    """A table lookup's input (softmax scores, GELU's argument, layer-norm statistics)
    has fraction bits in the tables' domain; an interpolating table (exp, GELU) takes its
    interpolation bits from the input, so their product with a table difference must stay
    within 64 bits: at most ``kernel.<table>_input_frac_max`` (``interpolation_limits``)."""
    low, high = TABLE_FRAC
    top = P(f"{table}_input_frac_max") if table else high
    bound = f"kernel.{table}_input_frac_max" if table else high
    return Rule(
        "FORMAT",
        (frac_bits >= low) & (frac_bits <= top),
        when,
        f"{what}: fraction bits in [{low}, {bound}]",
    )


def interpolation_limits(words: dict) -> dict:
    """``<table>_input_frac_max`` of the interpolating tables from their header words
    (``<table>_fmt``, ``_index_bits``, ``_domain_log2``): the input's interpolation bits
    G = frac - (index_bits - domain_log2) must keep G + width + 1 <= 63
    (``codesign.numerics.tables``, and the kernels' 64-bit products)."""
    limits = {}
    for table in ("exp", "gelu_delta"):
        width = words[f"{table}_fmt"] & 0xFF
        step = words[f"{table}_index_bits"] - words[f"{table}_domain_log2"]
        limits[f"{table}_input_frac_max"] = min(TABLE_FRAC[1], 62 - width + step)
    return limits


def aligned(value: Expr) -> Expr:
    return round_up(value, P("bus_bytes")).eq(value)


def row_bytes(cols: Expr) -> Expr:
    return round_up(cols * 4, P("bus_bytes"))


# the descriptor fields that are arena offsets, in every op that has them
ARENA_BASES = ("src", "dst", "res", "queue", "scratch")


def arena_rows(
    what: str, base: str, stride: str | None, rows: Expr, cols: Expr, when: Expr | None = None
) -> list[Rule]:
    """``rows`` rows of ``cols`` int32 at arena offset ``base``, ``stride`` bytes apart."""
    end = F(base) + rows * (F(stride) if stride else row_bytes(cols))
    rules = [Rule("REGION", aligned(F(base)), when, f"{what}: {base} bus-aligned")]
    if stride:
        rules.append(
            Rule(
                "REGION",
                aligned(F(stride)) & (F(stride) >= row_bytes(cols)),
                when,
                f"{what}: {stride} bus-aligned and holds a row",
            )
        )
    rules += inside_the_arena(what, F(base), end, when)
    return rules


def inside_the_arena(what: str, start: Expr, end: Expr, when: Expr | None = None) -> list[Rule]:
    """An arena block [start, end) ends inside the arena and, on a kernel with an on-chip
    window, lies wholly in it or wholly past it (the kernels send a command where its
    first word is; without a window the rule folds away from the kernels' checks)."""
    window = H("window_bytes")
    has_window = P("window_max_bytes") > 0
    return [
        Rule("REGION", end <= H("arena_bytes"), when, f"{what}: inside the arena"),
        Rule(
            "REGION",
            (end <= window) | (start >= window),
            has_window if when is None else when & has_window,
            f"{what}: one side of the window",
        ),
    ]


def program_block(
    what: str, base: str, nbytes: Expr, when: Expr | None = None, *, copies=None
) -> list[Rule]:
    """``nbytes`` at program offset ``base`` (``copies`` = (count, stride field) for
    per-expert blocks), inside the data section and bus-aligned."""
    end = F(base) + nbytes
    rules = [
        Rule(
            "REGION",
            aligned(F(base)) & (F(base) >= H("data_offset")),
            when,
            f"{what}: {base} bus-aligned, in the data section",
        )
    ]
    if copies is not None:
        count, stride = copies
        rules.append(Rule("REGION", aligned(F(stride)), when, f"{what}: {stride} bus-aligned"))
        end = end + (count - 1) * F(stride)
    rules.append(Rule("REGION", end <= H("total_bytes"), when, f"{what}: inside the program"))
    return rules


def disjoint(
    what: str,
    a: tuple[Expr, Expr],
    b: tuple[Expr, Expr],
    when: Expr | None = None,
    or_same: Expr | None = None,
):
    """Two arena blocks [start, end) do not overlap (an op that writes one while it still
    reads the other would otherwise depend on its own order of accesses). ``or_same``: the
    condition under which they may instead be the very same rows (an op that reads each
    row whole before it writes it back, so in place is order-independent)."""
    (a_start, a_end), (b_start, b_end) = a, b
    apart = (a_end <= b_start) | (b_end <= a_start)
    if or_same is None:
        return Rule("REGION", apart, when, f"{what} do not overlap")
    return Rule("REGION", apart | or_same, when, f"{what} do not overlap or are the same rows")


def rows_of(base: str, stride: str, rows: Expr) -> tuple[Expr, Expr]:
    """[start, end) of ``rows`` rows at ``base``, ``stride`` bytes apart."""
    return F(base), F(base) + rows * F(stride)


def layer_model(cycles, breakdown, parts, *, macs=0, weight_bytes=0, act_bytes=0, **extra):
    """What an op's ``estimate`` returns: its schedule's cycles and their breakdown, the
    parts that bound them, useful MACs, DDR bytes, and op-specific extras."""
    return {
        "cycles": cycles,
        "breakdown": breakdown,
        "parts": parts,
        "macs": macs,
        "weight_bytes": weight_bytes,
        "act_bytes": act_bytes,
        **extra,
    }


def tiled_bytes(out_dim: Expr, in_dim: Expr, container: Expr) -> Expr:
    """Bytes of one dense weight matrix in the UCU's tile order (codesign.program)."""
    tile = round_up(P("tile_in") * P("tile_out") * container, P("weight_beat_bytes"))
    return ceil_div(out_dim, P("tile_out")) * ceil_div(in_dim, P("tile_in")) * tile


def vector_bytes(count: Expr) -> Expr:
    """An int32 vector padded to whole UCU output tiles (biases) and the bus."""
    return round_up(round_up(count, P("tile_out")) * 4, P("bus_bytes"))


__all__ = [
    "C",
    "OpSpec",
    "aligned",
    "arena_rows",
    "fields",
    "formats",
    "frac_le",
    "in_range",
    "inside_the_arena",
    "narrow",
    "present",
    "program_block",
    "tiled_bytes",
    "vector_bytes",
]
