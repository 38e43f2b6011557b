"""Cycle model of the accelerator: the schedule the HLS kernel and the RTL implement.

One formula per operation, shared by the build report, the HLS templates' design
notes and the RTL cycle-count tests (which compare measured cycles to these). All
counts are PL clock cycles. A DDR beat is one bus word (``arch.bus_bytes``); each
AXI master moves at most one beat per cycle (weights/tables on the program port,
activations on the arena port).

Schedules:

- **UCU (LINEAR, MoE gate and experts)**: for each output tile row, for each stored
  input tile, the To x Ti weight tile loads into the shadow buffer while the previous
  tile computes; then every row (token) streams past it, one row of Ti inputs per
  cycle (Ti*To MACs per cycle). A tile costs ``max(rows, load_beats)``; the first load
  and the last output drain (``rows`` cycles, overlapped with the next tile row
  otherwise) are exposed once, plus the pipeline depth.
- **Attention**: per head, Q·K and A·V each stream K (resp. V) past P query slots in
  the rotated order: ``ceil(N/P) * N + P - 1`` cycles per pass, one key per cycle.
- **LayerNorm**: per row, one pass of ``ceil(dim/Ti)`` cycles for sums, one of the
  same length to normalise; **EMBED / ADD**: ``ceil(cols/To)`` cycles per row.

Program level (second half): ``estimate_program`` walks a Program as the kernel does and
gives cycles per layer, latency at the board clock, DSP/BRAM/URAM/LUT/FF and whether the
design fits; ``estimate_report_section`` is the build report's ``estimate`` entry,
``check_fits`` refuses a design that does not fit. Assumptions: docs/hls.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .arch import Board, get_board
from .program import HEADER_BYTES, LAYER_WORDS, NONE, Op, Post, padded, unpack_fmt

UCU_PIPELINE = 8  # cycles from a row entering the array to its accumulators updating
ATTENTION_PIPELINE = 16  # score -> exp -> running sum / recip pipeline
LAYERNORM_PIPELINE = 24  # sums -> rsqrt table -> first normalised element
ELEMENTWISE_PIPELINE = 4
GATE_PIPELINE = 16
EXPERT_HANDOFF = 48  # per expert: fc1's writes acknowledged, fc2's job started


def beats(nbytes: int, bus_bytes: int) -> int:
    """DDR beats to move `nbytes` over a bus of `bus_bytes`."""
    return -(-int(nbytes) // bus_bytes)


def tile_load_beats(tile_in: int, tile_out: int, weight_bytes: int, bus_bytes: int) -> int:
    """Beats to load one To x Ti weight tile (tiles are padded to whole beats)."""
    return beats(tile_in * tile_out * weight_bytes, bus_bytes)


def ucu_cycles(rows: int, stored_tiles: int, out_tiles: int, load_beats: int) -> int:
    """UCU compute cycles for one weight matrix (excluding activation DMA).

    ``stored_tiles``: tiles actually stored (all tiles when dense, non-zero tiles when
    block-sparse), spread over ``out_tiles`` output tile rows.
    """
    if stored_tiles == 0:
        return rows + UCU_PIPELINE  # bias-only outputs still drain
    return load_beats + stored_tiles * max(rows, load_beats) + rows + UCU_PIPELINE


def linear_cycles(rows: int, in_dim: int, out_dim: int, tile_in: int, tile_out: int,
                  weight_bytes: int, bus_bytes: int, stored_tiles: int | None = None,
                  residual: bool = False) -> int:  # fmt: skip
    """A LINEAR layer: input rows read once into the on-chip row buffer (exposed),
    the UCU schedule, residual reads and output writes overlapped with the drain."""
    out_tiles = -(-out_dim // tile_out)
    in_tiles = -(-in_dim // tile_in)
    stored = out_tiles * in_tiles if stored_tiles is None else stored_tiles
    load = tile_load_beats(tile_in, tile_out, weight_bytes, bus_bytes)
    x_beats = rows * beats(4 * in_dim, bus_bytes)
    # every output row of a tile is To int32 words on the bus: with few input tiles the
    # writes (and residual reads, on the other port) outlast the MACs
    writes = out_tiles * rows * beats(4 * tile_out, bus_bytes) + load + rows + UCU_PIPELINE
    return x_beats + max(ucu_cycles(rows, stored, out_tiles, load), writes)


def attention_cycles(tokens: int, dim: int, heads: int, parallel: int, bus_bytes: int) -> int:
    """Reordered attention: qkv read once, per head two rotated passes, output written
    while the last pass drains."""
    slots = min(parallel, tokens)
    per_pass = -(-tokens // slots) * tokens + slots - 1
    qkv_beats = tokens * beats(4 * 3 * dim, bus_bytes)
    return qkv_beats + heads * (2 * per_pass + ATTENTION_PIPELINE)


def layernorm_cycles(rows: int, dim: int, lanes: int, bus_bytes: int) -> int:
    per_row = 2 * -(-dim // lanes)
    return rows * max(per_row, beats(4 * dim, bus_bytes)) + LAYERNORM_PIPELINE


def elementwise_cycles(rows: int, cols: int, lanes: int, bus_bytes: int, inputs: int = 1) -> int:
    """EMBED / ADD: `lanes` elements per cycle, bounded by reading `inputs` streams."""
    per_row = max(-(-cols // lanes), inputs * beats(4 * cols, bus_bytes))
    return rows * per_row + ELEMENTWISE_PIPELINE


def gate_cycles(tokens: int, dim: int, experts: int, top_k: int, tile_in: int, tile_out: int,
                weight_bytes: int, bus_bytes: int) -> int:  # fmt: skip
    """Gate logits on the UCU, then per token a softmax over experts (one per cycle),
    top-k selection; the k queue appends overlap the next token's scan."""
    logits = linear_cycles(tokens, dim, experts, tile_in, tile_out, weight_bytes, bus_bytes)
    queue = queue_beats(experts, experts, tokens, bus_bytes)  # counts, ids, scores written
    return logits + tokens * max(experts, top_k) + queue + GATE_PIPELINE


def queue_beats(experts: int, rows: int, tokens: int, bus_bytes: int) -> int:
    """The MoE queue in the arena: counts[E], then ids and scores rows of `rows` experts."""
    return beats(4 * experts, bus_bytes) + 2 * rows * beats(4 * tokens, bus_bytes)


def experts_cycles(counts: list[int], tokens: int, dim: int, hidden: int, tile_in: int,
                   tile_out: int, weight_bytes: int, bus_bytes: int) -> int:  # fmt: skip
    """Only experts with tokens run; each loads its weights once and gathers its rows.

    The queue is read back first (counts, then ids and scores of the experts with tokens);
    fc1's GELU output goes to the arena's scratch rows, which fc2 reads after the writes
    have landed (EXPERT_HANDOFF: write acknowledgement and the two job starts)."""
    active = [count for count in counts if count]
    total = queue_beats(len(counts), len(active), tokens, bus_bytes)
    for count in active:
        total += linear_cycles(count, dim, hidden, tile_in, tile_out, weight_bytes, bus_bytes)
        total += count * beats(4 * hidden, bus_bytes) + EXPERT_HANDOFF
        total += ucu_cycles(
            count,
            -(-dim // tile_out) * -(-hidden // tile_in),
            -(-dim // tile_out),
            tile_load_beats(tile_in, tile_out, weight_bytes, bus_bytes),
        )
    residual = tokens * beats(4 * dim, bus_bytes)
    return total + residual + ELEMENTWISE_PIPELINE


def balanced_counts(tokens: int, experts: int, top_k: int) -> list[int]:
    """Expert queue lengths when routing is perfectly balanced (no golden run at hand)."""
    total = tokens * top_k
    return [total // experts + (1 if e < total % experts else 0) for e in range(experts)]


def utilisation(rows: int, in_dim: int, out_dim: int, tile_in: int, tile_out: int,
                cycles: int) -> float:  # fmt: skip
    """Useful MACs over the array's capacity in `cycles`."""
    return rows * in_dim * out_dim / (tile_in * tile_out * cycles) if cycles else 0.0


# =====================================================================================
# Program level: per-layer cycles, latency at the board clock, resources, fit check
# =====================================================================================
#
# The functions below walk a Program the way the kernel does (header, then one
# descriptor per layer; layers of another task are read and skipped) and apply the
# per-operation formulas above. On top of those formulas they add only what the
# formulas leave out on purpose: the start of a run (header, descriptor check, table
# loads), the descriptor fetch per layer, and the board's DDR bandwidth as an upper
# bound on what both AXI masters together can move.

LAYER_DISPATCH = 4  # decode a fetched descriptor and start the op's engine
AXI_LATENCY = 64  # first-beat latency of a PL read from PS DDR (~210 ns at 300 MHz)
DESCRIPTOR_BYTES = 4 * LAYER_WORDS  # one layer descriptor, fetched in one burst
# DDR round trips a layer leaves exposed because each waits for the one before: the
# descriptor, the first operands, the write acknowledgement at the end; LayerNorm and
# EMBED/ADD partly wait on parameters or second operands too. MoE experts: descriptor,
# queue counts, then ids/scores, the residual pass and its acknowledgement, and per
# expert with tokens its fc1 operands, fc1's write acknowledgement, fc2's scratch reads.
# Measured on the RTL top as the slope of per-layer cycles over DDR latency
# (benchmarks/bench_e2e.py --latency 2 64): see docs/rtl-top.md.
LAYER_ROUND_TRIPS = {
    Op.LINEAR: 3.0,
    Op.ATTENTION: 3.0,
    Op.MOE_GATE: 3.0,
    Op.LAYERNORM: 3.5,
    Op.EMBED: 3.7,
    Op.ADD: 3.7,
    Op.MOE_EXPERTS: 5.0,
}
EXPERT_ROUND_TRIPS = 3.0  # per expert with tokens

# DSP multiplier ports (signed operand widths) per device family.
DSP_PORTS = {"zynquplus": (27, 18), "zynq": (25, 18)}
INT8_PACKING_BITS = 8  # both operands <= 8 bits: one DSP48E2 computes two MACs

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


def mult_dsps(a_bits: int, b_bits: int, family: str = "zynquplus") -> int:
    """DSP slices for one a x b multiply (27x18 DSP48E2, 25x18 DSP48E1).

    One slice when the operands fit the two ports, two when one operand must be split,
    four otherwise (the partial products are summed in the DSP cascade)."""
    big, small_port = DSP_PORTS[family]
    small, large = sorted((int(a_bits), int(b_bits)))
    if small <= small_port and large <= big:
        return 1
    if small <= small_port or large <= big:
        return 2
    return 4


def mac_dsps(act_bits: int, weight_bits: int, family: str = "zynquplus") -> float:
    """DSP slices per UCU MAC: INT8 x INT8 packs two MACs in one DSP48E2."""
    if family == "zynquplus" and act_bits <= INT8_PACKING_BITS and weight_bits <= INT8_PACKING_BITS:
        return 0.5
    return float(mult_dsps(act_bits, weight_bits, family))


# ---------------------------------------------------------------- reading a Program


def _fmt_width(layer, key: str) -> int:
    word = layer.fields.get(key, 0)
    return unpack_fmt(word).width if word else 0


def _board(board):
    return board if isinstance(board, Board) else get_board(str(board))


def _block_count(program, layer) -> int:
    """Stored (non-zero) tiles of a LINEAR layer: all of them when dense."""
    f = layer.fields
    out_tiles = -(-f["out_dim"] // program.tile_out)
    in_tiles = -(-f["in_dim"] // program.tile_in)
    if f["blocks"] == NONE:
        return out_tiles * in_tiles
    return int(program.read_words(f["blocks"] + 4 * out_tiles, 1)[0])


def program_widths(program) -> dict:
    """Operand widths the datapath must carry, read from the Program's format words."""
    widths = {
        "weight": 0,
        "activation": 0,
        "qkv": 0,
        "score": 0,
        "sum": 0,
        "prob": 0,
        "gate_score": 0,
        "expert_y": 0,
        "norm": 0,
        "gamma": 0,
    }

    def grow(key, value):
        widths[key] = max(widths[key], value)

    for layer in program.layers:
        op = layer.op
        if op == Op.LINEAR:
            grow("weight", _fmt_width(layer, "w_fmt"))
            for key in ("x_fmt", "out_fmt", "pre_fmt", "res_fmt"):
                grow("activation", _fmt_width(layer, key))
        elif op == Op.MOE_GATE:
            grow("weight", _fmt_width(layer, "w_fmt"))
            grow("activation", _fmt_width(layer, "x_fmt"))
            grow("gate_score", _fmt_width(layer, "score_fmt"))
        elif op == Op.MOE_EXPERTS:
            grow("weight", max(_fmt_width(layer, "fc1_fmt"), _fmt_width(layer, "fc2_fmt")))
            for key in ("x_fmt", "pre_fmt", "hidden_fmt", "out_fmt"):
                grow("activation", _fmt_width(layer, key))
            grow("expert_y", _fmt_width(layer, "y_fmt"))
            grow("gate_score", _fmt_width(layer, "score_fmt"))
        elif op == Op.ATTENTION:
            grow("qkv", _fmt_width(layer, "qkv_fmt"))
            grow("score", _fmt_width(layer, "score_fmt"))
            grow("sum", _fmt_width(layer, "sum_fmt"))
            grow("prob", _fmt_width(layer, "prob_fmt"))
            grow("activation", _fmt_width(layer, "out_fmt"))
        elif op == Op.LAYERNORM:
            grow("norm", _fmt_width(layer, "norm_fmt"))
            grow("gamma", _fmt_width(layer, "g_fmt"))
            grow("activation", _fmt_width(layer, "x_fmt"))
        else:
            grow("activation", _fmt_width(layer, "out_fmt"))
    widths["table"] = max(t.fmt.width for t in program.tables.values())
    widths["activation"] = widths["activation"] or program.input.fmt.width
    widths["weight"] = widths["weight"] or 16
    return widths


# ---------------------------------------------------------------- MoE queue lengths


def read_expert_counts(program, arena, layer) -> list[int]:
    """Queue lengths of one MOE_EXPERTS (or MOE_GATE) layer from an arena snapshot.

    `arena` is the kernel's arena as bytes or an int array of 32-bit words (the golden
    executor's, or one dumped by C-sim/RTL) taken after the gate of that layer ran:
    every MoE layer reuses one queue area, so later layers overwrite it."""
    words = (
        np.frombuffer(bytes(arena), "<i4")
        if isinstance(arena, (bytes, bytearray, memoryview))
        else np.asarray(arena)
    )
    start, experts = layer.fields["queue"] // 4, layer.fields["experts"]
    return [int(v) for v in words[start : start + experts]]


def expert_counts_from_run(program, input_raw, task: int = 0) -> dict[str, list[int]]:
    """Run the golden executor once and record each MoE layer's queue lengths.

    The counts are read from the arena just before each MOE_EXPERTS layer consumes its
    queues, i.e. exactly what the hardware's experts engine will see for this input."""
    from .golden import GoldenExecutor

    counts: dict[str, list[int]] = {}

    class _Recorder(GoldenExecutor):
        def moe_experts(self, layer, task_id):
            counts[layer.name] = read_expert_counts(self.program, self.arena, layer)
            return super().moe_experts(layer, task_id)

    _Recorder(program).run(input_raw, task)
    return counts


def _gate_top_k(program, experts_layer) -> int:
    """top_k of the gate that fills this experts layer's queue (the closest one before it)."""
    top_k = 1
    for layer in program.layers:
        if layer is experts_layer:
            break
        if layer.op == Op.MOE_GATE and layer.fields["queue"] == experts_layer.fields["queue"]:
            top_k = layer.fields["top_k"]
    return top_k


# ---------------------------------------------------------------- per-layer cycles


def _ucu_parts(jobs: list[tuple[int, int]], load: int, activation_beats: int) -> dict:
    """Where a UCU schedule spends its time: reading rows, waiting for weight tiles
    (a tile whose load outlasts its rows), or streaming rows past loaded tiles."""
    return {
        "activations": activation_beats,
        "weights": sum(tiles * max(0, load - rows) for rows, tiles in jobs),
        "compute": sum(tiles * rows for rows, tiles in jobs),
    }


def _row_parts(rows: int, lane_cycles: int, bus_beats: int) -> dict:
    """Row-wise ops: lanes of arithmetic per row against bus beats per row."""
    return {"activations": rows * bus_beats, "compute": rows * lane_cycles}


# Where a layer's cycles go, part by part (the report's per-layer ``breakdown``): the
# parts sum to the layer's cycles, checked wherever a breakdown is built. Each op's
# schedule counts its arithmetic as "compute" and on top what it does not hide behind it.
BREAKDOWN_PARTS = {
    "compute": "MACs / lane arithmetic",
    "weights": "weight tile wait",
    "activations": "activation traffic",
    "latency": "exposed DDR latency",
    "control": "descriptor, dispatch, pipeline",
    "ddr": "DDR bandwidth beyond the schedule",
}


def _parts(**cycles: int) -> dict:
    """A breakdown with every part present, in BREAKDOWN_PARTS order."""
    return {part: int(cycles.get(part, 0)) for part in BREAKDOWN_PARTS}


def _add_parts(total: dict, more: dict) -> None:
    for part, cycles in more.items():
        total[part] += cycles


def _checked(parts: dict, cycles: int, what: str) -> dict:
    if sum(parts.values()) != cycles:
        raise AssertionError(
            f"{what}: breakdown {parts} sums to {sum(parts.values())}, not {cycles}"
        )
    return parts


def _ucu_breakdown(rows: int, stored_tiles: int, load: int) -> dict:
    """ucu_cycles in parts: rows streaming past stored tiles, tile loads they do not
    hide (and the first), the last output drain, the pipeline depth."""
    if stored_tiles == 0:
        return _parts(activations=rows, control=UCU_PIPELINE)
    return _parts(
        compute=stored_tiles * rows,
        weights=load + stored_tiles * max(0, load - rows),
        activations=rows,
        control=UCU_PIPELINE,
    )


def _linear_breakdown(rows: int, in_dim: int, out_dim: int, tile_in: int, tile_out: int,
                      weight_bytes: int, bus_bytes: int, stored_tiles: int | None = None
                      ) -> dict:  # fmt: skip
    """linear_cycles in parts: input rows read, the UCU, output writes it does not hide."""
    out_tiles, in_tiles = -(-out_dim // tile_out), -(-in_dim // tile_in)
    stored = out_tiles * in_tiles if stored_tiles is None else stored_tiles
    load = tile_load_beats(tile_in, tile_out, weight_bytes, bus_bytes)
    ucu = ucu_cycles(rows, stored, out_tiles, load)
    writes = out_tiles * rows * beats(4 * tile_out, bus_bytes) + load + rows + UCU_PIPELINE
    parts = _ucu_breakdown(rows, stored, load)
    parts["activations"] += rows * beats(4 * in_dim, bus_bytes) + max(0, writes - ucu)
    return parts


def _rows_breakdown(rows: int, lane_cycles: int, bus_beats: int, pipeline: int) -> dict:
    """Row-wise ops (LayerNorm, EMBED, ADD): lanes per row, bus beats beyond them."""
    return _parts(
        compute=rows * lane_cycles,
        activations=rows * max(0, bus_beats - lane_cycles),
        control=pipeline,
    )


def _gate_breakdown(tokens, dim, experts, top_k, tile_in, tile_out, weight_bytes, bus_bytes):
    """gate_cycles in parts: the logits on the UCU, softmax/top-k, the queue writes."""
    parts = _linear_breakdown(tokens, dim, experts, tile_in, tile_out, weight_bytes, bus_bytes)
    parts["compute"] += tokens * max(experts, top_k)
    parts["activations"] += queue_beats(experts, experts, tokens, bus_bytes)
    parts["control"] += GATE_PIPELINE
    return parts


def _experts_breakdown(counts, tokens, dim, hidden, tile_in, tile_out, weight_bytes, bus_bytes):
    """experts_cycles in parts: queue reads, per active expert fc1, hidden traffic,
    handoff and fc2, then the residual pass."""
    active = [count for count in counts if count]
    parts = _parts(
        activations=queue_beats(len(counts), len(active), tokens, bus_bytes)
        + tokens * beats(4 * dim, bus_bytes),
        control=ELEMENTWISE_PIPELINE + EXPERT_HANDOFF * len(active),
    )
    load = tile_load_beats(tile_in, tile_out, weight_bytes, bus_bytes)
    fc2_tiles = -(-dim // tile_out) * -(-hidden // tile_in)
    for count in active:
        fc1 = _linear_breakdown(count, dim, hidden, tile_in, tile_out, weight_bytes, bus_bytes)
        _add_parts(parts, fc1)
        parts["activations"] += count * beats(4 * hidden, bus_bytes)
        _add_parts(parts, _ucu_breakdown(count, fc2_tiles, load))
    return parts


def _layer_estimate(program, layer, bus: int, counts: list[int] | None,
                    dense: bool = False) -> dict:  # fmt: skip
    """Compute cycles (the per-op formulas) and their breakdown, useful MACs and DDR
    bytes of one layer; ``dense``: a block-sparse LINEAR as if every tile were stored."""
    f, ti, to = layer.fields, program.tile_in, program.tile_out
    macs = weight_bytes = act_bytes = 0
    extra: dict = {}
    if layer.op == Op.LINEAR:
        rows, in_dim, out_dim = f["rows"], f["in_dim"], f["out_dim"]
        out_tiles, in_tiles = -(-out_dim // to), -(-in_dim // ti)
        sparse = f["blocks"] != NONE and not dense
        stored = _block_count(program, layer) if sparse else out_tiles * in_tiles
        cycles = linear_cycles(
            rows, in_dim, out_dim, ti, to, f["w_bytes"], bus, stored, f["post"] == Post.ADD
        )
        breakdown = _linear_breakdown(rows, in_dim, out_dim, ti, to, f["w_bytes"], bus, stored)
        macs = rows * in_dim * out_dim * stored // (out_tiles * in_tiles)
        load = tile_load_beats(ti, to, f["w_bytes"], bus)
        parts = _ucu_parts([(rows, stored)], load, rows * beats(4 * in_dim, bus))
        weight_bytes = stored * padded(ti * to * f["w_bytes"], bus)
        if sparse:
            weight_bytes += 4 * (out_tiles + 1 + stored)
        weight_bytes += 4 * out_dim if f["bias"] != NONE else 0
        act_bytes = rows * (f["src_stride"] + f["dst_stride"])
        act_bytes += rows * f["res_stride"] if f["post"] == Post.ADD else 0
        extra = {
            "tiles": out_tiles * in_tiles,
            "stored_tiles": stored,
            "block_sparse": sparse,
        }
    elif layer.op == Op.EMBED:
        rows = f["patches"] + 1
        cycles = elementwise_cycles(rows, f["dim"], to, bus, inputs=1)
        parts = _row_parts(rows, -(-f["dim"] // to), beats(4 * f["dim"], bus))
        breakdown = _rows_breakdown(
            rows, -(-f["dim"] // to), beats(4 * f["dim"], bus), ELEMENTWISE_PIPELINE
        )
        weight_bytes = 4 * rows * f["dim"]
        act_bytes = f["patches"] * f["src_stride"] + rows * f["dst_stride"]
    elif layer.op == Op.LAYERNORM:
        cycles = layernorm_cycles(f["rows"], f["dim"], ti, bus)
        parts = _row_parts(f["rows"], 2 * -(-f["dim"] // ti), beats(4 * f["dim"], bus))
        breakdown = _rows_breakdown(
            f["rows"], 2 * -(-f["dim"] // ti), beats(4 * f["dim"], bus), LAYERNORM_PIPELINE
        )
        weight_bytes = 8 * f["dim"]
        act_bytes = f["rows"] * (f["src_stride"] + f["dst_stride"])
    elif layer.op == Op.ATTENTION:
        tokens, dim = f["tokens"], f["dim"]
        cycles = attention_cycles(tokens, dim, f["heads"], f["parallel"], bus)
        macs = 2 * tokens * tokens * dim
        slots = min(f["parallel"], tokens)
        passes = f["heads"] * 2 * (-(-tokens // slots) * tokens + slots - 1)
        parts = {"activations": tokens * beats(12 * dim, bus), "compute": passes}
        breakdown = _parts(
            compute=passes,
            activations=tokens * beats(12 * dim, bus),
            control=f["heads"] * ATTENTION_PIPELINE,
        )
        act_bytes = tokens * (f["src_stride"] + f["dst_stride"])
        extra = {"parallel": f["parallel"], "head_dim": dim // f["heads"]}
    elif layer.op == Op.ADD:
        cycles = elementwise_cycles(f["rows"], f["cols"], to, bus, inputs=2)
        parts = _row_parts(f["rows"], -(-f["cols"] // to), 2 * beats(4 * f["cols"], bus))
        breakdown = _rows_breakdown(
            f["rows"], -(-f["cols"] // to), 2 * beats(4 * f["cols"], bus), ELEMENTWISE_PIPELINE
        )
        act_bytes = f["rows"] * (f["src_stride"] + f["res_stride"] + f["dst_stride"])
    elif layer.op == Op.MOE_GATE:
        tokens, dim, experts, top_k = f["tokens"], f["dim"], f["experts"], f["top_k"]
        cycles = gate_cycles(tokens, dim, experts, top_k, ti, to, f["w_bytes"], bus)
        breakdown = _gate_breakdown(tokens, dim, experts, top_k, ti, to, f["w_bytes"], bus)
        macs = tokens * dim * experts
        tiles = -(-experts // to) * -(-dim // ti)
        load = tile_load_beats(ti, to, f["w_bytes"], bus)
        parts = _ucu_parts([(tokens, tiles)], load, tokens * beats(4 * dim, bus))
        parts["compute"] += tokens * max(experts, top_k)
        weight_bytes = tiles * padded(ti * to * f["w_bytes"], bus)
        act_bytes = tokens * f["src_stride"] + 4 * experts + 8 * tokens * top_k
    elif layer.op == Op.MOE_EXPERTS:
        tokens, dim, hidden = f["tokens"], f["dim"], f["hidden"]
        assert counts is not None
        cycles = experts_cycles(counts, tokens, dim, hidden, ti, to, f["w_bytes"], bus)
        breakdown = _experts_breakdown(counts, tokens, dim, hidden, ti, to, f["w_bytes"], bus)
        routed = sum(counts)
        active = sum(1 for c in counts if c)
        macs = 2 * routed * dim * hidden
        load = tile_load_beats(ti, to, f["w_bytes"], bus)
        per_matrix = -(-hidden // to) * -(-dim // ti)
        parts = _ucu_parts(
            [(c, 2 * per_matrix) for c in counts if c], load, routed * beats(4 * dim, bus)
        )
        tile_bytes = padded(ti * to * f["w_bytes"], bus)
        per_expert = 2 * (-(-hidden // to) * -(-dim // ti)) * tile_bytes + 4 * (hidden + dim)
        weight_bytes = active * per_expert
        act_bytes = routed * f["src_stride"] + 4 * len(counts) + 8 * routed
        act_bytes += tokens * f["dst_stride"]
        act_bytes += tokens * f["res_stride"] if f["res"] != NONE else 0
        extra = {"expert_counts": list(counts), "active_experts": active}
    else:  # pragma: no cover - Op is closed
        raise ValueError(f"no cycle model for op {layer.op!r}")
    return {
        "compute_cycles": int(cycles),
        "breakdown": _checked(breakdown, int(cycles), f"{layer.name} schedule"),
        "limited_by": max(parts, key=parts.get),
        "macs": int(macs),
        "weight_bytes": int(weight_bytes),
        "act_bytes": int(act_bytes),
        **extra,
    }


def _check_arch(program, arch) -> None:
    mismatch = [
        f"{name} (program {getattr(program, name)}, ArchConfig {getattr(arch, name)})"
        for name in ("tile_in", "tile_out", "bus_bits")
        if getattr(program, name) != getattr(arch, name)
    ]
    if mismatch:
        raise ValueError("the Program was compiled for another ArchConfig: " + ", ".join(mismatch))


def _counts_for(program, layer, expert_counts) -> tuple[list[int], str]:
    f = layer.fields
    given = None
    if expert_counts is not None:
        given = expert_counts.get(layer.name)
    if given is None:
        return balanced_counts(f["tokens"], f["experts"], _gate_top_k(program, layer)), "balanced"
    counts = [int(c) for c in given]
    if len(counts) != f["experts"] or min(counts, default=0) < 0 or max(counts) > f["tokens"]:
        raise ValueError(
            f"{layer.name}: expert counts {counts} do not fit {f['experts']} experts "
            f"of at most {f['tokens']} tokens"
        )
    return counts, "measured"


def startup_cycles(program, ddr_latency: int = AXI_LATENCY) -> int:
    """Before the first layer: the kernel reads the header, checks every descriptor
    (one burst each), reads the header again and loads the four tables into ROMs."""
    bus = program.bus_bits // 8
    header = beats(HEADER_BYTES, bus) + ddr_latency
    check = len(program.layers) * (beats(DESCRIPTOR_BYTES, bus) + ddr_latency)
    tables = sum(beats(4 * t.entries, bus) + ddr_latency for t in program.tables.values())
    return 2 * header + check + tables


def exposed_latency(layer, ddr_latency: int, counts: list[int] | None = None) -> int:
    """Cycles a running layer waits on DDR round trips (see LAYER_ROUND_TRIPS)."""
    trips = LAYER_ROUND_TRIPS[layer.op]
    if layer.op == Op.MOE_EXPERTS:
        trips += EXPERT_ROUND_TRIPS * sum(1 for count in counts or [] if count)
    return round(trips * ddr_latency)


def _layer_cycles(detail: dict, ddr_bytes_per_cycle: float, descriptor: int, waits: int,
                  name: str) -> tuple[int, int, dict]:  # fmt: skip
    """A running layer: max(schedule, DDR transfer time) + descriptor + exposed latency;
    returns (cycles, DDR cycles, breakdown of the cycles)."""
    ddr = math.ceil((detail["weight_bytes"] + detail["act_bytes"]) / ddr_bytes_per_cycle)
    compute = detail["compute_cycles"]
    cycles = max(compute, ddr) + descriptor + waits
    breakdown = dict(detail.pop("breakdown"))
    breakdown["ddr"] += max(0, ddr - compute)
    breakdown["latency"] += waits
    breakdown["control"] += descriptor
    return cycles, ddr, _checked(breakdown, cycles, name)


def estimate_cycles(
    program, arch, board, expert_counts=None, task: int = 0, ddr_latency: int = AXI_LATENCY
) -> dict:
    """Per-layer and total cycles of one run of `program` for `task` on `board`, with
    `ddr_latency` cycles from a DDR read request to its first data (and from the last
    write beat to its acknowledgement)."""
    board = _board(board)
    _check_arch(program, arch)
    if not 0 <= task < program.n_tasks:
        raise ValueError(f"task {task} out of range: the program has {program.n_tasks} tasks")
    bus = program.bus_bits // 8
    clock_hz = board.clock_mhz * 1e6
    ddr_bytes_per_cycle = board.ddr_gbps * 1e9 / clock_hz
    descriptor = beats(DESCRIPTOR_BYTES, bus) + LAYER_DISPATCH
    start = startup_cycles(program, ddr_latency)
    layers, sources = [], set()
    total = start
    for layer in program.layers:
        runs = layer.task in (-1, task)
        counts = None
        if layer.op.name == "MOE_EXPERTS":
            counts, source = _counts_for(program, layer, expert_counts)
            sources.add(source)
        entry = {"name": layer.name, "op": layer.op.name, "task": layer.task, "runs": runs}
        if runs:
            detail = _layer_estimate(program, layer, bus, counts)
            waits = exposed_latency(layer, ddr_latency, counts)
            cycles, ddr, breakdown = _layer_cycles(
                detail, ddr_bytes_per_cycle, descriptor, waits, layer.name
            )
            compute = detail["compute_cycles"]
            limited_by = detail.pop("limited_by")
            entry.update(
                cycles=cycles,
                ddr_cycles=ddr,
                bound="ddr" if ddr > compute else limited_by,
                ddr_bytes=detail["weight_bytes"] + detail["act_bytes"],
                latency_cycles=waits,
                **detail,
                breakdown=breakdown,
            )
            if detail.get("block_sparse"):  # what the layer would cost unpruned
                dense = _layer_estimate(program, layer, bus, counts, dense=True)
                entry["cycles_dense"] = _layer_cycles(
                    dense, ddr_bytes_per_cycle, descriptor, waits, layer.name
                )[0]
            if layer.op.name == "MOE_EXPERTS":
                entry["counts_source"] = source
        else:  # the kernel reads the descriptor, sees another task, moves on
            cycles = descriptor + ddr_latency
            entry.update(cycles=cycles, compute_cycles=0, ddr_cycles=0, bound="skipped")
            entry.update(macs=0, weight_bytes=0, act_bytes=0, ddr_bytes=0)
            entry["breakdown"] = _parts(latency=ddr_latency, control=descriptor)
        entry["latency_us"] = round(cycles / clock_hz * 1e6, 3)
        total += cycles
        layers.append(entry)
    if not sources:
        counts_note = "no MoE layers"
    elif sources == {"measured"}:
        counts_note = "measured (queue lengths of a golden run)"
    elif sources == {"balanced"}:
        counts_note = "balanced (tokens x top_k spread evenly; no golden run given)"
    else:
        counts_note = "mixed: measured where given, balanced elsewhere"
    return {
        "task": task,
        "clock_mhz": board.clock_mhz,
        "start_cycles": start,
        "cycles": int(total),
        "latency_ms": total / clock_hz * 1e3,
        "layers": layers,
        "expert_counts": counts_note,
    }


# ---------------------------------------------------------------- resources


def _op_set(program) -> set[str]:
    return {layer.op.name for layer in program.layers}


def _buffers(program, arch, widths: dict) -> list[Buffer]:
    """On-chip memories of the kernel (the arrays of hls_templates/codesign_top.cpp),
    sized by the ArchConfig maxima (one bitstream runs every Program within them) and
    as wide as the Program's formats need."""
    ops = _op_set(program)
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
    if "ATTENTION" in ops:
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
    if "MOE_GATE" in ops or "MOE_EXPERTS" in ops:
        top_k = max(
            (layer.fields["top_k"] for layer in program.layers if layer.op.name == "MOE_GATE"),
            default=1,
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
    gelu_users = to if ("LINEAR" in ops or "MOE_EXPERTS" in ops) else 0
    exp_users = (slots if "ATTENTION" in ops else 0) + (1 if "MOE_GATE" in ops else 0)
    table_specs = [
        ("gelu_delta", gelu_users, "GELU on every UCU output lane"),
        ("exp", exp_users, "one exp per attention slot (+ the gate softmax)"),
        ("recip", 2 if exp_users else 0, "softmax and gate 1/s"),
        ("rsqrt", 1 if "LAYERNORM" in ops else 0, "one rsqrt per LayerNorm row"),
    ]
    for name, users, why in table_specs:
        if users:
            ref = program.tables[name]
            buffers.append(Buffer(f"table_{name}", -(-users // 2), ref.entries, ref.fmt.width, why))
    buffers.append(
        Buffer(
            "axi_fifos",
            3,
            AXI_FIFO_DEPTH,
            arch.bus_bits + 8,  # data plus last/strobe sideband
            "m_axi burst FIFOs: gmem0 read, gmem1 read and write",
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
    ops = _op_set(program)
    ti, to, slots = arch.tile_in, arch.tile_out, arch.attn_parallel
    act, weight, table = widths["activation"], widths["weight"], widths["table"]
    bus_scale = arch.bus_bits / 128
    units: list[dict] = []

    def unit(name, dsp, lut, ff, why):
        units.append(
            {"name": name, "dsp": math.ceil(dsp), "lut": int(lut), "ff": int(ff), "why": why}
        )

    per_mac = mac_dsps(act, weight, family)
    product = act + weight
    unit(
        "ucu",
        ti * to * per_mac,
        ti * to * product * LUT_PER_PRODUCT_BIT,
        ti * to * product * FF_PER_PRODUCT_BIT + 2 * ti * to * weight,
        f"Ti x To = {ti}x{to} MACs at {per_mac:g} DSP each ({act}-bit x {weight}-bit), "
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
    if "MOE_EXPERTS" in ops:
        scatter = mult_dsps(widths["gate_score"], widths["expert_y"], family)
        unit(
            "moe_scatter",
            to * scatter,
            to * LANE_LUT,
            to * LANE_FF,
            f"{to} lanes of score x y into the exact MoE accumulators",
        )
    if "MOE_GATE" in ops:
        unit(
            "moe_gate",
            2 * mult_dsps(table + 1, table, family) + 1,
            40 * arch.max_experts + 2 * LANE_LUT,
            40 * arch.max_experts + 2 * LANE_FF,
            "softmax over experts (exp, 1/S), top-k insertion sort, queue append",
        )
    head_dim = max(
        (layer.fields["dim"] // layer.fields["heads"] for layer in program.layers
         if layer.op.name == "ATTENTION"),
        default=0,
    )  # fmt: skip
    if head_dim:
        qkv, prob, score = widths["qkv"], widths["prob"], widths["score"]
        per_mult = max(mult_dsps(qkv, qkv, family), mult_dsps(prob, qkv, family))
        softmax = (
            mult_dsps(table + 1, score, family)
            + mult_dsps(widths["sum"], table, family)
            + mult_dsps(table, table, family)
        )
        unit(
            "attention",
            slots * head_dim * per_mult + slots * softmax,
            slots * head_dim * 2 * qkv * LUT_PER_PRODUCT_BIT + slots * 2 * LANE_LUT,
            slots * head_dim * (2 * qkv * FF_PER_PRODUCT_BIT + qkv + 32) + slots * 2 * LANE_FF,
            f"P x head_dim = {slots}x{head_dim} multipliers shared by Q.K and A.V "
            f"({per_mult} DSP each), per slot exp/rescale/probability multipliers, "
            "query registers and output accumulators",
        )
    if "LAYERNORM" in ops:
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
    if ops & {"EMBED", "ADD"}:
        unit("elementwise", 0, to * LANE_LUT // 2, to * LANE_FF // 2, "EMBED / ADD lanes")
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
    return {
        "dsp": sum(u["dsp"] for u in units),
        "bram36": math.ceil(sum(m["bram36"] for m in memories)),
        "uram": sum(m["uram"] for m in memories),
        "lut": sum(u["lut"] for u in units),
        "ff": sum(u["ff"] for u in units),
        "dsp_per_mac": per_mac,
        "widths": widths,
        "units": units,
        "memories": memories,
    }


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


# ---------------------------------------------------------------- program estimate


def assumptions(board, expert_counts_note: str, task: int) -> dict:
    """What the numbers rest on; shown in the report next to them."""
    board = _board(board)
    return {
        "board": board.name,
        "part": board.part,
        "clock_mhz": board.clock_mhz,
        "ddr_gbps": board.ddr_gbps,
        "task": task,
        "expert_counts": expert_counts_note,
        "notes": [
            "cycles: the per-op schedule of codesign.estimate (weight-stationary UCU, "
            "rotated attention, two-pass LayerNorm), one AXI beat per cycle per master",
            f"per layer: descriptor fetch + {LAYER_DISPATCH}-cycle dispatch + "
            f"the DDR round trips its schedule exposes ({AXI_LATENCY} cycles each: "
            "descriptor, first operands, write acknowledgement, per op more); layers of "
            "other tasks cost a "
            "descriptor fetch; once per run: header, descriptor check pass, table loads",
            f"a layer takes max(schedule, DDR bytes / {board.ddr_gbps:g} GB/s); 'bound' "
            "names the larger part: activations (row reads), weights (tile loads "
            "longer than the rows streaming past), compute, or ddr",
            "DSP: 27x18 (DSP48E2) / 25x18 (DSP48E1) ports, wider products split; "
            "INT8 x INT8 packs two MACs per DSP48E2",
            "BRAM/URAM: buffers sized by ArchConfig.max_*, banked for one row of Ti "
            "(or To) values per cycle, cheapest BRAM aspect ratio; buffers >= 1 Mbit "
            "go to UltraRAM while the board has it",
            "LUT/FF: per-unit constants (estimate.py), not synthesis results; "
            "run `make hls` with Vitis for real numbers",
            "breakdown per layer (sums to its cycles): compute (MACs / lane arithmetic), "
            "weights (tile loads the rows do not hide), activations (row reads and "
            "writes the arithmetic does not hide), latency (exposed DDR round trips), "
            "control (descriptor fetch, dispatch, pipeline fill), ddr (DDR bandwidth "
            "beyond the schedule)",
        ],
    }


def estimate_program(
    program, arch, board, expert_counts: dict | None = None, task: int = 0
) -> dict:
    """Cycles per layer, latency at the board clock, resources and fit of one Program.

    `expert_counts` maps MOE_EXPERTS layer names to their queue lengths (see
    ``expert_counts_from_run``); without it every MoE layer is costed with balanced
    queues, and the result says so."""
    board = _board(board)
    timing = estimate_cycles(program, arch, board, expert_counts, task)
    resources = estimate_resources(program, arch, board)
    fits = fit_table(resources, board)
    macs = sum(entry["macs"] for entry in timing["layers"])
    seconds = timing["latency_ms"] / 1e3
    return {
        "model": program.model,
        "board": board.name,
        "arch": arch.to_dict(),
        "task": task,
        "cycles": timing["cycles"],
        "latency_ms": timing["latency_ms"],
        "macs": macs,
        "gops": 2 * macs / seconds / 1e9 if seconds else 0.0,
        "ddr_bytes": sum(entry["ddr_bytes"] for entry in timing["layers"]),
        "layers": timing["layers"],
        "resources": resources,
        "fits": fits,
        "assumptions": assumptions(board, timing["expert_counts"], task),
    }


def estimate_report_section(
    program, arch, board, expert_counts: dict | None = None, task: int = 0
) -> dict:
    """Exactly what goes under ``report["estimate"]``."""
    full = estimate_program(program, arch, board, expert_counts, task)
    section = {key: full[key] for key in ("latency_ms", "cycles", "layers", "resources", "fits")}
    section["latency_ms"] = round(section["latency_ms"], 4)
    section["assumptions"] = {
        **full["assumptions"],
        "model": full["model"],
        "macs": full["macs"],
        "gops": round(full["gops"], 2),
        "ddr_bytes": full["ddr_bytes"],
        "arch": full["arch"],
    }
    names = getattr(program, "meta", {}).get("task_names") or []
    if 0 <= task < len(names):
        section["assumptions"]["task_name"] = names[task]
    return section


def estimate_markdown(section: dict) -> str:
    """The estimate as a Markdown chapter of report.md."""
    info = section["assumptions"]
    lines = [
        "## Estimated latency and resources",
        "",
        f"- {section['cycles']:,} cycles at {info['clock_mhz']:g} MHz = "
        f"**{section['latency_ms']:.3f} ms** per image (task {info['task']}), "
        f"{info['gops']:.1f} GOPS; {info['ddr_bytes'] / 1e6:.1f} MB over DDR",
        f"- MoE expert queues: {info['expert_counts']}",
        "",
        "| resource | used | available | utilisation | fits |",
        "|---|---|---|---|---|",
    ]
    for key, label in RESOURCE_LABELS.items():
        entry = section["fits"][key]
        percent = "n/a" if entry["percent"] is None else f"{entry['percent']:.1f}%"
        lines.append(
            f"| {label} | {entry['used']:,} | {entry['available']:,} | {percent} | "
            f"{'yes' if entry['ok'] else '**no**'} |"
        )
    problems = fit_problems(section["fits"], info["board"])
    if problems:
        lines += ["", "**The design does not fit:** " + "; ".join(problems) + "."]
    lines += [
        "",
        "| layer | op | cycles | µs | bound | MACs | DDR bytes |",
        "|---|---|---|---|---|---|---|",
    ]
    for layer in section["layers"]:
        if not layer["runs"]:
            continue
        lines.append(
            f"| {layer['name']} | {layer['op']} | {layer['cycles']:,} | "
            f"{layer['latency_us']:.1f} | {layer['bound']} | {layer['macs']:,} | "
            f"{layer['ddr_bytes']:,} |"
        )
    lines += ["", "Assumptions:", ""]
    lines += [f"- {note}" for note in info["notes"]]
    return "\n".join(lines) + "\n"


BREAKDOWN_COLOURS = {
    "compute": "#1f77b4",
    "weights": "#ff7f0e",
    "activations": "#2ca02c",
    "latency": "#d62728",
    "control": "#8c8c8c",
    "ddr": "#9467bd",
}


def shade_blocks(ax, names: list[str]) -> None:
    """Shade every other transformer block so a block's layers read as a group."""
    blocks = [name.split(".")[1] if name.startswith("blocks.") else None for name in names]
    first = 0
    for index in range(1, len(names) + 1):
        if index == len(names) or blocks[index] != blocks[first]:
            if blocks[first] is not None and blocks[first].isdigit() and int(blocks[first]) % 2:
                ax.axvspan(first - 0.5, index - 0.5, color="0.5", alpha=0.08, lw=0, zorder=0)
            first = index


def layer_axis(ax, names: list[str], max_labels: int = 160) -> None:
    """Layer names as x tick labels, rotated, every k-th when there are too many to
    read, over shaded blocks."""
    step = max(1, -(-len(names) // max_labels))
    ticks = list(range(0, len(names), step))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90)
    ax.tick_params(axis="x", labelsize=7, length=2)
    ax.set_xlim(-0.6, len(names) - 0.4)
    shade_blocks(ax, names)


def cycles_figure(section: dict):
    """The figure of ``plot_layers``. Top: one bar per running layer stacked by where
    its cycles go, the dense cycles outlined where a layer runs block-sparse. Bottom:
    the same parts as shares of each layer, readable for the short layers too."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    layers = [layer for layer in section["layers"] if layer["runs"]]
    names = [layer["name"] for layer in layers]
    xs = np.arange(len(layers))
    totals = np.array([layer["cycles"] for layer in layers], float)
    fig = Figure(figsize=(max(8.0, 0.17 * len(layers) + 2.5), 7.0), layout="constrained")
    ax, share = fig.subplots(2, 1, sharex=True, height_ratios=(2.4, 1))
    handles, bottom = [], np.zeros(len(layers))
    for part, label in BREAKDOWN_PARTS.items():
        values = np.array([layer["breakdown"][part] for layer in layers], float)
        if not values.any():  # e.g. no layer is DDR-bandwidth bound: no empty legend entry
            continue
        colour = BREAKDOWN_COLOURS[part]
        ax.bar(xs, values, 0.8, bottom=bottom, color=colour, zorder=2)
        share.bar(xs, 100 * values / totals, 0.8, bottom=100 * bottom / totals, color=colour)
        handles.append(Patch(color=colour, label=label))
        bottom += values
    dense_bars = [
        (x, layer["cycles_dense"])
        for x, layer in zip(xs, layers, strict=True)
        if "cycles_dense" in layer
    ]
    if dense_bars:
        dense_x, dense = zip(*dense_bars, strict=True)
        ax.bar(dense_x, dense, 0.8, fill=False, edgecolor="black", ls="--", lw=0.8, zorder=3)
        handles.append(
            Patch(fill=False, edgecolor="black", linestyle="--", label="dense (before pruning)")
        )
    shade_blocks(ax, names)
    layer_axis(share, names)
    ax.set_ylabel("cycles")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.grid(True, axis="y", alpha=0.3, zorder=0)
    share.set_ylabel("share of the layer")
    share.set_ylim(0, 100)
    share.yaxis.set_major_formatter(PercentFormatter())
    info = section["assumptions"]
    clock = info["clock_mhz"]
    micro = ax.secondary_yaxis("right", functions=(lambda c: c / clock, lambda us: us * clock))
    micro.set_ylabel(f"µs at {clock:g} MHz")
    task = f"task {info['task']}" + (f" ({info['task_name']})" if info.get("task_name") else "")
    title = f"{info.get('model', '')} on {info['board']}, {task}: {section['latency_ms']:.3f} ms"
    if dense_bars:
        dense_cycles = section["cycles"] + sum(
            layer["cycles_dense"] - layer["cycles"] for layer in layers if "cycles_dense" in layer
        )
        title += f" block-sparse (dense: {dense_cycles / clock / 1e3:.3f} ms)"
    skipped = len(section["layers"]) - len(layers)
    note = f"; {skipped} layers of other tasks skipped, not shown" if skipped else ""
    ax.set_title(f"{title}\nestimated cycles per layer, by where they go{note}", fontsize=10)
    columns = len(handles) if fig.get_figwidth() >= 14 else -(-len(handles) // 2)
    fig.legend(
        handles=handles, loc="outside upper center", ncol=columns, fontsize="small", frameon=False
    )
    return fig


def plot_layers(section: dict, path) -> None:
    """Cycles per layer, stacked by where they go: why a layer is slow."""
    cycles_figure(section).savefig(path, dpi=110)


__all__ = [
    "DesignDoesNotFit",
    "attention_cycles",
    "balanced_counts",
    "beats",
    "bram36_for",
    "check_fits",
    "cycles_figure",
    "elementwise_cycles",
    "estimate_cycles",
    "estimate_markdown",
    "estimate_program",
    "estimate_report_section",
    "estimate_resources",
    "expert_counts_from_run",
    "experts_cycles",
    "fit_table",
    "gate_cycles",
    "layer_axis",
    "layernorm_cycles",
    "linear_cycles",
    "mult_dsps",
    "plot_layers",
    "read_expert_counts",
    "shade_blocks",
    "startup_cycles",
    "tile_load_beats",
    "ucu_cycles",
    "utilisation",
]
