"""Per-layer block sparsity and UCU cycles read back from a compiled Program.

This looks at what the accelerator will actually run (the stored tiles of each
LINEAR descriptor), not at the torch masks, so it also shows tiles that quantised
to zero and layers that were left dense.
"""

from __future__ import annotations

from ..estimate import (
    balanced_counts,
    linear_cycles,
)
from ..program import NONE, Op, Program


def program_sparsity(program: Program) -> dict:
    """{"layers": [...], "totals": {...}} with tiles, stored tiles and cycles per LINEAR."""
    bus_bytes = program.bus_bits // 8
    rows_out, totals = [], {"tiles": 0, "stored_tiles": 0, "cycles_dense": 0, "cycles": 0}
    for layer in program.layers:
        if layer.op != Op.LINEAR:
            continue
        f = layer.fields
        out_tiles = -(-f["out_dim"] // program.tile_out)
        in_tiles = -(-f["in_dim"] // program.tile_in)
        tiles = out_tiles * in_tiles
        stored = _stored_tiles(program, f)
        stored = tiles if stored is None else stored
        args = (f["rows"], f["in_dim"], f["out_dim"], program.tile_in, program.tile_out)
        dense_cycles = linear_cycles(*args, f["w_bytes"], bus_bytes)
        cycles = linear_cycles(*args, f["w_bytes"], bus_bytes, stored_tiles=stored)
        rows_out.append(
            {
                "layer": layer.name,
                "block_sparse": f["blocks"] != NONE,
                "tiles": tiles,
                "stored_tiles": stored,
                "sparsity": round(1 - stored / tiles, 6),
                "cycles_dense": dense_cycles,
                "cycles": cycles,
            }
        )
        totals["tiles"] += tiles
        totals["stored_tiles"] += stored
        totals["cycles_dense"] += dense_cycles
        totals["cycles"] += cycles
    totals["tile_sparsity"] = round(1 - totals["stored_tiles"] / max(1, totals["tiles"]), 6)
    totals["cycle_ratio"] = round(totals["cycles"] / max(1, totals["cycles_dense"]), 6)
    return {"layers": rows_out, "totals": totals}


def _stored_tiles(program: Program, fields: dict) -> int | None:
    if fields["blocks"] == NONE:
        return None
    out_tiles = -(-fields["out_dim"] // program.tile_out)
    return int(program.read_words(fields["blocks"] + 4 * out_tiles, 1)[0])


def program_cycles(program: Program, task: int = 0) -> dict:
    """Estimator cycles of one inference of ``task``: per layer, linear vs the rest.

    Layers run one after another (the estimator's per-op schedules, summed); MoE
    experts assume balanced routing since no golden run is at hand.
    """
    from ..estimate import _layer_estimate

    bus = program.bus_bits // 8
    top_k = next((g.fields["top_k"] for g in program.layers if g.op == Op.MOE_GATE), 2)
    per_layer, linear, other = {}, 0, 0
    for layer in program.layers:
        if layer.task not in (-1, task):
            continue
        f = layer.fields
        counts = (
            balanced_counts(f["tokens"], f["experts"], top_k)
            if layer.op == Op.MOE_EXPERTS
            else None
        )
        cycles = _layer_estimate(program, layer, bus, counts)["compute_cycles"]
        if layer.op == Op.LINEAR:
            linear += cycles
        else:
            other += cycles
        per_layer[layer.name] = cycles
    return {"linear": linear, "other": other, "total": linear + other, "per_layer": per_layer}


__all__ = ["program_cycles", "program_sparsity"]
