"""Resource model of the accelerator: DSP, BRAM36, URAM, LUT and FF per unit, from the
ArchConfig and the Program's formats, and whether the design fits its board.

Every figure here is the estimator's (constants documented beside them), never a tool's:
Vivado's or Yosys's counts replace them where those ran (``codesign.rtl.synth``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..arch.config import MAC_PACK_BITS
from ..ops import spec
from ..program import padded
from .cycles import (
    _board,
    _check_arch,
    program_widths,
)

# DSP multiplier ports (signed operand widths) per device family.
DSP_PORTS = {"zynquplus": (27, 18), "zynq": (25, 18)}
INT8_PACKING_BITS = MAC_PACK_BITS  # both operands this narrow: one DSP48E2, two MACs

# Fabric per unit (LUT, FF), documented assumptions, not measurements: order-of-magnitude
# figures for pipelined HLS datapaths of this shape, used until Vitis reports replace them.
LUT_PER_PRODUCT_BIT = 1  # adder-tree LUTs per bit of a product that joins a sum
FF_PER_PRODUCT_BIT = 1  # one pipeline register per adder-tree bit
LANE_LUT, LANE_FF = 180, 260  # one post-op lane: align, shift_round, saturate, table index
CONTROL_LUT, CONTROL_FF = 3500, 4500  # descriptor fetch/decode, layer sequencer, loops
AXI_MASTER_LUT, AXI_MASTER_FF = 1800, 2600  # one m_axi adapter at 128 bits (scales with width)
AXI_LITE_LUT, AXI_LITE_FF = 400, 600  # s_axilite control slave
AXI_FIFO_DEPTH = 512  # words per m_axi read/write data FIFO (one per direction)
URAM_MIN_BITS = 1 << 20  # buffers at least this big go to UltraRAM while the board has it


class DesignDoesNotFit(ValueError):  # noqa: N818 (the message is the point)
    """The estimated design needs more of a resource than the board has."""


# ---------------------------------------------------------------- memories


BRAM36_SHAPES = ((512, 72), (1024, 36), (2048, 18), (4096, 9), (8192, 4), (16384, 2), (32768, 1))
BRAM18_SHAPES = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))
URAM_SHAPE = (4096, 72)


def bram36_for(depth: int, width: int) -> float:
    """BRAM36 tiles for one memory of `depth` words of `width` bits (0.5 = one BRAM18).

    The cheapest aspect ratio wins, as Vivado picks it; a memory that fits one
    BRAM18 costs half a tile."""
    if depth <= 0 or width <= 0:
        return 0.0
    if any(depth <= d and width <= w for d, w in BRAM18_SHAPES):
        return 0.5
    return float(min(-(-width // w) * -(-depth // d) for d, w in BRAM36_SHAPES))


def uram_for(depth: int, width: int) -> int:
    """URAM288 tiles (4K x 72 only) for one memory."""
    if depth <= 0 or width <= 0:
        return 0
    return -(-width // URAM_SHAPE[1]) * -(-depth // URAM_SHAPE[0])


@dataclass(frozen=True)
class Buffer:
    """An on-chip memory: `banks` independent memories of `depth` x `width` bits."""

    name: str
    banks: int
    depth: int
    width: int
    why: str

    @property
    def bits(self) -> int:
        return self.banks * self.depth * self.width

    @property
    def bram36(self) -> float:
        return self.banks * bram36_for(self.depth, self.width)

    @property
    def uram(self) -> int:
        return self.banks * uram_for(self.depth, self.width)


# ---------------------------------------------------------------- DSP arithmetic


def _pieces(bits: int, port: int) -> int:
    """DSP input ports of `port` bits one signed `bits`-bit operand is split over (the
    low pieces unsigned, port - 1 bits each; the top piece signed)."""
    return 1 if bits <= port else 1 + -(-(bits - port) // (port - 1))


def mult_dsps(a_bits: int, b_bits: int, family: str = "zynquplus") -> int:
    """DSP slices for one a x b multiply (27x18 DSP48E2, 25x18 DSP48E1): one per pair
    of pieces, with the operands on the ports that need the fewest (a 33 x 19 multiply
    is two: 19 bits on the wide port, 33 split over two narrow ones)."""
    big, small_port = DSP_PORTS[family]
    a_bits, b_bits = int(a_bits), int(b_bits)
    return min(
        _pieces(a_bits, big) * _pieces(b_bits, small_port),
        _pieces(a_bits, small_port) * _pieces(b_bits, big),
    )


def mac_dsps(act_bits: int, weight_bits: int, family: str = "zynquplus") -> float:
    """DSP slices per UCU MAC: INT8 x INT8 packs two MACs in one DSP48E2."""
    if family == "zynquplus" and act_bits <= INT8_PACKING_BITS and weight_bits <= INT8_PACKING_BITS:
        return 0.5
    return float(mult_dsps(act_bits, weight_bits, family))


# ---------------------------------------------------------------- resources


def _units(program) -> set[str]:
    """The hardware units the Program's ops need (each op's ``units`` in the registry)."""
    return {unit for layer in program.layers for unit in spec(layer.op).units}


def _layers_with(program, unit: str):
    return [layer for layer in program.layers if unit in spec(layer.op).units]


def _buffers(program, arch, widths: dict) -> list[Buffer]:
    """On-chip memories of the kernel (the arrays of hls_templates/codesign_top.cpp),
    sized by the ArchConfig maxima (one bitstream runs every Program within them) and
    as wide as the Program's formats need."""
    units = _units(program)
    act, table = widths["activation"], widths["table"]
    ti, to, slots = arch.tile_in, arch.tile_out, arch.attn_parallel
    tokens = arch.max_tokens
    row_max = padded(max(arch.max_in_dim, arch.max_hidden, 3 * arch.max_dim), ti)
    acc = act + widths["weight"] + max(arch.max_in_dim, arch.max_hidden).bit_length()
    buffers = [
        Buffer(
            "row_buffer",
            ti,
            tokens * row_max // ti,
            act,
            "x[max_tokens][row_max]: LINEAR input rows (read once, streamed past every "
            "weight tile), qkv of ATTENTION, gathered rows and hidden of an expert; "
            "Ti banks",
        ),
        Buffer(
            "ucu_accumulators",
            to,
            tokens,
            acc,
            "acc[max_tokens][To]: partial sums of one output tile row, drained while the "
            "next tile row starts (read-before-write); To banks",
        ),
        Buffer(
            "row_staging",
            3,
            arch.max_dim,
            32,
            "one source, residual and output row for LayerNorm, EMBED, ADD, MoE output",
        ),
    ]
    if "attention" in units:
        score = widths["score"]
        buffers += [
            Buffer(
                "attention_scores",
                slots,
                -(-tokens * tokens // slots),
                score,
                "scores[max_tokens][max_tokens] of one head between the Q.K and A.V "
                "passes; P banks",
            ),
            Buffer(
                "softmax_stats",
                1,
                tokens,
                score + table + 8,
                "running max m and 1/s (mantissa, exponent) per query of one head",
            ),
            Buffer(
                "attention_accumulators",
                slots,
                arch.max_dim,
                widths["prob"] + widths["qkv"] + tokens.bit_length(),
                "slot_acc[P][max_dim]: A.V sums of the P query slots",
            ),
        ]
    if "moe_buffers" in units:
        top_k = max(
            (layer.fields["top_k"] for layer in _layers_with(program, "moe_gate")), default=1
        )
        experts = arch.max_experts
        buffers += [
            Buffer(
                "moe_logits",
                1,
                tokens * experts,
                act,
                "logits[max_tokens][max_experts] of the gate",
            ),
            Buffer(
                "moe_queues",
                2,
                experts * tokens,
                max(widths["gate_score"], tokens.bit_length()),
                "queue ids and scores [max_experts][max_tokens]",
            ),
            Buffer(
                "moe_accumulators",
                to,
                -(-tokens * arch.max_dim // to),
                widths["gate_score"] + widths["expert_y"] + top_k.bit_length(),
                "moe_acc[max_tokens][max_dim]: exact sum of score x y over a token's "
                "experts until the one rounding; To banks",
            ),
        ]
    # lookup tables, loaded from the Program at start; one dual-port copy serves two lanes
    gelu_users = to if "gelu_table" in units else 0
    exp_users = (slots if "attention" in units else 0) + (1 if "moe_gate" in units else 0)
    table_specs = [
        ("gelu_delta", gelu_users, "GELU on every UCU output lane"),
        ("exp", exp_users, "one exp per attention slot (+ the gate softmax)"),
        ("recip", 2 if exp_users else 0, "softmax and gate 1/s"),
        ("rsqrt", 1 if "rsqrt_table" in units else 0, "one rsqrt per LayerNorm row"),
    ]
    for name, users, why in table_specs:
        if users:
            ref = program.tables[name]
            buffers.append(Buffer(f"table_{name}", -(-users // 2), ref.entries, ref.fmt.width, why))
    buffers.append(
        Buffer(
            "axi_fifos",
            2 + arch.weight_ports,
            AXI_FIFO_DEPTH,
            arch.bus_bits + 8,  # data plus last/strobe sideband
            "m_axi burst FIFOs: gmem0 read, gmem1 read and write, gmem2... read",
        )
    )
    return buffers


def _place_memories(buffers: list[Buffer], board) -> dict[str, str]:
    """Big buffers go to UltraRAM while the board has it left, largest first."""
    placement = {b.name: "bram" for b in buffers}
    uram_left = board.uram
    for buf in sorted(buffers, key=lambda b: -b.bits):
        if buf.bits >= URAM_MIN_BITS and 0 < buf.uram <= uram_left:
            placement[buf.name] = "uram"
            uram_left -= buf.uram
    return placement


def estimate_resources(program, arch, board) -> dict:
    """DSP, BRAM36, URAM, LUT, FF of the accelerator rendered for this Program.

    Returns totals plus a breakdown per unit and per buffer (see docs/hls.md for the
    assumptions behind each line)."""
    board = _board(board)
    family = board.family if board.family in DSP_PORTS else "zynquplus"
    widths = program_widths(program)
    needed = _units(program)
    ti, to, slots = arch.tile_in, arch.tile_out, arch.attn_parallel
    act, weight, table = widths["activation"], widths["weight"], widths["table"]
    bus_scale = arch.bus_bits / 128
    units: list[dict] = []

    def unit(name, dsp, lut, ff, why):
        units.append(
            {"name": name, "dsp": math.ceil(dsp), "lut": int(lut), "ff": int(ff), "why": why}
        )

    per_mac = mac_dsps(widths["matmul"], weight, family)
    product = widths["matmul"] + weight
    unit(
        "ucu",
        ti * to * per_mac,
        ti * to * product * LUT_PER_PRODUCT_BIT,
        ti * to * product * FF_PER_PRODUCT_BIT + 2 * ti * to * weight,
        f"Ti x To = {ti}x{to} MACs at {per_mac:g} DSP each ({widths['matmul']}-bit x "
        f"{weight}-bit), "
        "adder trees, double-buffered weight tile in registers",
    )
    lane_dsp = mult_dsps(table + 1, act, family)  # GELU interpolation
    unit(
        "ucu_output_lanes",
        to * lane_dsp,
        to * LANE_LUT,
        to * LANE_FF,
        f"{to} lanes: bias/residual align, requantise, GELU table interpolation",
    )
    if "moe_scatter" in needed:
        scatter = mult_dsps(widths["gate_score"], widths["expert_y"], family)
        unit(
            "moe_scatter",
            to * scatter,
            to * LANE_LUT,
            to * LANE_FF,
            f"{to} lanes of score x y into the exact MoE accumulators",
        )
    if "moe_gate" in needed:
        unit(
            "moe_gate",
            2 * mult_dsps(table + 1, table, family) + 1,
            40 * arch.max_experts + 2 * LANE_LUT,
            40 * arch.max_experts + 2 * LANE_FF,
            "softmax over experts (exp, 1/S), top-k insertion sort, queue append",
        )
    head_dim = max(
        (
            layer.fields["dim"] // layer.fields["heads"]
            for layer in _layers_with(program, "attention")
        ),
        default=0,
    )
    if head_dim:
        lanes = min(head_dim, arch.attention_lanes)  # values of a head row per cycle
        qkv, prob, score = widths["qkv"], widths["prob"], widths["score"]
        per_mult = max(mult_dsps(qkv, qkv, family), mult_dsps(prob, qkv, family))
        softmax = (
            mult_dsps(table + 1, score, family)
            + mult_dsps(widths["sum"], table, family)
            + mult_dsps(table, table, family)
        )
        unit(
            "attention",
            slots * lanes * per_mult + slots * softmax,
            slots * lanes * 2 * qkv * LUT_PER_PRODUCT_BIT + slots * 2 * LANE_LUT,
            slots * head_dim * (qkv + 32)
            + slots * lanes * 2 * qkv * FF_PER_PRODUCT_BIT
            + slots * 2 * LANE_FF,
            f"P x lanes = {slots}x{lanes} multipliers shared by Q.K and A.V "
            f"({per_mult} DSP each), per slot exp/rescale/probability multipliers, "
            "query registers and output accumulators",
        )
    if "layernorm" in needed:
        centred = act + arch.max_dim.bit_length() + 1
        per_lane = (
            mult_dsps(18, 18, family)  # (x >> t)^2, t keeps x >> t within 18 bits
            + mult_dsps(act, arch.max_dim.bit_length() + 1, family)  # D * x
            + mult_dsps(centred, table, family)  # (D x - S1) * rsqrt mantissa
            + mult_dsps(widths["norm"] or act, widths["gamma"] or 18, family)  # n * gamma
        )
        unit(
            "layernorm",
            ti * per_lane + 1,
            ti * LANE_LUT + 2 * LANE_LUT,
            ti * LANE_FF + 2 * LANE_FF,
            f"{ti} lanes: sums and squares, then (D x - S1) * rsqrt * gamma + beta",
        )
    if "elementwise" in needed:
        words = max(1, arch.bus_bits // 32)
        unit(
            "elementwise",
            words * mult_dsps(48, 18, family),
            to * LANE_LUT // 2 + arch.max_dim,  # POOL's column sums: 64 bits a LUT as RAM
            to * LANE_FF // 2,
            "EMBED / ADD / POOL lanes, POOL's scale multipliers and column sums",
        )
    unit(
        "control_and_axi",
        0,
        CONTROL_LUT + 2 * AXI_MASTER_LUT * bus_scale + AXI_LITE_LUT,
        CONTROL_FF + 2 * AXI_MASTER_FF * bus_scale + AXI_LITE_FF,
        "descriptor fetch and sequencer, m_axi gmem0/gmem1, s_axilite control",
    )
    buffers = _buffers(program, arch, widths)
    placement = _place_memories(buffers, board)
    memories = [
        {
            "name": b.name,
            "banks": b.banks,
            "depth": b.depth,
            "width": b.width,
            "kbits": round(b.bits / 1024, 1),
            "memory": placement[b.name],
            "bram36": b.bram36 if placement[b.name] == "bram" else 0.0,
            "uram": b.uram if placement[b.name] == "uram" else 0,
            "why": b.why,
        }
        for b in buffers
    ]
    hls = {
        "dsp": sum(u["dsp"] for u in units),
        "bram36": math.ceil(sum(m["bram36"] for m in memories)),
        "uram": sum(m["uram"] for m in memories),
        "lut": sum(u["lut"] for u in units),
        "ff": sum(u["ff"] for u in units),
    }
    rtl = _rtl_estimate(arch, widths, board)
    # the fit is judged on the open RTL's calibrated model where one exists for the part's
    # family (it is checked against Yosys); the HLS kernel's lines are uncalibrated
    totals = {key: rtl[key] for key in hls} if rtl else hls
    provisional = None if rtl else _rtl_estimate(arch, widths, board, provisional=True)
    return {
        **totals,
        "source": rtl["source"] if rtl else "estimator constants (HLS kernel, uncalibrated)",
        "hls": hls,
        "rtl": rtl,
        # not trusted yet, so not the fit: what the Yosys-calibrated model says meanwhile
        "rtl_provisional": (
            {key: provisional[key] for key in ("source", "runs", *hls)} if provisional else None
        ),
        "dsp_per_mac": per_mac,
        "widths": widths,
        "units": units,
        "memories": memories,
    }


def _rtl_estimate(arch, widths: dict, board, provisional: bool = False) -> dict | None:
    """The calibrated open-RTL model for the Program's widths, None without calibration
    (or, unless `provisional`, without one it trusts)."""
    from ..arch.config import Precision
    from .rtl_model import estimate_rtl, family_of, has_uram

    try:
        # program_widths: matmul <= activation (the UCU's inputs are activations too)
        precision = Precision(widths["weight"], widths["matmul"], widths["activation"])
    except ValueError:
        return None
    return estimate_rtl(arch, precision, family_of(board), uram=has_uram(board),
                        provisional=provisional)  # fmt: skip


def provisional_warning(resources: dict, board) -> str | None:
    """A sentence when the not-yet-trusted Yosys-calibrated model of the open RTL puts the
    design beyond the board's fit margins although the HLS constants said it fits."""
    from ..rtl import FIT_LIMITS

    model = resources.get("rtl_provisional")
    if not model:
        return None
    board = _board(board)
    over = [
        f"{RESOURCE_LABELS[key]} {model[key]:,.0f} ({100 * model[key] / capacity:.0f} % of "
        f"{capacity:,})"
        for key, limit in FIT_LIMITS.items()
        if key in model and (capacity := getattr(board, key)) and model[key] > limit * capacity
    ]
    if not over:
        return None
    return (
        f"the open RTL's resource model, {model['source']}, puts this design at "
        + ", ".join(over)
        + f" on the {board.name}, beyond the fit margins; the fit above rests on the HLS "
        "estimator's constants"
    )


RESOURCE_LABELS = {"dsp": "DSP", "bram36": "BRAM36", "uram": "URAM", "lut": "LUT", "ff": "FF"}


def fit_table(resources: dict, board) -> dict:
    """used / available / ok per resource on the board."""
    board = _board(board)
    table = {}
    for key in RESOURCE_LABELS:
        used, available = resources[key], getattr(board, key)
        table[key] = {
            "used": used,
            "available": available,
            "percent": round(100.0 * used / available, 1) if available else None,
            "ok": used <= available,
        }
    return table


def fit_problems(fits: dict, board_name: str) -> list[str]:
    """One sentence per resource the design overshoots."""
    problems = []
    for key, label in RESOURCE_LABELS.items():
        entry = fits[key]
        if entry["ok"]:
            continue
        used, available = entry["used"], entry["available"]
        over = used - available
        share = f", {100 * over / available:.0f}%" if available else ""
        problems.append(
            f"{label}: design needs {used:g}, {board_name} has {available:g} "
            f"(over by {over:g}{share})"
        )
    return problems


def margin_problems(fits: dict, board_name: str) -> list[str]:
    """One sentence per resource beyond its fit margin (``codesign.rtl.FIT_LIMITS``: LUT
    and FF 85 %, DSP, BRAM36 and URAM 90 %): a design that needs more may not place and
    route, so the automatic choice of an ArchConfig keeps within them."""
    from ..rtl import FIT_LIMITS

    problems = []
    for key, label in RESOURCE_LABELS.items():
        used, available = fits[key]["used"], fits[key]["available"]
        limit = FIT_LIMITS[key] * available
        if used <= limit:
            continue
        share = f" ({100 * used / available:.0f} %)" if available else ""
        problems.append(
            f"{label}: design needs {used:,.0f}{share}, {board_name} has {available:,} and the "
            f"fit margin is {100 * FIT_LIMITS[key]:.0f} % ({limit:,.0f}; over by "
            f"{used - limit:,.0f})"
        )
    return problems


def choice_problems(resources: dict, board) -> list[str]:
    """Why a design is not a safe automatic choice on `board`: beyond its capacity, or, when
    `resources` come from the Yosys-calibrated model, beyond its fit margins (the build's
    choice of an ArchConfig and the explorer's "fits" both ask this)."""
    board = _board(board)
    fits = fit_table(resources, board)
    margins = margin_problems(fits, board.name) if resources.get("rtl") else []
    return fit_problems(fits, board.name) or margins


def check_fits(program_or_estimate, arch=None, board=None) -> dict:
    """Raise DesignDoesNotFit naming each resource and its overshoot; return the fit table.

    Takes a Program with its ArchConfig and board, or a dict from ``estimate_program`` /
    ``estimate_report_section``."""
    if isinstance(program_or_estimate, dict):
        estimate = program_or_estimate
        fits = estimate["fits"]
        board_name = estimate.get("board") or estimate["assumptions"]["board"]
    else:
        if arch is None or board is None:
            raise TypeError("check_fits(program, arch, board): arch and board are required")
        board = _board(board)
        _check_arch(program_or_estimate, arch)
        fits = fit_table(estimate_resources(program_or_estimate, arch, board), board)
        board_name = board.name
    problems = fit_problems(fits, board_name)
    if problems:
        raise DesignDoesNotFit(
            f"the design does not fit {board_name}: " + "; ".join(problems)
            + ". Use a smaller ArchConfig (tile_in, tile_out, attn_parallel, max_*) "
            "or a narrower precision."
        )  # fmt: skip
    return fits
