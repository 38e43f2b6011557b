"""The logic-depth proxy (codesign.rtl.synth.logic_depth) on hand-made mapped netlists, and
the marked sections benchmarks write their measured tables into."""

from __future__ import annotations

from codesign.rtl.synth import critical_paths, depth_and_paths, logic_depth


def _cell(kind: str, inputs: dict, outputs: dict) -> dict:
    directions = {**{p: "input" for p in inputs}, **{p: "output" for p in outputs}}
    return {"type": kind, "port_directions": directions, "connections": {**inputs, **outputs}}


def _netlist(cells: dict, netnames: dict | None = None) -> dict:
    return {"modules": {"top": {"cells": cells, "netnames": netnames or {}}}}


def test_a_chain_of_luts_counts_its_levels_and_registers_cut_it():
    cells = {
        "ff0": _cell("FDRE", {"D": [9]}, {"Q": [1]}),
        "l1": _cell("LUT6", {"I0": [1]}, {"O": [2]}),
        "l2": _cell("LUT6", {"I0": [2]}, {"O": [3]}),
        "c": _cell("CARRY8", {"S": [3]}, {"O": [4]}),
        "l3": _cell("LUT6", {"I0": [4]}, {"O": [5]}),
        "ff1": _cell("FDRE", {"D": [5]}, {"Q": [6]}),
        "l4": _cell("LUT6", {"I0": [6]}, {"O": [9]}),
    }
    assert logic_depth(_netlist(cells), "top")["top"] == 3.5


def test_the_critical_path_names_where_it_starts_and_ends():
    """critical_paths walks the deepest path back to the register it starts at, naming
    each net (a source name over a made-up one) and the register it ends in."""
    cells = {
        "count_ff": _cell("FDRE", {"D": [9]}, {"Q": [1, 2]}),
        "short": _cell("LUT2", {"I0": [2]}, {"O": [7]}),
        "l1": _cell("LUT6", {"I0": [1]}, {"O": [3]}),
        "c": _cell("CARRY8", {"S": [3]}, {"O": [4]}),
        "l2": _cell("LUT6", {"I0": [4], "I1": [7]}, {"O": [5]}),
        "next_ff": _cell("FDRE", {"D": [5]}, {"Q": [6]}),
    }
    netnames = {
        "count": {"bits": [1, 2], "hide_name": 0},
        "$abc$1": {"bits": [3], "hide_name": 1},
        "sum": {"bits": [4], "hide_name": 0},
        "$abc$2": {"bits": [4], "hide_name": 1},
        "total": {"bits": [5], "hide_name": 0},
        "next_q": {"bits": [6], "hide_name": 0},
    }
    netlist = _netlist(cells, netnames)
    path = critical_paths(netlist, "top")["top"]
    assert [(step["cell"], step["net"]) for step in path] == [
        ("start", "count[0]"), ("LUT6", "$abc$1"), ("CARRY8", "sum"), ("LUT6", "total"),
        ("end", "FDRE next_q"),
    ]  # fmt: skip
    assert path[-1]["levels"] == logic_depth(netlist, "top")["top"] == 2.5
    # synth walks the graph once for both
    assert depth_and_paths(netlist, "top") == (logic_depth(netlist, "top"), {"top": path})


def test_a_lutram_write_is_not_a_combinational_input():
    """An accumulator in LUTRAM: each bit read (address -> data out, one level), added
    with a carry chain, written back. Data in and write enable go in at the clock edge:
    counted as combinational they would chain every bit's read behind the previous bit's
    write (the eltwise engine's POOL sums once measured 190 levels that way)."""
    bits = 16
    cells = {"addr": _cell("FDRE", {"D": [1000]}, {"Q": [1]})}
    carry = None
    for bit in range(bits):
        out, total, next_carry = 100 + bit, 200 + bit, 300 + bit
        cells[f"ram{bit}"] = _cell("RAM64X1D", {"DPRA0": [1], "D": [total], "WE": [2],
                                                "WCLK": [3]}, {"DPO": [out]})  # fmt: skip
        cells[f"carry{bit}"] = _cell(
            "CARRY8", {"S": [out], **({"CI": [carry]} if carry else {})}, {"CO": [next_carry]}
        )
        cells[f"sum{bit}"] = _cell("LUT2", {"I0": [out], "I1": [carry or out]}, {"O": [total]})
        carry = next_carry
    depth = logic_depth(_netlist(cells), "top")["top"]
    # the read (1), the carry chain (16 x 0.5), the last sum LUT (1)
    assert depth == 1 + bits * 0.5 + 1 - 0.5, depth


def test_benchmark_tables_replace_only_their_marked_section(tmp_path):
    """``codesign.util.replace_marked``: how the benchmarks write their tables into docs."""
    import pytest

    from codesign.util import replace_marked

    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- t -->\nold\n<!-- /t -->\noutro\n")
    replace_marked(doc, "t", "| new |")
    assert doc.read_text() == "intro\n<!-- t -->\n| new |\n<!-- /t -->\noutro\n"
    with pytest.raises(ValueError, match="no <!-- u -->"):
        replace_marked(doc, "u", "x")


def test_the_depth_budget_follows_the_clock_and_the_family():
    """7.0 LUT levels at 300 MHz on UltraScale+ (the ZCU102's and ZCU104's clock), more
    at the slower boards' clocks, fewer per ns on Zynq-7000; a depth map's units beyond
    it are named."""
    from codesign.arch import get_board
    from codesign.estimate.rtl_model import family_of
    from codesign.rtl import depth_budget, over_budget

    assert depth_budget(300) == 7.0
    budgets = {name: depth_budget(get_board(name).clock_mhz, family_of(get_board(name)))
               for name in ("zcu102", "zcu104", "kv260", "ultra96v2", "pynq-z2")}  # fmt: skip
    assert budgets == {"zcu102": 7.0, "zcu104": 7.0, "kv260": 8.75, "ultra96v2": 11.25,
                       "pynq-z2": 14.5}  # fmt: skip
    assert depth_budget(100, "xc7") < depth_budget(100, "xcup")
    assert over_budget({"codesign_top": 7.25, "cds_ucu_job": 7.25, "cds_axi_rd": 7.0}, 7.0) == {
        "codesign_top": 7.25,
        "cds_ucu_job": 7.25,
    }
