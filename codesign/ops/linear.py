"""LINEAR: rows x in_dim activations times a packed [out_dim, in_dim] weight matrix on the
UCU, plus bias, then a post-op (none, GELU, or a residual add) and one requantisation.
Weights are dense tiles, or only the non-zero tiles with a CSR block index (``blocks``,
``nnz`` stored tiles; LPViT block-sparse)."""

from __future__ import annotations

import numpy as np

from ..contract import NONE, Post, unpack_bias_words
from ..numerics.exact import align, matmul_exact
from ..numerics.tables import gelu
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
TILE_BYTES = round_up(P("tile_in") * P("tile_out") * F("w_bytes"), P("weight_beat_bytes"))
OUT_TILES = ceil_div(F("out_dim"), P("tile_out"))


def ucu_product(x, w, bias_words, b_frac: int, acc_frac: int) -> np.ndarray:
    """x . w^T, each output column c shifted by its weight shift s_c, plus the bias, at
    acc_frac (the UCU's bias words carry both: ``contract.unpack_bias_words``)."""
    acc = matmul_exact(x, w)
    if bias_words is None:
        return acc
    bias, shifts = unpack_bias_words(bias_words)
    return (acc << shifts) + align(bias, b_frac, acc_frac)


def golden(ex, layer, task: int) -> np.ndarray | None:
    f = layer.fields
    x_fmt, w_fmt, out_fmt = (layer.fmt(k) for k in ("x_fmt", "w_fmt", "out_fmt"))
    x = ex.read(f["src"], f["rows"], f["in_dim"], f["src_stride"])
    w = ex.weights(f["weight"], f["out_dim"], f["in_dim"], f["w_bytes"], f["blocks"])
    acc_frac = x_fmt.frac_bits + w_fmt.frac_bits
    words = ex.vector(f["bias"], f["out_dim"]) if f["bias"] != NONE else None
    b_frac = layer.fmt("b_fmt").frac_bits if words is not None else 0
    acc = ucu_product(x, w, words, b_frac, acc_frac)
    post = Post(f["post"])
    if post == Post.ADD:
        res = ex.read(f["res"], f["rows"], f["out_dim"], f["res_stride"])
        acc += align(res, layer.fmt("res_fmt").frac_bits, acc_frac)
    if post == Post.GELU:
        pre_fmt = layer.fmt("pre_fmt")
        pre = ex.quant(acc, acc_frac, pre_fmt)
        y = gelu(pre, pre_fmt.frac_bits, ex.tables["gelu_delta"], out_fmt)
    else:
        y = ex.quant(acc, acc_frac, out_fmt)
    ex.write(f["dst"], f["dst_stride"], y)
    return y


def estimate(program, layer, bus: int, counts: list[int] | None, stored: int | None,
             stream) -> dict:  # fmt: skip
    """LINEAR's schedule in cycles, DDR bytes and MACs (``OpSpec.estimate``)."""
    from ..estimate.cycles import (
        beats,
        block_count,
        linear_breakdown,
        linear_cycles,
        tile_load_beats,
        ucu_parts,
    )
    from ..program import padded

    f, ti, to = layer.fields, program.tile_in, program.tile_out
    rows, in_dim, out_dim = f["rows"], f["in_dim"], f["out_dim"]
    out_tiles, in_tiles = -(-out_dim // to), -(-in_dim // ti)
    if stored is None:  # as stored
        sparse, stored = f["blocks"] != NONE, block_count(program, layer)
    else:  # the compiler stores a layer block-sparse (with its CSR index) if a tile is zero
        sparse = stored < out_tiles * in_tiles
    wbus = program.weight_beat_bytes  # tiles pad to a weight beat
    cycles = linear_cycles(
        rows, in_dim, out_dim, ti, to, f["w_bytes"], bus, stored, f["post"] == Post.ADD, stream
    )
    breakdown = linear_breakdown(
        rows, in_dim, out_dim, ti, to, f["w_bytes"], bus, stored, stream=stream
    )
    macs = rows * in_dim * out_dim * stored // (out_tiles * in_tiles)
    load = tile_load_beats(ti, to, f["w_bytes"], stream.rate)
    parts = ucu_parts([(rows, stored)], load, rows * beats(4 * in_dim, bus))
    weight_bytes = stored * padded(ti * to * f["w_bytes"], wbus)
    if sparse:
        weight_bytes += 4 * (out_tiles + 1 + stored)
    weight_bytes += 4 * out_dim if f["bias"] != NONE else 0
    act_bytes = rows * (f["src_stride"] + f["dst_stride"])
    act_bytes += rows * f["res_stride"] if f["post"] == Post.ADD else 0
    extra = {
        "tiles": out_tiles * in_tiles,
        "stored_tiles": stored,
        "block_sparse": sparse,
    }
    return layer_model(
        cycles, breakdown, parts, macs=macs, weight_bytes=weight_bytes, act_bytes=act_bytes, **extra
    )


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
        *datapath("act_bits", "x_fmt", "out_fmt"),
        *datapath("mul_bits", "x_fmt"),
        *datapath("act_bits", "pre_fmt", when=F("post").eq(int(Post.GELU))),
        *datapath("weight_bits", "w_fmt"),
        frac_le("res_fmt", "x_fmt", "w_fmt", when=F("post").eq(int(Post.ADD))),
        table_input(
            "GELU input pre_fmt", frac(F("pre_fmt")), "gelu_delta", F("post").eq(int(Post.GELU))
        ),
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
    golden=golden,
    estimate=estimate,
    round_trips=3.0,
    round_trips_on_chip=2.1,
    units=("ucu", "gelu_table"),
)
