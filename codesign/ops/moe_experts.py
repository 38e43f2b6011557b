"""MOE_EXPERTS: every expert with a non-empty queue gathers its tokens, runs
fc1 -> GELU -> fc2 on the UCU (hidden rows through ``scratch``), and adds score * y into
an exact accumulator; the residual joins before one requantisation."""

from .base import (
    OpSpec,
    arena_rows,
    disjoint,
    fields,
    formats,
    frac_le,
    in_range,
    narrow,
    present,
    program_block,
    table_input,
    tiled_bytes,
    vector_bytes,
)
from .expr import F, P, Rule, frac, one_of
from .moe_gate import QUEUE_BYTES, queue_rules

SCRATCH = (F("scratch"), F("scratch") + F("tokens") * F("scratch_stride"))


def rows_block(base: str, stride: str):
    return F(base), F(base) + F("tokens") * F(stride)


SPEC = OpSpec(
    name="MOE_EXPERTS",
    code=7,
    fields=fields(
        "src:u src_stride:u tokens:c dim:c hidden:c experts:c queue:u res:u res_stride:u dst:u "
        "dst_stride:u x_fmt res_fmt out_fmt fc1:p fc1_stride:u fc1_fmt fc1_bias:p "
        "fc1_bias_stride:u fc1_bias_fmt pre_fmt hidden_fmt fc2:p fc2_stride:u fc2_fmt fc2_bias:p "
        "fc2_bias_stride:u fc2_bias_fmt y_fmt score_fmt w_bytes:c scratch:u scratch_stride:u"
    ),
    rules=(
        in_range("tokens", 1, P("max_tokens")),
        in_range("dim", 1, P("max_dim")),
        in_range("hidden", 1, P("max_hidden")),
        in_range("experts", 1, P("max_experts")),
        Rule(
            "WEIGHT", one_of(F("w_bytes"), "w_bytes"), why="w_bytes a container this kernel reads"
        ),
        *formats(
            "x_fmt",
            "out_fmt",
            "fc1_fmt",
            "fc1_bias_fmt",
            "pre_fmt",
            "hidden_fmt",
            "fc2_fmt",
            "fc2_bias_fmt",
            "y_fmt",
            "score_fmt",
        ),
        narrow("hidden_fmt", 32),  # fc1's output goes through the 32-bit scratch rows
        frac_le("fc1_bias_fmt", "x_fmt", "fc1_fmt"),
        frac_le("fc2_bias_fmt", "hidden_fmt", "fc2_fmt"),
        table_input("GELU input pre_fmt", frac(F("pre_fmt"))),
        *formats("res_fmt", when=present("res")),
        frac_le("res_fmt", "score_fmt", "y_fmt", when=present("res")),
        *arena_rows("source", "src", "src_stride", F("tokens"), F("dim")),
        *arena_rows("residual", "res", "res_stride", F("tokens"), F("dim"), when=present("res")),
        *arena_rows("destination", "dst", "dst_stride", F("tokens"), F("dim")),
        *arena_rows("scratch", "scratch", "scratch_stride", F("tokens"), F("hidden")),
        *queue_rules(),
        # scratch is written expert by expert while the queue, the source and the residual
        # are still read: none may share a byte with it
        disjoint("scratch and queue", SCRATCH, (F("queue"), F("queue") + QUEUE_BYTES)),
        disjoint("scratch and source", SCRATCH, rows_block("src", "src_stride")),
        disjoint("scratch and residual", SCRATCH, rows_block("res", "res_stride"), present("res")),
        disjoint("destination and scratch", rows_block("dst", "dst_stride"), SCRATCH),
        disjoint(
            "destination and queue",
            rows_block("dst", "dst_stride"),
            (F("queue"), F("queue") + QUEUE_BYTES),
        ),
        disjoint(
            "destination and source",
            rows_block("dst", "dst_stride"),
            rows_block("src", "src_stride"),
        ),
        disjoint(
            "destination and residual",
            rows_block("dst", "dst_stride"),
            rows_block("res", "res_stride"),
            present("res"),
        ),
        *program_block(
            "fc1 weights",
            "fc1",
            tiled_bytes(F("hidden"), F("dim"), F("w_bytes")),
            copies=(F("experts"), "fc1_stride"),
        ),
        *program_block(
            "fc1 biases",
            "fc1_bias",
            vector_bytes(F("hidden")),
            copies=(F("experts"), "fc1_bias_stride"),
        ),
        *program_block(
            "fc2 weights",
            "fc2",
            tiled_bytes(F("dim"), F("hidden"), F("w_bytes")),
            copies=(F("experts"), "fc2_stride"),
        ),
        *program_block(
            "fc2 biases",
            "fc2_bias",
            vector_bytes(F("dim")),
            copies=(F("experts"), "fc2_bias_stride"),
        ),
    ),
    rows_field="tokens",
    output=("dst", "dst_stride", "tokens", 0, "dim"),
)
