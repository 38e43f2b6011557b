"""The pruned checkpoint: one torch file any ``--weights`` option reads, plus a JSON table.

``PATH`` holds ``{"state_dict": ..., "masks": {layer: bool [go, gi]}, "pruning": summary}``;
the model registry unwraps ``state_dict`` so ``codesign build --weights PATH`` loads it
like any state dict. ``PATH`` with the suffix ``.json`` holds the summary for people
and scripts (per-layer sparsity table, totals, settings).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .core import PruneResult


def summary_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_pruned(path: str | Path, model: nn.Module, result: PruneResult) -> tuple[Path, Path]:
    """Write the pruned state dict with masks and summary; returns (checkpoint, json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    masks = {name: torch.as_tensor(np.asarray(mask, bool)) for name, mask in result.masks.items()}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "masks": masks, "pruning": result.summary}, path)
    side = summary_path(path)
    side.write_text(json.dumps(result.summary, indent=1) + "\n")
    return path, side


def load_pruned(path: str | Path) -> tuple[dict, dict[str, np.ndarray], dict]:
    """(state_dict, masks, summary) from a file written by ``save_pruned``."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "state_dict" not in blob or "masks" not in blob:
        raise ValueError(f"{path}: not a pruned checkpoint (no state_dict/masks)")
    masks = {name: mask.numpy().astype(bool) for name, mask in blob["masks"].items()}
    return blob["state_dict"], masks, blob.get("pruning", {})


def read_pruning_summary(path: str | Path) -> dict | None:
    """The pruning summary stored in a weights file, or None for a plain state dict."""
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:  # not ours to judge: the weights loader reports unreadable files
        return None
    if isinstance(blob, dict) and isinstance(blob.get("pruning"), dict):
        return blob["pruning"]
    return None


__all__ = ["load_pruned", "read_pruning_summary", "save_pruned", "summary_path"]
