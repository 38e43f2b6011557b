"""Graph IR: the model as a list of nodes over named tensors, with float semantics.

The frontend produces it from torch, passes rewrite it (graph in, graph out), the
quantisation pass annotates formats, and the compiler lowers it to a Program. The
float interpreter here defines what each op means; calibration and the per-layer
fidelity report both read its recorded tensors.

Tensors are per image: shape (rows, cols) without a batch dimension. The graph input
is the patch matrix (patches, channels*patch*patch); ``patchify`` makes it from images.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from math import sqrt

import numpy as np

from .numerics.fixed import Fixed

OPS = ("linear", "embed", "layernorm", "attention", "gelu", "add", "moe", "pool", "qknorm")
POSTS = ("none", "gelu", "add")


class UnsupportedError(ValueError):
    """A model uses a module or op the toolkit cannot map; names the module path and op."""

    def __init__(self, module_path: str, op: str, detail: str = ""):
        self.module_path = module_path
        self.op = op
        message = f"unsupported op {op!r} at module {module_path or '<root>'}"
        super().__init__(message + (f": {detail}" if detail else ""))


@dataclass
class Tensor:
    name: str
    shape: tuple[int, int]
    fmt: Fixed | None = None


@dataclass
class Node:
    name: str  # module path in the torch model
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    task: int | None = None  # run only for this task (gates, heads); None = always


@dataclass
class Graph:
    name: str
    nodes: list[Node]
    tensors: dict[str, Tensor]
    input: str
    outputs: dict[int, str]  # task id -> output tensor
    meta: dict = field(default_factory=dict)

    def copy(self) -> Graph:
        return copy.deepcopy(self)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def producer(self, tensor: str) -> Node | None:
        for node in self.nodes:
            if tensor in node.outputs:
                return node
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [node for node in self.nodes if tensor in node.inputs]

    @property
    def tasks(self) -> list[int]:
        return sorted(self.outputs)

    def params_count(self) -> int:
        return int(sum(p.size for node in self.nodes for p in node.params.values()))

    def macs(self, task: int | None = None) -> int:
        """Multiply-accumulates of one inference of `task` (default: the first task).

        Linear layers, both attention products, MoE gates and top-k experts per token.
        """
        task = self.tasks[0] if task is None else task
        total = 0
        for node in self.nodes:
            if node.task is not None and node.task != task:
                continue
            rows = self.tensors[node.outputs[0]].shape[0]
            if node.op == "linear":
                total += rows * node.params["weight"].size
            elif node.op == "attention":
                tokens, dim = self.tensors[node.outputs[0]].shape
                total += 2 * tokens * tokens * dim
            elif node.op == "moe":
                params = node.params
                total += rows * params["gate"][task].size
                per_expert = params["fc1_weight"][0].size + params["fc2_weight"][0].size
                total += rows * node.attrs["top_k"] * per_expert
        return int(total)

    def patchify(self, images: np.ndarray) -> np.ndarray:
        """Images [B,C,H,W] -> patch matrices [B, patches, C*P*P] in conv weight order."""
        images = np.asarray(images, dtype=np.float64)
        if images.ndim == 3:
            images = images[None]
        patch = self.meta["patch_size"]
        channels, height, width = self.meta["in_chans"], *self.meta["image_size"]
        if images.shape[1:] != (channels, height, width):
            raise ValueError(
                f"input has shape {tuple(images.shape[1:])}, model {self.name} expects "
                f"{(channels, height, width)}"
            )
        batch = images.shape[0]
        grid_h, grid_w = height // patch, width // patch
        x = images.reshape(batch, channels, grid_h, patch, grid_w, patch)
        x = x.transpose(0, 2, 4, 1, 3, 5)
        return x.reshape(batch, grid_h * grid_w, channels * patch * patch)


# ---------------------------------------------------------------- float semantics


def _erf(x: np.ndarray) -> np.ndarray:
    """Vectorised erf in float64 (numpy has none; torch's matches nn.GELU's)."""
    import torch

    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x, np.float64))).numpy()


def gelu_float(x: np.ndarray, kind: str = "erf") -> np.ndarray:
    """GELU of ``numerics.tables.GELU_KINDS``: "erf" (nn.GELU), "tanh" (approximate)."""
    if kind == "tanh":
        return 0.5 * x * (1.0 + np.tanh(sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / sqrt(2.0)))


def layernorm_float(x: np.ndarray, weight, bias, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def qknorm_float(qkv: np.ndarray, node: Node, record: dict | None = None) -> np.ndarray:
    """qk-norm: q and k of a fused qkv [tokens, 3*dim] normalised per head (timm's
    q_norm / k_norm, one LayerNorm over head_dim shared by every head); v unchanged."""
    tokens, width = qkv.shape
    dim, heads = width // 3, node.attrs["heads"]
    out = qkv.copy()
    for part, key in enumerate(("q", "k")):
        x = qkv[:, part * dim : (part + 1) * dim].reshape(tokens, heads, dim // heads)
        params, eps = node.params, node.attrs["eps"]
        if record is not None:
            record[f"{key}_norm"] = layernorm_float(x, 1.0, 0.0, eps)
        y = layernorm_float(x, params[f"{key}_weight"], params[f"{key}_bias"], eps)
        out[:, part * dim : (part + 1) * dim] = y.reshape(tokens, dim)
    return out


def softmax_float(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention_float(
    qkv: np.ndarray, heads: int, scale: float = 1.0, record: dict | None = None
) -> np.ndarray:
    """Multi-head attention on a fused qkv [tokens, 3*dim] (scale 1 once folded into Q)."""
    tokens, width = qkv.shape
    dim = width // 3
    head_dim = dim // heads
    q = qkv[:, :dim].reshape(tokens, heads, head_dim).transpose(1, 0, 2)
    k = qkv[:, dim : 2 * dim].reshape(tokens, heads, head_dim).transpose(1, 0, 2)
    v = qkv[:, 2 * dim :].reshape(tokens, heads, head_dim).transpose(1, 0, 2)
    scores = (q @ k.transpose(0, 2, 1)) * scale
    probs = softmax_float(scores)
    if record is not None:
        record["scores"] = scores
        record["probs"] = probs
        record["sums"] = np.exp(scores - scores.max(-1, keepdims=True)).sum(-1)
    out = probs @ v
    return out.transpose(1, 0, 2).reshape(tokens, dim)


def topk_route(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Expert indices [tokens, k]: largest first, ties to the lower index."""
    order = np.lexsort((np.broadcast_to(np.arange(logits.shape[1]), logits.shape), -logits))
    return order[:, :top_k]


def moe_float(node: Node, x: np.ndarray, task: int, record: dict | None = None) -> np.ndarray:
    """Mixture of experts for one task: softmax gate, top-k without renormalisation."""
    params = node.params
    logits = x @ params["gate"][task].T
    probs = softmax_float(logits)
    chosen = topk_route(logits, node.attrs["top_k"])
    out = np.zeros((x.shape[0], params["fc2_weight"].shape[1]))
    hidden_pre, hidden, expert_out = [], [], []
    for expert in range(params["fc1_weight"].shape[0]):
        rows = np.nonzero((chosen == expert).any(axis=1))[0]
        if rows.size == 0:
            continue
        pre = x[rows] @ params["fc1_weight"][expert].T + params["fc1_bias"][expert]
        act = gelu_float(pre, node.attrs.get("gelu", "erf"))
        y = act @ params["fc2_weight"][expert].T + params["fc2_bias"][expert]
        out[rows] += probs[rows, expert][:, None] * y
        hidden_pre.append(pre)
        hidden.append(act)
        expert_out.append(y)
    if record is not None:
        record["logits"] = logits
        record["scores"] = np.take_along_axis(probs, chosen, axis=1)
        record["chosen"] = chosen
        record["hidden_pre"] = np.concatenate(hidden_pre)
        record["hidden"] = np.concatenate(hidden)
        record["expert_out"] = np.concatenate(expert_out)
    return out


def run_node(node: Node, values: dict[str, np.ndarray], task: int, record: dict | None = None):
    """Evaluate one node in float64; returns its output array."""
    args = [values[name] for name in node.inputs]
    attrs, params = node.attrs, node.params
    if node.op == "linear":
        x = args[0]
        rows = attrs.get("rows")
        if rows is not None:
            x = x[rows[0] : rows[0] + rows[1]]
        y = x @ params["weight"].T
        if "bias" in params:
            y = y + params["bias"]
        post = attrs.get("post", "none")
        if record is not None:
            record["pre"] = y
        if post == "gelu":
            y = gelu_float(y, attrs.get("gelu", "erf"))
        elif post == "add":
            y = y + args[1]
        return y
    if node.op == "embed":
        x = args[0]
        out = params["pos"].copy()  # prefix tokens (their positions folded in), then patches
        out[out.shape[0] - x.shape[0] :] += x
        return out
    if node.op == "layernorm":
        x = args[0]
        rows = attrs.get("rows")
        if rows is not None:
            x = x[rows[0] : rows[0] + rows[1]]
        if record is not None:
            record["norm"] = layernorm_float(x, 1.0, 0.0, attrs["eps"])
        return layernorm_float(x, params["weight"], params["bias"], attrs["eps"])
    if node.op == "attention":
        return attention_float(args[0], attrs["heads"], attrs.get("scale", 1.0), record)
    if node.op == "gelu":
        return gelu_float(args[0], attrs.get("gelu", "erf"))
    if node.op == "pool":
        start, count = attrs["rows"]
        return args[0][start : start + count].mean(axis=0, keepdims=True)
    if node.op == "qknorm":
        return qknorm_float(args[0], node, record)
    if node.op == "add":
        return args[0] + args[1]
    if node.op == "moe":
        out = moe_float(node, args[0], task, record)
        if attrs.get("residual"):
            out = out + args[1]
        return out
    raise UnsupportedError(node.name, node.op, "no float semantics")


def run_float(
    graph: Graph, patches: np.ndarray, task: int, internals: dict | None = None
) -> dict[str, np.ndarray]:
    """Run one image's patch matrix through the graph; returns every tensor's value.

    With ``internals`` (a dict), also records op-internal values (pre-activations,
    attention scores, gate logits...) per node name, which calibration needs.
    """
    values = {graph.input: np.asarray(patches, dtype=np.float64)}
    for node in graph.nodes:
        if node.task is not None and node.task != task:
            continue
        record = {} if internals is not None else None
        values[node.outputs[0]] = run_node(node, values, task, record)
        if internals is not None:
            internals[node.name] = record
    return values
