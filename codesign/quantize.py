"""Calibration and format selection: a float Graph in, a Graph with formats out.

Every activation tensor and every op-internal value (pre-activations, attention
scores, gate logits, expert outputs...) gets a ``Fixed`` format. Wide activations
(more than ``SEARCH_MAX_BITS``) take their integer bits from the largest magnitude seen
on the calibration inputs times a headroom factor: nothing saturates that calibration
did not nearly reach, and the bits are plentiful. Narrow ones (8-bit activations) cannot
afford that: every bit of headroom is a bit of resolution lost on every value. They get
the integer bits that minimise the quantisation error (mean squared, clipping included)
over the values calibration saw ("mse" in the report), searched from the max-based
choice down to four bits less, except where clipping changes a decision: attention
scores (the largest score dominates its softmax) and MoE gate logits (top-k) keep their
full range. Weights get theirs from their own largest magnitude. Widths come from the
precision spec (``w16a24``): weights <= 18 and activations <= 27 bits keep one DSP48E2
per MAC. A residual width (``w8a8r16``) gives the residual stream's tensors
(``residual_stream``) that width, from their largest magnitude as any wide activation.
"""

from __future__ import annotations

import math

import numpy as np

from .arch import Precision
from .contract import BIAS_BITS, MAX_WEIGHT_SHIFT
from .ir import Graph, run_float
from .numerics.fixed import Fixed
from .rounding import (
    GPTQ_MAX_BITS,
    ROUNDINGS,
    LayerInputs,
    output_error,
    round_gptq,
    round_nearest,
)

HEADROOM = 1.5  # calibrated range is multiplied by this before choosing integer bits
SEARCH_MAX_BITS = 12  # activations at most this wide get MSE-chosen integer bits
SEARCH_DOWN = 4  # ... from the max-based choice down to this many bits fewer
SAMPLES = 1 << 15  # values kept per key for the search (a seeded subsample)
FULL_RANGE = ("scores", "logits")  # internal values whose clipping changes a decision
PROB_FMT = Fixed(17, 1, signed=False, rounding="RND", overflow="SAT")  # probabilities in [0, 1]
BIAS_WIDTH = BIAS_BITS  # a UCU bias word's top bits (the low ones: the weight shift)
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


WEIGHT_FORMATS = ("channel", "tensor")


def channel_weight_fmt(values: np.ndarray, width: int) -> tuple[Fixed, np.ndarray]:
    """Per-output-channel weight formats of ``values`` [..., out, in]: the format of the
    finest channel (fewest integer bits) and each channel's shift, its extra integer bits
    (0..MAX_WEIGHT_SHIFT). The base is raised until the widest channel is within reach,
    so no channel saturates; a channel narrower than the base keeps the base."""
    peaks = np.abs(values).max(axis=-1, initial=0.0)
    bits = np.vectorize(int_bits_for, otypes=[np.int64])(peaks)
    base = max(int(bits.min(initial=1)), int(bits.max(initial=1)) - MAX_WEIGHT_SHIFT)
    return Fixed(width, base, True, "RND", "SAT"), np.maximum(bits - base, 0)


def bias_fmt(values: np.ndarray, max_frac: int) -> Fixed:
    """29-bit bias, as many fraction bits as fit but never more than the accumulator's."""
    ib = int_bits_for(float(np.abs(values).max(initial=0.0)))
    frac = min(BIAS_WIDTH - ib, max_frac)
    # very narrow weights/activations leave the accumulator fewer fraction bits than the
    # bias has integer bits: keep at least a sign and one magnitude bit at the accumulator's
    # resolution (the extra integer bits cost nothing and never saturate)
    ib = max(ib, 2 - frac)
    return Fixed(frac + ib, ib, True, "RND", "SAT")


class _Ranges:
    """Largest magnitude seen per key over all calibration runs, and (``keep``) a seeded
    subsample of the values for the narrow-format search."""

    def __init__(self, keep: bool = False):
        self.max_abs: dict[str, float] = {}
        self.keep = keep
        self.samples: dict[str, list[np.ndarray]] = {}
        self.choices: dict[str, dict] = {}  # key -> how its integer bits were chosen
        self._rng = np.random.default_rng(0)

    def see(self, key: str, value) -> None:
        value = np.asarray(value, dtype=np.float64)
        peak = float(np.abs(value).max(initial=0.0))
        self.max_abs[key] = max(self.max_abs.get(key, 0.0), peak)
        if self.keep:
            flat = value.ravel()
            if flat.size > SAMPLES:
                flat = self._rng.choice(flat, SAMPLES, replace=False)
            self.samples.setdefault(key, []).append(flat)

    def __getitem__(self, key: str) -> float:
        return self.max_abs[key]

    def fmt(self, key: str, width: int) -> Fixed:
        """The activation format of `key` (see the module doc for max vs mse)."""
        peak = self.max_abs[key]
        by_max = activation_fmt(peak, width)
        internal = key.rsplit(":", 1)[-1] if ":" in key else ""
        if width > SEARCH_MAX_BITS or not self.keep or internal in FULL_RANGE:
            return by_max
        values = np.concatenate(self.samples[key])
        if not np.isfinite(values).all():
            raise ValueError("calibration saw a non-finite value (inf/nan) in the model")
        errors = {}
        for int_bits in range(by_max.int_bits - SEARCH_DOWN, by_max.int_bits + 1):
            fmt = by_max.with_(int_bits=int_bits)
            errors[int_bits] = float(np.mean((fmt.to_float(fmt.quantize(values)) - values) ** 2))
        best = min(errors, key=lambda bits: (errors[bits], -bits))  # ties: more range
        self.choices[key] = {
            "method": "mse",
            "int_bits": best,
            "int_bits_by_max": by_max.int_bits,
            "mse": errors[best],
            "mse_by_max": errors[by_max.int_bits],
        }
        return by_max.with_(int_bits=best)


def calibrate(
    graph: Graph, patches: np.ndarray, keep: bool = False, inputs: LayerInputs | None = None
) -> _Ranges:
    """Run the float graph on every calibration sample and task; record magnitudes (and
    with ``keep`` a subsample of the values; with ``inputs`` the rows every weight matrix
    multiplies)."""
    ranges = _Ranges(keep)
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
            if inputs is not None:
                for node in graph.nodes:
                    if node.op in ("linear", "moe") and node.name in internals:
                        inputs.record(node, values, internals[node.name])
    return ranges


def _norm_fmts(node, prefix: str, ranges: _Ranges, act: int, wbits: int) -> dict[str, Fixed]:
    """A LayerNorm's gamma, beta and normalised-value formats (qk-norm: q_ and k_ keys)."""
    pbits = max(wbits, PARAM_WIDTH_FOR_NORM)
    weight = weight_fmt(node.params[f"{prefix}weight"], pbits)
    norm = ranges.fmt(f"{node.name}:{prefix}norm", act)
    # beta joins n*gamma exactly, so it may not have more fraction bits than it
    beta = weight_fmt(node.params[f"{prefix}bias"], pbits)
    max_frac = norm.frac_bits + weight.frac_bits
    if beta.frac_bits > max_frac:
        beta = beta.with_(width=beta.int_bits + max_frac)
    return {f"{prefix}weight": weight, f"{prefix}norm": norm, f"{prefix}bias": beta}


def _round_weights(graph: Graph, inputs: LayerInputs | None) -> dict:
    """Raw integer weights of every linear layer and expert (``{key}_raw`` in the node's
    formats, what the compiler stores): nearest, or GPTQ where calibration rows reached
    the matrix and it lowered the output error. Returns the per-node report."""
    report = {}
    for node in graph.nodes:
        fmts, params = node.attrs.get("formats", {}), node.params
        if node.op == "linear":
            keys, experts = ("weight",), [None]
        elif node.op == "moe":
            keys, experts = ("fc1_weight", "fc2_weight"), range(params["fc1_weight"].shape[0])
        else:
            continue
        errors = {"nearest": [], "gptq": []}
        for key in keys:
            raws = []
            for expert in experts:
                weight, shifts = params[key], fmts[f"{key}_shifts"]
                where = (node.name, key)
                if expert is not None:
                    weight, shifts, where = weight[expert], shifts[expert], (*where, expert)
                raw = round_nearest(weight, fmts[key], shifts)
                x = None if inputs is None else inputs.get(where)
                if x is not None:
                    near = output_error(weight, raw, x, fmts[key], shifts)
                    tuned = round_gptq(weight, x, fmts[key], shifts)
                    tuned_error = output_error(weight, tuned, x, fmts[key], shifts)
                    errors["nearest"].append(near)
                    errors["gptq"].append(min(near, tuned_error))
                    raw = tuned if tuned_error < near else raw
                raws.append(raw)
            fmts[f"{key}_raw"] = raws[0] if experts == [None] else np.stack(raws)
        if errors["nearest"]:
            report[node.name] = {
                "output_rel_rms_nearest": float(np.mean(errors["nearest"])),
                "output_rel_rms_gptq": float(np.mean(errors["gptq"])),
            }
    return report


SMOOTH_ALPHA = 0.5  # how much of a LayerNorm output's channel range moves into the weights


def _weight_columns(node) -> list[np.ndarray]:
    """The weight matrices of a node that multiply its input's channels (last axis)."""
    if node.op == "linear":
        return [node.params["weight"]]
    return [node.params["gate"], node.params["fc1_weight"]]  # moe


def smooth_layernorms(graph: Graph, patches: np.ndarray, alpha: float = SMOOTH_ALPHA):
    """Move LayerNorm outputs' inter-channel variation into the weights that read them.

    A LayerNorm output has a few channels far wider than the rest (gamma, and the model,
    make them so); one per-tensor 8-bit format then spends its range on those and leaves
    the others a handful of levels. Dividing channel c of gamma and beta by s_c and
    multiplying column c of every consuming weight by s_c leaves the float model
    unchanged; s_c = max|x_c|**alpha / max|W[:, c]|**(1 - alpha) (SmoothQuant) evens out
    the activations' channels at some cost to the weights'. Applied where every consumer
    is a linear layer or an MoE (gate and experts' fc1). Returns (graph, report).
    """
    graph = graph.copy()
    peaks: dict[str, np.ndarray] = {}
    for sample in patches:
        for task in graph.tasks:
            values = run_float(graph, sample, task)
            for node in graph.nodes:
                if node.op == "layernorm" and node.outputs[0] in values:
                    peak = np.abs(values[node.outputs[0]]).max(axis=0)
                    name = node.name
                    peaks[name] = peak if name not in peaks else np.maximum(peaks[name], peak)
    report = {}
    for node in graph.nodes:
        if node.name not in peaks:
            continue
        consumers = graph.consumers(node.outputs[0])
        if not consumers or any(
            c.op not in ("linear", "moe") or c.inputs[0] != node.outputs[0] for c in consumers
        ):
            continue
        columns = [
            np.abs(w).reshape(-1, w.shape[-1]) for c in consumers for w in _weight_columns(c)
        ]
        w_peak = np.max([col.max(axis=0) for col in columns], axis=0)
        x_peak = peaks[node.name]
        scale = np.ones_like(x_peak)
        valid = (x_peak > 0) & (w_peak > 0)
        scale[valid] = x_peak[valid] ** alpha / w_peak[valid] ** (1.0 - alpha)
        scale = np.clip(scale, 1e-4, 1e4)
        node.params["weight"] = node.params["weight"] / scale
        node.params["bias"] = node.params["bias"] / scale
        for consumer in consumers:
            if consumer.op == "linear":
                consumer.params["weight"] = consumer.params["weight"] * scale
            else:
                consumer.params["gate"] = consumer.params["gate"] * scale
                consumer.params["fc1_weight"] = consumer.params["fc1_weight"] * scale
        spread = lambda v: float(v.max() / max(v.min(), 1e-12))  # noqa: E731
        report[node.name] = {
            "channel_range_ratio_before": spread(x_peak[valid]) if valid.any() else 1.0,
            "channel_range_ratio_after": spread((x_peak / scale)[valid]) if valid.any() else 1.0,
        }
    return graph, {"alpha": alpha, "layers": report}


def residual_join_frac(graph: Graph, node) -> int | None:
    """The fraction bits of the sum a residual joins exactly (the ALIGN rules): a linear's
    accumulator (x times weight), the MoE's score-weighted expert outputs; None when
    `node` takes no residual. The compiler refuses a residual finer than this."""
    fmts = node.attrs.get("formats", {})
    if node.op == "linear" and node.attrs.get("post") == "add":
        return graph.tensors[node.inputs[0]].fmt.frac_bits + fmts["weight"].frac_bits
    if node.op == "moe" and node.attrs.get("residual"):
        return fmts["score"].frac_bits + fmts["expert_out"].frac_bits
    return None


def _fit_residuals(graph: Graph) -> dict:
    """A residual-stream tensor with more fraction bits than the sum it joins
    (``residual_join_frac``; a 16-bit stream beside 8-bit products: w8a8r16) gives up the
    ones that sum lacks, its width kept. Returns {tensor: {"frac_bits", "capped_to"}} for
    the report."""
    capped: dict[str, dict] = {}
    for node in graph.nodes:
        limit = residual_join_frac(graph, node)
        if limit is None:
            continue
        tensor = graph.tensors[node.inputs[1]]
        if tensor.fmt.frac_bits > limit:
            capped.setdefault(tensor.name, {"frac_bits": tensor.fmt.frac_bits})
            capped[tensor.name]["capped_to"] = limit
            tensor.fmt = tensor.fmt.with_(int_bits=tensor.fmt.width - limit)
    return capped


METHODS = ("auto", "max")
MATMUL_OPS = ("linear", "moe")  # ops whose first input the UCU multiplies


def residual_stream(graph: Graph) -> set[str]:
    """The residual stream's tensors: what the patch embedding, the embedding and every
    residual add write (and LayerNorm and the next add read), except any a matrix
    multiply reads, which stays at the multipliers' width."""
    stream: set[str] = set()
    for node in graph.nodes:
        if node.op == "embed":
            stream.update((*node.inputs[:1], *node.outputs))
        elif node.op == "add" or node.attrs.get("post") == "add" or node.attrs.get("residual"):
            stream.update(node.outputs)
    multiplied = {node.inputs[0] for node in graph.nodes if node.op in MATMUL_OPS}
    return stream - multiplied


def quantize(
    graph: Graph,
    patches: np.ndarray,
    precision: Precision,
    method: str = "auto",
    real_calibration: bool = True,
    weight_formats: str = "channel",
    rounding: str = "auto",
):
    """Assign formats to every tensor and op-internal value from calibration patches.

    ``method="auto"``: narrow activations (at most ``SEARCH_MAX_BITS``) first get their
    LayerNorm outputs smoothed (``smooth_layernorms``), then, when the calibration images
    are real (``real_calibration``), MSE-chosen formats (module doc): clipping to what
    random images showed costs real inputs more than it saves (docs/quantization.md).
    ``"max"``: every activation format from its calibrated maximum. ``weight_formats``:
    "channel" gives every output channel of a linear layer or expert its own integer bits
    (``channel_weight_fmt``; the gate stays per tensor), "tensor" one format per tensor.
    ``rounding``: "nearest", "gptq" (``codesign.rounding``: each layer's output error on
    the calibration inputs), "auto" = gptq for weights of up to 8 bits."""
    if method not in METHODS:
        raise ValueError(f"quantisation method {method!r} is not one of {METHODS}")
    if weight_formats not in WEIGHT_FORMATS:
        raise ValueError(f"weight formats {weight_formats!r} are not one of {WEIGHT_FORMATS}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"weight rounding {rounding!r} is not one of {ROUNDINGS}")
    if rounding == "auto":
        rounding = "gptq" if precision.weight_bits <= GPTQ_MAX_BITS else "nearest"

    def weights(values: np.ndarray) -> tuple[Fixed, np.ndarray]:
        if weight_formats == "channel":
            return channel_weight_fmt(values, wbits)
        return weight_fmt(values, wbits), np.zeros(values.shape[:-1], np.int64)

    graph = graph.copy()
    act, wbits = precision.activation_bits, precision.weight_bits
    narrow = method == "auto" and act <= SEARCH_MAX_BITS
    search = narrow and real_calibration
    smoothing = None
    if narrow:
        graph, smoothing = smooth_layernorms(graph, patches)
    inputs = LayerInputs() if rounding == "gptq" else None
    ranges = calibrate(graph, patches, keep=search, inputs=inputs)
    stream = residual_stream(graph) if precision.residual_bits else set()
    for name, tensor in graph.tensors.items():
        if name in ranges.max_abs:
            tensor.fmt = ranges.fmt(name, precision.stream_bits if name in stream else act)
    for node in graph.nodes:
        fmts: dict[str, Fixed] = {}
        in_fmt = graph.tensors[node.inputs[0]].fmt
        if node.op == "linear":
            fmts["weight"], fmts["weight_shifts"] = weights(node.params["weight"])
            acc_frac = in_fmt.frac_bits + fmts["weight"].frac_bits
            if "bias" in node.params:
                fmts["bias"] = bias_fmt(node.params["bias"], acc_frac)
            if node.attrs.get("post") == "gelu":
                fmts["pre"] = ranges.fmt(f"{node.name}:pre", act)
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
            wider = max((source, target), key=lambda tensor: ranges[tensor.name])
            source.fmt = target.fmt = wider.fmt  # chosen with every tensor above
        elif node.op == "pool":
            count = node.attrs["rows"][1]
            frac = 15 + count.bit_length()  # scale = round(2**frac / count) in (2**15, 2**16]
            fmts["scale"] = Fixed(frac + 2, 2, True, "RND", "SAT")
        elif node.op == "attention":
            fmts["score"] = ranges.fmt(f"{node.name}:scores", act)
            fmts["prob"] = PROB_FMT  # the softmax sum's format follows the exp table (compiler)
        elif node.op == "moe":
            params = node.params
            fmts["gate"] = weight_fmt(params["gate"], wbits)
            fmts["logit"] = ranges.fmt(f"{node.name}:logits", act)
            fmts["score"] = PROB_FMT
            fmts["fc1_weight"], fmts["fc1_weight_shifts"] = weights(params["fc1_weight"])
            fmts["fc1_bias"] = bias_fmt(
                params["fc1_bias"], in_fmt.frac_bits + fmts["fc1_weight"].frac_bits
            )
            fmts["hidden_pre"] = ranges.fmt(f"{node.name}:hidden_pre", act)
            fmts["hidden"] = ranges.fmt(f"{node.name}:hidden", act)
            fmts["fc2_weight"], fmts["fc2_weight_shifts"] = weights(params["fc2_weight"])
            fmts["fc2_bias"] = bias_fmt(
                params["fc2_bias"], fmts["hidden"].frac_bits + fmts["fc2_weight"].frac_bits
            )
            fmts["expert_out"] = ranges.fmt(f"{node.name}:expert_out", act)
        node.attrs["formats"] = fmts
    capped = _fit_residuals(graph)
    graph.meta["precision"] = str(precision)
    graph.meta["calibration"] = {
        "method": ("LayerNorm smoothing + " if narrow else "") + ("mse" if search else "max"),
        "samples": len(patches),
        "headroom": HEADROOM,
        "max_abs": dict(ranges.max_abs),
        "search": dict(ranges.choices),
        "smoothing": smoothing,
        "weights": weight_formats,
        "residual_stream": sorted(stream),
        "residuals_capped": capped,
        "rounding": _round_weights(graph, inputs),
    }
    return graph
