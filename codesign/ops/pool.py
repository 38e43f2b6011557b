"""POOL: the mean over token rows (timm's ``global_pool='avg'``), as one output row:
out[0, c] = q((sum_r x[r, c]) * scale) at F = F_x + F_scale, where the compiler gives
scale = round(2**F_scale / rows). A multiply by a reciprocal constant instead of a
division keeps it one DSP operation per lane in hardware and exact in every executor."""

from __future__ import annotations

import numpy as np

from .base import OpSpec, arena_rows, disjoint, fields, formats, in_range, layer_model, rows_of
from .expr import F, P, Rule, frac

SCALE_LIMIT = 1 << 16  # |scale| <= 2**16: |x| < 2**31 over < 2**16 rows, product < 2**63
SCALE_FRAC_MAX = 31


def golden(ex, layer, task: int) -> np.ndarray | None:
    f = layer.fields
    x_fmt, scale_fmt, out_fmt = (layer.fmt(k) for k in ("x_fmt", "scale_fmt", "out_fmt"))
    x = ex.read(f["src"], f["rows"], f["cols"], f["src_stride"])
    total = x.sum(axis=0, keepdims=True) * np.int64(f["scale"])
    y = ex.quant(total, x_fmt.frac_bits + scale_fmt.frac_bits, out_fmt)
    ex.write(f["dst"], f["dst_stride"], y)
    return y


def estimate(program, layer, bus: int, counts: list[int] | None, stored: int | None,
             stream) -> dict:  # fmt: skip
    """POOL's schedule in cycles, DDR bytes and MACs (``OpSpec.estimate``)."""
    from ..estimate.cycles import (
        ELEMENTWISE_PIPELINE,
        beats,
        pool_cycles,
        row_parts,
        rows_breakdown,
    )

    f = layer.fields
    row_beats = beats(4 * f["cols"], bus)
    cycles = pool_cycles(f["rows"], f["cols"], bus)
    parts = row_parts(f["rows"], row_beats, row_beats)
    breakdown = rows_breakdown(f["rows"], row_beats, row_beats, ELEMENTWISE_PIPELINE)
    act_bytes = (f["rows"] + 1) * bus * row_beats
    return layer_model(cycles, breakdown, parts, act_bytes=act_bytes)


SPEC = OpSpec(
    name="POOL",
    code=8,
    fields=fields(
        "src:u src_stride:u rows:c cols:c dst:u dst_stride:u x_fmt scale:s scale_fmt out_fmt"
    ),
    rules=(
        in_range("rows", 1, P("max_tokens")),
        in_range("cols", 1, P("max_dim")),
        *formats("x_fmt", "scale_fmt", "out_fmt"),
        Rule(
            "FORMAT",
            (F("scale") >= -SCALE_LIMIT) & (F("scale") <= SCALE_LIMIT),
            why="|scale| <= 2**16: the sum times scale fits 64 bits",
        ),
        Rule(
            "FORMAT",
            (frac(F("scale_fmt")) >= 0) & (frac(F("scale_fmt")) <= SCALE_FRAC_MAX),
            why=f"scale_fmt has 0..{SCALE_FRAC_MAX} fraction bits",
        ),
        Rule(
            "FORMAT",
            (frac(F("x_fmt")) + frac(F("scale_fmt")) - frac(F("out_fmt")) >= -128)
            & (frac(F("x_fmt")) + frac(F("scale_fmt")) - frac(F("out_fmt")) <= 127),
            why="the requantising shift F_x + F_scale - F_out in [-128, 127]",
        ),
        *arena_rows("source", "src", "src_stride", F("rows"), F("cols")),
        *arena_rows("destination", "dst", "dst_stride", 1, F("cols")),
        disjoint(
            "destination and source",
            rows_of("dst", "dst_stride", 1),
            rows_of("src", "src_stride", F("rows")),
        ),
    ),
    output=("dst", "dst_stride", None, 1, "cols"),
    golden=golden,
    estimate=estimate,
    round_trips=3.7,
    units=("elementwise",),
)
