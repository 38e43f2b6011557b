"""Per-layer block sparsity and board cycles read back from a compiled Program.

This looks at what the accelerator will actually run (the stored tiles of each
LINEAR descriptor), not at the torch masks, so it also shows tiles that quantised
to zero and layers that were left dense. Cycles are the build's estimate of each layer
on the board (``estimate.layer_cost``: the ArchConfig's weight masters, window and drain
under the board's DDR model), stored tiles against all of them.
"""

from __future__ import annotations

from ..arch import ddr_model
from ..estimate import block_count, estimate_cycles, layer_cost, tile_count
from ..program import NONE, Op, Program


def program_sparsity(program: Program, arch, board, ddr=None) -> dict:
    """{"layers": [...], "totals": {...}} with tiles, stored tiles and board cycles (dense
    and as stored) per LINEAR of `program` compiled for `arch` on `board`, under `ddr`
    (default: the board's DDR model)."""
    ddr = ddr_model(board, arch) if ddr is None else ddr
    rows_out, totals = [], {"tiles": 0, "stored_tiles": 0, "cycles_dense": 0, "cycles": 0}
    for layer in program.layers:
        if layer.op != Op.LINEAR:
            continue
        tiles, stored = tile_count(program, layer), block_count(program, layer)
        cycles = layer_cost(program, arch, layer, ddr)["cycles"]
        dense_cycles = cycles  # stored dense: its cost is the dense one
        if stored < tiles:
            dense_cycles = layer_cost(program, arch, layer, ddr, None, tiles)["cycles"]
        rows_out.append(
            {
                "layer": layer.name,
                "block_sparse": layer.fields["blocks"] != NONE,
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
    totals["ddr"] = ddr.to_dict()
    return {"layers": rows_out, "totals": totals}


def program_cycles(program: Program, arch, board, task: int = 0, ddr=None) -> dict:
    """The build's estimate of one inference of ``task`` on `board`: per layer, linear
    vs the other layers, and the start-up (header, descriptor checks: a block-sparse
    layer's index is checked too). MoE experts assume balanced routing since no golden
    run is at hand."""
    estimate = estimate_cycles(program, arch, board, task=task, ddr=ddr)
    runs = [layer for layer in estimate["layers"] if layer["runs"]]
    per_layer = {layer["name"]: layer["cycles"] for layer in runs}
    linear = sum(layer["cycles"] for layer in runs if layer["op"] == "LINEAR")
    start, total = estimate["start_cycles"], estimate["cycles"]
    return {
        "linear": linear, "other": total - start - linear, "start": start, "total": total,
        "per_layer": per_layer,
    }  # fmt: skip


__all__ = ["program_cycles", "program_sparsity"]
