"""cds_eng_moe (MOE_GATE and MOE_EXPERTS through cds_ucu_job) against the golden executor.

Every case is a two-layer Program (a MOE_GATE, then the MOE_EXPERTS that reads its queue,
laid out like codesign/compiler.py lays out MoE: stacked expert weights and biases at a
fixed stride, one queue, one scratch matrix) whose arena holds junk everywhere except the
case's tensors. The golden executor runs the layers on its copy of the arena, the RTL
(cds_eng_moe_tb: engine + job) on another served by rtl_tests/wordmem.py with random read
stalls, latency and write backpressure; the arenas must be equal word for word after the
gate (queue) and after the experts (scratch, dst; writes outside show up too). Cases:
top-1 and top-2, an expert nobody chose, every token on one expert, more experts than
UCU output lanes (the gate output spans tiles), residual present and absent, a single
token, dims that are not multiples of the tile, and an experts layer run on a queue
written by hand (empty experts between full ones). ``test_eng_moe_tiny`` runs m3vit-tiny's
MoE shapes under the end-to-end ArchConfig (8x8 tile, experts = max_experts = 4, tokens =
max_tokens = 16): counters that must reach a power-of-two maximum. Cycles with ideal ports
go to the cycle table next to codesign.estimate.gate_cycles / experts_cycles.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from conftest import ARCH_TINY, record_cycles
from test_attention import arch_name, place_tables

from codesign import estimate
from codesign.contract import pack_bias_words
from codesign.golden import GoldenExecutor
from codesign.numerics.fixed import Fixed
from codesign.program import (
    NONE,
    Layer,
    Op,
    Program,
    TensorRef,
    pack_fmt,
    pack_tiles,
    padded,
)
from codesign.rtl import sim
from codesign.rtl.render import rtl_params, unit_sources

TOP = "cds_eng_moe_tb"
FIELD_WORDS = 46
MAX_EXPERTS = 6  # more experts than the test ArchConfigs' 4 UCU output lanes
W_BYTES = 2


def moe_arch(arch):
    """The conftest ArchConfig with room for more experts than output lanes."""
    return dataclasses.replace(arch, max_experts=MAX_EXPERTS)


def formats(rng, narrow: bool = False) -> dict:
    """The layers' formats; ``narrow``: the multiplied activations (x, pre, hidden, y) at
    8 bits, residual and output at 16 (w8a8r16)."""
    rounding = ("TRN", "RND", "RND_CONV", "RND_ZERO")
    fmts = {
        "x": Fixed(16, 8),
        "gate": Fixed(8, 2),
        "logit": Fixed(16, 8, True, str(rng.choice(rounding)), "SAT"),
        "score": Fixed(17, 1, False, str(rng.choice(rounding)), "SAT"),
        "fc1": Fixed(8, 1),
        "fc1_bias": Fixed(16, 4),
        "pre": Fixed(16, 6, True, str(rng.choice(rounding)), "SAT"),
        "hidden": Fixed(16, 8),
        "fc2": Fixed(8, 1),
        "fc2_bias": Fixed(16, 4),
        "y": Fixed(16, 8, True, str(rng.choice(rounding)), str(rng.choice(["SAT", "WRAP"]))),
        "res": Fixed(16, 8),
        "out": Fixed(14, 6, True, str(rng.choice(rounding)), str(rng.choice(["SAT", "WRAP"]))),
    }
    if narrow:
        fmts["x"], fmts["hidden"] = Fixed(8, 3), Fixed(8, 3)
        fmts["pre"] = Fixed(8, 3, True, str(rng.choice(rounding)), "SAT")
        fmts["y"] = Fixed(8, 3, True, str(rng.choice(rounding)), "SAT")
        fmts["out"] = Fixed(16, 5, True, str(rng.choice(rounding)), "SAT")
    return fmts


def words_of(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob + b"\0" * (-len(blob) % 4), "<u4").astype(np.int64)


def build_case(rng, arch, spec: dict, precision=None) -> dict:
    """Program, arena (junk + tensors), descriptors and the golden arenas of one case."""
    tokens, dim, hidden = spec["tokens"], spec["dim"], spec["hidden"]
    experts, top_k = spec["experts"], spec["top_k"]
    params = rtl_params(arch, precision)
    fmts = formats(rng, narrow=params["mul_x_bits"] < params["x_bits"])
    w_bytes = params["w_container"] // 8
    bus = arch.bus_bytes
    ti, to = arch.tile_in, arch.tile_out

    # ---- program data: tables, gate weights, stacked expert weights and biases
    base = 512 + 2 * 256
    data = b""

    def place(blob: bytes) -> int:
        nonlocal data
        offset = base + len(data)
        data += blob + b"\0" * (-len(blob) % bus)
        return offset

    refs = place_tables(arch, place)
    x = fmts["x"].quantize(rng.normal(0.0, 1.0, (tokens, dim)))
    gate = rng.normal(0.0, 0.4, (experts, dim))
    if spec["route"] == "skew":  # expert E-1 never wins: a constant feature favours the rest
        x[:, 0] = fmts["x"].quantize(np.full(tokens, 2.0))
        gate[:, 0] = np.linspace(1.5, -1.5, experts)
        gate[-1, 0] = -1.9
    elif spec["route"] == "one":  # top-1, every token on expert 1
        x[:, 0] = fmts["x"].quantize(np.full(tokens, 2.0))
        gate[:, 0] = -1.9
        gate[1, 0] = 1.9
        gate[:, 1:] *= 0.05
    gate_raw = fmts["gate"].quantize(gate)
    gate_at = place(pack_tiles(gate_raw, ti, to, w_bytes, bus))

    def stacked(raws: list[np.ndarray], weights: bool) -> tuple[int, int]:
        blobs = [
            pack_tiles(r, ti, to, w_bytes, bus)
            if weights  # bias words carry random per-column weight shifts (0..2)
            else pack_bias_words(r, rng.integers(0, 3, r.size)).astype("<i4").tobytes()
            for r in raws
        ]
        offsets = [place(b) for b in blobs]
        return offsets[0], (offsets[1] - offsets[0]) if experts > 1 else 0

    fc1 = [fmts["fc1"].quantize(rng.normal(0, 0.4, (hidden, dim))) for _ in range(experts)]
    fc1_bias = [fmts["fc1_bias"].quantize(rng.normal(0, 0.5, hidden)) for _ in range(experts)]
    fc2 = [fmts["fc2"].quantize(rng.normal(0, 0.4, (dim, hidden))) for _ in range(experts)]
    fc2_bias = [fmts["fc2_bias"].quantize(rng.normal(0, 0.5, dim)) for _ in range(experts)]
    fc1_at, fc1_stride = stacked(fc1, True)
    b1_at, b1_stride = stacked(fc1_bias, False)
    fc2_at, fc2_stride = stacked(fc2, True)
    b2_at, b2_stride = stacked(fc2_bias, False)

    # ---- arena layout: x, residual, dst, queue, scratch; rows padded by whole beats
    cursor = bus * int(rng.integers(0, 3))

    def alloc(rows: int, cols: int, pad: int) -> tuple[int, int]:
        nonlocal cursor
        stride = padded(4 * cols, bus) + pad * bus
        offset = cursor
        cursor += rows * stride + bus
        return offset, stride

    src, src_stride = alloc(tokens, dim, int(rng.integers(0, 2)))
    res, res_stride = alloc(tokens, dim, 1) if spec["residual"] else (NONE, 0)
    dst, dst_stride = alloc(tokens, dim, int(rng.integers(0, 2)))
    queue = cursor
    cursor += padded(4 * experts + 8 * experts * tokens, bus) + bus
    scratch, scratch_stride = alloc(tokens, hidden, int(rng.integers(0, 2)))
    arena_bytes = cursor
    arena = rng.integers(-(2**31), 2**31, arena_bytes // 4, dtype=np.int64)

    def put(offset: int, stride: int, values: np.ndarray) -> None:
        rows, cols = values.shape
        view = arena[offset // 4 : offset // 4 + rows * stride // 4].reshape(rows, stride // 4)
        view[:, :cols] = values

    put(src, src_stride, x)
    if spec["residual"]:
        put(res, res_stride, fmts["res"].quantize(rng.normal(0, 2.0, (tokens, dim))))
    if spec.get("queue"):  # an experts layer on a hand-written queue
        counts = np.array(spec["queue"], np.int64)
        ids = np.zeros((experts, tokens), np.int64)
        scores = np.zeros((experts, tokens), np.int64)
        for expert, count in enumerate(counts):
            ids[expert, :count] = np.sort(rng.choice(tokens, count, replace=False))
            scores[expert, :count] = rng.integers(0, 1 << 16, count)
        arena[queue // 4 : queue // 4 + experts] = counts
        arena[queue // 4 + experts : queue // 4 + experts * (1 + tokens)] = ids.ravel()
        arena[queue // 4 + experts * (1 + tokens) : queue // 4 + experts * (1 + 2 * tokens)] = (
            scores.ravel()
        )

    gate_layer = Layer(
        Op.MOE_GATE,
        "moe.gate0",
        {
            "src": src,
            "src_stride": src_stride,
            "tokens": tokens,
            "dim": dim,
            "experts": experts,
            "top_k": top_k,
            "weight": gate_at,
            "w_fmt": pack_fmt(fmts["gate"]),
            "w_bytes": w_bytes,
            "x_fmt": pack_fmt(fmts["x"]),
            "logit_fmt": pack_fmt(fmts["logit"]),
            "score_fmt": pack_fmt(fmts["score"]),
            "queue": queue,
        },
    )
    experts_layer = Layer(
        Op.MOE_EXPERTS,
        "moe.experts",
        {
            "src": src,
            "src_stride": src_stride,
            "tokens": tokens,
            "dim": dim,
            "hidden": hidden,
            "experts": experts,
            "queue": queue,
            "res": res,
            "res_stride": res_stride,
            "dst": dst,
            "dst_stride": dst_stride,
            "x_fmt": pack_fmt(fmts["x"]),
            "res_fmt": pack_fmt(fmts["res"]) if spec["residual"] else 0,
            "out_fmt": pack_fmt(fmts["out"]),
            "fc1": fc1_at,
            "fc1_stride": fc1_stride,
            "fc1_fmt": pack_fmt(fmts["fc1"]),
            "fc1_bias": b1_at,
            "fc1_bias_stride": b1_stride,
            "fc1_bias_fmt": pack_fmt(fmts["fc1_bias"]),
            "pre_fmt": pack_fmt(fmts["pre"]),
            "hidden_fmt": pack_fmt(fmts["hidden"]),
            "fc2": fc2_at,
            "fc2_stride": fc2_stride,
            "fc2_fmt": pack_fmt(fmts["fc2"]),
            "fc2_bias": b2_at,
            "fc2_bias_stride": b2_stride,
            "fc2_bias_fmt": pack_fmt(fmts["fc2_bias"]),
            "y_fmt": pack_fmt(fmts["y"]),
            "score_fmt": pack_fmt(fmts["score"]),
            "w_bytes": w_bytes,
            "scratch": scratch,
            "scratch_stride": scratch_stride,
        },
    )
    ref = TensorRef(src, tokens, dim, src_stride, fmts["x"])
    program = Program(
        model="rtl-moe",
        bus_bits=arch.bus_bits,
        tile_in=ti,
        tile_out=to,
        attn_parallel=arch.attn_parallel,
        layers=[gate_layer, experts_layer],
        data=data,
        arena_bytes=arena_bytes,
        input=ref,
        outputs=[TensorRef(dst, tokens, dim, dst_stride, fmts["out"])],
        tables=refs,
    )
    program_bytes = program.to_bytes()
    assert program.data_offset == base

    ex = GoldenExecutor(program)
    ex.arena = arena.copy()
    run_gate = not spec.get("queue")
    if run_gate:
        ex.moe_gate(gate_layer, 0)
    gate_arena = ex.arena.copy()
    ex.moe_experts(experts_layer, 0)
    # the layers must have written something the RTL has to reproduce
    qwords = slice(queue // 4, queue // 4 + experts * (1 + 2 * tokens))
    assert not run_gate or np.any(gate_arena[qwords] != arena[qwords])
    assert np.any(ex.arena[dst // 4 : dst // 4 + dim] != arena[dst // 4 : dst // 4 + dim])
    counts = gate_arena[queue // 4 : queue // 4 + experts]
    return {
        "spec": spec,
        "fmts": fmts,
        "program": words_of(program_bytes),
        "arena": arena,
        "gate_desc": desc_words(gate_layer),
        "experts_desc": desc_words(experts_layer),
        "run_gate": run_gate,
        "golden_gate": gate_arena,
        "golden": ex.arena.copy(),
        "counts": [int(c) for c in counts],
    }


def desc_words(layer: Layer) -> np.ndarray:
    return np.array(layer.words()[2 : 2 + FIELD_WORDS], np.int64)


SPECS = (
    # tokens, dim, hidden, experts, top_k, residual, route
    dict(tokens=9, dim=12, hidden=20, experts=6, top_k=1, residual=True, route="random"),
    dict(tokens=13, dim=10, hidden=18, experts=5, top_k=2, residual=False, route="skew"),
    dict(tokens=7, dim=9, hidden=13, experts=3, top_k=1, residual=True, route="one"),
    dict(tokens=1, dim=5, hidden=7, experts=2, top_k=2, residual=True, route="random"),
    dict(
        tokens=11,
        dim=8,
        hidden=12,
        experts=4,
        top_k=2,
        residual=False,
        route="random",
        queue=[0, 11, 0, 6],
    ),
    dict(tokens=6, dim=17, hidden=9, experts=6, top_k=6, residual=True, route="random"),
)
# cds_eng_moe's state names in enum order (for the per-phase cycle split of timed runs)
STATES = ("idle", "g_job", "g_job_wait", "g_feed", "g_route", "g_write", "x_cnt_cmd",
          "x_cnt_data", "x_rows", "x_next", "x_fc1", "x_fc1_wait", "x_land", "x_fc2",
          "x_fc2_wait", "x_fin")  # fmt: skip
TIMED = dict(tokens=48, dim=32, hidden=64, experts=6, top_k=2, residual=True, route="random")


TINY_ARCH = ARCH_TINY  # the m3vit-tiny end-to-end ArchConfig (4 experts = max_experts)
TINY_SPECS = (
    # m3vit-tiny's MoE block: 9 tokens, dim 64, hidden 128, 4 experts, top-2
    dict(tokens=9, dim=64, hidden=128, experts=4, top_k=2, residual=True, route="random"),
    # every buffer full: max_tokens rows on one expert, the others empty
    dict(tokens=16, dim=64, hidden=24, experts=4, top_k=1, residual=False, route="one"),
)


def run_cases(
    arch, cases: list[dict], timed: list[int], seed: int, sim_dir, precision=None
) -> dict:
    """Run the cases on cds_eng_moe_tb; the simulation's outputs, asserts on the arenas."""

    def flat(key):
        offsets = np.cumsum([0] + [len(c[key]) for c in cases])
        return np.concatenate([c[key] for c in cases]), offsets

    arena, a_off = flat("arena")
    program, p_off = flat("program")
    build = sim.build(unit_sources(TOP, arch, precision), TOP)
    out = sim.run(
        build,
        "cocotb_eng_moe",
        inputs={
            "wpb": arch.bus_bits // 32,
            "gate_desc": np.stack([c["gate_desc"] for c in cases]),
            "experts_desc": np.stack([c["experts_desc"] for c in cases]),
            "run_gate": np.array([c["run_gate"] for c in cases], np.int64),
            "timed": np.array(timed, np.int64),
            "arena": arena,
            "arena_offset": a_off,
            "program": program,
            "program_offset": p_off,
            "stall": 0.3,
            "backpressure": 0.3,
            "seed": seed,
        },
        test_dir=sim_dir,
    )
    failures = []
    for index, case in enumerate(cases):
        lo, hi = a_off[index], a_off[index + 1]
        got_gate = out["gate_arena"][lo:hi].astype(np.int32)
        got = out["arena"][lo:hi].astype(np.int32)
        for what, mine, gold in (
            ("gate", got_gate, case["golden_gate"]),
            ("experts", got, case["golden"]),
        ):
            bad = np.flatnonzero(mine != gold.astype(np.int32))
            if bad.size:
                failures.append(
                    f"case {index} {case['spec']} after {what}: {bad.size} words differ, "
                    f"first at word {bad[0]}: rtl {mine[bad[0]]} golden {gold[bad[0]]}"
                )
    assert not failures, "\n".join(failures)
    return out


def test_eng_moe(arch, tmp_path):
    """Gate and experts layers bit-exact with the golden arena, plus timed runs."""
    arch = moe_arch(arch)
    name = arch_name(dataclasses.replace(arch, max_experts=4))
    rng = np.random.default_rng(7 if name == "archA" else 8)
    cases = [build_case(rng, arch, spec) for spec in SPECS]
    cases.append(build_case(rng, arch, TIMED))
    timed = [0] * len(SPECS) + [1]
    out = run_cases(arch, cases, timed, 11, tmp_path / "sim")

    for index, case in enumerate(cases):
        if not timed[index]:
            continue
        spec = case["spec"]
        common = dict(tile_in=arch.tile_in, tile_out=arch.tile_out, weight_bytes=W_BYTES,
                      bus_bytes=arch.bus_bytes)  # fmt: skip
        shape = (
            f"{spec['tokens']}x{spec['dim']}x{spec['hidden']} E{spec['experts']} k{spec['top_k']}"
        )
        gate_est = estimate.gate_cycles(
            spec["tokens"], spec["dim"], spec["experts"], spec["top_k"], **common
        )
        experts_est = estimate.experts_cycles(
            case["counts"], spec["tokens"], spec["dim"], spec["hidden"], **common
        )
        split = {
            s: int(c) for s, c in zip(STATES, out["phases"][index][: len(STATES)], strict=True) if c
        }
        record_cycles("eng_moe", f"{name} gate {shape}", out["gate_cycles"][index], gate_est)
        record_cycles("eng_moe", f"{name} phases {shape}", sum(split.values()), None, **split)
        record_cycles(
            "eng_moe", f"{name} experts {shape}", out["experts_cycles"][index], experts_est,
            counts="/".join(map(str, case["counts"])),
        )  # fmt: skip
        # measured 1.015 / 1.026 (gate) and 0.997 / 1.001 (experts) on archA / archB
        assert 0.9 <= out["gate_cycles"][index] / gate_est <= 1.1, (shape, gate_est)
        assert 0.9 <= out["experts_cycles"][index] / experts_est <= 1.1, (shape, experts_est)


def test_eng_moe_tiny(tmp_path):
    """The m3vit-tiny MoE shapes under the end-to-end test's ArchConfig (To = 8, 16 tokens)."""
    rng = np.random.default_rng(9)
    cases = [build_case(rng, TINY_ARCH, spec) for spec in TINY_SPECS]
    run_cases(TINY_ARCH, cases, [0] * len(cases), 12, tmp_path / "sim")


def test_eng_moe_tiny_with_a_wider_residual_stream(tmp_path):
    """w8a8r16: x, pre-activations, hidden and expert outputs at 8 bits into 8-bit
    multipliers packed two MACs each, residual and output at 16, int8 weight containers
    (saturated weights: -128 beside a negative weight, the packing's hardest pair):
    bit-exact."""
    rng = np.random.default_rng(10)
    cases = [build_case(rng, TINY_ARCH, spec, "w8a8r16") for spec in TINY_SPECS]
    assert cases[0]["fmts"]["x"].width == 8 and cases[0]["fmts"]["res"].width == 16
    run_cases(TINY_ARCH, cases, [0] * len(cases), 12, tmp_path / "sim", "w8a8r16")


def test_eng_moe_buffers_without_power_of_two_padding(tmp_path):
    """12 tokens x 9 output tiles: the accumulator RAM is 108 rows deep, addressed
    token x tiles + tile (not {token, tile} in 16 x 16), read through its one port by the
    fc2 side stream and the final pass."""
    arch = TINY_ARCH.with_(max_tokens=12, max_dim=72)
    specs = (
        dict(tokens=12, dim=72, hidden=24, experts=4, top_k=2, residual=True, route="random"),
        dict(tokens=12, dim=72, hidden=16, experts=4, top_k=1, residual=False, route="one"),
    )
    rng = np.random.default_rng(13)
    cases = [build_case(rng, arch, spec) for spec in specs]
    run_cases(arch, cases, [0] * len(cases), 14, tmp_path / "sim")
