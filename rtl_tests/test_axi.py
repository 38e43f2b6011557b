"""The AXI plumbing of codesign_top: control slave, word-DMA masters, simulated DDR.

* The control slave's register offsets equal ``codesign.arch.regmap.register_map()`` (the
  map the HLS kernel, the driver and the simulated boards use).
* ``cds_axi_dma_tb`` (below: cds_axil_ctrl + cds_axi_rd + cds_axi_wr on one AXI4 bundle,
  served by cocotbext-axi's AxiRam): the ap_ctrl_hs handshake, then random word commands
  (unaligned starts and ends, 4 KB crossings, bases that are not beat aligned) under
  random stalls on every AXI channel and engine backpressure, checked against a numpy
  model: read beats and ``last``, the RAM after the writes (neighbouring bytes untouched),
  the RAM at the moment ``wr_idle`` rises (every write landed), and every burst issued
  (at most MAX_BURST beats, never across 4 KB).
* ``cds_axi_ddr_model``: data through the shared array (loaded through cocotb handles),
  first-beat latency and the shared bandwidth cap, measured in cycles.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ARCH_A, ARCHS, AXI4_MASTER_PORTS, WORD_PORTS, record_cycles

from codesign.arch.config import default_arch
from codesign.arch.regmap import register_map
from codesign.rtl import sim
from codesign.rtl.render import TEMPLATE_DIR, unit_sources

UNITS = ("cds_axil_ctrl", "cds_axi_rd", "cds_axi_wr", "cds_axi_ddr_model")
MAX_BURST = 16  # small bursts and a small read FIFO: many splits, credits really limit
FIFO_LOG2 = 5
RAM_BYTES = 1 << 17

# Test-only wrapper: the control slave provides both bases (program -> read port, arena ->
# write port), the read and write masters share one AXI4 bundle for the AxiRam.
DMA_TB = f"""
module cds_axi_dma_tb #(
    parameter int BUS = 64,
    parameter int MAX_BURST = 16,
    parameter int FIFO_LOG2 = 5
) (
    input  logic clk, rst_n,
    input  logic s_axi_control_AWVALID, output logic s_axi_control_AWREADY,
    input  logic [7:0] s_axi_control_AWADDR,
    input  logic s_axi_control_WVALID, output logic s_axi_control_WREADY,
    input  logic [31:0] s_axi_control_WDATA, input logic [3:0] s_axi_control_WSTRB,
    output logic s_axi_control_BVALID, input logic s_axi_control_BREADY,
    output logic [1:0] s_axi_control_BRESP,
    input  logic s_axi_control_ARVALID, output logic s_axi_control_ARREADY,
    input  logic [7:0] s_axi_control_ARADDR,
    output logic s_axi_control_RVALID, input logic s_axi_control_RREADY,
    output logic [31:0] s_axi_control_RDATA, output logic [1:0] s_axi_control_RRESP,
    /* verilator lint_off SYMRSVDWORD */
    output logic interrupt,
    /* verilator lint_on SYMRSVDWORD */
    output logic ctl_start, output logic [63:0] ctl_program, ctl_arena,
    output logic [31:0] ctl_task, input logic ctl_done, output logic ctl_idle,
    input  logic [31:0] dbg_status, input logic [63:0] dbg_cycles,
    output logic [31:0] dbg_perf_sel, input logic [31:0] dbg_perf_cycles,
    input  logic [31:0] dbg_layers_run, dbg_check_cycles,
{WORD_PORTS}
{AXI4_MASTER_PORTS});
    // cocotbext-axi models AXI4's 1-bit LOCK; the masters drive Vitis' 2-bit one
    logic [1:0] ar_lock, aw_lock;
    assign m_axi_ARLOCK = ar_lock[0];
    assign m_axi_AWLOCK = aw_lock[0];
    logic unused_lock;
    assign unused_lock = &{{1'b0, ar_lock[1], aw_lock[1]}};
    cds_axil_ctrl u_ctrl (
        .clk, .rst_n,
        .s_axi_control_AWVALID, .s_axi_control_AWREADY, .s_axi_control_AWADDR,
        .s_axi_control_WVALID, .s_axi_control_WREADY, .s_axi_control_WDATA,
        .s_axi_control_WSTRB, .s_axi_control_BVALID, .s_axi_control_BREADY,
        .s_axi_control_BRESP, .s_axi_control_ARVALID, .s_axi_control_ARREADY,
        .s_axi_control_ARADDR, .s_axi_control_RVALID, .s_axi_control_RREADY,
        .s_axi_control_RDATA, .s_axi_control_RRESP, .interrupt,
        .start(ctl_start), .program_addr(ctl_program), .arena_addr(ctl_arena),
        .task_id(ctl_task), .done(ctl_done), .idle(ctl_idle), .status(dbg_status),
        .cycles(dbg_cycles), .perf_sel(dbg_perf_sel), .perf_cycles(dbg_perf_cycles),
        .layers_run(dbg_layers_run), .check_cycles(dbg_check_cycles)
    );
    cds_axi_rd #(.BUS(BUS), .MAX_BURST(MAX_BURST), .FIFO_LOG2(FIFO_LOG2)) u_rd (
        .clk, .rst_n, .base(ctl_program),
        .cmd_valid(rd_cmd_valid), .cmd_ready(rd_cmd_ready), .cmd_addr(rd_cmd_addr),
        .cmd_words(rd_cmd_words), .valid(rd_valid), .ready(rd_ready), .data(rd_data),
        .last(rd_last), .idle(rd_idle), .bus_error(rd_error),
        .m_axi_ARVALID, .m_axi_ARREADY, .m_axi_ARADDR, .m_axi_ARID, .m_axi_ARLEN,
        .m_axi_ARSIZE, .m_axi_ARBURST, .m_axi_ARLOCK(ar_lock), .m_axi_ARCACHE, .m_axi_ARPROT,
        .m_axi_ARQOS, .m_axi_ARREGION, .m_axi_ARUSER, .m_axi_RVALID, .m_axi_RREADY,
        .m_axi_RDATA, .m_axi_RLAST, .m_axi_RID, .m_axi_RUSER, .m_axi_RRESP
    );
    cds_axi_wr #(.BUS(BUS), .MAX_BURST(MAX_BURST)) u_wr (
        .clk, .rst_n, .base(ctl_arena),
        .cmd_valid(wr_cmd_valid), .cmd_ready(wr_cmd_ready), .cmd_addr(wr_cmd_addr),
        .cmd_words(wr_cmd_words), .valid(wr_valid), .ready(wr_ready), .data(wr_data),
        .idle(wr_idle), .bus_error(wr_error),
        .m_axi_AWVALID, .m_axi_AWREADY, .m_axi_AWADDR, .m_axi_AWID, .m_axi_AWLEN,
        .m_axi_AWSIZE, .m_axi_AWBURST, .m_axi_AWLOCK(aw_lock), .m_axi_AWCACHE, .m_axi_AWPROT,
        .m_axi_AWQOS, .m_axi_AWREGION, .m_axi_AWUSER, .m_axi_WVALID, .m_axi_WREADY,
        .m_axi_WDATA, .m_axi_WSTRB, .m_axi_WLAST, .m_axi_WID, .m_axi_WUSER,
        .m_axi_BVALID, .m_axi_BREADY, .m_axi_BRESP, .m_axi_BID, .m_axi_BUSER
    );
endmodule
"""


def dma_sources(arch) -> dict[str, str]:
    sources = unit_sources(["cds_axil_ctrl", "cds_axi_rd", "cds_axi_wr"], arch)
    sources["cds_axi_dma_tb.sv"] = DMA_TB
    return sources


def dma_params(arch) -> dict:
    return {"BUS": arch.bus_bits, "MAX_BURST": MAX_BURST, "FIFO_LOG2": FIFO_LOG2}


# ------------------------------------------------------------------ register map


def _localparams(text: str) -> dict[str, int]:
    return {
        name: int(value, 16)
        for name, value in re.findall(r"localparam logic \[7:0\] ADDR_(\w+)\s*=\s*8'h(\w+);", text)
    }


def reg_offsets() -> dict[str, int]:
    """Byte offsets of the registers the test drives, from the shared register map."""
    regmap = register_map()
    offsets = {"task": regmap.offset("task")}
    for name in ("program", "arena"):
        offsets[f"{name}_lo"] = regmap.offset(name)
        offsets[f"{name}_hi"] = regmap.offset(name) + 4
    return offsets


def test_control_offsets_match_register_map():
    """The RTL slave's localparams are the offsets codesign.arch.regmap computes."""
    text = unit_sources("cds_axil_ctrl", ARCH_A)["cds_axil_ctrl.sv"]
    params = _localparams(text)
    regmap = register_map()
    want = {
        "CTRL": regmap.offset("CTRL"),
        "GIE": regmap.offset("GIE"),
        "IER": regmap.offset("IER"),
        "ISR": regmap.offset("ISR"),
        "PROGRAM_LO": regmap.offset("program"),
        "PROGRAM_HI": regmap.offset("program") + 4,
        "ARENA_LO": regmap.offset("arena"),
        "ARENA_HI": regmap.offset("arena") + 4,
        "TASK": regmap.offset("task"),
        "STATUS": regmap.offset("STATUS"),  # both kernels' check result
    }
    for name, offset in want.items():
        assert params.get(name) == offset, f"ADDR_{name}: RTL {params.get(name)} != {offset}"
    # the RTL-only debug registers sit above the arguments, inside the decoded range
    debug = [params[n] for n in ("CYCLES_LO", "CYCLES_HI", "PERF_SEL", "PERF_CYCLES")]
    assert min(debug) > regmap.offset("task") and max(params.values()) < regmap.size


# ------------------------------------------------------------------ lint


@pytest.mark.parametrize("unit", UNITS)
def test_axi_lint(unit, arch):
    sim.lint(unit_sources(unit, arch), unit)


@pytest.mark.parametrize("board", ["zcu102", "kv260"])
def test_axi_lint_board_defaults(board):
    arch = default_arch(board)
    for unit in UNITS:
        sim.lint(unit_sources(unit, arch), unit)


def test_dma_tb_lint(arch):
    sim.lint(dma_sources(arch), "cds_axi_dma_tb", dma_params(arch))


def test_codesign_tb_lint():
    """The sim wrapper around the real top (needs codesign_top's template)."""
    if not (TEMPLATE_DIR / "codesign_top.sv.j2").exists():
        pytest.skip("codesign_top.sv.j2 is not there yet")
    sim.lint(unit_sources("codesign_tb", ARCH_A), "codesign_tb")


# ------------------------------------------------------------------ DMA vs numpy


def make_commands(rng, region_words: int, count: int, wpb: int, page_words: int):
    """(word offset, words) pairs: tiny, beat sized, long, and 4 KB-crossing commands."""
    cmds = []
    for k in range(count):
        kind = k % 4
        if kind == 0:
            words = int(rng.integers(1, 2 * wpb + 1))
        elif kind == 1:
            words = int(rng.integers(1, 8)) * wpb + int(rng.integers(0, wpb))
        elif kind == 2:
            words = int(rng.integers(64, 700))
        else:  # straddle a 4 KB page boundary (of the absolute address)
            words = int(rng.integers(2, 300))
        words = max(1, min(words, region_words - 1))
        if kind == 3:
            page = int(rng.integers(1, region_words // page_words))
            start = page * page_words - int(rng.integers(1, words))
        else:
            start = int(rng.integers(0, region_words - words))
        start = max(0, min(start, region_words - words))
        cmds.append((start, words))
    return np.array(cmds, dtype=np.int64)


def expected_reads(memory_words: np.ndarray, base: int, cmds: np.ndarray, wpb: int):
    beats, lasts = [], []
    for start, words in cmds:
        first = base // 4 + int(start)
        values = memory_words[first : first + int(words)]
        padded = np.zeros(-(-int(words) // wpb) * wpb, np.uint32)
        padded[: len(values)] = values
        rows = padded.reshape(-1, wpb)
        beats.append(rows)
        lasts += [0] * (len(rows) - 1) + [1]
    return np.concatenate(beats), np.array(lasts, dtype=np.uint8)


def check_bursts(log: np.ndarray, bus_bytes: int, what: str) -> None:
    for addr, length in log.astype(np.int64):
        assert addr % bus_bytes == 0, f"{what} 0x{addr:x} not beat aligned"
        assert length < MAX_BURST, f"{what} 0x{addr:x}: {length + 1} beats > {MAX_BURST}"
        end = addr + (length + 1) * bus_bytes - 1
        assert addr // 4096 == end // 4096, f"{what} 0x{addr:x}+{length + 1} crosses 4 KB"


@pytest.fixture(scope="module")
def dma_build(arch):
    return sim.build(dma_sources(arch), "cds_axi_dma_tb", dma_params(arch))


def test_dma_and_control_random(arch, dma_build):
    wpb = arch.bus_bits // 32
    bus_bytes = arch.bus_bytes
    rng = np.random.default_rng(arch.bus_bits + 5)
    memory = rng.integers(0, 256, RAM_BYTES, dtype=np.uint8)
    program_base, arena_base = 0x1004, 0x10000 + 8  # word aligned, not beat aligned
    region_words = 0x6000 // 4
    page_words = 1024
    rd_cmds = make_commands(rng, region_words, 48, wpb, page_words)
    wr_cmds = make_commands(rng, region_words, 48, wpb, page_words)
    # the reads' page crossings were drawn relative to the region; shift by the base so
    # some start before and end after an absolute 4 KB boundary too
    wr_words = rng.integers(0, 1 << 32, int(wr_cmds[:, 1].sum()), dtype=np.uint64)
    names = sorted(reg_offsets())
    result = sim.run(
        dma_build,
        "cocotb_axi",
        testcase="dma_and_control",
        inputs={
            "seed": 11,
            "wpb": wpb,
            "memory": memory,
            "reg_names": np.array(names),
            "reg_offsets": np.array([reg_offsets()[n] for n in names]),
            "program_base": program_base,
            "arena_base": arena_base,
            "rd_cmds": np.stack([rd_cmds[:, 0] * 4, rd_cmds[:, 1]], axis=1),
            "wr_cmds": np.stack([wr_cmds[:, 0] * 4, wr_cmds[:, 1]], axis=1),
            "wr_words": wr_words,
            "stall": 0.3,
            "backpressure": 0.3,
            "stream_words": 4000,
        },
    )
    words = memory.view(np.uint32)
    want_beats, want_last = expected_reads(words, program_base, rd_cmds, wpb)
    np.testing.assert_array_equal(result["rd_words"], want_beats, err_msg="read data")
    np.testing.assert_array_equal(result["rd_last"], want_last, err_msg="read last")

    after = memory.copy().view(np.uint32)
    position = 0
    for start, count in wr_cmds:
        first = arena_base // 4 + int(start)
        after[first : first + int(count)] = wr_words[position : position + int(count)]
        position += int(count)
    want = after.view(np.uint8)
    np.testing.assert_array_equal(result["landed"], want, err_msg="RAM when wr_idle rose")
    np.testing.assert_array_equal(result["final"], want, err_msg="RAM after the writes")

    check_bursts(result["ar"], bus_bytes, "AR")
    check_bursts(result["aw"], bus_bytes, "AW")
    crossings = sum(
        (program_base + 4 * s) // 4096 != (program_base + 4 * (s + w) - 1) // 4096
        for s, w in rd_cmds
    )
    assert crossings >= 5, "too few read commands straddle a 4 KB page"
    fetched = sum(
        -(-((program_base // 4 + int(s)) % wpb + int(w)) // wpb) for s, w in rd_cmds
    )  # fmt: skip
    assert int(result["ar"][:, 1].sum()) + len(result["ar"]) == fetched, "beats requested"
    assert int(result["r_stalls"]) == 0, "RREADY dropped with data waiting"
    assert int(result["errors"]) == 0
    assert int(result["rd_idle"]) == 1
    assert int(result["wr_busy_cycles"]) > 0
    record_cycles(
        "axi_dma", f"{arch.bus_bits}b 48 rd + 48 wr cmds, 30% stalls", int(result["cycles"]), None
    )
    beats, read_cycles, write_cycles = (int(v) for v in result["stream"])
    for what, cycles in (("read", read_cycles), ("write", write_cycles)):
        record_cycles("axi_dma", f"{arch.bus_bits}b one {what} of 4000 words, no stalls", cycles,
                      None, beats=beats, beats_per_cycle=round(beats / cycles, 3))  # fmt: skip
        # one beat a cycle once streaming (a few cycles of latency at the ends)
        assert cycles <= beats + 32, f"{what} streamed {beats} beats in {cycles} cycles"


# ------------------------------------------------------------------ DDR model


DDR_DEPTH_LOG2 = 12
DDR_BASE = 0x8_0000_0000
# (name, width, direction seen from the DDR's slave port); LOCK is AXI4's 1 bit here
AXI_SLAVE_SIGNALS = [
    *[(f"AW{n}", w, "input") for n, w in (("VALID", 1), ("ADDR", 64), ("ID", 1), ("LEN", 8),
      ("SIZE", 3), ("BURST", 2), ("LOCK", 1), ("CACHE", 4), ("PROT", 3), ("QOS", 4),
      ("REGION", 4), ("USER", 1))],
    ("AWREADY", 1, "output"),
    *[(f"W{n}", w, "input") for n, w in (("VALID", 1), ("DATA", "BUS"), ("STRB", "BUS/8"),
      ("LAST", 1), ("ID", 1), ("USER", 1))],
    ("WREADY", 1, "output"),
    *[(f"B{n}", w, "output") for n, w in (("VALID", 1), ("RESP", 2), ("ID", 1), ("USER", 1))],
    ("BREADY", 1, "input"),
    *[(f"AR{n}", w, "input") for n, w in (("VALID", 1), ("ADDR", 64), ("ID", 1), ("LEN", 8),
      ("SIZE", 3), ("BURST", 2), ("LOCK", 1), ("CACHE", 4), ("PROT", 3), ("QOS", 4),
      ("REGION", 4), ("USER", 1))],
    ("ARREADY", 1, "output"),
    *[(f"R{n}", w, "output") for n, w in (("VALID", 1), ("DATA", "BUS"), ("LAST", 1),
      ("ID", 1), ("USER", 1), ("RESP", 2))],
    ("RREADY", 1, "input"),
]  # fmt: skip


def ddr_tb_source() -> str:
    """Test-only wrapper of the DDR model whose ports cocotbext-axi's AxiMaster accepts."""
    ports = ["input logic clk", "input logic rst_n", "input logic [15:0] latency",
             "input logic [15:0] bw_num", "input logic [15:0] bw_den", "input logic load",
             "input logic dump", "output logic oob"]  # fmt: skip
    conns = [".clk", ".rst_n", ".latency", ".bw_num", ".bw_den", ".load", ".dump", ".oob"]
    for n in (0, 1):
        for name, width, direction in AXI_SLAVE_SIGNALS:
            ports.append(f"{direction} logic [{width}-1:0] s{n}_{name}")
            if name.endswith("LOCK"):
                conns.append(f".s{n}_{name}({{1'b0, s{n}_{name}}})")
            else:
                conns.append(f".s{n}_{name}")
    return (
        "module cds_axi_ddr_tb #(parameter int BUS = 64, parameter int DEPTH_LOG2 = 12,\n"
        "    parameter logic [63:0] BASE = 64'h8_0000_0000) (\n    "
        + ",\n    ".join(ports)
        + "\n);\n    cds_axi_ddr_model #(.BUS(BUS), .DEPTH_LOG2(DEPTH_LOG2), .BASE(BASE)) ddr (\n"
        + "        "
        + ",\n        ".join(conns)
        + "\n    );\nendmodule\n"
    )


def ddr_sources(arch) -> dict[str, str]:
    sources = unit_sources("cds_axi_ddr_model", arch)
    sources["cds_axi_ddr_tb.sv"] = ddr_tb_source()
    return sources


def ddr_params(arch) -> dict:
    return {"BUS": arch.bus_bits, "DEPTH_LOG2": DDR_DEPTH_LOG2, "BASE": f"64'h{DDR_BASE:x}"}


def test_ddr_tb_lint():
    sim.lint(ddr_sources(ARCH_A), "cds_axi_ddr_tb", ddr_params(ARCH_A))


def test_ddr_model_latency_bandwidth_data():
    arch = ARCH_A
    bus_bytes = arch.bus_bytes
    build = sim.build(ddr_sources(arch), "cds_axi_ddr_tb", ddr_params(arch))
    rng = np.random.default_rng(3)
    init = rng.integers(0, 1 << 32, 4096, dtype=np.uint64).astype(np.uint32)  # 16 KB
    caps = np.array([(3, 2), (4, 1), (1, 1)], dtype=np.int64)  # bytes per cycle
    result = sim.run(
        build,
        "cocotb_axi",
        testcase="ddr_model",
        inputs={"seed": 4, "base": DDR_BASE, "bus_bytes": bus_bytes, "init": init, "caps": caps},
    )
    np.testing.assert_array_equal(result["loaded"], init.view(np.uint8))
    want = init.view(np.uint8).copy()
    want[4100 : 4100 + 999] = result["payload"]
    np.testing.assert_array_equal(result["readback"], want, err_msg="port 1 write, port 0 read")
    for latency, measured in result["latencies"]:
        assert measured == max(int(latency), 2), f"latency {latency}: measured {measured}"
    for num, den, beats, cycles in result["rates"]:
        rate = num / den / bus_bytes  # beats per cycle allowed
        got = beats / cycles
        assert got <= rate * 1.02 + 4 / cycles, f"cap {num}/{den} B/cycle: {got:.4f} beats/cycle"
        assert got >= rate * 0.9, f"cap {num}/{den} B/cycle: only {got:.4f} beats/cycle"
        record_cycles("ddr_model", f"cap {num}/{den} B/cycle, 1024 beats", cycles, None,
                      beats_per_cycle=round(got, 4), cap=round(rate, 4))  # fmt: skip
    assert int(result["oob"]) == 0


def test_archs_cover_two_bus_widths():
    assert {a.bus_bits for a in ARCHS.values()} == {64, 128}
