"""LPViT block-structured pruning of the linear layers, so the accelerator skips blocks.

``prune(model, calib_images, sparsity=0.5)`` scores blocks (Taylor |w·g| on a
label-free loss), builds per-layer distortion curves (first order + empirical
Fisher), allocates sparsity by the equal-slope rule with a hardware (UCU cycles)
term and zeroes the pruned blocks; ``finetune`` distils from the dense model with
the masks fixed. Blocks default to the UCU tile, so the compiler stores the pruned
layers block-sparse and every pruned block costs neither bandwidth nor cycles.
See docs/pruning.md.
"""

from .core import METHODS, PruneResult, layer_cycles, prune, resolve_target
from .finetune import finetune
from .io import load_pruned, read_pruning_summary, save_pruned
from .report import program_cycles, program_sparsity
from .scores import LayerScores, calibrate, label_free_loss, magnitude_scores
from .spec import apply_prune_spec, calibration_images, parse_prune_spec
from .targets import (
    PrunableLayer,
    PruneError,
    apply_masks,
    block_nonzero,
    expand_mask,
    find_prunable,
    parse_block,
)

__all__ = [
    "METHODS",
    "LayerScores",
    "PrunableLayer",
    "PruneError",
    "PruneResult",
    "apply_masks",
    "apply_prune_spec",
    "block_nonzero",
    "calibrate",
    "calibration_images",
    "expand_mask",
    "find_prunable",
    "finetune",
    "label_free_loss",
    "layer_cycles",
    "load_pruned",
    "magnitude_scores",
    "parse_block",
    "parse_prune_spec",
    "program_cycles",
    "program_sparsity",
    "prune",
    "read_pruning_summary",
    "resolve_target",
    "save_pruned",
]
