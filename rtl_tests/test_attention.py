"""attention_core (reordered attention, single-pass softmax) against the golden executor.

Every case is one ATTENTION layer run through ``GoldenExecutor.attention`` (a one-layer
Program with the ArchConfig's tables) and through the RTL; the output rows and the
per-query softmax statistics (m, s, 1/s) must agree bit for bit. Cases mix random
shapes (tokens, heads, head_dim, run-time slots), random formats with every rounding and
overflow mode, and the edge cases: all-negative scores, equal scores (ties), saturated
scores, a saturating running sum, a single token, N < P, N = P and N mod P != 0. The
float output is checked against torch within the bound of docs/rtl-attention-ln-moe.md,
and busy cycles against ``codesign.estimate.attention_cycles``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from conftest import ARCHS, record_cycles

from codesign import estimate
from codesign.arch import ArchConfig
from codesign.arch.config import default_arch
from codesign.golden import GoldenExecutor, matmul_exact
from codesign.numerics.fixed import OVERFLOW, ROUNDING, Fixed
from codesign.numerics.tables import build_tables, recip
from codesign.ops import attention as attention_op
from codesign.program import TABLE_NAMES, Layer, Op, Program, TableRef, TensorRef, pack_fmt
from codesign.rtl import sim
from codesign.rtl.render import rtl_params, unit_sources

TOP = "attention_core"
LINT_BOARDS = ("zcu102", "ultra96v2", "pynq-z2")  # the three default ArchConfig shapes
# M3ViT's layer sizes (129 tokens, 3 heads, dim 192, 16 experts) at the ZCU102's P = 8 and
# Ti = 32; heads get 32 lanes (max_dim / max_heads) to keep the Verilator model small
M3VIT_ARCH = ArchConfig(attn_parallel=8, max_tokens=256, max_dim=192, max_heads=6, max_experts=16)
ROWS_PER_ARCH = 1000  # (query, head) rows checked bit for bit per ArchConfig


# ------------------------------------------------------------------ golden reference


@functools.lru_cache(maxsize=8)
def tables_for(arch) -> dict:
    """The ArchConfig's tables, built once (their error measurement is cached on them)."""
    return build_tables(**arch.table_params())


def arch_name(arch) -> str:
    return next((name for name, known in ARCHS.items() if known == arch), str(arch))


def place_tables(arch, place) -> dict[str, TableRef]:
    """The ArchConfig's four tables placed with `place(blob) -> offset`, as header refs."""
    refs = {}
    for name in TABLE_NAMES:
        table = tables_for(arch)[name]
        refs[name] = TableRef(
            name,
            place(table.values.astype("<i4").tobytes()),
            len(table.values),
            table.fmt,
            table.index_bits,
            table.guard_bits,
            round(math.log2(table.domain)),
        )
    return refs


def one_layer_program(
    arch, layer: Layer, arena_bytes: int, rows: int, cols: int, params: dict | None = None
) -> Program:
    """A Program with the ArchConfig's tables and one layer.

    ``params`` maps descriptor fields to int32 vectors (or packed bytes) to place in the
    program data; the field is set to the placed address (gamma, beta, gate weights).
    """
    data = b""
    base = 512 + 256  # header + one descriptor

    def place(blob: bytes) -> int:
        nonlocal data
        offset = base + len(data)
        data += blob + b"\0" * (-len(blob) % arch.bus_bytes)
        return offset

    refs = place_tables(arch, place)
    for field, values in (params or {}).items():
        blob = values if isinstance(values, bytes) else np.asarray(values).astype("<i4").tobytes()
        layer.fields[field] = place(blob)
    fmt = Fixed(32, 32)
    return Program(
        model="rtl-unit",
        bus_bits=arch.bus_bits,
        tile_in=arch.tile_in,
        tile_out=arch.tile_out,
        attn_parallel=arch.attn_parallel,
        layers=[layer],
        data=data,
        arena_bytes=arena_bytes,
        input=TensorRef(0, rows, cols, 4 * cols, fmt),
        outputs=[TensorRef(0, rows, cols, 4 * cols, fmt)],
        tables=refs,
    )


def golden_attention(arch, case: dict) -> dict:
    """Output rows and softmax statistics of GoldenExecutor.attention for one case."""
    tokens, heads, head_dim = case["tokens"], case["heads"], case["head_dim"]
    dim = heads * head_dim
    fmts = case["fmts"]
    src_stride, dst_stride = 4 * 3 * dim, 4 * dim
    dst = tokens * src_stride
    layer = Layer(
        Op.ATTENTION,
        "attn",
        {
            "src": 0,
            "src_stride": src_stride,
            "tokens": tokens,
            "dim": dim,
            "heads": heads,
            "dst": dst,
            "dst_stride": dst_stride,
            **{f"{k}_fmt": pack_fmt(fmts[k]) for k in ("qkv", "score", "sum", "prob", "out")},
            "parallel": case["parallel"],
        },
    )
    program = one_layer_program(arch, layer, dst + tokens * dst_stride, tokens, 3 * dim)
    ex = GoldenExecutor(program)
    ex.arena = np.zeros(program.arena_bytes // 4, np.int64)
    ex.write(0, src_stride, case["qkv"])
    ex._sat = 0
    out = ex.attention(layer, 0)
    clipped = ex._sat  # scores and outputs the overflow mode had to change
    # the statistics the executor keeps internally, recomputed with its own methods
    split = case["qkv"].reshape(tokens, 3, heads, head_dim).transpose(1, 2, 0, 3)
    scores = np.stack([matmul_exact(split[0, h], split[1, h]) for h in range(heads)])
    scores = ex.quant(scores, 2 * fmts["qkv"].frac_bits, fmts["score"])
    m, s = attention_op._softmax_stats(
        ex, scores, fmts["score"].frac_bits, case["parallel"], fmts["sum"]
    )
    mant, expo = recip(s, ex.tables["exp"].fmt.frac_bits, ex.tables["recip"])
    stats = np.stack([m, s, mant, expo], axis=-1).reshape(heads * tokens, 4)
    return {"out": out, "stats": stats, "clipped": clipped}


# ------------------------------------------------------------------ cases


def _bits_for(value: float) -> int:
    return max(1, math.floor(math.log2(max(value, 1e-30))) + 2)


def make_case(rng, arch, lanes: int, kind: str) -> dict:
    """One random attention layer; `kind` picks an edge case or 'random'."""
    x_bits = rtl_params(arch)["x_bits"]
    exp_frac = tables_for(arch)["exp"].fmt.frac_bits
    slots = arch.attn_parallel
    tokens = int(rng.integers(2, 3 * slots + 6))
    if kind == "single":
        tokens = 1
    elif kind == "n_eq_p":
        tokens = slots
    elif kind == "n_lt_p" and slots > 1:
        tokens = int(rng.integers(1, slots))
    heads = int(rng.integers(1, arch.max_heads + 1))
    head_dim = int(rng.choice([lanes, int(rng.integers(1, lanes + 1))]))
    parallel = int(rng.integers(1, min(slots, tokens) + 1))
    if rng.random() < 0.5:
        parallel = min(slots, tokens)
    qkv_width = int(rng.choice([x_bits, 16, 12]))
    qkv_fmt = Fixed(qkv_width, int(rng.integers(-1, 5)), True, "RND", "SAT")
    scale = float(rng.choice([0.05, 0.3, 1.0]))
    qkv_float = rng.normal(0.0, scale, (tokens, 3, heads, head_dim))
    if kind == "negative":  # every score < 0: q >= 0, k <= 0 elementwise
        qkv_float[:, 0] = np.abs(qkv_float[:, 0]) + 0.05
        qkv_float[:, 1] = -np.abs(qkv_float[:, 1]) - 0.05
    elif kind == "ties":  # equal keys, so every query has N equal scores
        qkv_float[:, 1] = qkv_float[:1, 1]
    elif kind == "saturate":  # scores far beyond the score format
        qkv_float *= 4.0
    qkv = qkv_fmt.quantize(qkv_float.reshape(tokens, 3 * heads * head_dim))
    q_f = qkv_fmt.to_float(qkv).reshape(tokens, 3, heads, head_dim)
    peak = float(np.abs(np.einsum("ihc,jhc->hij", q_f[:, 0], q_f[:, 1])).max(initial=0.0))
    score_int = _bits_for(peak * 1.5) + int(rng.integers(-1, 2))
    if kind == "saturate":
        score_int = _bits_for(peak) - 3
    score_fmt = Fixed(
        x_bits, score_int, True, ROUNDING[rng.integers(0, 7)], OVERFLOW[rng.integers(0, 4)]
    )
    sum_int = int(tokens).bit_length()
    if kind == "sum_sat" or rng.random() < 0.1:
        sum_int = max(1, sum_int - int(rng.integers(1, 3)))
    sum_fmt = Fixed(exp_frac + sum_int, sum_int, False, ROUNDING[rng.integers(0, 7)], "SAT")
    if kind == "sum_modes" or rng.random() < 0.1:  # the other sum formats rules admit
        signed = bool(rng.integers(0, 2)) if kind != "sum_modes" else True
        sum_int = max(1, int(tokens).bit_length() + 1 - int(rng.integers(0, 4)))
        sum_fmt = Fixed(
            exp_frac + sum_int + signed,
            sum_int + signed,
            signed,
            ROUNDING[rng.integers(0, 7)],
            str(rng.choice(["SAT", "SAT_SYM"])),
        )
    prob_fmt = Fixed(17, 1, False, ROUNDING[rng.integers(0, 7)], "SAT")
    if rng.random() < 0.15:
        prob_fmt = Fixed(16, 0, False, "RND", "SAT")  # 1.0 saturates
    v_peak = float(np.abs(q_f[:, 2]).max(initial=0.0))
    out_fmt = Fixed(
        x_bits,
        _bits_for(v_peak * 1.2) + int(rng.integers(-1, 2)),
        True,
        ROUNDING[rng.integers(0, 7)],
        OVERFLOW[rng.integers(0, 4)],
    )
    fmts = {"qkv": qkv_fmt, "score": score_fmt, "sum": sum_fmt, "prob": prob_fmt, "out": out_fmt}
    return {
        "kind": kind,
        "tokens": tokens,
        "heads": heads,
        "head_dim": head_dim,
        "parallel": parallel,
        "fmts": fmts,
        "qkv": qkv,
    }


EDGE_KINDS = ("single", "n_eq_p", "n_lt_p", "negative", "ties", "saturate", "sum_sat", "sum_modes")


def make_cases(arch, lanes: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = [make_case(rng, arch, lanes, kind) for kind in EDGE_KINDS for _ in range(2)]
    rows = sum(c["tokens"] * c["heads"] for c in cases)
    while rows < ROWS_PER_ARCH:
        cases.append(make_case(rng, arch, lanes, "random"))
        rows += cases[-1]["tokens"] * cases[-1]["heads"]
    return cases


def timed_shapes(arch, lanes: int) -> list[dict]:
    """Ideal-stream cases for the cycle model: N < P, N = P, N mod P != 0, a larger N."""
    rng = np.random.default_rng(7)
    slots = arch.attn_parallel
    out = []
    shapes = [(max(1, slots - 1), 1, lanes), (slots, 2, lanes), (3 * slots + 1, 2, lanes),
              (33, 2, lanes)]  # fmt: skip
    if arch.header_attn_lanes:  # a head of one chunk in a chunked core: a gap after each key
        shapes.append((33, 2, arch.attention_lanes))
    for tokens, heads, head_dim in shapes:
        case = make_case(rng, arch, lanes, "random")
        qkv_fmt = case["fmts"]["qkv"]
        case.update(tokens=tokens, heads=heads, head_dim=head_dim, parallel=min(slots, tokens))
        values = rng.normal(0.0, 0.3, (tokens, 3 * heads * head_dim))
        case["qkv"] = qkv_fmt.quantize(values)
        case["fmts"]["sum"] = case["fmts"]["sum"].with_(
            width=case["fmts"]["sum"].frac_bits + tokens.bit_length(),
            int_bits=tokens.bit_length(),
        )
        case["kind"] = "timed"
        out.append(case)
    return out


# ------------------------------------------------------------------ torch comparison


def torch_error_bound(arch, case: dict) -> float:
    """Worst |rtl - torch| of one output element allowed by the documented analysis."""
    tables = tables_for(arch)
    fmts, tokens = case["fmts"], case["tokens"]
    eps_exp = tables["exp"].max_abs_error()
    eps_recip = tables["recip"].max_abs_error()
    ulp_score = 2.0 ** -fmts["score"].frac_bits
    ulp_sum = 2.0 ** -fmts["sum"].frac_bits
    ulp_prob = 2.0 ** -fmts["prob"].frac_bits
    ulp_out = 2.0 ** -fmts["out"].frac_bits
    e_err = 2.0 * ulp_score * 1.01 + tokens * eps_exp  # sum_j |e_hat - e| / sum_j e
    s_err = e_err + tokens * ulp_sum  # |s_hat - s| / s  (s >= 1)
    l1 = (e_err + s_err) / (1.0 - s_err) + eps_recip + tokens * ulp_prob
    v = case["fmts"]["qkv"].to_float(case["qkv"])
    v_peak = float(np.abs(v[:, 2 * (v.shape[1] // 3) :]).max(initial=0.0))
    return v_peak * l1 + ulp_out


def clean_for_torch(case: dict, golden: dict) -> bool:
    """No saturation anywhere: scores, running sum, probabilities and outputs in range."""
    fmts = case["fmts"]
    if golden["clipped"]:
        return False
    magnitude_bits = fmts["sum"].int_bits - fmts["sum"].signed  # a signed sum's sign bit
    return case["tokens"].bit_length() <= magnitude_bits and fmts["prob"].int_bits >= 1


def torch_attention(case: dict) -> np.ndarray:
    tokens, heads, head_dim = case["tokens"], case["heads"], case["head_dim"]
    qkv = torch.tensor(case["fmts"]["qkv"].to_float(case["qkv"]), dtype=torch.float64)
    q, k, v = qkv.reshape(tokens, 3, heads, head_dim).permute(1, 2, 0, 3)
    weights = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
    return (weights @ v).permute(1, 0, 2).reshape(tokens, heads * head_dim).numpy()


# ------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def attention_build(arch):
    return sim.build(unit_sources(TOP, arch), TOP)


def test_attention_lint(arch):
    """The rendered unit and everything it instantiates is Verilator -Wall clean."""
    sim.lint(unit_sources(TOP, arch), TOP)


@pytest.mark.parametrize("board", LINT_BOARDS)
def test_attention_lint_board_defaults(board):
    """Lint clean at the full sizes the boards get by default (P = 8, head_dim 64 ...)."""
    sim.lint(unit_sources(TOP, default_arch(board)), TOP)


def chunks_of(arch, case: dict) -> int:
    """Beats one head row of `case` takes in the core (``cfg_chunks``)."""
    return estimate.attention_chunks(case["head_dim"], arch.attention_lanes)


def _run(arch, build, cases: list[dict], timed: bool, seed: int) -> dict:
    width = rtl_params(arch)["x_bits"]
    offsets = np.cumsum([0] + [c["qkv"].size for c in cases])
    cfg = np.array(
        [
            [c["tokens"], c["heads"], c["parallel"], chunks_of(arch, c)]
            + [pack_fmt(c["fmts"][k]) for k in ("qkv", "score", "sum", "prob", "out")]
            for c in cases
        ],
        dtype=np.int64,
    )
    return sim.run(
        build,
        "cocotb_attention",
        inputs={
            "lanes": arch.attention_lanes,
            "width": width,
            "slots": arch.attn_parallel,
            "cfg": cfg,
            "timed": np.full(len(cases), timed),
            "head_dim": np.array([c["head_dim"] for c in cases]),
            "qkv_offset": offsets,
            "qkv": np.concatenate([c["qkv"].reshape(-1) for c in cases]),
            "stall": 0.3,
            "backpressure": 0.3,
            "seed": seed,
        },
        seed=seed,
    )


def _compare(arch, cases: list[dict], result: dict) -> tuple[int, list[float], set[str]]:
    """Bit-exact check of every case; returns (rows checked, torch error / bound ratios,
    the edge conditions the golden run shows were reached)."""
    lanes = arch.attention_lanes
    width = rtl_params(arch)["x_bits"]
    one = int(tables_for(arch)["exp"].values[0])
    stats_at = rows_at = 0
    ratios = []
    reached = set()
    for index, case in enumerate(cases):
        golden = golden_attention(arch, case)
        tokens, heads, head_dim = case["tokens"], case["heads"], case["head_dim"]
        n = tokens * heads
        got_stats = result["stats"][stats_at : stats_at + n]
        np.testing.assert_array_equal(
            got_stats,
            golden["stats"],
            err_msg=f"case {index} ({case['kind']}): stats (m, s, mant, exp)",
        )
        chunks = chunks_of(arch, case)
        raw = result["rows"][rows_at : rows_at + n * chunks]
        raw = raw.reshape(heads, tokens, chunks * lanes)[:, :, :head_dim]
        if case["fmts"]["out"].signed:
            raw = np.where(raw >= 1 << (width - 1), raw - (1 << width), raw)
        got = raw.transpose(1, 0, 2).reshape(tokens, heads * head_dim)
        np.testing.assert_array_equal(
            got, golden["out"], err_msg=f"case {index} ({case['kind']}): output rows"
        )
        if clean_for_torch(case, golden):
            err = np.abs(case["fmts"]["out"].to_float(got) - torch_attention(case)).max()
            bound = torch_error_bound(arch, case)
            assert err <= bound, f"case {index}: |rtl - torch| = {err:.3g} > bound {bound:.3g}"
            ratios.append(err / bound)
        m, s = golden["stats"][:, 0], golden["stats"][:, 1]
        reached |= {
            name
            for name, hit in (
                ("single token", tokens == 1),
                ("N < P", tokens < arch.attn_parallel),
                ("N mod P != 0", tokens % case["parallel"] != 0),
                ("fewer slots than P", case["parallel"] < min(arch.attn_parallel, tokens)),
                ("all scores negative", bool((m < 0).all())),
                ("equal scores", case["kind"] == "ties" and bool((s == tokens * one).all())),
                ("saturated scores or outputs", golden["clipped"] > 0),
                ("saturated sum", bool((s == case["fmts"]["sum"].raw_max).any())),
                ("signed sum", case["fmts"]["sum"].signed),
                ("symmetric saturation of the sum", case["fmts"]["sum"].overflow == "SAT_SYM"),
            )
            if hit
        }
        stats_at += n
        rows_at += n * chunks
    assert stats_at == len(result["stats"]) and rows_at == len(result["rows"])
    return stats_at, ratios, reached


def test_attention_random_and_edge_cases(arch, attention_build):
    """>= 1,000 (query, head) rows bit-exact under random stalls and backpressure."""
    lanes = arch.max_dim // arch.max_heads
    cases = make_cases(arch, lanes, seed=11)
    result = _run(arch, attention_build, cases, timed=False, seed=3)
    rows, ratios, reached = _compare(arch, cases, result)
    assert rows >= ROWS_PER_ARCH
    assert len(ratios) >= len(cases) // 3, "too few saturation-free cases for torch"
    wanted = {"single token", "N < P", "N mod P != 0", "fewer slots than P",
              "all scores negative", "equal scores", "saturated scores or outputs",
              "saturated sum", "signed sum", "symmetric saturation of the sum"}  # fmt: skip
    assert wanted <= reached, f"edge cases not reached: {sorted(wanted - reached)}"


def test_attention_cycles(arch, attention_build):
    """Busy cycles with ideal streams vs the estimator's per-head passes."""
    lanes = arch.max_dim // arch.max_heads
    cases = timed_shapes(arch, lanes)
    result = _run(arch, attention_build, cases, timed=True, seed=5)
    _compare(arch, cases, result)
    for case, measured in zip(cases, result["cycles"], strict=True):
        tokens, heads = case["tokens"], case["heads"]
        dim = heads * case["head_dim"]
        full = estimate.attention_cycles(
            tokens, dim, heads, case["parallel"], arch.bus_bytes, arch.header_attn_lanes
        )
        qkv_beats = tokens * estimate.beats(4 * 3 * dim, arch.bus_bytes)
        compute = full - qkv_beats  # the core's part; qkv reaches it from on-chip buffers
        record_cycles(
            "attention",
            f"{arch_name(arch)} N={tokens} H={heads} P={case['parallel']} hd={case['head_dim']}",
            int(measured),
            compute,
            with_qkv_read=full,
        )
        if tokens >= 4 * arch.attn_parallel:  # small N is all pipeline latency (documented)
            assert 0.9 * compute <= measured <= 1.1 * compute


@pytest.mark.slow
def test_attention_m3vit_size():
    """One M3ViT attention layer (N = 129, 3 heads, P = 8): bit-exact, cycles within 5 %."""
    arch = M3VIT_ARCH
    lanes = arch.max_dim // arch.max_heads
    rng = np.random.default_rng(17)
    case = make_case(rng, arch, lanes, "random")
    tokens, heads = 129, 3
    case.update(tokens=tokens, heads=heads, head_dim=lanes, parallel=8, kind="m3vit")
    case["qkv"] = case["fmts"]["qkv"].quantize(rng.normal(0.0, 0.3, (tokens, 3 * heads * lanes)))
    sum_fmt = case["fmts"]["sum"]
    case["fmts"]["sum"] = sum_fmt.with_(width=sum_fmt.frac_bits + 8, int_bits=8)
    build = sim.build(unit_sources(TOP, arch), TOP)
    result = _run(arch, build, [case], timed=True, seed=2)
    _compare(arch, [case], result)
    dim = heads * lanes
    full = estimate.attention_cycles(tokens, dim, heads, 8, arch.bus_bytes, arch.header_attn_lanes)
    compute = full - tokens * estimate.beats(4 * 3 * dim, arch.bus_bytes)
    measured = int(result["cycles"][0])
    record_cycles("attention", f"m3vit N={tokens} H={heads} P=8", measured, compute)
    assert 0.95 * compute <= measured <= 1.05 * compute
