"""The logic-depth proxy (codesign.rtl.synth.logic_depth) on hand-made mapped netlists."""

from __future__ import annotations

from codesign.rtl.synth import logic_depth


def _cell(kind: str, inputs: dict, outputs: dict) -> dict:
    directions = {**{p: "input" for p in inputs}, **{p: "output" for p in outputs}}
    return {"type": kind, "port_directions": directions, "connections": {**inputs, **outputs}}


def _netlist(cells: dict) -> dict:
    return {"modules": {"top": {"cells": cells}}}


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


def test_a_lutram_write_is_not_a_combinational_input():
    """Read address -> data out is one level; data in and write enable go in at the clock
    edge, so an accumulator in LUTRAM (read, add, write back) is not a loop of levels."""
    cells = {
        "addr": _cell("FDRE", {"D": [20]}, {"Q": [1]}),
        "ram": _cell(
            "RAM64X1D",
            {"A0": [1], "DPRA0": [1], "D": [4], "WE": [5], "WCLK": [7]},
            {"SPO": [2], "DPO": [8]},
        ),  # fmt: skip
        "add": _cell("LUT6", {"I0": [2]}, {"O": [3]}),
        "add2": _cell("LUT6", {"I0": [3]}, {"O": [4]}),
        "we": _cell("LUT6", {"I0": [4]}, {"O": [5]}),
    }
    depth = logic_depth(_netlist(cells), "top")["top"]
    assert depth == 4.0  # ram (1) + add (1) + add2 (1) + we (1): no path through D
