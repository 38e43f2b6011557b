"""The build flow end to end: API, CLI, report contents, errors that lose nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from small_models import SMALL_VIT, TINY_BUFFERS

import codesign
from codesign.arch import ArchConfig
from codesign.cli import main
from codesign.compiler import CompileError
from codesign.models import config_from_dict, create_model


def test_tiny_build_fidelity_and_report(tiny_build):
    report = tiny_build.report
    fid = report["fidelity"]["vs_torch"]
    assert fid["cosine"] >= 0.999 and fid["rel_rms"] <= 0.02
    assert set(fid["per_task"]) == {"semseg", "depth"}
    assert fid["per_task"]["semseg"]["agreement"] >= 0.9
    assert fid["per_task"]["depth"]["agreement"] is None
    assert report["model"]["macs"] > 0 and report["model"]["params"] > 0
    for layer in report["layers"]:
        assert "saturations" in layer and layer["formats"]
    assert report["program"]["layers"] == len(tiny_build.program.layers)


def test_predict_golden_matches_torch_and_is_deterministic(tiny_build):
    rng = np.random.default_rng(7)
    images = rng.standard_normal((2, 3, 32, 64))
    for task in (0, 1):
        got = tiny_build.predict(images, task=task)
        with torch.no_grad():
            ref = tiny_build.module(torch.tensor(images, dtype=torch.float32), task).numpy()
        assert got.shape == ref.shape
        cos = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
        assert cos > 0.999
        np.testing.assert_array_equal(got, tiny_build.predict(images, task=task))
    with pytest.raises(ValueError, match="executor"):
        tiny_build.predict(images, executor="fpga")


def test_build_from_module_with_classification_head():
    model = create_model(config_from_dict(SMALL_VIT), seed=5)
    build = codesign.build(model, board="kv260", precision="w8a16", eval_images=4)
    fid = build.report["fidelity"]["vs_torch"]
    assert fid["per_task"]["classification"]["agreement"] is not None
    assert fid["cosine"] > 0.99
    images = np.random.default_rng(0).standard_normal((3, 3, 32, 32))
    assert build.predict(torch.tensor(images)).shape == (3, 10)
    assert build.report["precision"] == "w8a16"


def test_model_too_large_for_arch_names_the_limit():
    with pytest.raises(CompileError, match=r"dim = 64 exceeds the ArchConfig maximum 32"):
        codesign.build("m3vit-tiny", arch=ArchConfig(max_dim=32))
    # 2 heads of 32 features; 16 heads in 64 features leave 4 lanes per head
    with pytest.raises(CompileError, match=r"head dim \(dim / heads\) = 32 exceeds .* 4"):
        codesign.build("m3vit-tiny", arch=ArchConfig(max_dim=64, max_heads=16))


@pytest.mark.parametrize(
    "arch",
    [
        ArchConfig(tile_in=8, tile_out=16, attn_parallel=1, bus_bits=64, **TINY_BUFFERS),
        ArchConfig(tile_in=64, tile_out=8, attn_parallel=4, bus_bits=256, **TINY_BUFFERS),
    ],
)
def test_other_arch_configs_give_the_same_fidelity(arch, tiny_build):
    build = codesign.build("m3vit-tiny", arch=arch)
    ours = build.report["fidelity"]["vs_torch"]["cosine"]
    assert ours >= 0.999
    assert build.program.tile_in == arch.tile_in
    assert build.program_bytes != tiny_build.program_bytes


def test_weights_file_flows_through_and_bad_shapes_are_named(tmp_path):
    model = create_model("m3vit-tiny", seed=11)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    build = codesign.build("m3vit-tiny", weights=str(path))
    assert build.report["model"]["weights"] == str(path)
    state = model.state_dict()
    state["blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight.*\(3, 3\)"):
        codesign.build("m3vit-tiny", weights=str(path))


def test_cli_lists_models_and_boards():
    runner = CliRunner()
    result = runner.invoke(main, ["models"])
    assert result.exit_code == 0
    for name in ("m3vit", "m3vit-tiny", "vit-tiny", "deit-small"):
        assert name in result.output
    result = runner.invoke(main, ["boards"])
    assert result.exit_code == 0 and "xczu9eg-ffvb1156-2-e" in result.output


def test_cli_build_writes_the_build_folder(tmp_path):
    out = tmp_path / "tiny"
    result = CliRunner().invoke(
        main, ["build", "--model", "m3vit-tiny", "--board", "zcu102", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    for name in ("program.bin", "program.json", "report.json", "report.md", "fidelity.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    for key in ("cosine", "max_abs_err", "rel_rms"):
        assert key in report["fidelity"]["vs_torch"]
    assert report["model"]["macs"] > 0 and report["model"]["params"] > 0
    assert codesign.program.Program.load(out / "program.bin").model == "m3vit-tiny"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_cli_failure_leaves_previous_output_intact(tmp_path):
    out = tmp_path / "tiny"
    out.mkdir()
    (out / "report.json").write_text("previous build")
    runner = CliRunner()
    result = runner.invoke(
        main, ["build", "--model", "m3vit-tiny", "--precision", "16bit", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "precision" in result.output
    assert (out / "report.json").read_text() == "previous build"
    result = runner.invoke(
        main, ["build", "--model", "m3vit-tiny", "--task", "5", "--out", str(out)]
    )
    assert result.exit_code == 2 and "task 5" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    result = runner.invoke(main, ["build", "--model", "no-such-model", "--out", str(out)])
    assert result.exit_code == 2 and "m3vit" in result.output


@pytest.mark.slow
def test_full_m3vit_meets_the_fidelity_bar():
    build = codesign.build("m3vit", board="zcu102", eval_images=2)
    for task, entry in build.report["fidelity"]["vs_torch"]["per_task"].items():
        assert entry["cosine"] >= 0.999, task
        assert entry["rel_rms"] <= 0.02, task


def test_narrow_activations_and_other_table_widths_compile_and_run():
    build = codesign.build("m3vit-tiny", precision="w16a8")
    assert build.report["fidelity"]["vs_torch"]["cosine"] > 0.9
    build = codesign.build("m3vit-tiny", arch={"table_width": 15})
    assert build.report["fidelity"]["vs_torch"]["cosine"] >= 0.999


def test_precision_whose_accumulators_overflow_is_refused():
    with pytest.raises(ValueError, match="64 bits"):
        codesign.build("m3vit-tiny", precision="w32a32")


def test_prune_spec_flows_to_a_block_sparse_program_and_report():
    build = codesign.build("m3vit-tiny", prune="magnitude:0.5", csim=True)
    pruning = build.report["pruning"]
    assert pruning["method"] == "magnitude"
    totals = pruning["program"]["totals"]
    assert totals["tile_sparsity"] > 0.3 and totals["cycle_ratio"] < 0.85
    assert any(layer["block_sparse"] for layer in pruning["program"]["layers"])
    assert build.report["csim"]["bit_exact"] is True


@pytest.mark.rtl
def test_build_with_rtl_writes_the_linted_rtl_and_a_filelist(tmp_path):
    out = tmp_path / "tiny"
    result = CliRunner().invoke(
        main, ["build", "--model", "m3vit-tiny", "--no-csim", "--rtl", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    files = (out / "rtl" / "filelist.f").read_text().split()
    assert files[-1] == "codesign_top.sv"  # the accelerator, its modules first
    assert "codesign_tb.sv" not in files  # the simulated DDR stays out of synthesis
    assert (out / "rtl" / "filelist_sim.f").read_text().split()[-1] == "codesign_tb.sv"
    assert set(files) < set(report["rtl"]["files"])
    assert all((out / "rtl" / name).is_file() for name in report["rtl"]["files"])
    assert set(report["rtl"]["lint"].values()) == {"clean"}
    # the rtl step is a build step: without out= its artefacts are on the Build's state
    build = codesign.build("m3vit-tiny", csim=False, rtl=True)
    assert "rtl" in build.report["timing"]["stages_s"]
    assert build.state.rtl_files["filelist.f"] == (out / "rtl" / "filelist.f").read_text()
    assert build.state.rtl_files["codesign_top.sv"] == (out / "rtl" / "codesign_top.sv").read_text()
    assert build.report["rtl"]["files"] == report["rtl"]["files"]


def test_default_arch_grows_its_buffers_for_a_wider_model():
    wide = {**SMALL_VIT, "name": "vit-wide", "embed_dim": 768, "depth": 1, "num_heads": 12}
    build = codesign.build(create_model(config_from_dict(wide)), board="zcu102")
    assert build.report["arch"]["max_dim"] >= 768
    assert build.report["arch_choice"]["chosen_automatically"] is True
