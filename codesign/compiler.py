"""Compiler: a quantised Graph + ArchConfig -> Program.

Lays out the activation arena, quantises and packs every parameter in the order the
UCU consumes it, renders the lookup tables, and emits one descriptor per layer. The
Program is all the executors see; nothing about the torch model survives but names.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .arch import ArchConfig
from .contract import pack_bias_words
from .ir import Graph, Node
from .memory_plan import Buffer, MemoryPlan
from .memory_plan import plan as plan_memory
from .numerics.fixed import Fixed
from .numerics.tables import build_tables
from .ops import spec
from .program import (
    NONE,
    TABLE_NAMES,
    Layer,
    Op,
    Post,
    Program,
    TableRef,
    TensorRef,
    pack_block_sparse,
    pack_fmt,
    pack_tiles,
    padded,
    tile_mask,
    weight_container_bytes,
)
from .quantize import bias_fmt, residual_join_frac
from .rounding import round_nearest

ARENA_ALIGN = 64
LN_STAT_BITS = 18  # LayerNorm squares inputs truncated to this many bits (keeps sums < 2**62)


class CompileError(ValueError):
    """The model does not fit the ArchConfig or breaks a numerics invariant."""


class _Blob:
    """Program data section being assembled; offsets are relative to its start."""

    def __init__(self, align: int):
        self.align = align
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> int:
        offset = self.size
        data = data + b"\0" * (padded(len(data), self.align) - len(data))
        self.parts.append(data)
        self.size += len(data)
        return offset

    def int32(self, raw: np.ndarray) -> int:
        raw = np.asarray(raw, np.int64)
        if raw.size and (raw.min() < -(2**31) or raw.max() >= 2**31):
            raise CompileError("a parameter does not fit its 32-bit container")
        return self.add(raw.astype("<i4").tobytes())

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def arena_stride(cols: int, bus_bytes: int) -> int:
    """Bytes between rows of an int32 activation matrix: whole bus beats."""
    return padded(cols * 4, bus_bytes)


def gelu_kind(graph: Graph) -> str | None:
    """The GELU variant the model uses (None: no GELU); the table holds one variant."""
    kinds = {
        (node.name, node.attrs.get("gelu", "erf"))
        for node in graph.nodes
        if node.op in ("gelu", "moe") or node.attrs.get("post") == "gelu"
    }
    found = sorted({kind for _, kind in kinds})
    if len(found) > 1:
        where = ", ".join(f"{name} ({kind})" for name, kind in sorted(kinds))
        raise CompileError(f"model {graph.name} mixes GELU variants; one table serves all: {where}")
    return found[0] if found else None


def _check_fits(graph: Graph, arch: ArchConfig) -> None:
    kind = gelu_kind(graph)
    if kind is not None and kind != arch.gelu:
        raise CompileError(
            f"model {graph.name} uses the {kind} GELU, but ArchConfig.gelu is {arch.gelu!r} "
            f"(its GELU table is built into the kernel): use ArchConfig(gelu={kind!r})"
        )
    meta = graph.meta
    limits = [
        ("tokens", meta["tokens"], arch.max_tokens),
        ("dim", meta["dim"], arch.max_dim),
        ("heads", meta["heads"], arch.max_heads),
        ("head dim (dim / heads)", meta["dim"] // max(1, meta["heads"]), arch.max_head_dim),
    ]
    for node in graph.nodes:
        if node.op == "linear":
            limits.append(
                (
                    f"{node.name} input features",
                    node.params["weight"].shape[1],
                    max(arch.max_in_dim, arch.max_hidden),
                )
            )
            limits.append(
                (
                    f"{node.name} output features",
                    node.params["weight"].shape[0],
                    max(arch.max_hidden, 3 * arch.max_dim),
                )
            )
        if node.op == "moe":
            limits.append((f"{node.name} experts", node.attrs["experts"], arch.max_experts))
            limits.append(
                (f"{node.name} expert hidden", node.params["fc1_weight"].shape[1], arch.max_hidden)
            )
    for what, value, limit in limits:
        if value > limit:
            raise CompileError(
                f"model {graph.name}: {what} = {value} exceeds the ArchConfig maximum {limit}"
            )


def _raw_weights(fmts: dict, key: str, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The integers to store for ``weight`` [..., out, in] and its per-channel shifts: what
    the quantiser chose (``{key}_raw``, ``{key}_shifts``), else nearest rounding in the
    per-tensor format (a graph whose formats were set by hand)."""
    shifts = fmts.get(f"{key}_shifts")
    if shifts is None:
        shifts = np.zeros(weight.shape[:-1], np.int64)
    raw = fmts.get(f"{key}_raw")
    if raw is None:
        raw = round_nearest(weight.reshape(-1, weight.shape[-1]), fmts[key], shifts.reshape(-1))
        raw = raw.reshape(weight.shape)
    return raw, shifts


class _Compiler:
    def __init__(
        self, graph: Graph, arch: ArchConfig, block_sparse: bool = True, arena_reuse: bool = True
    ):
        self.graph = graph
        self.arch = arch
        self.block_sparse = block_sparse
        self.arena_reuse = arena_reuse
        self.blob = _Blob(arch.bus_bytes)
        self.refs: dict[str, TensorRef] = {}
        self.layers: list[Layer] = []
        self.meta_layers: list[dict] = []
        self.at = -1  # the node being compiled (-1: before the first, as in a Buffer)
        # qk-norm normalises q and k in place: its output is its input's buffer
        self.alias = {n.outputs[0]: n.inputs[0] for n in graph.nodes if n.op == "qknorm"}

    # ---------------------------------------------------------------- arena
    def buffer_of(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def plan_arena(self) -> MemoryPlan:
        """Every tensor's buffer (and each MoE layer's queue and scratch) with the nodes
        it lives across, placed by ``codesign.memory_plan``."""
        graph, nodes = self.graph, self.graph.nodes
        bus = self.arch.bus_bytes
        spans: dict[str, list[int]] = {}
        sizes: dict[str, int] = {}

        def touch(name: str, at: int, nbytes: int) -> None:
            span = spans.setdefault(name, [at, at])
            span[0], span[1] = min(span[0], at), max(span[1], at)
            sizes[name] = max(sizes.get(name, 0), nbytes)

        def tensor(name: str, at: int) -> None:
            rows, cols = self.graph.tensors[name].shape
            touch(self.buffer_of(name), at, rows * arena_stride(cols, bus))

        tensor(graph.input, -1)
        for at, node in enumerate(nodes):
            for name in (*node.inputs, *node.outputs):
                tensor(name, at)
            if node.op == "moe":
                experts, hidden, _ = node.params["fc1_weight"].shape
                tokens = self.graph.tensors[node.inputs[0]].shape[0]
                touch(f"{node.name}#queue", at, 4 * experts + 8 * experts * tokens)
                touch(f"{node.name}#scratch", at, tokens * arena_stride(hidden, bus))
        # the host reads the outputs after the run; the input rows survive it (a host may
        # run every task on one upload: docs/interface.md)
        for name in (graph.input, *graph.outputs.values()):
            tensor(name, len(nodes))
        host = {self.buffer_of(name) for name in (graph.input, *graph.outputs.values())}
        buffers = [
            Buffer(name, sizes[name], *span, host=name in host) for name, span in spans.items()
        ]
        window = self.arch.arena_window_bytes
        # buffers start on a UCU input tile, so rows in the on-chip window load a tile a
        # cycle (cds_arena_window's x port)
        align = max(ARENA_ALIGN, 4 * self.arch.tile_in)
        return plan_memory(buffers, align, self.arena_reuse, window)

    def arena_offset(self, name: str) -> int:
        """A buffer's offset, checked to be live at the node being compiled (the plan's
        lifetimes come from node inputs and outputs: an op that touched anything else
        would get bytes another tensor may hold)."""
        place = self.memory.placements[name]
        if not place.buffer.first <= self.at <= place.buffer.last:
            nodes = self.graph.nodes
            node = nodes[self.at].name if 0 <= self.at < len(nodes) else "the host"
            raise CompileError(f"{node} uses {name} outside the lifetime the memory plan gave it")
        return place.offset

    def ref(self, name: str) -> TensorRef:
        tensor = self.graph.tensors[name]
        if tensor.fmt is None:
            raise CompileError(f"tensor {name} has no format: quantise the graph first")
        offset = self.arena_offset(self.buffer_of(name))
        if name not in self.refs:
            rows, cols = tensor.shape
            stride = arena_stride(cols, self.arch.bus_bytes)
            self.refs[name] = TensorRef(offset, rows, cols, stride, tensor.fmt)
        return self.refs[name]

    # ---------------------------------------------------------------- helpers
    def weights(self, raw: np.ndarray, fmt: Fixed) -> int:
        container = weight_container_bytes(fmt)
        arch = self.arch
        return self.blob.add(
            pack_tiles(
                raw, arch.tile_in, arch.tile_out, container, arch.bus_bytes, arch.weight_ports
            )
        )

    def bias(self, raw: np.ndarray, shifts: np.ndarray | None = None) -> int:
        """UCU bias words (raw biases and the columns' weight shifts), padded to tiles."""
        words = pack_bias_words(raw, shifts)
        pad = padded(words.size, self.arch.tile_out) - words.size
        return self.blob.int32(np.pad(words, (0, pad)))

    def emit(
        self,
        op: Op,
        node: Node,
        fields: dict,
        task: int | None = None,
        suffix: str = "",
        columns: tuple[int, int] | None = None,
    ):
        """Append a layer; ``columns`` (start, count): it writes only these columns of the
        node's output (qk-norm's per-head layers), which is what its trace compares with."""
        name = node.name + suffix
        if task is None:
            task = -1 if node.task is None else node.task
        self.layers.append(Layer(op, name, fields, task))
        meta = {"name": name, "node": node.name, "op": op.name, "outputs": list(node.outputs)}
        if columns is not None:
            meta["columns"] = list(columns)
        self.meta_layers.append(meta)

    # ---------------------------------------------------------------- ops
    def linear(self, node: Node) -> None:
        fmts = node.attrs["formats"]
        x = self.ref(node.inputs[0])
        out = self.ref(node.outputs[0])
        start = node.attrs.get("rows", (0, x.rows))[0]
        weight = node.params["weight"]
        w_raw, shifts = _raw_weights(fmts, "weight", weight)
        post = Post[node.attrs.get("post", "none").upper()]
        acc_frac = x.fmt.frac_bits + fmts["weight"].frac_bits
        fields = {
            "src": x.offset + start * x.stride,
            "src_stride": x.stride,
            "rows": out.rows,
            "in_dim": weight.shape[1],
            "out_dim": weight.shape[0],
            "dst": out.offset,
            "dst_stride": out.stride,
            "x_fmt": pack_fmt(x.fmt),
            "weight": NONE,
            "w_fmt": pack_fmt(fmts["weight"]),
            "w_bytes": weight_container_bytes(fmts["weight"]),
            "bias": NONE,
            "b_fmt": 0,
            "post": int(post),
            "pre_fmt": 0,
            "res": NONE,
            "res_stride": 0,
            "res_fmt": 0,
            "out_fmt": pack_fmt(out.fmt),
            "blocks": NONE,
            "nnz": 0,
        }
        arch = self.arch
        if self.block_sparse and not tile_mask(w_raw, arch.tile_in, arch.tile_out).all():
            tiles, index = pack_block_sparse(
                w_raw,
                arch.tile_in,
                arch.tile_out,
                fields["w_bytes"],
                arch.bus_bytes,
                arch.weight_ports,
            )
            fields["weight"] = self.blob.add(tiles) if tiles else self.blob.add(b"\0")
            fields["blocks"] = self.blob.int32(index)
            fields["nnz"] = len(index) - (-(-weight.shape[0] // arch.tile_out) + 1)
        else:
            fields["weight"] = self.weights(w_raw, fmts["weight"])
        if "bias" in node.params or shifts.any():  # the bias words carry the shifts
            bias = node.params.get("bias", np.zeros(weight.shape[0]))
            b_fmt = fmts["bias"] if "bias" in node.params else bias_fmt(bias, acc_frac)
            fields["bias"] = self.bias(b_fmt.quantize(bias), shifts)
            fields["b_fmt"] = pack_fmt(b_fmt)
        if post == Post.GELU:
            fields["pre_fmt"] = pack_fmt(fmts["pre"])
        if post == Post.ADD:
            res = self.ref(node.inputs[1])
            if res.fmt.frac_bits > acc_frac:
                raise CompileError(
                    f"{node.name}: residual has {res.fmt.frac_bits} fraction bits, more than "
                    f"the accumulator's {acc_frac}"
                )
            fields.update(res=res.offset, res_stride=res.stride, res_fmt=pack_fmt(res.fmt))
        self.emit(Op.LINEAR, node, fields)

    def embed(self, node: Node) -> None:
        x, out = self.ref(node.inputs[0]), self.ref(node.outputs[0])
        fmt = node.attrs["formats"]["pos"]
        pos = node.params["pos"]
        fields = {
            "src": x.offset,
            "src_stride": x.stride,
            "patches": x.rows,
            "dim": x.cols,
            "dst": out.offset,
            "dst_stride": out.stride,
            "x_fmt": pack_fmt(x.fmt),
            "pos": self.blob.int32(fmt.quantize(pos)),
            "pos_fmt": pack_fmt(fmt),
            "out_fmt": pack_fmt(out.fmt),
            "prefix": out.rows - x.rows,
        }
        self.emit(Op.EMBED, node, fields)

    def _layernorm_fields(self, node: Node, key: str, x: TensorRef, dim: int) -> dict:
        """What a LAYERNORM over `dim` columns of `x` reads: gamma/beta (params
        ``{key}weight``/``{key}bias``), formats, the statistics shift and epsilon term."""
        fmts = node.attrs["formats"]
        shift = max(0, x.fmt.width - LN_STAT_BITS)
        stat_frac = x.fmt.frac_bits - shift
        eps_term = max(1, round(node.attrs["eps"] * dim * dim * 2.0 ** (2 * stat_frac)))
        if eps_term >= 2**62:
            raise CompileError(f"{node.name}: epsilon term overflows 62 bits")
        gamma, beta = fmts[f"{key}weight"], fmts[f"{key}bias"]
        return {
            "dim": dim,
            "x_fmt": pack_fmt(x.fmt),
            "gamma": self.blob.int32(gamma.quantize(node.params[f"{key}weight"])),
            "g_fmt": pack_fmt(gamma),
            "beta": self.blob.int32(beta.quantize(node.params[f"{key}bias"])),
            "b_fmt": pack_fmt(beta),
            "stat_shift": shift,
            "eps_lo": eps_term & 0xFFFFFFFF,
            "eps_hi": eps_term >> 32,
            "norm_fmt": pack_fmt(fmts[f"{key}norm"]),
        }

    def layernorm(self, node: Node) -> None:
        x, out = self.ref(node.inputs[0]), self.ref(node.outputs[0])
        start = node.attrs.get("rows", (0, x.rows))[0]
        fields = {
            "src": x.offset + start * x.stride,
            "src_stride": x.stride,
            "rows": out.rows,
            "dst": out.offset,
            "dst_stride": out.stride,
            "out_fmt": pack_fmt(out.fmt),
            **self._layernorm_fields(node, "", x, x.cols),
        }
        self.emit(Op.LAYERNORM, node, fields)

    def qknorm(self, node: Node) -> None:
        """qk-norm as one in-place LAYERNORM per head of q and of k inside the qkv rows."""
        qkv = self.ref(node.inputs[0])
        self.refs[node.outputs[0]] = qkv  # in place: quantize gave both one format
        dim, heads = qkv.cols // 3, node.attrs["heads"]
        head_dim = dim // heads
        if (4 * head_dim) % self.arch.bus_bytes:
            raise CompileError(
                f"{node.name}: qk-norm runs per head, so a head ({head_dim} int32 words) must "
                f"be a whole number of {self.arch.bus_bits}-bit bus beats"
            )
        for part, key in enumerate(("q", "k")):
            shared = self._layernorm_fields(node, f"{key}_", qkv, head_dim)
            for head in range(heads):
                base = qkv.offset + 4 * (part * dim + head * head_dim)
                fields = {
                    "src": base,
                    "src_stride": qkv.stride,
                    "rows": qkv.rows,
                    "dst": base,
                    "dst_stride": qkv.stride,
                    "out_fmt": pack_fmt(qkv.fmt),
                    **shared,
                }
                start = part * dim + head * head_dim
                self.emit(
                    Op.LAYERNORM, node, fields, suffix=f".{key}{head}", columns=(start, head_dim)
                )

    def pool(self, node: Node) -> None:
        x, out = self.ref(node.inputs[0]), self.ref(node.outputs[0])
        start, count = node.attrs["rows"]
        scale_fmt = node.attrs["formats"]["scale"]
        fields = {
            "src": x.offset + start * x.stride,
            "src_stride": x.stride,
            "rows": count,
            "cols": x.cols,
            "dst": out.offset,
            "dst_stride": out.stride,
            "x_fmt": pack_fmt(x.fmt),
            "scale": round(2.0**scale_fmt.frac_bits / count),
            "scale_fmt": pack_fmt(scale_fmt),
            "out_fmt": pack_fmt(out.fmt),
        }
        self.emit(Op.POOL, node, fields)

    def sum_fmt(self, tokens: int) -> Fixed:
        """Softmax running sums: the exp table's fraction bits, integer bits for `tokens`."""
        frac = self.table_fmts["exp"].frac_bits
        int_bits = max(1, tokens.bit_length())
        return Fixed(frac + int_bits, int_bits, False, "RND", "SAT")

    def attention(self, node: Node) -> None:
        if node.attrs.get("scale", 1.0) != 1.0:
            raise CompileError(f"{node.name}: attention scale not folded; run the passes first")
        fmts = node.attrs["formats"]
        qkv, out = self.ref(node.inputs[0]), self.ref(node.outputs[0])
        fields = {
            "src": qkv.offset,
            "src_stride": qkv.stride,
            "tokens": qkv.rows,
            "dim": out.cols,
            "heads": node.attrs["heads"],
            "dst": out.offset,
            "dst_stride": out.stride,
            "qkv_fmt": pack_fmt(qkv.fmt),
            "score_fmt": pack_fmt(fmts["score"]),
            "sum_fmt": pack_fmt(self.sum_fmt(qkv.rows)),
            "prob_fmt": pack_fmt(fmts["prob"]),
            "out_fmt": pack_fmt(out.fmt),
            "parallel": min(self.arch.attn_parallel, qkv.rows),
        }
        self.emit(Op.ATTENTION, node, fields)

    def add(self, node: Node) -> None:
        x, res, out = (self.ref(n) for n in (*node.inputs, node.outputs[0]))
        fields = {
            "src": x.offset,
            "src_stride": x.stride,
            "rows": x.rows,
            "cols": x.cols,
            "res": res.offset,
            "res_stride": res.stride,
            "dst": out.offset,
            "dst_stride": out.stride,
            "x_fmt": pack_fmt(x.fmt),
            "res_fmt": pack_fmt(res.fmt),
            "out_fmt": pack_fmt(out.fmt),
        }
        self.emit(Op.ADD, node, fields)

    def moe(self, node: Node) -> None:
        fmts = node.attrs["formats"]
        params = node.params
        x, out = self.ref(node.inputs[0]), self.ref(node.outputs[0])
        experts, hidden, dim = params["fc1_weight"].shape
        tokens = x.rows
        queue = self.arena_offset(f"{node.name}#queue")
        scratch = TensorRef(
            self.arena_offset(f"{node.name}#scratch"),
            tokens,
            hidden,
            arena_stride(hidden, self.arch.bus_bytes),
            fmts["hidden"],
        )
        w_bytes = weight_container_bytes(fmts["fc1_weight"])
        for task, gate in enumerate(params["gate"]):
            fields = {
                "src": x.offset,
                "src_stride": x.stride,
                "tokens": tokens,
                "dim": dim,
                "experts": experts,
                "top_k": node.attrs["top_k"],
                "weight": self.weights(fmts["gate"].quantize(gate), fmts["gate"]),
                "w_fmt": pack_fmt(fmts["gate"]),
                "w_bytes": weight_container_bytes(fmts["gate"]),
                "x_fmt": pack_fmt(x.fmt),
                "logit_fmt": pack_fmt(fmts["logit"]),
                "score_fmt": pack_fmt(fmts["score"]),
                "queue": queue,
            }
            self.emit(Op.MOE_GATE, node, fields, task=task, suffix=f".gate{task}")

        def stacked(key: str, weights: bool) -> tuple[int, int]:
            fmt, matrix = fmts[key], f"{key.split('_')[0]}_weight"  # fc1 / fc2
            raw, shifts = _raw_weights(fmts, matrix, params[matrix])
            offsets = []
            for expert in range(experts):
                if weights:
                    offsets.append(self.weights(raw[expert], fmt))
                else:
                    offsets.append(self.bias(fmt.quantize(params[key][expert]), shifts[expert]))
            stride = offsets[1] - offsets[0] if experts > 1 else 0
            if any(b - a != stride for a, b in itertools.pairwise(offsets)):
                raise CompileError(f"{node.name}: {key} experts are not evenly spaced")
            return offsets[0], stride

        fc1, fc1_stride = stacked("fc1_weight", True)
        fc1_bias, fc1_bias_stride = stacked("fc1_bias", False)
        fc2, fc2_stride = stacked("fc2_weight", True)
        fc2_bias, fc2_bias_stride = stacked("fc2_bias", False)
        if weight_container_bytes(fmts["fc2_weight"]) != w_bytes:
            raise CompileError(f"{node.name}: fc1 and fc2 weights need the same container")
        res = self.ref(node.inputs[1]) if node.attrs.get("residual") else None
        if res is not None and res.fmt.frac_bits > residual_join_frac(self.graph, node):
            raise CompileError(f"{node.name}: residual has more fraction bits than score*y")
        fields = {
            "src": x.offset,
            "src_stride": x.stride,
            "tokens": tokens,
            "dim": dim,
            "hidden": hidden,
            "experts": experts,
            "queue": queue,
            "res": res.offset if res else NONE,
            "res_stride": res.stride if res else 0,
            "dst": out.offset,
            "dst_stride": out.stride,
            "x_fmt": pack_fmt(x.fmt),
            "res_fmt": pack_fmt(res.fmt) if res else 0,
            "out_fmt": pack_fmt(out.fmt),
            "fc1": fc1,
            "fc1_stride": fc1_stride,
            "fc1_fmt": pack_fmt(fmts["fc1_weight"]),
            "fc1_bias": fc1_bias,
            "fc1_bias_stride": fc1_bias_stride,
            "fc1_bias_fmt": pack_fmt(fmts["fc1_bias"]),
            "pre_fmt": pack_fmt(fmts["hidden_pre"]),
            "hidden_fmt": pack_fmt(fmts["hidden"]),
            "fc2": fc2,
            "fc2_stride": fc2_stride,
            "fc2_fmt": pack_fmt(fmts["fc2_weight"]),
            "fc2_bias": fc2_bias,
            "fc2_bias_stride": fc2_bias_stride,
            "fc2_bias_fmt": pack_fmt(fmts["fc2_bias"]),
            "y_fmt": pack_fmt(fmts["expert_out"]),
            "score_fmt": pack_fmt(fmts["score"]),
            "w_bytes": w_bytes,
            "scratch": scratch.offset,
            "scratch_stride": scratch.stride,
        }
        self.emit(Op.MOE_EXPERTS, node, fields, suffix=".experts")

    # ---------------------------------------------------------------- driver
    def tables(self) -> dict[str, TableRef]:
        refs = {}
        for name, table in build_tables(**self.arch.table_params()).items():
            offset = self.blob.int32(table.values)
            refs[name] = TableRef(
                name,
                offset,
                len(table.values),
                table.fmt,
                table.index_bits,
                table.guard_bits,
                round(math.log2(table.domain)),
                table.kind,
            )
        return refs

    def run(self) -> Program:
        graph = self.graph
        _check_fits(graph, self.arch)
        tables = self.tables()
        self.table_fmts = {name: ref.fmt for name, ref in tables.items()}
        self.memory = self.plan_arena()
        input_ref = self.ref(graph.input)
        for self.at, node in enumerate(graph.nodes):
            getattr(self, node.op)(node)
        self.at = len(graph.nodes)
        outputs = [self.ref(graph.outputs[task]) for task in graph.tasks]
        program = Program(
            model=graph.name,
            bus_bits=self.arch.bus_bits,
            tile_in=self.arch.tile_in,
            tile_out=self.arch.tile_out,
            attn_parallel=self.arch.attn_parallel,
            attn_lanes=self.arch.header_attn_lanes,
            drain_lanes=self.arch.drain_lanes,
            norm_lanes=self.arch.layernorm_lanes,
            final_lanes=self.arch.moe_final_lanes,
            weight_ports=self.arch.weight_ports,
            layers=self.layers,
            data=b"",
            arena_bytes=self.memory.arena_bytes,
            window_bytes=self.memory.window_bytes,
            input=input_ref,
            outputs=outputs,
            tables={},
            geometry=(
                int(graph.meta["in_chans"]),
                int(graph.meta["patch_size"]),
                *(int(v) for v in graph.meta["image_size"]),
            ),
        )
        base = program.data_offset
        for layer in self.layers:
            for key in spec(layer.op).program_addresses:
                if layer.fields[key] != NONE:
                    layer.fields[key] += base
        for ref in tables.values():
            ref.offset += base
        program.tables = {name: tables[name] for name in TABLE_NAMES}
        program.data = self.blob.bytes()
        program.meta = {
            "layers": self.meta_layers,
            "task_names": graph.meta.get("task_names", []),
            "precision": graph.meta.get("precision"),
            "arch": self.arch.to_dict(),
            "patchify": {k: graph.meta[k] for k in ("image_size", "patch_size", "in_chans")},
            "memory": self.memory.to_dict(),
        }
        return program


def compile_graph(
    graph: Graph, arch: ArchConfig, block_sparse: bool = True, arena_reuse: bool = True
) -> Program:
    """Lower a quantised graph for one ArchConfig.

    A linear layer whose quantised weights contain all-zero UCU tiles is stored
    block-sparse (see ``program.pack_block_sparse``) unless ``block_sparse`` is False.
    Activations share arena bytes when their lifetimes do not overlap
    (``codesign.memory_plan``) unless ``arena_reuse`` is False: then every layer's output
    is still in the arena after a run.
    """
    return _Compiler(graph, arch, block_sparse, arena_reuse).run()
