"""ATTENTION: multi-head self-attention on a [tokens, 3 dim] QKV matrix, Edge-MoE's
reordered loop with ``parallel`` query slots and single-pass softmax."""

from .base import (
    OpSpec,
    arena_rows,
    disjoint,
    fields,
    formats,
    in_range,
    narrow,
    rows_of,
    table_input,
)
from .expr import F, P, Rule, divides, frac, one_of

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
        table_input("softmax input score_fmt", frac(F("score_fmt"))),
        Rule(
            "SOFTMAX", frac(F("sum_fmt")).eq(P("exp_frac")), why="sum_fmt has the exp table's frac"
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
)

__all__ = ["SPEC", "one_of"]
