"""Which linear layers are pruned, how they split into blocks, and their masks.

A prunable layer is a weight matrix ``[out, in]`` the UCU runs: the patch embedding
(its conv weight flattened in ``(C, kh, kw)`` order, exactly the matrix the compiler
packs), and qkv, proj, fc1, fc2 of every dense block. The head stays dense (it is
tiny and decides the output), and so do MoE gates and experts: the Program stores
expert weights dense, so pruning them would save nothing on the accelerator.

A mask is a bool array ``[out // BH, in // BW]``, True where a block is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class PruneError(ValueError):
    """Bad pruning input: block shape, sparsity, calibration set, model structure."""


_BLOCK_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_block(spec: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``"16x16"`` or ``(16, 16)`` -> (BH, BW): rows (output features) x columns (inputs)."""
    if isinstance(spec, str):
        match = _BLOCK_RE.match(spec)
        if not match:
            raise PruneError(f"block shape {spec!r} is not of the form BHxBW (e.g. 32x32)")
        block = (int(match.group(1)), int(match.group(2)))
    else:
        try:
            block = (int(spec[0]), int(spec[1]))
        except (TypeError, ValueError, IndexError):
            raise PruneError(f"block shape {spec!r} is not a pair (BH, BW)") from None
        if len(spec) != 2:
            raise PruneError(f"block shape {spec!r} is not a pair (BH, BW)")
    if min(block) < 1:
        raise PruneError(f"block shape {block[0]}x{block[1]} must be positive")
    return block


@dataclass
class PrunableLayer:
    """One weight matrix cut into ``block`` = (BH, BW) blocks."""

    name: str  # module path = the Program's layer name
    module: nn.Module  # nn.Linear or the patch-embedding nn.Conv2d
    rows: int  # tokens per image streaming through the UCU for this layer
    out_dim: int
    in_dim: int
    block: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int]:
        return (self.out_dim // self.block[0], self.in_dim // self.block[1])

    @property
    def blocks(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def block_macs(self) -> int:
        """MACs one block costs per image (what pruning it saves)."""
        return self.rows * self.block[0] * self.block[1]

    @property
    def macs(self) -> int:
        return self.rows * self.out_dim * self.in_dim

    def matrix(self) -> torch.Tensor:
        """The weight as ``[out, in]``, a view sharing storage with the module."""
        return self.module.weight.view(self.out_dim, self.in_dim)

    def block_view(self, values: torch.Tensor) -> torch.Tensor:
        """``[out, in]`` -> ``[grid_out, BH, grid_in, BW]``."""
        go, gi = self.grid
        bh, bw = self.block
        return values.reshape(go, bh, gi, bw)


def _structure_error(path: str, what: str) -> PruneError:
    return PruneError(f"cannot prune this model: {path}: {what}")


def find_prunable(model: nn.Module, block: tuple[int, int]) -> tuple[list[PrunableLayer], list]:
    """The prunable layers of a ViT/DeiT/M3ViT (timm layout) and the skipped ones.

    Returns (layers, excluded) where excluded lists (path, reason). Every prunable
    layer's shape must be a multiple of the block shape, else PruneError names it.
    """
    embed = getattr(model, "patch_embed", None)
    proj = getattr(embed, "proj", None)
    blocks = getattr(model, "blocks", None)
    if not isinstance(proj, nn.Conv2d) or blocks is None:
        raise _structure_error("patch_embed.proj / blocks", "expected a timm-style ViT or M3ViT")
    if tuple(proj.kernel_size) != tuple(proj.stride) or proj.groups != 1:
        raise _structure_error("patch_embed.proj", "needs a conv with stride = kernel")
    patches = int(embed.num_patches)
    tokens = patches + 1
    found: list[tuple[str, nn.Module, int]] = [("patch_embed.proj", proj, patches)]
    excluded: list[tuple[str, str]] = []
    for index, blk in enumerate(blocks):
        path = f"blocks.{index}"
        attn = getattr(blk, "attn", None)
        for slot in ("qkv", "proj"):
            layer = getattr(attn, slot, None)
            if not isinstance(layer, nn.Linear):
                raise _structure_error(f"{path}.attn.{slot}", "expected nn.Linear")
            found.append((f"{path}.attn.{slot}", layer, tokens))
        mlp = getattr(blk, "mlp", None)
        if hasattr(mlp, "experts"):
            excluded.append((f"{path}.mlp", "MoE experts and gates are stored dense"))
            continue
        for slot in ("fc1", "fc2"):
            layer = getattr(mlp, slot, None)
            if not isinstance(layer, nn.Linear):
                raise _structure_error(f"{path}.mlp.{slot}", "expected nn.Linear")
            found.append((f"{path}.mlp.{slot}", layer, tokens))
    for head in ("head", "heads"):
        if getattr(model, head, None) is not None:
            excluded.append((head, "output head stays dense"))
    layers = []
    bh, bw = block
    for name, module, rows in found:
        out_dim = module.weight.shape[0]
        in_dim = module.weight[0].numel()
        if out_dim % bh or in_dim % bw:
            raise PruneError(
                f"block shape {bh}x{bw} does not divide layer {name} (weight [{out_dim}, "
                f"{in_dim}]: {out_dim} % {bh} = {out_dim % bh}, {in_dim} % {bw} = {in_dim % bw}); "
                "choose a block (and UCU tile) that divides every prunable layer"
            )
        layers.append(PrunableLayer(name, module, rows, out_dim, in_dim, block))
    return layers, excluded


def expand_mask(mask: np.ndarray | torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Block mask [go, gi] -> element mask [go*BH, gi*BW] (float 0/1)."""
    mask = torch.as_tensor(np.asarray(mask, bool))
    return mask.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1).float()


@torch.no_grad()
def apply_masks(layers: list[PrunableLayer], masks: dict[str, np.ndarray]) -> None:
    """Zero every pruned block exactly (in place)."""
    for layer in layers:
        if layer.name in masks:
            weight = layer.matrix()
            weight.mul_(expand_mask(masks[layer.name], layer.block).to(weight.dtype))


def block_nonzero(layer: PrunableLayer) -> np.ndarray:
    """[go, gi] True where a block of the current weights has any non-zero entry."""
    values = layer.block_view(layer.matrix().detach())
    return (values != 0).any(dim=3).any(dim=1).numpy()


__all__ = [
    "PrunableLayer",
    "PruneError",
    "apply_masks",
    "block_nonzero",
    "expand_mask",
    "find_prunable",
    "parse_block",
]
