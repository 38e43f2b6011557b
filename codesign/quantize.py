"""Calibration and format selection: a float Graph in, a Graph with formats out.

Every activation tensor and every op-internal value (pre-activations, attention
scores, gate logits, expert outputs...) gets a ``Fixed`` format whose integer bits
come from the largest magnitude seen on the calibration inputs times a headroom
factor; weights get theirs from their own largest magnitude. Widths come from the
precision spec (``w16a24``): weights <= 18 and activations <= 27 bits keep one
DSP48E2 per MAC.
"""

from __future__ import annotations

import math

import numpy as np

from .arch import Precision
from .ir import Graph, run_float
from .numerics.fixed import Fixed

HEADROOM = 1.5  # calibrated range is multiplied by this before choosing integer bits
PROB_FMT = Fixed(17, 1, signed=False, rounding="RND", overflow="SAT")  # probabilities in [0, 1]
BIAS_WIDTH = 32
PARAM_WIDTH_FOR_NORM = 18  # LayerNorm gamma/beta stay DSP-sized even at w8


def int_bits_for(max_abs: float, signed: bool = True) -> int:
    """Fewest integer bits (ap_fixed I) whose range holds +-max_abs."""
    if not np.isfinite(max_abs):
        raise ValueError("calibration saw a non-finite value (inf/nan) in the model")
    if max_abs <= 0:
        return 1 if signed else 0
    bits = math.floor(math.log2(max_abs)) + 1
    return bits + 1 if signed else bits


def activation_fmt(max_abs: float, width: int, signed: bool = True) -> Fixed:
    return Fixed(width, int_bits_for(max_abs * HEADROOM, signed), signed, "RND", "SAT")


def weight_fmt(values: np.ndarray, width: int) -> Fixed:
    return Fixed(width, int_bits_for(float(np.abs(values).max(initial=0.0))), True, "RND", "SAT")


def bias_fmt(values: np.ndarray, max_frac: int) -> Fixed:
    """32-bit bias, as many fraction bits as fit but never more than the accumulator's."""
    ib = int_bits_for(float(np.abs(values).max(initial=0.0)))
    frac = min(BIAS_WIDTH - ib, max_frac)
    # very narrow weights/activations leave the accumulator fewer fraction bits than the
    # bias has integer bits: keep at least a sign and one magnitude bit at the accumulator's
    # resolution (the extra integer bits cost nothing and never saturate)
    ib = max(ib, 2 - frac)
    return Fixed(frac + ib, ib, True, "RND", "SAT")


class _Ranges:
    """Largest magnitude seen per key over all calibration runs."""

    def __init__(self):
        self.max_abs: dict[str, float] = {}

    def see(self, key: str, value) -> None:
        peak = float(np.abs(np.asarray(value)).max(initial=0.0))
        self.max_abs[key] = max(self.max_abs.get(key, 0.0), peak)

    def __getitem__(self, key: str) -> float:
        return self.max_abs[key]


def calibrate(graph: Graph, patches: np.ndarray) -> _Ranges:
    """Run the float graph on every calibration sample and task; record magnitudes."""
    ranges = _Ranges()
    for sample in patches:
        for task in graph.tasks:
            internals: dict = {}
            values = run_float(graph, sample, task, internals)
            for name, value in values.items():
                ranges.see(name, value)
            for node_name, record in internals.items():
                for key, value in record.items():
                    if key != "chosen":
                        ranges.see(f"{node_name}:{key}", value)
    return ranges


def _norm_fmts(node, prefix: str, ranges: _Ranges, act: int, wbits: int) -> dict[str, Fixed]:
    """A LayerNorm's gamma, beta and normalised-value formats (qk-norm: q_ and k_ keys)."""
    pbits = max(wbits, PARAM_WIDTH_FOR_NORM)
    weight = weight_fmt(node.params[f"{prefix}weight"], pbits)
    norm = activation_fmt(ranges[f"{node.name}:{prefix}norm"], act)
    # beta joins n*gamma exactly, so it may not have more fraction bits than it
    beta = weight_fmt(node.params[f"{prefix}bias"], pbits)
    max_frac = norm.frac_bits + weight.frac_bits
    if beta.frac_bits > max_frac:
        beta = beta.with_(width=beta.int_bits + max_frac)
    return {f"{prefix}weight": weight, f"{prefix}norm": norm, f"{prefix}bias": beta}


def quantize(graph: Graph, patches: np.ndarray, precision: Precision) -> Graph:
    """Assign formats to every tensor and op-internal value from calibration patches."""
    graph = graph.copy()
    ranges = calibrate(graph, patches)
    act, wbits = precision.activation_bits, precision.weight_bits
    for name, tensor in graph.tensors.items():
        if name in ranges.max_abs:
            tensor.fmt = activation_fmt(ranges[name], act)
    for node in graph.nodes:
        fmts: dict[str, Fixed] = {}
        in_fmt = graph.tensors[node.inputs[0]].fmt
        if node.op == "linear":
            fmts["weight"] = weight_fmt(node.params["weight"], wbits)
            acc_frac = in_fmt.frac_bits + fmts["weight"].frac_bits
            if "bias" in node.params:
                fmts["bias"] = bias_fmt(node.params["bias"], acc_frac)
            if node.attrs.get("post") == "gelu":
                fmts["pre"] = activation_fmt(ranges[f"{node.name}:pre"], act)
        elif node.op == "embed":
            pos = node.params["pos"]
            fmts["pos"] = Fixed(act, int_bits_for(float(np.abs(pos).max())), True, "RND", "SAT")
        elif node.op == "layernorm":
            fmts.update(_norm_fmts(node, "", ranges, act, wbits))
        elif node.op == "qknorm":
            fmts.update(_norm_fmts(node, "q_", ranges, act, wbits))
            fmts.update(_norm_fmts(node, "k_", ranges, act, wbits))
            # normalised in place: the fused qkv keeps one format, before and after
            source, target = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
            peak = max(ranges[source.name], ranges[target.name])
            source.fmt = target.fmt = activation_fmt(peak, act)
        elif node.op == "pool":
            count = node.attrs["rows"][1]
            frac = 15 + count.bit_length()  # scale = round(2**frac / count) in (2**15, 2**16]
            fmts["scale"] = Fixed(frac + 2, 2, True, "RND", "SAT")
        elif node.op == "attention":
            fmts["score"] = activation_fmt(ranges[f"{node.name}:scores"], act)
            fmts["prob"] = PROB_FMT  # the softmax sum's format follows the exp table (compiler)
        elif node.op == "moe":
            params = node.params
            fmts["gate"] = weight_fmt(params["gate"], wbits)
            fmts["logit"] = activation_fmt(ranges[f"{node.name}:logits"], act)
            fmts["score"] = PROB_FMT
            fmts["fc1_weight"] = weight_fmt(params["fc1_weight"], wbits)
            fmts["fc1_bias"] = bias_fmt(
                params["fc1_bias"], in_fmt.frac_bits + fmts["fc1_weight"].frac_bits
            )
            fmts["hidden_pre"] = activation_fmt(ranges[f"{node.name}:hidden_pre"], act)
            fmts["hidden"] = activation_fmt(ranges[f"{node.name}:hidden"], act)
            fmts["fc2_weight"] = weight_fmt(params["fc2_weight"], wbits)
            fmts["fc2_bias"] = bias_fmt(
                params["fc2_bias"], fmts["hidden"].frac_bits + fmts["fc2_weight"].frac_bits
            )
            fmts["expert_out"] = activation_fmt(ranges[f"{node.name}:expert_out"], act)
        node.attrs["formats"] = fmts
    graph.meta["precision"] = str(precision)
    graph.meta["calibration"] = {
        "samples": len(patches),
        "headroom": HEADROOM,
        "max_abs": dict(ranges.max_abs),
    }
    return graph
