"""ADD: element-wise sum of two activation matrices, aligned to the finer format."""

from __future__ import annotations

import numpy as np

from ..numerics.exact import align
from .base import OpSpec, arena_rows, disjoint, fields, formats, in_range, layer_model, rows_of
from .expr import F, P


def golden(ex, layer, task: int) -> np.ndarray | None:
    f = layer.fields
    x_fmt, res_fmt, out_fmt = (layer.fmt(k) for k in ("x_fmt", "res_fmt", "out_fmt"))
    x = ex.read(f["src"], f["rows"], f["cols"], f["src_stride"])
    res = ex.read(f["res"], f["rows"], f["cols"], f["res_stride"])
    frac = max(x_fmt.frac_bits, res_fmt.frac_bits)
    y = ex.quant(
        align(x, x_fmt.frac_bits, frac) + align(res, res_fmt.frac_bits, frac), frac, out_fmt
    )
    ex.write(f["dst"], f["dst_stride"], y)
    return y


def estimate(program, layer, bus: int, counts: list[int] | None, stored: int | None,
             stream) -> dict:  # fmt: skip
    """ADD's schedule in cycles, DDR bytes and MACs (``OpSpec.estimate``)."""
    from ..estimate.cycles import (
        ELEMENTWISE_PIPELINE,
        beats,
        elementwise_cycles,
        row_parts,
        rows_breakdown,
    )

    f = layer.fields
    to = program.tile_out
    cycles = elementwise_cycles(f["rows"], f["cols"], to, bus, inputs=2)
    parts = row_parts(f["rows"], -(-f["cols"] // to), 2 * beats(4 * f["cols"], bus))
    breakdown = rows_breakdown(
        f["rows"], -(-f["cols"] // to), 2 * beats(4 * f["cols"], bus), ELEMENTWISE_PIPELINE
    )
    act_bytes = f["rows"] * (f["src_stride"] + f["res_stride"] + f["dst_stride"])
    return layer_model(cycles, breakdown, parts, act_bytes=act_bytes)


SPEC = OpSpec(
    name="ADD",
    code=5,
    fields=fields(
        "src:u src_stride:u rows:c cols:c res:u res_stride:u dst:u dst_stride:u "
        "x_fmt res_fmt out_fmt"
    ),
    rules=(
        in_range("rows", 1, P("max_tokens")),
        in_range("cols", 1, P("row_max")),
        *formats("x_fmt", "res_fmt", "out_fmt"),
        *arena_rows("source", "src", "src_stride", F("rows"), F("cols")),
        *arena_rows("residual", "res", "res_stride", F("rows"), F("cols")),
        *arena_rows("destination", "dst", "dst_stride", F("rows"), F("cols")),
        disjoint(
            "destination and source",
            rows_of("dst", "dst_stride", F("rows")),
            rows_of("src", "src_stride", F("rows")),
        ),
        disjoint(
            "destination and residual",
            rows_of("dst", "dst_stride", F("rows")),
            rows_of("res", "res_stride", F("rows")),
        ),
    ),
    output=("dst", "dst_stride", "rows", 0, "cols"),
    golden=golden,
    estimate=estimate,
    round_trips=3.7,
    units=("elementwise",),
)
