"""C-simulation of the HLS kernel (g++ + open ap_types): bit-exact with the golden executor
on whole models, for several ArchConfigs, dense and block-sparse; mismatches are reported
by layer; the kernel compiles -Wall clean. Binaries are cached per ArchConfig, so tests
sharing an ArchConfig share one compile."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from small_models import TINY_BUFFERS

import codesign
from codesign.arch import ArchConfig
from codesign.golden import GoldenExecutor
from codesign.hls import csim as csim_module
from codesign.hls.csim import (
    CsimCase,
    CsimError,
    build_csim,
    csim_unavailable,
    expected_regions,
    run_cases,
    run_csim,
)
from codesign.hls.render import render_sources
from codesign.models import create_model
from codesign.program import NONE, Op, Program

pytestmark = [
    pytest.mark.csim,
    pytest.mark.skipif(csim_unavailable() is not None, reason=str(csim_unavailable())),
]

# (Ti, To, P, bus): the tile, the attention slots and the bus width all change the code;
# buffers for m3vit-tiny, so that each design fits the ZCU102 the builds check it against
ARCHS = {
    "t32x32-p4-bus128": ArchConfig(tile_in=32, tile_out=32, attn_parallel=4, bus_bits=128,
                                   **TINY_BUFFERS),
    "t16x8-p1-bus64": ArchConfig(tile_in=16, tile_out=8, attn_parallel=1, bus_bits=64,
                                 **TINY_BUFFERS),
    "t8x32-p4-bus256": ArchConfig(tile_in=8, tile_out=32, attn_parallel=4, bus_bits=256,
                                  **TINY_BUFFERS),
    # weights striped over four masters (a 16x8 int16 tile is exactly one 4 x 64-bit beat)
    "t16x8-p2-bus64-w4": ArchConfig(tile_in=16, tile_out=8, attn_parallel=2, bus_bits=64,
                                    weight_ports=4, **TINY_BUFFERS),
}  # fmt: skip


def golden_cases(build, images: int = 1, tasks=None, seed: int = 0) -> list[CsimCase]:
    """Random images through the golden executor: every layer's output is expected."""
    program = build.program
    executor = GoldenExecutor(Program.from_bytes(build.program_bytes))
    meta = build.graph.meta
    rng = np.random.default_rng(seed)
    raw = build.quantize_input(rng.standard_normal((images, meta["in_chans"], *meta["image_size"])))
    cases = []
    for task in range(program.n_tasks) if tasks is None else tasks:
        for index, sample in enumerate(raw):
            result = executor.run(sample, task, trace=True)
            regions = expected_regions(program, result.traces, result.arena, task)
            cases.append(CsimCase(sample, task, regions, f"task{task}.image{index}"))
    return cases


def assert_bit_exact(result):
    assert result.ran, result.reason
    details = [m for case in result.cases for m in case.mismatches]
    assert result.bit_exact, f"first mismatch {result.first_mismatch}: {details[:5]}"
    assert result.first_mismatch is None
    for case in result.cases:
        assert case.bit_exact and case.regions > 5


def test_m3vit_tiny_both_tasks_bit_exact(tiny_build):
    cases = golden_cases(tiny_build, images=2)
    assert sorted({case.task for case in cases}) == [0, 1]
    result = run_csim(tiny_build.program, tiny_build.state.arch, cases)
    assert_bit_exact(result)
    # the final output region is checked too, and every executed layer has a region
    program = tiny_build.program
    layers = [layer for layer in program.layers if layer.task in (-1, 0)]
    checked = len(layers) - sum(layer.op == Op.MOE_GATE for layer in layers) + 1
    assert result.cases[0].regions == checked
    for case, expected in zip(result.cases, cases, strict=True):
        np.testing.assert_array_equal(case.output, expected.expected[-1][-1])
    assert result.seconds >= 0 and result.compile_seconds >= 0  # wall clock: recorded only


def test_vit_tiny_bit_exact():
    build = codesign.build("vit-tiny", eval_images=1)
    result = run_csim(build.program, build.state.arch, golden_cases(build, images=1))
    assert_bit_exact(result)


def test_m3vit_tiny_with_a_wider_residual_stream_bit_exact():
    """w8a8r16 (8-bit multiplies, a 16-bit residual stream): the HLS kernel takes any
    format, so the same binary runs it bit-exact, both tasks."""
    build = codesign.build("m3vit-tiny", precision="w8a8r16", eval_images=1)
    stream = build.graph.meta["calibration"]["residual_stream"]
    assert stream and {build.graph.tensors[name].fmt.width for name in stream} == {16}
    result = run_csim(build.program, build.state.arch, golden_cases(build, images=1, seed=5))
    assert_bit_exact(result)


@pytest.mark.parametrize("name", list(ARCHS))
def test_arch_configs_render_differently_and_stay_bit_exact(name):
    arch = ARCHS[name]
    sources = render_sources(arch)
    others = [render_sources(a) for n, a in ARCHS.items() if n != name]
    assert all(sources["src/codesign_config.h"] != o["src/codesign_config.h"] for o in others)
    build = codesign.build("m3vit-tiny", arch=arch, eval_images=1)
    assert build.program.tile_in == arch.tile_in and build.program.bus_bits == arch.bus_bits
    result = run_csim(build.program, arch, golden_cases(build, images=1, seed=3))
    assert_bit_exact(result)


@pytest.mark.parametrize("weight_ports", [1, 2])
def test_block_sparse_program_bit_exact(weight_ports):
    model = create_model("m3vit-tiny", seed=2)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[32:64, 0:32] = 0  # one 32x32 tile of the default UCU
            block.attn.proj.weight[:, 32:] = 0  # whole tile columns
            if hasattr(block.mlp, "fc1"):
                block.mlp.fc1.weight[:32, :] = 0  # a whole output tile row: bias only
    build = codesign.build(model, arch={"weight_ports": weight_ports})
    assert build.program.weight_ports == weight_ports
    linears = {layer.name: layer for layer in build.program.layers if layer.op == Op.LINEAR}
    assert linears["blocks.0.attn.qkv"].fields["blocks"] != NONE
    assert linears["blocks.0.attn.proj"].fields["blocks"] != NONE
    assert linears["blocks.0.mlp.fc1"].fields["blocks"] != NONE
    result = run_csim(build.program, build.state.arch, golden_cases(build, images=1, seed=5))
    assert_bit_exact(result)


@pytest.mark.parametrize("window_kib", [64, 8])
def test_on_chip_arena_window_bit_exact(window_kib):
    """The arena's first window_bytes live in the kernel's on-chip array: 64 KiB holds every
    buffer only the kernel touches, 8 KiB spills some to DDR. The testbench reads the window
    regions from the kernel's array (poisoned at every start, the DDR copy stays zero), so
    a bit-exact verdict means the layers really wrote and read them there."""
    build = codesign.build("m3vit-tiny", arch={"arena_window_kib": window_kib}, eval_images=1)
    program, arch = build.program, build.state.arch
    assert 0 < program.window_bytes <= arch.arena_window_bytes == window_kib * 1024
    memory = program.meta["memory"]
    kernel_only = [b for b in memory["buffers"] if not b["host"]]
    on_chip = [b["name"] for b in kernel_only if b["on_chip"]]
    assert any(name.endswith("#queue") for name in on_chip)  # word arrays, partial beats
    if window_kib == 64:
        assert memory["spilled"] == [] and len(on_chip) == len(kernel_only)
    else:
        assert memory["spilled"] and len(on_chip) < len(kernel_only)

    cases = golden_cases(build, images=2, seed=7)
    for case in cases:
        offsets = [region[1] for region in case.expected]
        in_window = sum(offset < program.window_bytes for offset in offsets)
        assert 0 < in_window < len(offsets)  # the final output is the host's, in DDR
    result = run_csim(program, arch, cases)
    assert_bit_exact(result)
    assert result.warnings == [], "\n".join(result.warnings)
    for case, expected in zip(result.cases, cases, strict=True):
        np.testing.assert_array_equal(case.output, expected.expected[-1][-1])

    # the C-sim executor, on an ArchConfig read back from program.bin alone
    from codesign.executors import CsimArena, run_input
    from codesign.hls.csim import arch_from_program

    loaded = Program.from_bytes(build.program_bytes)
    assert arch_from_program(loaded).arena_window_bytes >= program.window_bytes
    images = np.random.default_rng(13).standard_normal((2, 3, 32, 64))
    raw = build.quantize_input(images)
    executor = CsimArena(arch_from_program(loaded))
    golden = GoldenExecutor(loaded)
    for task in (0, 1):
        for sample in raw:
            np.testing.assert_array_equal(
                run_input(executor, loaded, sample, task), golden.run(sample, task).output
            )


def test_corrupted_expected_values_name_the_layer(tiny_build):
    cases = golden_cases(tiny_build, images=1, tasks=[1])
    regions = cases[0].expected
    target = next(i for i, r in enumerate(regions) if r[0] == "blocks.1.attn")
    name, offset, rows, cols, stride, values = regions[target]
    values = values.copy()
    values[3, 5] += 7
    regions[target] = (name, offset, rows, cols, stride, values)
    result = run_csim(tiny_build.program, tiny_build.state.arch, cases)
    assert result.ran and result.bit_exact is False
    assert result.first_mismatch == "blocks.1.attn"
    assert result.cases[0].mismatches == [
        f"blocks.1.attn row 3 col 5 got {values[3, 5] - 7} expected {values[3, 5]} "
        f"(1 of {rows * cols} values differ)"
    ]


def test_kernel_compiles_wall_clean_and_the_binary_is_shared(tiny_build):
    arch = tiny_build.state.arch
    binary = build_csim(arch)
    assert binary.warnings == [], "\n".join(binary.warnings)
    assert build_csim(arch).path == binary.path  # same ArchConfig, same binary
    assert build_csim(arch, "kv260").path == binary.path  # the board does not enter it
    assert build_csim(ARCHS["t16x8-p1-bus64"]).path != binary.path


def test_kernel_refuses_a_program_for_another_arch(tiny_build):
    other = ArchConfig(tile_in=16, tile_out=8, attn_parallel=1, bus_bits=64)
    binary = build_csim(other)
    cases = golden_cases(tiny_build, images=1, tasks=[0])
    with pytest.raises(CsimError, match="another bus width"):
        run_cases(binary, tiny_build.program_bytes, cases)


def test_predict_through_csim_equals_golden(tiny_build):
    images = np.random.default_rng(11).standard_normal((2, 3, 32, 64))
    for task in (0, 1):
        golden = tiny_build.predict(images, task=task)
        simulated = tiny_build.predict(images, task=task, executor="csim")
        np.testing.assert_array_equal(simulated, golden)
    from codesign.executors import CsimArena, run_input
    from codesign.hls.csim import arch_from_program

    executor = CsimArena(arch_from_program(tiny_build.program))  # ArchConfig from program.bin
    raw = tiny_build.quantize_input(images[:1])[0]
    expected = GoldenExecutor(tiny_build.program).run(raw, 1).output
    np.testing.assert_array_equal(run_input(executor, tiny_build.program, raw, 1), expected)


def test_cli_build_runs_csim_and_reports_it(tmp_path):
    from codesign.cli import main

    out = tmp_path / "tiny"
    result = CliRunner().invoke(main, ["build", "--model", "m3vit-tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    csim = report["csim"]
    assert csim["ran"] and csim["bit_exact"] is True and csim["first_mismatch"] is None
    assert csim["seconds"] >= 0 and csim["compile_seconds"] >= 0  # wall clock: recorded only
    assert {case["task"] for case in csim["cases"]} == {0, 1}
    assert "C-simulation" in (out / "report.md").read_text()
    assert (out / "hls" / "src" / "codesign_top.cpp").is_file()
    assert (out / "hls" / "tb" / "cases" / "task1" / "expected.txt").is_file()
    args = (out / "hls" / "tb" / "args.txt").read_text().split()
    assert args == ["../program.bin", "tb/cases/task0", "tb/cases/task1"]
    skipped = CliRunner().invoke(
        main, ["build", "--model", "m3vit-tiny", "--out", str(tmp_path / "b"), "--no-csim"]
    )
    assert skipped.exit_code == 0, skipped.output
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["csim"]["ran"] is False and "disabled" in report["csim"]["reason"]


def test_cli_exits_nonzero_on_a_csim_mismatch(tmp_path, monkeypatch):
    from codesign.cli import main

    real = csim_module.expected_regions

    def corrupted(program, traces, arena, task):
        regions = real(program, traces, arena, task)
        name, offset, rows, cols, stride, values = regions[2]
        return [*regions[:2], (name, offset, rows, cols, stride, values + 1), *regions[3:]]

    monkeypatch.setattr(csim_module, "expected_regions", corrupted)
    out = tmp_path / "bad"
    result = CliRunner().invoke(main, ["build", "--model", "m3vit-tiny", "--out", str(out)])
    assert result.exit_code == 1, result.output
    csim = json.loads((out / "report.json").read_text())["csim"]
    layers = [layer.name for layer in Program.load(out / "program.bin").layers]
    assert csim["ran"] and csim["bit_exact"] is False
    assert csim["first_mismatch"] == layers[2]
    assert "MISMATCH" in (out / "report.md").read_text()


@pytest.mark.slow
def test_m3vit_full_both_tasks_bit_exact():
    build = codesign.build("m3vit", eval_images=1)
    result = run_csim(build.program, build.state.arch, golden_cases(build, images=1))
    assert_bit_exact(result)
    assert {case.task for case in result.cases} == {0, 1}
