"""MOE_GATE: gate logits on the UCU, softmax over experts, top-k per token, and the
expert queues (counts[E], tokens[E][N], scores[E][N], int32) written to the arena."""

from __future__ import annotations

import numpy as np

from ..numerics.exact import matmul_exact, shift_round_rows
from ..numerics.fixed import apply_overflow
from ..numerics.tables import exp_neg, recip
from .base import (
    OpSpec,
    aligned,
    arena_rows,
    datapath,
    disjoint,
    fields,
    formats,
    in_range,
    inside_the_arena,
    layer_model,
    narrow,
    program_block,
    rows_of,
    table_input,
    tiled_bytes,
)
from .expr import F, P, Rule, frac, one_of

QUEUE_BYTES = 4 * F("experts") + 8 * F("experts") * F("tokens")


def queue_rules() -> list[Rule]:
    """The queue block both MoE ops share."""
    return [
        Rule("REGION", aligned(F("queue")), why="queue bus-aligned"),
        *inside_the_arena("queue", F("queue"), F("queue") + QUEUE_BYTES),
    ]


def queue_layout(f: dict) -> tuple[int, int, int]:
    """Arena offsets of counts[E], tokens[E][N], scores[E][N] (int32 each)."""
    experts, tokens = f["experts"], f["tokens"]
    counts = f["queue"]
    ids = counts + 4 * experts
    return counts, ids, ids + 4 * experts * tokens


def golden(ex, layer, task: int) -> np.ndarray | None:
    """Gate softmax over experts, top-k by logit (ties to the lower index), queues."""
    f = layer.fields
    x_fmt, w_fmt = layer.fmt("x_fmt"), layer.fmt("w_fmt")
    logit_fmt, score_fmt = layer.fmt("logit_fmt"), layer.fmt("score_fmt")
    tokens, dim, experts, top_k = f["tokens"], f["dim"], f["experts"], f["top_k"]
    x = ex.read(f["src"], tokens, dim, f["src_stride"])
    w = ex.weights(f["weight"], experts, dim, f["w_bytes"])
    logits = ex.quant(matmul_exact(x, w), x_fmt.frac_bits + w_fmt.frac_bits, logit_fmt)
    exp_table, recip_table = ex.tables["exp"], ex.tables["recip"]
    e = exp_neg(logits - logits.max(axis=1, keepdims=True), logit_fmt.frac_bits, exp_table)
    mant, exponent = recip(e.sum(axis=1), exp_table.fmt.frac_bits, recip_table)
    shifts = exp_table.fmt.frac_bits + recip_table.fmt.frac_bits + exponent
    probs = shift_round_rows(e * mant[:, None], shifts - score_fmt.frac_bits, score_fmt.rounding)
    probs = apply_overflow(probs, score_fmt.width, score_fmt.signed, score_fmt.overflow)
    chosen = np.argsort(-logits, axis=1, kind="stable")[:, :top_k]
    counts_at, ids_at, scores_at = queue_layout(f)
    counts = np.zeros(experts, np.int64)
    ids = np.zeros((experts, tokens), np.int64)
    scores = np.zeros((experts, tokens), np.int64)
    for token in range(tokens):
        for expert in chosen[token]:
            slot = counts[expert]
            ids[expert, slot] = token
            scores[expert, slot] = probs[token, expert]
            counts[expert] = slot + 1
    ex.write(counts_at, 4 * experts, counts[None])
    ex.write(ids_at, 4 * tokens, ids)
    ex.write(scores_at, 4 * tokens, scores)
    return None


def estimate(program, layer, bus: int, counts: list[int] | None, stored: int | None,
             stream) -> dict:  # fmt: skip
    """MOE_GATE's schedule in cycles, DDR bytes and MACs (``OpSpec.estimate``)."""
    from ..estimate.cycles import (
        beats,
        gate_breakdown,
        gate_cycles,
        tile_load_beats,
        ucu_parts,
    )
    from ..program import padded

    f, ti, to = layer.fields, program.tile_in, program.tile_out
    tokens, dim, experts, top_k = f["tokens"], f["dim"], f["experts"], f["top_k"]
    wbus = program.weight_beat_bytes  # tiles pad to a weight beat
    cycles = gate_cycles(tokens, dim, experts, top_k, ti, to, f["w_bytes"], bus, stream)
    breakdown = gate_breakdown(tokens, dim, experts, top_k, ti, to, f["w_bytes"], bus, stream)
    macs = tokens * dim * experts
    tiles = -(-experts // to) * -(-dim // ti)
    load = tile_load_beats(ti, to, f["w_bytes"], stream.rate)
    parts = ucu_parts([(tokens, tiles)], load, tokens * beats(4 * dim, bus))
    parts["compute"] += tokens * max(experts, top_k)
    weight_bytes = tiles * padded(ti * to * f["w_bytes"], wbus)
    act_bytes = tokens * f["src_stride"] + 4 * experts + 8 * tokens * top_k
    return layer_model(
        cycles, breakdown, parts, macs=macs, weight_bytes=weight_bytes, act_bytes=act_bytes
    )


SPEC = OpSpec(
    name="MOE_GATE",
    code=6,
    fields=fields(
        "src:u src_stride:u tokens:c dim:c experts:c top_k:c weight:p w_fmt w_bytes:c x_fmt "
        "logit_fmt score_fmt queue:u"
    ),
    rules=(
        in_range("tokens", 1, P("max_tokens")),
        in_range("dim", 1, P("max_lin_in")),
        in_range("experts", 1, P("max_experts")),
        in_range("top_k", 1, F("experts")),
        Rule(
            "WEIGHT", one_of(F("w_bytes"), "w_bytes"), why="w_bytes a container this kernel reads"
        ),
        *formats("w_fmt", "x_fmt", "logit_fmt", "score_fmt"),
        narrow("logit_fmt", 32),
        narrow("score_fmt", 32),
        *datapath("act_bits", "x_fmt", "logit_fmt"),
        *datapath("mul_bits", "x_fmt"),
        *datapath("weight_bits", "w_fmt"),
        *datapath("prob_bits", "score_fmt"),
        table_input("gate softmax input logit_fmt", frac(F("logit_fmt")), "exp"),
        *arena_rows("source", "src", "src_stride", F("tokens"), F("dim")),
        disjoint(
            "queue and source",
            (F("queue"), F("queue") + QUEUE_BYTES),
            rows_of("src", "src_stride", F("tokens")),
        ),
        *program_block("gate weights", "weight", tiled_bytes(F("experts"), F("dim"), F("w_bytes"))),
        *queue_rules(),
    ),
    rows_field="tokens",
    output=None,  # writes the queue, not an activation
    golden=golden,
    estimate=estimate,
    round_trips=3.0,
    round_trips_on_chip=2.0,
    units=("ucu", "moe_gate", "moe_buffers", "exp_table", "recip_table"),
)
