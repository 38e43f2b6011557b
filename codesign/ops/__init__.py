"""The op registry: every op of the Program, and the one rule table all executors check.

``SPECS`` lists the ops (one module each). From their rules this package produces the
Python check (``check_blob``: the loader and the golden executor), the C++ of the HLS
kernel's ``check_layer`` (``cpp_check``) and the SystemVerilog of the RTL controller's
check (``sv_layer_check``, ``sv_header_check``), so the three refuse the same Programs
with the same code at the same layer. See docs/adding-an-op.md.
"""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache

import numpy as np

from ..contract import ERROR_CODES, NONE, Refusal
from . import add, attention, embed, layernorm, linear, moe_experts, moe_gate, pool
from .base import DATAPATH_BITS, UNSIGNED, OpSpec, aligned, interpolation_limits
from .expr import Env, F, H, P, Rule, Target, emit, evaluate, round_up, text

SPECS: tuple[OpSpec, ...] = (
    linear.SPEC,
    embed.SPEC,
    layernorm.SPEC,
    attention.SPEC,
    add.SPEC,
    moe_gate.SPEC,
    moe_experts.SPEC,
    pool.SPEC,
)
BY_CODE = {spec.code: spec for spec in SPECS}
BY_NAME = {spec.name: spec for spec in SPECS}
OP_CODE_BITS = 8  # the RTL's op bus; codes 1..255

Op = IntEnum("Op", {spec.name: spec.code for spec in SPECS})
Op.__doc__ = "Op codes of program.bin (from the op registry, codesign.ops)."
LAYER_FIELDS: dict[Op, tuple[str, ...]] = {Op(spec.code): spec.field_names for spec in SPECS}

# every field that holds a program byte offset, of any op (relocated by the compiler)
PROGRAM_ADDRESS_FIELDS = tuple(dict.fromkeys(f for spec in SPECS for f in spec.program_addresses))

assert len(BY_CODE) == len(SPECS) and all(0 < code < 1 << OP_CODE_BITS for code in BY_CODE)


def spec(op) -> OpSpec:
    return BY_CODE[int(op)]


def op_name_of_code(code: int) -> str | None:
    found = BY_CODE.get(int(code))
    return found.name if found else None


# ----------------------------------------------------------------------------- header

TABLE_NAMES = ("gelu_delta", "exp", "recip", "rsqrt")
TABLE_WORDS = ("offset", "entries", "fmt", "index_bits", "guard_bits", "domain_log2", "kind")
# Header words the rules read (index in the header, signed?), besides the tables'.
HEADER_WORD_INDEX = {
    "magic_lo": (0, False),
    "magic_hi": (1, False),
    "version": (2, False),
    "header_bytes": (3, False),
    "total_bytes": (4, False),
    "n_layers": (6, True),
    "layer_words": (7, False),
    "layers_offset": (8, False),
    "data_offset": (9, False),
    "data_bytes": (10, False),
    "arena_bytes": (11, False),
    "bus_bits": (12, False),
    "tile_in": (13, False),
    "tile_out": (14, False),
    "n_tasks": (16, True),
    "weight_ports": (103, False),  # codesign.program._H_WEIGHT_PORTS
    "window_bytes": (104, False),  # codesign.program._H_WINDOW
}
_H_TABLES = 62
for _index, _table in enumerate(TABLE_NAMES):
    for _word_index, _word in enumerate(TABLE_WORDS):
        HEADER_WORD_INDEX[f"{_table}_{_word}"] = (
            _H_TABLES + _index * len(TABLE_WORDS) + _word_index,
            _word == "domain_log2",
        )


def _table_rules(name: str) -> list[Rule]:
    checks = [H(f"{name}_{word}").eq(P(f"{name}_{word}")) for word in TABLE_WORDS[1:]]
    same = checks[0]
    for check in checks[1:]:
        same = same & check
    offset, entries = H(f"{name}_offset"), H(f"{name}_entries")
    return [
        Rule("TABLE", same, why=f"table {name}: header words as the kernel's ArchConfig"),
        Rule(
            "TABLE",
            aligned(offset)
            & (offset >= H("data_offset"))
            & (offset + round_up(entries * 4, P("bus_bytes")) <= H("total_bytes")),
            why=f"table {name}: inside the data section, bus-aligned",
        ),
    ]


def header_rules(magic: tuple[int, int], version: int, header_bytes: int, layer_words: int):
    layers_end = header_bytes + H("n_layers") * (layer_words * 4)
    rules = [
        Rule("MAGIC", H("magic_lo").eq(magic[0]) & H("magic_hi").eq(magic[1]), why="magic"),
        Rule("VERSION", H("version").eq(version), why="format version"),
        Rule(
            "LAYOUT",
            H("header_bytes").eq(header_bytes)
            & H("layer_words").eq(layer_words)
            & H("layers_offset").eq(header_bytes)
            & (H("n_layers") >= 0)
            & (layers_end <= H("total_bytes")),
            why="header and descriptor sizes, layer count within the file",
        ),
        Rule("LAYOUT", aligned(H("arena_bytes")), why="arena size a whole number of bus beats"),
        Rule(
            "LAYOUT",
            aligned(H("window_bytes")) & (H("window_bytes") <= H("arena_bytes")),
            why="on-chip window a whole number of bus beats, inside the arena",
        ),
        Rule(
            "LAYOUT",
            H("data_offset").eq(layers_end)
            & (H("data_offset") + H("data_bytes")).eq(H("total_bytes")),
            why="data section right after the descriptors, to the end",
        ),
        Rule("BUS", H("bus_bits").eq(P("bus_bits")), why="bus width"),
        Rule("TILE", H("tile_in").eq(P("tile_in")) & H("tile_out").eq(P("tile_out")), why="tile"),
        Rule(
            "BUS",
            H("weight_ports").eq(P("weight_ports")),
            why="weight masters (each weight matrix is striped over them)",
        ),
        Rule(
            "TASKS",
            (H("n_tasks") >= 1) & (H("n_tasks") <= P("max_tasks")) & (H("task") < H("n_tasks")),
            why="task count and the task argument",
        ),
        Rule(
            "DEPTH",
            (H("total_bytes") <= P("program_max_bytes"))
            & (H("arena_bytes") <= P("arena_max_bytes")),
            why="buffers within the kernel's m_axi depth",
        ),
        Rule(
            "DEPTH",
            H("window_bytes") <= P("window_max_bytes"),
            why="on-chip window within the kernel's (ArchConfig.arena_window_kib)",
        ),
    ]
    for name in TABLE_NAMES:
        rules += _table_rules(name)
    return rules


def _format_header_rules():
    from ..program import HEADER_BYTES, LAYER_WORDS, MAGIC, VERSION

    magic = int.from_bytes(MAGIC[:4], "little"), int.from_bytes(MAGIC[4:], "little")
    return header_rules(magic, VERSION, HEADER_BYTES, LAYER_WORDS)


HEADER_RULES: tuple[Rule, ...] = ()  # filled on first use (codesign.program imports us)


def _header_rules() -> tuple[Rule, ...]:
    global HEADER_RULES
    if not HEADER_RULES:
        HEADER_RULES = tuple(_format_header_rules())
    return HEADER_RULES


TASK_RULE = Rule(
    "TASKS",
    F("task").eq(-1) | ((F("task") >= 0) & (F("task") < H("n_tasks"))),
    why="the layer's task is -1 (every task) or one of the Program's",
)

# ----------------------------------------------------------------------------- params

#: maxima of the program format itself (no ArchConfig): what the loader allows
FORMAT_LIMITS = {
    "max_tokens": 65535,
    "max_dim": 65535,
    "max_hidden": 65535,
    "max_lin_in": 65535,
    "max_lin_out": 3 * 65535,
    "row_max": 3 * 65535,
    "max_experts": 64,
    "max_heads": 64,
    "max_head_dim": 65535,
    "attn_parallel": 64,
}


@lru_cache(maxsize=32)
def _table_words(arch) -> dict[str, int]:
    import math

    from ..numerics.tables import build_tables
    from ..program import pack_fmt

    words = {}
    for name, table in build_tables(**arch.table_params()).items():
        words[f"{name}_entries"] = len(table.values)
        words[f"{name}_fmt"] = pack_fmt(table.fmt)
        words[f"{name}_index_bits"] = table.index_bits
        words[f"{name}_guard_bits"] = table.guard_bits
        words[f"{name}_domain_log2"] = round(math.log2(table.domain))
        words[f"{name}_kind"] = table.kind
    return words


def kernel_check_params(
    arch,
    *,
    w_bytes: tuple[int, ...] = (1, 2, 4),
    program_max_bytes: int | None = None,
    arena_max_bytes: int | None = None,
    datapath_bits: dict | None = None,
) -> dict:
    """The constants the checks compare against, for the kernel built for ``arch``.

    ``w_bytes``: the weight containers the kernel reads (the HLS kernel all three; an RTL
    build the one of its precision). ``datapath_bits``: the widths its datapaths carry
    (``base.DATAPATH_BITS``: any format for the HLS kernel; an RTL build its precision's).
    The buffer maxima default to the kernel's m_axi depths (``codesign.hls.render``).
    """
    from ..hls.render import ARENA_MAX_BYTES, PROGRAM_MAX_BYTES, kernel_params
    from ..program import MAX_TASKS

    kp = kernel_params(arch)
    params = {
        name: kp[name]
        for name in (
            "max_tokens",
            "max_dim",
            "max_hidden",
            "max_lin_in",
            "max_lin_out",
            "row_max",
            "max_experts",
            "max_heads",
            "max_head_dim",
            "attn_parallel",
            "tile_in",
            "tile_out",
            "bus_bytes",
            "bus_bits",
            "weight_ports",
            "weight_beat_bytes",
        )
    }
    tables = _table_words(arch)
    params.update(tables)
    params.update(interpolation_limits(tables))
    params["exp_frac"] = _frac_of(tables["exp_fmt"])
    params["w_bytes"] = tuple(w_bytes)
    params.update(DATAPATH_BITS if datapath_bits is None else datapath_bits)
    params["max_tasks"] = MAX_TASKS
    params["program_max_bytes"] = program_max_bytes or PROGRAM_MAX_BYTES
    params["arena_max_bytes"] = arena_max_bytes or ARENA_MAX_BYTES
    params["window_max_bytes"] = arch.arena_window_bytes
    return params


def _frac_of(word: int) -> int:
    value = (word >> 8) & 0xFF
    return value - 256 if value >= 128 else value


# ----------------------------------------------------------------------------- Python check


def _header_env(words: np.ndarray, task: int):
    def header(name: str) -> int:
        if name == "task":
            return task & 0xFFFFFFFF
        index, signed = HEADER_WORD_INDEX[name]
        value = int(words[index])
        return value - (1 << 32) if signed and value >> 31 else value

    return header


def _layer_env(op: OpSpec, row, header, params) -> Env:
    index = {name: 2 + i for i, name in enumerate(op.field_names)}
    index["task"] = 1
    kinds = dict(op.fields)
    kinds["task"] = "s"
    return Env(
        field=lambda name: int(row[index[name]]),
        kind=lambda name: kinds[name],
        header=header,
        param=params.__getitem__,
    )


def _first_failure(rules, env: Env) -> Rule | None:
    for rule in rules:
        if rule.when is not None and not evaluate(rule.when, env):
            continue
        if not evaluate(rule.must, env):
            return rule
    return None


def check_blob(blob: bytes, params: dict, task: int = 0) -> Refusal | None:
    """The kernel's program check in Python: None, or the first failing rule's Refusal.

    Reads the raw words as the kernel does (no trust in anything it has not checked yet);
    ``params`` from ``kernel_check_params``. Never raises: a buffer shorter than a header
    or than the header's ``total_bytes`` is refused as LAYOUT (the C-sim wrapper's and
    the driver's buffer check).
    """
    from ..program import HEADER_BYTES, LAYER_WORDS

    if len(blob) < HEADER_BYTES:
        return Refusal(ERROR_CODES["LAYOUT"], None, "shorter than a header")
    header_words = np.frombuffer(blob[:HEADER_BYTES], "<u4")
    header = _header_env(header_words, task)
    if header("total_bytes") > len(blob):  # the buffer ends before the header says
        return Refusal(ERROR_CODES["LAYOUT"], None, "buffer shorter than total_bytes")
    env = Env(field=lambda name: 0, kind=lambda name: "u", header=header, param=params.__getitem__)
    failed = _first_failure(_header_rules(), env)
    if failed is not None:
        return Refusal(ERROR_CODES[failed.error], None, failed.why)
    n_layers = header("n_layers")
    rows = np.frombuffer(blob, "<u4", n_layers * LAYER_WORDS, HEADER_BYTES).reshape(
        n_layers, LAYER_WORDS
    )
    for index, row in enumerate(rows):
        op = BY_CODE.get(int(row[0]))
        if op is None:
            return Refusal(ERROR_CODES["OP"], index, f"op code {int(row[0])}")
        env = _layer_env(op, row, header, params)
        failed = _first_failure((TASK_RULE, *op.rules), env)
        if failed is not None:
            return Refusal(ERROR_CODES[failed.error], index, failed.why or text(failed.must))
        index_check = op.extras.get("block_index")
        if index_check and int(row[op.index("blocks")]) != NONE:
            problem = block_index_problem(blob, op, row, params)
            if problem:
                return Refusal(ERROR_CODES["BLOCKS"], index, problem)
    return None


def block_index_problem(blob: bytes, op: OpSpec, row, params: dict) -> str:
    """The CSR index of a block-sparse layer: row_ptr[0] = 0, non-decreasing, last =
    nnz, every column a real input tile. (Its region was checked by the rules.)"""
    out_tiles = -(-int(row[op.index("out_dim")]) // params["tile_out"])
    in_tiles = -(-int(row[op.index("in_dim")]) // params["tile_in"])
    nnz = int(row[op.index("nnz")])
    at = int(row[op.index("blocks")])
    words = np.frombuffer(blob, "<i4", out_tiles + 1 + nnz, at).astype(np.int64)
    row_ptr, cols = words[: out_tiles + 1], words[out_tiles + 1 :]
    if row_ptr[0] != 0 or row_ptr[-1] != nnz or np.any(np.diff(row_ptr) < 0):
        return "row pointers not 0..nnz non-decreasing"
    if nnz and (cols.min() < 0 or cols.max() >= in_tiles):
        return "a tile column outside the input tiles"
    return ""


# ----------------------------------------------------------------------------- C++


def _cpp_const(value: int) -> str:
    return f"{value}LL"


def _cpp_target(op: OpSpec | None, params: dict) -> Target:
    kinds = dict(op.fields) if op else {}

    def field(name: str) -> str:
        if name == "task":
            return "(i64)d[D_TASK]"
        word = f"d[{op.name}_{name.upper()}]"
        return f"(i64)(u32){word}" if kinds[name] in UNSIGNED else f"(i64){word}"

    def header(name: str) -> str:
        return f"h_{name}"

    return Target(
        field=field,
        header=header,
        param=params.__getitem__,
        const=_cpp_const,
        fmt_word=lambda name: f"d[{op.name}_{name.upper()}]",
        sv=False,
    )


def _cpp_rules(rules, target: Target, indent: str) -> list[str]:
    lines = []
    for rule in rules:
        cond = f"!{emit(rule.must, target)}"
        if rule.when is not None:
            cond = f"{emit(rule.when, target)} && {cond}"
        lines.append(f"{indent}// {rule.why or text(rule.must)}")
        lines.append(f"{indent}if ({cond}) return ERR_{rule.error};")
    return lines


CPP_HEADER_VALUES = tuple(HEADER_WORD_INDEX)


def cpp_check(params: dict) -> str:
    """C++ of ``check_header`` and ``check_layer`` for the HLS kernel (codesign_top.cpp)."""
    lines = [
        "// Generated from the op registry (codesign.ops); do not edit by hand.",
        "struct header_values_t {",
    ]
    lines += [f"    i64 {name};" for name in (*CPP_HEADER_VALUES, "task")]
    lines += ["};", ""]
    lines += [
        "static void read_header_values(const i32 hdr[HEADER_WORDS], u32 task,",
        "                               header_values_t &hv) {",
    ]
    for name, (index, signed) in HEADER_WORD_INDEX.items():
        cast = "(i64)" if signed else "(i64)(u32)"
        lines.append(f"    hv.{name} = {cast}hdr[{index}];")
    lines += ["    hv.task = (i64)task;", "}", ""]
    header_target = _cpp_target(None, params)
    header_target.header = lambda name: f"hv.{name}"
    lines.append("static int check_header(const header_values_t &hv) {")
    lines += _cpp_rules(_header_rules(), header_target, "    ")
    lines += ["    return ERR_OK;", "}", ""]
    lines.append("static int check_layer(const i32 d[LAYER_WORDS], const header_values_t &hv) {")
    lines.append("    switch (d[D_OP]) {")
    for op in SPECS:
        target = _cpp_target(op, params)
        target.header = lambda name: f"hv.{name}"
        lines.append(f"        case OP_{op.name}: {{")
        lines += _cpp_rules((TASK_RULE, *op.rules), target, "            ")
        lines.append("            return ERR_OK;")
        lines.append("        }")
    lines += ["        default:", "            return ERR_OP;", "    }", "}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- SV


def sv_header_words() -> list[tuple[str, int]]:
    """(name, header word index) of every header word the SV check latches."""
    return [(name, index) for name, (index, _) in HEADER_WORD_INDEX.items()]


__all__ = [
    "BY_CODE",
    "BY_NAME",
    "LAYER_FIELDS",
    "SPECS",
    "Op",
    "OpSpec",
    "check_blob",
    "cpp_check",
    "kernel_check_params",
    "spec",
    "sv_header_words",
]
