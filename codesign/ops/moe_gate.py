"""MOE_GATE: gate logits on the UCU, softmax over experts, top-k per token, and the
expert queues (counts[E], tokens[E][N], scores[E][N], int32) written to the arena."""

from .base import (
    OpSpec,
    aligned,
    arena_rows,
    disjoint,
    fields,
    formats,
    in_range,
    narrow,
    program_block,
    rows_of,
    table_input,
    tiled_bytes,
)
from .expr import F, H, P, Rule, frac, one_of

QUEUE_BYTES = 4 * F("experts") + 8 * F("experts") * F("tokens")


def queue_rules() -> list[Rule]:
    """The queue block both MoE ops share."""
    return [
        Rule("REGION", aligned(F("queue")), why="queue bus-aligned"),
        Rule("REGION", F("queue") + QUEUE_BYTES <= H("arena_bytes"), why="queue inside the arena"),
    ]


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
        table_input("gate softmax input logit_fmt", frac(F("logit_fmt"))),
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
)
