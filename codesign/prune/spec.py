"""``--prune SPEC`` for the build flow: parse ``lpvit:0.5`` / ``magnitude:0.3`` and prune.

The block shape is the ArchConfig's UCU tile (To x Ti), so every pruned block is a
tile the compiled Program does not store and the UCU does not run.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ..arch import ArchConfig, get_board
from ..arch.ddr import DEFAULT_EFFICIENCY
from .board import board_costs
from .core import METHODS, prune
from .targets import PruneError

CALIB_SEED = 1234  # same seed the build uses for random calibration images


def parse_prune_spec(spec: str) -> tuple[str, float]:
    """``"lpvit:0.5"`` -> ("lpvit", 0.5): method and linear-MAC sparsity in [0, 1)."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise PruneError(
            f"prune spec {spec!r} is not METHOD:SPARSITY (e.g. lpvit:0.5, magnitude:0.3)"
        )
    method, value = (part.strip() for part in spec.split(":"))
    method = method.lower()
    if method not in METHODS:
        raise PruneError(f"prune spec {spec!r}: unknown method {method!r} (choose {METHODS})")
    try:
        sparsity = float(value)
    except ValueError:
        raise PruneError(f"prune spec {spec!r}: sparsity {value!r} is not a number") from None
    if not 0.0 <= sparsity < 1.0:
        raise PruneError(f"prune spec {spec!r}: sparsity {sparsity} is outside [0, 1)")
    return method, sparsity


def calibration_images(module: nn.Module, calib, seed: int = CALIB_SEED) -> np.ndarray:
    """An image array as given, or ``calib`` seeded standard-normal images of the model's shape."""
    if isinstance(calib, (int, np.integer)) and not isinstance(calib, bool):
        if calib < 1:
            raise PruneError(f"the calibration set is empty ({calib} images); give at least one")
        embed = module.patch_embed
        shape = (int(calib), embed.proj.in_channels, *embed.img_size)
        return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    images = np.asarray(calib, np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or len(images) == 0:
        raise PruneError(f"the calibration set is empty or not [N, C, H, W]: {images.shape}")
    return images


def apply_prune_spec(
    module: nn.Module,
    spec: str,
    calib_images,
    arch: ArchConfig | None,
    board: str = "zcu102",
    precision=None,
    ddr_efficiency: float = DEFAULT_EFFICIENCY,
    given: bool = False,
    given_fields: frozenset[str] | None = None,
) -> tuple[nn.Module, dict]:
    """Prune ``module`` per ``spec`` with blocks = the UCU tile, each layer costed on
    ``board`` as the build compiles it (``board_costs``: `arch`, `precision`,
    `ddr_efficiency`, `given`, `given_fields`).

    Returns (pruned copy of the module, summary) where the summary (JSON-ready) holds
    the method, block shape, per-layer sparsity and board cycles, and totals;
    it is what a build report stores under ``pruning``.
    """
    method, sparsity = parse_prune_spec(spec)
    images = calibration_images(module, calib_images) if method == "lpvit" else None
    costs = board_costs(
        module, get_board(board), arch, precision, ddr_efficiency, given, given_fields
    )
    pruned, result = prune(
        module, images, method=method, sparsity=sparsity, block=costs.tile, costs=costs
    )
    summary = dict(result.summary)
    summary["spec"] = spec
    summary["sparsity"] = sparsity
    summary["calibration_images"] = 0 if images is None else len(images)
    return pruned, summary


__all__ = ["apply_prune_spec", "calibration_images", "parse_prune_spec"]
