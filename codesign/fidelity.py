"""Fidelity: how far a fixed-point result is from the float reference.

Used per layer (golden trace vs the float IR) and at the output (golden vs torch),
with task-level agreement where the output is a class decision.
"""

from __future__ import annotations

import numpy as np


def compare(result: np.ndarray, reference: np.ndarray) -> dict:
    """Cosine similarity, max |error|, relative RMS error of `result` against `reference`."""
    a = np.asarray(result, np.float64).ravel()
    b = np.asarray(reference, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cannot compare shapes {np.shape(result)} and {np.shape(reference)}")
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b))
    ref_rms = float(np.sqrt(np.mean(b * b))) if b.size else 0.0
    err = a - b
    return {
        "cosine": cosine,
        "max_abs_err": float(np.abs(err).max(initial=0.0)),
        "rel_rms": float(np.sqrt(np.mean(err * err)) / ref_rms) if ref_rms > 0 else 0.0,
    }


def agreement(result: np.ndarray, reference: np.ndarray) -> float | None:
    """Share of decisions (argmax over the last axis) that match; None for 1-channel outputs."""
    if np.shape(reference)[-1] < 2:
        return None
    return float(np.mean(np.argmax(result, axis=-1) == np.argmax(reference, axis=-1)))


def worst(entries: list[dict]) -> dict:
    """Combine per-task comparisons into the worst case of each metric."""
    return {
        "cosine": min(e["cosine"] for e in entries),
        "max_abs_err": max(e["max_abs_err"] for e in entries),
        "rel_rms": max(e["rel_rms"] for e in entries),
    }
