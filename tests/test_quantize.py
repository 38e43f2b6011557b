"""Narrow activations: LayerNorm smoothing and MSE-chosen formats (codesign.quantize)."""

from __future__ import annotations

import numpy as np
from small_models import SMALL_VIT

from codesign.arch import parse_precision
from codesign.frontend import convert
from codesign.ir import run_float
from codesign.models import config_from_dict, create_model
from codesign.passes import run_passes
from codesign.quantize import SEARCH_MAX_BITS, quantize, smooth_layernorms


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


def test_random_calibration_keeps_max_ranges():
    """Clipping learned from random images is not trusted: smoothing only."""
    graph, patches = _graph_and_patches()
    random = quantize(graph, patches, parse_precision("w8a8"), real_calibration=False)
    assert not random.meta["calibration"]["search"]
    assert random.meta["calibration"]["method"] == "LayerNorm smoothing + max"
    assert random.meta["calibration"]["smoothing"]["layers"]
