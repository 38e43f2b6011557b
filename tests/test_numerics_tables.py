"""Tests for the nonlinear-function tables: accuracy against float references, exactness at
grid points, monotonicity, edge cases and argument validation.

The float references here are independent of the module (scipy's ndtr for GELU), so a bug in
the module's own reference used by ``max_abs_error`` would still be caught.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from codesign.numerics.fixed import Fixed
from codesign.numerics.tables import (
    Table,
    bit_length,
    build_exp_table,
    build_gelu_table,
    build_recip_table,
    build_rsqrt_table,
    build_tables,
    exp_neg,
    gelu,
    recip,
    rsqrt,
)

# Documented worst-case errors of the default tables (docs/numerics-tables.md). GELU and exp are
# absolute, recip and rsqrt relative.
BOUNDS = {"gelu_delta": 1.05e-4, "exp": 3.5e-5, "recip": 5e-5, "rsqrt": 5e-5}

TABLES = build_tables()
WIDE = Fixed(48, 12, signed=True, rounding="TRN")  # 36 fraction bits: gelu output is exact

SETTINGS = settings(max_examples=60, deadline=None)


def _gelu_ref(x: np.ndarray) -> np.ndarray:
    return x * ndtr(x)


def _gelu_err(h: np.ndarray, h_frac: int, table: Table, out_fmt: Fixed) -> np.ndarray:
    got = out_fmt.to_float(gelu(h, h_frac, table, out_fmt))
    return np.abs(got - _gelu_ref(np.ldexp(h.astype(np.float64), -h_frac)))


def _exp_err(d: np.ndarray, d_frac: int, table: Table) -> np.ndarray:
    got = table.fmt.to_float(exp_neg(d, d_frac, table))
    return np.abs(got - np.exp(np.ldexp(d.astype(np.float64), -d_frac)))


def _recip_rel(v: np.ndarray, v_frac: int, table: Table) -> np.ndarray:
    mant, e = recip(v, v_frac, table)
    prod = mant.astype(np.float64) * v.astype(np.float64)  # est * v, up to the power of two
    return np.abs(np.ldexp(prod, -(table.fmt.frac_bits + e + v_frac)) - 1.0)


def _rsqrt_rel(u: np.ndarray, u_frac: int, table: Table) -> np.ndarray:
    mant, h = rsqrt(u, u_frac, table)
    root = np.sqrt(np.ldexp(u.astype(np.float64), -u_frac))
    return np.abs(np.ldexp(mant.astype(np.float64), -(table.fmt.frac_bits + h)) * root - 1.0)


def _raw_array(draw, lo: int, hi: int, max_size: int = 64) -> np.ndarray:
    return np.array(
        draw(st.lists(st.integers(lo, hi), min_size=1, max_size=max_size)), dtype=np.int64
    )


# ------------------------------------------------------------------------------ bit_length


def test_bit_length_powers_of_two_exact() -> None:
    xs = [0, 1, 2, 3]
    for k in range(2, 63):
        xs += [(1 << k) - 1, 1 << k, (1 << k) + 1]
    xs.append(2**63 - 1)
    got = bit_length(np.array(xs, dtype=np.int64))
    assert got.tolist() == [x.bit_length() for x in xs]


@SETTINGS
@given(st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=50))
def test_bit_length_matches_python(xs: list[int]) -> None:
    assert bit_length(np.array(xs, dtype=np.int64)).tolist() == [x.bit_length() for x in xs]


def test_bit_length_rejects_negative() -> None:
    with pytest.raises(ValueError):
        bit_length(np.array([3, -1]))


# ------------------------------------------------------------------------------ default bounds


@pytest.mark.parametrize("name", list(BOUNDS))
def test_default_worst_case_below_documented(name: str) -> None:
    err = TABLES[name].max_abs_error()
    assert 0 < err < BOUNDS[name]
    assert TABLES[name].max_abs_error() == err  # cached, stable


def test_default_formats_and_sizes() -> None:
    g, e, r, q = (TABLES[k] for k in ("gelu_delta", "exp", "recip", "rsqrt"))
    assert g.fmt == Fixed(18, 0, signed=False, rounding="RND")
    assert e.fmt == r.fmt == q.fmt == Fixed(17, 1, signed=False, rounding="RND")
    assert (len(g.values), len(e.values), len(r.values), len(q.values)) == (257, 1025, 257, 385)
    assert (g.step_bits, e.step_bits) == (5, 6)
    assert (g.guard_bits, e.guard_bits, r.guard_bits, q.guard_bits) == (0, 0, 10, 10)
    assert (g.domain, e.domain, r.domain, q.domain) == (8.0, 16.0, 1.0, 1.0)
    assert e.values[0] == 1 << 16 and r.values[0] == 1 << 16 and q.values[0] == 1 << 16
    assert r.values[-1] == 1 << 15 and q.values[-1] == 1 << 15  # 1/2 and 1/sqrt(4)
    assert g.values[0] == 0


# ------------------------------------------------------------------------------ accuracy


@st.composite
def _gelu_case(draw):
    h_frac = draw(st.integers(-3, 30))
    lim = max(1, int(12 * 2.0**h_frac))
    h = _raw_array(draw, -lim, lim)
    if draw(st.booleans()):
        return h, h_frac, WIDE, 0.0
    rounding = draw(st.sampled_from(["RND", "TRN", "RND_CONV", "RND_ZERO"]))
    out = Fixed(draw(st.integers(12, 27)), draw(st.integers(5, 8)), True, rounding)
    ulp = 2.0**-out.frac_bits
    return h, h_frac, out, (ulp if rounding == "TRN" else ulp / 2)


@SETTINGS
@given(_gelu_case())
def test_gelu_within_bound(case) -> None:
    h, h_frac, out, quant = case
    assert _gelu_err(h, h_frac, TABLES["gelu_delta"], out).max() <= BOUNDS["gelu_delta"] + quant


@SETTINGS
@given(st.data())
def test_exp_within_bound(data) -> None:
    d_frac = data.draw(st.integers(-4, 30))
    lim = max(1, int(18 * 2.0**d_frac))
    d = _raw_array(data.draw, -lim, 0)
    assert _exp_err(d, d_frac, TABLES["exp"]).max() <= BOUNDS["exp"]


@SETTINGS
@given(st.data())
def test_recip_within_bound(data) -> None:
    v = _raw_array(data.draw, 1, 2**62)
    v_frac = data.draw(st.integers(-20, 40))
    assert _recip_rel(v, v_frac, TABLES["recip"]).max() <= BOUNDS["recip"]


@SETTINGS
@given(st.data())
def test_rsqrt_within_bound(data) -> None:
    u = _raw_array(data.draw, 1, 2**62)
    u_frac = data.draw(st.integers(-21, 41))
    assert _rsqrt_rel(u, u_frac, TABLES["rsqrt"]).max() <= BOUNDS["rsqrt"]


# Non-default tables: random inputs finer than max_abs_error's grid may exceed the measured
# value only by a fraction of a table ulp (the floor in the interpolation).
CUSTOM = {
    "gelu": build_gelu_table(6, 4.0, Fixed(14, 0, signed=False)),
    "exp": build_exp_table(7, 8.0, Fixed(13, 1, signed=False, rounding="TRN")),
    "recip": build_recip_table(5, 4, Fixed(12, 1, signed=False)),
    "rsqrt": build_rsqrt_table(4, 6, Fixed(15, 2, signed=False)),
}


@pytest.mark.parametrize("name", list(CUSTOM))
def test_custom_tables_respect_their_measured_error(name: str) -> None:
    table = CUSTOM[name]
    rng = np.random.default_rng(1234)
    slack = 2.0**-table.fmt.frac_bits
    if name == "gelu":
        err = _gelu_err(rng.integers(-6 << 24, 6 << 24, 50_000), 24, table, WIDE)
    elif name == "exp":
        err = _exp_err(-rng.integers(0, 10 << 24, 50_000), 24, table)
    elif name == "recip":
        err = _recip_rel(rng.integers(1, 2**40, 50_000), 13, table)
        slack *= 2  # relative to a mantissa >= 1/2
    else:
        err = _rsqrt_rel(rng.integers(1, 2**40, 50_000), 13, table)
        slack *= 2
    measured = table.max_abs_error()
    assert err.max() <= measured + slack
    assert err.max() > 0.5 * measured  # the measurement is not wildly pessimistic either


def test_gelu_coarse_table_error_reported() -> None:
    """A short GELU range truncates δ (δ(4) ≈ 1.3e-4); the measurement must see it."""
    assert CUSTOM["gelu"].max_abs_error() > 1.2e-4


# ------------------------------------------------------------------------------ exactness


def test_gelu_hits_table_at_grid_points() -> None:
    table = TABLES["gelu_delta"]
    Ft, s, N = table.fmt.frac_bits, table.step_bits, table.n_segments
    out = Fixed(40, 8, signed=True)
    assert out.frac_bits >= Ft
    i = np.arange(N, dtype=np.int64)
    for h_frac in (s - 3, s, s + 4, s + 13):  # includes h_frac < s
        if h_frac >= s:
            h, i_eff = i << (h_frac - s), i
        else:  # only every 2**(s - h_frac)-th entry is reachable
            h = i >> (s - h_frac)
            i_eff = h << (s - h_frac)
        neg = gelu(-h, h_frac, table, out)
        assert np.array_equal(neg, -(table.values[i_eff] << (out.frac_bits - Ft)))


def test_exp_hits_table_at_grid_points() -> None:
    table = TABLES["exp"]
    s, N = table.step_bits, table.n_segments
    i = np.arange(N, dtype=np.int64)
    for extra in (0, 5, 12):
        assert np.array_equal(exp_neg(-(i << extra), s + extra, table), table.values[:N])
    # Coarser input than the grid: d = -j * 2**-2 lands on entry j << (s - 2).
    j = np.arange(N >> (s - 2), dtype=np.int64)
    assert np.array_equal(exp_neg(-j, 2, table), table.values[j << (s - 2)])
    assert exp_neg(0, 0, table) == 1 << 16


def test_recip_hits_table_at_grid_points() -> None:
    table = TABLES["recip"]
    n, N = table.index_bits, table.n_segments
    i = np.arange(N, dtype=np.int64)
    for shift, frac in ((0, n), (7, n + 7), (20, n - 3)):
        mant, e = recip((N + i) << shift, frac, table)
        assert np.array_equal(mant, table.values[:N])
        assert np.all(e == n + shift - frac)


def test_rsqrt_hits_table_at_grid_points() -> None:
    table = TABLES["rsqrt"]
    n = table.index_bits
    i = np.arange(table.n_segments, dtype=np.int64)
    for shift, frac in ((0, n), (6, n + 6), (4, n), (21, n + 1)):
        mant, h = rsqrt(((1 << n) + i) << shift, frac, table)
        assert np.array_equal(mant, table.values[:-1])
        assert np.all(h == (shift - (frac - n)) // 2)


def test_range_reduction_special_values() -> None:
    r, q = TABLES["recip"], TABLES["rsqrt"]
    assert tuple(int(x) for x in recip(1, 0, r)) == (1 << 16, 0)
    assert tuple(int(x) for x in recip(3 << 10, 10, r)) == (int(r.values[128]), 1)
    assert tuple(int(x) for x in rsqrt(1, 0, q)) == (1 << 16, 0)
    assert tuple(int(x) for x in rsqrt(4, 0, q)) == (1 << 16, 1)
    assert tuple(int(x) for x in rsqrt(2, 0, q)) == (int(q.values[128]), 0)
    assert tuple(int(x) for x in rsqrt(1, 2, q)) == (1 << 16, -1)  # 1/sqrt(1/4) = 2
    assert tuple(int(x) for x in rsqrt(1, 3, q)) == (int(q.values[128]), -2)  # sqrt(8)
    mant, h = rsqrt(np.array([[1, 4], [16, 64]]), 0, q)
    assert mant.shape == h.shape == (2, 2)


# ------------------------------------------------------------------------------ monotonicity


def test_exp_monotone() -> None:
    d = np.arange(-(17 << 12), 1, dtype=np.int64)
    y = exp_neg(d, 12, TABLES["exp"])
    assert np.all(np.diff(y) >= 0)
    assert y[0] == 0 and y[-1] == 1 << 16


@pytest.mark.parametrize("name", ["recip", "rsqrt"])
def test_range_reduced_monotone(name: str) -> None:
    table = TABLES[name]
    fn = recip if name == "recip" else rsqrt
    rng = np.random.default_rng(7)
    x = np.unique(
        np.concatenate(
            [
                np.arange(1, 1 << 16, dtype=np.int64),
                rng.integers(1, 2**50, 100_000),
                ((np.int64(1) << np.arange(1, 62)) + np.array([[-1], [0], [1]])).ravel(),
            ]
        )
    )
    mant, e = fn(x, 9, table)
    val = np.ldexp(mant.astype(np.float64), -e)  # exact: mant < 2**17
    assert np.all(np.diff(val) <= 0)


# ------------------------------------------------------------------------------ GELU limits


def test_gelu_limits() -> None:
    table = TABLES["gelu_delta"]
    out = Fixed(24, 8, signed=True)
    assert int(gelu(0, 12, table, out)) == 0
    big = np.array([8 << 12, 9 << 12, 100 << 12, (1 << 19) - 1], dtype=np.int64)
    assert np.array_equal(gelu(big, 12, table, out), big << (out.frac_bits - 12))
    assert np.array_equal(gelu(-big, 12, table, out), np.zeros(4, dtype=np.int64))
    # Output saturates like any requantize.
    assert int(gelu(1000 << 4, 4, table, out)) == (1 << 23) - 1
    # Coarse inputs (h_frac < s) still give relu exactly far out.
    assert int(gelu(9, 0, table, out)) == 9 << out.frac_bits


def test_gelu_peak_delta() -> None:
    """Around a ≈ 0.75 GELU dips to its minimum ≈ -0.17."""
    y = gelu(-np.arange(0, 3 << 10), 10, TABLES["gelu_delta"], WIDE)
    assert -0.171 < WIDE.to_float(y).min() < -0.169


# ------------------------------------------------------------------------------ errors


def test_domain_errors() -> None:
    with pytest.raises(ValueError, match="d <= 0"):
        exp_neg(np.array([-3, 1]), 4, TABLES["exp"])
    with pytest.raises(ValueError, match="v > 0"):
        recip(np.array([5, 0]), 4, TABLES["recip"])
    with pytest.raises(ValueError, match="u > 0"):
        rsqrt(-1, 4, TABLES["rsqrt"])
    with pytest.raises(TypeError):
        exp_neg(np.array([-0.5]), 4, TABLES["exp"])
    with pytest.raises(ValueError, match="'exp' Table"):
        exp_neg(-1, 4, TABLES["recip"])
    with pytest.raises(ValueError, match="d_frac"):
        exp_neg(-1, 4.0, TABLES["exp"])
    with pytest.raises(ValueError, match="overflow"):
        exp_neg(-1, 60, TABLES["exp"])  # 54 interpolation bits
    with pytest.raises(ValueError, match="overflow"):
        gelu(np.int64(1) << 50, 0, TABLES["gelu_delta"], WIDE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gelu_range": 6.0},
        {"gelu_range": 0.5},
        {"exp_range": 3.0},
        {"exp_range": float("inf")},
        {"exp_index_bits": 3},  # range 16 > 2**3
        {"gelu_index_bits": 0},
        {"recip_index_bits": 17},
        {"rsqrt_index_bits": 2.0},
        {"guard_bits": -1},
        {"guard_bits": 25},
        {"table_width": 18},  # GELU would need 19 bits
        {"table_width": 1},
    ],
)
def test_build_tables_rejects(kwargs) -> None:
    with pytest.raises(ValueError):
        build_tables(**kwargs)


def test_builder_format_errors() -> None:
    with pytest.raises(ValueError, match="unsigned"):
        build_exp_table(fmt=Fixed(17, 1, signed=True))
    with pytest.raises(ValueError, match="18"):
        build_recip_table(fmt=Fixed(19, 1, signed=False))
    with pytest.raises(ValueError, match="integer bit"):
        build_rsqrt_table(fmt=Fixed(17, 0, signed=False))


def test_table_is_immutable_and_hashable() -> None:
    t = TABLES["recip"]
    with pytest.raises(ValueError):
        t.values[0] = 0
    again = build_tables()["recip"]
    assert again == t and hash(again) == hash(t)
    assert again != TABLES["rsqrt"]
    assert build_recip_table(guard_bits=9) != t
    with pytest.raises(ValueError, match="entries"):
        Table("recip", t.values[:-1], t.fmt, t.index_bits, t.guard_bits, 1.0)


def test_table_width_option() -> None:
    small = build_tables(table_width=12)
    assert small["gelu_delta"].fmt == Fixed(13, 0, signed=False)
    assert small["exp"].fmt == Fixed(12, 1, signed=False)
    assert small["exp"].values[0] == 1 << 11
