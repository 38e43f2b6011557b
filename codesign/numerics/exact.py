"""Exact integer building blocks of the bit-exact semantics (the golden executor's ops).

Integer numpy only: products and sums over int64 (wrapping like the kernel's 64-bit
accumulators where a Program's data breaks its formats), per-row rounding shifts, and
exact re-scaling to more fraction bits.
"""

from __future__ import annotations

import numpy as np

from .fixed import shift_round

_EXACT_FLOAT = 2.0**53


def matmul_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [m, k] @ b[n, k]^T over the integers."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    k = a.shape[1]
    peak_a = int(np.abs(a).max(initial=0))
    peak_b = int(np.abs(b).max(initial=0))
    bound = peak_a * peak_b * k
    if bound < _EXACT_FLOAT:
        return np.rint(a.astype(np.float64) @ b.T.astype(np.float64)).astype(np.int64)
    # int64 sums wrap modulo 2**64 like the kernel's 64-bit accumulators; only a Program
    # whose data breaks its formats' widths gets there (the compiler never does)
    return a @ b.T


def shift_round_rows(raw: np.ndarray, shifts: np.ndarray, rounding: str) -> np.ndarray:
    """shift_round with a per-row shift (broadcast over trailing axes)."""
    shifts = np.asarray(shifts)
    out = np.empty_like(raw)
    for value in np.unique(shifts):
        mask = np.broadcast_to(
            (shifts == value).reshape(shifts.shape + (1,) * (raw.ndim - shifts.ndim)), raw.shape
        )
        out[mask] = shift_round(raw[mask], int(value), rounding)
    return out


def align(raw: np.ndarray, frac_from: int, frac_to: int) -> np.ndarray:
    """Exact re-scaling to more fraction bits."""
    if frac_to < frac_from:
        raise ValueError(f"cannot align {frac_from} fraction bits down to {frac_to} exactly")
    shift = frac_to - frac_from
    if shift >= 64:  # every bit shifted out of the 64-bit word, as in the kernel
        return np.zeros_like(np.asarray(raw, np.int64))
    return np.asarray(raw, np.int64) << np.int64(shift)


__all__ = ["align", "matmul_exact", "shift_round_rows"]
