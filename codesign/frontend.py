"""Frontend: a torch ViT / DeiT / M3ViT module -> Graph IR.

Reads the module structure by attribute, the way timm's ``VisionTransformer`` lays it
out (our reference models use the same names), so timm instances convert too. Any
module in a slot that has no mapping raises ``UnsupportedError`` naming the module
path and the op (its class), instead of being silently ignored.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph, Node, Tensor, UnsupportedError

# modules that are the identity at inference time
_PASSTHROUGH = {"Identity", "Dropout", "DropPath"}


def _kind(module) -> str:
    return type(module).__name__


def _array(tensor) -> np.ndarray:
    return tensor.detach().cpu().double().numpy().copy()


def _require(module, path: str, *kinds: str):
    if module is None:
        raise UnsupportedError(path, "missing", f"expected one of {', '.join(kinds)}")
    if _kind(module) not in kinds:
        raise UnsupportedError(path, _kind(module), f"expected {' or '.join(kinds)}")
    return module


def _identity(module, path: str) -> None:
    if module is not None and _kind(module) not in _PASSTHROUGH:
        raise UnsupportedError(path, _kind(module), "only an identity is supported here")


def _check_children(module, path: str, known: set[str]) -> None:
    for child_name, child in module.named_children():
        if child_name not in known and _kind(child) not in _PASSTHROUGH:
            raise UnsupportedError(f"{path}.{child_name}", _kind(child), "no mapping for it")


class _Builder:
    def __init__(self, name: str):
        self.graph = Graph(name=name, nodes=[], tensors={}, input="patches", outputs={})

    def tensor(self, name: str, shape) -> str:
        self.graph.tensors[name] = Tensor(name, (int(shape[0]), int(shape[1])))
        return name

    def add(self, name, op, inputs, shape, attrs=None, params=None, task=None) -> str:
        out = self.tensor(name, shape)
        self.graph.nodes.append(
            Node(name, op, list(inputs), [out], attrs or {}, params or {}, task)
        )
        return out

    def linear(self, module, path, x, rows_in, rows=None, task=None) -> str:
        _require(module, path, "Linear")
        params = {"weight": _array(module.weight)}
        if module.bias is not None:
            params["bias"] = _array(module.bias)
        count = rows[1] if rows else rows_in
        attrs = {"post": "none"}
        if rows:
            attrs["rows"] = tuple(rows)
        return self.add(path, "linear", [x], (count, module.out_features), attrs, params, task)

    def layernorm(self, module, path, x, rows_in, rows=None) -> str:
        _require(module, path, "LayerNorm")
        if module.weight is None or tuple(module.normalized_shape) != (module.weight.shape[0],):
            raise UnsupportedError(path, "LayerNorm", "needs an affine norm over the last dim")
        attrs = {"eps": float(module.eps)}
        if rows:
            attrs["rows"] = tuple(rows)
        params = {"weight": _array(module.weight), "bias": _array(module.bias)}
        count = rows[1] if rows else rows_in
        return self.add(path, "layernorm", [x], (count, module.weight.shape[0]), attrs, params)


def _layer_scale(module, path: str):
    """timm LayerScale (x * gamma) folds into the preceding linear; None when absent."""
    if module is None or _kind(module) in _PASSTHROUGH:
        return None
    if _kind(module) == "LayerScale" and hasattr(module, "gamma"):
        return _array(module.gamma)
    raise UnsupportedError(path, _kind(module), "expected LayerScale or identity")


def _mlp(builder: _Builder, mlp, path: str, x: str, tokens: int) -> str:
    _check_children(mlp, path, {"fc1", "act", "fc2", "norm", "drop", "drop1", "drop2"})
    _identity(getattr(mlp, "norm", None), f"{path}.norm")
    hidden = builder.linear(mlp.fc1, f"{path}.fc1", x, tokens)
    act = _require(mlp.act, f"{path}.act", "GELU")
    if getattr(act, "approximate", "none") != "none":
        raise UnsupportedError(f"{path}.act", f"GELU(approximate={act.approximate!r})")
    hidden = builder.add(f"{path}.act", "gelu", [hidden], (tokens, mlp.fc1.out_features))
    return builder.linear(mlp.fc2, f"{path}.fc2", hidden, tokens)


def _moe(builder: _Builder, moe, path: str, x: str, tokens: int, tasks: int) -> str:
    _check_children(moe, path, {"experts", "gates"})
    experts = list(moe.experts)
    for index, expert in enumerate(experts):
        epath = f"{path}.experts.{index}"
        _check_children(expert, epath, {"fc1", "act", "fc2", "norm", "drop", "drop1", "drop2"})
        act = _require(expert.act, f"{epath}.act", "GELU")
        if getattr(act, "approximate", "none") != "none":
            raise UnsupportedError(f"{epath}.act", f"GELU(approximate={act.approximate!r})")
    gates = list(moe.gates)
    if len(gates) != tasks:
        raise UnsupportedError(f"{path}.gates", "gates", f"{len(gates)} gates for {tasks} tasks")
    for index, gate in enumerate(gates):
        _require(gate, f"{path}.gates.{index}", "Linear")
        if gate.bias is not None:
            raise UnsupportedError(f"{path}.gates.{index}", "Linear(bias=True)", "gate has a bias")
    params = {
        "gate": np.stack([_array(g.weight) for g in gates]),
        "fc1_weight": np.stack([_array(e.fc1.weight) for e in experts]),
        "fc1_bias": np.stack([_array(e.fc1.bias) for e in experts]),
        "fc2_weight": np.stack([_array(e.fc2.weight) for e in experts]),
        "fc2_bias": np.stack([_array(e.fc2.bias) for e in experts]),
    }
    dim = params["fc2_weight"].shape[1]
    attrs = {"top_k": int(moe.top_k), "experts": len(experts), "residual": False}
    return builder.add(path, "moe", [x], (tokens, dim), attrs, params)


def convert(model, name: str | None = None) -> Graph:
    """Convert a ViT / DeiT / M3ViT torch module into a float Graph IR."""
    name = name or getattr(model, "name", None) or _kind(model)
    builder = _Builder(name)
    embed = _require(getattr(model, "patch_embed", None), "patch_embed", "PatchEmbed")
    proj = _require(getattr(embed, "proj", None), "patch_embed.proj", "Conv2d")
    patch = tuple(proj.kernel_size)
    if patch[0] != patch[1] or tuple(proj.stride) != patch or any(proj.padding):
        raise UnsupportedError("patch_embed.proj", "Conv2d", "needs square kernel = stride, no pad")
    _identity(getattr(embed, "norm", None), "patch_embed.norm")
    patch_size = patch[0]
    image_size = tuple(int(s) for s in _as_pair(embed.img_size))
    in_chans = proj.in_channels
    dim = proj.out_channels
    patches = (image_size[0] // patch_size) * (image_size[1] // patch_size)
    if getattr(model, "cls_token", None) is None or getattr(model, "num_prefix_tokens", 1) != 1:
        raise UnsupportedError("cls_token", "prefix tokens", "exactly one CLS token is supported")
    pos = getattr(model, "pos_embed", None)
    tokens = patches + 1
    if pos is None or tuple(pos.shape[-2:]) != (tokens, dim):
        raise UnsupportedError("pos_embed", "pos_embed", f"expected shape (1, {tokens}, {dim})")
    for slot in ("norm_pre", "fc_norm", "patch_drop"):
        _identity(getattr(model, slot, None), slot)
    in_features = in_chans * patch_size * patch_size
    builder.tensor("patches", (patches, in_features))

    weight = _array(proj.weight).reshape(dim, in_features)
    params = {"weight": weight}
    if proj.bias is not None:
        params["bias"] = _array(proj.bias)
    x = builder.add(
        "patch_embed.proj", "linear", ["patches"], (patches, dim), {"post": "none"}, params
    )
    cls = _array(model.cls_token).reshape(dim)
    x = builder.add(
        "embed",
        "embed",
        [x],
        (tokens, dim),
        {},
        {"cls": cls, "pos": _array(pos).reshape(tokens, dim)},
    )

    task_heads = getattr(model, "heads", None)
    tasks = len(task_heads) if task_heads is not None else 1
    heads_attn = None
    for index, block in enumerate(model.blocks):
        path = f"blocks.{index}"
        _check_children(
            block,
            path,
            {"norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2"},
        )
        attn = _require(block.attn, f"{path}.attn", "Attention")
        _check_children(attn, f"{path}.attn", {"qkv", "q_norm", "k_norm", "proj", "norm"})
        for slot in ("q_norm", "k_norm", "norm"):
            _identity(getattr(attn, slot, None), f"{path}.attn.{slot}")
        heads_attn = int(attn.num_heads)
        h = builder.layernorm(block.norm1, f"{path}.norm1", x, tokens)
        qkv = builder.linear(attn.qkv, f"{path}.attn.qkv", h, tokens)
        scale = float(getattr(attn, "scale", (dim // heads_attn) ** -0.5))
        h = builder.add(
            f"{path}.attn", "attention", [qkv], (tokens, dim), {"heads": heads_attn, "scale": scale}
        )
        h = builder.linear(attn.proj, f"{path}.attn.proj", h, tokens)
        _fold_scale(builder.graph, h, _layer_scale(getattr(block, "ls1", None), f"{path}.ls1"))
        x = builder.add(f"{path}.add1", "add", [x, h], (tokens, dim))
        h = builder.layernorm(block.norm2, f"{path}.norm2", x, tokens)
        if _kind(block.mlp) in ("MoEMlp", "MoE") or hasattr(block.mlp, "experts"):
            h = _moe(builder, block.mlp, f"{path}.mlp", h, tokens, tasks)
        else:
            _require(block.mlp, f"{path}.mlp", "Mlp")
            h = _mlp(builder, block.mlp, f"{path}.mlp", h, tokens)
        _fold_scale(builder.graph, h, _layer_scale(getattr(block, "ls2", None), f"{path}.ls2"))
        x = builder.add(f"{path}.add2", "add", [x, h], (tokens, dim))

    graph = builder.graph
    if task_heads is not None:
        x = builder.layernorm(model.norm, "norm", x, tokens)
        for task, head in enumerate(task_heads):
            out = builder.linear(head, f"heads.{task}", x, tokens, rows=(1, patches), task=task)
            graph.outputs[task] = out
        task_names = list(getattr(model, "task_names", [f"task{t}" for t in range(tasks)]))
        kind = "dense"
    else:
        pool = getattr(model, "global_pool", "token")
        if pool != "token":
            raise UnsupportedError("global_pool", f"pool={pool!r}", "only CLS-token pooling")
        x = builder.layernorm(model.norm, "norm", x, tokens, rows=(0, 1))
        graph.outputs[0] = builder.linear(model.head, "head", x, 1)
        task_names = ["classification"]
        kind = "classification"
    graph.meta.update(
        {
            "image_size": image_size,
            "patch_size": patch_size,
            "in_chans": in_chans,
            "dim": dim,
            "tokens": tokens,
            "patches": patches,
            "heads": heads_attn,
            "depth": len(model.blocks),
            "task_names": task_names,
            "output_kind": kind,
        }
    )
    return graph


def _as_pair(value):
    if isinstance(value, int):
        return (value, value)
    return tuple(value)


def _fold_scale(graph: Graph, tensor: str, gamma) -> None:
    if gamma is None:
        return
    node = graph.producer(tensor)
    if node.op == "linear":
        node.params["weight"] = node.params["weight"] * gamma[:, None]
        if "bias" in node.params:
            node.params["bias"] = node.params["bias"] * gamma
    else:
        raise UnsupportedError(node.name, "LayerScale", "can only fold into a linear layer")
