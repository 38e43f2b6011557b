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
"""

from __future__ import annotations

UCU_PIPELINE = 8  # cycles from a row entering the array to its accumulators updating
ATTENTION_PIPELINE = 16  # score -> exp -> running sum / recip pipeline
LAYERNORM_PIPELINE = 24  # sums -> rsqrt table -> first normalised element
ELEMENTWISE_PIPELINE = 4
GATE_PIPELINE = 16


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
    return x_beats + ucu_cycles(rows, stored, out_tiles, load)


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
    top-k selection and k queue appends."""
    logits = linear_cycles(tokens, dim, experts, tile_in, tile_out, weight_bytes, bus_bytes)
    return logits + tokens * (experts + top_k) + GATE_PIPELINE


def experts_cycles(counts: list[int], tokens: int, dim: int, hidden: int, tile_in: int,
                   tile_out: int, weight_bytes: int, bus_bytes: int) -> int:  # fmt: skip
    """Only experts with tokens run; each loads its weights once and gathers its rows."""
    total = 0
    for count in counts:
        if count == 0:
            continue
        total += linear_cycles(count, dim, hidden, tile_in, tile_out, weight_bytes, bus_bytes)
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


__all__ = [
    "attention_cycles",
    "balanced_counts",
    "beats",
    "elementwise_cycles",
    "experts_cycles",
    "gate_cycles",
    "layernorm_cycles",
    "linear_cycles",
    "tile_load_beats",
    "ucu_cycles",
    "utilisation",
]
