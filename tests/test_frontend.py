"""Frontend and passes: torch -> Graph IR keeps the model's float semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from small_models import SMALL_VIT
from torch import nn

from codesign.arch import ArchConfig, parse_precision
from codesign.compiler import compile_graph
from codesign.frontend import convert
from codesign.ir import UnsupportedError, run_float
from codesign.models import config_from_dict, create_model
from codesign.passes import fold_attention_scale, fuse_gelu, fuse_residual, run_passes


def _images(model, count=2, seed=0):
    cfg = model.config
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, cfg.in_chans, *cfg.image_size))


def _torch(model, images, task):
    with torch.no_grad():
        x = torch.as_tensor(images, dtype=torch.float32)
        return (model(x, task) if hasattr(model, "heads") else model(x)).double().numpy()


@pytest.mark.parametrize("name", ["m3vit-tiny", SMALL_VIT])
def test_float_graph_matches_torch_before_and_after_passes(name):
    model = create_model(config_from_dict(name) if isinstance(name, dict) else name, seed=3)
    graph = convert(model)
    transformed = run_passes(graph)
    images = _images(model)
    patches = graph.patchify(images)
    for task in graph.tasks:
        ref = _torch(model, images, task)
        for g in (graph, transformed):
            out = np.stack([run_float(g, p, task)[g.outputs[task]] for p in patches])
            np.testing.assert_allclose(out.reshape(ref.shape), ref, atol=2e-5, rtol=1e-4)


def test_graph_structure_of_m3vit_tiny():
    graph = convert(create_model("m3vit-tiny"))
    ops = [node.op for node in graph.nodes]
    assert ops.count("moe") == 2 and ops.count("attention") == 4
    assert graph.meta["tokens"] == 9 and graph.tasks == [0, 1]
    heads = [node for node in graph.nodes if node.name.startswith("heads.")]
    assert [(n.task, n.attrs["rows"]) for n in heads] == [(0, (1, 8)), (1, (1, 8))]
    fused = run_passes(graph)
    assert [n.op for n in fused.nodes].count("add") == 0
    assert [n.op for n in fused.nodes].count("gelu") == 0
    assert all(n.attrs.get("scale", 1.0) == 1.0 for n in fused.nodes)
    moe = [n for n in fused.nodes if n.op == "moe"]
    assert all(n.attrs["residual"] for n in moe)


def test_each_pass_is_graph_in_graph_out():
    graph = convert(create_model("m3vit-tiny"))
    before = [n.op for n in graph.nodes]
    for transform in (fold_attention_scale, fuse_gelu, fuse_residual):
        out = transform(graph)
        assert out is not graph
        assert [n.op for n in graph.nodes] == before  # input untouched


def test_unsupported_activation_names_module_and_op():
    model = create_model(config_from_dict(SMALL_VIT))
    model.blocks[1].mlp.act = nn.ReLU()
    with pytest.raises(
        UnsupportedError, match=r"blocks\.1\.mlp\.act.*ReLU|ReLU.*blocks\.1\.mlp\.act"
    ):
        convert(model)


def test_unknown_child_module_is_an_error():
    model = create_model(config_from_dict(SMALL_VIT))
    model.blocks[0].extra = nn.Conv1d(4, 4, 1)
    with pytest.raises(UnsupportedError) as err:
        convert(model)
    assert "blocks.0.extra" in str(err.value) and "Conv1d" in str(err.value)


def test_mixed_gelus_and_unknown_pooling_are_rejected():
    """One GELU table serves the whole model: a model mixing the erf and tanh GELUs is
    refused naming the layers; an ArchConfig built for the other GELU names the fix; a
    pooling other than token / avg names global_pool."""
    from codesign.compiler import CompileError, gelu_kind
    from codesign.quantize import quantize

    model = create_model(config_from_dict(SMALL_VIT))
    model.blocks[0].mlp.act = nn.GELU(approximate="tanh")
    graph = run_passes(convert(model))
    with pytest.raises(CompileError, match=r"mixes GELU variants.*blocks\.0\.mlp\.fc1 \(tanh\)"):
        gelu_kind(graph)
    for block in model.blocks:
        block.mlp.act = nn.GELU(approximate="tanh")
    graph = run_passes(convert(model))
    assert gelu_kind(graph) == "tanh"
    with pytest.raises(CompileError, match=r"ArchConfig\(gelu='tanh'\)"):
        compile_graph(
            quantize(graph, graph.patchify(_images(model)), parse_precision("w16a24")), ArchConfig()
        )
    model = create_model(config_from_dict(SMALL_VIT))
    model.global_pool = "max"
    with pytest.raises(UnsupportedError, match="global_pool"):
        convert(model)


def test_layer_scale_is_folded_into_the_linear():
    class LayerScale(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, dim))

        def forward(self, x):
            return x * self.gamma

    model = create_model(config_from_dict(SMALL_VIT), seed=1)
    for block in model.blocks:
        block.ls1 = LayerScale(32)
        block.ls2 = LayerScale(32)

        def forward(x, block=block):
            x = x + block.ls1(block.attn(block.norm1(x)))
            return x + block.ls2(block.mlp(block.norm2(x)))

        block.forward = forward
    graph = convert(model)
    images = _images(model)
    ref = _torch(model, images, 0)
    out = np.stack([run_float(graph, p, 0)[graph.outputs[0]] for p in graph.patchify(images)])
    np.testing.assert_allclose(out.reshape(ref.shape), ref, atol=2e-5, rtol=1e-4)


def test_patchify_rejects_wrong_image_size():
    graph = convert(create_model("m3vit-tiny"))
    with pytest.raises(ValueError, match="expects"):
        graph.patchify(np.zeros((1, 3, 32, 32)))


def test_real_timm_vit_converts_and_builds():
    from codesign.models.timm_support import import_timm

    timm, reason = import_timm()
    if timm is None:
        pytest.skip(reason)
    import codesign

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
        depth=2, num_heads=2, num_classes=5,
    ).eval()  # fmt: skip
    graph = convert(model, "timm-vit")
    images = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    ref = _torch(model, images, 0)
    out = np.stack([run_float(graph, p, 0)[graph.outputs[0]] for p in graph.patchify(images)])
    np.testing.assert_allclose(out.reshape(ref.shape), ref, atol=2e-5, rtol=1e-4)
    build = codesign.build(model, board="zcu102", eval_images=2)
    assert build.report["fidelity"]["vs_torch"]["cosine"] > 0.999


@pytest.mark.parametrize("name", ["m3vit-tiny", "m3vit", "vit-tiny"])
def test_graph_macs_match_the_model_count(name):
    from codesign.models import count_macs

    model = create_model(name)
    graph = convert(model)
    for task in graph.tasks:
        assert graph.macs(task) == count_macs(model, task=task)
