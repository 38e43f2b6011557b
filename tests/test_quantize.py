"""Formats and rounding: LayerNorm smoothing, MSE-chosen activation formats, per-channel
weight formats and GPTQ rounding (codesign.quantize, codesign.rounding)."""

from __future__ import annotations

import json

import numpy as np
from small_models import SMALL_VIT

from codesign.arch import parse_precision
from codesign.contract import MAX_WEIGHT_SHIFT
from codesign.flow import graph_summary
from codesign.frontend import convert
from codesign.ir import run_float
from codesign.models import config_from_dict, create_model
from codesign.passes import run_passes
from codesign.quantize import (
    SEARCH_MAX_BITS,
    channel_weight_fmt,
    quantize,
    smooth_layernorms,
    weight_fmt,
)
from codesign.rounding import output_error, round_gptq, round_nearest


def _graph_and_patches(seed: int = 0):
    model = create_model(config_from_dict(SMALL_VIT), seed=seed)
    graph = run_passes(convert(model))
    shape = (graph.meta["in_chans"], *graph.meta["image_size"])
    images = np.random.default_rng(seed).standard_normal((4, *shape))
    return graph, graph.patchify(images)


def test_smoothing_keeps_the_float_model_and_evens_the_channels():
    graph, patches = _graph_and_patches()
    norm = next(node for node in graph.nodes if node.op == "layernorm")
    norm.params["weight"] = norm.params["weight"] * np.geomspace(
        0.05, 20.0, norm.params["weight"].size
    )
    smoothed, report = smooth_layernorms(graph, patches)
    for sample in patches:
        before = run_float(graph, sample, 0)[graph.outputs[0]]
        after = run_float(smoothed, sample, 0)[smoothed.outputs[0]]
        np.testing.assert_allclose(after, before, rtol=1e-9, atol=1e-9)
    stats = report["layers"][norm.name]
    assert stats["channel_range_ratio_before"] > 100
    assert stats["channel_range_ratio_after"] < stats["channel_range_ratio_before"] / 10


def test_narrow_formats_minimise_the_error_and_say_how():
    graph, patches = _graph_and_patches()
    narrow = quantize(graph, patches, parse_precision("w8a8"))  # patches stand for real ones
    search = narrow.meta["calibration"]["search"]
    assert search and all(c["method"] == "mse" for c in search.values())
    assert all(c["mse"] <= c["mse_by_max"] for c in search.values())
    assert any(c["int_bits"] < c["int_bits_by_max"] for c in search.values())
    assert not any(key.endswith((":scores", ":logits")) for key in search)  # full range kept
    assert narrow.meta["calibration"]["smoothing"]["layers"]
    wide = quantize(graph, patches, parse_precision("w8a16"))
    assert SEARCH_MAX_BITS < 16 and not wide.meta["calibration"]["search"]
    assert wide.meta["calibration"]["smoothing"] is None


def test_a_wider_residual_stream_widens_only_what_no_multiply_reads():
    """w8a8r16: the embedding and every residual add's output at 16 bits (max-based, as any
    wide activation); every tensor a matrix multiply or attention reads stays at 8."""
    graph, patches = _graph_and_patches()
    mixed = quantize(graph, patches, parse_precision("w8a8r16"))
    stream = set(mixed.meta["calibration"]["residual_stream"])
    embed = next(node for node in mixed.nodes if node.op == "embed")
    adds = [node for node in mixed.nodes if node.attrs.get("post") == "add"]
    assert adds and {*embed.outputs, *(out for node in adds for out in node.outputs)} <= stream
    multiplied = {
        node.inputs[0] for node in mixed.nodes if node.op in ("linear", "moe", "attention")
    }
    assert not stream & multiplied
    for name, tensor in mixed.tensors.items():
        if tensor.fmt is not None:
            assert tensor.fmt.width == (16 if name in stream else 8), name
    assert not any(name in mixed.meta["calibration"]["search"] for name in stream)
    for node in adds:  # the residual joins the accumulator exactly (the ALIGN rule)
        acc_frac = mixed.tensors[node.inputs[0]].fmt.frac_bits
        acc_frac += node.attrs["formats"]["weight"].frac_bits
        assert mixed.tensors[node.inputs[1]].fmt.frac_bits <= acc_frac, node.name
    plain = quantize(graph, patches, parse_precision("w8a8"))
    assert plain.meta["calibration"]["residual_stream"] == []


def test_a_residual_finer_than_its_accumulator_gives_up_the_extra_fraction_bits():
    """Large 8-bit weights (few fraction bits) beside a 16-bit stream: the stream's
    fraction bits exceed the residual add's accumulator; the quantiser caps them (width
    kept) and says so, where the compiler used to refuse the graph."""
    graph, patches = _graph_and_patches()
    proj = next(node for node in graph.nodes if node.attrs.get("post") == "add")
    proj.params["weight"] = proj.params["weight"] * 256
    mixed = quantize(graph, patches, parse_precision("w8a8r16"), weight_formats="tensor")
    capped = mixed.meta["calibration"]["residuals_capped"]
    assert proj.inputs[1] in capped
    for name, entry in capped.items():
        assert entry["capped_to"] < entry["frac_bits"]
        fmt = mixed.tensors[name].fmt
        assert (fmt.frac_bits, fmt.width) == (entry["capped_to"], 16)


def test_random_calibration_keeps_max_ranges():
    """Clipping learned from random images is not trusted: smoothing only."""
    graph, patches = _graph_and_patches()
    random = quantize(graph, patches, parse_precision("w8a8"), real_calibration=False)
    assert not random.meta["calibration"]["search"]
    assert random.meta["calibration"]["method"] == "LayerNorm smoothing + max"
    assert random.meta["calibration"]["smoothing"]["layers"]


def test_channel_formats_give_small_channels_their_bits():
    """A channel 2**-k smaller than the widest gets k more fraction bits (up to the shift
    field's 7); the base rises so the widest channel never saturates."""
    rng = np.random.default_rng(3)
    weight = rng.uniform(-1.0, 1.0, (12, 40)) * np.geomspace(1.0, 2.0**-11, 12)[:, None]
    fmt, shifts = channel_weight_fmt(weight, 8)
    assert shifts.max() == MAX_WEIGHT_SHIFT and shifts.min() == 0
    raw = round_nearest(weight, fmt, shifts)
    assert raw.min() >= -128 and raw.max() <= 127
    value = raw * 2.0 ** (shifts - fmt.frac_bits)[:, None]
    per_tensor = weight_fmt(weight, 8)
    tensor_value = per_tensor.to_float(per_tensor.quantize(weight))
    channel_error = np.abs(value - weight).max(axis=1)
    tensor_error = np.abs(tensor_value - weight).max(axis=1)
    assert np.all(channel_error <= tensor_error + 1e-12)
    assert channel_error[-1] <= 2.0 ** -(fmt.frac_bits + 1)  # half of its own lsb
    assert channel_error[-1] < tensor_error[-1] / 8  # 7 more fraction bits


def test_gptq_lowers_the_output_error_on_its_grid():
    """GPTQ keeps every weight on the layer's grid (and pruned zeros at zero) and lowers
    ||XW^T - XQ^T|| against nearest rounding on correlated inputs."""
    rng = np.random.default_rng(4)
    mix = rng.standard_normal((48, 48))
    x = rng.standard_normal((512, 48)) @ mix  # correlated inputs: where GPTQ gains
    weight = rng.standard_normal((24, 48)) * 0.1
    weight[:, :8] = 0.0  # a pruned block
    fmt, shifts = channel_weight_fmt(weight, 6)
    near = round_nearest(weight, fmt, shifts)
    tuned = round_gptq(weight, x, fmt, shifts)
    assert tuned.dtype == np.int64 and tuned.min() >= -32 and tuned.max() <= 31
    assert not tuned[:, :8].any()
    near_error = output_error(weight, near, x, fmt, shifts)
    tuned_error = output_error(weight, tuned, x, fmt, shifts)
    assert tuned_error < 0.8 * near_error


def test_eight_bit_weights_round_by_gptq_and_report_it():
    graph, patches = _graph_and_patches()
    w8 = quantize(graph, patches, parse_precision("w8a16"))
    report = w8.meta["calibration"]["rounding"]
    assert report and w8.meta["calibration"]["weights"] == "channel"
    assert all(r["output_rel_rms_gptq"] <= r["output_rel_rms_nearest"] for r in report.values())
    assert np.mean([r["output_rel_rms_gptq"] for r in report.values()]) < np.mean(
        [r["output_rel_rms_nearest"] for r in report.values()]
    )
    w16 = quantize(graph, patches, parse_precision("w16a24"))
    assert not w16.meta["calibration"]["rounding"]  # nearest: nothing to report
    for node in w8.nodes:  # what the compiler stores: the layer's own grid
        if node.op == "linear":
            fmts = node.attrs["formats"]
            assert fmts["weight_raw"].min() >= -128 and fmts["weight_raw"].max() <= 127
            assert fmts["weight_raw"].shape == node.params["weight"].shape
    summary = json.dumps(graph_summary(w8))  # graph.json: formats as text, no weights
    assert "weight_raw" not in summary and "per output channel, 0.." in summary
