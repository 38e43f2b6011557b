"""MOE_EXPERTS: every expert with a non-empty queue gathers its tokens, runs
fc1 -> GELU -> fc2 on the UCU (hidden rows through ``scratch``), and adds score * y into
an exact accumulator; the residual joins before one requantisation."""

from __future__ import annotations

import numpy as np

from ..contract import NONE
from ..numerics.exact import align
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
    narrow,
    present,
    program_block,
    rows_of,
    table_input,
    tiled_bytes,
    vector_bytes,
)
from .expr import F, P, Rule, frac, one_of
from .linear import ucu_product
from .moe_gate import QUEUE_BYTES, queue_layout, queue_rules

SCRATCH = rows_of("scratch", "scratch_stride", F("tokens"))


def rows_block(base: str, stride: str):
    """[start, end) of the ``tokens`` rows at ``base``."""
    return rows_of(base, stride, F("tokens"))


def golden(ex, layer, task: int) -> np.ndarray | None:
    """Each non-empty expert gathers its tokens, runs fc1-GELU-fc2 once, scatters
    score * y into an exact accumulator; the residual joins before one rounding."""
    f = layer.fields
    fmt = layer.fmt
    tokens, dim, hidden, experts = f["tokens"], f["dim"], f["hidden"], f["experts"]
    x_fmt, pre_fmt, hidden_fmt, y_fmt = (
        fmt(k) for k in ("x_fmt", "pre_fmt", "hidden_fmt", "y_fmt")
    )
    w1_fmt, w2_fmt, score_fmt = fmt("fc1_fmt"), fmt("fc2_fmt"), fmt("score_fmt")
    x = ex.read(f["src"], tokens, dim, f["src_stride"])
    counts_at, ids_at, scores_at = queue_layout(f)
    counts = ex.read(counts_at, 1, experts, 4 * experts)[0]
    ids = ex.read(ids_at, experts, tokens, 4 * tokens)
    scores = ex.read(scores_at, experts, tokens, 4 * tokens)
    acc_frac = score_fmt.frac_bits + y_fmt.frac_bits
    acc = np.zeros((tokens, dim), np.int64)
    frac1 = x_fmt.frac_bits + w1_fmt.frac_bits
    frac2 = hidden_fmt.frac_bits + w2_fmt.frac_bits
    for expert in range(experts):
        count = min(int(counts[expert]), tokens)  # the kernel clamps a corrupt queue
        if count <= 0:
            continue
        rows = ids[expert, :count].copy()
        corrupt = (rows < 0) | (rows >= tokens)  # contributes nothing (score 0, token 0)
        rows[corrupt] = 0
        scores[expert, :count][corrupt] = 0
        w1 = ex.weights(f["fc1"] + expert * f["fc1_stride"], hidden, dim, f["w_bytes"])
        b1 = ex.vector(f["fc1_bias"] + expert * f["fc1_bias_stride"], hidden)
        pre = ucu_product(x[rows], w1, b1, fmt("fc1_bias_fmt").frac_bits, frac1)
        pre = ex.quant(pre, frac1, pre_fmt)
        act = gelu(pre, pre_fmt.frac_bits, ex.tables["gelu_delta"], hidden_fmt)
        ex.write(f["scratch"], f["scratch_stride"], act)
        w2 = ex.weights(f["fc2"] + expert * f["fc2_stride"], dim, hidden, f["w_bytes"])
        b2 = ex.vector(f["fc2_bias"] + expert * f["fc2_bias_stride"], dim)
        y = ucu_product(act, w2, b2, fmt("fc2_bias_fmt").frac_bits, frac2)
        y = ex.quant(y, frac2, y_fmt)
        np.add.at(acc, rows, scores[expert, :count, None] * y)  # a token may repeat
    if f["res"] != NONE:
        res = ex.read(f["res"], tokens, dim, f["res_stride"])
        acc += align(res, fmt("res_fmt").frac_bits, acc_frac)
    out = ex.quant(acc, acc_frac, fmt("out_fmt"))
    ex.write(f["dst"], f["dst_stride"], out)
    return out


def estimate(program, layer, bus: int, counts: list[int] | None, stored: int | None,
             stream) -> dict:  # fmt: skip
    """MOE_EXPERTS's schedule in cycles, DDR bytes and MACs (``OpSpec.estimate``)."""
    from ..estimate.cycles import (
        beats,
        experts_breakdown,
        experts_cycles,
        tile_load_beats,
        ucu_parts,
    )
    from ..program import padded

    f, ti, to = layer.fields, program.tile_in, program.tile_out
    tokens, dim, hidden = f["tokens"], f["dim"], f["hidden"]
    assert counts is not None
    wbus = program.weight_beat_bytes  # tiles pad to a weight beat
    cycles = experts_cycles(counts, tokens, dim, hidden, ti, to, f["w_bytes"], bus, stream)
    breakdown = experts_breakdown(counts, tokens, dim, hidden, ti, to, f["w_bytes"], bus, stream)
    routed = sum(counts)
    active = sum(1 for c in counts if c)
    macs = 2 * routed * dim * hidden
    load = tile_load_beats(ti, to, f["w_bytes"], stream.rate)
    per_matrix = -(-hidden // to) * -(-dim // ti)
    parts = ucu_parts(
        [(c, 2 * per_matrix) for c in counts if c], load, routed * beats(4 * dim, bus)
    )
    tile_bytes = padded(ti * to * f["w_bytes"], wbus)
    per_expert = 2 * (-(-hidden // to) * -(-dim // ti)) * tile_bytes + 4 * (hidden + dim)
    weight_bytes = active * per_expert
    act_bytes = routed * f["src_stride"] + 4 * len(counts) + 8 * routed
    act_bytes += tokens * f["dst_stride"]
    act_bytes += tokens * f["res_stride"] if f["res"] != NONE else 0
    extra = {"expert_counts": list(counts), "active_experts": active}
    return layer_model(
        cycles, breakdown, parts, macs=macs, weight_bytes=weight_bytes, act_bytes=act_bytes, **extra
    )


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
        *datapath("act_bits", "x_fmt", "pre_fmt", "hidden_fmt", "y_fmt", "out_fmt"),
        *datapath("mul_bits", "x_fmt", "hidden_fmt"),
        *datapath("weight_bits", "fc1_fmt", "fc2_fmt"),
        *datapath("prob_bits", "score_fmt"),
        frac_le("fc1_bias_fmt", "x_fmt", "fc1_fmt"),
        frac_le("fc2_bias_fmt", "hidden_fmt", "fc2_fmt"),
        table_input("GELU input pre_fmt", frac(F("pre_fmt")), "gelu_delta"),
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
    golden=golden,
    estimate=estimate,
    round_trips=5.0,
    round_trips_per_expert=3.0,
    round_trips_on_chip=1.0,
    round_trips_on_chip_per_expert=2.45,
    units=("ucu", "moe_scatter", "moe_buffers", "gelu_table"),
)
