"""Weight rounding that minimises each layer's output error on the calibration inputs.

Rounding every weight to its nearest grid point minimises the weights' own error, not the
layer's: the errors of one output channel's weights add up over the inputs they multiply.
GPTQ (Frantar et al., 2023) rounds one input column at a time and moves the rounding
error of that column onto the columns not yet rounded, weighted by the inverse of the
inputs' second moment H = X^T X / N, so that ||X W^T - X Q^T|| over the calibration rows
X is (greedily) minimised. The grid is the layer's own (``quantize.channel_weight_fmt``:
a format per output channel), weights that are exactly zero (LPViT's pruned tiles) stay
zero, and the result is a raw integer matrix the compiler stores as is: every executor
reads the same integers, so nothing here can change bit-exactness.
"""

from __future__ import annotations

import numpy as np

from .numerics.fixed import Fixed

ROUNDINGS = ("auto", "nearest", "gptq")
GPTQ_MAX_BITS = 8  # "auto": GPTQ for weights this narrow, nearest above (its error is tiny)
GPTQ_ROWS = 2048  # calibration rows per matrix (a seeded subsample)
GPTQ_DAMP = 0.01  # H + damp * mean(diag H) * I keeps the inverse well conditioned
GPTQ_BLOCK = 128  # columns whose error is spread lazily, as one matrix product


def round_nearest(weight: np.ndarray, fmt: Fixed, shifts: np.ndarray) -> np.ndarray:
    """Raw weights [out, in]: row c in ``fmt`` with ``shifts[c]`` more integer bits."""
    raw = np.empty(weight.shape, np.int64)
    for shift in np.unique(shifts):
        rows = shifts == shift
        raw[rows] = fmt.with_(int_bits=fmt.int_bits + int(shift)).quantize(weight[rows])
    return raw


def round_gptq(weight: np.ndarray, x: np.ndarray, fmt: Fixed, shifts: np.ndarray) -> np.ndarray:
    """Raw weights [out, in] on the same grid as ``round_nearest``, rounded by GPTQ over
    the calibration inputs ``x`` [rows, in]."""
    w = np.array(weight, np.float64)
    out_dim, in_dim = w.shape
    lsb = (2.0 ** (np.asarray(shifts, np.float64) - fmt.frac_bits))[:, None]
    keep_zero = w == 0.0
    x = np.asarray(x, np.float64)
    h = x.T @ x / max(len(x), 1)
    dead = np.diag(h) == 0.0  # an input that is always 0: its weights never matter
    h[dead, dead] = 1.0
    h[np.diag_indices(in_dim)] += GPTQ_DAMP * float(np.mean(np.diag(h)))
    upper = np.linalg.cholesky(np.linalg.inv(h)).T  # H^-1 = upper^T upper
    raw = np.empty(w.shape, np.int64)
    for start in range(0, in_dim, GPTQ_BLOCK):
        end = min(start + GPTQ_BLOCK, in_dim)
        errors = np.empty((out_dim, end - start))
        for i in range(start, end):
            q = np.clip(np.floor(w[:, i : i + 1] / lsb + 0.5), fmt.raw_min, fmt.raw_max)
            q[keep_zero[:, i : i + 1]] = 0
            raw[:, i] = q[:, 0]
            error = (w[:, i] - q[:, 0] * lsb[:, 0]) / upper[i, i]
            w[:, i + 1 : end] -= np.outer(error, upper[i, i + 1 : end])
            errors[:, i - start] = error
        w[:, end:] -= errors @ upper[start:end, end:]
    return raw


def output_error(weight: np.ndarray, raw: np.ndarray, x: np.ndarray, fmt: Fixed, shifts) -> float:
    """Relative RMS of X Q^T against X W^T over the calibration rows."""
    dequant = raw * (2.0 ** (np.asarray(shifts, np.float64) - fmt.frac_bits))[:, None]
    want = x @ weight.T
    return float(np.linalg.norm(x @ dequant.T - want) / max(np.linalg.norm(want), 1e-30))


class LayerInputs:
    """A seeded subsample (``GPTQ_ROWS``) of the rows each weight matrix multiplied during
    calibration: keyed by (node, parameter) or (node, parameter, expert)."""

    def __init__(self, rows: int = GPTQ_ROWS):
        self.rows = rows
        self.parts: dict[tuple, list[np.ndarray]] = {}

    def see(self, key: tuple, x: np.ndarray) -> None:
        if len(x):
            self.parts.setdefault(key, []).append(np.asarray(x, np.float32))

    def get(self, key: tuple) -> np.ndarray | None:
        parts = self.parts.get(key)
        if not parts:
            return None
        x = np.concatenate(parts)
        if len(x) > self.rows:
            pick = np.random.default_rng(len(x)).choice(len(x), self.rows, replace=False)
            x = x[np.sort(pick)]
        return x.astype(np.float64)

    def record(self, node, values: dict, record: dict) -> None:
        """The inputs of a linear node's weight, or of each expert's fc1 and fc2."""
        x = values[node.inputs[0]]
        if node.op == "linear":
            rows = node.attrs.get("rows")
            self.see((node.name, "weight"), x if rows is None else x[rows[0] : rows[0] + rows[1]])
        elif node.op == "moe":  # moe_float's record: hidden rows in expert order
            chosen, offset = record["chosen"], 0
            for expert in range(node.params["fc1_weight"].shape[0]):
                rows = np.nonzero((chosen == expert).any(axis=1))[0]
                self.see((node.name, "fc1_weight", expert), x[rows])
                hidden = record["hidden"][offset : offset + rows.size]
                self.see((node.name, "fc2_weight", expert), hidden)
                offset += rows.size


__all__ = [
    "GPTQ_MAX_BITS",
    "ROUNDINGS",
    "LayerInputs",
    "output_error",
    "round_gptq",
    "round_nearest",
]
