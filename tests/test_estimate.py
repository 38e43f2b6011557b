"""The cycle, latency and resource estimate of a Program (codesign.estimate)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest

from codesign import estimate as est
from codesign.arch import ArchConfig, ddr_model, get_board
from codesign.arch.config import RTL_LATENCY
from codesign.ops import spec
from codesign.program import NONE, Op

# ---------------------------------------------------------------- per-op formulas by hand


def test_linear_cycles_by_hand():
    # 4 rows x 64 -> 32, Ti = To = 32, int16 weights, 128-bit bus:
    # tile load = 32*32*2 / 16 = 128 beats; 2 tiles; x read = 4 rows * (64*4/16) = 64 beats
    # the drain has 128 / 32 = 4 lanes: a row of 32 outputs takes 8 cycles (its 8 beats)
    # UCU = first load 128 + 2 * max(4, 128) + drain 4 * 8 + the drain's pipeline
    pipe = est.UCU_PIPELINE
    assert pipe == RTL_LATENCY["ucu_drain"] - 6  # the drain less what overlaps the MACs
    assert est.tile_load_beats(32, 32, 2, 16) == 128
    assert est.drain_chunks(32, 128) == 8
    assert est.ucu_cycles(4, 2, 1, 128) == 128 + 256 + 4 + pipe  # one chunk: full-width lanes
    assert est.ucu_cycles(4, 2, 1, 128, 8) == 416 + pipe
    assert est.linear_cycles(4, 64, 32, 32, 32, 2, 16) == 64 + 416 + pipe
    # 200 rows: the MACs take 128 + 2 * 200 = 528, then the last (only) tile row drains
    # at 8 cycles a row: 528 + 1600 + pipe, longer than the writes' 200 * 8 + 128 +
    # 200 + pipe (which start with the drain)
    assert est.linear_cycles(200, 64, 32, 32, 32, 2, 16) == 200 * 16 + 2128 + pipe
    # compute-bound: 16 input tiles per output tile row (512 inputs)
    ucu = 128 + 16 * 200 + 1600 + pipe
    assert est.linear_cycles(200, 512, 32, 32, 32, 2, 16) == 200 * 128 + ucu


def test_attention_layernorm_elementwise_by_hand():
    # 9 tokens, P = 8: per pass ceil(9/8) * 9 + 8 - 1 = 25; qkv read 9 * (3*64*4/16) = 432;
    # a whole head row a beat, but the running sum's update takes two cycles: pass 1 costs
    # 2 a key, pass 2 one
    assert est.attention_cycles(9, 64, 2, 8, 16) == 432 + 2 * (3 * 25 + est.ATTENTION_PIPELINE)
    # 16 attention lanes take a head row of 32 values in 2 beats: every key costs 2 cycles
    assert est.attention_cycles(9, 64, 2, 8, 16, lanes=16) == 432 + 2 * (
        2 * 2 * 25 + est.ATTENTION_PIPELINE
    )
    # a head of 16 in those 16 lanes: pass 1 still takes 2 cycles a key (the running sum's
    # two-stage update), pass 2 one; qkv read 9 * (3*32*4/16) = 216
    assert est.attention_cycles(9, 32, 2, 8, 16, lanes=16) == 216 + 2 * (
        (2 + 1) * 25 + est.ATTENTION_PIPELINE
    )
    assert est.attention_chunks(32, 0) == 1 and est.attention_chunks(33, 16) == 3
    # LayerNorm 9 rows of 64 with 32 lanes: per row max(2 * 2, 64*4/16 = 16) = 16
    # 2 beats of 32 lanes summed, then normalised 4 lanes (one bus beat) at a time: 2 + 16
    assert est.layernorm_cycles(9, 64, 32, 16) == 9 * 18 + est.LAYERNORM_PIPELINE
    # ADD of 9 x 64 reads two streams of 16 beats per row
    assert est.elementwise_cycles(9, 64, 32, 16, inputs=2) == 9 * 32 + est.ELEMENTWISE_PIPELINE


def test_dsp_and_bram_arithmetic():
    assert est.mult_dsps(24, 16) == 1  # fits 27 x 18
    assert est.mult_dsps(24, 24) == 2  # one operand split
    assert est.mult_dsps(32, 32) == 4
    assert est.mult_dsps(26, 18, "zynq") == 2  # DSP48E1 is 25 x 18
    assert est.mac_dsps(8, 8) == 0.5  # INT8 packing on DSP48E2
    assert est.mac_dsps(8, 8, "zynq") == 1
    assert est.bram36_for(16384, 24) == 12  # 16K x 2 or 4K x 9: 12 tiles
    assert est.bram36_for(256, 52) == 1  # 512 x 72
    assert est.bram36_for(257, 18) == 0.5  # one BRAM18 (1K x 18)
    assert est.bram36_for(0, 8) == 0
    assert est.uram_for(16384, 24) == 4


# ---------------------------------------------------------------- program level


def test_every_layer_costed_with_its_formula(tiny_build):
    from codesign.compiler import compile_graph

    # the arena all in DDR (the window's costs: test_the_window_takes_activation_traffic...)
    # and a drain a beat wide (the y port's: test_the_y_port_takes_an_output_tile_row...)
    arch = tiny_build.state.arch.with_(arena_window_kib=0, drain_lanes=0)
    program = compile_graph(tiny_build.graph, arch)
    board = get_board("zcu102")
    result = est.estimate_program(program, arch, board, task=0)
    bus = arch.bus_bytes
    # the default's weight masters on the board's DDR model (80 % of its peak)
    stream = est.weight_stream(program, ddr_model(board, arch).bytes_per_cycle)
    descriptor = 256 // bus + est.AXI_LATENCY + est.LAYER_DISPATCH
    assert len(result["layers"]) == len(program.layers)
    for layer, entry in zip(program.layers, result["layers"], strict=True):
        assert entry["name"] == layer.name and entry["op"] == layer.op.name
        f = layer.fields
        if layer.task not in (-1, 0):
            assert not entry["runs"] and entry["cycles"] == descriptor
            continue
        if layer.op == Op.LINEAR:
            expected = est.linear_cycles(
                f["rows"], f["in_dim"], f["out_dim"], arch.tile_in, arch.tile_out, f["w_bytes"],
                bus, stream=stream,
            )  # fmt: skip
        elif layer.op == Op.LAYERNORM:  # gamma and beta, then the rows
            params = 2 * est.cycles.beats(4 * f["dim"], bus)
            expected = params + est.layernorm_cycles(f["rows"], f["dim"], arch.tile_in, bus)
        elif layer.op == Op.ATTENTION:
            expected = est.attention_cycles(f["tokens"], f["dim"], f["heads"], f["parallel"], bus)
        else:
            continue
        assert entry["compute_cycles"] == expected, layer.name
        waits = round(est.LAYER_ROUND_TRIPS[layer.op] * est.AXI_LATENCY)
        assert entry["latency_cycles"] == waits, layer.name
        fetch = descriptor - est.AXI_LATENCY  # the descriptor's own round trip is in waits
        assert entry["cycles"] == max(expected, entry["ddr_cycles"]) + fetch + waits
    # once per run: header twice, one check read per descriptor and the rule engine
    # on each (codesign.ops.microcode), the four tables
    header = 2 * (512 // bus + est.AXI_LATENCY)
    check = len(program.layers) * (256 // bus + est.AXI_LATENCY)
    check += est.rule_engine_cycles(program, arch)
    assert est.rule_engine_cycles(program, arch) > 20 * len(program.layers)
    tables = sum(-(-4 * t.entries // bus) + est.AXI_LATENCY for t in program.tables.values())
    total = header + check + tables + sum(entry["cycles"] for entry in result["layers"])
    assert result["cycles"] == total
    assert result["latency_ms"] == pytest.approx(total / 300e3)


def _embed_beats(program, layer) -> int:
    """DDR beats of an EMBED layer's position rows."""
    rows = layer.fields["patches"] + layer.fields["prefix"]
    return rows * -(-4 * layer.fields["dim"] // (program.bus_bits // 8))


def test_ddr_latency_adds_the_exposed_round_trips(tiny_build):
    """Each cycle of DDR latency costs every round trip the schedule exposes: per running
    layer its op's count (MoE experts: plus three per expert with tokens; a layer in the
    on-chip window: its Program reads only), per skipped layer and per startup read one."""
    program, arch = tiny_build.program, tiny_build.state.arch
    counts = est.expert_counts_from_run(program, tiny_build.state.first_input[0], 0)
    fast, slow = (
        est.estimate_cycles(program, arch, "zcu102", counts, 0, ddr_latency=latency)
        for latency in (0, 100)
    )
    trips = 2 + len(program.layers) + len(program.tables)  # header twice, check, tables
    on_chip = {e["name"] for e in slow["layers"] if e.get("arena_on_chip")}
    assert on_chip  # the ZCU102's default keeps most layers' activations in its window
    for layer in program.layers:
        if layer.task not in (-1, 0):
            trips += 1
            continue
        active = sum(1 for c in counts.get(layer.name, []) if c)
        op = spec(layer.op)
        if layer.name in on_chip:  # only the Program's reads go to DDR
            trips += op.round_trips_on_chip + op.round_trips_on_chip_per_expert * active
            continue
        trips += est.LAYER_ROUND_TRIPS[layer.op]
        if layer.op == Op.MOE_EXPERTS:
            trips += est.EXPERT_ROUND_TRIPS * active
    # and EMBED's position rows, four commands ahead, wait on the round trips beyond them
    streams = sum(
        est.cycles.windowed_read_waits(_embed_beats(program, layer), 100)
        for entry, layer in zip(slow["layers"], program.layers, strict=True)
        if layer.op == Op.EMBED and entry["runs"]
    )
    assert slow["cycles"] - fast["cycles"] == pytest.approx(
        100 * trips + streams, abs=len(program.layers)
    )


def test_skipped_task_layers_and_per_task_totals(tiny_build):
    program, arch = tiny_build.program, tiny_build.state.arch
    per_task = [est.estimate_program(program, arch, "zcu102", task=t) for t in (0, 1)]
    for task, result in enumerate(per_task):
        runs = {e["name"] for e in result["layers"] if e["runs"]}
        for layer in program.layers:
            assert (layer.name in runs) == (layer.task in (-1, task))
    # with balanced queues every shared layer costs the same for both tasks
    for a, b in zip(per_task[0]["layers"], per_task[1]["layers"], strict=True):
        if a["task"] == -1:
            assert a["cycles"] == b["cycles"]
    with pytest.raises(ValueError, match="task 2 out of range"):
        est.estimate_program(program, arch, "zcu102", task=2)


def test_arch_mismatch_is_refused(tiny_build):
    with pytest.raises(ValueError, match="tile_in"):
        other = tiny_build.state.arch.with_(tile_in=2 * tiny_build.state.arch.tile_in)
        est.estimate_program(tiny_build.program, other, "zcu102")
    with pytest.raises(ValueError, match="attn_lanes"):
        chunked = tiny_build.state.arch.with_(attn_lanes=8)
        est.estimate_program(tiny_build.program, chunked, "zcu102")


def test_fewer_attention_lanes_cost_cycles_not_answers(tiny_build):
    """m3vit-tiny with 8 attention lanes (heads of 32 in 4 beats): the same Program but for
    the header's attn_lanes (so the same answers), each attention layer's passes 8/3 as
    long (a key 4 + 4 cycles, against 2 + 1 for a whole row: pass 1's running sum takes
    two), fewer attention multipliers."""
    import codesign

    arch = tiny_build.state.arch.with_(attn_lanes=8)
    chunked = codesign.build("m3vit-tiny", board="zcu102", arch=arch, eval_images=2)
    assert chunked.program.attn_lanes == 8 and tiny_build.program.attn_lanes == 0
    assert chunked.program.data == tiny_build.program.data
    assert [layer.fields for layer in chunked.program.layers] == [
        layer.fields for layer in tiny_build.program.layers
    ]
    whole = est.estimate_program(tiny_build.program, tiny_build.state.arch, "zcu102")
    lanes8 = est.estimate_program(chunked.program, arch, "zcu102")
    for before, after in zip(whole["layers"], lanes8["layers"], strict=True):
        if before["op"] == "ATTENTION":
            assert 3 * after["breakdown"]["compute"] == 8 * before["breakdown"]["compute"]
        else:
            assert after["cycles"] == before["cycles"]
    dsp = {u["name"]: u["dsp"] for u in whole["resources"]["units"]}
    dsp8 = {u["name"]: u["dsp"] for u in lanes8["resources"]["units"]}
    assert dsp8["attention"] < dsp["attention"]


@pytest.fixture(scope="module")
def pruned_pair():
    """m3vit-tiny with half the UCU tiles of blocks.0.mlp.fc1 pruned: the Program stores
    it block-sparse; the same graph compiled dense is the reference."""
    import torch

    import codesign
    from codesign.compiler import compile_graph
    from codesign.models import create_model

    model = create_model("m3vit-tiny", seed=5)
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight[:, 32:] = 0  # fc1 is 256 x 64: 8 of its 16 tiles
    build = codesign.build(model, board="zcu102", eval_images=1, calib=1)
    dense = compile_graph(build.graph, build.state.arch, block_sparse=False)
    return build, dense


def test_block_sparse_layer_costs_only_its_stored_tiles(pruned_pair):
    build, dense = pruned_pair
    arch = build.state.arch
    name = "blocks.0.mlp.fc1"
    sparse_entry = _entry(est.estimate_program(build.program, arch, "zcu102"), name)
    dense_entry = _entry(est.estimate_program(dense, arch, "zcu102"), name)
    assert sparse_entry["block_sparse"] and not dense_entry["block_sparse"]
    assert sparse_entry["stored_tiles"] == 8 and dense_entry["stored_tiles"] == 16
    layer = next(layer for layer in build.program.layers if layer.name == name)
    f = layer.fields
    stream = est.cycles.layer_stream(
        build.program, arch, layer, ddr_model("zcu102", arch).bytes_per_cycle
    )
    shape = (f["rows"], f["in_dim"], f["out_dim"], 32, 32, 2, arch.bus_bytes)
    saved = dense_entry["compute_cycles"] - sparse_entry["compute_cycles"]
    assert saved == est.linear_cycles(*shape, stream=stream) - est.linear_cycles(
        *shape, stored_tiles=8, stream=stream
    )
    # over one master (MAC-bound here), every pruned tile saves exactly its slot in the
    # stream; over four the int32 writes bound this layer and pruning saves less
    one = est.WeightStream(1, arch.bus_bytes)
    load = est.tile_load_beats(32, 32, 2, one.rate)
    assert est.linear_cycles(*shape, stream=one) - est.linear_cycles(
        *shape, stored_tiles=8, stream=one
    ) == 8 * max(f["rows"], load)
    assert sparse_entry["macs"] * 2 == dense_entry["macs"]
    index_bytes = 4 * (8 + 1 + 8)  # row_ptr[out_tiles + 1] + col[nnz]
    assert dense_entry["weight_bytes"] - sparse_entry["weight_bytes"] == 8 * 2048 - index_bytes


def test_layer_cost_of_stored_tiles_is_what_the_pruned_program_costs(pruned_pair):
    """Pruning weighs a layer's tiles with ``layer_cost(..., stored)`` on the dense
    Program: it must be the block-sparse Program's estimate of that layer (its CSR index
    bytes included), and the dense one's with every tile."""
    build, dense = pruned_pair
    arch, name = build.state.arch, "blocks.0.mlp.fc1"
    ddr = ddr_model("zcu102", arch)
    sparse_entry = _entry(est.estimate_cycles(build.program, arch, "zcu102"), name)
    layer = next(layer for layer in dense.layers if layer.name == name)
    as_pruned = est.layer_cost(dense, arch, layer, ddr, None, 8)
    assert (
        as_pruned["cycles"]
        == sparse_entry["cycles"]
        == sparse_entry["cycles_dense"]
        - (est.layer_cost(dense, arch, layer, ddr)["cycles"] - as_pruned["cycles"])
    )
    assert as_pruned["weight_bytes"] == sparse_entry["weight_bytes"] and as_pruned["block_sparse"]
    assert est.tile_count(dense, layer) == 16
    assert (
        est.layer_cost(dense, arch, layer, ddr, None, 16)["weight_bytes"]
        == _entry(est.estimate_cycles(dense, arch, "zcu102"), name)["weight_bytes"]
    )


@pytest.mark.parametrize("rows", [128, 200, 512])
def test_half_sparse_ucu_costs_at_most_55_percent(rows):
    """At 50% block sparsity the weight-streaming part (UCU) of a layer takes <= 55% of
    the dense cycles once rows >= the tile load beats (the activation read of
    linear_cycles is not reduced by pruning and is checked separately above)."""
    load = est.tile_load_beats(32, 32, 2, 16)
    assert rows >= load
    out_tiles, in_tiles = 8, 8
    dense = est.ucu_cycles(rows, out_tiles * in_tiles, out_tiles, load)
    sparse = est.ucu_cycles(rows, out_tiles * in_tiles // 2, out_tiles, load)
    assert sparse <= 0.55 * dense
    # the whole layer, with enough input tiles left after pruning (16 of 32 per output
    # tile row) that the MACs, not the int32 output writes, bound it
    dense = est.ucu_cycles(rows, out_tiles * 32, out_tiles, load)
    sparse = est.ucu_cycles(rows, out_tiles * 16, out_tiles, load)
    full_dense = est.linear_cycles(rows, 1024, 256, 32, 32, 2, 16)
    full_sparse = est.linear_cycles(rows, 1024, 256, 32, 32, 2, 16, stored_tiles=out_tiles * 16)
    assert full_dense - full_sparse == dense - sparse


def _entry(result: dict, name: str) -> dict:
    return next(entry for entry in result["layers"] if entry["name"] == name)


# ---------------------------------------------------------------- MoE queue lengths


def test_expert_counts_from_a_golden_run(tiny_build):
    from codesign.golden import GoldenExecutor

    program, arch = tiny_build.program, tiny_build.state.arch
    images = np.random.default_rng(11).standard_normal((1, 3, 32, 64))
    raw = tiny_build.quantize_input(images)[0]
    counts = est.expert_counts_from_run(program, raw, task=1)
    experts_layers = [layer for layer in program.layers if layer.op == Op.MOE_EXPERTS]
    assert sorted(counts) == sorted(layer.name for layer in experts_layers)
    for layer in experts_layers:
        assert len(counts[layer.name]) == layer.fields["experts"]
        assert sum(counts[layer.name]) == layer.fields["tokens"] * 2  # top-2
    # the arena after a run holds the last MoE layer's queues
    executor = GoldenExecutor(program)
    executor.run(raw, task=1)
    last = experts_layers[-1]
    assert est.read_expert_counts(program, executor.arena, last) == counts[last.name]

    measured = est.estimate_program(program, arch, "zcu102", expert_counts=counts, task=1)
    balanced = est.estimate_program(program, arch, "zcu102", task=1)
    assert measured["assumptions"]["expert_counts"].startswith("measured")
    assert balanced["assumptions"]["expert_counts"].startswith("balanced")
    for layer in experts_layers:
        entry = _entry(measured, layer.name)
        f = layer.fields
        assert entry["counts_source"] == "measured"
        assert entry["expert_counts"] == counts[layer.name]
        assert entry["compute_cycles"] == est.experts_cycles(
            counts[layer.name],
            f["tokens"],
            f["dim"],
            f["hidden"],
            32,
            32,
            f["w_bytes"],
            16,
            # the layer's activations in the window: rows over its x port, fc1's outputs
            # over its y port, no DDR writes
            stream=est.cycles.layer_stream(
                program, arch, layer, ddr_model("zcu102", arch).bytes_per_cycle
            ),
        )
        assert entry["arena_on_chip"] and est.cycles.x_port_bytes(program, layer) == 128
        assert _entry(balanced, layer.name)["expert_counts"] == est.balanced_counts(
            f["tokens"], f["experts"], 2
        )


def test_bad_expert_counts_are_refused(tiny_build):
    layer = next(layer for layer in tiny_build.program.layers if layer.op == Op.MOE_EXPERTS)
    with pytest.raises(ValueError, match="expert counts"):
        est.estimate_program(
            tiny_build.program, tiny_build.state.arch, "zcu102", {layer.name: [1, 2]}
        )


# ---------------------------------------------------------------- resources and fit


def test_resources_grow_with_the_tile(tiny_build):
    """Resources depend on the ArchConfig and the Program's formats only, so one Program
    is enough to compare tiles."""
    program = tiny_build.program
    previous = None
    for tile in (8, 16, 32, 64):
        res = est.estimate_resources(program, ArchConfig(tile_in=tile, tile_out=tile), "zcu102")
        ucu = next(unit for unit in res["units"] if unit["name"] == "ucu")
        assert ucu["dsp"] == tile * tile * res["dsp_per_mac"]
        if previous is not None:
            assert res["dsp"] > previous["dsp"]
            assert res["lut"] > previous["lut"] and res["ff"] > previous["ff"]
            # block RAM is not monotone: it is counted in whole primitives per memory
            # shape, and a wider tile can pack the same buffers into fewer of them
        previous = res
    assert previous["dsp_per_mac"] == 1  # w16a24 fits one DSP48E2


def test_buffers_follow_the_arch_maxima(tiny_build):
    program = tiny_build.program
    small = est.estimate_resources(program, ArchConfig(max_tokens=64), "zcu102")
    large = est.estimate_resources(program, ArchConfig(max_tokens=512), "zcu102")
    assert large["bram36"] > small["bram36"]
    row = next(m for m in large["memories"] if m["name"] == "row_buffer")
    assert row["banks"] == 32 and row["depth"] == 512 * 2048 // 32
    assert row["width"] == 24  # the Program's activation width


def test_big_buffers_go_to_uram_when_the_board_has_it(tiny_build):
    res = est.estimate_resources(tiny_build.program, ArchConfig(), "zcu104")
    placed = {m["name"]: m["memory"] for m in res["memories"]}
    assert res["uram"] > 0 and "uram" in placed.values()
    assert res["uram"] <= get_board("zcu104").uram
    none = est.estimate_resources(tiny_build.program, ArchConfig(), "zcu102")
    assert none["uram"] == 0


def test_design_that_does_not_fit_is_refused_with_the_overshoot(tiny_build):
    from codesign.compiler import compile_graph

    arch = ArchConfig(tile_in=64, tile_out=64)
    program = compile_graph(tiny_build.graph, arch)
    resources = est.estimate_resources(program, arch, "ultra96v2")
    need = resources["dsp"]
    over = need - 360
    with pytest.raises(est.DesignDoesNotFit) as info:
        est.check_fits(program, arch, "ultra96v2")
    message = str(info.value)
    assert f"DSP: design needs {need}, ultra96v2 has 360 (over by {over}, " in message
    assert f"{100 * over / 360:.0f}%)" in message
    section = est.estimate_report_section(program, arch, "ultra96v2")
    assert not section["fits"]["dsp"]["ok"]
    with pytest.raises(est.DesignDoesNotFit, match="DSP"):
        est.check_fits(section)


def test_default_design_fits_zcu102(tiny_build):
    fits = est.check_fits(tiny_build.program, tiny_build.state.arch, "zcu102")
    assert all(entry["ok"] for entry in fits.values())


# ---------------------------------------------------------------- report


def test_report_section_markdown_and_plot(tiny_build, tmp_path):
    section = est.estimate_report_section(tiny_build.program, tiny_build.state.arch, "zcu102")
    assert set(section) == {"latency_ms", "cycles", "layers", "resources", "fits", "assumptions"}
    json.dumps(section)  # goes into report.json as is
    assert section["assumptions"]["board"] == "zcu102"
    assert section["assumptions"]["expert_counts"].startswith("balanced")
    text = est.estimate_markdown(section)
    assert f"**{section['latency_ms']:.3f} ms**" in text
    assert "| DSP |" in text and "blocks.0.attn.qkv" in text
    path = tmp_path / "cycles.png"
    est.plot_layers(section, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_untrusted_rtl_model_warns_when_it_says_the_design_does_not_fit(tiny_build):
    """While the Yosys-calibrated model is not trusted, the fit rests on the HLS constants,
    and the report says so whenever the calibrated model puts the design beyond a margin."""
    from codesign.estimate.resources import provisional_warning
    from codesign.estimate.rtl_model import calibration, trusted

    resources = est.estimate_program(tiny_build.program, tiny_build.state.arch, "zcu102")[
        "resources"
    ]
    if trusted(calibration()["families"]["xcup"])[0]:
        assert resources["rtl"] and resources["rtl_provisional"] is None
    else:
        assert resources["rtl"] is None and resources["rtl_provisional"]["lut"] > 0
    model = {"source": "test", "runs": 1, "dsp": 10, "bram36": 10, "lut": 200_000, "ff": 10}
    warning = provisional_warning({"rtl_provisional": model}, "ultra96v2")
    assert "LUT 200,000 (283 % of 70,560)" in warning and "DSP" not in warning
    model["lut"] = 1_000
    assert provisional_warning({"rtl_provisional": model}, "ultra96v2") is None
    assert provisional_warning({"rtl_provisional": None}, "ultra96v2") is None


def test_dense_layers_have_no_block_index(tiny_build):
    linear = [layer for layer in tiny_build.program.layers if layer.op == Op.LINEAR]
    assert all(layer.fields["blocks"] == NONE for layer in linear)
    result = est.estimate_program(tiny_build.program, tiny_build.state.arch, "zcu102")
    for layer in linear:
        entry = _entry(result, layer.name)
        if entry["runs"]:
            assert entry["stored_tiles"] == entry["tiles"] and not entry["block_sparse"]


def test_plain_vit_has_no_moe_units():
    import codesign

    build = codesign.build("vit-tiny", board="zcu102", eval_images=1, calib=1)
    result = est.estimate_program(build.program, build.state.arch, "zcu102")
    assert result["assumptions"]["expert_counts"] == "no MoE layers"
    names = {unit["name"] for unit in result["resources"]["units"]}
    names |= {memory["name"] for memory in result["resources"]["memories"]}
    assert "attention" in names and "row_buffer" in names
    assert not {n for n in names if n.startswith("moe")}
    assert result["cycles"] > 0 and all(entry["runs"] for entry in result["layers"])


@pytest.mark.slow
def test_m3vit_default_fits_zcu102_and_measured_counts():
    import codesign

    build = codesign.build("m3vit", board="zcu102", calib=1, eval_images=1)
    program, arch = build.program, build.state.arch
    fits = est.check_fits(program, arch, "zcu102")
    assert fits["dsp"]["used"] <= 2520
    raw = build.quantize_input(np.random.default_rng(0).standard_normal((1, 3, 128, 256)))[0]
    counts = est.expert_counts_from_run(program, raw, task=0)
    measured = est.estimate_program(program, arch, "zcu102", counts)
    balanced = est.estimate_program(program, arch, "zcu102")
    assert len(counts) == 6 and all(sum(c) == 129 * 2 for c in counts.values())
    assert measured["macs"] == balanced["macs"]  # same routed tokens, other queues
    # an expert whose queue is shorter than a tile load is load-bound: its cycles do not
    # depend on its length, so the routing matters only through idle or long queues
    load = est.tile_load_beats(arch.tile_in, arch.tile_out, 2, 16)  # 16-bit weights
    same = all(0 < c <= load for queue in counts.values() for c in queue)
    assert (measured["cycles"] == balanced["cycles"]) == same


def test_ddr_model_binds_when_the_ddr_is_slower_than_the_schedule(tiny_build):
    """The same Program under the board's DDR model (80 %: the masters are the limit) and
    under a DDR at 2 % of the peak: layers become DDR-bound and the estimate says which
    model it rests on."""
    from codesign.arch import ddr_model

    arch = tiny_build.state.arch
    normal = est.estimate_program(tiny_build.program, arch, "zcu102")
    starved = ddr_model("zcu102", arch, efficiency=0.02)
    slow = est.estimate_program(tiny_build.program, arch, "zcu102", ddr=starved)
    assert "80 % efficiency" in normal["assumptions"]["ddr"]["description"]
    assert slow["assumptions"]["ddr"]["efficiency"] == 0.02
    assert slow["cycles"] > normal["cycles"]
    assert any(layer["bound"] == "ddr" for layer in slow["layers"])
    assert not any(layer["bound"] == "ddr" for layer in normal["layers"])


def test_fit_search_halves_slots_then_lanes_then_tiles():
    """codesign.dse.candidates: the sized default, then fewer attention slots, attention
    lanes down to the UCU's input tile, the UCU tiles, and last the rest of the attention
    down to one slot of MIN_LANES lanes; every step smaller than the one before."""
    from codesign import dse

    base = ArchConfig(tile_in=16, tile_out=16, attn_parallel=4)
    limits = {"max_dim": 192, "max_heads": 3}  # heads of 64 values
    steps = list(dse.candidates(base, limits))[1:]
    shape = [(a.attn_parallel, a.attention_lanes, a.tile_in, a.tile_out) for a in steps]
    assert shape[:4] == [(4, 64, 16, 16), (2, 64, 16, 16), (2, 32, 16, 16), (2, 16, 16, 16)]
    assert shape[-1] == (1, dse.MIN_LANES, dse.MIN_TILE, dse.MIN_TILE)
    for before, after in itertools.pairwise(shape):
        assert after != before and all(a <= b for a, b in zip(after, before, strict=True))


def test_margin_problems_name_the_resource_the_margin_and_the_overshoot():
    from codesign.estimate.resources import margin_problems

    fits = {key: {"used": 0, "available": 100} for key in ("dsp", "bram36", "uram", "ff")}
    fits["lut"] = {"used": 62_000, "available": 70_560}  # 88 %: fits, not within 85 %
    fits["dsp"] = {"used": 324, "available": 360}  # exactly 90 %: within
    (problem,) = margin_problems(fits, "ultra96v2")
    assert problem.startswith("LUT: design needs 62,000 (88 %), ultra96v2 has 70,560")
    assert "fit margin is 85 % (59,976; over by 2,024)" in problem


def test_the_automatic_choice_keeps_the_margins_on_the_calibrated_model(tiny_build, monkeypatch):
    """Once the Yosys-calibrated model is trusted, the chosen ArchConfig stays within the
    fit margins by that model (not merely within the part)."""
    from codesign import dse
    from codesign.estimate import rtl_model
    from codesign.rtl import FIT_LIMITS

    monkeypatch.setattr(rtl_model, "trusted", lambda table: (True, "trusted for the test"))
    board = get_board("zcu102")
    state = tiny_build.state
    largest = ArchConfig()  # 32x32, eight slots of whole head rows, the widest buffers
    chosen, tried = dse.choose_arch(tiny_build.program, state.graph_quant, board, largest)
    resources = est.estimate_resources(tiny_build.program, chosen, board)
    assert resources["rtl"] is not None
    for key, limit in FIT_LIMITS.items():
        assert resources[key] <= limit * getattr(board, key), key
    assert tried  # the largest design is beyond the part's margins by the model


def test_weight_stream_rate_and_contention():
    """Several weight masters stream at most what the DDR sustains; with the drain's writes
    they oversubscribe it only when masters + 1 exceed the DDR's beats per cycle."""
    from codesign.estimate.cycles import WeightStream

    assert WeightStream(1, 16, 51.2).rate == 16
    assert WeightStream(4, 16, 51.2).rate == 51.2  # 64 B/cycle asked, the DDR's 51.2 given
    assert WeightStream(4, 16).rate == 64
    assert WeightStream(1, 16, 20.0).contention(1000, 1000, False) == 0  # one master: none
    assert WeightStream(2, 16, 51.2).contention(1000, 1000, False) == 0  # 3 <= 3.2 beats
    write_bound = WeightStream(4, 16, 51.2).contention(1000, 13824, False)
    assert write_bound == 1944  # 13,824 beats at 4 x 0.64 per cycle, the writes lose 0.36
    assert WeightStream(4, 16, 51.2).contention(1536, 0, True) == 480  # writes' DDR time


def test_weight_ports_change_the_layout_not_the_numbers(tiny_build):
    """m3vit-tiny compiled for 1, 2 and 4 weight masters: different bytes, the same golden
    output; the estimate falls where tile loads wait on the bus."""
    import codesign
    from codesign.golden import GoldenExecutor

    raw = tiny_build.state.first_input[0]
    reference = GoldenExecutor(tiny_build.program).run(raw, 0).output
    cycles = []
    for ports in (1, 2, 4):
        build = codesign.build("m3vit-tiny", arch={"weight_ports": ports}, eval_images=1)
        assert build.program.weight_ports == ports
        np.testing.assert_array_equal(GoldenExecutor(build.program).run(raw, 0).output, reference)
        cycles.append(est.estimate_cycles(build.program, build.state.arch, "zcu102")["cycles"])
    assert cycles[0] > cycles[1] >= cycles[2]


def test_the_window_takes_activation_traffic_off_the_ddr(tiny_build):
    """Layers whose arena blocks all lie in the on-chip window: no activation bytes on the
    DDR, round trips at the window's latency, UCU rows over the x port a tile a cycle;
    the same Program with the arena all in DDR costs more and keeps the bus rate."""
    from codesign.compiler import compile_graph
    from codesign.estimate.cycles import WINDOW_LATENCY, x_port_bytes

    arch = tiny_build.state.arch
    program = tiny_build.program
    ddr_arch = arch.with_(arena_window_kib=0)
    ddr_program = compile_graph(tiny_build.graph, ddr_arch)
    window = est.estimate_cycles(program, arch, "zcu102")
    ddr = est.estimate_cycles(ddr_program, ddr_arch, "zcu102")
    assert window["cycles"] < ddr["cycles"]
    assert not any(e.get("arena_on_chip") for e in ddr["layers"])
    by_name = {layer.name: layer for layer in program.layers}
    for entry in window["layers"]:
        if not entry.get("arena_on_chip"):
            continue
        layer = by_name[entry["name"]]
        assert entry["act_bytes"] == 0
        if layer.op != Op.MOE_EXPERTS:  # (its trips grow with the experts that have tokens)
            op = spec(layer.op)
            arena_trips = op.round_trips - op.round_trips_on_chip
            streams = 0  # EMBED's position rows wait on round trips beyond their window
            if layer.op == Op.EMBED:
                streams = est.cycles.windowed_read_waits(_embed_beats(program, layer), 64)
            assert entry["latency_cycles"] == streams + round(
                op.round_trips_on_chip * est.AXI_LATENCY + arena_trips * WINDOW_LATENCY
            )
    linear = [layer for layer in program.layers if layer.op == Op.LINEAR]
    wide = [layer for layer in linear if x_port_bytes(program, layer)]
    assert wide and all(x_port_bytes(program, layer) == 4 * arch.tile_in for layer in wide)
    assert not any(x_port_bytes(ddr_program, layer) for layer in ddr_program.layers)
    # rows of 32 words: a cycle each on the x port, eight on the 128-bit arena master
    assert est.cycles.x_beats(9, 64, 16, None) == 9 * 16
    stream = est.cycles.WeightStream(1, 16, x_beat_bytes=128)
    assert est.cycles.x_beats(9, 64, 16, stream) == 9 * 2
    # attention's qkv rows come over the x port too: its load a RAM row a cycle
    by_entry = {entry["name"]: entry for entry in window["layers"]}
    attention = [layer for layer in program.layers if layer.op == Op.ATTENTION]
    assert attention and all(x_port_bytes(program, layer) for layer in attention)
    for layer in attention:
        f = layer.fields
        rows = f["tokens"] * est.cycles.beats(12 * f["dim"], 4 * arch.tile_in)
        assert by_entry[layer.name]["breakdown"]["activations"] == rows


def test_the_y_port_takes_an_output_tile_row_a_cycle(tiny_build):
    """A drain wider than a bus beat (``drain_lanes``) gives the window its y port: a
    LINEAR whose output rows (and residual) lie in the window on whole RAM rows writes an
    output tile row a cycle, where the bus takes To / 4 beats; the drain lanes alone, with
    the writes on the bus, buy at most the last row's drain."""
    from codesign.compiler import compile_graph
    from codesign.estimate.cycles import linear_cycles, y_port_rows

    arch = tiny_build.state.arch.with_(drain_lanes=0)
    wide = arch.with_(drain_lanes=2 * arch.output_lanes)
    assert wide.y_port and not arch.y_port and wide.drain_chunks == arch.drain_chunks // 2
    assert not arch.with_(drain_lanes=8, arena_window_kib=0).y_port  # the port is the window's
    with pytest.raises(ValueError, match="drain_lanes"):
        arch.with_(drain_lanes=3)
    assert arch.with_(drain_lanes=2 * arch.tile_out).output_lanes == arch.tile_out
    program = compile_graph(tiny_build.graph, wide)
    assert program.drain_lanes == wide.drain_lanes  # in the header, for the cycle model
    narrow = compile_graph(tiny_build.graph, arch)  # and nowhere else
    assert replace(program, drain_lanes=0).to_bytes() == narrow.to_bytes()
    base = est.estimate_cycles(program, arch, "zcu102")
    fast = est.estimate_cycles(program, wide, "zcu102")
    assert fast["cycles"] < base["cycles"]
    rows_on_y = [layer for layer in program.layers if y_port_rows(program, wide, layer)]
    assert {layer.op.name for layer in rows_on_y} == {"LINEAR", "MOE_EXPERTS", "LAYERNORM"}
    assert not any(y_port_rows(program, arch, layer) for layer in program.layers)
    by_name = {entry["name"]: entry for entry in fast["layers"]}
    bus = program.bus_bits // 8
    for layer in rows_on_y:
        if layer.op != Op.LINEAR or layer.fields["blocks"] != NONE:
            continue
        f = layer.fields
        args = (f["rows"], f["in_dim"], f["out_dim"], 32, 32, f["w_bytes"], bus)
        on_y = est.cycles.layer_stream(
            program, wide, layer, ddr_model("zcu102", wide).bytes_per_cycle
        )
        assert on_y.y_row and on_y.drain_lanes == wide.output_lanes
        stream = replace(on_y, drain_lanes=0, y_row=False)
        assert by_name[layer.name]["compute_cycles"] == linear_cycles(*args, stream=on_y)
        lanes_only = replace(stream, drain_lanes=wide.output_lanes)
        assert linear_cycles(*args, stream=on_y) <= linear_cycles(*args, stream=lanes_only)
        assert linear_cycles(*args, stream=lanes_only) <= linear_cycles(*args, stream=stream)


def test_layernorm_rows_come_and_go_over_the_row_ports(tiny_build):
    """With the window's y port, LayerNorm's rows on whole RAM rows of the window come a
    RAM row (a core beat) a cycle over the x port and leave an output tile row a cycle
    over the y port, and its normalise pass has the drain's lanes (``norm_lanes``): a row
    costs its two passes, no longer the bus beats of its read and its write."""
    from codesign.arch.config import output_lanes
    from codesign.compiler import compile_graph
    from codesign.estimate.cycles import (
        LAYERNORM_PIPELINE,
        layer_stream,
        layernorm_cycles,
        layernorm_lane_cycles,
    )

    arch = tiny_build.state.arch.with_(drain_lanes=0)
    wide = arch.with_(drain_lanes=2 * arch.output_lanes)
    assert arch.norm_lanes == output_lanes(arch.tile_in, arch.bus_bits) < wide.norm_lanes
    assert wide.norm_lanes == wide.output_lanes
    program = compile_graph(tiny_build.graph, wide)
    ddr = ddr_model("zcu102", wide).bytes_per_cycle
    base = {e["name"]: e for e in est.estimate_cycles(program, arch, "zcu102")["layers"]}
    fast = {e["name"]: e for e in est.estimate_cycles(program, wide, "zcu102")["layers"]}
    bus, tile_in, tile_out = program.bus_bits // 8, program.tile_in, program.tile_out

    def on_the_ports(layer, norm_lanes: int) -> tuple[int, int]:
        """The rows' cycles over the row ports, and gamma's and beta's before them."""
        rows, dim = layer.fields["rows"], layer.fields["dim"]
        passes = layernorm_lane_cycles(dim, tile_in, bus, norm_lanes)
        moves = max(-(-dim // tile_in), -(-dim // tile_out))
        return rows * max(passes, moves) + LAYERNORM_PIPELINE, 2 * est.cycles.beats(4 * dim, bus)

    on_ports = 0
    for layer in (layer for layer in program.layers if layer.op == Op.LAYERNORM):
        rows, dim = layer.fields["rows"], layer.fields["dim"]
        stream = layer_stream(program, wide, layer, ddr)
        assert stream.norm_lanes == wide.norm_lanes
        if not stream.y_row:
            continue
        on_ports += 1
        assert stream.x_beat_bytes == 4 * tile_in
        expected, params = on_the_ports(layer, wide.norm_lanes)
        assert fast[layer.name]["compute_cycles"] == params + expected
        assert expected == layernorm_cycles(
            rows, dim, tile_in, bus, wide.norm_lanes, 4 * tile_in, tile_out
        )
        on_the_bus = layernorm_cycles(rows, dim, tile_in, bus)
        assert expected < on_the_bus == base[layer.name]["compute_cycles"] - params
    assert on_ports, "no LayerNorm on the row ports"
    # layernorm_lanes: more normalise lanes than the drain's, LayerNorm alone gets faster
    normed = wide.with_(layernorm_lanes=2 * wide.norm_lanes)
    assert normed.norm_lanes == 2 * wide.norm_lanes <= tile_in
    faster = {e["name"]: e for e in est.estimate_cycles(program, normed, "zcu102")["layers"]}
    for name, entry in fast.items():
        if entry["op"] != "LAYERNORM":
            assert faster[name]["cycles"] == entry["cycles"], name
        elif entry["runs"]:
            layer = next(layer for layer in program.layers if layer.name == name)
            expected = sum(on_the_ports(layer, normed.norm_lanes))
            assert faster[name]["compute_cycles"] == expected <= entry["compute_cycles"]
    assert sum(e["cycles"] for e in faster.values()) < sum(e["cycles"] for e in fast.values())


def test_moe_final_pass_tiles_come_and_go_over_the_row_ports(tiny_build):
    """``moe_final_lanes``: with the window's row ports, the MoE experts' final pass reads
    each residual tile over the x port and writes each output tile over the y port, so a
    tile costs tile_out over its lanes, not its bus beats; only MOE_EXPERTS changes, by
    exactly that. Without the ports its lanes buy nothing."""
    from codesign.compiler import compile_graph
    from codesign.estimate.cycles import final_pass_cycles, final_pass_rows, layer_stream

    arch = tiny_build.state.arch.with_(drain_lanes=0)
    wide = arch.with_(drain_lanes=2 * arch.output_lanes)
    final = wide.with_(moe_final_lanes=wide.tile_out)
    assert wide.y_port and wide.final_lanes == arch.final_lanes < final.final_lanes
    program = compile_graph(tiny_build.graph, final)
    ddr = ddr_model("zcu102", final).bytes_per_cycle
    base = {e["name"]: e for e in est.estimate_cycles(program, wide, "zcu102")["layers"]}
    fast = {e["name"]: e for e in est.estimate_cycles(program, final, "zcu102")["layers"]}
    bus, tile_out = program.bus_bits // 8, program.tile_out
    experts = [layer for layer in program.layers if layer.op == Op.MOE_EXPERTS]
    assert experts
    for layer in experts:
        assert final_pass_rows(program, final, layer) == (True, True)  # all on chip
        assert final_pass_rows(program, arch, layer) == (False, False)  # no y port
        tokens, dim = layer.fields["tokens"], layer.fields["dim"]
        stream = layer_stream(program, final, layer, ddr)
        tiles, row_beats = -(-dim // tile_out), est.cycles.beats(4 * dim, bus)
        on_ports = final_pass_cycles(tokens, dim, tile_out, bus, stream)
        on_bus = final_pass_cycles(
            tokens, dim, tile_out, bus, layer_stream(program, wide, layer, ddr)
        )
        assert on_ports == tokens * tiles < on_bus == tokens * row_beats
        slow_lanes = final_pass_cycles(tokens, dim, tile_out, bus, replace(stream, final_lanes=0))
        assert slow_lanes == tokens * tiles * (tile_out // wide.final_lanes)
        assert base[layer.name]["cycles"] - fast[layer.name]["cycles"] == on_bus - on_ports
    for name, entry in fast.items():
        if entry["op"] != "MOE_EXPERTS":
            assert base[name]["cycles"] == entry["cycles"], name
    bus_only = arch.with_(moe_final_lanes=arch.tile_out)  # more lanes, no ports: same cycles
    assert (
        est.estimate_cycles(program, bus_only, "zcu102")["cycles"]
        == (est.estimate_cycles(program, arch, "zcu102")["cycles"])
    )


def test_windowed_read_waits_start_once_a_round_trip_outlasts_the_window():
    """A stream with AHEAD commands of CHW beats in flight waits nothing while a round trip
    fits in the window's beats, then a window per round trip (past the first two windows)."""
    from codesign.estimate.cycles import (
        ELTWISE_CHUNK_BEATS,
        ELTWISE_READS_AHEAD,
        READ_PATH_CYCLES,
        windowed_read_waits,
    )

    window = ELTWISE_CHUNK_BEATS * ELTWISE_READS_AHEAD
    fits = window - READ_PATH_CYCLES
    assert windowed_read_waits(6192, 0) == 0  # latency not modelled
    assert windowed_read_waits(2 * window, 500) == 0  # hidden behind the op's round trips
    assert windowed_read_waits(6192, fits) == 0
    waits = [windowed_read_waits(6192, fits + extra) for extra in (10, 20, 40)]
    assert 0 < waits[0] < waits[1] < waits[2]
    # linear in the latency beyond the window: (beats - 2 windows) / window a cycle
    assert waits[2] - waits[1] == pytest.approx(2 * (waits[1] - waits[0]), abs=2)
    assert waits[2] - waits[1] == pytest.approx(20 * (6192 - 2 * window) / window, abs=2)


def test_embed_pays_the_window_at_high_latency_and_the_rtl_has_that_window(pruned_pair):
    """EMBED's position rows stream with cds_eng_eltwise's window: the estimate grows by
    ``windowed_read_waits`` with the DDR latency (m3vit measured 8,576 / 14,848 cycles at
    64 / 128, estimate 8,545 / 14,839), and the constants are the template's."""
    import re

    from codesign.estimate.cycles import (
        ELTWISE_CHUNK_BEATS,
        ELTWISE_READS_AHEAD,
        windowed_read_waits,
    )
    from codesign.templates import templates_root

    text = (templates_root() / "rtl" / "cds_eng_eltwise.sv.j2").read_text()
    assert re.search(r"set chunk_beats = (\d+)", text).group(1) == str(ELTWISE_CHUNK_BEATS)
    assert re.search(r"localparam int AHEAD = (\d+);", text).group(1) == str(ELTWISE_READS_AHEAD)
    build, _ = pruned_pair
    program, arch = build.program, build.state.arch
    embed = next(layer for layer in program.layers if layer.op == Op.EMBED)
    beats = _embed_beats(program, embed)
    low, high = (
        est.layer_cost(program, arch, embed, ddr_model("zcu102", arch, latency_cycles=latency))
        for latency in (16, 256)
    )
    exposed = est.exposed_latency(embed, 256, None, low["arena_on_chip"]) - est.exposed_latency(
        embed, 16, None, low["arena_on_chip"]
    )
    assert high["cycles"] - low["cycles"] == exposed + windowed_read_waits(beats, 256) > exposed
    assert (
        high["breakdown"]["latency"] - low["breakdown"]["latency"] == high["cycles"] - low["cycles"]
    )


def test_the_gate_logits_go_into_the_moe_engine_not_onto_the_bus():
    """MOE_GATE's logits land in the MoE engine's buffer an output tile row a write
    (cds_eng_moe), whatever the layer's y port: a wide output tile (more bus beats a row
    than the UCU takes cycles for it) must not make the gate write-bound (on the RTL a 64x32
    UCU's gate ran at 0.945 of the estimate that wrote its logits over the bus)."""
    from codesign.estimate.cycles import (
        GATE_PIPELINE,
        WeightStream,
        gate_breakdown,
        gate_cycles,
        linear_cycles,
        queue_beats,
    )

    tokens, dim, experts, top_k, bus = 145, 192, 16, 2, 16
    stream = WeightStream(4, bus, 51.2, drain_lanes=8)
    shape = (tokens, dim, experts, 64, 32, 1, bus)
    on_chip = linear_cycles(*shape, stream=replace(stream, y_row=True))
    assert linear_cycles(*shape, stream=stream) > on_chip  # the bus writes would bind
    extra = tokens * experts + queue_beats(experts, experts, tokens, bus) + GATE_PIPELINE
    gate = gate_cycles(tokens, dim, experts, top_k, 64, 32, 1, bus, stream)
    assert gate == on_chip + extra
    parts = gate_breakdown(tokens, dim, experts, top_k, 64, 32, 1, bus, stream)
    assert sum(parts.values()) == gate
