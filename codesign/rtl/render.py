"""Render the open SystemVerilog units from ``hls_templates/rtl/*.sv.j2``.

One template renders one module into ``<module>.sv`` (Verilator wants a module per
file); the lookup-table ROMs are the exception: ``cds_rom.sv.j2`` renders once per
table of :func:`codesign.numerics.tables.build_tables` into ``cds_rom_<table>.sv``, with
the entries the golden executor uses. A template names the modules it instantiates in
a header comment (``deps:`` followed by module names, inside a Jinja comment), so new
units (attention, layer norm, router) only add a template: :func:`unit_sources` follows
the dependencies and :func:`render_all` picks up every template in the directory.

Jinja2 expressions are written ``{= expr =}`` (SystemVerilog owns ``{{ }}``); blocks and
comments keep ``{% %}`` and ``{# #}``. Every template sees the same context: ``arch``
(the :class:`ArchConfig`), ``p`` (the derived widths and depths of :func:`rtl_params`)
and ``tables`` (name -> :class:`RomInfo`). Undefined names are errors (StrictUndefined).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..arch.config import (
    MAC_PACK_BITS,
    RTL_LATENCY,
    ArchConfig,
    Precision,
    output_lanes,
    parse_precision,
)
from ..arch.regmap import register_map, weight_registers
from ..contract import BIAS_SHIFT_BITS, CHECK_ERRORS, DEBUG_REGISTERS
from ..hls.render import kernel_params
from ..numerics.tables import Table, build_tables
from ..program import (
    _H_TABLES,
    FIELD_WORDS,
    HEADER_BYTES,
    HEADER_FIELDS,
    LAYER_FIELDS,
    LAYER_WORDS,
    MAGIC,
    MAX_TASKS,
    TABLE_NAMES,
    TABLE_WORDS,
    VERSION,
    Op,
    pack_fmt,
)

TOP = "codesign_top"  # the accelerator
SIM_TOP = "codesign_tb"  # the accelerator on the simulated DDR (not for synthesis)

# Descriptor field -> word index among the op's fields (word 2 of the descriptor is 0):
# templates read `fields.LINEAR.rows`, so the RTL follows program.py, never a copy.
DESCRIPTOR_FIELDS = {
    op.name: {name: index for index, name in enumerate(names)} for op, names in LAYER_FIELDS.items()
}

__all__ = [
    "MOE_UNITS",
    "TEMPLATE_DIR",
    "RomInfo",
    "design_units",
    "list_units",
    "render_all",
    "rom_info",
    "rtl_params",
    "unit_sources",
    "write_rtl",
]

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "hls_templates" / "rtl"
ROM_TEMPLATE = "cds_rom"  # renders cds_rom_<table> for each table
# modules rendered from another module's template with these variables (the template's
# own module gets the variables' defaults): one source for both forms
VARIANTS = {"cds_requant_pipe": ("cds_requant", {"pipe": True})}
VARIANT_DEFAULTS = {"cds_requant": {"pipe": False}}
LATENCY = RTL_LATENCY  # what the templates count pipeline stages with
_DEPS_RE = re.compile(r"\{#-?\s*deps:\s*([\w\s]*?)\s*-?#\}")

# Post-op codes of the LINEAR descriptor (codesign.program.Post) plus the UCU's MoE mode.
POST_NONE, POST_GELU, POST_ADD, POST_SCORE = 0, 1, 2, 3


def _clog2(value: int) -> int:
    return max(1, (int(value) - 1).bit_length())


@dataclass(frozen=True)
class RomInfo:
    """What the RTL needs of one table: geometry, entry format and the entries."""

    name: str
    module: str
    width: int
    frac: int
    index_bits: int
    guard_bits: int
    step_bits: int
    n_segments: int
    n_entries: int
    addr_bits: int
    diff_bits: int
    values: tuple[int, ...]

    @property
    def words(self) -> list[tuple[int, int]]:
        """ROM word per segment i: (T[i], T[i+1] - T[i]); one read feeds one interpolation."""
        vals = self.values
        return [(vals[i], vals[i + 1] - vals[i]) for i in range(self.n_segments)]

    def word_hex(self, base: int, diff: int) -> str:
        """SystemVerilog literal of {diff, base} (diff as two's complement)."""
        bits = self.diff_bits + self.width
        word = ((diff & ((1 << self.diff_bits) - 1)) << self.width) | base
        return f"{bits}'h{word:0{-(-bits // 4)}x}"


def _signed_bits(values) -> int:
    """Two's complement width holding every value (at least 2 bits)."""
    lo, hi = min(values), max(values)
    return max(2, hi.bit_length() + 1, (-lo - 1).bit_length() + 1)


def rom_info(table: Table) -> RomInfo:
    """Geometry and contents of one ROM; the entries are the golden executor's."""
    vals = [int(v) for v in table.values]
    diffs = [vals[i + 1] - vals[i] for i in range(table.n_segments)]
    return RomInfo(
        name=table.name,
        module=f"{ROM_TEMPLATE}_{table.name}",
        width=table.fmt.width,
        frac=table.fmt.frac_bits,
        index_bits=table.index_bits,
        guard_bits=table.guard_bits,
        step_bits=table.step_bits,
        n_segments=table.n_segments,
        n_entries=table.n_entries,
        addr_bits=_clog2(table.n_segments),
        diff_bits=_signed_bits(diffs),
        values=tuple(vals),
    )


# the high MAC's weight sits this far up: its 9-bit field (w_hi less w_lo's sign, which
# reaches -129) + 16 bits fit a DSP48E1/E2 port, and |x * w_lo| <= 2**14 < 2**15
PACK_SHIFT = 16


# Deeper single-port memories (read and write on one address) are marked block RAM: Yosys
# 0.70's UltraScale+ LUTRAM library offers a 64K x 1 single-port option its techmap has no
# primitive for ("invalid OPTION_ABITS/WIDTH combination"), and libmap picks it for a
# deep, narrow memory where block RAM costs more (measured: the MoE scores bank of 2,048 x
# 19 on a 64-bit bus). Vivado honours the same attribute.
SP_LUTRAM_MAX_DEPTH = 256


def rtl_params(arch: ArchConfig, precision: Precision | str | None = None) -> dict:
    """Widths and depths of the RTL derived from the ArchConfig and the precision.

    ``x_bits``/``w_bits`` are the widest activation and weight formats the datapath
    carries (one DSP48E2 per MAC needs <= 27 x 18); ``mul_x_bits`` the activations the
    UCU multiplies (narrower than ``x_bits`` when the residual stream is wider,
    ``w8a8r16``: the engines carry 16 bits, the UCU's multipliers 8); ``acc_bits`` holds
    any exact dot product over ``max_in`` inputs; ``sum_bits`` = 64 matches the golden
    executor's int64 arithmetic for bias, residual and requantisation; ``macc_bits`` holds the MoE
    score-weighted accumulator (score <= 18 bits times an activation, summed over top-k).
    """
    from ..estimate.memories import attention_banks
    from ..estimate.resources import mult_dsps

    prec = parse_precision(precision)
    x_bits, w_bits, mul_x_bits = prec.stream_bits, prec.weight_bits, prec.activation_bits
    w_container = 8 if w_bits <= 8 else 16 if w_bits <= 16 else 32  # weight_container_bytes
    max_in = max(arch.max_in_dim, arch.max_hidden, arch.max_dim)
    max_out = max(3 * arch.max_dim, arch.max_hidden, arch.max_in_dim, arch.max_dim)
    tile_bits = arch.tile_in * arch.tile_out * w_container
    # a weight beat: one bus beat of every weight master (ArchConfig.weight_ports)
    w_bus_bits = arch.weight_ports * arch.bus_bits
    load_beats = -(-tile_bits // w_bus_bits)
    regmap = register_map(arch.weight_ports)
    # beats a row of the window's RAM: the UCU's input tile, so its x rows load a tile a
    # cycle (1: no x port, the tile is no wider than a beat)
    window_banks = arch.window_banks
    return {
        "ti": arch.tile_in,
        "to": arch.tile_out,
        "bus_bits": arch.bus_bits,
        "x_bits": x_bits,
        "mul_x_bits": mul_x_bits,
        "w_bits": w_bits,
        "w_container": w_container,
        "acc_bits": mul_x_bits + w_bits + _clog2(max_in),
        "sum_bits": 64,
        "y_bits": x_bits,
        "score_bits": 18,
        "prob_bits": 18,  # an attention probability, signed container (unsigned formats <= 17)
        "norm_param_bits": max(w_bits, 18),  # LayerNorm's gamma and beta
        "macc_bits": 48,
        "side_bits": 48,
        "max_rows": arch.max_tokens,
        "row_bits": _clog2(arch.max_tokens + 1),
        "row_addr_bits": _clog2(arch.max_tokens),
        "max_in_tiles": -(-max_in // arch.tile_in),
        "in_tile_bits": _clog2(-(-max_in // arch.tile_in) + 1),
        "max_out_tiles": -(-max_out // arch.tile_out),
        "out_tile_bits": _clog2(-(-max_out // arch.tile_out) + 1),
        "load_beats": load_beats,  # weight beats per stored tile
        "weight_ports": arch.weight_ports,
        "w_bus_bits": w_bus_bits,
        "ddr_ports": 1 + arch.weight_ports,  # the simulation DDR's slaves: one per master
        # the further weight masters' address registers: (index, offset of the low word)
        "weight_regs": [
            (index + 1, regmap.offset(name))
            for index, name in enumerate(weight_registers(arch.weight_ports))
        ],
        # MACs per multiplier of the UCU array: two adjacent output columns share their
        # input in one multiply when both operands have at most MAC_PACK_BITS bits
        "mac_pack": 2 if max(mul_x_bits, w_bits) <= MAC_PACK_BITS and arch.tile_out % 2 == 0 else 1,
        "mac_pack_shift": PACK_SHIFT,
        # output stages' lanes (codesign.arch.config.output_lanes): UCU drain, attention
        # output, LayerNorm's normalise pass, MoE final pass
        "drain_lanes": arch.output_lanes,
        # DSPs of one drain lane's post-ops: GELU's interpolation (table difference x the
        # unsigned input fraction) and the MoE score multiply (y x unsigned 18-bit score)
        "post_op_dsps": mult_dsps(18, x_bits + 1) + mult_dsps(x_bits, 18 + 1),
        "drain_chunks": arch.drain_chunks,
        # the window's row port for the UCU's output rows (ArchConfig.y_port)
        "y_port": arch.y_port,
        # the attention datapath's lanes (a head row passes in attn_chunks cycles of them)
        "attn_lanes": arch.attention_lanes,
        "attn_chunks": -(-arch.max_head_dim // arch.attention_lanes),
        "attn_out_lanes": output_lanes(arch.attention_lanes, arch.bus_bits),
        "norm_lanes": arch.norm_lanes,
        "moe_out_lanes": arch.final_lanes,
        "moe": arch.has_moe,  # the MoE engine (max_experts 0: none)
        "post_none": POST_NONE,
        "post_gelu": POST_GELU,
        "post_add": POST_ADD,
        "post_score": POST_SCORE,
        "bias_shift_bits": BIAS_SHIFT_BITS,  # a bias word's low bits: the column's weight shift
        "sp_lutram_max_depth": SP_LUTRAM_MAX_DEPTH,
        # the arena's on-chip window (cds_arena_window), bus beats; 0: none
        "window_beats": arch.arena_window_bytes // (arch.bus_bits // 8),
        "window_banks": window_banks,
        # attention's q/k/v banks: as many as its lanes, a bus beat's words and, with the
        # window's x port (whose rows it loads too), the UCU's input tile
        "attn_banks": attention_banks(
            arch.attention_lanes, arch.bus_bits // 32, arch.tile_in if window_banks > 1 else 0
        ),
    }


def on_window_rows(addr: str, stride: str, row_bits: str) -> str:
    """The SystemVerilog test that rows at byte address ``addr``, ``stride`` bytes apart,
    lie in the arena's on-chip window on whole RAM rows of 2**``row_bits`` 32-bit words,
    so an engine may move them over the window's row ports (decided once per op)."""
    return (
        f"{addr} < window_bytes && {addr}[{row_bits}+1:0] == '0 && {stride}[{row_bits}+1:0] == '0"
    )


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        # SystemVerilog uses {{ }} for replication, so expressions are written {= expr =}
        variable_start_string="{=",
        variable_end_string="=}",
    )
    env.globals["on_window_rows"] = on_window_rows
    return env


def _template_names() -> list[str]:
    return sorted(p.name.removesuffix(".sv.j2") for p in TEMPLATE_DIR.glob("*.sv.j2"))


def _deps(template: str) -> list[str]:
    text = (TEMPLATE_DIR / f"{template}.sv.j2").read_text()
    match = _DEPS_RE.search(text)
    return match.group(1).split() if match else []


# the MoE engine's modules: a design without it (ArchConfig.max_experts 0) renders none
MOE_UNITS = ("cds_eng_moe", "cds_eng_moe_tb", "moe_router_core")


def design_units(arch: ArchConfig) -> list[str]:
    """The units of `arch`'s design: every template's but the MoE engine's without one."""
    return [unit for unit in list_units() if arch.has_moe or unit not in MOE_UNITS]


def list_units() -> list[str]:
    """Every module the templates provide (ROMs expanded per table)."""
    names = []
    for template in _template_names():
        if template == ROM_TEMPLATE:
            names += [f"{ROM_TEMPLATE}_{t}" for t in ("gelu_delta", "exp", "recip", "rsqrt")]
        else:
            names.append(template)
    return sorted(names + list(VARIANTS))


def header_context(tables: dict[str, Table]) -> dict:
    """What the controller checks in a Program's header: word indices, constants, and
    for each baked ROM the table header words a matching Program must carry."""
    words = {name: 2 + index for index, name in enumerate(HEADER_FIELDS)}
    checks = []
    for index, name in enumerate(TABLE_NAMES):
        table = tables[name]
        base = _H_TABLES + index * len(TABLE_WORDS)
        expected = {
            "entries": len(table.values),
            "fmt": pack_fmt(table.fmt),
            "index_bits": table.index_bits,
            "guard_bits": table.guard_bits,
            "domain_log2": round(math.log2(table.domain)) & 0xFFFFFFFF,
            "kind": table.kind,
        }
        for word, value in expected.items():
            checks.append((f"{name}.{word}", base + TABLE_WORDS.index(word), value))
    return {
        "words": words,
        "magic_lo": int.from_bytes(MAGIC[:4], "little"),
        "magic_hi": int.from_bytes(MAGIC[4:], "little"),
        "version": VERSION,
        "header_bytes": HEADER_BYTES,
        "header_words": HEADER_BYTES // 4,
        "layer_words": LAYER_WORDS,
        "max_tasks": MAX_TASKS,
        "table_checks": checks,
        "ops": {op.name: int(op) for op in Op},
        "errors": {name: code for code, name, _ in CHECK_ERRORS},
    }


def softmax_sum_bits(arch: ArchConfig, exp_frac: int) -> int:
    """The attention core's running-sum container (signed): the exp table's fraction
    bits, the integer bits of max_tokens ones, a sign and a guard bit."""
    return exp_frac + arch.max_tokens.bit_length() + 2


def rtl_check_params(arch: ArchConfig, precision) -> dict:
    """``ops.kernel_check_params`` for an RTL build: its precision's weight container and
    the widths its datapaths carry (``ops.base.DATAPATH_BITS``), so the controller refuses
    a Program quantised for a wider precision instead of running it on truncated words."""
    from ..ops import kernel_check_params

    p = rtl_params(arch, precision)
    exp_frac = build_tables(**arch.table_params())["exp"].fmt.frac_bits
    datapath = {
        "act_bits": p["x_bits"],
        "mul_bits": p["mul_x_bits"],
        "weight_bits": p["w_bits"],
        "prob_bits": min(p["prob_bits"], p["score_bits"]),
        "sum_bits": softmax_sum_bits(arch, exp_frac),
        "norm_param_bits": p["norm_param_bits"],
    }
    return kernel_check_params(arch, w_bytes=(p["w_container"] // 8,), datapath_bits=datapath)


def check_context(arch: ArchConfig, precision) -> dict:
    """The controller's header and layer checks, generated from the op registry's rules
    with this build's constants (its weight container: one precision per RTL build)."""
    from ..ops import OP_CODE_BITS, microcode, sv_header_words

    params = rtl_check_params(arch, precision)
    sources = ("REG", "IMM", "FIELD_U", "FIELD_S", "HDR_U", "HDR_S", "TASK", "RUN_TASK")
    return {
        "engine": microcode.image(params),
        "mc": {
            "word_bits": microcode.WORD_BITS,
            "imm_bits": microcode.IMM_BITS,
            "sel_bits": microcode.SEL_BITS,
            "op": microcode.OP,
            "src": {name: getattr(microcode, f"SRC_{name}") for name in sources},
        },
        "header_words": sv_header_words(),
        "op_bits": OP_CODE_BITS,
    }


def _context(arch: ArchConfig, precision) -> dict:
    tables = build_tables(**arch.table_params())
    check = check_context(arch, precision)
    return {
        "check": check,
        "debug_registers": DEBUG_REGISTERS,
        "op_bits": check["op_bits"],
        "arch": arch,
        "p": rtl_params(arch, precision),
        "tables": {name: rom_info(table) for name, table in tables.items()},
        "fields": DESCRIPTOR_FIELDS,
        "field_words": FIELD_WORDS,
        "header": header_context(tables),
        "softmax_sum_bits": softmax_sum_bits(arch, tables["exp"].fmt.frac_bits),
        "limits": _kernel_limits(arch),
        "latency": LATENCY,
    }


def _kernel_limits(arch: ArchConfig) -> dict:
    """The HLS kernel's layer size limits, so both kernels refuse the same Programs."""
    params = kernel_params(arch)
    return {name: params[name] for name in ("max_lin_in", "max_lin_out", "row_max")}


def _render(module: str, context: dict) -> str:
    env = _environment()
    header = f"// {module}.sv: generated by codesign.rtl from hls_templates/rtl; do not edit.\n"
    if module.startswith(f"{ROM_TEMPLATE}_"):
        rom = context["tables"][module.removeprefix(f"{ROM_TEMPLATE}_")]
        text = env.get_template(f"{ROM_TEMPLATE}.sv.j2").render(**context, rom=rom)
    else:
        template, variables = VARIANTS.get(module, (module, VARIANT_DEFAULTS.get(module, {})))
        text = env.get_template(f"{template}.sv.j2").render(**context, **variables)
    return header + text


def _module_deps(module: str) -> list[str]:
    if module.startswith(f"{ROM_TEMPLATE}_"):
        return _deps(ROM_TEMPLATE)
    return _deps(VARIANTS.get(module, (module,))[0])


def unit_sources(
    tops: str | Iterable[str], arch: ArchConfig, precision: Precision | str | None = None
) -> dict[str, str]:
    """{filename: SystemVerilog} for `tops` and everything they instantiate.

    Dependencies come before their users, so the dict's order is a valid compile order.
    """
    tops = [tops] if isinstance(tops, str) else list(tops)
    known = set(list_units())
    # a top's static deps name the MoE engine; a design without one does not instantiate it
    absent = set() if arch.has_moe else set(MOE_UNITS) - set(tops)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(module: str) -> None:
        if module in order or module in absent:
            return
        if module not in known:
            raise ValueError(f"no RTL template provides module {module!r} (in {TEMPLATE_DIR})")
        if module in visiting:
            raise ValueError(f"template dependency cycle through {module!r}")
        visiting.add(module)
        for dep in _module_deps(module):
            visit(dep)
        visiting.discard(module)
        order.append(module)

    for top in tops:
        visit(top)
    context = _context(arch, precision)
    return {f"{module}.sv": _render(module, context) for module in order}


def render_all(arch: ArchConfig, precision: Precision | str | None = None) -> dict[str, str]:
    """Every unit of `arch`'s design (design_units), in compile order."""
    return unit_sources(design_units(arch), arch, precision)


def rtl_files(arch: ArchConfig, precision: Precision | str | None = None) -> dict[str, str]:
    """Every rendered unit, plus ``filelist.f`` (the accelerator, ``codesign_top`` and what
    it instantiates, in compile order: what a synthesis project takes) and
    ``filelist_sim.f`` (``codesign_tb``: the top with the simulated DDR)."""
    files = dict(render_all(arch, precision))
    for listing, top in (("filelist.f", TOP), ("filelist_sim.f", SIM_TOP)):
        names = unit_sources(top, arch, precision)
        files[listing] = "".join(f"{name}\n" for name in names)
    return files


def write_rtl(
    out_dir: Path | str,
    arch: ArchConfig,
    precision: Precision | str | None = None,
    files: dict[str, str] | None = None,
) -> list[Path]:
    """Write ``rtl_files`` (or ``files``, already rendered) into `out_dir`; the .sv paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (files or rtl_files(arch, precision)).items():
        path = out / name
        path.write_text(text)
        if name.endswith(".sv"):
            paths.append(path)
    return paths
