"""LPViT block pruning: scores, allocation, masks, compiled block-sparse Programs, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from small_models import TINY_BUFFERS

from codesign.arch import ArchConfig
from codesign.models import config_from_dict, create_model
from codesign.prune import (
    PruneError,
    apply_prune_spec,
    block_nonzero,
    calibrate,
    find_prunable,
    finetune,
    label_free_loss,
    load_pruned,
    parse_prune_spec,
    program_cycles,
    program_sparsity,
    prune,
    read_pruning_summary,
    resolve_target,
)
from codesign.prune.allocate import LayerBudget, equal_slope, uniform
from codesign.prune.cli import prune_command
from codesign.prune.scores import forward_task, measure_distortion, shaped_curve

TINY = {
    "name": "tiny-prune-vit",
    "family": "vit",
    "image_size": [8, 8],
    "in_chans": 1,
    "patch_size": 4,
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "num_classes": 4,
}
ARCH8 = ArchConfig(tile_in=8, tile_out=8)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0):
    return create_model(config_from_dict(TINY), seed=seed)


def tiny_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 1, 8, 8)).astype(np.float32)


# ---------------------------------------------------------------- scores


def test_hook_gradients_equal_autograd_per_sample():
    """The batched per-sample machinery gives the same numbers as one backward per image."""
    model = tiny_model()
    layers, _ = find_prunable(model, (8, 8))
    images = tiny_images(6)
    scores = calibrate(model, layers, images, batch_size=4, fisher_samples=5)
    fc1 = next(layer for layer in layers if layer.name == "blocks.1.mlp.fc1")
    weight = fc1.matrix().detach().double()
    total = torch.zeros_like(weight)
    per_sample = []
    for index in range(len(images)):
        model.zero_grad()
        out = forward_task(model, torch.as_tensor(images[index : index + 1]), 0)
        label_free_loss(out, torch.Generator().manual_seed(0)).backward()
        grad = fc1.module.weight.grad.double()
        total += grad
        per_sample.append(fc1.block_view(grad * weight).sum(dim=(1, 3)).reshape(-1))
    mean_grad = total / len(images)
    taylor = fc1.block_view((weight * mean_grad).abs()).mean(dim=(1, 3)).numpy()
    np.testing.assert_allclose(scores[fc1.name].taylor, taylor, rtol=1e-4, atol=1e-9)
    expected = torch.stack(per_sample).numpy()
    np.testing.assert_allclose(scores[fc1.name].per_sample, expected[:5], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(scores[fc1.name].first, expected.mean(0), rtol=1e-4, atol=1e-9)
    curve = scores[fc1.name].distortion_curve()
    assert curve[0] == 0 and curve.shape == (fc1.blocks + 1,)


def test_taylor_ranks_important_block_above_zeroed_one():
    model = tiny_model()
    layers, _ = find_prunable(model, (8, 8))
    qkv = next(layer for layer in layers if layer.name == "blocks.0.attn.qkv")
    images = tiny_images(16)
    plain = calibrate(model, layers, images)[qkv.name].taylor
    with torch.no_grad():
        view = qkv.block_view(qkv.matrix())
        view[0, :, 0, :] = 0.0  # a query block that carries nothing
        view[4, :, 1, :] *= 20.0  # a value block (rows 32..39) made to dominate
    taylor = calibrate(model, layers, images)[qkv.name].taylor
    assert taylor[0, 0] == 0.0
    assert taylor[4, 1] > 10 * plain[4, 1]
    assert taylor[4, 1] > np.median(taylor)
    order = list(np.argsort(taylor.reshape(-1), kind="stable"))
    assert order[0] == 0  # the zeroed block is pruned first
    assert order.index(0) < order.index(4 * qkv.grid[1] + 1)


def test_measured_distortion_and_shaped_curve():
    model = tiny_model(seed=2)
    layers, _ = find_prunable(model, (8, 8))
    images = tiny_images(12)
    fc2 = layers[-1]
    order = np.arange(fc2.blocks)[::-1].copy()
    measured = measure_distortion(model, [fc2], {fc2.name: order}, {fc2.name: [1, 2]}, images)
    x = torch.as_tensor(images)
    with torch.no_grad():
        ref = torch.log_softmax(model(x), dim=-1)
        saved = fc2.matrix().clone()
        fc2.block_view(fc2.matrix())[order[0] // fc2.grid[1], :, order[0] % fc2.grid[1]] = 0
        log_p = torch.log_softmax(model(x), dim=-1)
        fc2.matrix().copy_(saved)
    kl = float((ref.exp() * (ref - log_p)).sum(-1).mean())
    np.testing.assert_allclose(measured[fc2.name][0], kl, rtol=1e-5)
    assert torch.equal(fc2.matrix(), saved)  # weights restored after measuring
    taylor = np.array([0.0, 1.0, 1.5, 3.0, 3.5, 4.0])
    curve = shaped_curve(taylor, [2, 4], np.array([10.0, 30.0]))
    np.testing.assert_allclose(curve[[0, 2, 4]], [0.0, 10.0, 30.0])
    np.testing.assert_allclose(curve[1], 10.0 * 1.0 / 1.5)  # Taylor shape between samples
    np.testing.assert_allclose(curve[3], 10.0 + 20.0 * 1.5 / 2.0)
    np.testing.assert_allclose(curve[5], 30.0 + 0.5)
    assert np.all(np.diff(curve) >= 0)


# ---------------------------------------------------------------- allocation


def _budgets(seed: int, layers: int = 5) -> list[LayerBudget]:
    rng = np.random.default_rng(seed)
    out = []
    for index in range(layers):
        blocks = int(rng.integers(4, 40))
        # convex, increasing distortion curves of different steepness
        curve = rng.uniform(0.1, 3.0) * (np.arange(blocks + 1) / blocks) ** rng.uniform(1.2, 3)
        block_macs = int(rng.choice([64, 128, 256]))
        cycles = 50 + np.arange(blocks, -1, -1) * rng.uniform(10, 40)
        out.append(LayerBudget(f"l{index}", blocks, block_macs, blocks - 1, curve, cycles))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_equal_slope_hits_target_and_beats_uniform(seed, fraction):
    budgets = _budgets(seed)
    dense = sum(b.macs(0) for b in budgets)
    target = round((1 - fraction) * dense)
    picks, info = equal_slope(budgets, target, hw_weight=0.0)
    kept = sum(b.macs(picks[b.name]) for b in budgets)
    assert kept <= target
    assert target - kept < max(b.block_macs for b in budgets)
    assert all(0 <= picks[b.name] <= b.max_pruned for b in budgets)  # min kept respected
    flat = uniform(budgets, target)
    assert sum(b.macs(flat[b.name]) for b in budgets) <= target

    def distortion(choice):
        return sum(b.curve[choice[b.name]] for b in budgets)

    # with the same FLOPs budget the equal-slope split distorts no more than uniform
    kept_uniform = sum(b.macs(flat[b.name]) for b in budgets)
    if kept >= kept_uniform:
        assert distortion(picks) <= distortion(flat) + 1e-9
    assert info["iterations"] > 0


def test_min_keep_and_unreachable_target():
    model = tiny_model()
    images = tiny_images(8)
    _, result = prune(model, images, sparsity=0.8, block=(8, 8), arch=ARCH8, min_keep=0.1)
    for layer in result.layers:
        assert result.masks[layer.name].sum() >= max(1, np.ceil(0.1 * layer.blocks))
    with pytest.raises(PruneError, match="minimum kept fraction"):
        prune(model, images, sparsity=0.95, block=(8, 8), arch=ARCH8, min_keep=0.5)


# ---------------------------------------------------------------- masks and model


@pytest.mark.parametrize("method", ["lpvit", "magnitude"])
def test_masks_zero_exactly_whole_blocks(method):
    model = tiny_model(seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, result = prune(model, tiny_images(8), method=method, sparsity=0.5, arch=ARCH8)
    assert result.block == (8, 8)
    total = result.summary["totals"]
    assert total["macs_kept"] <= round(0.5 * total["macs_dense"])
    assert total["macs_dense"] - total["macs_kept"] > 0.45 * total["macs_dense"]
    state = pruned.state_dict()
    for layer in result.layers:
        mask = result.masks[layer.name]
        assert mask.shape == layer.grid
        assert (block_nonzero(layer) == mask).all()  # pruned blocks exactly zero, kept not
        key = f"{layer.name}.weight"
        kept = torch.as_tensor(np.kron(mask, np.ones(layer.block))).bool()
        new = state[key].reshape(layer.out_dim, layer.in_dim)
        old = before[key].reshape(layer.out_dim, layer.in_dim)
        assert torch.equal(new[kept], old[kept])
    assert torch.equal(model.state_dict()["head.weight"], state["head.weight"])
    for key, value in model.state_dict().items():  # the input model is left untouched
        assert torch.equal(value, before[key])


def test_finetune_keeps_pruned_blocks_zero():
    teacher = tiny_model(seed=1)
    student, result = prune(teacher, tiny_images(8), sparsity=0.5, arch=ARCH8)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    history = finetune(student, teacher, result, tiny_images(32, seed=5), epochs=2, batch_size=16)
    assert len(history) == 2 and all(np.isfinite(history))
    layers, _ = find_prunable(student, result.block)
    for layer in layers:
        assert (block_nonzero(layer) == result.masks[layer.name]).all()
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, start[k])]
    assert "blocks.0.attn.qkv.weight" in changed


# ---------------------------------------------------------------- compiled Program


def test_pruned_m3vit_tiny_is_block_sparse_and_bit_exact_vs_dense():
    import codesign
    from codesign.compiler import compile_graph
    from codesign.golden import GoldenExecutor
    from codesign.program import NONE, Op, Program

    model = create_model("m3vit-tiny", seed=4)
    arch = ArchConfig(attn_parallel=4, **TINY_BUFFERS)  # 32x32 tiles = 32x32 blocks
    pruned, summary = apply_prune_spec(model, "lpvit:0.5", 4, arch)
    assert summary["block"] == [32, 32] and summary["totals"]["linear_mac_sparsity"] >= 0.49
    assert any(item["layer"] == "blocks.1.mlp" for item in summary["excluded"])
    build = codesign.build(pruned, arch=arch, calib=2, eval_images=1)
    sparse = build.program
    linears = {layer.name: layer for layer in sparse.layers if layer.op == Op.LINEAR}
    for row in summary["layers"]:
        layer = linears[row["layer"]]
        assert (layer.fields["blocks"] != NONE) == (row["kept_blocks"] < row["blocks"])
    assert linears["heads.0"].fields["blocks"] == NONE
    built = build.state.arch
    report = {row["layer"]: row for row in program_sparsity(sparse, built, "zcu102")["layers"]}
    for row in summary["layers"]:
        # what pruning weighed is what the build of the pruned model estimates, per layer
        assert report[row["layer"]]["stored_tiles"] == row["kept_blocks"]
        assert report[row["layer"]]["cycles"] == row["cycles_pruned"]
        assert report[row["layer"]]["cycles_dense"] == row["cycles_dense"]
    assert summary["cycles"]["ddr"]["efficiency"] == 0.8 and summary["cycles"]["tile"] == [32, 32]
    dense = compile_graph(build.graph, built, block_sparse=False)
    assert len(dense.data) > len(sparse.data)
    cycles, dense_cycles = (program_cycles(p, built, "zcu102") for p in (sparse, dense))
    assert cycles["linear"] < dense_cycles["linear"] and cycles["other"] == dense_cycles["other"]
    by_layer = {row["layer"]: row["cycles_dense"] for row in summary["layers"]}
    for name, dense_layer in by_layer.items():  # the dense Program costs what pruning said
        assert dense_cycles["per_layer"][name] == dense_layer
    raw = build.quantize_input(np.random.default_rng(7).standard_normal((1, 3, 32, 64)))[0]
    for task in (0, 1):
        a = GoldenExecutor(Program.from_bytes(sparse.to_bytes())).run(raw, task, trace=True)
        b = GoldenExecutor(Program.from_bytes(dense.to_bytes())).run(raw, task, trace=True)
        np.testing.assert_array_equal(a.output, b.output)
        for name, trace in a.traces.items():
            np.testing.assert_array_equal(trace, b.traces[name])


# ---------------------------------------------------------------- bad input


def test_block_shape_that_does_not_divide_is_an_error():
    with pytest.raises(
        PruneError, match=r"block shape 12x8 does not divide layer patch_embed.proj"
    ):
        prune(tiny_model(), tiny_images(2), sparsity=0.5, block="12x8")
    with pytest.raises(PruneError, match="BHxBW"):
        prune(tiny_model(), tiny_images(2), sparsity=0.5, block="8by8")


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, float("nan")])
def test_sparsity_outside_unit_interval_is_an_error(sparsity):
    with pytest.raises(PruneError, match=r"outside \[0, 1\)"):
        prune(tiny_model(), tiny_images(2), sparsity=sparsity, arch=ARCH8)
    with pytest.raises(PruneError):
        parse_prune_spec(f"lpvit:{sparsity}")


def test_empty_calibration_set_is_an_error():
    for empty in (None, np.zeros((0, 1, 8, 8), np.float32)):
        with pytest.raises(PruneError, match="calibration set is empty"):
            prune(tiny_model(), empty, sparsity=0.5, arch=ARCH8)
    with pytest.raises(PruneError, match="calibration set is empty"):
        apply_prune_spec(tiny_model(), "lpvit:0.5", 0, ARCH8)
    with pytest.raises(PruneError, match="METHOD:SPARSITY"):
        parse_prune_spec("lpvit")
    with pytest.raises(PruneError, match="unknown method"):
        parse_prune_spec("random:0.5")


def test_flops_target_as_fraction_or_count():
    assert resolve_target(1000, sparsity=0.3) == 700
    assert resolve_target(1000, target_macs=0.4) == 400
    assert resolve_target(1000, target_macs=500) == 500
    with pytest.raises(PruneError, match="exceeds"):
        resolve_target(1000, target_macs=2000)
    with pytest.raises(PruneError, match="exactly one"):
        resolve_target(1000, sparsity=0.5, target_macs=0.5)
    with pytest.raises(PruneError, match="positive"):
        resolve_target(1000, target_macs=0)


def test_zero_sparsity_prunes_nothing():
    model = tiny_model()
    _, result = prune(model, tiny_images(4), sparsity=0.0, arch=ARCH8)
    assert all(mask.all() for mask in result.masks.values())
    assert result.summary["totals"]["cycle_ratio"] == 1.0


# ---------------------------------------------------------------- CLI


def test_cli_writes_checkpoint_masks_and_table(tmp_path):
    import yaml

    config_path = tmp_path / "tiny-prune-vit.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "pruned.pt"
    args = ["--model", str(config_path), "--sparsity", "0.5", "--block", "8x8", "--calib", "4"]
    result = CliRunner().invoke(prune_command, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "blocks.0.attn.qkv" in result.output
    assert "cycles: the build's estimate on the zcu102 at w16a24" in result.output
    state, masks, summary = load_pruned(out)
    assert read_pruning_summary(out) == summary
    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    assert read_pruning_summary(plain) is None
    table = json.loads(out.with_suffix(".json").read_text())
    assert table["totals"] == summary["totals"]
    assert 0.49 <= summary["totals"]["linear_mac_sparsity"] <= 0.51
    assert summary["tile"] == [8, 8]
    model = create_model(config_path, weights=out)  # --weights reads the pruned file
    layers, _ = find_prunable(model, (8, 8))
    for layer in layers:
        assert (block_nonzero(layer) == masks[layer.name]).all()
    assert set(state) == set(model.state_dict())
    bad = CliRunner().invoke(prune_command, [*args[:2], "--sparsity", "1.2", "--out", str(out)])
    assert bad.exit_code == 2 and "outside [0, 1)" in bad.output
    both = CliRunner().invoke(
        prune_command, [*args, "--target-flops", "0.5", "--out", str(tmp_path / "x.pt")]
    )
    assert both.exit_code != 0 and "exactly one" in both.output


# ---------------------------------------------------------------- data and checkpoint


def test_digits_dataset_is_split_reproducibly():
    pytest.importorskip("sklearn")
    from codesign.datasets import load_digits

    data = load_digits(size=16, seed=0)
    assert data.train.images.shape[1:] == (1, 16, 16)
    assert len(data.train) + len(data.test) == 1797
    assert abs(len(data.test) - 0.2 * 1797) < 10
    assert set(np.unique(data.test.labels)) == set(range(10))
    assert abs(float(data.train.images.mean())) < 1e-4
    again = load_digits(size=16, seed=0)
    np.testing.assert_array_equal(again.test.labels, data.test.labels)
    other = load_digits(size=16, seed=1)
    assert not np.array_equal(other.test.labels, data.test.labels)


def test_digits_vit_checkpoint_is_accurate():
    pytest.importorskip("sklearn")
    from codesign.datasets import load_digits
    from codesign.models import MODELS_DIR
    from codesign.train import accuracy

    checkpoint = MODELS_DIR / "digits-vit.pt"
    assert checkpoint.stat().st_size < 2 * 1024 * 1024
    model = create_model("digits-vit", weights=checkpoint)
    data = load_digits(size=16)
    assert accuracy(model, data.test.images, data.test.labels) >= 0.95


@pytest.mark.csim
def test_pruned_m3vit_tiny_csim_bit_exact_with_golden():
    """The HLS kernel (g++ C-simulation) runs the block-sparse Program bit-exactly."""
    from codesign.hls.csim import CsimCase, csim_unavailable, expected_regions, run_csim

    reason = csim_unavailable()
    if reason is not None:
        pytest.skip(f"C-simulation unavailable: {reason}")
    import codesign
    from codesign.golden import GoldenExecutor
    from codesign.program import NONE, Op

    arch = ArchConfig(attn_parallel=4, **TINY_BUFFERS)
    pruned, _ = apply_prune_spec(create_model("m3vit-tiny", seed=5), "lpvit:0.5", 4, arch)
    build = codesign.build(pruned, arch=arch, calib=2, eval_images=1)
    program = build.program
    assert any(l.op == Op.LINEAR and l.fields["blocks"] != NONE for l in program.layers)
    executor = GoldenExecutor(program)
    raw = build.quantize_input(np.random.default_rng(11).standard_normal((1, 3, 32, 64)))[0]
    cases = []
    for task in (0, 1):
        result = executor.run(raw, task, trace=True)
        regions = expected_regions(program, result.traces, result.arena, task)
        cases.append(CsimCase(raw, task, regions, f"pruned.task{task}"))
    outcome = run_csim(program, arch, cases)
    assert outcome.ran, outcome.reason
    assert outcome.bit_exact, outcome.first_mismatch
    for case in outcome.cases:
        assert case.bit_exact and case.regions > 5
