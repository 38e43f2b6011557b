"""Every timm option of docs/timm.md, as timm's own constructors make it, against timm's
forward: the float graph to float64 rounding, the golden executor at w16a24 and w8a16
(cosine, top-1 agreement), and the HLS kernel's C-simulation bit for bit. One option set
runs on the RTL in rtl_tests/test_e2e_timm.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import codesign
from codesign.frontend import convert
from codesign.ir import run_float
from codesign.models.timm_support import OPTIONS, import_timm, timm_vit
from codesign.passes import run_passes

pytestmark = pytest.mark.csim


@pytest.fixture(scope="module", autouse=True)
def _timm():
    timm, reason = import_timm()
    if timm is None:
        pytest.skip(reason)


def _perturbed(option: str):
    """timm's init leaves norms at 1/0 and biases at 0; perturb them so every parameter
    matters (a wrong gamma, bias or position would show)."""
    model = timm_vit(option)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def _images(count: int = 4) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((count, 3, 32, 32))


@pytest.mark.parametrize("option", list(OPTIONS))
def test_float_graph_matches_timm(option):
    model = _perturbed(option)
    graph = run_passes(convert(model, option))
    images = _images()
    with torch.no_grad():
        ref = model(torch.tensor(images, dtype=torch.float32)).numpy()
    out = np.stack([run_float(graph, p, 0)[graph.outputs[0]] for p in graph.patchify(images)])
    np.testing.assert_allclose(out.reshape(ref.shape), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize(("precision", "min_cosine"), [("w16a24", 0.9999), ("w8a16", 0.999)])
def test_quantised_build_tracks_timm_and_csim_is_bit_exact(option, precision, min_cosine):
    model = _perturbed(option)
    build = codesign.build(model, "zcu102", precision=precision, csim=True, eval_images=8, calib=16)
    fidelity = build.report["fidelity"]["vs_torch"]["per_task"]["classification"]
    assert fidelity["cosine"] >= min_cosine, fidelity
    assert fidelity["agreement"] >= 0.875, fidelity  # 8 random images: one near-tie allowed
    assert build.report["csim"]["bit_exact"] is True, build.report["csim"]


def test_the_options_reach_the_ops_they_need():
    """What each option becomes in the Program (so a test above cannot pass vacuously)."""

    def ops(option):
        return codesign.build(timm_vit(option), "zcu102", eval_images=1).program

    avg = ops("global_pool=avg")
    pool = [layer for layer in avg.layers if layer.op.name == "POOL"]
    assert len(pool) == 1 and pool[0].fields["rows"] == 16  # the patches, not the CLS row
    regs = ops("reg_tokens=4")
    embed = next(layer for layer in regs.layers if layer.op.name == "EMBED")
    assert embed.fields["prefix"] == 5
    none = ops("class_token=False")
    assert next(layer for layer in none.layers if layer.op.name == "EMBED").fields["prefix"] == 0
    qk = ops("qk_norm=True")
    in_place = [
        layer
        for layer in qk.layers
        if layer.op.name == "LAYERNORM" and layer.fields["src"] == layer.fields["dst"]
    ]
    assert len(in_place) == 2 * 2 * 2  # depth 2, q and k, 2 heads
    assert ops("act_layer=gelu_tanh").tables["gelu_delta"].kind == 1
    assert ops("plain").tables["gelu_delta"].kind == 0
    final = ops("final_norm=False")
    assert not any(layer.name == "norm" for layer in final.layers)
    distilled = ops("distilled")
    assert {"head", "head_dist"} <= {layer.name for layer in distilled.layers}


def test_cli_builds_a_timm_spec(tmp_path):
    """``--model timm:NAME:key=value,...`` makes the model with timm (no download); a typo
    names timm's closest models, a bad option names itself, and nothing is written."""
    from click.testing import CliRunner

    from codesign.cli import main

    spec = (
        "timm:vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=32,depth=2,num_heads=2,"
        "num_classes=5,global_pool=avg,reg_tokens=2"
    )
    out = tmp_path / "build"
    result = CliRunner().invoke(
        main, ["build", "--model", spec, "--board", "kv260", "--out", str(out), "--no-csim"]
    )
    assert result.exit_code == 0, result.output
    report = (out / "report.json").read_text()
    assert '"cosine"' in report
    for bad, message in [
        ("timm:vit_tiny_patch16_22", "closest: vit_tiny_patch16_224"),
        ("timm:vit_tiny_patch16_224:img_size", "is not key=value"),
        ("timm:vit_tiny_patch16_224:pretrained=True", "no network"),
    ]:
        target = tmp_path / "refused"
        result = CliRunner().invoke(
            main, ["build", "--model", bad, "--board", "kv260", "--out", str(target)]
        )
        assert result.exit_code != 0 and message in result.output, result.output
        assert not target.exists()
