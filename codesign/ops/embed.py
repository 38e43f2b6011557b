"""EMBED: the prefix tokens (class, distillation, register tokens: 0 or more) and the patch
embeddings plus positions: out[t] = pos[t] for t < prefix (each prefix token with its
position folded in), out[prefix + p] = x[p] + pos[prefix + p]."""

from __future__ import annotations

import numpy as np

from ..numerics.exact import align
from .base import (
    OpSpec,
    arena_rows,
    disjoint,
    fields,
    formats,
    in_range,
    layer_model,
    program_block,
    rows_of,
)
from .expr import F, P, Rule, round_up


def golden(ex, layer, task: int) -> np.ndarray | None:
    f = layer.fields
    x_fmt, pos_fmt, out_fmt = (layer.fmt(k) for k in ("x_fmt", "pos_fmt", "out_fmt"))
    patches, dim, prefix = f["patches"], f["dim"], f["prefix"]
    x = ex.read(f["src"], patches, dim, f["src_stride"])
    pos = ex.vector(f["pos"], (patches + prefix) * dim).reshape(patches + prefix, dim)
    frac = max(x_fmt.frac_bits, pos_fmt.frac_bits)
    value = align(pos, pos_fmt.frac_bits, frac)
    value[prefix:] += align(x, x_fmt.frac_bits, frac)
    y = ex.quant(value, frac, out_fmt)
    ex.write(f["dst"], f["dst_stride"], y)
    return y


def estimate(program, layer, bus: int, counts: list[int] | None, stored: int | None,
             stream) -> dict:  # fmt: skip
    """EMBED's schedule in cycles, DDR bytes and MACs (``OpSpec.estimate``)."""
    from ..estimate.cycles import (
        ELEMENTWISE_PIPELINE,
        beats,
        elementwise_cycles,
        row_parts,
        rows_breakdown,
        windowed_read_waits,
    )

    f = layer.fields
    to = program.tile_out
    rows = f["patches"] + f["prefix"]
    row_beats = beats(4 * f["dim"], bus)
    cycles = elementwise_cycles(rows, f["dim"], to, bus, inputs=1)
    parts = row_parts(rows, -(-f["dim"] // to), row_beats)
    breakdown = rows_breakdown(rows, -(-f["dim"] // to), row_beats, ELEMENTWISE_PIPELINE)
    # the position rows come from DDR a few commands ahead: at a DDR latency beyond what
    # they cover, the round trips pace the rows
    waits = windowed_read_waits(rows * row_beats, stream.ddr_latency)
    if waits > 0:
        cycles += waits
        breakdown["latency"] += waits
        parts["latency"] = waits
    weight_bytes = 4 * rows * f["dim"]
    act_bytes = f["patches"] * f["src_stride"] + rows * f["dst_stride"]
    return layer_model(cycles, breakdown, parts, weight_bytes=weight_bytes, act_bytes=act_bytes)


SPEC = OpSpec(
    name="EMBED",
    code=2,
    fields=fields(
        "src:u src_stride:u patches:c dim:c dst:u dst_stride:u x_fmt pos:p pos_fmt out_fmt prefix:c"
    ),
    rules=(
        in_range("prefix", 0, P("max_tokens")),
        in_range("patches", 0, P("max_tokens") - F("prefix")),
        Rule("SIZE", F("patches") + F("prefix") >= 1, why="at least one output row"),
        in_range("dim", 1, P("max_dim")),
        *formats("x_fmt", "pos_fmt", "out_fmt"),
        *arena_rows("source", "src", "src_stride", F("patches"), F("dim")),
        *arena_rows("destination", "dst", "dst_stride", F("patches") + F("prefix"), F("dim")),
        disjoint(
            "destination and source",
            rows_of("dst", "dst_stride", F("patches") + F("prefix")),
            rows_of("src", "src_stride", F("patches")),
        ),
        *program_block(
            "positions",
            "pos",
            round_up((F("patches") + F("prefix")) * F("dim") * 4, P("bus_bytes")),
        ),
    ),
    rows_field="patches",
    output=("dst", "dst_stride", "patches", "prefix", "dim"),
    golden=golden,
    estimate=estimate,
    round_trips=3.7,
    round_trips_on_chip=3.6,  # the position rows are Program reads
    units=("elementwise",),
)
