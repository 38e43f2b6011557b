"""How many blocks each layer loses: LPViT's equal-slope rule, and the uniform baseline.

Equal slope: with distortion curves D_l(k) (k = blocks pruned in layer l) and a
resource R_l(k) that falls as blocks go, minimising Σ D_l subject to a budget puts
every layer where the slopes dD_l/dR_l are equal (−λ). For one λ each layer takes
k_l(λ) = argmin_k D_l(k) + λ·R_l(k); the pruned MACs grow monotonically with λ, so
a bisection on λ finds the smallest λ whose MACs meet the target, and a greedy pass
then returns the blocks with the best distortion saved per resource spent until the
target is met to within one block.

Hardware-aware resource: R_l = (1 − β)·MACs_l/MACs + β·cycles_l/cycles, where
cycles_l comes from the estimator's UCU schedule: every surviving block (tile) costs
max(rows, tile load beats) cycles, i.e. it grows with surviving blocks × the work
each block gives the UCU. β = 0 is a pure FLOPs allocation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .targets import PruneError


@dataclass
class LayerBudget:
    name: str
    blocks: int  # n
    block_macs: int  # MACs per block per image
    max_pruned: int  # n − minimum kept blocks
    curve: np.ndarray  # [n + 1] distortion when k blocks are pruned (monotone)
    cycles: np.ndarray  # [n + 1] estimator cycles when k blocks are pruned

    def macs(self, pruned: int) -> int:
        return (self.blocks - pruned) * self.block_macs


def min_kept_blocks(blocks: int, min_keep: float) -> int:
    """Blocks a layer always keeps: ceil(min_keep · blocks), at least one if min_keep > 0."""
    if not 0.0 <= min_keep < 1.0:
        raise PruneError(f"min_keep must be in [0, 1), got {min_keep}")
    return max(1 if min_keep > 0 else 0, math.ceil(min_keep * blocks - 1e-9))


def check_target(budgets: list[LayerBudget], target_macs: int) -> None:
    floor = sum(b.macs(b.max_pruned) for b in budgets)
    total = sum(b.macs(0) for b in budgets)
    if target_macs < floor:
        raise PruneError(
            f"target of {target_macs:,} linear MACs is below the {floor:,} that the minimum "
            f"kept fraction per layer leaves ({floor / total:.1%} of {total:,}); lower "
            "min_keep or raise the target"
        )


def _resources(budgets: list[LayerBudget], hw_weight: float) -> list[np.ndarray]:
    if not 0.0 <= hw_weight <= 1.0:
        raise PruneError(f"hardware weight must be in [0, 1], got {hw_weight}")
    total_macs = sum(b.macs(0) for b in budgets) or 1
    total_cycles = float(sum(b.cycles[0] for b in budgets)) or 1.0
    out = []
    for b in budgets:
        macs = np.array([b.macs(k) for k in range(b.blocks + 1)], np.float64)
        out.append((1 - hw_weight) * macs / total_macs + hw_weight * b.cycles / total_cycles)
    return out


def equal_slope(
    budgets: list[LayerBudget], target_macs: int, hw_weight: float = 0.5
) -> tuple[dict[str, int], dict]:
    """Blocks to prune per layer so the kept MACs are <= target (within one block)."""
    check_target(budgets, target_macs)
    resources = _resources(budgets, hw_weight)
    limits = [b.max_pruned for b in budgets]

    def choose(lam: float) -> list[int]:
        picks = []
        for budget, resource, limit in zip(budgets, resources, limits, strict=True):
            cost = budget.curve[: limit + 1] + lam * resource[: limit + 1]
            picks.append(int(np.argmin(cost)))
        return picks

    def kept(picks: list[int]) -> int:
        return sum(b.macs(k) for b, k in zip(budgets, picks, strict=True))

    low, high = 0.0, 1.0
    picks = choose(low)
    iterations = 0
    if kept(picks) > target_macs:
        while kept(choose(high)) > target_macs:
            high *= 2.0
            iterations += 1
            if iterations > 400:  # pragma: no cover - curves are finite
                raise PruneError("equal-slope search diverged (non-finite distortion curves?)")
        for _ in range(100):
            middle = 0.5 * (low + high)
            if kept(choose(middle)) > target_macs:
                low = middle
            else:
                high = middle
            iterations += 1
            if high - low <= 1e-12 * high:
                break
        picks = choose(high)
    else:
        high = 0.0
    # greedy fill: give back blocks with the best distortion saved per resource
    spare = target_macs - kept(picks)
    restored = 0
    while True:
        best, best_ratio = None, -np.inf
        for index, (budget, resource) in enumerate(zip(budgets, resources, strict=True)):
            k = picks[index]
            if k == 0 or budget.block_macs > spare:
                continue
            saved = budget.curve[k] - budget.curve[k - 1]
            spent = resource[k - 1] - resource[k]
            ratio = saved / spent if spent > 0 else np.inf
            if ratio > best_ratio:
                best, best_ratio = index, ratio
        if best is None:
            break
        picks[best] -= 1
        spare -= budgets[best].block_macs
        restored += 1
    info = {"lambda": high, "iterations": iterations, "restored_blocks": restored}
    return {b.name: k for b, k in zip(budgets, picks, strict=True)}, info


def uniform(budgets: list[LayerBudget], target_macs: int) -> dict[str, int]:
    """Same pruned fraction in every layer (the baseline), nudged to meet the target."""
    check_target(budgets, target_macs)
    total = sum(b.macs(0) for b in budgets)
    fraction = 1.0 - target_macs / total if total else 0.0
    picks = [min(b.max_pruned, math.floor(fraction * b.blocks + 1e-9)) for b in budgets]
    kept = sum(b.macs(k) for b, k in zip(budgets, picks, strict=True))
    while kept > target_macs:
        candidates = [i for i, b in enumerate(budgets) if picks[i] < b.max_pruned]
        index = min(candidates, key=lambda i: (picks[i] / budgets[i].blocks, i))
        picks[index] += 1
        kept -= budgets[index].block_macs
    return {b.name: k for b, k in zip(budgets, picks, strict=True)}


__all__ = ["LayerBudget", "check_target", "equal_slope", "min_kept_blocks", "uniform"]
