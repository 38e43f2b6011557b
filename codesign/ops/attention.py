"""ATTENTION: multi-head self-attention on a [tokens, 3 dim] QKV matrix, Edge-MoE's
reordered loop with ``parallel`` query slots and single-pass softmax."""

from __future__ import annotations

import numpy as np

from ..numerics.exact import matmul_exact, shift_round_rows
from ..numerics.fixed import OVERFLOW_CODE, Fixed, apply_overflow, shift_round
from ..numerics.tables import exp_neg, recip
from .base import (
    OpSpec,
    arena_rows,
    datapath,
    disjoint,
    fields,
    formats,
    in_range,
    layer_model,
    narrow,
    rows_of,
    table_input,
)
from .expr import F, P, Rule, bits, divides, frac, one_of, overflow


def _softmax_stats(ex, scores: np.ndarray, score_frac: int, parallel: int, sum_fmt: Fixed):
    """Running max m and sum s per (head, query) over keys in the rotated order.

    Query i sits in slot i mod P and sees keys (i mod P + t) mod N for t = 0..N-1.
    New key x: if x > m, s = round(s * e^(m-x)) + 1 and m = x; else s += e^(x-m).
    """
    _heads, tokens, _ = scores.shape
    table = ex.tables["exp"]
    one = int(table.values[0])
    queries = np.arange(tokens)
    start = queries % parallel
    m = scores[:, queries, start]
    s = np.full(m.shape, one, np.int64)
    for step in range(1, tokens):
        x = scores[:, queries, (start + step) % tokens]
        e = exp_neg(-np.abs(x - m), score_frac, table)
        greater = x > m
        rescaled = shift_round(s * e, table.fmt.frac_bits, sum_fmt.rounding) + one
        s = np.where(greater, rescaled, s + e)
        s = apply_overflow(s, sum_fmt.width, sum_fmt.signed, sum_fmt.overflow)
        m = np.maximum(m, x)
    return m, s


def saturating(fmt):
    """The format saturates (SAT or SAT_SYM): a sum of positive terms then stays positive."""
    mode = overflow(fmt)
    return mode.eq(OVERFLOW_CODE["SAT"]) | mode.eq(OVERFLOW_CODE["SAT_SYM"])


def golden(ex, layer, task: int) -> np.ndarray | None:
    f = layer.fields
    qkv_fmt, score_fmt, sum_fmt, prob_fmt, out_fmt = (
        layer.fmt(k) for k in ("qkv_fmt", "score_fmt", "sum_fmt", "prob_fmt", "out_fmt")
    )
    tokens, dim, heads = f["tokens"], f["dim"], f["heads"]
    head_dim = dim // heads
    exp_table, recip_table = ex.tables["exp"], ex.tables["recip"]
    if sum_fmt.frac_bits != exp_table.fmt.frac_bits:
        raise ValueError(f"{layer.name}: sum format must have the exp table's fraction bits")
    qkv = ex.read(f["src"], tokens, 3 * dim, f["src_stride"])
    split = qkv.reshape(tokens, 3, heads, head_dim).transpose(1, 2, 0, 3)  # [3, H, N, hd]
    scores = np.stack([matmul_exact(split[0, h], split[1, h]) for h in range(heads)])
    scores = ex.quant(scores, 2 * qkv_fmt.frac_bits, score_fmt)
    m, s = _softmax_stats(ex, scores, score_fmt.frac_bits, f["parallel"], sum_fmt)
    mant, exponent = recip(s, exp_table.fmt.frac_bits, recip_table)
    out = np.zeros((tokens, dim), np.int64)
    for h in range(heads):
        e = exp_neg(scores[h] - m[h][:, None], score_fmt.frac_bits, exp_table)
        shifts = exp_table.fmt.frac_bits + recip_table.fmt.frac_bits + exponent[h]
        shifts = shifts - prob_fmt.frac_bits
        probs = shift_round_rows(e * mant[h][:, None], shifts, prob_fmt.rounding)
        probs = apply_overflow(probs, prob_fmt.width, prob_fmt.signed, prob_fmt.overflow)
        acc = matmul_exact(probs, split[2, h].T)
        out[:, h * head_dim : (h + 1) * head_dim] = ex.quant(
            acc, prob_fmt.frac_bits + qkv_fmt.frac_bits, out_fmt
        )
    ex.write(f["dst"], f["dst_stride"], out)
    return out


def estimate(program, layer, bus: int, counts: list[int] | None, stored: int | None,
             stream) -> dict:  # fmt: skip
    """ATTENTION's schedule in cycles, DDR bytes and MACs (``OpSpec.estimate``)."""
    from ..estimate.cycles import (
        ATTENTION_PIPELINE,
        attention_cycles,
        attention_key_cycles,
        attention_pass_beats,
        beats,
        breakdown_parts,
    )

    f = layer.fields
    tokens, dim, lanes = f["tokens"], f["dim"], program.attn_lanes
    rows = stream.x_beat_bytes or bus  # qkv rows over the window's x port, or bus beats
    cycles = attention_cycles(tokens, dim, f["heads"], f["parallel"], rows, lanes)
    macs = 2 * tokens * tokens * dim
    pass1, pass2 = attention_key_cycles(dim // f["heads"], lanes)
    passes = f["heads"] * attention_pass_beats(tokens, f["parallel"]) * (pass1 + pass2)
    load = tokens * beats(12 * dim, rows)  # the qkv rows, read once
    parts = {"activations": load, "compute": passes}
    breakdown = breakdown_parts(
        compute=passes,
        activations=load,
        control=f["heads"] * ATTENTION_PIPELINE,
    )
    act_bytes = tokens * (f["src_stride"] + f["dst_stride"])
    extra = {"parallel": f["parallel"], "head_dim": dim // f["heads"]}
    return layer_model(cycles, breakdown, parts, macs=macs, act_bytes=act_bytes, **extra)


SPEC = OpSpec(
    name="ATTENTION",
    code=4,
    fields=fields(
        "src:u src_stride:u tokens:c dim:c heads:c dst:u dst_stride:u qkv_fmt score_fmt sum_fmt "
        "prob_fmt out_fmt parallel:c"
    ),
    rules=(
        in_range("tokens", 1, P("max_tokens")),
        in_range("dim", 1, P("max_dim")),
        in_range("heads", 1, P("max_heads")),
        Rule("SIZE", F("dim") <= F("heads") * P("max_head_dim"), why="a head fits the core"),
        Rule("PARALLEL", divides(F("heads"), F("dim"), "max_heads"), why="heads divide dim"),
        Rule(
            "PARALLEL",
            (F("parallel") >= 1)
            & (F("parallel") <= P("attn_parallel"))
            & (F("parallel") <= F("tokens")),
            why="parallel in [1, min(P, tokens)]",
        ),
        *formats("qkv_fmt", "score_fmt", "sum_fmt", "prob_fmt", "out_fmt"),
        narrow("score_fmt", 32),
        *datapath("act_bits", "qkv_fmt", "score_fmt", "out_fmt"),
        *datapath("prob_bits", "prob_fmt"),
        *datapath("sum_bits", "sum_fmt"),
        table_input("softmax input score_fmt", frac(F("score_fmt")), "exp"),
        Rule(
            "SOFTMAX", frac(F("sum_fmt")).eq(P("exp_frac")), why="sum_fmt has the exp table's frac"
        ),
        Rule(
            "SOFTMAX",
            saturating(F("sum_fmt")) & (bits(F("sum_fmt")) >= 2),
            why="sum_fmt saturates and holds a positive sum (the reciprocal's input)",
        ),
        *arena_rows("source", "src", "src_stride", F("tokens"), 3 * F("dim")),
        *arena_rows("destination", "dst", "dst_stride", F("tokens"), F("dim")),
        disjoint(
            "destination and source",
            rows_of("dst", "dst_stride", F("tokens")),
            rows_of("src", "src_stride", F("tokens")),
        ),
    ),
    rows_field="tokens",
    output=("dst", "dst_stride", "tokens", 0, "dim"),
    golden=golden,
    estimate=estimate,
    round_trips=3.0,
    round_trips_on_chip=1.0,
    units=("attention", "exp_table", "recip_table"),
)

__all__ = ["SPEC", "one_of"]
