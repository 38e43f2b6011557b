"""EMBED: the class token and the patch embeddings plus positions:
out[0] = pos[0] (class token folded in), out[1 + p] = x[p] + pos[1 + p]."""

from .base import OpSpec, arena_rows, disjoint, fields, formats, in_range, program_block, rows_of
from .expr import F, P, round_up

SPEC = OpSpec(
    name="EMBED",
    code=2,
    fields=fields(
        "src:u src_stride:u patches:c dim:c dst:u dst_stride:u x_fmt pos:p pos_fmt out_fmt"
    ),
    rules=(
        in_range("patches", 0, P("max_tokens") - 1),
        in_range("dim", 1, P("max_dim")),
        *formats("x_fmt", "pos_fmt", "out_fmt"),
        *arena_rows("source", "src", "src_stride", F("patches"), F("dim")),
        *arena_rows("destination", "dst", "dst_stride", F("patches") + 1, F("dim")),
        disjoint(
            "destination and source",
            rows_of("dst", "dst_stride", F("patches") + 1),
            rows_of("src", "src_stride", F("patches")),
        ),
        *program_block(
            "positions", "pos", round_up((F("patches") + 1) * F("dim") * 4, P("bus_bytes"))
        ),
    ),
    rows_field="patches",
    output=("dst", "dst_stride", "patches", 1, "dim"),
)
