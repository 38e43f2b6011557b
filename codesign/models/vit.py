"""Plain ViT / DeiT reference in torch, laid out like timm's ``VisionTransformer``.

Module and parameter names match timm so a timm state dict (vit_tiny_patch16_224,
deit_small_patch16_224, ...) loads with ``strict=True`` and a converter can read the
same attributes (``attn.num_heads``, ``attn.scale``, ``patch_embed.grid_size`` ...)
from either model. Dropouts are kept as ``nn.Dropout(0.0)`` and the optional timm
parts (layer scale, drop path, qk-norm, pre-norm, fc-norm) as ``nn.Identity`` so
the module trees line up one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

LAYER_NORM_EPS = 1e-6  # timm's ViT LayerNorm epsilon; the hardware LN uses the same


def to_pair(value: int | Sequence[int]) -> tuple[int, int]:
    """Accept ``224`` or ``(128, 256)`` wherever an (H, W) pair is meant."""
    if isinstance(value, int):
        return (value, value)
    height, width = value
    return (int(height), int(width))


class PatchEmbed(nn.Module):
    """Non-overlapping patches through a conv with stride = kernel (a linear over patches)."""

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.img_size = to_pair(img_size)
        self.patch_size = to_pair(patch_size)
        if any(size % patch for size, patch in zip(self.img_size, self.patch_size, strict=True)):
            raise ValueError(
                f"image size {self.img_size} is not a multiple of patch size {self.patch_size}"
            )
        self.grid_size = (
            self.img_size[0] // self.patch_size[0],
            self.img_size[1] // self.patch_size[1],
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.flatten = True
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size
        )
        self.norm = nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, patches, dim], patches in row-major grid order."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (self.in_chans, *self.img_size):
            raise ValueError(
                f"expected images [B, {self.in_chans}, {self.img_size[0]}, {self.img_size[1]}], "
                f"got {list(images.shape)}"
            )
        patches = self.proj(images).flatten(2).transpose(1, 2)
        return self.norm(patches)


class Attention(nn.Module):
    """Multi-head self-attention computed explicitly (q·kᵀ·scale, softmax, ·v).

    Explicit rather than fused SDPA so every intermediate is inspectable and the
    order of operations is the one the accelerator reproduces.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = False
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, hd]
        query, key = self.q_norm(query), self.k_norm(key)
        scores = (query * self.scale) @ key.transpose(-2, -1)
        probs = self.attn_drop(scores.softmax(dim=-1))
        context = (probs @ value).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(self.norm(context)))


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2, the dense MLP and the MoE expert alike."""

    def __init__(
        self, in_features: int, hidden_features: int, out_features: int | None = None
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.out_features = out_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(self.drop1(self.act(self.fc1(x))))
        return self.drop2(self.fc2(hidden))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN1 x), then x + mlp(LN2 x)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, mlp: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads=num_heads)
        self.ls1 = nn.Identity()
        self.drop_path1 = nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = mlp if mlp is not None else Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = nn.Identity()
        self.drop_path2 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class TokenEmbedding(nn.Module):
    """Shared front of ViT and M3ViT: patches, CLS token, position embedding, final LN.

    Kept as a base class (not a submodule) so the parameters sit at the top level
    with timm's names: ``cls_token``, ``pos_embed``, ``patch_embed.*``, ``norm.*``.
    """

    def __init__(
        self,
        img_size: int | Sequence[int],
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_features = embed_dim
        self.in_chans = in_chans
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.num_prefix_tokens = 1
        self.num_reg_tokens = 0
        self.has_class_token = True
        self.no_embed_class = False
        self.dynamic_img_size = False
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.num_tokens = self.patch_embed.num_patches + self.num_prefix_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.reg_token = None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        self.pos_drop = nn.Dropout(0.0)
        self.patch_drop = nn.Identity()
        self.norm_pre = nn.Identity()

    def embed_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, tokens, dim]: CLS first, then patches, plus position embedding."""
        patches = self.patch_embed(images)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        tokens = torch.cat([cls, patches], dim=1) + self.pos_embed
        return self.norm_pre(self.patch_drop(self.pos_drop(tokens)))


class VisionTransformer(TokenEmbedding):
    """ViT / DeiT classifier whose state dict is interchangeable with timm's."""

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio)
        self.num_classes = num_classes
        self.global_pool = "token"
        self.attn_pool = None
        self.head_hidden_size = embed_dim
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.fc_norm = nn.Identity()
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> all tokens after the final LayerNorm, [B, tokens, dim]."""
        return self.norm(self.blocks(self.embed_tokens(images)))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Classify from the CLS token (global_pool='token')."""
        return self.head(self.head_drop(self.fc_norm(tokens[:, 0])))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> logits [B, num_classes]."""
        return self.forward_head(self.forward_features(images))
