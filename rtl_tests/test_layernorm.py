"""layernorm_core (one-pass layer norm) against the golden executor.

Every case is one LAYERNORM layer through ``GoldenExecutor.layernorm`` (a one-layer
Program holding gamma, beta and the ArchConfig's tables) and through the RTL; every
output element must agree bit for bit. Cases mix random shapes (dim below, equal to and
not a multiple of the lane count, a single row, dim = 1), activation formats with and
without the statistics shift, every rounding and overflow mode for the normalised and
output values, and the edge cases: constant rows (zero variance, u = eps), all-zero rows,
rows at the format's extremes, outliers and saturating normalised values. Non-saturating
cases are checked against torch's layer_norm within the bound of
docs/rtl-attention-ln-moe.md; busy cycles against ``codesign.estimate.layernorm_cycles``.
"""

from __future__ import annotations

import math

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
from codesign.numerics.fixed import OVERFLOW, ROUNDING, Fixed
from codesign.program import Layer, Op, pack_fmt
from codesign.quantize import int_bits_for
from codesign.rtl import sim
from codesign.rtl.render import rtl_params, unit_sources

TOP = "layernorm_core"
ROWS_PER_ARCH = 1000
PARAM_BITS = 18


def param_width(arch) -> int:
    return max(rtl_params(arch)["w_bits"], PARAM_BITS)


# ------------------------------------------------------------------ golden reference


def layernorm_layer(case: dict, src: int, src_stride: int, dst: int, dst_stride: int) -> Layer:
    """The case's LAYERNORM descriptor over rows at src, outputs at dst (gamma and beta
    are placed by one_layer_program)."""
    rows, dim = case["x"].shape
    fmts = case["fmts"]
    eps = case["eps_term"]
    fields = {
        "src": src,
        "src_stride": src_stride,
        "rows": rows,
        "dim": dim,
        "dst": dst,
        "dst_stride": dst_stride,
        "x_fmt": pack_fmt(fmts["x"]),
        "gamma": 0,
        "g_fmt": pack_fmt(fmts["gamma"]),
        "beta": 0,
        "b_fmt": pack_fmt(fmts["beta"]),
        "stat_shift": case["stat_shift"],
        "eps_lo": eps & 0xFFFFFFFF,
        "eps_hi": eps >> 32,
        "norm_fmt": pack_fmt(fmts["norm"]),
        "out_fmt": pack_fmt(fmts["out"]),
    }
    return Layer(Op.LAYERNORM, "ln", fields)


def golden_layernorm(arch, case: dict) -> dict:
    rows, dim = case["x"].shape
    stride = 4 * dim
    layer = layernorm_layer(case, 0, stride, rows * stride, stride)
    params = {"gamma": case["gamma"], "beta": case["beta"]}
    program = one_layer_program(arch, layer, 2 * rows * stride, rows, dim, params)
    ex = GoldenExecutor(program)
    ex.arena = np.zeros(program.arena_bytes // 4, np.int64)
    ex.write(0, stride, case["x"])
    ex._sat = 0
    out = ex.layernorm(layer, 0)
    return {"out": out, "clipped": ex._sat}


# ------------------------------------------------------------------ cases

EDGE_KINDS = (
    "dim1",
    "lanes",
    "lt_lanes",
    "single",
    "constant",
    "zeros",
    "extreme",
    "outlier",
    "saturate",
)


def make_case(rng, arch, kind: str) -> dict:
    lanes = arch.tile_in
    x_bits = rtl_params(arch)["x_bits"]
    dim = int(rng.integers(1, arch.max_dim + 1))
    if kind == "dim1":
        dim = 1
    elif kind == "lanes":
        dim = lanes * int(rng.integers(1, arch.max_dim // lanes + 1))
    elif kind == "lt_lanes":
        dim = int(rng.integers(1, lanes + 1))
    rows = 1 if kind == "single" else int(rng.integers(1, 9))
    x_width = int(rng.choice([x_bits, x_bits, 20, 16, 12]))
    x_fmt = Fixed(x_width, int(rng.integers(-2, 8)), True, "RND", "SAT")
    stat_shift = max(0, x_width - PARAM_BITS)
    if rng.random() < 0.2:
        stat_shift = int(rng.integers(0, x_width))
    top = x_fmt.max_value
    offset = rng.normal(0.0, top / 16, (rows, 1))
    scale = top * 2.0 ** -rng.uniform(1.5, 8.0)
    values = offset + rng.normal(0.0, scale, (rows, dim))
    if kind == "constant":
        values = np.repeat(values[:, :1], dim, axis=1)
    elif kind == "zeros":
        values = np.zeros((rows, dim))
    elif kind == "extreme":
        values = rng.choice([x_fmt.min_value, x_fmt.max_value], (rows, dim))
    elif kind == "outlier":
        values[:, int(rng.integers(0, dim))] = top * rng.choice([-0.9, 0.9])
    x = x_fmt.quantize(values)
    eps = float(rng.choice([1e-5, 1e-6, 1e-12]))
    eps_term = max(1, round(eps * dim * dim * 2.0 ** (2 * (x_fmt.frac_bits - stat_shift))))
    gamma_f = rng.normal(1.0, 0.3, dim)
    beta_f = rng.normal(0.0, 0.2, dim)
    g_fmt = Fixed(PARAM_BITS, int_bits_for(float(np.abs(gamma_f).max())), True, "RND", "SAT")
    norm_int = int_bits_for(math.sqrt(dim) * 1.5)
    if kind == "saturate" or rng.random() < 0.1:
        norm_int = max(1, norm_int - int(rng.integers(2, 4)))
    norm_fmt = Fixed(
        x_bits, norm_int, True, ROUNDING[rng.integers(0, 7)], OVERFLOW[rng.integers(0, 4)]
    )
    # beta must align to F_norm + F_gamma exactly (the contract's align needs F_beta <= that)
    beta_int = max(
        int_bits_for(float(np.abs(beta_f).max())),
        PARAM_BITS - (norm_fmt.frac_bits + g_fmt.frac_bits),
    )
    b_fmt = Fixed(PARAM_BITS, beta_int, True, "RND", "SAT")
    peak = min(math.sqrt(dim), 2.0**norm_int) * float(np.abs(gamma_f).max()) + 1.0
    out_int = int_bits_for(peak * 1.2) + int(rng.integers(-1, 2))
    out_fmt = Fixed(
        x_bits, out_int, True, ROUNDING[rng.integers(0, 7)], OVERFLOW[rng.integers(0, 4)]
    )
    fmts = {"x": x_fmt, "gamma": g_fmt, "beta": b_fmt, "norm": norm_fmt, "out": out_fmt}
    return {
        "kind": kind,
        "x": x,
        "gamma": g_fmt.quantize(gamma_f),
        "beta": b_fmt.quantize(beta_f),
        "stat_shift": stat_shift,
        "eps_term": eps_term,
        "fmts": fmts,
    }


def make_cases(arch, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = [make_case(rng, arch, kind) for kind in EDGE_KINDS for _ in range(2)]
    rows = sum(len(c["x"]) for c in cases)
    while rows < ROWS_PER_ARCH:
        cases.append(make_case(rng, arch, "random"))
        rows += len(cases[-1]["x"])
    return cases


def timed_shapes(arch) -> list[dict]:
    """Ideal streams: a full-width row, a lane-sized row, an odd dim."""
    rng = np.random.default_rng(9)
    out = []
    for rows, dim in ((16, arch.max_dim), (16, arch.tile_in), (12, 3 * arch.tile_in + 1)):
        case = make_case(rng, arch, "random")
        x_fmt = case["fmts"]["x"]
        case["x"] = x_fmt.quantize(rng.normal(0.0, x_fmt.max_value / 32, (rows, dim)))
        case["gamma"] = np.resize(case["gamma"], dim)
        case["beta"] = np.resize(case["beta"], dim)
        case["kind"] = "timed"
        out.append(case)
    return out


# ------------------------------------------------------------------ torch comparison


def torch_check(arch, case: dict, got: np.ndarray) -> float:
    """Largest |rtl - torch| / bound over the case (bound from docs/rtl-attention-ln-moe.md)."""
    fmts = case["fmts"]
    x_fmt = fmts["x"]
    dim = case["x"].shape[1]
    t = case["stat_shift"]
    x = case["x"].astype(np.float64)
    unit = 2.0 ** (2 * (x_fmt.frac_bits - t))  # u counts units of 2**-2(F_x - t)
    eps = case["eps_term"] / (dim * dim * unit)
    xf = x_fmt.to_float(case["x"])
    gamma = fmts["gamma"].to_float(case["gamma"])
    beta = fmts["beta"].to_float(case["beta"])
    ref = torch.nn.functional.layer_norm(
        torch.tensor(xf), (dim,), torch.tensor(gamma), torch.tensor(beta), eps
    ).numpy()
    # u from the truncated statistics (x >> t) against the exact D^2 (var + eps), per row
    xs = np.floor(x / 2.0**t)
    u_hw = dim * (xs * xs).sum(1) - xs.sum(1) ** 2 + case["eps_term"]
    u_true = dim * dim * (xf.var(axis=1) + eps) * unit
    scale = np.sqrt(u_true / u_hw)[:, None]  # what the truncated statistics do to 1/std
    eps_rsqrt = tables_for(arch)["rsqrt"].max_abs_error()
    n_true = (xf - xf.mean(1, keepdims=True)) / np.sqrt(xf.var(1, keepdims=True) + eps)
    rel = np.abs(scale - 1.0) + scale * eps_rsqrt
    n_err = np.abs(n_true) * rel * 1.001 + fmts["norm"].lsb
    bound = np.abs(gamma) * n_err + fmts["out"].lsb + 1e-12
    err = np.abs(fmts["out"].to_float(got) - ref)
    return float((err / bound).max())


# ------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def layernorm_build(arch):
    return sim.build(unit_sources(TOP, arch), TOP)


def test_layernorm_lint(arch):
    sim.lint(unit_sources(TOP, arch), TOP)


@pytest.mark.parametrize("board", LINT_BOARDS)
def test_layernorm_lint_board_defaults(board):
    sim.lint(unit_sources(TOP, default_arch(board)), TOP)


def _run(arch, build, cases: list[dict], timed: bool, seed: int) -> dict:
    cfg = []
    for c in cases:
        rows, dim = c["x"].shape
        f = c["fmts"]
        cfg.append(
            [
                rows,
                dim,
                pack_fmt(f["x"]),
                pack_fmt(f["gamma"]),
                pack_fmt(f["beta"]),
                c["stat_shift"],
                c["eps_term"] & 0xFFFFFFFF,
                c["eps_term"] >> 32,
                pack_fmt(f["norm"]),
                pack_fmt(f["out"]),
            ]
        )
    return sim.run(
        build,
        "cocotb_layernorm",
        inputs={
            "lanes": arch.tile_in,
            "width": rtl_params(arch)["x_bits"],
            "param_width": param_width(arch),
            "cfg": np.array(cfg, dtype=np.int64),
            "timed": np.full(len(cases), timed),
            "x": np.concatenate([c["x"].reshape(-1) for c in cases]),
            "x_offset": np.cumsum([0] + [c["x"].size for c in cases]),
            "gamma": np.concatenate([c["gamma"] for c in cases]),
            "beta": np.concatenate([c["beta"] for c in cases]),
            "param_offset": np.cumsum([0] + [len(c["gamma"]) for c in cases]),
            "stall": 0.3,
            "backpressure": 0.3,
            "seed": seed,
        },
        seed=seed,
    )


def _compare(arch, cases: list[dict], result: dict) -> tuple[int, list[float], set[str]]:
    """Bit-exact check; returns (rows, torch error / bound ratios, edge conditions reached)."""
    lanes = arch.tile_in
    width = rtl_params(arch)["x_bits"]
    at = 0
    ratios = []
    reached = set()
    for index, case in enumerate(cases):
        rows, dim = case["x"].shape
        beats = -(-dim // lanes)
        raw = result["y"][at : at + rows * beats].reshape(rows, beats * lanes)[:, :dim]
        at += rows * beats
        got = np.where(raw >= 1 << (width - 1), raw - (1 << width), raw)
        golden = golden_layernorm(arch, case)
        np.testing.assert_array_equal(
            got, golden["out"], err_msg=f"case {index} ({case['kind']}, {rows}x{dim})"
        )
        if not golden["clipped"]:
            ratio = torch_check(arch, case, got)
            assert ratio <= 1.0, f"case {index}: |rtl - torch| is {ratio:.3g}x the bound"
            ratios.append(ratio)
        xs = case["x"] >> case["stat_shift"]
        spread = dim * (xs * xs).sum(1) - xs.sum(1) ** 2  # u - eps
        x_fmt = case["fmts"]["x"]
        reached |= {
            name
            for name, hit in (
                ("one row", rows == 1),
                ("dim 1", dim == 1),
                ("dim < lanes", dim < lanes),
                ("partial last beat", dim % lanes != 0),
                ("whole beats", dim % lanes == 0 and dim > lanes),
                ("zero variance (u = eps)", bool((spread == 0).any())),
                ("x at the format's extremes", bool((np.abs(case["x"]) >= x_fmt.raw_max).any())),
                ("statistics shift", case["stat_shift"] > 0),
                ("no statistics shift", case["stat_shift"] == 0),
                ("saturated norm or output", golden["clipped"] > 0),
            )
            if hit
        }
    assert at == len(result["y"])
    return sum(len(c["x"]) for c in cases), ratios, reached


def test_layernorm_random_and_edge_cases(arch, layernorm_build):
    """>= 1,000 rows bit-exact under random stalls and backpressure."""
    cases = make_cases(arch, seed=21)
    result = _run(arch, layernorm_build, cases, timed=False, seed=4)
    rows, ratios, reached = _compare(arch, cases, result)
    assert rows >= ROWS_PER_ARCH
    assert len(ratios) > len(cases) // 2, "too few saturation-free cases for torch"
    wanted = {"one row", "dim 1", "dim < lanes", "partial last beat", "whole beats",
              "zero variance (u = eps)", "x at the format's extremes", "statistics shift",
              "no statistics shift", "saturated norm or output"}  # fmt: skip
    assert wanted <= reached, f"edge cases not reached: {sorted(wanted - reached)}"


def test_layernorm_cycles(arch, layernorm_build):
    """Busy cycles with ideal streams vs the estimator (its per-row passes)."""
    cases = timed_shapes(arch)
    result = _run(arch, layernorm_build, cases, timed=True, seed=6)
    _compare(arch, cases, result)
    for case, measured in zip(cases, result["cycles"], strict=True):
        rows, dim = case["x"].shape
        lanes = arch.tile_in
        full = estimate.layernorm_cycles(rows, dim, lanes, arch.bus_bytes)
        per_row = estimate.layernorm_lane_cycles(dim, lanes, arch.bus_bytes)
        compute = rows * per_row + estimate.LAYERNORM_PIPELINE
        record_cycles(
            "layernorm",
            f"{arch_name(arch)} rows={rows} dim={dim} lanes={lanes}",
            int(measured),
            compute,
            with_ddr_bound=full,
        )
        # rows of a beat or two are paced by the statistics latency, which the model has
        assert 0.9 * compute <= measured <= 1.1 * compute


@pytest.mark.slow
def test_layernorm_m3vit_size():
    """One M3ViT layer norm (129 rows of 192, Ti = 32): bit-exact, cycles within 5 %."""
    arch = M3VIT_ARCH
    rng = np.random.default_rng(19)
    case = make_case(rng, arch, "random")
    rows, dim = 129, 192
    x_fmt = case["fmts"]["x"]
    case["x"] = x_fmt.quantize(rng.normal(0.0, x_fmt.max_value / 32, (rows, dim)))
    case["gamma"] = np.resize(case["gamma"], dim)
    case["beta"] = np.resize(case["beta"], dim)
    build = sim.build(unit_sources(TOP, arch), TOP)
    result = _run(arch, build, [case], timed=True, seed=2)
    _compare(arch, [case], result)
    per_row = estimate.layernorm_lane_cycles(dim, arch.tile_in, arch.bus_bytes)
    compute = rows * per_row + estimate.LAYERNORM_PIPELINE
    measured = int(result["cycles"][0])
    full = estimate.layernorm_cycles(rows, dim, arch.tile_in, arch.bus_bytes)
    record_cycles(
        "layernorm", f"m3vit rows={rows} dim={dim} lanes={arch.tile_in}", measured, compute,
        with_ddr_bound=full,
    )  # fmt: skip
    assert 0.95 * compute <= measured <= 1.05 * compute
