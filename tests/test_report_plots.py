"""The build report for people: report.md's pruning chapter and format legend, the
per-layer cycle breakdown behind cycles.png, and what the two plots show."""

from __future__ import annotations

import json
import re

import pytest

import codesign
from codesign import estimate as est
from codesign.flow import write_outputs
from codesign.numerics.fixed import Fixed
from codesign.report import fidelity_figure, write_markdown

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dense():
    return codesign.build("m3vit-tiny", board="zcu102", eval_images=1)


@pytest.fixture(scope="module")
def pruned():
    return codesign.build("m3vit-tiny", board="zcu102", eval_images=1, prune="magnitude:0.5")


@pytest.fixture(scope="module", params=["dense", "pruned"])
def build(request):
    return request.getfixturevalue(request.param)


def _markdown(report: dict, tmp_path) -> str:
    path = tmp_path / "report.md"
    write_markdown(report, path)
    return path.read_text()


def _chapter(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


# ---------------------------------------------------------------- cycle breakdown


def test_breakdown_parts_sum_to_each_layers_cycles(build):
    section = build.report["estimate"]
    assert section["layers"]
    for layer in section["layers"]:
        parts = layer["breakdown"]
        assert list(parts) == list(est.BREAKDOWN_PARTS), layer["name"]
        assert all(isinstance(v, int) and v >= 0 for v in parts.values()), (layer["name"], parts)
        assert sum(parts.values()) == layer["cycles"], (layer["name"], parts, layer["cycles"])
        if layer["runs"]:
            assert parts["latency"] == layer["latency_cycles"]
            assert parts["compute"] > 0, layer["name"]
        else:
            assert parts["compute"] == parts["weights"] == parts["activations"] == 0
    json.dumps(section)  # still goes into report.json as is


def test_breakdown_follows_the_ucu_schedule_of_a_linear_layer(dense):
    """compute = stored tiles x rows; the tile loads rows do not hide are the weight wait."""
    program, section = dense.program, dense.report["estimate"]
    layer = next(layer for layer in program.layers if layer.name == "blocks.0.mlp.fc1")
    entry = next(entry for entry in section["layers"] if entry["name"] == layer.name)
    f = layer.fields
    # the tiles stream at what the weight masters sustain on the board's DDR model
    rate = est.weight_stream(program, section["assumptions"]["ddr"]["bytes_per_cycle"]).rate
    load = est.tile_load_beats(program.tile_in, program.tile_out, f["w_bytes"], rate)
    assert entry["breakdown"]["compute"] == entry["stored_tiles"] * f["rows"]
    assert entry["breakdown"]["weights"] == load + entry["stored_tiles"] * max(0, load - f["rows"])


def test_report_json_keeps_its_estimate_keys(dense):
    """Only keys were added: what report.json readers used before is still there."""
    running = next(layer for layer in dense.report["estimate"]["layers"] if layer["op"] == "LINEAR")
    before = {"name", "op", "task", "runs", "cycles", "ddr_cycles", "bound", "ddr_bytes",
              "latency_cycles", "compute_cycles", "macs", "weight_bytes", "act_bytes",
              "tiles", "stored_tiles", "block_sparse", "latency_us"}  # fmt: skip
    assert before <= set(running)
    assert set(dense.report["estimate"]) >= {"latency_ms", "cycles", "layers", "resources", "fits"}
    assert dense.report["estimate"]["assumptions"]["task_name"] == "semseg"


def test_pruned_layers_carry_their_dense_cycles(dense, pruned):
    """A block-sparse layer's dense figure is what the unpruned build's layer costs."""
    dense_cycles = {layer["name"]: layer["cycles"] for layer in dense.report["estimate"]["layers"]}
    sparse = [layer for layer in pruned.report["estimate"]["layers"] if layer.get("block_sparse")]
    assert sparse
    for layer in sparse:
        assert layer["cycles"] < layer["cycles_dense"] == dense_cycles[layer["name"]]
    assert not any("cycles_dense" in layer for layer in dense.report["estimate"]["layers"])


# ---------------------------------------------------------------- report.md


def test_pruned_report_has_a_pruning_chapter_with_every_layer(pruned, tmp_path):
    text = _markdown(pruned.report, tmp_path)
    program = pruned.report["pruning"]["program"]
    totals = program["totals"]
    chapter = _chapter(text, "Pruning")
    assert "- method: magnitude (`magnitude:0.5`)" in chapter
    assert f"tile sparsity in the Program: {totals['tile_sparsity']:.1%}" in chapter
    assert f"{totals['cycles_dense']:,} dense → {totals['cycles']:,} pruned" in chapter
    as_pruned = {row["layer"]: row for row in pruned.report["pruning"]["layers"]}
    rows = [line for line in chapter.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(program["layers"])  # header + one row per LINEAR
    for row, layer in zip(rows[1:], program["layers"], strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        expected = (
            f"{as_pruned[layer['layer']]['sparsity']:.1%}"
            if layer["layer"] in as_pruned
            else "not pruned"
        )
        assert cells[:5] == [
            layer["layer"],
            expected,
            f"{layer['sparsity']:.1%}",
            f"{layer['stored_tiles']} / {layer['tiles']}",
            f"{layer['cycles_dense']:,} → {layer['cycles']:,}",
        ]
    assert "- pruning: magnitude:0.5" in text.split("## Fidelity")[0]


def test_dense_report_has_no_pruning_chapter(dense, tmp_path):
    text = _markdown(dense.report, tmp_path)
    assert "## Pruning" not in text and "- pruning:" not in text


def test_format_legend_comes_before_the_first_format_and_is_right(dense, tmp_path):
    text = _markdown(dense.report, tmp_path)
    legend = text.index("Formats read `fx<W>.<I><s|u> <rounding> <overflow>`")
    first_format = re.search(r"fx\d+\.-?\d+[su] [A-Z_]+ [A-Z_]+", text)
    assert first_format and legend < first_format.start()
    assert "a negative I" in text and "RND: round half up" in text and "SAT: clamp" in text
    example = re.search(
        r"- e\.g\. `([^`]+)` holds \[([-\d.e]+), ([-\d.e]+)\) in steps of 2\^-(\d+)", text
    )
    assert example, "no worked example in the format legend"
    fmt = Fixed.parse(example.group(1))
    assert fmt.int_bits < 0  # m3vit-tiny has small-valued tensors: the example shows one
    assert float(example.group(2)) == fmt.min_value
    assert float(example.group(3)) == fmt.max_value + fmt.lsb
    assert int(example.group(4)) == fmt.frac_bits


# ---------------------------------------------------------------- plots


def _above(fig, legend, ax) -> bool:
    fig.canvas.draw()
    return legend.get_window_extent().y0 >= ax.get_window_extent().y1 - 1


def test_cycles_figure_stacks_the_breakdown_under_layer_names(pruned):
    section = pruned.report["estimate"]
    running = [layer for layer in section["layers"] if layer["runs"]]
    fig = est.cycles_figure(section)
    top, share = fig.axes[:2]
    assert [label.get_text() for label in share.get_xticklabels()] == [l["name"] for l in running]
    stacks, outlines = {}, {}
    for patch in (patch for bars in top.containers for patch in bars):  # not the block shading
        if patch.get_height() <= 0:
            continue
        x = round(patch.get_x() + patch.get_width() / 2)
        if patch.get_fill():
            stacks[x] = stacks.get(x, 0) + patch.get_height()
        else:
            outlines[x] = patch.get_height()
    assert [stacks[x] for x in range(len(running))] == pytest.approx([l["cycles"] for l in running])
    want = {x: l["cycles_dense"] for x, l in enumerate(running) if "cycles_dense" in l}
    assert outlines == want and want
    texts = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "dense (before pruning)" in texts and "weight tile wait" in texts
    assert top.get_legend() is None and _above(fig, fig.legends[0], top)
    assert "task 0 (semseg)" in top.get_title()


def test_cycles_figure_of_a_dense_build_has_no_dense_outline(dense):
    fig = est.cycles_figure(dense.report["estimate"])
    assert all(patch.get_fill() for patch in fig.axes[0].patches)
    texts = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "dense (before pruning)" not in texts


def test_fidelity_figure_names_layers_in_percent_with_both_tasks_visible(dense):
    report = dense.report
    fig = fidelity_figure(report)
    ax = fig.axes[0]
    assert [label.get_text() for label in ax.get_xticklabels()] == [
        layer["name"] for layer in report["layers"]
    ]
    assert "%" in ax.get_ylabel()
    lines = {line.get_label(): line for line in ax.get_lines()}
    semseg, depth = lines["task semseg: layers"], lines["task depth: layers"]
    assert (semseg.get_marker(), semseg.get_linestyle()) != (
        depth.get_marker(),
        depth.get_linestyle(),
    )
    shared = report["layers"][0]  # both tasks run it: the points must not sit on each other
    assert semseg.get_xdata()[0] != depth.get_xdata()[0]
    assert semseg.get_ydata()[0] == pytest.approx(100 * shared["fidelity"]["semseg"]["rel_rms"])
    assert _above(fig, fig.legends[0], ax)


def test_write_outputs_writes_both_plots_and_links_them(pruned, tmp_path):
    out = write_outputs(pruned.state, tmp_path / "out")
    for name in ("fidelity.png", "cycles.png", "memory.png"):
        assert (out / name).read_bytes()[:8] == PNG
    text = (out / "report.md").read_text()
    assert "![cycles per layer](cycles.png)" in text and "## Pruning" in text
    assert "## Arena" in text and "![the arena's memory plan](memory.png)" in text
    saved = json.loads((out / "report.json").read_text())
    assert all("breakdown" in layer for layer in saved["estimate"]["layers"])


def test_the_memory_plot_draws_every_buffer_at_its_offset(tiny_build):
    """One box per buffer of the plan, at its offset and over its lifetime, under the
    dashed line of the arena's size."""
    from codesign.report import memory_figure

    memory = tiny_build.program.meta["memory"]
    ax = memory_figure(memory).axes[0]
    boxes = sorted((p.get_x(), p.get_y(), p.get_width(), p.get_height()) for p in ax.patches)
    want = sorted(
        (b["first"] - 0.45, b["offset"] / 1024, b["last"] - b["first"] + 0.9, b["nbytes"] / 1024)
        for b in memory["buffers"]
    )
    # box by box: pytest 9.2 refuses approx over a list of tuples
    assert len(boxes) == len(want)
    for box, wanted in zip(boxes, want, strict=True):
        assert box == pytest.approx(wanted), (box, wanted)
    assert ax.get_lines()[0].get_ydata()[0] == memory["arena_bytes"] / 1024
    assert all(y + h <= memory["arena_bytes"] / 1024 for _, y, _, h in boxes)
