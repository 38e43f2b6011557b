"""M³ViT: a multi-task ViT whose odd blocks hold a task-gated mixture of experts.

This is the model Edge-MoE accelerates. Embedding, attention and dense blocks are
the ViT ones (same names), so the frontend lowers both families with one code path;
what is new is ``MoEMlp`` and the per-task dense heads on the patch tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from codesign.models.vit import LAYER_NORM_EPS, Block, Mlp, TokenEmbedding

DEFAULT_TASKS: tuple[tuple[str, int], ...] = (("semseg", 19), ("depth", 1))


def select_top_k(probs: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k along the last dim with a fixed tie-break: on equal probability the
    lower expert index wins.

    A stable sort on −prob keeps equal entries in index order, so the result never
    depends on torch's (unspecified) ``topk`` tie order and the hardware can match
    it with a strict ``>`` comparison while scanning experts 0, 1, 2, ...
    Returns (indices, probs), both [..., top_k], best first.
    """
    order = torch.sort(-probs, dim=-1, stable=True).indices[..., :top_k]
    return order, probs.gather(-1, order)


class MoEMlp(nn.Module):
    """Task-gated mixture of expert MLPs.

    Per token: p = softmax(x · W_gate[task]) over all experts, keep the top-k p
    *without* renormalising them, output Σ_k p_k · expert_k(x). The gate sees the
    same x as the experts (the block's LN2 output). After each call the routing
    is kept for inspection in ``last_topk_indices``/``last_topk_probs`` [B, N, k]
    and ``last_gate_probs`` [B, N, experts].
    """

    def __init__(
        self, dim: int, expert_hidden: int, num_experts: int, top_k: int, num_tasks: int
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k {top_k} must be in 1..num_experts ({num_experts})")
        self.dim = dim
        self.expert_hidden = expert_hidden
        self.num_experts = num_experts
        self.top_k = top_k
        self.num_tasks = num_tasks
        self.experts = nn.ModuleList(Mlp(dim, expert_hidden) for _ in range(num_experts))
        self.gates = nn.ModuleList(
            nn.Linear(dim, num_experts, bias=False) for _ in range(num_tasks)
        )
        self.last_task: int | None = None
        self.last_gate_probs: torch.Tensor | None = None
        self.last_topk_indices: torch.Tensor | None = None
        self.last_topk_probs: torch.Tensor | None = None

    def route(self, x: torch.Tensor, task: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gate probabilities [..., E] and the chosen (indices, probs) [..., k]."""
        gate_probs = self.gates[task](x).softmax(dim=-1)
        indices, top_probs = select_top_k(gate_probs, self.top_k)
        return gate_probs, indices, top_probs

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        gate_probs, indices, top_probs = self.route(x, task)
        self.last_task = task
        self.last_gate_probs = gate_probs.detach()
        self.last_topk_indices = indices.detach()
        self.last_topk_probs = top_probs.detach()

        flat_x = x.reshape(-1, x.shape[-1])
        flat_indices = indices.reshape(-1, self.top_k)
        flat_probs = top_probs.reshape(-1, self.top_k)
        out = torch.zeros_like(flat_x)
        # Expert-major, like the hardware's expert queues: each expert runs once on the
        # tokens that chose it, and its score-weighted output is scattered back.
        for expert_id, expert in enumerate(self.experts):
            token_ids, slots = (flat_indices == expert_id).nonzero(as_tuple=True)
            if token_ids.numel() == 0:
                continue
            scores = flat_probs[token_ids, slots].unsqueeze(-1)
            out.index_add_(0, token_ids, scores * expert(flat_x[token_ids]))
        return out.reshape(x.shape)


class M3ViTBlock(Block):
    """ViT block whose MLP may be an ``MoEMlp`` that needs the task id."""

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:  # type: ignore[override]
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        normed = self.norm2(x)
        mlp_out = self.mlp(normed, task) if isinstance(self.mlp, MoEMlp) else self.mlp(normed)
        return x + self.drop_path2(self.ls2(mlp_out))


def tokens_to_map(out: torch.Tensor, grid_size: Sequence[int]) -> torch.Tensor:
    """[B, patches, channels] (row-major patches) -> [B, channels, gh, gw] for upsampling."""
    grid_h, grid_w = grid_size
    batch, patches, channels = out.shape
    if patches != grid_h * grid_w:
        raise ValueError(f"{patches} patch tokens do not fill a {grid_h}x{grid_w} grid")
    return out.transpose(1, 2).reshape(batch, channels, grid_h, grid_w)


class M3ViT(TokenEmbedding):
    """Multi-task MoE ViT: shared trunk, dense MLP in even blocks, MoE in odd blocks,
    one light linear head per task on the patch tokens."""

    def __init__(
        self,
        img_size: int | Sequence[int] = (128, 256),
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        num_experts: int = 16,
        top_k: int = 2,
        expert_hidden: int = 384,
        tasks: Sequence[tuple[str, int]] = DEFAULT_TASKS,
    ) -> None:
        super().__init__(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio)
        if not tasks:
            raise ValueError("M3ViT needs at least one task")
        self.task_names = tuple(name for name, _ in tasks)
        self.task_channels = tuple(int(channels) for _, channels in tasks)
        self.num_tasks = len(self.task_names)
        self.num_experts = num_experts
        self.top_k = top_k
        self.expert_hidden = expert_hidden
        self.global_pool = ""
        blocks = []
        for index in range(depth):
            moe = (
                MoEMlp(embed_dim, expert_hidden, num_experts, top_k, self.num_tasks)
                if index % 2 == 1
                else None
            )
            blocks.append(M3ViTBlock(embed_dim, num_heads, mlp_ratio, mlp=moe))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.heads = nn.ModuleList(
            nn.Linear(embed_dim, channels) for channels in self.task_channels
        )

    def task_index(self, task: int | str) -> int:
        """Accept a task id or name; reject anything out of range with the valid choices."""
        if isinstance(task, str):
            if task not in self.task_names:
                raise ValueError(f"unknown task {task!r}; tasks are {list(self.task_names)}")
            return self.task_names.index(task)
        if isinstance(task, bool) or not isinstance(task, int):
            raise TypeError(f"task must be an int id or a name, got {type(task).__name__}")
        if not 0 <= task < self.num_tasks:
            raise ValueError(
                f"task {task} out of range 0..{self.num_tasks - 1} ({list(self.task_names)})"
            )
        return task

    @property
    def moe_layers(self) -> list[MoEMlp]:
        """The MoE MLPs in block order, e.g. to read their last routing."""
        return [block.mlp for block in self.blocks if isinstance(block.mlp, MoEMlp)]

    def forward_features(self, images: torch.Tensor, task: int | str) -> torch.Tensor:
        """[B, C, H, W] -> all tokens after the final LayerNorm, [B, tokens, dim]."""
        task_id = self.task_index(task)
        tokens = self.embed_tokens(images)
        for block in self.blocks:
            tokens = block(tokens, task_id)
        return self.norm(tokens)

    def forward_head(self, tokens: torch.Tensor, task: int | str) -> torch.Tensor:
        """Task head on the patch tokens only (CLS dropped): [B, patches, channels]."""
        return self.heads[self.task_index(task)](tokens[:, self.num_prefix_tokens :])

    def forward(self, images: torch.Tensor, task: int | str) -> torch.Tensor:
        """[B, C, H, W] -> per-patch task output [B, patches, channels[task]]."""
        task_id = self.task_index(task)
        return self.forward_head(self.forward_features(images, task_id), task_id)
