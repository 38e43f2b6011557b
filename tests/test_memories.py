"""Block RAM counted from the RTL's memories (``codesign.estimate.memories``): the inventory
follows the ArchConfig, and a memory takes the primitives Yosys maps it to (the shapes
below were measured with ``synth_xilinx -family xcup``: RAMB36E2 + RAMB18E2 / 2)."""

from __future__ import annotations

import pytest
from small_models import ARCH_SYNTH as SMALL

from codesign.estimate import rtl_model
from codesign.estimate.memories import (
    Memory,
    blocks,
    inventory,
    mapped,
    unit_blocks,
    unit_memories,
    varying_bits,
)

M3VIT = SMALL.with_(tile_in=8, tile_out=16, attn_parallel=2, attn_lanes=16, bus_bits=128,
                    max_tokens=144, max_dim=192, max_hidden=768, max_in_dim=768,
                    max_experts=16, max_heads=3)  # fmt: skip


@pytest.mark.parametrize(
    ("width", "depth", "reads", "bram36"),
    [
        (192, 13824, 1, 77.0),  # 11 x 7 RAMB36 as 2K x 18: m3vit's UCU row buffer
        (800, 144, 1, 11.5),  # 23 RAMB18 as 512 x 36 simple dual port: a UCU accumulator
        (28, 1152, 1, 1.5),  # 3 RAMB18 as 512 x 36
        (24, 5184, 2, 9.0),  # 2 read ports: two copies of 9 RAMB18 (2K x 9)
        (24, 5184, 1, 4.5),
        (24, 5184, (2, "rw"), 4.5),  # the second reader on the write's port: true dual port
        (64, 48, 1, 0.0),  # shallow: LUTRAM
        (10, 192, 1, 0.0),  # narrow and shallow: cheaper as LUTRAM than a RAMB18
    ],
)
def test_a_memory_takes_whole_primitives(width, depth, reads, bram36):
    shared = isinstance(reads, tuple)
    reads = reads[0] if shared else reads
    assert blocks(Memory("u", "m", width, depth, reads=reads, rw_port=shared)) == bram36


@pytest.mark.parametrize(
    ("width", "depth", "reads", "rw_port", "expect"),
    [
        # (BRAM36, URAM288) with UltraRAM; measured with synth_xilinx -family xcup -uram
        (768, 3456, 1, False, (0.0, 11)),  # a 32-wide row buffer: 11 URAM, not 77 RAMB36
        (24, 5184, 1, False, (0.0, 1)),  # folded: three words a row, 1,728 rows
        (25, 5184, 1, False, (0.0, 1)),  # two words (of 27 bits) a row: a score bank
        (36, 1024, 1, False, (1.0, 0)),  # one RAMB36 costs a quarter of a URAM
        (1536, 864, 1, False, (43.0, 0)),  # shallow for URAM: 22 of them cost more
        (72, 4096, 2, False, (0.0, 2)),  # a copy per reader
        (72, 4096, 2, True, (0.0, 2)),  # also on the write's port (it reads every cycle)
        (28, 1024, 2, False, (2.0, 0)),  # small: two RAMB36 cost less than two URAM
    ],
)
def test_ultraram_takes_wide_deep_memories_when_the_part_has_it(width, depth, reads, rw_port,
                                                                expect):  # fmt: skip
    memory = Memory("u", "m", width, depth, reads=reads, rw_port=rw_port)
    assert mapped(memory, "xcup", uram=True) == expect
    assert mapped(memory, "xcup", uram=False)[1] == 0  # never without the flag


def test_roms_never_go_to_ultraram():  # URAM288 has no initial contents
    assert mapped(Memory("u", "m", 72, 8192, reads=1, rom=True), uram=True)[1] == 0


def test_unit_memories_move_big_buffers_to_ultraram():
    zcu104 = M3VIT.with_(tile_in=32, tile_out=32, attn_parallel=4, attn_lanes=32)
    plain = unit_memories(zcu104, "w16a24", "xcup")
    with_uram = unit_memories(zcu104, "w16a24", "xcup", uram=True)
    assert all(tiles == 0 for _, tiles in plain.values())
    assert with_uram["cds_ucu_job"][1] == 11  # the row buffer, 768 x 3456
    saved = sum(b for b, _ in plain.values()) - sum(b for b, _ in with_uram.values())
    assert saved == 77 + 18  # and the four 25-bit score banks, one URAM each
    feats = rtl_model.features(zcu104, "w16a24", "xcup", uram=True)
    assert feats["cds_ucu_job"]["urams"] == with_uram["cds_ucu_job"][1]


def test_roms_keep_their_varying_columns_and_small_ones_are_logic():
    assert varying_bits([0b1000, 0b1110, 0b1000]) == 1  # bits 0, 3 constant; 1, 2 equal
    assert varying_bits([0b01, 0b10]) == 2  # complementary columns are two
    assert blocks(Memory("u", "m", 29, 256, reads=2, rom=True)) == 0.0  # GELU: LUTs
    assert blocks(Memory("u", "m", 28, 1024, reads=2, rom=True)) == 1.0  # exp: one RAMB36
    assert blocks(Memory("u", "m", 28, 1024, reads=2, rom=True, count=3)) == 3.0


def test_inventory_follows_the_arch():
    small = {m.name: m for m in inventory(SMALL, "w16a24") if m.unit == "cds_ucu_job"}
    large = {m.name: m for m in inventory(M3VIT, "w16a24") if m.unit == "cds_ucu_job"}
    # the row buffer: tokens x input tiles rows of Ti activations
    assert (large["row buffer"].width, large["row buffer"].depth) == (8 * 24, 144 * 96)
    assert small["row buffer"].depth == SMALL.max_tokens * -(-SMALL.max_in_dim // SMALL.tile_in)
    attention = [m for m in inventory(M3VIT, "w16a24") if m.name == "q/k/v bank"]
    assert attention[0].count == 16 and attention[0].reads == 2  # a bank per lane
    assert attention[0].depth * attention[0].count >= 3 * 144 * 192
    # with the window's x port a UCU input tile (32 words here) lands in distinct banks
    wide = M3VIT.with_(tile_in=32, arena_window_kib=64)
    (banks,) = [m for m in inventory(wide, "w16a24") if m.name == "q/k/v bank"]
    assert banks.count == 32 and banks.depth * banks.count >= 3 * 144 * 192
    # 8-bit activations halve the activation memories
    narrow = {m.name: m for m in inventory(M3VIT, "w8a8")}
    assert narrow["row buffer"].width == 8 * 8


def test_unit_blocks_at_m3vit_size_match_yosys():
    """m3vit on the Ultra96-V2 default (8x16 UCU, two slots of 16 lanes, 128-bit bus):
    Yosys ``synth_xilinx -family xcup`` maps the UCU job to 77 RAMB36 + 49 RAMB18 (101.5)
    and the attention engine to 90 BRAM36 (its q/k/v banks true dual port: 162 when each
    reader had a copy)."""
    counted = unit_blocks(M3VIT, "w16a24", "xcup")
    assert counted["cds_ucu_job"] == 101.5
    assert counted["cds_eng_attention"] == pytest.approx(90, rel=0.025)
    assert counted["cds_axi_rd"] == 4.0  # two 128 x 256 read FIFOs


def test_the_model_counts_block_ram_instead_of_fitting_it():
    feats = rtl_model.features(M3VIT, "w16a24", "xcup")
    assert feats["cds_ucu_job"]["brams"] == unit_blocks(M3VIT, "w16a24", "xcup")["cds_ucu_job"]
    assert rtl_model.feature_names("cds_ucu_job", "bram36", feats["cds_ucu_job"]) == ["brams"]


def test_deep_single_port_queues_are_marked_block_ram():
    """The MoE scores bank reads and writes on one address: deeper than
    SP_LUTRAM_MAX_DEPTH it is marked ram_style "block" (Yosys 0.70 would map it to a
    single-port LUTRAM shape its techmap cannot build), and counted as block RAM."""
    from codesign.rtl import unit_sources
    from codesign.rtl.render import SP_LUTRAM_MAX_DEPTH

    scores = Memory("cds_eng_moe", "scores", 19, 2048, block=True)
    assert mapped(scores) == (1.5, 0) and mapped(scores, uram=True) == (1.5, 0)
    # marked, not UltraRAM either (unmarked, 16K x 19 takes two URAM288 on such a part)
    assert mapped(Memory("cds_eng_moe", "scores", 19, 16384, block=True), uram=True)[1] == 0
    for arch, marked in ((M3VIT.with_(bus_bits=64), True), (SMALL, False)):
        queue = next(m for m in inventory(arch, "w8a16") if m.name == "expert queue scores")
        assert queue.block == marked == (queue.depth > SP_LUTRAM_MAX_DEPTH)
        text = unit_sources("cds_eng_moe", arch, "w8a16")["cds_eng_moe.sv"]
        assert ('(* ram_style = "block" *)' in text) == marked
