"""The arena's on-chip window, ``cds_arena_window``, between the arena's word ports and DDR.

``cds_arena_window_tb`` (below): cds_axi_rd and cds_axi_wr (rd1 and wr1 of codesign_top)
on the window, whose DDR side is one AXI4 bundle served by cocotbext-axi's ``AxiRam``; the
x port (a RAM row, the UCU's input tile, a cycle) and the y port (an output tile row of
the UCU, written in one cycle) on ports of its own. Random word
commands, each wholly below the window's edge or wholly past it as the memory plan makes
them, first write both sides (the window whole, then random words on top; then y rows into the
window's lower half while wr writes its upper half and DDR, so both ask for the RAM's
write port at once), then read them back on rd and on the x port at once, under random
stalls on every AXI channel and backpressure on the read ports. Checked against a numpy
model: every read beat and its
``last``, every x row (the words past a command's end are don't-care), DDR after the
writes (no byte outside the written words touched, nothing of the window's written
there), no DDR burst for a window address, and a window read streaming a beat a cycle.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ARCH_A, AXI4_MASTER_PORTS, WORD_PORTS

from codesign.rtl import sim
from codesign.rtl.render import rtl_params, unit_sources

pytestmark = pytest.mark.rtl

WINDOW_KIB = 2
DDR_BYTES = 1 << 14  # DDR words past the window the test writes and reads
# (bus bits, UCU input tile, output tile): an x port of 4 and of 2 beats a row, and none;
# a y port (a drain of tile_out lanes, wider than a beat) of two rows a RAM row and of one
CASES = [(64, 8, 4), (128, 8, 8), (128, 4, 4)]


def window_tb(banks: int, y_words: int = 0) -> str:
    """The test wrapper: the word ports' masters on the window, AXI4 out to the AxiRam."""
    x_ports = (
        """
    input  logic x_cmd_valid, output logic x_cmd_ready,
    input  logic [31:0] x_cmd_addr, input logic [23:0] x_cmd_words,
    output logic x_valid, input logic x_ready, output logic [NB*BUS-1:0] x_data,
    output logic x_last,"""
        if banks > 1
        else ""
    )
    x_conn = (
        """,
        .x_cmd_valid, .x_cmd_ready, .x_cmd_addr, .x_cmd_words, .x_valid, .x_ready, .x_data,
        .x_last"""
        if banks > 1
        else ""
    )
    y_ports = y_conn = ""
    if y_words:
        y_ports = f"""
    input  logic y_valid, output logic y_ready, input logic [31:0] y_addr,
    input  logic [{y_words.bit_length() - 1}:0] y_words, input logic [{32 * y_words - 1}:0] y_data,
    output logic y_idle,"""
        y_conn = """,
        .y_valid, .y_ready, .y_addr, .y_words, .y_data, .y_idle"""
    nb_param = f",\n    parameter int NB = {banks}" if banks > 1 else ""
    return f"""
module cds_arena_window_tb #(
    parameter int BUS = 64{nb_param}
) (
    input  logic clk, rst_n,
    input  logic [31:0] base_lo, window,
{WORD_PORTS}{x_ports}{y_ports}
{AXI4_MASTER_PORTS});
    // the masters' AXI, before the window decides
    logic a_ARVALID, a_ARREADY, a_RVALID, a_RREADY, a_RLAST, a_AWVALID, a_AWREADY;
    logic a_WVALID, a_WREADY, a_BVALID, a_BREADY;
    logic [63:0] a_ARADDR, a_AWADDR;
    logic [7:0] a_ARLEN, a_AWLEN;
    logic [BUS-1:0] a_RDATA;
    logic [1:0] a_RRESP, a_BRESP, ar_lock, aw_lock;
    // cocotbext-axi models AXI4's 1-bit LOCK; the masters drive Vitis' 2-bit one
    assign m_axi_ARLOCK = ar_lock[0];
    assign m_axi_AWLOCK = aw_lock[0];
    logic unused_lock;
    assign unused_lock = &{{1'b0, ar_lock[1], aw_lock[1]}};
    cds_axi_rd #(.BUS(BUS)) u_rd (
        .clk, .rst_n, .base({{32'd0, base_lo}}),
        .cmd_valid(rd_cmd_valid), .cmd_ready(rd_cmd_ready), .cmd_addr(rd_cmd_addr),
        .cmd_words(rd_cmd_words), .valid(rd_valid), .ready(rd_ready), .data(rd_data),
        .last(rd_last), .idle(rd_idle), .bus_error(rd_error),
        .m_axi_ARVALID(a_ARVALID), .m_axi_ARREADY(a_ARREADY), .m_axi_ARADDR(a_ARADDR),
        .m_axi_ARID, .m_axi_ARLEN(a_ARLEN), .m_axi_ARSIZE, .m_axi_ARBURST,
        .m_axi_ARLOCK(ar_lock), .m_axi_ARCACHE, .m_axi_ARPROT, .m_axi_ARQOS, .m_axi_ARREGION,
        .m_axi_ARUSER, .m_axi_RVALID(a_RVALID), .m_axi_RREADY(a_RREADY),
        .m_axi_RDATA(a_RDATA), .m_axi_RLAST(a_RLAST), .m_axi_RID, .m_axi_RUSER,
        .m_axi_RRESP(a_RRESP)
    );
    cds_axi_wr #(.BUS(BUS)) u_wr (
        .clk, .rst_n, .base({{32'd0, base_lo}}),
        .cmd_valid(wr_cmd_valid), .cmd_ready(wr_cmd_ready), .cmd_addr(wr_cmd_addr),
        .cmd_words(wr_cmd_words), .valid(wr_valid), .ready(wr_ready), .data(wr_data),
        .idle(wr_idle), .bus_error(wr_error),
        .m_axi_AWVALID(a_AWVALID), .m_axi_AWREADY(a_AWREADY), .m_axi_AWADDR(a_AWADDR),
        .m_axi_AWID, .m_axi_AWLEN(a_AWLEN), .m_axi_AWSIZE, .m_axi_AWBURST,
        .m_axi_AWLOCK(aw_lock), .m_axi_AWCACHE, .m_axi_AWPROT, .m_axi_AWQOS, .m_axi_AWREGION,
        .m_axi_AWUSER, .m_axi_WVALID(a_WVALID), .m_axi_WREADY(a_WREADY), .m_axi_WDATA,
        .m_axi_WSTRB, .m_axi_WLAST, .m_axi_WID, .m_axi_WUSER, .m_axi_BVALID(a_BVALID),
        .m_axi_BREADY(a_BREADY), .m_axi_BRESP(a_BRESP), .m_axi_BID, .m_axi_BUSER
    );
    cds_arena_window u_window (
        .clk, .rst_n, .base(base_lo), .window,
        .s_ARVALID(a_ARVALID), .s_ARREADY(a_ARREADY), .s_ARADDR(a_ARADDR), .s_ARLEN(a_ARLEN),
        .s_RVALID(a_RVALID), .s_RREADY(a_RREADY), .s_RDATA(a_RDATA), .s_RLAST(a_RLAST),
        .s_RRESP(a_RRESP), .s_AWVALID(a_AWVALID), .s_AWREADY(a_AWREADY),
        .s_AWADDR(a_AWADDR), .s_AWLEN(a_AWLEN), .s_WVALID(a_WVALID), .s_WREADY(a_WREADY),
        .s_WDATA(m_axi_WDATA), .s_WSTRB(m_axi_WSTRB), .s_WLAST(m_axi_WLAST),
        .s_BVALID(a_BVALID), .s_BREADY(a_BREADY), .s_BRESP(a_BRESP),
        .m_ARVALID(m_axi_ARVALID), .m_ARREADY(m_axi_ARREADY), .m_ARADDR(m_axi_ARADDR),
        .m_ARLEN(m_axi_ARLEN), .m_RVALID(m_axi_RVALID), .m_RREADY(m_axi_RREADY),
        .m_RDATA(m_axi_RDATA), .m_RLAST(m_axi_RLAST), .m_RRESP(m_axi_RRESP),
        .m_AWVALID(m_axi_AWVALID), .m_AWREADY(m_axi_AWREADY), .m_AWADDR(m_axi_AWADDR),
        .m_AWLEN(m_axi_AWLEN), .m_WVALID(m_axi_WVALID), .m_WREADY(m_axi_WREADY),
        .m_BVALID(m_axi_BVALID), .m_BREADY(m_axi_BREADY), .m_BRESP(m_axi_BRESP){x_conn}{y_conn}
    );
endmodule
"""


def _arch(bus_bits: int, tile_in: int, tile_out: int):
    return ARCH_A.with_(
        bus_bits=bus_bits,
        tile_in=tile_in,
        tile_out=tile_out,
        drain_lanes=tile_out,
        arena_window_kib=WINDOW_KIB,
    )


def commands(rng, start_word: int, end_word: int, count: int, max_words: int) -> np.ndarray:
    """`count` (word offset, words) inside [start_word, end_word)."""
    out = []
    for _ in range(count):
        words = int(rng.integers(1, max_words + 1))
        first = int(rng.integers(start_word, end_word - words + 1))
        out.append((first, words))
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize(("bus_bits", "tile_in", "tile_out"), CASES)
def test_window_random(bus_bits, tile_in, tile_out):
    arch = _arch(bus_bits, tile_in, tile_out)
    p = rtl_params(arch)
    banks, wpb = p["window_banks"], bus_bits // 32
    assert banks == max(1, 32 * tile_in // bus_bits)
    y_words = tile_out if p["y_port"] else 0
    assert p["y_port"] == (banks > 1)
    window = WINDOW_KIB * 1024
    window_words, ddr_words = window // 4, DDR_BYTES // 4
    sources = unit_sources(["cds_axi_rd", "cds_axi_wr", "cds_arena_window"], arch)
    sources["cds_arena_window_tb.sv"] = window_tb(banks, y_words)
    build = sim.build(sources, "cds_arena_window_tb", {"BUS": bus_bits})
    rng = np.random.default_rng(bus_bits * 7 + tile_in)
    base = 0x3000  # the arena's address in the AxiRam: beat aligned, not 4 KB aligned
    ram_bytes = base + window + DDR_BYTES + 4096
    memory = rng.integers(0, 256, ram_bytes, dtype=np.uint8)
    # writes: the whole window in one command (so every word read later was written),
    # then commands on either side, in random order
    writes = np.concatenate([
        [(0, window_words)],
        commands(rng, 0, window_words, 40, 3 * wpb + 5),
        commands(rng, window_words, window_words + ddr_words, 40, 3 * wpb + 5),
    ])  # fmt: skip
    writes = np.concatenate([writes[:1], rng.permutation(writes[1:])])
    # then y rows (a slot of tile_out words on a RAM row, the slot's first words) into the
    # lower half while wr writes the upper half and DDR
    half = window_words // 2
    y_writes = np.zeros((0, 2), dtype=np.int64)
    later = np.zeros((0, 2), dtype=np.int64)
    if y_words:
        slots = rng.integers(0, half // y_words, 60) * y_words
        y_writes = np.stack([slots, rng.integers(1, y_words + 1, 60)], axis=1)
        later = rng.permutation(np.concatenate([
            commands(rng, half, window_words, 20, 3 * wpb + 5),
            commands(rng, window_words, window_words + ddr_words, 10, 3 * wpb + 5),
        ]))  # fmt: skip
    y_data = rng.integers(0, 1 << 32, (len(y_writes), max(1, y_words)), dtype=np.uint64)
    later_words = rng.integers(0, 1 << 32, int(later[:, 1].sum()), dtype=np.uint64)
    window_reads = commands(rng, 0, window_words, 40, 4 * wpb + 3)
    ddr_reads = commands(rng, window_words, window_words + ddr_words, 40, 4 * wpb + 3)
    reads = rng.permutation(np.concatenate([window_reads, ddr_reads]))
    row_words = banks * wpb
    x_reads = np.zeros((0, 2), dtype=np.int64)
    if banks > 1:  # rows start on a RAM row, as the UCU job's do
        rows = window_words // row_words
        firsts = rng.integers(0, rows - 4, 30) * row_words
        x_reads = np.stack([firsts, rng.integers(1, 3 * row_words + 1, 30)], axis=1)
    write_words = rng.integers(0, 1 << 32, int(writes[:, 1].sum()), dtype=np.uint64)
    result = sim.run(
        build,
        "cocotb_arena_window",
        testcase="window_random",
        inputs={
            "seed": bus_bits + tile_in,
            "wpb": wpb,
            "banks": banks,
            "memory": memory,
            "base": base,
            "window": window,
            "writes": np.stack([writes[:, 0] * 4, writes[:, 1]], axis=1),
            "write_words": write_words,
            "reads": np.stack([reads[:, 0] * 4, reads[:, 1]], axis=1),
            "y_words": y_words,
            "y_writes": np.stack([y_writes[:, 0] * 4, y_writes[:, 1]], axis=1),
            "y_data": y_data,
            "later": np.stack([later[:, 0] * 4, later[:, 1]], axis=1),
            "later_words": later_words,
            "x_reads": np.stack([x_reads[:, 0] * 4, x_reads[:, 1]], axis=1),
            "stall": 0.3,
            "backpressure": 0.3,
        },
    )
    # the model: the arena's words as the writes leave them
    arena = memory[base : base + window + DDR_BYTES].view("<u4").astype(np.uint64).copy()
    position = 0
    for first, count in writes:
        arena[first : first + count] = write_words[position : position + count]
        position += int(count)
    for (first, count), row in zip(y_writes, y_data, strict=True):
        arena[first : first + count] = row[:count]
    position = 0
    for first, count in later:
        arena[first : first + count] = later_words[position : position + count]
        position += int(count)
    expect = []
    for first, count in reads:
        words = list(arena[first : first + count]) + [None] * (-count % wpb)
        beats = [words[k : k + wpb] for k in range(0, len(words), wpb)]
        expect += [(beat, k == len(beats) - 1) for k, beat in enumerate(beats)]
    got_words, got_last = result["rd_words"], result["rd_last"]
    assert len(got_words) == len(expect)
    for index, ((want, last), got, got_l) in enumerate(
        zip(expect, got_words, got_last, strict=True)
    ):
        lanes = [w for w in want if w is not None]
        assert list(got[: len(lanes)]) == lanes, f"read beat {index}"
        assert bool(got_l) == last, f"read beat {index}: last"
    if banks > 1:
        x_expect = []
        for first, count in x_reads:
            rows_of = -(-count // row_words)
            for r in range(rows_of):
                lo = first + r * row_words
                valid = min(row_words, count - r * row_words)
                x_expect.append((list(arena[lo : lo + valid]), r == rows_of - 1))
        assert len(result["x_words"]) == len(x_expect)
        for index, ((want, last), got, got_l) in enumerate(
            zip(x_expect, result["x_words"], result["x_last"], strict=True)
        ):
            assert list(got[: len(want)]) == want, f"x row {index}"
            assert bool(got_l) == last, f"x row {index}: last"
    # DDR: the writes past the window landed, nothing else changed (the window's words
    # never went there)
    ddr = memory.copy()
    ddr[base + window : base + window + DDR_BYTES] = (
        arena[window_words:].astype("<u4").view(np.uint8)
    )
    np.testing.assert_array_equal(result["final"], ddr)
    for addr, _length in result["ar"]:
        assert addr >= base + window, f"a window read went to DDR (0x{addr:x})"
    for addr, _length in result["aw"]:
        assert addr >= base + window, f"a window write went to DDR (0x{addr:x})"
    assert int(result["errors"]) == 0
    # a window read without stalls streams a beat a cycle after its first
    short_beats, short, long_beats, long = (int(v) for v in result["stream"])
    assert long - short <= long_beats - short_beats + 2, result["stream"]


@pytest.mark.parametrize(("bus_bits", "tile_in", "tile_out"), CASES)
def test_window_lint(bus_bits, tile_in, tile_out):
    arch = _arch(bus_bits, tile_in, tile_out)
    sim.lint(unit_sources("cds_arena_window", arch), "cds_arena_window")
