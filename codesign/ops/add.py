"""ADD: element-wise sum of two activation matrices, aligned to the finer format."""

from .base import OpSpec, arena_rows, disjoint, fields, formats, in_range, rows_of
from .expr import F, P

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
)
