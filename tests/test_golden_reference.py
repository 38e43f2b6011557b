"""The golden executor against an independent scalar reference of docs/numerics.md.

``tests/scalar_reference.py`` re-implements every op one Python int at a time from the
written contract (its own rounding, overflow, tables, weight unpacking and arena). Here
both run the same Programs and must agree bit for bit:

1. whole programs built through the real flow (tiny M3ViT and ViT configs, several
   ArchConfigs, precisions and seeds), every layer of every task plus the gate queues;
2. targeted cases: edge-valued inputs on whole programs and on single extracted layers,
   attention with tied / strongly negative / out-of-table scores for many P, MoE gates
   with tied logits, every rounding x overflow mode, the table evaluators;
3. a LINEAR whose exact sum is not representable in float64, so an executor taking a
   float shortcut would get a different answer.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from scalar_reference import (
    OVERFLOW_NAMES,
    ROUNDING_NAMES,
    Fmt,
    Rom,
    ScalarReference,
    Tables,
    bias_of,
    decode_fmt,
    shift_of,
)
from scalar_reference import apply_overflow as ref_apply_overflow
from scalar_reference import shift_round as ref_shift_round

import codesign.numerics.exact as exact_module
from codesign.arch import ArchConfig, Precision
from codesign.contract import pack_bias_words
from codesign.flow import STEPS, BuildState, make_options
from codesign.golden import GoldenExecutor
from codesign.models import config_from_dict, create_model
from codesign.numerics import fixed as fixed_module
from codesign.numerics import tables as tables_module
from codesign.numerics.fixed import OVERFLOW, ROUNDING, Fixed
from codesign.numerics.tables import build_tables
from codesign.ops import PROGRAM_ADDRESS_FIELDS
from codesign.program import (
    HEADER_BYTES,
    LAYER_FIELDS,
    LAYER_WORDS,
    NONE,
    Layer,
    Op,
    Post,
    Program,
    TableRef,
    TensorRef,
    pack_fmt,
    pack_tiles,
    padded,
)


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Tiny tensors: extra intra-op threads only add sync cost on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------ models

TWO_TASKS = [{"name": "semseg", "channels": 5}, {"name": "depth", "channels": 1}]
MODELS = {
    # 16 patches + CLS = 17 tokens: no P > 1 divides the token count
    "m3vit17": {
        "name": "m3vit17",
        "family": "m3vit",
        "image_size": [32, 32],
        "patch_size": 8,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "moe": {"num_experts": 4, "top_k": 2, "expert_hidden": 32},
        "tasks": TWO_TASKS,
    },
    # 8 patches + CLS = 9 tokens, dim 16 (smaller than some tiles: padding everywhere)
    "m3vit9": {
        "name": "m3vit9",
        "family": "m3vit",
        "image_size": [16, 32],
        "patch_size": 8,
        "embed_dim": 16,
        "depth": 2,
        "num_heads": 2,
        "mlp_ratio": 2.0,
        "moe": {"num_experts": 4, "top_k": 2, "expert_hidden": 32},
        "tasks": TWO_TASKS,
    },
    # 4 patches + CLS = 5 tokens, 3 heads, 3 experts with top-1, three tasks
    "m3vit5": {
        "name": "m3vit5",
        "family": "m3vit",
        "image_size": [16, 16],
        "patch_size": 8,
        "embed_dim": 24,
        "depth": 2,
        "num_heads": 3,
        "mlp_ratio": 2.0,
        "moe": {"num_experts": 3, "top_k": 1, "expert_hidden": 16},
        "tasks": [*TWO_TASKS, {"name": "normals", "channels": 3}],
    },
    # classification: the final norm and head run on the CLS row only
    "vit9": {
        "name": "vit9",
        "family": "vit",
        "image_size": [16, 32],
        "patch_size": 8,
        "embed_dim": 24,
        "depth": 2,
        "num_heads": 2,
        "mlp_ratio": 2.0,
        "num_classes": 7,
    },
}


def arch(tile_in: int, tile_out: int, parallel: int, bus_bits: int, **tables) -> ArchConfig:
    return ArchConfig(
        tile_in=tile_in, tile_out=tile_out, attn_parallel=parallel, bus_bits=bus_bits, **tables
    )


SMALL_TABLES = {"exp_index_bits": 9, "gelu_index_bits": 7, "recip_index_bits": 7,
                "rsqrt_index_bits": 6, "table_guard_bits": 6}  # fmt: skip
SHORT_RANGES = {"exp_range": 8.0, "gelu_range": 4.0}


def case_id(case) -> str:
    model, precision, a, seed = case
    tables = "" if a.table_params() == ArchConfig().table_params() else "-tables"
    shape = f"ti{a.tile_in}to{a.tile_out}P{a.attn_parallel}b{a.bus_bits}"
    return f"{model}-{precision}-{shape}{tables}-s{seed}"


def prune_tiles(module, arch_config: ArchConfig) -> None:
    """Zero whole UCU tiles of every linear weight (LPViT-style block pruning): tiles with
    (row + col) % 3 == 0 and the whole second tile row, so the compiler stores those
    layers block-sparse, including an output tile row without any stored tile."""
    t_out, t_in = arch_config.tile_out, arch_config.tile_in
    with torch.no_grad():
        for name, layer in module.named_modules():
            if not isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) or ".gates." in name:
                continue
            weight = layer.weight.view(layer.weight.shape[0], -1)
            for r in range(-(-weight.shape[0] // t_out)):
                for c in range(-(-weight.shape[1] // t_in)):
                    if (r + c) % 3 == 0 or r == 1:
                        weight[r * t_out : (r + 1) * t_out, c * t_in : (c + 1) * t_in] = 0


def run_flow(module, precision: Precision, arch_config: ArchConfig, seed: int = 0):
    """The real flow (load, convert, transform, quantize, compile) -> (state, Program).

    The Program is the one decoded from program.bin, as the flow's verify step runs it."""
    # the compute shape and tables as given, buffers sized to the model (a partial arch):
    # these designs check the executors, and need not carry a ZCU102's default buffers
    shape = {k: v for k, v in arch_config.to_dict().items() if not k.startswith("max_")}
    opts = make_options(module, precision=str(precision), arch=shape, calib=2, seed=seed)
    state = BuildState(opts)
    for name, step in STEPS:
        if name == "verify":
            break
        step(state)
    return state, Program.from_bytes(state.program_bytes)


@functools.cache
def build(model: str, precision: Precision, arch_config: ArchConfig, seed: int = 0,
          pruned: bool = False):  # fmt: skip
    module = create_model(config_from_dict(MODELS[model]), seed=seed)
    if pruned:
        prune_tiles(module, arch_config)
    return run_flow(module, precision, arch_config, seed)


def images(state: BuildState, count: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """Random images quantised to raw program inputs [count, patches, features]."""
    graph = state.graph
    shape = (graph.meta["in_chans"], *graph.meta["image_size"])
    rng = np.random.default_rng(seed)
    patches = graph.patchify(scale * rng.standard_normal((count, *shape)))
    return state.program.input.fmt.quantize(patches)


# ------------------------------------------------------------------- comparing runs


class RecordingGolden(GoldenExecutor):
    """The golden executor, also keeping a copy of each gate's expert queues, read from
    its arena at the layout docs/numerics.md gives (counts[E], ids[E][N], scores[E][N])."""

    def run(self, input_raw, task=0, trace=False):
        self.queues = {}
        return super().run(input_raw, task, trace)

    def moe_gate(self, layer, task):
        out = super().moe_gate(layer, task)
        f = layer.fields
        experts, tokens = f["experts"], f["tokens"]
        counts_at, ids_at, scores_at = ScalarReference.queue_layout(f)
        arena = self.arena
        counts = [int(c) for c in arena[counts_at // 4 : counts_at // 4 + experts]]
        ids = arena[ids_at // 4 : ids_at // 4 + experts * tokens].reshape(experts, tokens)
        scores = arena[scores_at // 4 : scores_at // 4 + experts * tokens].reshape(experts, tokens)
        self.queues[layer.name] = {
            "counts": counts,
            "ids": [[int(v) for v in ids[e, : counts[e]]] for e in range(experts)],
            "scores": [[int(v) for v in scores[e, : counts[e]]] for e in range(experts)],
        }
        return out


def assert_equal_raw(what: str, got: np.ndarray, want) -> None:
    want = np.asarray(want, dtype=np.int64)
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs reference {want.shape}"
    if not np.array_equal(got, want):
        bad = np.argwhere(got != want)
        index = tuple(int(i) for i in bad[0])
        raise AssertionError(
            f"{what}: {len(bad)} of {want.size} values differ; first at {index}: "
            f"golden {int(got[index])}, reference {int(want[index])}"
        )


def compare(program: Program, input_raw: np.ndarray, task: int = 0):
    """Run both executors; every layer, every gate queue and the output must agree."""
    golden = RecordingGolden(program)
    got = golden.run(input_raw, task, trace=True)
    ref = ScalarReference(program).run(input_raw, task)
    assert set(got.traces) == set(ref.traces), "the executors ran different layers"
    for name, values in ref.traces.items():
        assert_equal_raw(f"task {task} layer {name}", got.traces[name], values)
    assert golden.queues == ref.queues, f"task {task}: expert queues differ"
    assert_equal_raw(f"task {task} output", got.output, ref.output)
    return got, ref, golden.queues


# ----------------------------------------------------------------- 1. whole programs

WHOLE = [
    # model, precision, ArchConfig(tile_in, tile_out, P, bus), seed
    ("m3vit17", Precision(16, 24), arch(8, 4, 1, 64), 0),
    ("m3vit17", Precision(8, 16), arch(4, 8, 4, 32), 1),
    ("m3vit17", Precision(12, 20), arch(16, 16, 8, 128), 2),
    ("m3vit17", Precision(8, 10), arch(4, 4, 2, 64), 3),
    ("m3vit9", Precision(16, 24), arch(2, 4, 2, 256), 4),
    ("m3vit9", Precision(8, 16), arch(32, 8, 16, 512), 5),
    ("m3vit9", Precision(18, 27), arch(8, 2, 4, 32), 6),
    ("m3vit5", Precision(12, 20), arch(4, 2, 2, 32), 11),
    ("m3vit5", Precision(16, 24), arch(8, 16, 8, 64), 12),
    ("m3vit17", Precision(16, 24), arch(8, 8, 4, 64, **SMALL_TABLES), 13),
    ("m3vit9", Precision(12, 20), arch(4, 4, 2, 128, **SHORT_RANGES), 14),
    ("vit9", Precision(12, 20), arch(8, 8, 4, 128), 7),
    ("vit9", Precision(16, 24), arch(16, 4, 1, 64), 8),
]


@pytest.mark.parametrize("model,precision,arch_config,seed", WHOLE, ids=map(case_id, WHOLE))
def test_whole_program_bit_exact(model, precision, arch_config, seed):
    state, program = build(model, precision, arch_config, seed)
    # typical inputs, and larger ones that drive activations into saturation
    inputs = np.concatenate([images(state, 1, seed), images(state, 1, seed + 100, scale=4.0)])
    coverage = Counter()
    for task in range(program.n_tasks):
        for sample in inputs:
            _, ref, queues = compare(program, sample, task)
            coverage.update(ref.coverage)
            if MODELS[model]["family"] == "m3vit":
                assert len(queues) == 1 and next(iter(queues)).endswith(f".gate{task}")
    # the cases really went through every op (residual ADDs are fused into LINEAR/MoE)
    ops = {"LINEAR", "EMBED", "LAYERNORM", "ATTENTION"}
    if MODELS[model]["family"] == "m3vit":
        ops |= {"MOE_GATE", "MOE_EXPERTS"}
    for op in ops:
        assert coverage[f"op.{op}"] > 0, op
    assert coverage["softmax.new_max"] > 0
    assert coverage["overflow.clip"] > 0


TIMM = ["all at once", "distilled", "reg_tokens=4", "class_token=False", "final_norm=False"]


@pytest.mark.parametrize("option", TIMM)
def test_timm_option_programs_bit_exact(option):
    """timm's options (docs/timm.md): prefix tokens, POOL, in-place qk-norm, the tanh GELU
    table, pre-norm, distilled heads; both executors on raw and saturating inputs."""
    from codesign.models.timm_support import import_timm, timm_vit

    timm, reason = import_timm()
    if timm is None:
        pytest.skip(reason)
    gelu = "tanh" if option == "all at once" else "erf"
    arch_config = arch(8, 8, 2, 128).with_(gelu=gelu)
    state, program = run_flow(timm_vit(option), Precision(12, 20), arch_config)
    coverage = Counter()
    inputs = np.concatenate([images(state, 1, 0), images(state, 1, 1, scale=4.0)])
    for sample in inputs:
        _, ref, _ = compare(program, sample, 0)
        coverage.update(ref.coverage)
    expected = {"EMBED", "LAYERNORM", "ATTENTION", "LINEAR"}
    if option in ("all at once", "class_token=False"):  # global_pool="avg"
        expected.add("POOL")
    for op in expected:
        assert coverage[f"op.{op}"] > 0, op


SPARSE = [
    ("m3vit17", Precision(16, 24), arch(8, 4, 2, 64), 9),
    ("vit9", Precision(8, 16), arch(4, 8, 4, 128), 10),
]


@pytest.mark.skipif("blocks" not in LAYER_FIELDS[Op.LINEAR], reason="no block-sparse layout")
@pytest.mark.parametrize("model,precision,arch_config,seed", SPARSE, ids=["m3vit17", "vit9"])
def test_whole_program_block_sparse(model, precision, arch_config, seed):
    """Pruned tiles: the compiler stores LINEAR weights block-sparse (CSR tile index);
    the reference decodes that layout on its own (docs/program-format.md)."""
    state, program = build(model, precision, arch_config, seed, pruned=True)
    sparse = [lay for lay in program.layers if lay.op == Op.LINEAR and lay.fields["blocks"] != NONE]
    assert len(sparse) >= 4
    raw = images(state, 1, seed)[0]
    for task in range(program.n_tasks):
        compare(program, raw, task)


def test_whole_program_layer_stat_shift_and_p():
    """Descriptor fields the contract derives: LayerNorm t = max(0, W_x - 18) and the
    attention parallelism the compiler writes (min(P, tokens))."""
    for model, precision, arch_config, seed in WHOLE[:6]:
        _, program = build(model, precision, arch_config, seed)
        for layer in program.layers:
            f = layer.fields
            if layer.op == Op.LAYERNORM:
                assert f["stat_shift"] == max(0, decode_fmt(f["x_fmt"]).width - 18)
            if layer.op == Op.ATTENTION:
                assert f["parallel"] == min(arch_config.attn_parallel, f["tokens"])


def test_reference_reads_the_graphs_weights():
    """The reference's own tile decoding gives back exactly the quantised parameters of the
    graph the Program came from (so agreement is not two executors sharing one unpacker)."""
    cases = [(*case, False) for case in (WHOLE[1], WHOLE[4], WHOLE[5])] + [
        (*case, True) for case in SPARSE
    ]
    shifted = 0
    for model, precision, arch_config, seed, pruned in cases:
        state, program = build(model, precision, arch_config, seed, pruned)
        graph = state.graph_quant
        reference = ScalarReference(program)
        seen = 0
        for layer in program.layers:
            f = layer.fields
            node = graph.node(layer.name.split(".gate")[0].removesuffix(".experts"))
            fmts = node.attrs["formats"]
            if layer.op == Op.LINEAR:
                w = reference.weights(
                    f["weight"], f["out_dim"], f["in_dim"], f["w_bytes"], f.get("blocks", NONE)
                )
                shifts = fmts["weight_shifts"]
                want = fmts["weight_raw"]
                assert_equal_raw(layer.name, want, w)
                if f["bias"] != NONE:
                    words = reference.vector(f["bias"], f["out_dim"])
                    b = [bias_of(word) for word in words]
                    assert_equal_raw(layer.name, fmts["bias"].quantize(node.params["bias"]), b)
                    assert_equal_raw(layer.name, shifts, [shift_of(word) for word in words])
                seen += 1
                shifted += int(shifts.any())
            elif layer.op == Op.MOE_GATE:
                w = reference.weights(f["weight"], f["experts"], f["dim"], f["w_bytes"])
                want = fmts["gate"].quantize(node.params["gate"][layer.task])
                assert_equal_raw(layer.name, want, w)
            elif layer.op == Op.MOE_EXPERTS:
                for e in range(f["experts"]):
                    w1 = reference.weights(
                        f["fc1"] + e * f["fc1_stride"], f["hidden"], f["dim"], f["w_bytes"]
                    )
                    w2 = reference.weights(
                        f["fc2"] + e * f["fc2_stride"], f["dim"], f["hidden"], f["w_bytes"]
                    )
                    fc1 = fmts["fc1_weight_raw"][e]
                    fc2 = fmts["fc2_weight_raw"][e]
                    assert_equal_raw(f"{layer.name} fc1[{e}]", fc1, w1)
                    assert_equal_raw(f"{layer.name} fc2[{e}]", fc2, w2)
        assert seen >= 5
    assert shifted, "no layer had per-channel weight shifts to read"


# ------------------------------------------------------------- 2. targeted op cases


def edge_inputs(fmt: Fixed, rows: int, cols: int, seed: int = 0) -> dict[str, np.ndarray]:
    lo, hi = fmt.raw_min, fmt.raw_max
    checker = np.indices((rows, cols)).sum(axis=0) % 2
    rng = np.random.default_rng(seed)
    return {
        "max": np.full((rows, cols), hi, np.int64),
        "min": np.full((rows, cols), lo, np.int64),
        "zero": np.zeros((rows, cols), np.int64),
        "alternating": np.where(checker == 1, hi, lo).astype(np.int64),
        "rows_alternating": np.where(np.arange(rows)[:, None] % 2 == 1, hi, lo)
        .repeat(cols, axis=1)
        .astype(np.int64),
        "uniform": rng.integers(lo, hi, (rows, cols), endpoint=True),
    }


@pytest.mark.parametrize("case", [0, 4, 7, 12], ids=lambda i: case_id(WHOLE[i]))
def test_whole_program_edge_inputs(case):
    """All max, all min, zeros, alternating extremes: saturation everywhere, patch rows
    that differ only by their position embedding."""
    model, precision, arch_config, seed = WHOLE[case]
    _, program = build(model, precision, arch_config, seed)
    ref_in = program.input
    coverage = Counter()
    for name, raw in edge_inputs(ref_in.fmt, ref_in.rows, ref_in.cols, seed).items():
        for task in range(program.n_tasks):
            try:
                _, ref, _ = compare(program, raw, task)
            except AssertionError as err:
                raise AssertionError(f"input {name}: {err}") from None
            coverage.update(ref.coverage)
    for key in ("overflow.clip", "softmax.new_max", "shift.tie"):
        assert coverage[key] > 0, key


def _rebased(program: Program, layers: list[Layer]) -> tuple[list[Layer], dict, int]:
    """Copies of `layers` (and the tables) with program addresses moved to a new layout."""
    delta = (HEADER_BYTES + len(layers) * LAYER_WORDS * 4) - program.data_offset
    out = []
    for layer in layers:
        fields = dict(layer.fields)
        for key in PROGRAM_ADDRESS_FIELDS:
            if key in fields and fields[key] != NONE:
                fields[key] += delta
        out.append(Layer(layer.op, layer.name, fields, layer.task))
    tables = {
        name: TableRef(
            t.name, t.offset + delta, t.entries, t.fmt, t.index_bits, t.guard_bits, t.domain_log2
        )
        for name, t in program.tables.items()
    }
    return out, tables, delta


def _in_out(layer: Layer) -> tuple[TensorRef, TensorRef]:
    f = layer.fields
    fmt = layer.fmt
    if layer.op == Op.LINEAR:
        shapes = (f["rows"], f["in_dim"]), (f["rows"], f["out_dim"]), "x_fmt"
    elif layer.op == Op.EMBED:
        shapes = (f["patches"], f["dim"]), (f["patches"] + 1, f["dim"]), "x_fmt"
    elif layer.op == Op.LAYERNORM:
        shapes = (f["rows"], f["dim"]), (f["rows"], f["dim"]), "x_fmt"
    elif layer.op == Op.ATTENTION:
        shapes = (f["tokens"], 3 * f["dim"]), (f["tokens"], f["dim"]), "qkv_fmt"
    elif layer.op == Op.ADD:
        shapes = (f["rows"], f["cols"]), (f["rows"], f["cols"]), "x_fmt"
    else:  # MOE_GATE / MOE_EXPERTS
        shapes = (f["tokens"], f["dim"]), (f["tokens"], f["dim"]), "x_fmt"
    (rows, cols), (out_rows, out_cols), key = shapes
    src = TensorRef(f["src"], rows, cols, f["src_stride"], fmt(key))
    if layer.op == Op.MOE_GATE:
        return src, src
    dst = TensorRef(f["dst"], out_rows, out_cols, f["dst_stride"], fmt("out_fmt"))
    return src, dst


def sub_program(program: Program, layers: list[Layer], overrides: dict | None = None) -> Program:
    """A Program running only `layers` of `program` (first layer's source is the input,
    last layer's destination the output), optionally with some fields replaced."""
    layers, tables, _ = _rebased(program, layers)
    if overrides:
        layers[0].fields.update(overrides)
    src, _ = _in_out(layers[0])
    _, dst = _in_out(layers[-1])
    sub = Program(
        model="sub",
        bus_bits=program.bus_bits,
        tile_in=program.tile_in,
        tile_out=program.tile_out,
        attn_parallel=program.attn_parallel,
        layers=layers,
        data=program.data,
        arena_bytes=program.arena_bytes,
        input=src,
        outputs=[dst] * program.n_tasks,
        tables=tables,
    )
    return Program.from_bytes(sub.to_bytes())


def test_single_layers_with_edge_values():
    """Every kind of layer on its own, fed extreme raw inputs directly (no earlier layer
    clips them first): zero-variance and max-variance LayerNorm rows, saturating EMBED,
    LINEAR with GELU, ATTENTION, and a gate + experts pair."""
    _, program = build(*WHOLE[0])
    layers = program.layers
    by_op: dict[Op, Layer] = {}
    for layer in layers:
        by_op.setdefault(layer.op, layer)
    groups = [[by_op[op]] for op in (Op.EMBED, Op.LAYERNORM, Op.ATTENTION)]
    groups.append(
        [next(lay for lay in layers if lay.op == Op.LINEAR and lay.fields["post"] == Post.GELU)]
    )
    groups.append(
        [next(lay for lay in layers if lay.op == Op.LINEAR and lay.fields["post"] == Post.ADD)]
    )
    experts = next(lay for lay in layers if lay.op == Op.MOE_EXPERTS)
    for task in range(program.n_tasks):
        gate = next(lay for lay in layers if lay.op == Op.MOE_GATE and lay.task == task)
        groups.append([gate, experts])
    coverage = Counter()
    for group in groups:
        sub = sub_program(program, group)
        ref_in = sub.input
        task = max(group[0].task, 0)  # a gate runs only for its own task
        for name, raw in edge_inputs(ref_in.fmt, ref_in.rows, ref_in.cols).items():
            try:
                _, ref, _ = compare(sub, raw, task)
            except AssertionError as err:
                raise AssertionError(f"{group[0].name} on {name}: {err}") from None
            coverage.update(ref.coverage)
    for key in (
        "overflow.clip",
        "softmax.tie",
        "gate.tie",
        "rsqrt.odd_exponent",
        "rsqrt.truncate",
        "recip.truncate",
    ):
        assert coverage[key] > 0, key


def test_gelu_outside_the_table_and_on_a_coarse_grid():
    """A LINEAR+GELU whose pre-activation format reaches |h| >= 8 (delta = 0 past the
    table) and has fewer fraction bits than the table step (idx = a << (s - F))."""
    _, program = build(*WHOLE[0])
    layer = next(
        lay for lay in program.layers if lay.op == Op.LINEAR and lay.fields["post"] == Post.GELU
    )
    # the compiled input format widened to 32 bits, same fraction bits (the bias still
    # aligns): inputs up to 2**11 drive |h| far past the table's end at 8
    x_fmt = layer.fmt("x_fmt").with_(width=32, int_bits=32 - layer.fmt("x_fmt").frac_bits)
    coverage = Counter()
    for pre in (
        Fixed(12, 8),
        Fixed(16, 8),
        Fixed(24, 10, rounding="RND_CONV"),
        Fixed(10, 8, rounding="TRN"),
    ):
        for out in (Fixed(24, 10), Fixed(12, 6, overflow="WRAP"), Fixed(8, 3, signed=False)):
            sub = sub_program(
                program,
                [layer],
                {"x_fmt": pack_fmt(x_fmt), "pre_fmt": pack_fmt(pre), "out_fmt": pack_fmt(out)},
            )
            for raw in edge_inputs(x_fmt, sub.input.rows, sub.input.cols, seed=3).values():
                _, ref, _ = compare(sub, raw)
                coverage.update(ref.coverage)
    assert coverage["gelu_delta.beyond"] > 0
    assert coverage["gelu_delta.coarse"] > 0


# ---- hand-built programs


class Builder:
    """Assembles a Program by hand (tables, packed weights, arena tensors, descriptors)."""

    def __init__(self, tile_in=4, tile_out=4, bus_bits=64, parallel=1):
        self.arch = arch(tile_in, tile_out, parallel, bus_bits)
        self.data = bytearray()
        self.arena = 0
        self.layers: list[Layer] = []
        self.tables = {}
        for name, table in build_tables(**self.arch.table_params()).items():
            offset = self.add(np.asarray(table.values, "<i4").tobytes())
            self.tables[name] = TableRef(
                name,
                offset,
                len(table.values),
                table.fmt,
                table.index_bits,
                table.guard_bits,
                round(math.log2(table.domain)),
            )

    def add(self, blob: bytes) -> int:
        offset = len(self.data)
        self.data += blob + bytes(padded(len(blob), self.arch.bus_bytes) - len(blob))
        return offset

    def weights(self, raw: np.ndarray, container: int) -> int:
        a = self.arch
        return self.add(pack_tiles(np.asarray(raw), a.tile_in, a.tile_out, container, a.bus_bytes))

    def int32(self, raw) -> int:
        return self.add(np.asarray(raw, np.int64).astype("<i4").tobytes())

    def tensor(self, rows: int, cols: int, fmt: Fixed) -> TensorRef:
        stride = padded(4 * cols, self.arch.bus_bytes)
        ref = TensorRef(self.arena, rows, cols, stride, fmt)
        self.arena += padded(rows * stride, 64)
        return ref

    def layer(self, op: Op, name: str, **fields) -> None:
        self.layers.append(Layer(op, name, fields))

    def program(self, input_ref: TensorRef, output_ref: TensorRef) -> Program:
        base = HEADER_BYTES + len(self.layers) * LAYER_WORDS * 4
        layers = []
        for layer in self.layers:
            fields = dict(layer.fields)
            for key in PROGRAM_ADDRESS_FIELDS:
                if key in fields and fields[key] != NONE:
                    fields[key] += base
            layers.append(Layer(layer.op, layer.name, fields, layer.task))
        tables = {
            n: TableRef(
                t.name, t.offset + base, t.entries, t.fmt, t.index_bits, t.guard_bits, t.domain_log2
            )
            for n, t in self.tables.items()
        }
        a = self.arch
        program = Program(
            model="hand",
            bus_bits=a.bus_bits,
            tile_in=a.tile_in,
            tile_out=a.tile_out,
            attn_parallel=a.attn_parallel,
            layers=layers,
            data=bytes(self.data),
            arena_bytes=self.arena,
            input=input_ref,
            outputs=[output_ref],
            tables=tables,
        )
        return Program.from_bytes(program.to_bytes())


def attention_program(tokens, dim, heads, parallel, qkv_fmt, score_fmt, out_fmt=None):
    b = Builder(parallel=1 << (parallel - 1).bit_length())
    sum_int = max(1, tokens.bit_length())
    qkv = b.tensor(tokens, 3 * dim, qkv_fmt)
    out = b.tensor(tokens, dim, out_fmt or qkv_fmt)
    b.layer(
        Op.ATTENTION,
        "attn",
        src=qkv.offset,
        src_stride=qkv.stride,
        tokens=tokens,
        dim=dim,
        heads=heads,
        dst=out.offset,
        dst_stride=out.stride,
        qkv_fmt=pack_fmt(qkv_fmt),
        score_fmt=pack_fmt(score_fmt),
        sum_fmt=pack_fmt(Fixed(16 + sum_int, sum_int, False)),
        prob_fmt=pack_fmt(Fixed(17, 1, False)),
        out_fmt=pack_fmt(out.fmt),
        parallel=parallel,
    )
    return b.program(qkv, out)


def qkv_input(tokens, dim, q_rows, k_rows, v_rows):
    return (
        np.concatenate([q_rows, k_rows, v_rows], axis=1).astype(np.int64).reshape(tokens, 3 * dim)
    )


@pytest.mark.parametrize("parallel", [1, 2, 3, 4, 5, 7])
def test_attention_ties_negative_and_out_of_table(parallel):
    """Scores all equal (ties never rescale s), all equal and strongly negative, spread
    far beyond the exp table (E = 0), on a coarse score grid (idx = a << (s - F)), and
    random; 7 tokens, so only P = 1 and P >= 7 divide nothing awkwardly."""
    tokens, dim, heads = 7, 8, 2
    qkv_fmt = Fixed(16, 8)  # raw 2**15 - 1 ~ 128
    wide = Fixed(24, 16)  # scores up to +-2**15 without saturation, 8 fraction bits
    coarse = Fixed(16, 12)  # 4 fraction bits < the exp table step bits (6)
    rng = np.random.default_rng(parallel)
    hi = qkv_fmt.raw_max
    ones = np.ones((tokens, dim), np.int64)
    v = rng.integers(-hi, hi, (tokens, dim))
    ramp = np.arange(tokens)[:, None] * ones
    cases = {
        "tied": (ones * 256, ones * 256, v),
        "tied_negative": (ones * hi, -ones * hi, v),
        "spread": (ones * 4096, (ramp - 3) * 2048, v),
        "random": (rng.integers(-hi, hi, (tokens, dim)), rng.integers(-hi, hi, (tokens, dim)), v),
        "small": (
            rng.integers(-600, 600, (tokens, dim)),
            rng.integers(-600, 600, (tokens, dim)),
            v,
        ),
    }
    coverage = Counter()
    for score_fmt in (wide, coarse, Fixed(20, 12, rounding="RND_CONV", overflow="SAT_SYM")):
        program = attention_program(tokens, dim, heads, parallel, qkv_fmt, score_fmt)
        for name, (qm, km, vm) in cases.items():
            try:
                _, ref, _ = compare(program, qkv_input(tokens, dim, qm, km, vm))
            except AssertionError as err:
                raise AssertionError(f"{name}, scores {score_fmt}: {err}") from None
            coverage.update(ref.coverage)
    for key in ("softmax.tie", "softmax.new_max", "exp.beyond", "exp.coarse", "overflow.clip"):
        assert coverage[key] > 0, key


def test_attention_key_order_changes_bits():
    """The rotated key order is part of the contract: P = 1, 2 and N give different bits
    for the same input (so both executors really follow the rotation) and both agree."""
    tokens, dim, heads = 9, 4, 1
    qkv_fmt, score_fmt = Fixed(16, 8), Fixed(24, 16)
    raw = np.random.default_rng(11).integers(-300, 300, (tokens, 3 * dim))
    outputs = {}
    for parallel in (1, 2, tokens):
        program = attention_program(tokens, dim, heads, parallel, qkv_fmt, score_fmt, Fixed(24, 8))
        got, _, _ = compare(program, raw)
        outputs[parallel] = got.output
    assert not np.array_equal(outputs[1], outputs[2])
    assert not np.array_equal(outputs[1], outputs[tokens])


def _zero_and_tie_gates(module) -> None:
    """Gate of task 0: all zero (every logit tied). Gate of task 1: experts 1, 2, 3 share
    one row (their logits tie on every token)."""
    with torch.no_grad():
        for block in module.blocks:
            gates = getattr(block.mlp, "gates", None)
            if gates is None:
                continue
            gates[0].weight.zero_()
            gates[1].weight[2:] = gates[1].weight[1]


def test_moe_gate_ties_and_unnormalised_scores():
    module = create_model(config_from_dict(MODELS["m3vit17"]), seed=5)
    _zero_and_tie_gates(module)
    state, program = run_flow(module, Precision(16, 24), arch(8, 8, 4, 128), seed=5)
    tokens = program.input.rows + 1
    raw = images(state, 1, seed=9)[0]
    score_one = 2**16  # ufixed<17, 1>: 16 fraction bits

    _, ref, queues = compare(program, raw, task=0)
    (queue,) = queues.values()
    # all four logits tie: top-2 is experts 0 and 1 for every token, in token order
    assert queue["counts"] == [tokens, tokens, 0, 0]
    assert queue["ids"][:2] == [list(range(tokens))] * 2
    scores = {s for expert in queue["scores"] for s in expert}
    assert len(scores) == 1
    # each score is ~1/E (softmax over all experts), not 1/k (renormalised over the top-k)
    (score,) = scores
    assert abs(score - score_one / 4) <= 2
    assert ref.coverage.get("gate.tie", 0) > 0

    _, _, queues = compare(program, raw, task=1)
    (queue,) = queues.values()
    counts, ids, scores = queue["counts"], queue["ids"], queue["scores"]
    assert counts[3] == 0, "expert 3 ties with 1 and 2 and must always lose"
    assert set(ids[2]) <= set(ids[1]), "expert 2 is only chosen together with expert 1"
    assert sum(counts) == 2 * tokens
    for token in range(tokens):
        chosen = [(e, scores[e][ids[e].index(token)]) for e in range(4) if token in ids[e]]
        assert len(chosen) == 2
        if [e for e, _ in chosen] == [1, 2]:
            assert chosen[0][1] == chosen[1][1]  # tied logits, tied scores
        assert sum(s for _, s in chosen) < score_one  # not renormalised over the top-2


# ---- every rounding and overflow mode


def test_all_rounding_and_overflow_modes_through_add():
    """ADD layers (one per output format) over inputs with every residue and sign; the
    compiler itself only uses RND/SAT, so the other modes are exercised by hand here."""
    b = Builder()
    cols = 64
    x_fmt, res_fmt = Fixed(16, 8), Fixed(16, 9)  # F = 8 and 7: sum = x + 2x = 3x at F = 8
    x = b.tensor(2, cols, x_fmt)
    last = None
    formats = []
    for rounding in ROUNDING:
        for overflow in OVERFLOW:
            formats.append(Fixed(8, 2, True, rounding, overflow))  # shift 2: ties at 2 mod 4
            formats.append(Fixed(6, 0, False, rounding, overflow))
        formats.append(Fixed(20, 9, True, rounding, "SAT_SYM"))  # shift -3: exact left shift
        formats.append(Fixed(1, 1, True, rounding, "SAT_SYM"))  # 1-bit signed SAT_SYM
    for index, fmt in enumerate(formats):
        out = b.tensor(2, cols, fmt)
        b.layer(
            Op.ADD,
            f"add{index}",
            src=x.offset,
            src_stride=x.stride,
            rows=2,
            cols=cols,
            res=x.offset,
            res_stride=x.stride,
            dst=out.offset,
            dst_stride=out.stride,
            x_fmt=pack_fmt(x_fmt),
            res_fmt=pack_fmt(res_fmt),
            out_fmt=pack_fmt(fmt),
        )
        last = out
    program = b.program(x, last)
    values = np.concatenate([np.arange(-32, 32), np.arange(-cols // 2, cols // 2) * 997])
    _, ref, _ = compare(program, values.reshape(2, cols))
    assert ref.coverage["shift.tie"] > 0 and ref.coverage["overflow.wrap"] > 0


def test_primitives_match_the_numerics_module():
    """The reference's shift_round/apply_overflow (from the ap_fixed definitions) against
    codesign.numerics.fixed's on a dense grid, and the mode codes."""
    assert ROUNDING == ROUNDING_NAMES and OVERFLOW == OVERFLOW_NAMES
    raw = np.arange(-700, 700, dtype=np.int64)
    for mode in ROUNDING:
        for s in range(-3, 8):
            want = [ref_shift_round(int(r), s, mode) for r in raw]
            assert_equal_raw(
                f"shift_round {mode} {s}", fixed_module.shift_round(raw, s, mode), want
            )
    raw = np.arange(-160, 160, dtype=np.int64)
    for mode in OVERFLOW:
        for width in range(1, 8):
            for signed in (True, False):
                want = [ref_apply_overflow(int(r), width, signed, mode) for r in raw]
                got = fixed_module.apply_overflow(raw, width, signed, mode)
                assert_equal_raw(f"apply_overflow {mode} {width} {signed}", got, want)
    # format words
    for fmt in (
        Fixed(17, 1, False),
        Fixed(24, -3, True, "RND_CONV", "SAT_SYM"),
        Fixed(8, 12, True, "TRN_ZERO", "WRAP"),
        Fixed(32, 20, True, "TRN", "SAT_ZERO"),
    ):
        assert decode_fmt(pack_fmt(fmt)) == Fmt(
            fmt.width, fmt.frac_bits, fmt.signed, fmt.rounding, fmt.overflow
        )


def test_table_evaluators_match_the_numerics_module():
    """The reference's interpolation against codesign.numerics.tables' on the default ROMs:
    exp and GELU on fine and coarse grids and past the table, recip/rsqrt over many octaves."""
    built = build_tables()
    roms = {
        name: Rom(
            name,
            [int(v) for v in t.values],
            t.fmt.frac_bits,
            t.index_bits,
            t.guard_bits,
            round(math.log2(t.domain)),
        )
        for name, t in built.items()
    }
    tables = Tables(roms, Counter())
    rng = np.random.default_rng(0)
    for frac in (0, 3, 5, 6, 9, 16, 27):
        d = -np.unique(np.concatenate([np.arange(0, 300), rng.integers(0, 2**frac * 20, 300)]))
        want = [tables.exp_neg(int(v), frac) for v in d]
        assert_equal_raw(f"exp frac {frac}", tables_module.exp_neg(d, frac, built["exp"]), want)
        h = np.concatenate([d, -d, rng.integers(-(2**frac) * 12, 2**frac * 12, 300)])
        for out in (Fixed(24, 8), Fixed(10, 4, rounding="TRN", overflow="WRAP")):
            want = [
                tables.gelu(
                    int(v), frac, Fmt(out.width, out.frac_bits, True, out.rounding, out.overflow)
                )
                for v in h
            ]
            got = tables_module.gelu(h, frac, built["gelu_delta"], out)
            assert_equal_raw(f"gelu frac {frac} {out}", got, want)
    values = np.unique(np.concatenate([np.arange(1, 5000), rng.integers(1, 2**50, 3000)]))
    for frac in (0, 16, 30):
        mant, exp = tables_module.recip(values, frac, built["recip"])
        want = [tables.recip(int(v), frac) for v in values]
        assert_equal_raw(f"recip mant {frac}", mant, [m for m, _ in want])
        assert_equal_raw(f"recip exp {frac}", exp, [e for _, e in want])
        mant, half = tables_module.rsqrt(values, frac, built["rsqrt"])
        want = [tables.rsqrt(int(v), frac) for v in values]
        assert_equal_raw(f"rsqrt mant {frac}", mant, [m for m, _ in want])
        assert_equal_raw(f"rsqrt exp {frac}", half, [h for _, h in want])
    for key in (
        "exp.beyond",
        "exp.coarse",
        "gelu_delta.beyond",
        "gelu_delta.coarse",
        "recip.truncate",
        "rsqrt.truncate",
        "rsqrt.odd_exponent",
    ):
        assert tables.cov[key] > 0, key


# --------------------------------------------------- 3. no float shortcuts in LINEAR


X_FMT = Fixed(27, 7)  # F = 20, raw up to 2**26 - 1 (a DSP48E2 A port)
W_FMT = Fixed(18, 2)  # F = 16, raw up to 2**17 - 1 (a DSP48E2 B port)
B_FMT = Fixed(29, 20)  # F = 9: the 29-bit bias aligns to F_acc = 36 with a 27-bit shift
OUT_FMT = Fixed(32, -4)  # F = 36 = F_acc: the output *is* the accumulator, no rounding


def exact_linear_program(x: np.ndarray, w: np.ndarray, bias: list[int]) -> Program:
    b = Builder(tile_in=32, tile_out=2, bus_bits=128)
    rows, in_dim = x.shape
    out_dim = w.shape[0]
    src = b.tensor(rows, in_dim, X_FMT)
    dst = b.tensor(rows, out_dim, OUT_FMT)
    b.layer(
        Op.LINEAR,
        "big",
        src=src.offset,
        src_stride=src.stride,
        rows=rows,
        in_dim=in_dim,
        out_dim=out_dim,
        dst=dst.offset,
        dst_stride=dst.stride,
        x_fmt=pack_fmt(X_FMT),
        weight=b.weights(w, 4),
        w_fmt=pack_fmt(W_FMT),
        w_bytes=4,
        bias=b.int32(pack_bias_words(np.array(bias))),
        b_fmt=pack_fmt(B_FMT),
        post=int(Post.NONE),
        pre_fmt=0,
        res=NONE,
        res_stride=0,
        res_fmt=0,
        out_fmt=pack_fmt(OUT_FMT),
        **({"blocks": NONE} if "blocks" in LAYER_FIELDS[Op.LINEAR] else {}),
        **({"nnz": 0} if "nnz" in LAYER_FIELDS[Op.LINEAR] else {}),
    )
    return b.program(src, dst)


def big_operands(in_dim: int, seed: int = 0):
    """Activations near +2**26 and weights near +2**17: the sum of 2048 products is ~2**54,
    and made odd, so float64 cannot represent it. Row 1 is row 0 negated."""
    rng = np.random.default_rng(seed)
    x0 = rng.integers(2**26 - 2**16, 2**26, in_dim)
    w = rng.integers(2**17 - 2**10, 2**17, (2, in_dim)) | 1  # odd weights
    for o in range(2):  # make each exact sum odd by moving x0[o]'s parity
        if sum(int(a) * int(c) for a, c in zip(x0, w[o], strict=True)) % 2 == 0:
            x0[o] -= 1
    x = np.stack([x0, -x0])
    sums = [
        [sum(int(a) * int(c) for a, c in zip(row, w_row, strict=True)) for w_row in w] for row in x
    ]
    return x, w, sums


@contextmanager
def matmul_bounds():
    """Record the bound max|a| * max|b| * k of every golden matmul_exact call (the golden
    executor multiplies in float64 only when it is below 2**53)."""
    from codesign.ops import linear

    bounds: list[int] = []
    real = linear.matmul_exact

    def spy(a, b):
        bounds.append(int(np.abs(a).max()) * int(np.abs(b).max()) * a.shape[1])
        return real(a, b)

    with pytest.MonkeyPatch.context() as mp:  # LINEAR's semantics (codesign/ops/linear.py)
        mp.setattr(linear, "matmul_exact", spy)
        yield bounds


def test_linear_exact_beyond_float64():
    """sum x*w is odd and > 2**53, the bias cancels its top bits, and the output keeps
    every accumulator bit: any float64 matmul would change the result."""
    in_dim = 2048
    x, w, sums = big_operands(in_dim)
    assert all(2**53 < s < 2**55 and s % 2 == 1 for s in sums[0])
    # a float64 product really cannot hold these sums
    floats = np.rint(x.astype(np.float64) @ w.T.astype(np.float64))
    assert all(int(floats[0, o]) != sums[0][o] for o in range(2))
    bias = [-(s >> 27) for s in sums[0]]  # 29 bits: the sums are < 2**55
    program = exact_linear_program(x, w, bias)

    with matmul_bounds() as bounds:
        got, ref, _ = compare(program, x)
    assert bounds and min(bounds) >= exact_module._EXACT_FLOAT  # the int64 path ran
    want = [s - ((s >> 27) << 27) for s in sums[0]]  # = s mod 2**27, odd
    assert ref.output[0] == want
    assert np.array_equal(got.output[0], want)
    assert list(got.output[1]) == [OUT_FMT.raw_min] * 2  # -2**55: saturates

    # and a golden executor that trusted float64 here would be caught
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(exact_module, "_EXACT_FLOAT", float("inf"))
        shortcut = GoldenExecutor(program).run(x, 0)
    assert not np.array_equal(shortcut.output, got.output)


def test_linear_at_the_float64_boundary():
    """in_dim 1024 at the extreme raw values: bound = 2**53 exactly (int64 path) and one
    raw step smaller (float path, every partial sum still exact); both agree."""
    in_dim = 1024
    paths = set()
    for x_val, w_val in ((-(2**26), -(2**17)), (2**26 - 1, 2**17 - 1), (-(2**26), 2**17 - 1)):
        x = np.array([[x_val] * in_dim, [x_val] * (in_dim - 1) + [1]], np.int64)
        w = np.array([[w_val] * in_dim, [w_val, -w_val] * (in_dim // 2)], np.int64)
        s = x_val * w_val * in_dim
        program = exact_linear_program(x, w, [-(s >> 27), 0])
        with matmul_bounds() as bounds:
            _, ref, _ = compare(program, x)
        paths.add(bounds[0] >= exact_module._EXACT_FLOAT)
        assert ref.output[0][0] == s - ((s >> 27) << 27)
        assert abs(s) <= 2**53
    assert paths == {True, False}  # both the int64 and the float64 path ran
