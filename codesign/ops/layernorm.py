"""LAYERNORM: per row mean and variance in one pass, rsqrt from its table, then the
affine gamma/beta, requantised to out_fmt. It may run in place (destination = source,
same stride): every executor reads a row whole before it writes it back, which is how
qk-norm normalises each head's q and k inside the fused qkv rows."""

from __future__ import annotations

import numpy as np

from ..numerics.exact import align, shift_round_rows
from ..numerics.fixed import apply_overflow, count_overflow
from ..numerics.tables import rsqrt
from .base import (
    OpSpec,
    arena_rows,
    datapath,
    disjoint,
    fields,
    formats,
    frac_le,
    in_range,
    layer_model,
    program_block,
    rows_of,
    table_input,
)
from .expr import F, P, Rule, frac, round_up


def golden(ex, layer, task: int) -> np.ndarray | None:
    """One pass: S1 = sum x, S2 = sum (x >> t)^2; no division anywhere.

    u = D*S2' - S1'^2 + eps*D^2 (S' over the truncated x) is D^2 (var + eps) in units
    of 2**-2(Fx-t); (x - mean)/std = (D*x - S1) * rsqrt(u), with rsqrt as mantissa
    and exponent so the product keeps full precision at any scale.
    """
    f = layer.fields
    x_fmt, g_fmt, b_fmt = (layer.fmt(k) for k in ("x_fmt", "g_fmt", "b_fmt"))
    norm_fmt, out_fmt = layer.fmt("norm_fmt"), layer.fmt("out_fmt")
    rows, dim, shift = f["rows"], f["dim"], f["stat_shift"]
    x = ex.read(f["src"], rows, dim, f["src_stride"])
    s1 = x.sum(axis=1)
    xs = x >> np.int64(shift)
    s1s = xs.sum(axis=1)
    s2s = (xs * xs).sum(axis=1)
    eps = f["eps_lo"] | (f["eps_hi"] << 32)
    eps = eps - (1 << 64) if eps >> 63 else eps  # a signed 64-bit word, as the kernel reads
    u = dim * s2s - s1s * s1s + eps
    stat_frac = 2 * (x_fmt.frac_bits - shift)
    table = ex.tables["rsqrt"]
    mant, half_exp = rsqrt(u, stat_frac, table)
    centred = dim * x - s1[:, None]
    shifts = x_fmt.frac_bits + table.fmt.frac_bits + half_exp - norm_fmt.frac_bits
    rounded = shift_round_rows(centred * mant[:, None], shifts, norm_fmt.rounding)
    ex._sat += count_overflow(rounded, norm_fmt.width, norm_fmt.signed)
    norm = apply_overflow(rounded, norm_fmt.width, norm_fmt.signed, norm_fmt.overflow)
    gamma = ex.vector(f["gamma"], dim)
    beta = ex.vector(f["beta"], dim)
    frac = norm_fmt.frac_bits + g_fmt.frac_bits
    y = ex.quant(norm * gamma + align(beta, b_fmt.frac_bits, frac), frac, out_fmt)
    ex.write(f["dst"], f["dst_stride"], y)
    return y


def estimate(program, layer, bus: int, counts: list[int] | None, stored: int | None,
             stream) -> dict:  # fmt: skip
    """LAYERNORM's schedule in cycles, DDR bytes and MACs (``OpSpec.estimate``)."""
    from ..estimate.cycles import (
        LAYERNORM_PIPELINE,
        beats,
        layernorm_cycles,
        layernorm_lane_cycles,
        layernorm_row_moves,
        row_parts,
        rows_breakdown,
    )

    f = layer.fields
    ti = program.tile_in
    norm_lanes = stream.norm_lanes if stream else 0
    x_beat = stream.x_beat_bytes if stream else None
    y_words = program.tile_out if stream and stream.y_row else 0
    # gamma, then beta (dim words each) come over the program master before the first row
    # can start (the core's PARAM phase): a beat a cycle, not hidden behind the rows
    params = 2 * beats(4 * f["dim"], bus)
    cycles = params + layernorm_cycles(f["rows"], f["dim"], ti, bus, norm_lanes, x_beat, y_words)
    lane_cycles = layernorm_lane_cycles(f["dim"], ti, bus, norm_lanes)
    moves = layernorm_row_moves(f["dim"], bus, x_beat, y_words)
    parts = {**row_parts(f["rows"], lane_cycles, moves), "weights": params}
    breakdown = rows_breakdown(f["rows"], lane_cycles, moves, LAYERNORM_PIPELINE)
    breakdown["weights"] += params
    weight_bytes = 8 * f["dim"]
    act_bytes = 2 * f["rows"] * bus * beats(4 * f["dim"], bus)  # rows, not strides: qk-norm
    return layer_model(cycles, breakdown, parts, weight_bytes=weight_bytes, act_bytes=act_bytes)


SPEC = OpSpec(
    name="LAYERNORM",
    code=3,
    fields=fields(
        "src:u src_stride:u rows:c dim:c dst:u dst_stride:u x_fmt gamma:p g_fmt beta:p b_fmt "
        "stat_shift:s eps_lo:u eps_hi:s norm_fmt out_fmt"
    ),
    rules=(
        in_range("rows", 1, P("max_tokens")),
        in_range("dim", 1, P("max_dim")),
        *formats("x_fmt", "g_fmt", "b_fmt", "norm_fmt", "out_fmt"),
        *datapath("act_bits", "x_fmt", "norm_fmt", "out_fmt"),
        *datapath("norm_param_bits", "g_fmt", "b_fmt"),
        Rule(
            "FORMAT", (F("stat_shift") >= 0) & (F("stat_shift") <= 31), why="stat_shift in [0, 31]"
        ),
        frac_le("b_fmt", "norm_fmt", "g_fmt"),
        table_input("rsqrt input", 2 * (frac(F("x_fmt")) - F("stat_shift"))),
        Rule(
            "FORMAT",
            (F("eps_hi") >= 0) & (F("eps_hi") < 1 << 30) & ((F("eps_hi") > 0) | (F("eps_lo") > 0)),
            why="eps in (0, 2**62): the variance term stays positive",
        ),
        *arena_rows("source", "src", "src_stride", F("rows"), F("dim")),
        *arena_rows("destination", "dst", "dst_stride", F("rows"), F("dim")),
        disjoint(
            "destination and source",
            rows_of("dst", "dst_stride", F("rows")),
            rows_of("src", "src_stride", F("rows")),
            or_same=F("dst").eq(F("src")) & F("dst_stride").eq(F("src_stride")),
        ),
        *program_block("gamma", "gamma", round_up(F("dim") * 4, P("bus_bytes"))),
        *program_block("beta", "beta", round_up(F("dim") * 4, P("bus_bytes"))),
    ),
    golden=golden,
    estimate=estimate,
    round_trips=3.5,
    round_trips_on_chip=2.0,
    units=("layernorm", "rsqrt_table"),
)
