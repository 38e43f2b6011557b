"""Lookup tables for the accelerator's nonlinear functions and their bit-exact evaluators.

Every nonlinear function (GELU, exp, reciprocal, rsqrt) is a ROM of integers built here and
rendered unchanged into the numpy golden executor, the HLS C++ and the SystemVerilog. The
evaluators below are the reference for the other two implementations, so they use only integer
operations that map one-to-one onto C++ and Verilog: shifts (right shifts are arithmetic, i.e.
floor), masks, compares, one multiply and one add per lookup. Floats appear only in the
builders and in the error measurements.

Every evaluator linearly interpolates between two neighbouring entries:
``y = T[i] + (((T[i+1] - T[i]) * r) >> G)`` where ``r`` holds the low ``G`` bits of the
(normalised) input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fixed import Fixed, requantize

__all__ = [
    "TABLE_NAMES",
    "Table",
    "bit_length",
    "build_exp_table",
    "build_gelu_table",
    "build_recip_table",
    "build_rsqrt_table",
    "build_tables",
    "exp_neg",
    "gelu",
    "recip",
    "rsqrt",
]

TABLE_NAMES = ("gelu_delta", "exp", "recip", "rsqrt")
GELU_KINDS = ("erf", "tanh")  # the gelu_delta table's `kind`: exact GELU, tanh approximation

_INT64_MAX = int(np.iinfo(np.int64).max)
# A table entry must fit one BRAM18 word and the 18-bit port of a DSP48E2.
_MAX_TABLE_WIDTH = 18
# Keeps ROMs small and every intermediate comfortably inside int64.
_MAX_INDEX_BITS = 16
_MAX_GUARD_BITS = 24
# Fraction bits accepted for evaluator inputs; beyond these the int64 shifts could overflow.
_MIN_FRAC, _MAX_FRAC = -32, 62

# Grid used by Table.max_abs_error: inputs carry this many fraction bits (GELU, exp).
_MEASURE_FRAC = 16
# Input range of the GELU measurement.
_GELU_MEASURE_RANGE = 10.0


# ----------------------------------------------------------------------------------------------
# Table container
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Table:
    """One ROM: its integer entries plus every parameter an evaluator needs to address it.

    ``values`` are raw integers of the unsigned format ``fmt``. For "gelu_delta" and "exp",
    ``domain`` is the covered input range ([0, A] and [-R, 0]) and ``guard_bits`` is 0 (the
    interpolation fraction comes from the input format). For "recip" and "rsqrt", ``domain`` is
    1.0 and ``guard_bits`` is the number of interpolation fraction bits kept after range
    reduction. Equality and hashing compare parameters and contents, so tables can key caches.
    """

    name: str
    values: np.ndarray
    fmt: Fixed
    index_bits: int
    guard_bits: int
    domain: float
    kind: int = 0  # which function: GELU_KINDS index for "gelu_delta", 0 for the others

    def __post_init__(self) -> None:
        if self.name not in TABLE_NAMES:
            raise ValueError(f"unknown table name {self.name!r}; expected one of {TABLE_NAMES}")
        _check_int(self.index_bits, "index_bits", 1, _MAX_INDEX_BITS)
        _check_int(self.guard_bits, "guard_bits", 0, _MAX_GUARD_BITS)
        _check_table_fmt(self.fmt, needs_one=self.name != "gelu_delta")
        kinds = len(GELU_KINDS) if self.name == "gelu_delta" else 1
        if self.kind not in range(kinds):
            raise ValueError(f"{self.name}: kind {self.kind!r} must be in 0..{kinds - 1}")
        if self.name in ("gelu_delta", "exp"):
            if self.guard_bits != 0:
                raise ValueError(
                    f"{self.name} takes its interpolation bits from the input; "
                    f"guard_bits must be 0, got {self.guard_bits}"
                )
            _check_domain(self.domain, self.index_bits, self.name)
        elif self.domain != 1.0:
            raise ValueError(f"{self.name} is range-reduced; domain must be 1.0, got {self.domain}")
        vals = np.array(self.values, dtype=np.int64, copy=True)
        if vals.ndim != 1 or vals.shape[0] != self.n_entries:
            raise ValueError(f"{self.name} needs {self.n_entries} entries, got shape {vals.shape}")
        if vals.min() < 0 or vals.max() >= (1 << self.fmt.width):
            raise ValueError(f"{self.name} entries do not fit {self.fmt}")
        vals.setflags(write=False)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "domain", float(self.domain))

    @property
    def n_segments(self) -> int:
        """Interpolation segments (N for most tables, 3N for rsqrt's [1, 4) mantissa)."""
        n = 1 << self.index_bits
        return 3 * n if self.name == "rsqrt" else n

    @property
    def n_entries(self) -> int:
        """ROM depth: one more entry than segments so segment i can read T[i + 1]."""
        return self.n_segments + 1

    @property
    def step_bits(self) -> int:
        """s with grid step 2**-s (for the range-reduced tables, the step of the mantissa)."""
        if self.name in ("gelu_delta", "exp"):
            return self.index_bits - _log2_exact(self.domain)
        return self.index_bits

    def max_abs_error(self) -> float:
        """Worst error of this table's evaluator vs the exact function, measured densely.

        Absolute for "gelu_delta" (on GELU itself) and "exp"; *relative* for "recip" and "rsqrt"
        (their outputs are a mantissa with a free exponent). GELU and exp are measured on the
        2**-16 input grid; inputs with more fraction bits can exceed it by under one table ulp
        (the interpolation's floor), ~5e-8 for the defaults. recip/rsqrt reach every
        normalised mantissa (exhaustively while n + G <= 18) plus the worst truncation.
        The output format's own rounding (GELU) is not included. Cached: it takes ~0.1-0.3 s.
        """
        cached = self.__dict__.get("_max_abs_error")
        if cached is None:
            cached = float(_MEASURERS[self.name](self))
            object.__setattr__(self, "_max_abs_error", cached)
        return cached

    def _key(self) -> tuple[Any, ...]:
        return (self.name, self.fmt, self.index_bits, self.guard_bits, self.domain, self.kind)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Table):
            return NotImplemented
        return self._key() == other._key() and np.array_equal(self.values, other.values)

    def __hash__(self) -> int:
        return hash((*self._key(), self.values.tobytes()))


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_int(x: object, name: str, lo: int, hi: int) -> int:
    if not _is_int(x) or not lo <= int(x) <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {x!r}")
    return int(x)


def _log2_exact(x: float) -> int:
    """log2 of a power of two given as a float, or ValueError."""
    if not isinstance(x, (int, float, np.integer, np.floating)) or isinstance(x, bool):
        raise ValueError(f"expected a power of two, got {x!r}")
    x = float(x)
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"expected a positive power of two, got {x}")
    m, e = math.frexp(x)
    if m != 0.5:
        raise ValueError(f"expected a power of two, got {x}")
    return e - 1


def _check_domain(domain: float, index_bits: int, name: str) -> int:
    """Domain must be a power of two in [1, 2**index_bits] so the grid step is 2**-s, s >= 0."""
    try:
        k = _log2_exact(domain)
    except ValueError as exc:
        raise ValueError(f"{name} range: {exc}") from None
    if not 0 <= k <= index_bits:
        raise ValueError(
            f"{name} range must be in [1, 2**index_bits = {1 << index_bits}] so "
            f"that segments are at most 1 wide, got {domain}"
        )
    return index_bits - k


def _check_table_fmt(fmt: Fixed, *, needs_one: bool) -> None:
    if not isinstance(fmt, Fixed):
        raise ValueError(f"table format must be a Fixed, got {fmt!r}")
    if fmt.signed:
        raise ValueError(f"table entries are unsigned; got signed format {fmt}")
    if fmt.width > _MAX_TABLE_WIDTH:
        raise ValueError(
            f"table width must be <= {_MAX_TABLE_WIDTH} bits (one BRAM18 word, one "
            f"DSP48E2 port), got {fmt.width}"
        )
    if fmt.frac_bits < 1:
        raise ValueError(f"table format needs fraction bits, got {fmt}")
    if needs_one and fmt.int_bits < 1:
        raise ValueError(f"this table stores 1.0 exactly and needs >= 1 integer bit, got {fmt}")


def _as_raw(x: Any, name: str) -> np.ndarray:
    """Raw fixed-point input as int64; refuses floats so an unquantised value cannot sneak in."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(f"{name} must hold raw integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > _INT64_MAX:
        raise ValueError(f"{name} does not fit int64")
    return arr.astype(np.int64)


def _check_frac(frac: object, name: str) -> int:
    return _check_int(frac, name, _MIN_FRAC, _MAX_FRAC)


def _check_table(table: object, name: str) -> Table:
    if not isinstance(table, Table) or table.name != name:
        got = table.name if isinstance(table, Table) else type(table).__name__
        raise ValueError(f"expected a {name!r} Table, got {got!r}")
    return table


# ----------------------------------------------------------------------------------------------
# Integer primitives (the steps C++ and Verilog re-implement)
# ----------------------------------------------------------------------------------------------


def bit_length(x: Any) -> np.ndarray:
    """Exact vectorised ``int.bit_length`` for non-negative int64 (0 for 0).

    A binary search over shifts, because ``floor(log2(float(x)))`` rounds up just below powers
    of two above 2**53; it is also what a priority encoder / ``__builtin_clzll`` computes.
    """
    y = _as_raw(x, "x")
    if np.any(y < 0):
        raise ValueError("bit_length is defined here for non-negative integers only")
    n = np.zeros_like(y)
    for k in (32, 16, 8, 4, 2, 1):
        big = y >= (1 << k)
        y = np.where(big, y >> k, y)
        n += np.where(big, k, 0)
    return n + (y > 0)


def _abs_sat(x: np.ndarray) -> np.ndarray:
    """|x|, with |INT64_MIN| saturated to INT64_MAX instead of wrapping negative."""
    a = np.abs(x)
    return np.where(a < 0, _INT64_MAX, a)


def _segment(a: np.ndarray, frac: int, s: int, n_seg: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Split a >= 0 (``frac`` fraction bits) into segment index and interpolation fraction.

    The grid step is 2**-s. If the input is finer than the grid, its low G = frac - s bits are
    the fraction; otherwise it lies on grid points and idx = a << (s - frac), r = 0. ``a`` is
    first clamped to a value that is still out of range (idx >= n_seg), which changes no result
    but keeps the int64 shifts from overflowing.
    """
    if frac >= s:
        G = frac - s
        a = np.minimum(a, min(n_seg << G, _INT64_MAX))
        return a >> G, a & ((1 << G) - 1), G
    t = s - frac
    a = np.minimum(a, max(n_seg >> t, 1))
    return a << t, np.zeros_like(a), 0


def _interp(table: Table, idx: np.ndarray, r: np.ndarray, G: int) -> np.ndarray:
    """T[idx] + (((T[idx+1] - T[idx]) * r) >> G); the caller guarantees 0 <= idx < n_segments."""
    if G + table.fmt.width + 1 > 63:
        raise ValueError(
            f"input has {G} interpolation bits; the product with a {table.fmt.width}"
            f"-bit table difference would overflow int64 (use fewer fraction bits)"
        )
    t0 = table.values[idx]
    t1 = table.values[idx + 1]
    return np.asarray(t0 + (((t1 - t0) * r) >> G), dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------


def _gelu_delta_float(a: np.ndarray, kind: int = 0) -> np.ndarray:
    """δ(a) = relu(a) - GELU(a) for a >= 0, which is even in a for both GELUs (their
    odd parts cancel): 0.5·a·erfc(a/√2) (erf, via math.erfc: numpy has none) or
    0.5·a·(1 - tanh(√(2/π)·(a + 0.044715·a³))) (tanh approximation)."""
    a = np.asarray(a, dtype=np.float64)
    if GELU_KINDS[kind] == "tanh":
        return 0.5 * a * (1.0 - np.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a**3)))
    erfc = np.frompyfunc(math.erfc, 1, 1)
    return 0.5 * a * erfc(a / math.sqrt(2.0)).astype(np.float64)


def build_gelu_table(
    index_bits: int = 8, domain: float = 8.0, fmt: Fixed | None = None, kind: str = "erf"
) -> Table:
    """δ(a) sampled at i·2**-s, i = 0..N, over [0, domain] (GELU = relu - δ(|x|)); `kind`
    the GELU: "erf" (exact) or "tanh" (the tanh approximation)."""
    if kind not in GELU_KINDS:
        raise ValueError(f"gelu kind {kind!r} must be one of {GELU_KINDS}")
    n = _check_int(index_bits, "gelu index_bits", 1, _MAX_INDEX_BITS)
    s = _check_domain(domain, n, "gelu")
    fmt = Fixed(18, 0, signed=False, rounding="RND") if fmt is None else fmt
    _check_table_fmt(fmt, needs_one=False)
    grid = np.arange((1 << n) + 1, dtype=np.float64) * 2.0**-s
    code = GELU_KINDS.index(kind)
    values = fmt.quantize(_gelu_delta_float(grid, code))
    return Table("gelu_delta", values, fmt, n, 0, float(domain), code)


def build_exp_table(index_bits: int = 10, domain: float = 16.0, fmt: Fixed | None = None) -> Table:
    """exp(-i·2**-s), i = 0..N, over [-domain, 0]; arguments below -domain give 0."""
    n = _check_int(index_bits, "exp index_bits", 1, _MAX_INDEX_BITS)
    s = _check_domain(domain, n, "exp")
    fmt = Fixed(17, 1, signed=False, rounding="RND") if fmt is None else fmt
    _check_table_fmt(fmt, needs_one=True)
    grid = np.arange((1 << n) + 1, dtype=np.float64) * 2.0**-s
    return Table("exp", fmt.quantize(np.exp(-grid)), fmt, n, 0, float(domain))


def build_recip_table(index_bits: int = 8, guard_bits: int = 10, fmt: Fixed | None = None) -> Table:
    """1/m for mantissa m = 1 + i/N in [1, 2], i = 0..N (the evaluator supplies the exponent)."""
    n = _check_int(index_bits, "recip index_bits", 1, _MAX_INDEX_BITS)
    g = _check_int(guard_bits, "recip guard_bits", 0, _MAX_GUARD_BITS)
    fmt = Fixed(17, 1, signed=False, rounding="RND") if fmt is None else fmt
    _check_table_fmt(fmt, needs_one=True)
    m = 1.0 + np.arange((1 << n) + 1, dtype=np.float64) / (1 << n)
    return Table("recip", fmt.quantize(1.0 / m), fmt, n, g, 1.0)


def build_rsqrt_table(index_bits: int = 7, guard_bits: int = 10, fmt: Fixed | None = None) -> Table:
    """1/sqrt(m) for m = 1 + i/N in [1, 4], i = 0..3N (even exponent, so m spans two octaves)."""
    n = _check_int(index_bits, "rsqrt index_bits", 1, _MAX_INDEX_BITS)
    g = _check_int(guard_bits, "rsqrt guard_bits", 0, _MAX_GUARD_BITS)
    fmt = Fixed(17, 1, signed=False, rounding="RND") if fmt is None else fmt
    _check_table_fmt(fmt, needs_one=True)
    m = 1.0 + np.arange(3 * (1 << n) + 1, dtype=np.float64) / (1 << n)
    return Table("rsqrt", fmt.quantize(1.0 / np.sqrt(m)), fmt, n, g, 1.0)


def build_tables(
    *,
    gelu_index_bits: int = 8,
    gelu_range: float = 8.0,
    exp_index_bits: int = 10,
    exp_range: float = 16.0,
    recip_index_bits: int = 8,
    rsqrt_index_bits: int = 7,
    guard_bits: int = 10,
    table_width: int = 17,
    gelu: str = "erf",
) -> dict[str, Table]:
    """All four tables of the accelerator, keyed by name.

    exp/recip/rsqrt entries are ufixed<table_width, 1> (they hold 1.0 exactly). GELU's δ is
    < 0.17, so its entries are ufixed<table_width + 1, 0>: the integer bit is traded for one
    more fraction bit while staying within 18 bits; hence table_width <= 17.
    """
    w = _check_int(table_width, "table_width", 2, _MAX_TABLE_WIDTH - 1)
    one_int = Fixed(w, 1, signed=False, rounding="RND")
    return {
        "gelu_delta": build_gelu_table(
            gelu_index_bits, gelu_range, Fixed(w + 1, 0, signed=False, rounding="RND"), gelu
        ),
        "exp": build_exp_table(exp_index_bits, exp_range, one_int),
        "recip": build_recip_table(recip_index_bits, guard_bits, one_int),
        "rsqrt": build_rsqrt_table(rsqrt_index_bits, guard_bits, one_int),
    }


# ----------------------------------------------------------------------------------------------
# Evaluators (bit-exact contract)
# ----------------------------------------------------------------------------------------------


def gelu(h_raw: Any, h_frac: int, table: Table, out_fmt: Fixed) -> np.ndarray:
    """GELU(h) = relu(h) - δ(|h|) for raw h with ``h_frac`` fraction bits, as raw ``out_fmt``.

    Steps: a = |h|; (idx, r, G) from a on the table grid; d = interp if idx < N else 0;
    F = max(h_frac, Ft); v = (relu(h) << (F - h_frac)) - (d << (F - Ft));
    requantize(v, F, out_fmt). The only rounding besides the table is out_fmt's.
    """
    table = _check_table(table, "gelu_delta")
    h = _as_raw(h_raw, "h_raw")
    h_frac = _check_frac(h_frac, "h_frac")
    Ft = table.fmt.frac_bits
    N = table.n_segments
    F = max(h_frac, Ft)
    if h.size and int(np.max(_abs_sat(h))).bit_length() + (F - h_frac) > 62:
        raise ValueError("h_raw too large: relu(h) << (F - h_frac) would overflow int64")
    a = _abs_sat(h)
    idx, r, G = _segment(a, h_frac, table.step_bits, N)
    inside = idx < N
    d = np.where(inside, _interp(table, np.minimum(idx, N - 1), r, G), 0)
    relu = np.maximum(h, 0)
    v = (relu << (F - h_frac)) - (d << (F - Ft))
    return np.asarray(requantize(v, F, out_fmt), dtype=np.int64)


def exp_neg(d_raw: Any, d_frac: int, table: Table) -> np.ndarray:
    """exp(d) for raw d <= 0 with ``d_frac`` fraction bits, as raw with table.fmt.frac_bits.

    Steps: a = -d; (idx, r, G) from a on the table grid; interp if idx < N else 0. Softmax only
    ever asks for exp(x - max) <= 1, so positive arguments are a caller bug and raise.
    """
    table = _check_table(table, "exp")
    d = _as_raw(d_raw, "d_raw")
    d_frac = _check_frac(d_frac, "d_frac")
    if np.any(d > 0):
        raise ValueError("exp_neg needs d <= 0 (softmax subtracts the running maximum first)")
    N = table.n_segments
    a = _abs_sat(d)
    idx, r, G = _segment(a, d_frac, table.step_bits, N)
    y = _interp(table, np.minimum(idx, N - 1), r, G)
    return np.asarray(np.where(idx < N, y, 0), dtype=np.int64)


def recip(v_raw: Any, v_frac: int, table: Table) -> tuple[np.ndarray, np.ndarray]:
    """1/v for raw v > 0 as (mant, exp) with 1/v ≈ mant · 2**-(Ft + exp).

    Steps: p = bit_length(v) - 1; L = n + G; norm = v << (L - p) if p <= L else v >> (p - L)
    (truncating); idx = (norm >> G) - N; r = norm & (2**G - 1); mant = interp; exp = p - v_frac.
    """
    table = _check_table(table, "recip")
    v = _as_raw(v_raw, "v_raw")
    v_frac = _check_frac(v_frac, "v_frac")
    if np.any(v <= 0):
        raise ValueError("recip needs v > 0")
    G = table.guard_bits
    L = table.index_bits + G
    p = bit_length(v) - 1
    k = L - p
    norm = np.where(k >= 0, v << np.maximum(k, 0), v >> np.maximum(-k, 0))
    idx = (norm >> G) - (1 << table.index_bits)
    mant = _interp(table, idx, norm & ((1 << G) - 1), G)
    return mant, np.asarray(p - v_frac, dtype=np.int64)


def rsqrt(u_raw: Any, u_frac: int, table: Table) -> tuple[np.ndarray, np.ndarray]:
    """1/sqrt(u) for raw u > 0 as (mant, half_exp) with 1/sqrt(u) ≈ mant · 2**-(Ft + half_exp).

    Steps: p = bit_length(u) - 1; e = p - u_frac; e2 = e - (e & 1) (floor to even);
    L = n + G; k = L - (e2 + u_frac); norm = u << k if k >= 0 else u >> -k (truncating);
    idx = (norm >> G) - N in [0, 3N); r = norm & (2**G - 1); mant = interp; half_exp = e2 >> 1.
    """
    table = _check_table(table, "rsqrt")
    u = _as_raw(u_raw, "u_raw")
    u_frac = _check_frac(u_frac, "u_frac")
    if np.any(u <= 0):
        raise ValueError("rsqrt needs u > 0")
    G = table.guard_bits
    L = table.index_bits + G
    e = bit_length(u) - 1 - u_frac
    e2 = e - (e & 1)
    k = L - (e2 + u_frac)
    norm = np.where(k >= 0, u << np.maximum(k, 0), u >> np.maximum(-k, 0))
    idx = (norm >> G) - (1 << table.index_bits)
    mant = _interp(table, idx, norm & ((1 << G) - 1), G)
    return mant, np.asarray(e2 >> 1, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Worst-case error measurement
# ----------------------------------------------------------------------------------------------


def _measure_gelu(table: Table) -> float:
    """Max |gelu - GELU| for h on the 2**-16 grid over [-10, 10], output exact (wide out_fmt)."""
    frac = _MEASURE_FRAC
    lim = int(_GELU_MEASURE_RANGE) << frac
    mags = np.arange(0, lim + 1, dtype=np.int64)
    out_frac = max(frac, table.fmt.frac_bits) + 4
    wide = Fixed(out_frac + 8, 8, signed=True, rounding="TRN")
    delta = _gelu_delta_float(mags * 2.0**-frac, table.kind)
    err = 0.0
    for sign in (1, -1):
        h = sign * mags
        got = gelu(h, frac, table, wide).astype(np.float64) * 2.0**-out_frac
        ref = np.maximum(h * 2.0**-frac, 0.0) - delta
        err = max(err, float(np.max(np.abs(got - ref))))
    return err


def _measure_exp(table: Table) -> float:
    """Max |exp_neg - exp| for d on the 2**-16 grid over [-R - 1, 0]."""
    frac = _MEASURE_FRAC
    d = -np.arange(0, (int(table.domain) + 1) << frac, dtype=np.int64)
    got = exp_neg(d, frac, table).astype(np.float64) * 2.0**-table.fmt.frac_bits
    return float(np.max(np.abs(got - np.exp(d * 2.0**-frac))))


def _reduction_grid(table: Table) -> np.ndarray:
    """Inputs reaching every normalised mantissa, both exponent parities and worst truncation.

    base spans the octave [2**L, 2**(L+1)) (exhaustively unless L > 18, then strided), so it
    reaches every norm with no truncation; base << 1 flips the exponent parity (rsqrt). The
    error is monotone in the bits that the right shift drops, so its extremes are at "none
    dropped" (base) and "all ones dropped": base << j plus 2**j - 1 for a large j of each parity.
    """
    L = table.index_bits + table.guard_bits
    stride = max(1, (1 << L) >> 18)
    base = (1 << L) + np.arange(0, 1 << L, stride, dtype=np.int64)
    parts = [base, base << 1]
    parts += [(base << j) + ((1 << j) - 1) for j in (20, 21)]
    return np.concatenate(parts)


def _measure_recip(table: Table) -> float:
    """Max relative error |mant·2**-(Ft+exp) · v - 1| (v_frac = 0; the error ignores v_frac)."""
    v = _reduction_grid(table)
    mant, e = recip(v, 0, table)
    prod = mant.astype(np.float64) * v.astype(np.float64)
    rel = np.ldexp(prod, -(table.fmt.frac_bits + e)) - 1.0
    return float(np.max(np.abs(rel)))


def _measure_rsqrt(table: Table) -> float:
    """Max relative error |mant·2**-(Ft+half_exp) · sqrt(u) - 1|, both exponent parities."""
    u = _reduction_grid(table)
    mant, h = rsqrt(u, 0, table)
    prod = mant.astype(np.float64) * np.sqrt(u.astype(np.float64))
    rel = np.ldexp(prod, -(table.fmt.frac_bits + h)) - 1.0
    return float(np.max(np.abs(rel)))


_MEASURERS = {
    "gelu_delta": _measure_gelu,
    "exp": _measure_exp,
    "recip": _measure_recip,
    "rsqrt": _measure_rsqrt,
}
