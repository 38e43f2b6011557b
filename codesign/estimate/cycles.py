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

Program level: ``estimate_cycles`` walks a Program as the kernel does (each layer's
figures from its op's model in the op registry, ``codesign/ops/<op>.py``); resources and
fit are ``codesign.estimate.resources``, the report entry and plots
``codesign.estimate.report``. Assumptions: docs/hls.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..arch import Board, get_board
from ..arch.config import RTL_LATENCY, output_lanes
from ..arch.ddr import DEFAULT_LATENCY, DdrModel, ddr_model
from ..contract import Post
from ..ops import SPECS, spec
from ..program import HEADER_BYTES, LAYER_WORDS, NONE, Op, unpack_fmt

# a tile row's last drain beyond its row cycles: the drain's latency less the stages that
# overlap the last MACs (8 when the drain was 14 stages)
UCU_PIPELINE = RTL_LATENCY["ucu_drain"] - 6
# q.k -> score -> exp -> running sum / recip pipeline
ATTENTION_PIPELINE = 13 + RTL_LATENCY["exp"]
REQUANT_PIPE = RTL_LATENCY["requant_pipe"]
# pipelined sums -> rsqrt table -> first normalised element (two requantisers on the way)
LAYERNORM_PIPELINE = 22 + 2 * REQUANT_PIPE
LAYERNORM_STATS_LATENCY = 10  # rows of one beat, RTL: (10 + log2 lanes + chunks) / 2 a row
# read, aligned terms, sum, two product stages, requantise, write FIFO
ELEMENTWISE_PIPELINE = 10 + REQUANT_PIPE
GATE_PIPELINE = 16
EXPERT_HANDOFF = 48  # per expert: fc1's writes acknowledged, fc2's job started


def beats(nbytes: int, bus_bytes: int) -> int:
    """DDR beats to move `nbytes` over a bus of `bus_bytes`."""
    return -(-int(nbytes) // bus_bytes)


def tile_load_beats(tile_in: int, tile_out: int, weight_bytes: int, bus_bytes: float) -> int:
    """Cycles to load one To x Ti weight tile at `bus_bytes` per cycle: the bus width, or
    with several weight masters what they sustain together (``WeightStream.rate``)."""
    return math.ceil(tile_in * tile_out * weight_bytes / bus_bytes)


@dataclass(frozen=True)
class WeightStream:
    """How weight tiles reach the UCU: `ports` masters of `bus_bytes` (a weight beat is one
    beat of each), sharing a DDR that sustains `ddr_rate` bytes per cycle (None: no cap)
    with the other masters; `arena_on_chip`: the layer's activations are all in the
    on-chip window, so its writes take nothing from the DDR; `x_beat_bytes`: the UCU's
    input rows come over the window's x port, this many bytes a cycle (None: over the
    arena master, a bus beat a cycle); `drain_lanes`: the UCU drain's lanes (0: a bus
    beat's words, ``output_lanes``); `y_row`: the output rows (the UCU's, LayerNorm's) go
    into the window over its y port, an output tile row a cycle (False: a bus beat a
    cycle); `norm_lanes`: LayerNorm's normalise lanes (0: a bus beat's words);
    `final_lanes`: the MoE final pass's lanes (0: a bus beat's words); `final_x` /
    `final_y`: its residual (or none) comes over the window's x port, its output tiles
    leave over the y port, a tile a cycle (False: their bus beats);
    `ddr_latency`: cycles from a DDR read command to its first data (0: not modelled),
    which bounds a stream that keeps only a few commands in flight."""

    ports: int
    bus_bytes: int
    ddr_rate: float | None = None
    arena_on_chip: bool = False
    x_beat_bytes: int | None = None
    drain_lanes: int = 0
    y_row: bool = False
    norm_lanes: int = 0
    final_lanes: int = 0
    final_x: bool = False
    final_y: bool = False
    ddr_latency: int = 0

    @property
    def rate(self) -> float:
        """Bytes per cycle the tiles stream at: the masters' beats, at most the DDR's."""
        rate = float(self.ports * self.bus_bytes)
        return rate if self.ddr_rate is None else min(rate, self.ddr_rate)

    def contention(self, write_beats: int, weight_beats: int, weight_bound: bool) -> int:
        """Cycles a UCU job loses when several weight masters and the drain's writes ask
        the DDR for more than it sustains (the RTL's DDR model serves the masters that
        wait in turn, as the PS's DDR controller does): weight-bound, the writes take DDR
        time from the tiles; write-bound, every burst of the masters slows the writes to
        an equal share. One master is not counted: its estimates were checked against the RTL
        without this term (m3vit 1.005), and on every board's default one master and the
        writes stay within the DDR."""
        beats_per_cycle = (self.ddr_rate or 0.0) / self.bus_bytes
        if self.ports == 1 or self.ddr_rate is None or self.arena_on_chip:
            return 0
        if self.ports + 1 <= beats_per_cycle:
            return 0
        if weight_bound:
            return math.ceil(write_beats * self.bus_bytes / self.ddr_rate)
        share = beats_per_cycle / (self.ports + 1)  # each waiting master's beats per cycle
        return math.ceil(weight_beats / (self.ports * share) * (1 - share))


def x_beats(rows: int, cols: int, bus_bytes: int, stream: WeightStream | None) -> int:
    """Cycles `rows` UCU input rows of `cols` int32 take to load: bus beats, or window
    rows on the x port."""
    width = stream.x_beat_bytes if stream is not None and stream.x_beat_bytes else bus_bytes
    return rows * beats(4 * cols, width)


def lane_chunks(width: int, lanes: int, bus_bytes: int) -> int:
    """Cycles `width` values take through an output stage of `lanes` lanes (0: as many as
    a bus beat has words, ``output_lanes``): the UCU drain, LayerNorm's normalise pass,
    the MoE final pass."""
    return width // (lanes or output_lanes(width, 8 * bus_bytes))


def ucu_drain_chunks(tile_out: int, bus_bytes: int, stream: WeightStream | None) -> int:
    """Cycles an output row takes through the UCU's drain: tile_out over its lanes (the
    stream's ``drain_lanes``, by default a bus beat's words)."""
    return lane_chunks(tile_out, stream.drain_lanes if stream is not None else 0, bus_bytes)


def _weight_rate(stream: WeightStream | None, bus_bytes: int) -> float:
    """Bytes per cycle weight tiles arrive at: the stream's, or one master's bus."""
    return stream.rate if stream is not None else bus_bytes


def weight_stream(program, ddr_bytes_per_cycle: float | None = None) -> WeightStream:
    """The weight stream of `program` (``Program.weight_ports`` masters of its bus) under
    a DDR sustaining `ddr_bytes_per_cycle` (None: uncapped)."""
    return WeightStream(program.weight_ports, program.bus_bits // 8, ddr_bytes_per_cycle)


def ucu_cycles(rows: int, stored_tiles: int, out_tiles: int, load_beats: int,
               drain_chunks: int = 1) -> int:  # fmt: skip
    """UCU compute cycles for one weight matrix (excluding activation DMA).

    ``stored_tiles``: tiles actually stored (all tiles when dense, non-zero tiles when
    block-sparse), spread over ``out_tiles`` output tile rows. ``drain_chunks``: cycles
    an output row takes through the requantise / post-op lanes (:func:`drain_chunks`); the
    drain of one output tile row overlaps the next one's MACs, so the longer of the two
    sets the pace, and the last drain is exposed.
    """
    drain = rows * drain_chunks
    if stored_tiles == 0:
        return out_tiles * drain + UCU_PIPELINE  # bias-only outputs still drain
    macs = stored_tiles * max(rows, load_beats)
    return load_beats + max(macs, (out_tiles - 1) * drain) + drain + UCU_PIPELINE


def _linear_schedule(rows: int, in_dim: int, out_dim: int, tile_in: int, tile_out: int,
                     weight_bytes: int, bus_bytes: int, stored_tiles: int | None,
                     stream: WeightStream | None) -> dict:  # fmt: skip
    """What linear_cycles and linear_breakdown share: the tile load, the UCU schedule,
    the drain's writes and the DDR contention between them."""
    out_tiles = -(-out_dim // tile_out)
    in_tiles = -(-in_dim // tile_in)
    stored = out_tiles * in_tiles if stored_tiles is None else stored_tiles
    load = tile_load_beats(tile_in, tile_out, weight_bytes, _weight_rate(stream, bus_bytes))
    chunks = ucu_drain_chunks(tile_out, bus_bytes, stream)
    ucu = ucu_cycles(rows, stored, out_tiles, load, chunks)
    # every output row of a tile is To int32 words on the bus: with few input tiles the
    # writes (and residual reads, on the other port) outlast the MACs; over the window's
    # y port (and its x port for the residual) a row is one write
    row_beats = 1 if stream is not None and stream.y_row else beats(4 * tile_out, bus_bytes)
    write_beats = out_tiles * rows * row_beats
    writes = write_beats + load + rows + UCU_PIPELINE
    contention = 0
    if stream is not None and stored and (load > rows or writes > ucu):
        tile_beats = beats(tile_in * tile_out * weight_bytes, bus_bytes)
        contention = stream.contention(write_beats, stored * tile_beats, load > rows)
    return {
        "stored": stored, "out_tiles": out_tiles, "load": load, "chunks": chunks, "ucu": ucu,
        "writes": writes, "x_beats": x_beats(rows, in_dim, bus_bytes, stream),
        "contention": contention,
    }  # fmt: skip


def linear_cycles(rows: int, in_dim: int, out_dim: int, tile_in: int, tile_out: int,
                  weight_bytes: int, bus_bytes: int, stored_tiles: int | None = None,
                  residual: bool = False, stream: WeightStream | None = None) -> int:  # fmt: skip
    """A LINEAR layer: input rows read once into the on-chip row buffer (exposed),
    the UCU schedule, residual reads and output writes overlapped with the drain, and
    what several weight masters and the writes lose to each other on the DDR."""
    s = _linear_schedule(
        rows, in_dim, out_dim, tile_in, tile_out, weight_bytes, bus_bytes, stored_tiles, stream
    )
    return s["x_beats"] + max(s["ucu"], s["writes"]) + s["contention"]


def attention_chunks(head_dim: int, lanes: int) -> int:
    """Cycles one key (or query row) of a head takes in an attention datapath of `lanes`
    lanes (0: the whole row in one)."""
    return -(-head_dim // lanes) if lanes else 1


def attention_pass_beats(tokens: int, parallel: int) -> int:
    """Keys one rotated pass streams: ceil(N/P) rounds of N keys plus the last round's tail."""
    slots = min(parallel, tokens)
    return -(-tokens // slots) * tokens + slots - 1


def attention_key_cycles(head_dim: int, lanes: int) -> tuple[int, int]:
    """Cycles a key takes in pass 1 and pass 2. The attention core updates its running sums
    over two cycles (a multiply, then the rounding and overflow step: one cycle through both
    would put a DSP and a dozen LUT levels in a loop), so a pass-1 key takes at least two
    even when the head fits one chunk."""
    chunks = attention_chunks(head_dim, lanes)
    return max(2, chunks), chunks


def attention_cycles(tokens: int, dim: int, heads: int, parallel: int, bus_bytes: int,
                     lanes: int = 0) -> int:  # fmt: skip
    """Reordered attention: qkv read once (`bus_bytes` a cycle: a bus beat, or a row of
    the window's x port), per head two rotated passes (each key ``attention_key_cycles``),
    output written while the last pass drains."""
    pass1, pass2 = attention_key_cycles(dim // heads, lanes)
    keys = attention_pass_beats(tokens, parallel)
    qkv_beats = tokens * beats(4 * 3 * dim, bus_bytes)
    return qkv_beats + heads * (keys * (pass1 + pass2) + ATTENTION_PIPELINE)


def layernorm_lane_cycles(dim: int, lanes: int, bus_bytes: int, norm_lanes: int = 0) -> int:
    """A row's two passes: sums at `lanes` elements a cycle, then the normalise pass at
    `norm_lanes` a cycle (0: as many as a bus beat has words, ``output_lanes``;
    ``ArchConfig.norm_lanes``). A row's statistics arrive LAYERNORM_STATS_LATENCY +
    log2(lanes) cycles (the adder tree) after its last beat. Two row buffers put the
    previous row's normalise pass and the next row's sum pass in between (the passes
    alternate: in r+1, out r, in r+2, ...), so a row whose two passes are shorter than
    that latency costs half of the latency and its passes together (the steady state of
    out r starting at max(end of in r+1, end of in r + latency)): measured on the core
    with 64 lanes and 16 normalise lanes, 15.5 cycles a 192-wide row, on m3vit-tiny's
    64-wide rows over 16 lanes ~11, where the passes alone are 15 and 8."""
    beats_per_row = -(-dim // lanes)
    chunks = lane_chunks(lanes, norm_lanes, bus_bytes)  # cycles a beat
    latency = LAYERNORM_STATS_LATENCY + (lanes - 1).bit_length()
    passes = beats_per_row * (1 + chunks)
    return max(passes, (latency - 1 + passes) // 2)


def layernorm_row_moves(dim: int, bus_bytes: int, x_beat_bytes: int | None = None,
                        y_words: int = 0) -> int:  # fmt: skip
    """Cycles a row's read and its write take (concurrently): bus beats, or over the
    window's row ports a RAM row (`x_beat_bytes`) a cycle in and an output tile row
    (`y_words`) a cycle out."""
    reads = beats(4 * dim, x_beat_bytes or bus_bytes)
    writes = -(-dim // y_words) if y_words else beats(4 * dim, bus_bytes)
    return max(reads, writes)


def layernorm_cycles(rows: int, dim: int, lanes: int, bus_bytes: int, norm_lanes: int = 0,
                     x_beat_bytes: int | None = None, y_words: int = 0) -> int:  # fmt: skip
    per_row = layernorm_lane_cycles(dim, lanes, bus_bytes, norm_lanes)
    moves = layernorm_row_moves(dim, bus_bytes, x_beat_bytes, y_words)
    return rows * max(per_row, moves) + LAYERNORM_PIPELINE


def elementwise_cycles(rows: int, cols: int, lanes: int, bus_bytes: int, inputs: int = 1) -> int:
    """EMBED / ADD: `lanes` elements per cycle, bounded by reading `inputs` streams."""
    per_row = max(-(-cols // lanes), inputs * beats(4 * cols, bus_bytes))
    return rows * per_row + ELEMENTWISE_PIPELINE


# cds_eng_eltwise reads in commands of ELTWISE_CHUNK_BEATS beats, ELTWISE_READS_AHEAD of them
# in flight per port (its CHW and AHEAD); a DDR read's data comes READ_PATH_CYCLES after the
# DDR model's first-beat latency (the top's read arbitration and FIFOs; fitted on m3vit's
# EMBED at 16, 64 and 128 cycles of latency: benchmarks/bench_e2e.py --latency)
ELTWISE_CHUNK_BEATS = 16
ELTWISE_READS_AHEAD = 4
READ_PATH_CYCLES = 22


def windowed_read_waits(total_beats: int, ddr_latency: int,
                        chunk_beats: int = ELTWISE_CHUNK_BEATS,
                        ahead: int = ELTWISE_READS_AHEAD) -> int:  # fmt: skip
    """Cycles a stream of `total_beats` DDR beats waits beyond a beat a cycle when only
    `ahead` commands of `chunk_beats` are in flight: past its first two windows (their
    round trips hide behind the op's exposed ones: fitted with READ_PATH_CYCLES), a window
    of beats per round trip; none when the window covers the round trip or the latency is
    not modelled (0)."""
    window = ahead * chunk_beats
    if not ddr_latency or total_beats <= 2 * window:
        return 0
    slowdown = max(0.0, (ddr_latency + READ_PATH_CYCLES) / window - 1.0)
    return math.ceil((total_beats - 2 * window) * slowdown)


def pool_cycles(rows: int, cols: int, bus_bytes: int) -> int:
    """POOL: one bus beat of a row per cycle into the column sums; the last row's beats
    leave scaled and requantised, so the output row costs no pass of its own."""
    return rows * beats(4 * cols, bus_bytes) + ELEMENTWISE_PIPELINE


def gate_cycles(tokens: int, dim: int, experts: int, top_k: int, tile_in: int, tile_out: int,
                weight_bytes: int, bus_bytes: int,
                stream: WeightStream | None = None) -> int:  # fmt: skip
    """Gate logits on the UCU, then per token a softmax over experts (one per cycle),
    top-k selection; the k queue appends overlap the next token's scan."""
    logits = linear_cycles(
        tokens, dim, experts, tile_in, tile_out, weight_bytes, bus_bytes,
        stream=_logits_stream(stream),
    )  # fmt: skip
    queue = queue_beats(experts, experts, tokens, bus_bytes)  # counts, ids, scores written
    return logits + tokens * max(experts, top_k) + queue + GATE_PIPELINE


def _logits_stream(stream: WeightStream | None) -> WeightStream | None:
    """The gate's stream: its logits go into the MoE engine's buffer an output tile row a
    write (cds_eng_moe), as over the window's y port, never onto the bus."""
    return replace(stream, y_row=True) if stream is not None else None


def queue_beats(experts: int, rows: int, tokens: int, bus_bytes: int) -> int:
    """The MoE queue in the arena: counts[E], then ids and scores rows of `rows` experts."""
    return beats(4 * experts, bus_bytes) + 2 * rows * beats(4 * tokens, bus_bytes)


def experts_cycles(counts: list[int], tokens: int, dim: int, hidden: int, tile_in: int,
                   tile_out: int, weight_bytes: int, bus_bytes: int,
                   stream: WeightStream | None = None) -> int:  # fmt: skip
    """Only experts with tokens run; each loads its weights once and gathers its rows.

    The queue is read back first (counts, then ids and scores of the experts with tokens);
    fc1's GELU output goes to the arena's scratch rows, which fc2 reads after the writes
    have landed (EXPERT_HANDOFF: write acknowledgement and the two job starts)."""
    active = [count for count in counts if count]
    total = queue_beats(len(counts), len(active), tokens, bus_bytes)
    for count in active:
        total += linear_cycles(
            count, dim, hidden, tile_in, tile_out, weight_bytes, bus_bytes, stream=stream
        )
        total += x_beats(count, hidden, bus_bytes, stream) + EXPERT_HANDOFF
        total += ucu_cycles(
            count,
            -(-dim // tile_out) * -(-hidden // tile_in),
            -(-dim // tile_out),
            tile_load_beats(tile_in, tile_out, weight_bytes, _weight_rate(stream, bus_bytes)),
            ucu_drain_chunks(tile_out, bus_bytes, stream),
        )
    final = final_pass_cycles(tokens, dim, tile_out, bus_bytes, stream)
    return total + final + ELEMENTWISE_PIPELINE


def final_pass_cycles(tokens: int, dim: int, tile_out: int, bus_bytes: int,
                      stream: WeightStream | None = None) -> int:  # fmt: skip
    """MoE output: per token and output tile, the exact sums (+ residual) requantised on
    the final lanes (the stream's ``final_lanes``, by default a bus beat's words: tile_out
    over them cycles a tile), written as they finish; a token's residual and output move a
    bus beat a cycle, or a tile a cycle over the window's row ports (``final_x`` /
    ``final_y``), whichever of the three is slowest."""
    tiles = -(-dim // tile_out)
    chunks = lane_chunks(tile_out, stream.final_lanes if stream is not None else 0, bus_bytes)
    row_beats = beats(4 * dim, bus_bytes)
    reads = tiles if stream is not None and stream.final_x else row_beats
    writes = tiles if stream is not None and stream.final_y else row_beats
    return tokens * max(reads, writes, tiles * chunks)


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
AXI_LATENCY = DEFAULT_LATENCY  # first-beat latency of a PL read from PS DDR (arch.ddr)
DESCRIPTOR_BYTES = 4 * LAYER_WORDS  # one layer descriptor, fetched in one burst


def descriptor_cycles(bus_bytes: int) -> int:
    """A layer's descriptor fetch (one burst) and its dispatch."""
    return beats(DESCRIPTOR_BYTES, bus_bytes) + LAYER_DISPATCH


# DDR round trips a layer leaves exposed because each waits for the one before: the
# descriptor, the first operands, the write acknowledgement at the end; LayerNorm and
# EMBED/ADD partly wait on parameters or second operands too. MoE experts: descriptor,
# queue counts, then ids/scores, the residual pass and its acknowledgement, and per
# expert with tokens its fc1 operands, fc1's write acknowledgement, fc2's scratch reads.
# Measured on the RTL top as the slope of per-layer cycles over DDR latency
# (benchmarks/bench_e2e.py --latency 2 64): see docs/rtl-top.md.
LAYER_ROUND_TRIPS = {Op(op.code): op.round_trips for op in SPECS}  # in each op's module
EXPERT_ROUND_TRIPS = spec(Op.MOE_EXPERTS).round_trips_per_expert  # per expert with tokens


# ---------------------------------------------------------------- reading a Program


def _fmt_width(layer, key: str) -> int:
    word = layer.fields.get(key, 0)
    return unpack_fmt(word).width if word else 0


def _board(board):
    return board if isinstance(board, Board) else get_board(str(board))


def tile_count(program, layer) -> int:
    """Weight tiles of a LINEAR layer's matrix, stored or not."""
    f = layer.fields
    return -(-f["out_dim"] // program.tile_out) * -(-f["in_dim"] // program.tile_in)


def block_count(program, layer) -> int:
    """Stored (non-zero) tiles of a LINEAR layer: all of them when dense."""
    f = layer.fields
    if f["blocks"] == NONE:
        return tile_count(program, layer)
    out_tiles = -(-f["out_dim"] // program.tile_out)
    return int(program.read_words(f["blocks"] + 4 * out_tiles, 1)[0])


def program_widths(program) -> dict:
    """Operand widths the datapath must carry, read from the Program's format words."""
    widths = {
        "weight": 0,
        "activation": 0,
        "matmul": 0,  # activations the UCU multiplies (narrower with a wide residual stream)
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
            grow("matmul", _fmt_width(layer, "x_fmt"))
        elif op == Op.MOE_GATE:
            grow("weight", _fmt_width(layer, "w_fmt"))
            grow("activation", _fmt_width(layer, "x_fmt"))
            grow("matmul", _fmt_width(layer, "x_fmt"))
            grow("gate_score", _fmt_width(layer, "score_fmt"))
        elif op == Op.MOE_EXPERTS:
            grow("weight", max(_fmt_width(layer, "fc1_fmt"), _fmt_width(layer, "fc2_fmt")))
            for key in ("x_fmt", "pre_fmt", "hidden_fmt", "out_fmt"):
                grow("activation", _fmt_width(layer, key))
            grow("matmul", max(_fmt_width(layer, "x_fmt"), _fmt_width(layer, "hidden_fmt")))
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
    widths["matmul"] = widths["matmul"] or widths["activation"]
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
    from ..golden import GoldenExecutor

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


def ucu_parts(jobs: list[tuple[int, int]], load: int, activation_beats: int) -> dict:
    """Where a UCU schedule spends its time: reading rows, waiting for weight tiles
    (a tile whose load outlasts its rows), or streaming rows past loaded tiles."""
    return {
        "activations": activation_beats,
        "weights": sum(tiles * max(0, load - rows) for rows, tiles in jobs),
        "compute": sum(tiles * rows for rows, tiles in jobs),
    }


def row_parts(rows: int, lane_cycles: int, bus_beats: int) -> dict:
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


def breakdown_parts(**cycles: int) -> dict:
    """A breakdown with every part present, in BREAKDOWN_PARTS order."""
    return {part: int(cycles.get(part, 0)) for part in BREAKDOWN_PARTS}


def add_parts(total: dict, more: dict) -> None:
    for part, cycles in more.items():
        total[part] += cycles


def _checked(parts: dict, cycles: int, what: str) -> dict:
    if sum(parts.values()) != cycles:
        raise AssertionError(
            f"{what}: breakdown {parts} sums to {sum(parts.values())}, not {cycles}"
        )
    return parts


def ucu_breakdown(rows: int, stored_tiles: int, load: int, out_tiles: int = 1,
                  chunks: int = 1) -> dict:  # fmt: skip
    """ucu_cycles in parts: rows streaming past stored tiles, tile loads they do not
    hide (and the first), the output drain they do not hide (and the last), the
    pipeline depth."""
    drain = rows * chunks
    if stored_tiles == 0:
        return breakdown_parts(activations=out_tiles * drain, control=UCU_PIPELINE)
    macs = stored_tiles * max(rows, load)
    return breakdown_parts(
        compute=stored_tiles * rows,
        weights=load + stored_tiles * max(0, load - rows),
        activations=drain + max(0, (out_tiles - 1) * drain - macs),
        control=UCU_PIPELINE,
    )


def linear_breakdown(rows: int, in_dim: int, out_dim: int, tile_in: int, tile_out: int,
                      weight_bytes: int, bus_bytes: int, stored_tiles: int | None = None,
                      stream: WeightStream | None = None) -> dict:  # fmt: skip
    """linear_cycles in parts: input rows read, the UCU, output writes it does not hide,
    DDR contention."""
    s = _linear_schedule(
        rows, in_dim, out_dim, tile_in, tile_out, weight_bytes, bus_bytes, stored_tiles, stream
    )
    parts = ucu_breakdown(rows, s["stored"], s["load"], s["out_tiles"], s["chunks"])
    parts["activations"] += s["x_beats"] + max(0, s["writes"] - s["ucu"])
    parts["ddr"] += s["contention"]
    return parts


def rows_breakdown(rows: int, lane_cycles: int, bus_beats: int, pipeline: int) -> dict:
    """Row-wise ops (LayerNorm, EMBED, ADD): lanes per row, bus beats beyond them."""
    return breakdown_parts(
        compute=rows * lane_cycles,
        activations=rows * max(0, bus_beats - lane_cycles),
        control=pipeline,
    )


def gate_breakdown(tokens, dim, experts, top_k, tile_in, tile_out, weight_bytes, bus_bytes,
                   stream=None):  # fmt: skip
    """gate_cycles in parts: the logits on the UCU, softmax/top-k, the queue writes."""
    parts = linear_breakdown(
        tokens, dim, experts, tile_in, tile_out, weight_bytes, bus_bytes,
        stream=_logits_stream(stream),
    )  # fmt: skip
    parts["compute"] += tokens * max(experts, top_k)
    parts["activations"] += queue_beats(experts, experts, tokens, bus_bytes)
    parts["control"] += GATE_PIPELINE
    return parts


def experts_breakdown(counts, tokens, dim, hidden, tile_in, tile_out, weight_bytes, bus_bytes,
                      stream=None):  # fmt: skip
    """experts_cycles in parts: queue reads, per active expert fc1, hidden traffic,
    handoff and fc2, then the residual pass."""
    active = [count for count in counts if count]
    parts = breakdown_parts(
        activations=queue_beats(len(counts), len(active), tokens, bus_bytes)
        + final_pass_cycles(tokens, dim, tile_out, bus_bytes, stream),
        control=ELEMENTWISE_PIPELINE + EXPERT_HANDOFF * len(active),
    )
    load = tile_load_beats(tile_in, tile_out, weight_bytes, _weight_rate(stream, bus_bytes))
    fc2_tiles = -(-dim // tile_out) * -(-hidden // tile_in)
    for count in active:
        fc1 = linear_breakdown(
            count, dim, hidden, tile_in, tile_out, weight_bytes, bus_bytes, stream=stream
        )
        add_parts(parts, fc1)
        parts["activations"] += x_beats(count, hidden, bus_bytes, stream)
        chunks = ucu_drain_chunks(tile_out, bus_bytes, stream)
        add_parts(parts, ucu_breakdown(count, fc2_tiles, load, -(-dim // tile_out), chunks))
    return parts


def _layer_estimate(program, layer, bus: int, counts: list[int] | None,
                    stored: int | None = None,
                    stream: WeightStream | None = None) -> dict:  # fmt: skip
    """Compute cycles (the per-op formulas) and their breakdown, useful MACs and DDR
    bytes of one layer; ``stored``: a LINEAR's weight tiles to cost (None: as stored;
    ``tile_count``: as if dense); ``stream``: how the weight tiles arrive
    (``weight_stream``)."""
    stream = weight_stream(program) if stream is None else stream
    model = dict(spec(layer.op).estimate(program, layer, bus, counts, stored, stream))
    cycles, breakdown, parts = model.pop("cycles"), model.pop("breakdown"), model.pop("parts")
    return {
        "compute_cycles": int(cycles),
        "breakdown": _checked(breakdown, int(cycles), f"{layer.name} schedule"),
        "limited_by": max(parts, key=parts.get),
        "macs": int(model.pop("macs")),
        "weight_bytes": int(model.pop("weight_bytes")),
        "act_bytes": int(model.pop("act_bytes")),
        **model,
    }


def _check_arch(program, arch) -> None:
    mismatch = [
        f"{name} (program {getattr(program, name)}, ArchConfig {getattr(arch, name)})"
        for name in ("tile_in", "tile_out", "bus_bits", "weight_ports")
        if getattr(program, name) != getattr(arch, name)
    ]
    if program.attn_lanes != arch.header_attn_lanes:
        mismatch.append(
            f"attn_lanes (program {program.attn_lanes}, ArchConfig {arch.header_attn_lanes})"
        )
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


def startup_cycles(program, ddr_latency: int = AXI_LATENCY, arch=None) -> int:
    """Before the first layer: the kernel reads the header, checks every descriptor
    (one burst each), reads the header again and loads the four tables into ROMs.
    With `arch`, the checks cost what the RTL's rule engine takes to run the header's
    and each layer's rules (``codesign.ops.microcode``; the HLS kernel is charged the
    same)."""
    bus = program.bus_bits // 8
    header = beats(HEADER_BYTES, bus) + ddr_latency
    check = len(program.layers) * (beats(DESCRIPTOR_BYTES, bus) + ddr_latency)
    tables = sum(beats(4 * t.entries, bus) + ddr_latency for t in program.tables.values())
    if arch is not None:
        check += rule_engine_cycles(program, arch, ddr_latency)
    return 2 * header + check + tables


def rule_engine_cycles(program, arch, ddr_latency: int = AXI_LATENCY) -> int:
    """Cycles of the RTL controller's rule engine on `program`: the header's rules once,
    each layer's rules (exactly: ``codesign.ops.microcode.verdict`` counts them), plus
    the CSR index stream of each block-sparse layer."""
    from ..ops import kernel_check_params, microcode

    containers = {layer.fields["w_bytes"] for layer in program.layers if "w_bytes" in layer.fields}
    params = kernel_check_params(arch, w_bytes=tuple(sorted(containers)) or (2,))
    answer = microcode.verdict(program.to_bytes(), params)
    if answer.code:
        # a refused Program stops after the failing rule: its cycles would not be a run's
        raise ValueError(f"the rule engine refuses this Program: {answer}")
    total = answer.header_cycles + sum(answer.layer_cycles)
    for layer in program.layers:
        if layer.op.name == "LINEAR" and layer.fields.get("blocks", NONE) != NONE:
            words = -(-layer.fields["out_dim"] // program.tile_out) + 1 + layer.fields["nnz"]
            total += beats(4 * words, program.bus_bits // 8) + ddr_latency + CSR_CHECK_DRAIN
    return total


# cycles the controller's CSR index check takes past the index's last beat (its two stages)
CSR_CHECK_DRAIN = 2


# AXI cycles from a read address to its first data in the on-chip window (cds_arena_window:
# the address register, the RAM read, the data FIFO)
WINDOW_LATENCY = 3


# the rows each op can load over the window's x port: (base, stride) fields (the UCU's
# input rows; attention's qkv rows)
X_SOURCES = {"LINEAR": (("src", "src_stride"),), "MOE_GATE": (("src", "src_stride"),),
             "MOE_EXPERTS": (("src", "src_stride"), ("scratch", "scratch_stride")),
             "ATTENTION": (("src", "src_stride"),),
             "LAYERNORM": (("src", "src_stride"),)}  # fmt: skip


def _on_window_rows(program, layer, base: str, stride: str) -> bool:
    """Whether the block at field `base` (rows `stride` bytes apart) lies in the window on
    whole rows of its RAM (tile_in words), as its row ports need."""
    row = 4 * program.tile_in
    address, step = layer.fields[base], layer.fields[stride]
    return address < program.window_bytes and address % row == 0 and step % row == 0


def x_port_bytes(program, layer) -> int | None:
    """Bytes a cycle `layer`'s input rows (``X_SOURCES``) load at over the window's x port
    (a row of its RAM: tile_in words), when the kernel has one (tile_in words wider than a
    bus beat) and every x source lies in the window on whole RAM rows; None otherwise."""
    row = 4 * program.tile_in
    sources = X_SOURCES.get(layer.op.name)
    if not sources or not program.window_bytes or row <= program.bus_bits // 8:
        return None
    if not all(_on_window_rows(program, layer, base, stride) for base, stride in sources):
        return None
    return row


# where an op writes the rows its y port can take (the UCU job's sink 0, LayerNorm's
# output): (address, stride) fields per op
Y_SINKS = {"LINEAR": ("dst", "dst_stride"), "MOE_EXPERTS": ("scratch", "scratch_stride"),
           "LAYERNORM": ("dst", "dst_stride")}  # fmt: skip


def y_port_rows(program, arch, layer) -> bool:
    """Whether `layer`'s output rows (``Y_SINKS``) go an output tile row a cycle: the
    kernel has the window's y port (``ArchConfig.y_port``), the rows lie in the window on
    whole RAM rows, and a residual (LINEAR's post ADD) comes over the x port, so from
    there too."""
    sink = Y_SINKS.get(layer.op.name)
    if not arch.y_port or sink is None or not _on_window_rows(program, layer, *sink):
        return False
    residual = layer.op.name == "LINEAR" and layer.fields["post"] == Post.ADD
    return not residual or _on_window_rows(program, layer, "res", "res_stride")


def final_pass_rows(program, arch, layer) -> tuple[bool, bool]:
    """Whether an MOE_EXPERTS `layer`'s final pass reads its residual (or has none) over
    the window's x port and writes its output over the y port: the kernel has the row
    ports (``ArchConfig.y_port``; cds_eng_moe uses them then) and the rows lie in the
    window on whole RAM rows."""
    if not arch.y_port or layer.op.name != "MOE_EXPERTS":
        return False, False
    residual = layer.fields["res"] == NONE or _on_window_rows(program, layer, "res", "res_stride")
    return residual, _on_window_rows(program, layer, "dst", "dst_stride")


def layer_stream(program, arch, layer, ddr_bytes_per_cycle: float | None = None,
                 ddr_latency: int = 0) -> WeightStream:  # fmt: skip
    """How `layer`'s weight tiles, rows and outputs move on the kernel `arch` describes,
    under a DDR sustaining `ddr_bytes_per_cycle` with `ddr_latency` cycles to a read's
    first data: what ``estimate_cycles`` costs it with."""
    final_x, final_y = final_pass_rows(program, arch, layer)
    return replace(
        weight_stream(program, ddr_bytes_per_cycle),
        arena_on_chip=arena_on_chip(program, layer),
        x_beat_bytes=x_port_bytes(program, layer),
        drain_lanes=arch.output_lanes,
        y_row=y_port_rows(program, arch, layer),
        norm_lanes=arch.norm_lanes,
        final_lanes=arch.final_lanes,
        final_x=final_x,
        final_y=final_y,
        ddr_latency=ddr_latency,
    )


def arena_on_chip(program, layer) -> bool:
    """Whether every arena block `layer` touches lies in the on-chip window."""
    window = program.window_bytes
    bases = [layer.fields[name] for name in spec(layer.op).arena_addresses]
    return window > 0 and all(base < window for base in bases if base != NONE)


def exposed_latency(layer, ddr_latency: int, counts: list[int] | None = None,
                    on_chip: bool = False) -> int:  # fmt: skip
    """Cycles a running layer waits on round trips: the op's ``round_trips`` to DDR, each
    `ddr_latency` cycles (measured on the RTL top as the slope of its cycles over DDR
    latency); `on_chip` (every arena block in the window): ``round_trips_on_chip`` to DDR,
    the rest to the window at WINDOW_LATENCY."""
    op = spec(layer.op)
    active = sum(1 for count in counts or [] if count)
    trips = op.round_trips + op.round_trips_per_expert * active
    if not on_chip:
        return round(trips * ddr_latency)
    ddr_trips = op.round_trips_on_chip + op.round_trips_on_chip_per_expert * active
    return round(ddr_trips * ddr_latency + max(0.0, trips - ddr_trips) * WINDOW_LATENCY)


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


def layer_cost(program, arch, layer, ddr: DdrModel, counts: list[int] | None = None,
               stored: int | None = None) -> dict:  # fmt: skip
    """One running layer on the board as ``estimate_cycles`` costs it: its schedule on the
    kernel `arch` describes (``layer_stream``), the DDR transfer under `ddr`, descriptor
    and exposed round trips; ``stored``: a LINEAR's weight tiles to cost (None: as the
    Program stores them), which is how pruning weighs a layer's tiles on the board.
    Returns ``_layer_estimate``'s detail (breakdown folded in) with ``cycles``,
    ``ddr_cycles``, ``latency_cycles`` and ``arena_on_chip``."""
    bus = program.bus_bits // 8
    moves = layer_stream(program, arch, layer, ddr.bytes_per_cycle, ddr.latency_cycles)
    detail = _layer_estimate(program, layer, bus, counts, stored, moves)
    # on chip, the arena's round trips are the window's, its bytes use no DDR
    waits = exposed_latency(layer, ddr.latency_cycles, counts, moves.arena_on_chip)
    if moves.arena_on_chip:
        detail["act_bytes"] = 0
    descriptor = descriptor_cycles(bus)
    cycles, transfer, breakdown = _layer_cycles(
        detail, ddr.bytes_per_cycle, descriptor, waits, layer.name
    )
    # the round trips exposed, and what the op's own streams wait on the DDR's latency
    latency = breakdown["latency"]
    detail.update(cycles=cycles, ddr_cycles=transfer, breakdown=breakdown, latency_cycles=latency)
    detail["arena_on_chip"] = moves.arena_on_chip
    return detail


def estimate_cycles(
    program,
    arch,
    board,
    expert_counts=None,
    task: int = 0,
    ddr_latency: int | None = None,
    ddr: DdrModel | None = None,
) -> dict:
    """Per-layer and total cycles of one run of `program` for `task` on `board` under the
    DDR model `ddr` (default: the board's, ``codesign.arch.ddr_model``: 80 % of the peak,
    ``ddr_latency`` or 64 cycles from a read request to its first data, and from the last
    write beat to its acknowledgement)."""
    board = _board(board)
    _check_arch(program, arch)
    if ddr is None:
        ddr = ddr_model(board, arch, latency_cycles=ddr_latency)
    ddr_latency = ddr.latency_cycles
    if not 0 <= task < program.n_tasks:
        raise ValueError(f"task {task} out of range: the program has {program.n_tasks} tasks")
    bus = program.bus_bits // 8
    clock_hz = board.clock_mhz * 1e6
    descriptor = descriptor_cycles(bus)
    start = startup_cycles(program, ddr_latency, arch)
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
            detail = layer_cost(program, arch, layer, ddr, counts)
            cycles, transfer = detail.pop("cycles"), detail.pop("ddr_cycles")
            limited_by, breakdown = detail.pop("limited_by"), detail.pop("breakdown")
            entry.update(
                cycles=cycles,
                ddr_cycles=transfer,
                bound="ddr" if transfer > detail["compute_cycles"] else limited_by,
                ddr_bytes=detail["weight_bytes"] + detail["act_bytes"],
                latency_cycles=detail.pop("latency_cycles"),
                arena_on_chip=detail.pop("arena_on_chip"),
                **detail,
                breakdown=breakdown,
            )
            if detail.get("block_sparse"):  # what the layer would cost unpruned
                dense = layer_cost(program, arch, layer, ddr, counts, tile_count(program, layer))
                entry["cycles_dense"] = dense["cycles"]
            if layer.op.name == "MOE_EXPERTS":
                entry["counts_source"] = source
        else:  # the kernel reads the descriptor, sees another task, moves on
            cycles = descriptor + ddr_latency
            entry.update(cycles=cycles, compute_cycles=0, ddr_cycles=0, bound="skipped")
            entry.update(macs=0, weight_bytes=0, act_bytes=0, ddr_bytes=0)
            entry["breakdown"] = breakdown_parts(latency=ddr_latency, control=descriptor)
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
        "ddr": ddr.to_dict(),
    }
