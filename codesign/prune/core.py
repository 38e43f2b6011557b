"""``prune``: LPViT block pruning (or the magnitude baseline) of a ViT / M3ViT module.

Steps: find the prunable linear layers and cut them into blocks (default: the UCU
tile, so a pruned block is a tile the accelerator skips); score blocks on the
calibration images; allocate per-layer sparsity to hit the linear-MAC target; zero
the pruned blocks. The result carries the masks (fine-tuning keeps them fixed) and a
JSON-ready summary with the per-layer sparsity table and board cycles (``board.py``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from ..arch import ArchConfig, get_board
from ..arch.ddr import DEFAULT_EFFICIENCY
from ..program import tile_mask
from .allocate import LayerBudget, equal_slope, min_kept_blocks, uniform
from .board import BoardCosts, board_costs
from .scores import LayerScores, calibrate, magnitude_scores, measure_distortion, shaped_curve
from .targets import PrunableLayer, PruneError, apply_masks, find_prunable, parse_block

METHODS = ("lpvit", "magnitude")


@dataclass
class PruneResult:
    method: str
    block: tuple[int, int]
    costs: BoardCosts  # the board cycles the allocation weighed (and the summary reports)
    layers: list[PrunableLayer]
    masks: dict[str, np.ndarray]  # layer name -> bool [go, gi], True = kept
    summary: dict = field(default_factory=dict)
    scores: dict[str, LayerScores] = field(default_factory=dict)

    def apply(self, model_layers: list[PrunableLayer] | None = None) -> None:
        """Zero the pruned blocks again (after an optimiser step, say)."""
        apply_masks(model_layers or self.layers, self.masks)

    @property
    def arch(self) -> ArchConfig:
        """The ArchConfig the layers were costed on."""
        return self.costs.arch


def _check_sparsity(sparsity) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)):
        raise PruneError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not (0.0 <= float(sparsity) < 1.0) or math.isnan(float(sparsity)):
        raise PruneError(
            f"sparsity {sparsity} is outside [0, 1): it is the fraction of the prunable "
            "linear-layer MACs to remove (0.5 = half)"
        )
    return float(sparsity)


def resolve_target(dense_macs: int, sparsity=None, target_macs=None) -> int:
    """Kept linear MACs from either a sparsity or an explicit target (fraction or count)."""
    if (sparsity is None) == (target_macs is None):
        raise PruneError("give exactly one of sparsity or target_macs")
    if sparsity is not None:
        return round((1.0 - _check_sparsity(sparsity)) * dense_macs)
    value = float(target_macs)
    if not value > 0 or math.isnan(value):
        raise PruneError(f"FLOPs target must be positive, got {target_macs}")
    if value <= 1.0:  # a fraction of the dense linear MACs
        return round(value * dense_macs)
    if value > dense_macs:
        raise PruneError(
            f"FLOPs target {value:,.0f} MACs exceeds the dense linear MACs {dense_macs:,}"
        )
    return int(value)


def layer_cycles(layer: PrunableLayer, costs: BoardCosts, kept_mask: np.ndarray) -> int:
    """Board cycles of the layer with the blocks of ``kept_mask`` stored: the UCU tiles
    they cover (``costs.tile``), costed as the build of the pruned model costs them."""
    element = np.kron(np.asarray(kept_mask, bool), np.ones(layer.block, bool))
    tile_out, tile_in = costs.tile
    return costs.cycles(layer.name, int(tile_mask(element, tile_in, tile_out).sum()))


def _cycles_curve(layer: PrunableLayer, costs: BoardCosts) -> np.ndarray:
    """Cycles when k = 0..blocks blocks are pruned (blocks = whole tiles when aligned)."""
    tile_out, tile_in = costs.tile
    aligned = layer.block[0] % tile_out == 0 and layer.block[1] % tile_in == 0
    tiles_per_block = (layer.block[0] // tile_out) * (layer.block[1] // tile_in)
    dense_tiles = costs.tiles(layer.name)
    out = []
    for pruned in range(layer.blocks + 1):
        if aligned:
            stored = (layer.blocks - pruned) * tiles_per_block
        else:  # tiles straddle blocks: approximate by the kept fraction
            stored = math.ceil(dense_tiles * (layer.blocks - pruned) / layer.blocks)
        out.append(costs.cycles(layer.name, stored))
    return np.array(out, np.float64)


def prune(
    model: nn.Module,
    calib_images: np.ndarray | None = None,
    *,
    method: str = "lpvit",
    sparsity: float | None = None,
    target_macs: float | None = None,
    block: str | tuple[int, int] | None = None,
    arch: ArchConfig | None = None,
    board: str = "zcu102",
    precision=None,
    ddr_efficiency: float = DEFAULT_EFFICIENCY,
    costs: BoardCosts | None = None,
    min_keep: float = 0.1,
    hw_weight: float = 0.5,
    fisher_samples: int = 512,
    measure_levels: int = 8,
    measure_samples: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    inplace: bool = False,
    progress: bool = False,
) -> tuple[nn.Module, PruneResult]:
    """Block-prune the linear layers of ``model``; returns (pruned model, result).

    ``sparsity``: fraction of the prunable linear MACs to remove, in [0, 1).
    ``target_macs``: kept linear MACs instead, as a fraction (<= 1) or a count.
    ``block``: (BH, BW) or "BHxBW"; default the UCU tile (To x Ti) of the costs' ArchConfig.
    ``costs``: the board cycles of each layer (``board_costs``); default the dense model
    compiled for ``board`` at ``precision`` (None: the board's) on ``arch`` (None: the
    board's default; either sized and shrunk to fit as a build's default is), under the
    board's DDR model at ``ddr_efficiency`` of its peak.
    ``method``: "lpvit" (Taylor scores, distortion curves, equal-slope allocation with
    the hardware term weighted by ``hw_weight``) or "magnitude" (mean |w| per block,
    the same fraction pruned in every layer; needs no calibration images).
    ``measure_levels``: sparsity levels per layer at which the output distortion is also
    measured (forward passes on up to ``measure_samples`` images) to pin the scale of
    the first+second-order curve; 0 keeps the pure Taylor/Fisher curves.
    """
    if method not in METHODS:
        raise PruneError(f"unknown pruning method {method!r}; choose from {', '.join(METHODS)}")
    if method == "lpvit" and (calib_images is None or len(calib_images) == 0):
        raise PruneError(
            "the calibration set is empty: LPViT scores blocks with gradients on "
            "calibration images; give at least one (e.g. --calib 64)"
        )
    min_kept_blocks(1, min_keep)  # validates min_keep
    if sparsity is not None:
        _check_sparsity(sparsity)
    if costs is None:  # after the checks: this compiles the model
        costs = board_costs(model, get_board(board), arch, precision, ddr_efficiency)
    block = parse_block(block) if block is not None else costs.tile
    pruned_model = model if inplace else copy.deepcopy(model)
    pruned_model.eval()
    layers, excluded = find_prunable(pruned_model, block)
    dense_macs = sum(layer.macs for layer in layers)
    target = resolve_target(dense_macs, sparsity, target_macs)

    scores: dict[str, LayerScores] = {}
    if method == "lpvit":
        scores = calibrate(
            pruned_model,
            layers,
            calib_images,
            batch_size=batch_size,
            fisher_samples=fisher_samples,
            seed=seed,
            progress=progress,
        )
        orders = {name: s.prune_order() for name, s in scores.items()}
        curves = {
            name: np.maximum.accumulate(s.distortion_curve(orders[name]))
            for name, s in scores.items()
        }
        if measure_levels > 0:
            levels = {}
            for layer in layers:
                top = layer.blocks - min_kept_blocks(layer.blocks, min_keep)
                picks = {round(top * j / measure_levels) for j in range(1, measure_levels + 1)}
                levels[layer.name] = sorted(k for k in picks if k > 0)
            measured = measure_distortion(
                pruned_model,
                layers,
                orders,
                levels,
                np.asarray(calib_images)[:measure_samples],
                progress=progress,
            )
            for layer in layers:
                if levels[layer.name]:
                    curves[layer.name] = shaped_curve(
                        curves[layer.name], levels[layer.name], measured[layer.name]
                    )
    else:
        orders = {
            layer.name: np.argsort(magnitude_scores(layer).reshape(-1), kind="stable")
            for layer in layers
        }
        curves = {layer.name: np.zeros(layer.blocks + 1) for layer in layers}

    budgets = [
        LayerBudget(
            name=layer.name,
            blocks=layer.blocks,
            block_macs=layer.block_macs,
            max_pruned=layer.blocks - min_kept_blocks(layer.blocks, min_keep),
            curve=curves[layer.name],
            cycles=_cycles_curve(layer, costs),
        )
        for layer in layers
    ]
    if method == "lpvit":
        picks, info = equal_slope(budgets, target, hw_weight)
    else:
        picks, info = uniform(budgets, target), {}

    masks = {}
    for layer in layers:
        keep = np.ones(layer.blocks, bool)
        keep[orders[layer.name][: picks[layer.name]]] = False
        masks[layer.name] = keep.reshape(layer.grid)
    apply_masks(layers, masks)
    result = PruneResult(method, block, costs, layers, masks, scores=scores)
    result.summary = summarize(result, target, excluded, info, min_keep, hw_weight)
    if method == "lpvit":
        result.summary["curves"] = {
            "fisher_samples": min(fisher_samples, len(calib_images)),
            "measure_levels": measure_levels,
            "measure_samples": min(measure_samples, len(calib_images)) if measure_levels else 0,
        }
    return pruned_model, result


def summarize(
    result: PruneResult,
    target: int,
    excluded: list,
    info: dict,
    min_keep: float,
    hw_weight: float,
) -> dict:
    """JSON-ready: settings, per-layer sparsity and board cycles, totals, the cost model."""
    rows = []
    totals = {"macs_dense": 0, "macs_kept": 0, "cycles_dense": 0, "cycles_pruned": 0}
    for layer in result.layers:
        mask = result.masks[layer.name]
        kept = int(mask.sum())
        dense_cycles = layer_cycles(layer, result.costs, np.ones(layer.grid, bool))
        pruned_cycles = layer_cycles(layer, result.costs, mask)
        entry = {
            "layer": layer.name,
            "shape": [layer.out_dim, layer.in_dim],
            "grid": list(layer.grid),
            "blocks": layer.blocks,
            "kept_blocks": kept,
            "sparsity": round(1 - kept / layer.blocks, 6),
            "macs_dense": layer.macs,
            "macs_kept": kept * layer.block_macs,
            "cycles_dense": dense_cycles,
            "cycles_pruned": pruned_cycles,
        }
        rows.append(entry)
        totals["macs_dense"] += layer.macs
        totals["macs_kept"] += entry["macs_kept"]
        totals["cycles_dense"] += dense_cycles
        totals["cycles_pruned"] += pruned_cycles
    totals["linear_mac_sparsity"] = round(1 - totals["macs_kept"] / totals["macs_dense"], 6)
    totals["cycle_ratio"] = round(totals["cycles_pruned"] / totals["cycles_dense"], 6)
    return {
        "method": result.method,
        "block": list(result.block),
        "tile": list(result.costs.tile),
        "cycles": result.costs.describe(),
        "target_macs": target,
        "min_keep": min_keep,
        "hw_weight": hw_weight if result.method == "lpvit" else None,
        "allocation": info,
        "layers": rows,
        "excluded": [{"layer": name, "reason": reason} for name, reason in excluded],
        "totals": totals,
    }


__all__ = ["METHODS", "PruneResult", "layer_cycles", "prune", "resolve_target", "summarize"]
