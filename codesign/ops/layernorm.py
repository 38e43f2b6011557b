"""LAYERNORM: per row mean and variance in one pass, rsqrt from its table, then the
affine gamma/beta, requantised to out_fmt."""

from .base import (
    OpSpec,
    arena_rows,
    disjoint,
    fields,
    formats,
    frac_le,
    in_range,
    program_block,
    rows_of,
    table_input,
)
from .expr import F, P, Rule, frac, round_up

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
        ),
        *program_block("gamma", "gamma", round_up(F("dim") * 4, P("bus_bytes"))),
        *program_block("beta", "beta", round_up(F("dim") * 4, P("bus_bytes"))),
    ),
)
