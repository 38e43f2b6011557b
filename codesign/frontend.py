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


def _gelu_kind(act, path: str) -> str:
    """erf GELU (nn.GELU) or its tanh approximation (approximate='tanh', timm's GELUTanh)."""
    _require(act, path, "GELU", "GELUTanh")
    if _kind(act) == "GELUTanh":
        return "tanh"
    approximate = getattr(act, "approximate", "none")
    if approximate not in ("none", "tanh"):
        raise UnsupportedError(path, f"GELU(approximate={approximate!r})")
    return "erf" if approximate == "none" else "tanh"


def _mlp(builder: _Builder, mlp, path: str, x: str, tokens: int) -> str:
    _check_children(mlp, path, {"fc1", "act", "fc2", "norm", "drop", "drop1", "drop2"})
    _identity(getattr(mlp, "norm", None), f"{path}.norm")
    hidden = builder.linear(mlp.fc1, f"{path}.fc1", x, tokens)
    gelu = _gelu_kind(mlp.act, f"{path}.act")
    hidden = builder.add(
        f"{path}.act", "gelu", [hidden], (tokens, mlp.fc1.out_features), {"gelu": gelu}
    )
    return builder.linear(mlp.fc2, f"{path}.fc2", hidden, tokens)


def _moe(builder: _Builder, moe, path: str, x: str, tokens: int, tasks: int) -> str:
    _check_children(moe, path, {"experts", "gates"})
    experts = list(moe.experts)
    for index, expert in enumerate(experts):
        epath = f"{path}.experts.{index}"
        _check_children(expert, epath, {"fc1", "act", "fc2", "norm", "drop", "drop1", "drop2"})
    gelus = {_gelu_kind(expert.act, f"{path}.experts.{i}.act") for i, expert in enumerate(experts)}
    if len(gelus) > 1:
        raise UnsupportedError(f"{path}.experts", "GELU", "experts mix GELU variants")
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
    attrs = {
        "top_k": int(moe.top_k),
        "experts": len(experts),
        "residual": False,
        "gelu": gelus.pop() if gelus else "erf",
    }
    return builder.add(path, "moe", [x], (tokens, dim), attrs, params)


def _prefix_tokens(model, dim: int) -> np.ndarray:
    """The prefix tokens in timm's order (class, distillation, registers): [prefix, dim]."""
    rows = []
    for slot in ("cls_token", "dist_token", "reg_token"):
        token = getattr(model, slot, None)
        if token is not None:
            rows.append(_array(token).reshape(-1, dim))
    prefix = np.concatenate(rows) if rows else np.zeros((0, dim))
    declared = getattr(model, "num_prefix_tokens", len(prefix))
    if declared != len(prefix):
        raise UnsupportedError(
            "num_prefix_tokens", "prefix tokens", f"{declared} declared, {len(prefix)} found"
        )
    return prefix


def _positions(model, prefix: np.ndarray, patches: int, dim: int) -> np.ndarray:
    """Each output row of the embedding before the patches are added: the prefix tokens
    with their positions folded in (when the positions cover them), then patch positions."""
    if getattr(model, "dynamic_img_size", False):
        raise UnsupportedError("pos_embed", "dynamic_img_size", "needs a fixed image size")
    pos = getattr(model, "pos_embed", None)
    tokens = len(prefix) + patches
    out = np.concatenate([prefix, np.zeros((patches, dim))])
    if pos is None:
        return out
    no_embed_class = bool(getattr(model, "no_embed_class", False))
    covered = patches if no_embed_class else tokens
    if tuple(pos.shape[-2:]) != (covered, dim):
        raise UnsupportedError("pos_embed", "pos_embed", f"expected shape (1, {covered}, {dim})")
    out[tokens - covered :] += _array(pos).reshape(covered, dim)
    return out


def _head(builder: _Builder, model, x: str, tokens: int, prefix: int) -> str:
    """The classifier of a single-task model: final norm, pooling, fc_norm, head(s)."""
    dim = builder.graph.tensors[x].shape[1]
    norm = getattr(model, "norm", None)
    has_norm = norm is not None and _kind(norm) not in _PASSTHROUGH
    if getattr(model, "attn_pool", None) is not None:
        raise UnsupportedError("attn_pool", _kind(model.attn_pool), "attention pooling")
    if hasattr(model, "head_dist"):  # DeiT distilled: (head(x[0]) + head_dist(x[1])) / 2
        if has_norm:
            x = builder.layernorm(norm, "norm", x, tokens, rows=(0, 2))
        heads = []
        for path, row in (("head", 0), ("head_dist", 1)):
            out = builder.linear(getattr(model, path), path, x, 2, rows=(row, 1))
            node = builder.graph.node(path)
            node.params = {key: value * 0.5 for key, value in node.params.items()}
            heads.append(out)
        return builder.add("head_average", "add", heads, (1, builder.graph.tensors[out].shape[1]))
    pool = getattr(model, "global_pool", "token")
    if pool == "token":
        if prefix < 1 or getattr(model, "cls_token", None) is None:
            raise UnsupportedError("global_pool", "pool='token'", "needs a class token")
        if has_norm:
            x = builder.layernorm(norm, "norm", x, tokens, rows=(0, 1))
        start = 0  # the class token's row
    elif pool == "avg":
        start = 0 if getattr(model, "pool_include_prefix", False) else prefix
        count = tokens - start
        if has_norm:
            x = builder.layernorm(norm, "norm", x, tokens, rows=(start, count))
            start = 0
        x = builder.add("pool", "pool", [x], (1, dim), {"rows": (start, count)})
        start = 0
    else:
        raise UnsupportedError("global_pool", f"pool={pool!r}", "supported: 'token', 'avg'")
    fc_norm = getattr(model, "fc_norm", None)
    if fc_norm is not None and _kind(fc_norm) not in _PASSTHROUGH:
        rows = (start, 1) if builder.graph.tensors[x].shape[0] != 1 else None
        x = builder.layernorm(fc_norm, "fc_norm", x, builder.graph.tensors[x].shape[0], rows)
        start = 0
    _identity(getattr(model, "head_drop", None), "head_drop")
    head = getattr(model, "head", None)
    if head is None or _kind(head) in _PASSTHROUGH:
        raise UnsupportedError("head", _kind(head) if head else "missing", "needs a linear head")
    rows_in = builder.graph.tensors[x].shape[0]
    rows = (start, 1) if rows_in != 1 else None
    return builder.linear(head, "head", x, rows_in, rows=rows)


def _qk_norm(builder: _Builder, attn, path: str, qkv: str, tokens: int, heads: int) -> str:
    """timm qk_norm: a LayerNorm over head_dim on each head of q and of k (the fused qkv
    tensor it produces, or `qkv` itself when the model has none)."""
    norms = [getattr(attn, slot, None) for slot in ("q_norm", "k_norm")]
    present = [n is not None and _kind(n) not in _PASSTHROUGH for n in norms]
    if not any(present):
        return qkv
    params, eps = {}, set()
    for key, module, there in zip(("q", "k"), norms, present, strict=True):
        where = f"{path}.{key}_norm"
        if not there:
            raise UnsupportedError(where, _kind(module), "q_norm and k_norm go together")
        _require(module, where, "LayerNorm")
        if module.weight is None:
            raise UnsupportedError(where, "LayerNorm", "needs an affine norm")
        params[f"{key}_weight"] = _array(module.weight)
        params[f"{key}_bias"] = _array(module.bias)
        eps.add(float(module.eps))
    width = builder.graph.tensors[qkv].shape[1]
    if params["q_weight"].shape[0] * heads * 3 != width:
        raise UnsupportedError(f"{path}.q_norm", "LayerNorm", "must normalise one head")
    attrs = {"heads": heads, "eps": eps.pop() if len(eps) == 1 else None}
    if attrs["eps"] is None:
        raise UnsupportedError(f"{path}.k_norm", "LayerNorm", "q_norm and k_norm differ in eps")
    return builder.add(f"{path}.qk_norm", "qknorm", [qkv], (tokens, width), attrs, params)


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
    prefix = _prefix_tokens(model, dim)
    tokens = patches + len(prefix)
    positions = _positions(model, prefix, patches, dim)
    _identity(getattr(model, "patch_drop", None), "patch_drop")
    in_features = in_chans * patch_size * patch_size
    builder.tensor("patches", (patches, in_features))

    weight = _array(proj.weight).reshape(dim, in_features)
    params = {"weight": weight}
    if proj.bias is not None:
        params["bias"] = _array(proj.bias)
    x = builder.add(
        "patch_embed.proj", "linear", ["patches"], (patches, dim), {"post": "none"}, params
    )
    x = builder.add("embed", "embed", [x], (tokens, dim), {}, {"pos": positions})
    norm_pre = getattr(model, "norm_pre", None)
    if norm_pre is not None and _kind(norm_pre) not in _PASSTHROUGH:
        x = builder.layernorm(norm_pre, "norm_pre", x, tokens)

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
        _identity(getattr(attn, "norm", None), f"{path}.attn.norm")
        heads_attn = int(attn.num_heads)
        h = builder.layernorm(block.norm1, f"{path}.norm1", x, tokens)
        qkv = builder.linear(attn.qkv, f"{path}.attn.qkv", h, tokens)
        qkv = _qk_norm(builder, attn, f"{path}.attn", qkv, tokens, heads_attn)
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
        if len(prefix) != 1:
            raise UnsupportedError("cls_token", "prefix tokens", "task heads read one class token")
        norm = getattr(model, "norm", None)
        if norm is not None and _kind(norm) not in _PASSTHROUGH:
            x = builder.layernorm(norm, "norm", x, tokens)
        for task, head in enumerate(task_heads):
            out = builder.linear(head, f"heads.{task}", x, tokens, rows=(1, patches), task=task)
            graph.outputs[task] = out
        task_names = list(getattr(model, "task_names", [f"task{t}" for t in range(tasks)]))
        kind = "dense"
    else:
        graph.outputs[0] = _head(builder, model, x, tokens, len(prefix))
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
            "prefix_tokens": len(prefix),
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
