"""Graph transformations: each takes a Graph and returns a new Graph, no hidden state.

``default_passes`` is the sequence the build runs before quantisation; every pass can
be run and inspected on its own.
"""

from __future__ import annotations

from collections.abc import Callable

from .ir import Graph, UnsupportedError

Pass = Callable[[Graph], Graph]


def fold_attention_scale(graph: Graph) -> Graph:
    """Multiply the Q rows of each qkv linear by the attention scale (or, with qk-norm,
    q_norm's gamma and beta, which come after the linear); scale becomes 1."""
    graph = graph.copy()
    for node in graph.nodes:
        if node.op != "attention" or node.attrs.get("scale", 1.0) == 1.0:
            continue
        producer = graph.producer(node.inputs[0])
        private = producer is not None and len(graph.consumers(node.inputs[0])) == 1
        scale = node.attrs["scale"]
        if private and producer.op == "qknorm":
            producer.params["q_weight"] = producer.params["q_weight"] * scale
            producer.params["q_bias"] = producer.params["q_bias"] * scale
            node.attrs["scale"] = 1.0
            continue
        if not private or producer.op != "linear":
            raise UnsupportedError(node.name, "attention", "scale needs a private qkv linear")
        dim = producer.params["weight"].shape[0] // 3
        producer.params["weight"][:dim] *= scale
        if "bias" in producer.params:
            producer.params["bias"][:dim] *= scale
        node.attrs["scale"] = 1.0
    return graph


def _rewire(graph: Graph, old: str, new: str) -> None:
    for node in graph.nodes:
        node.inputs = [new if name == old else name for name in node.inputs]
    for task, name in graph.outputs.items():
        if name == old:
            graph.outputs[task] = new


def fuse_gelu(graph: Graph) -> Graph:
    """linear -> gelu becomes one linear with post-op GELU (the UCU applies it on output)."""
    graph = graph.copy()
    for node in list(graph.nodes):
        if node.op != "gelu":
            continue
        producer = graph.producer(node.inputs[0])
        if (
            producer is None
            or producer.op != "linear"
            or producer.attrs.get("post", "none") != "none"
            or len(graph.consumers(node.inputs[0])) != 1
        ):
            continue
        producer.attrs["post"] = "gelu"
        producer.attrs["gelu"] = node.attrs.get("gelu", "erf")
        old = producer.outputs[0]
        producer.outputs = [node.outputs[0]]
        del graph.tensors[old]
        graph.nodes.remove(node)
    return graph


def fuse_residual(graph: Graph) -> Graph:
    """add(x, f(..)) becomes f with post-op residual add when f is a linear or MoE."""
    graph = graph.copy()
    for node in list(graph.nodes):
        if node.op != "add":
            continue
        residual, branch = node.inputs
        producer = graph.producer(branch)
        if producer is None or len(graph.consumers(branch)) != 1:
            continue
        if producer.op == "linear" and producer.attrs.get("post", "none") == "none":
            producer.attrs["post"] = "add"
        elif producer.op == "moe" and not producer.attrs.get("residual"):
            producer.attrs["residual"] = True
        else:
            continue
        producer.inputs = [producer.inputs[0], residual]
        old = producer.outputs[0]
        producer.outputs = [node.outputs[0]]
        del graph.tensors[old]
        graph.nodes.remove(node)
    return graph


def default_passes() -> list[Pass]:
    return [fold_attention_scale, fuse_gelu, fuse_residual]


def run_passes(graph: Graph, passes: list[Pass] | None = None) -> Graph:
    for transform in passes or default_passes():
        graph = transform(graph)
    return graph
