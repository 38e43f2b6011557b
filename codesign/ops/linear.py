"""LINEAR: rows x in_dim activations times a packed [out_dim, in_dim] weight matrix on the
UCU, plus bias, then a post-op (none, GELU, or a residual add) and one requantisation.
Weights are dense tiles, or only the non-zero tiles with a CSR block index (``blocks``,
``nnz`` stored tiles; LPViT block-sparse)."""

from ..contract import NONE, Post
from .base import (
    OpSpec,
    arena_rows,
    disjoint,
    fields,
    formats,
    frac_le,
    in_range,
    present,
    program_block,
    rows_of,
    table_input,
    tiled_bytes,
    vector_bytes,
)
from .expr import F, P, Rule, ceil_div, frac, one_of, round_up

DENSE = F("blocks").eq(NONE)
SPARSE = F("blocks").ne(NONE)
TILE_BYTES = round_up(P("tile_in") * P("tile_out") * F("w_bytes"), P("bus_bytes"))
OUT_TILES = ceil_div(F("out_dim"), P("tile_out"))

SPEC = OpSpec(
    name="LINEAR",
    code=1,
    fields=fields(
        "src:u src_stride:u rows:c in_dim:c out_dim:c dst:u dst_stride:u x_fmt weight:p w_fmt "
        "w_bytes:c bias:p b_fmt post:c pre_fmt res:u res_stride:u res_fmt out_fmt blocks:p nnz:c"
    ),
    rules=(
        in_range("rows", 1, P("max_tokens")),
        in_range("in_dim", 1, P("max_lin_in")),
        in_range("out_dim", 1, P("max_lin_out")),
        Rule(
            "WEIGHT", one_of(F("w_bytes"), "w_bytes"), why="w_bytes a container this kernel reads"
        ),
        in_range("post", int(Post.NONE), int(Post.ADD), "WEIGHT"),
        *formats("x_fmt", "w_fmt", "out_fmt"),
        *formats("b_fmt", when=present("bias")),
        frac_le("b_fmt", "x_fmt", "w_fmt", when=present("bias")),
        *formats("pre_fmt", when=F("post").eq(int(Post.GELU))),
        *formats("res_fmt", when=F("post").eq(int(Post.ADD))),
        frac_le("res_fmt", "x_fmt", "w_fmt", when=F("post").eq(int(Post.ADD))),
        table_input("GELU input pre_fmt", frac(F("pre_fmt")), F("post").eq(int(Post.GELU))),
        *arena_rows("source", "src", "src_stride", F("rows"), F("in_dim")),
        *arena_rows("destination", "dst", "dst_stride", F("rows"), F("out_dim")),
        *arena_rows(
            "residual",
            "res",
            "res_stride",
            F("rows"),
            F("out_dim"),
            when=F("post").eq(int(Post.ADD)),
        ),
        disjoint(
            "destination and source",
            rows_of("dst", "dst_stride", F("rows")),
            rows_of("src", "src_stride", F("rows")),
        ),
        disjoint(
            "destination and residual",
            rows_of("dst", "dst_stride", F("rows")),
            rows_of("res", "res_stride", F("rows")),
            F("post").eq(int(Post.ADD)),
        ),
        *program_block(
            "weights", "weight", tiled_bytes(F("out_dim"), F("in_dim"), F("w_bytes")), DENSE
        ),
        Rule(
            "BLOCKS",
            (F("nnz") >= 0) & (F("nnz") <= OUT_TILES * ceil_div(F("in_dim"), P("tile_in"))),
            SPARSE,
            "nnz within the tile count",
        ),
        *program_block("stored tiles", "weight", F("nnz") * TILE_BYTES, SPARSE),
        *program_block("block index", "blocks", (OUT_TILES + 1 + F("nnz")) * 4, SPARSE),
        *program_block("bias", "bias", vector_bytes(F("out_dim")), present("bias")),
    ),
    extras={"weights": "UCU", "block_index": ("blocks", "nnz", "out_dim", "in_dim")},
    output=("dst", "dst_stride", "rows", 0, "out_dim"),
)
