"""moe_router_core (gate softmax, top-k, expert queues) against the golden executor.

Every case is one MOE_GATE layer run through ``GoldenExecutor.moe_gate``: the gate input
is the logit matrix itself and the gate weights an identity (integer 1s with no fraction
bits), so the golden logits are exactly the logits the RTL receives. The queues the RTL
builds from its append beats (counts, token ids, scores, in the arena layout) must equal
the golden's bit for bit. Cases mix random shapes and formats with the edge cases: ties
(equal logits, also across the top-k boundary), empty expert queues, one token, one
expert, top_k = experts, saturated logits, a softmax dominated by one expert (scores of
exactly 0 and 1) and saturating score formats. Scores are checked against torch's softmax
within the bound of docs/rtl-attention-ln-moe.md; busy cycles against
``codesign.estimate.gate_cycles``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import record_cycles
from test_attention import (
    LINT_BOARDS,
    M3VIT_ARCH,
    arch_name,
    one_layer_program,
    tables_for,
)

from codesign import estimate
from codesign.arch.config import default_arch
from codesign.golden import GoldenExecutor
from codesign.numerics.fixed import ROUNDING, Fixed
from codesign.ops.moe_gate import queue_layout
from codesign.program import Layer, Op, pack_fmt, pack_tiles
from codesign.rtl import sim
from codesign.rtl.render import rtl_params, unit_sources

TOP = "moe_router_core"
TOKENS_PER_ARCH = 1000
IDENTITY_FMT = Fixed(16, 16, True, "RND", "SAT")  # raw 1 means 1.0


# ------------------------------------------------------------------ golden reference


def golden_gate(arch, case: dict) -> dict:
    """counts[E], ids[E][N], scores[E][N] as GoldenExecutor.moe_gate writes them."""
    logits = case["logits"]
    tokens, experts = logits.shape
    fmts = case["fmts"]
    stride = 4 * experts
    queue = tokens * stride
    layer = Layer(
        Op.MOE_GATE,
        "gate",
        {
            "src": 0,
            "src_stride": stride,
            "tokens": tokens,
            "dim": experts,
            "experts": experts,
            "top_k": case["top_k"],
            "weight": 0,
            "w_fmt": pack_fmt(IDENTITY_FMT),
            "w_bytes": 2,
            "x_fmt": pack_fmt(fmts["logit"]),
            "logit_fmt": pack_fmt(fmts["logit"]),
            "score_fmt": pack_fmt(fmts["score"]),
            "queue": queue,
        },
    )
    weights = pack_tiles(
        np.eye(experts, dtype=np.int64), arch.tile_in, arch.tile_out, 2, arch.bus_bytes
    )
    arena = queue + 4 * experts + 8 * experts * tokens
    program = one_layer_program(arch, layer, arena, tokens, experts, {"weight": weights})
    ex = GoldenExecutor(program)
    ex.arena = np.zeros(program.arena_bytes // 4, np.int64)
    ex.write(0, stride, logits)
    ex._sat = 0
    ex.moe_gate(layer, 0)
    assert ex._sat == 0, "the identity gate must reproduce the logits exactly"
    counts_at, ids_at, scores_at = queue_layout(layer.fields)
    return {
        "counts": ex.read(counts_at, 1, experts, 4 * experts)[0],
        "ids": ex.read(ids_at, experts, tokens, 4 * tokens),
        "scores": ex.read(scores_at, experts, tokens, 4 * tokens),
    }


def rtl_queues(case: dict, appends: np.ndarray, counts_word: int, tok_bits: int) -> dict:
    """The arena queues rebuilt from the RTL's append beats and its counts beat."""
    tokens, experts = case["logits"].shape
    ids = np.zeros((experts, tokens), np.int64)
    scores = np.zeros((experts, tokens), np.int64)
    for expert, slot, token, score in appends:
        assert expert < experts and slot < tokens, f"append out of range: {expert}, {slot}"
        ids[expert, slot] = token
        scores[expert, slot] = score
    mask = (1 << tok_bits) - 1
    counts = np.array([(counts_word >> (e * tok_bits)) & mask for e in range(experts)])
    return {"counts": counts, "ids": ids, "scores": scores}


# ------------------------------------------------------------------ cases

EDGE_KINDS = (
    "ties",
    "tie_boundary",
    "empty",
    "single",
    "one_expert",
    "all_k",
    "saturate",
    "dominant",
    "score_sat",
)


def make_case(rng, arch, kind: str) -> dict:
    x_bits = rtl_params(arch)["x_bits"]
    experts = int(rng.integers(1, arch.max_experts + 1))
    if kind in ("ties", "tie_boundary", "empty", "all_k"):
        experts = max(2, experts)
    if kind == "one_expert":
        experts = 1
    top_k = int(rng.integers(1, experts + 1))
    if kind == "all_k":
        top_k = experts
    tokens = 1 if kind == "single" else int(rng.integers(1, 41))
    logit_fmt = Fixed(x_bits, int(rng.integers(2, 8)), True, "RND", "SAT")
    spread = float(rng.choice([0.25, 1.0, 4.0]))
    values = rng.normal(0.0, spread, (tokens, experts))
    if kind == "ties":  # whole rows equal
        values[:] = values[:, :1]
    elif kind == "tie_boundary" and experts > 1:  # the k-th and (k+1)-th logits equal
        order = np.argsort(-values, axis=1)
        for t in range(tokens):
            k = min(top_k, experts - 1)
            values[t, order[t, k]] = values[t, order[t, k - 1]]
    elif kind == "empty":  # every token prefers the same experts: the others stay empty
        values[:, : experts // 2] += 40.0
    elif kind == "saturate":
        values = rng.choice([logit_fmt.min_value, logit_fmt.max_value, 0.0], (tokens, experts))
    elif kind == "dominant":
        values[:, int(rng.integers(0, experts))] += 30.0
    logits = logit_fmt.quantize(values)
    score_fmt = Fixed(17, 1, False, ROUNDING[rng.integers(0, 7)], "SAT")
    if kind == "score_sat" or rng.random() < 0.1:
        score_fmt = Fixed(16, 0, False, ROUNDING[rng.integers(0, 7)], "SAT")
    return {
        "kind": kind,
        "logits": logits,
        "top_k": top_k,
        "fmts": {"logit": logit_fmt, "score": score_fmt},
    }


def make_cases(arch, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = [make_case(rng, arch, kind) for kind in EDGE_KINDS for _ in range(2)]
    tokens = sum(len(c["logits"]) for c in cases)
    while tokens < TOKENS_PER_ARCH:
        cases.append(make_case(rng, arch, "random"))
        tokens += len(cases[-1]["logits"])
    return cases


def timed_shapes(arch) -> list[dict]:
    rng = np.random.default_rng(13)
    out = []
    e_max = arch.max_experts
    for tokens, experts, top_k in ((64, e_max, 2), (64, e_max, 1), (33, max(2, e_max // 2), 2)):
        case = make_case(rng, arch, "random")
        fmt = case["fmts"]["logit"]
        case.update(logits=fmt.quantize(rng.normal(0, 1, (tokens, experts))), top_k=top_k)
        case["kind"] = "timed"
        out.append(case)
    return out


# ------------------------------------------------------------------ torch comparison


def torch_check(arch, case: dict, got: dict) -> float:
    """Largest |score - torch softmax| / bound over the chosen (token, expert) pairs."""
    tables = tables_for(arch)
    eps_exp = tables["exp"].max_abs_error()
    eps_recip = tables["recip"].max_abs_error()
    fmts = case["fmts"]
    logits = torch.tensor(fmts["logit"].to_float(case["logits"]), dtype=torch.float64)
    probs = torch.softmax(logits, dim=1).numpy()
    experts = logits.shape[1]
    worst = 0.0
    for expert in range(experts):
        for slot in range(int(got["counts"][expert])):
            token = int(got["ids"][expert, slot])
            p = probs[token, expert]
            score = fmts["score"].to_float(got["scores"][expert, slot])
            if p > fmts["score"].max_value:  # a saturating score format clips 1.0
                p = fmts["score"].max_value
            bound = (eps_exp + p * (experts * eps_exp + eps_recip)) * 1.01 + fmts["score"].lsb
            worst = max(worst, abs(score - p) / bound)
    return worst


# ------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def router_build(arch):
    return sim.build(unit_sources(TOP, arch), TOP)


def test_moe_router_lint(arch):
    sim.lint(unit_sources(TOP, arch), TOP)


@pytest.mark.parametrize("board", LINT_BOARDS)
def test_moe_router_lint_board_defaults(board):
    sim.lint(unit_sources(TOP, default_arch(board)), TOP)


def _run(arch, build, cases: list[dict], timed: bool, seed: int) -> dict:
    cfg = [
        [
            len(c["logits"]),
            c["logits"].shape[1],
            c["top_k"],
            pack_fmt(c["fmts"]["logit"]),
            pack_fmt(c["fmts"]["score"]),
        ]
        for c in cases
    ]
    return sim.run(
        build,
        "cocotb_moe_router",
        inputs={
            "cfg": np.array(cfg, dtype=np.int64),
            "timed": np.full(len(cases), timed),
            "logits": np.concatenate([c["logits"].reshape(-1) for c in cases]),
            "logit_offset": np.cumsum([0] + [c["logits"].size for c in cases]),
            "width": rtl_params(arch)["x_bits"],
            "stall": 0.3,
            "backpressure": 0.3,
            "seed": seed,
        },
        seed=seed,
    )


def _compare(arch, cases: list[dict], result: dict) -> tuple[list[float], set[str]]:
    """Bit-exact check; returns (torch error / bound ratios, edge conditions reached)."""
    tok_bits = arch.max_tokens.bit_length()
    assert len(result["counts"]) == len(cases)
    ratios = []
    reached = set()
    for index, case in enumerate(cases):
        appends = result["appends"][result["append_case"] == index]
        got = rtl_queues(case, appends, int(result["counts"][index]), tok_bits)
        want = golden_gate(arch, case)
        where = f"case {index} ({case['kind']}, {case['logits'].shape}, k={case['top_k']})"
        for key in ("counts", "ids", "scores"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{where}: {key}")
        # appends arrive in the golden's order: tokens ascending, each token largest first
        tokens = appends[:, 2]
        assert np.all(np.diff(tokens) >= 0), f"{where}: appends out of token order"
        ratio = torch_check(arch, case, got)
        assert ratio <= 1.0, f"{where}: |score - torch| is {ratio:.3g}x the bound"
        ratios.append(ratio)
        logits, top_k = case["logits"], case["top_k"]
        ordered = -np.sort(-logits, axis=1)
        experts = logits.shape[1]
        boundary_tie = top_k < experts and bool((ordered[:, top_k - 1] == ordered[:, top_k]).any())
        used = np.concatenate([got["scores"][e, : got["counts"][e]] for e in range(experts)])
        reached |= {
            name
            for name, hit in (
                ("one token", len(logits) == 1),
                ("one expert", experts == 1),
                ("top_k = experts", top_k == experts),
                ("tie across the top-k boundary", boundary_tie),
                ("row of equal logits", bool((ordered[:, 0] == ordered[:, -1]).any())),
                ("empty queue", experts > 1 and bool((got["counts"] == 0).any())),
                ("score 0", bool((used == 0).any())),
                ("score saturated", bool((used == case["fmts"]["score"].raw_max).any())),
            )
            if hit
        }
    return ratios, reached


def test_moe_router_random_and_edge_cases(arch, router_build):
    """>= 1,000 tokens routed bit-exactly under random stalls and backpressure."""
    cases = make_cases(arch, seed=31)
    result = _run(arch, router_build, cases, timed=False, seed=8)
    _ratios, reached = _compare(arch, cases, result)
    assert sum(len(c["logits"]) for c in cases) >= TOKENS_PER_ARCH
    wanted = {"one token", "one expert", "top_k = experts", "tie across the top-k boundary",
              "row of equal logits", "empty queue", "score 0", "score saturated"}  # fmt: skip
    assert wanted <= reached, f"edge cases not reached: {sorted(wanted - reached)}"


def test_moe_router_cycles(arch, router_build):
    """Busy cycles with ideal streams vs the estimator's router term."""
    cases = timed_shapes(arch)
    result = _run(arch, router_build, cases, timed=True, seed=9)
    _compare(arch, cases, result)
    for case, measured in zip(cases, result["cycles"], strict=True):
        tokens, experts = case["logits"].shape
        top_k = case["top_k"]
        router = tokens * (experts + top_k) + estimate.GATE_PIPELINE
        record_cycles(
            "moe_router",
            f"{arch_name(arch)} N={tokens} E={experts} k={top_k}",
            int(measured),
            router,
            pipelined=tokens * max(experts, top_k) + estimate.GATE_PIPELINE,
        )


@pytest.mark.slow
def test_moe_router_m3vit_size():
    """One M3ViT gate (129 tokens, 16 experts, top-2): bit-exact; cycles recorded against
    the estimator's router term (which charges E + k per token, see the docs)."""
    arch = M3VIT_ARCH
    rng = np.random.default_rng(23)
    case = make_case(rng, arch, "random")
    tokens, experts, top_k = 129, 16, 2
    logits = case["fmts"]["logit"].quantize(rng.normal(0.0, 1.0, (tokens, experts)))
    case.update(logits=logits, top_k=top_k)
    build = sim.build(unit_sources(TOP, arch), TOP)
    result = _run(arch, build, [case], timed=True, seed=2)
    _compare(arch, [case], result)
    measured = int(result["cycles"][0])
    router = tokens * (experts + top_k) + estimate.GATE_PIPELINE
    pipelined = tokens * max(experts, top_k) + estimate.GATE_PIPELINE
    gate = estimate.gate_cycles(tokens, 192, experts, top_k, arch.tile_in, arch.tile_out, 2,
                                arch.bus_bytes)  # fmt: skip
    record_cycles(
        "moe_router", f"m3vit N={tokens} E={experts} k={top_k}", measured, router,
        pipelined=pipelined, gate_with_ucu=round((gate - router + measured) / gate, 4),
    )  # fmt: skip
    assert 0.95 * pipelined <= measured <= 1.05 * pipelined
