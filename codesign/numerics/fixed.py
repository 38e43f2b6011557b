"""Fixed-point formats with the exact semantics of Vitis ``ap_fixed`` / ``ap_ufixed``.

Every number the accelerator produces is defined by this module: the golden executor,
the HLS kernels and the RTL all implement :func:`shift_round` and :func:`apply_overflow`
with the same run-time mode codes, and tests check the results bit for bit against the
real ``ap_types`` headers compiled with g++.

Representation: a value is its raw integer bit pattern, sign-extended into numpy
``int64``; value = raw * 2**-frac_bits. Quantisation happens first, then overflow.

Supported ranges (validated or documented, not silently wrong):

* ``width`` 1..63, ``int_bits`` -512..512 (so ``frac_bits`` -511..575). ``AP_WRAP_SM``
  and the saturation-bit count ``N`` of ap_fixed are not modelled (always 0).
* :func:`shift_round` / :func:`requantize` / :meth:`Fixed.from_raw`: exact for any int64
  raw when ``0 < shift <= 63``; for larger shifts they need ``|raw| < 2**62``. A left
  shift (``shift <= 0``) is exact while the result fits int64; requantize additionally
  saturates correctly however far it overflows, and wraps correctly (mod 2**width).
* :meth:`Fixed.quantize` is exact for every finite double, including huge values (WRAP
  keeps the exact low bits), subnormals and -0.0. ``+-inf`` behaves like ap_fixed,
  which reads it as 2**1024: SAT modes clamp, WRAP gives 0. NaN raises ``ValueError``
  (ap_fixed only warns and produces an arbitrary pattern).
* :meth:`Fixed.to_float` is exact while ``|raw| < 2**53``.

ap_fixed behaviour matched on purpose, which a naive reading of the docs misses:

* AP_SAT_SYM on a signed type clamps negatives to ``-max`` (never produces the most
  negative pattern), *except* for a 1-bit signed type where -1 is kept (there ``max`` is
  0, so ap_fixed falls back to plain SAT). :attr:`Fixed.raw_min` reports this bound.

Not matched: none known beyond NaN. C-simulation caveat (not a numeric difference): an
ap_fixed-to-ap_fixed assignment that drops more fractional bits than the source has bits
in total (F_src - F_dst > W_src) with a rounding mode other than TRN (or TRN_ZERO from
an unsigned source) aborts on an ``assert`` in ap_private's get_bit unless compiled with
``-DNDEBUG``; with it, the result equals this module's. Kernels must avoid such casts.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "OVERFLOW",
    "OVERFLOW_CODE",
    "ROUNDING",
    "ROUNDING_CODE",
    "Fixed",
    "apply_overflow",
    "count_overflow",
    "requantize",
    "shift_round",
]

ROUNDING = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV")
OVERFLOW = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")
ROUNDING_CODE = {name: i for i, name in enumerate(ROUNDING)}
OVERFLOW_CODE = {name: i for i, name in enumerate(OVERFLOW)}

MAX_WIDTH = 63
MAX_ABS_INT_BITS = 512

_TWO62 = float(2**62)
_TWO63 = float(2**63)


# --------------------------------------------------------------------------- helpers


def _mode(value: str | int, names: tuple[str, ...], kind: str) -> str:
    """Normalise a mode given as name ('RND', 'AP_RND', 'rnd') or numeric code."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= int(value) < len(names):
            return names[int(value)]
        raise ValueError(f"{kind} code {value} out of range 0..{len(names) - 1}")
    if isinstance(value, str):
        key = value.strip().upper()
        key = key.removeprefix("AP_")
        if key in names:
            return key
    raise ValueError(f"unknown {kind} mode {value!r}; expected one of {', '.join(names)}")


def _raw_bounds(width: int, signed: bool, overflow: str = "SAT") -> tuple[int, int]:
    """Smallest and largest raw integer a format can produce under its overflow mode."""
    if signed:
        hi = (1 << (width - 1)) - 1
        lo = -max(hi, 1) if overflow == "SAT_SYM" else -(1 << (width - 1))
    else:
        hi = (1 << width) - 1
        lo = 0
    return lo, hi


def _as_int64(raw) -> np.ndarray:
    arr = np.asarray(raw)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("raw values must be integers")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"raw values must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _round_increment(code: int, neg, gt, eq, nz, odd) -> np.ndarray:
    """0/1 to add to the floor, from the discarded part: > half, == half, != 0.

    This is ap_fixed's quantization_adjust with the 'bit after LSB' and 'rest' flags
    recast as comparisons against one half; the same table drives HLS and RTL.
    """
    if code == 0:  # TRN: floor
        inc = np.zeros_like(nz)
    elif code == 1:  # TRN_ZERO: toward zero
        inc = neg & nz
    elif code == 2:  # RND: half toward +inf
        inc = gt | eq
    elif code == 3:  # RND_ZERO: half toward zero
        inc = gt | (eq & neg)
    elif code == 4:  # RND_MIN_INF: half toward -inf
        inc = gt
    elif code == 5:  # RND_INF: half away from zero
        inc = gt | (eq & ~neg)
    else:  # RND_CONV: half to even
        inc = gt | (eq & odd)
    return inc.astype(np.int64)


def _wrap(z: np.ndarray, width: int, signed: bool) -> np.ndarray:
    """Keep the low `width` bits (two's complement for signed); exact for any int64."""
    sh = np.uint64(64 - width)
    u = z.astype(np.int64).view(np.uint64) << sh
    if signed:
        return u.view(np.int64) >> np.int64(64 - width)
    return (u >> sh).view(np.int64)


def _overflow(z, width: int, signed: bool, overflow: str, over=None, under=None) -> np.ndarray:
    """Overflow handling; `over`/`under` may be given when `z` itself is not exact."""
    lo, hi = _raw_bounds(width, signed, overflow)
    z = np.asarray(z, dtype=np.int64)
    if overflow == "WRAP":
        return _wrap(z, width, signed)
    if over is None:
        over = z > hi
    if under is None:
        under = z < lo
    if overflow == "SAT_ZERO":
        return np.where(over | under, np.int64(0), z)
    return np.where(over, np.int64(hi), np.where(under, np.int64(lo), z))


# ----------------------------------------------------------------- free functions


def shift_round(raw, shift: int, rounding: str | int) -> np.ndarray:
    """Integer nearest raw * 2**-shift under `rounding`; shift <= 0 is an exact left shift.

    Integer ops only (floor via arithmetic shift, discarded bits via a mask), so products
    near 2**62 never pass through floats and nothing can overflow.
    """
    code = ROUNDING_CODE[_mode(rounding, ROUNDING, "rounding")]
    raw = _as_int64(raw)
    shift = int(shift)
    if shift <= 0:
        if -shift >= 64:
            return np.zeros_like(raw)
        return raw << np.int64(-shift)
    s = min(shift, 63)  # beyond 63 the result only depends on sign (needs |raw| < 2**62)
    floor = raw >> np.int64(s)
    rem = raw & np.int64((1 << s) - 1)
    half = np.int64(1 << (s - 1))
    inc = _round_increment(code, raw < 0, rem > half, rem == half, rem != 0, (floor & 1) != 0)
    return floor + inc


def apply_overflow(raw, width: int, signed: bool, overflow: str | int) -> np.ndarray:
    """Bring exact integers into `width` bits: WRAP (two's complement / modulo), SAT,
    SAT_ZERO or SAT_SYM. Valid for any int64 input."""
    _check_width(width)
    return _overflow(
        _as_int64(raw), int(width), bool(signed), _mode(overflow, OVERFLOW, "overflow")
    )


def requantize(raw, frac_in: int, fmt: Fixed) -> np.ndarray:
    """Assign raw values with `frac_in` fractional bits to `fmt`, like ap_fixed operator=."""
    raw = _as_int64(raw)
    shift = int(frac_in) - fmt.frac_bits
    if shift >= 0:
        return _overflow(shift_round(raw, shift, fmt.rounding), fmt.width, fmt.signed, fmt.overflow)
    # Left shift: decide saturation before shifting, since the shift may leave int64.
    k = -shift
    shifted = shift_round(raw, shift, "TRN")
    if fmt.overflow == "WRAP":
        return _wrap(shifted, fmt.width, fmt.signed)
    lo, hi = _raw_bounds(fmt.width, fmt.signed, fmt.overflow)
    over = raw > (hi >> k)
    under = raw < -((-lo) >> k)
    return _overflow(shifted, fmt.width, fmt.signed, fmt.overflow, over, under)


def count_overflow(raw, width: int, signed: bool) -> int:
    """How many integers lie outside the plain two's complement range of `width` bits."""
    _check_width(width)
    lo, hi = _raw_bounds(int(width), bool(signed), "WRAP")
    raw = _as_int64(raw)
    return int(np.count_nonzero((raw > hi) | (raw < lo)))


def _check_width(width) -> None:
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
        raise ValueError(f"width must be an int, got {width!r}")
    if not 1 <= int(width) <= MAX_WIDTH:
        raise ValueError(f"width must be in 1..{MAX_WIDTH}, got {width}")


# --------------------------------------------------------------------------- Fixed

_STR_RE = re.compile(r"^fx(\d+)\.(-?\d+)([su])(?:\s+(\w+))?(?:\s+(\w+))?$")
_CTYPE_RE = re.compile(
    r"^ap_(u?)fixed\s*<\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(\w+)\s*)?(?:,\s*(\w+)\s*)?>$"
)


@dataclass(frozen=True)
class Fixed:
    """An ap_fixed<width, int_bits, rounding, overflow> (or ap_ufixed) format.

    ``str(fmt)`` is ``fx<width>.<int_bits><s|u> <ROUNDING> <OVERFLOW>``, e.g.
    ``"fx16.6s RND SAT"``; :meth:`parse` reads that and also C++ type names.
    """

    width: int
    int_bits: int
    signed: bool = True
    rounding: str = "RND"
    overflow: str = "SAT"

    def __post_init__(self) -> None:
        _check_width(self.width)
        if isinstance(self.int_bits, bool) or not isinstance(self.int_bits, (int, np.integer)):
            raise ValueError(f"int_bits must be an int, got {self.int_bits!r}")
        if not -MAX_ABS_INT_BITS <= int(self.int_bits) <= MAX_ABS_INT_BITS:
            raise ValueError(
                f"int_bits must be in -{MAX_ABS_INT_BITS}..{MAX_ABS_INT_BITS}, got {self.int_bits}"
            )
        if not isinstance(self.signed, (bool, np.bool_)):
            raise ValueError(f"signed must be a bool, got {self.signed!r}")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "int_bits", int(self.int_bits))
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "rounding", _mode(self.rounding, ROUNDING, "rounding"))
        object.__setattr__(self, "overflow", _mode(self.overflow, OVERFLOW, "overflow"))

    # -- derived quantities
    @property
    def frac_bits(self) -> int:
        return self.width - self.int_bits

    @property
    def raw_min(self) -> int:
        """Smallest raw value this format produces (SAT_SYM: -raw_max, see module doc)."""
        return _raw_bounds(self.width, self.signed, self.overflow)[0]

    @property
    def raw_max(self) -> int:
        return _raw_bounds(self.width, self.signed, self.overflow)[1]

    @property
    def lsb(self) -> float:
        return math.ldexp(1.0, -self.frac_bits)

    @property
    def min_value(self) -> float:
        return math.ldexp(float(self.raw_min), -self.frac_bits)

    @property
    def max_value(self) -> float:
        return math.ldexp(float(self.raw_max), -self.frac_bits)

    @property
    def rounding_code(self) -> int:
        return ROUNDING_CODE[self.rounding]

    @property
    def overflow_code(self) -> int:
        return OVERFLOW_CODE[self.overflow]

    # -- conversions
    def _quantize_parts(self, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rounded raw values plus out-of-range flags, before overflow handling."""
        x = np.asarray(x, dtype=np.float64)
        if np.isnan(x).any():
            raise ValueError("cannot quantize NaN to a fixed-point format")
        f = self.frac_bits
        with np.errstate(all="ignore"):
            y = np.ldexp(x, f)
            # Underflow to zero must keep the sign information; +-1/4 rounds like any
            # nonzero value smaller than half an LSB.
            y = np.where((y == 0) & (x != 0), np.copysign(0.25, x), y)
            ay = np.abs(y)
            small = ay < _TWO62
            exact = (y >= -_TWO63) & (y < _TWO63)  # also includes `small`
            beyond = ~exact

            # Split |y| into integer and fraction: a - floor(a) is exact for a >= 0 (but
            # y - floor(y) is not for negative y, e.g. -0.49999999999999994).
            neg = y < 0
            a = np.where(small, ay, 0.0)
            ia = np.floor(a)
            da = a - ia
            nz = da != 0
            eq = da == 0.5
            gt = np.where(neg, nz & (da < 0.5), da > 0.5)  # vs the floor, not |y|'s floor
            ai = ia.astype(np.int64)
            fli = np.where(neg, -ai - nz.astype(np.int64), ai)
            inc = _round_increment(self.rounding_code, neg, gt, eq, nz, (fli & 1) != 0)
            z = np.where(small, fli + inc, np.where(exact, y, 0.0).astype(np.int64))

            if self.overflow == "WRAP" and beyond.any():
                # Keep the exact low bits: fmod is exact, and 2**int_bits scales to 2**width.
                finite = np.isfinite(x)
                r = np.fmod(np.where(finite, x, 0.0), math.ldexp(1.0, self.int_bits))
                zw = np.ldexp(r, f).astype(np.int64)  # |zw| < 2**width <= 2**63
                z = np.where(beyond, zw, z)  # inf reads as 2**1024 -> wraps to 0

        lo, hi = _raw_bounds(self.width, self.signed, self.overflow)
        over = (beyond & (y > 0)) | ((z > hi) & ~beyond)
        under = (beyond & (y < 0)) | ((z < lo) & ~beyond)
        return z, over, under

    def quantize(self, x) -> np.ndarray:
        """Raw int64 values of floats, bit-exact with ``ap_fixed<...>(double)``."""
        z, over, under = self._quantize_parts(x)
        if self.overflow == "WRAP":
            return _wrap(z, self.width, self.signed)
        return _overflow(z, self.width, self.signed, self.overflow, over, under)

    def to_float(self, raw) -> np.ndarray:
        return np.ldexp(_as_int64(raw).astype(np.float64), -self.frac_bits)

    def from_raw(self, raw, frac_bits: int) -> np.ndarray:
        """Requantise raw values holding `frac_bits` fractional bits into this format."""
        return requantize(raw, frac_bits, self)

    def saturations(self, x) -> int:
        """How many of `x` round to a value outside [min_value, max_value] (clipped by SAT,
        wrapped by WRAP); what calibration reports per tensor."""
        _, over, under = self._quantize_parts(x)
        return int(np.count_nonzero(over | under))

    # -- naming
    def ctype(self) -> str:
        base = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{base}<{self.width},{self.int_bits},AP_{self.rounding},AP_{self.overflow}>"

    def with_(self, **changes) -> Fixed:
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        sign = "s" if self.signed else "u"
        return f"fx{self.width}.{self.int_bits}{sign} {self.rounding} {self.overflow}"

    @classmethod
    def parse(cls, text: str) -> Fixed:
        """Inverse of ``str()``; also accepts ``ap_fixed<W,I[,AP_Q[,AP_O]]>`` / ap_ufixed.

        Omitted modes default as in each notation: RND/SAT (the dataclass defaults) for
        ``fx...``, AP_TRN/AP_WRAP (ap_fixed's own) for C++ type names.
        """
        t = text.strip()
        m = _STR_RE.match(t)
        if m:
            w, i, s, q, o = m.groups()
            signed = s == "s"
            q, o = q or "RND", o or "SAT"
        else:
            m = _CTYPE_RE.match(t)
            if not m:
                raise ValueError(f"cannot parse fixed-point format {text!r}")
            u, w, i, q, o = m.groups()
            signed = u == ""
        return cls(int(w), int(i), signed, q or "TRN", o or "WRAP")
