"""The Vitis HLS / Vivado project around the rendered kernel: Tcl scripts and a Makefile.

``project_files`` renders, from the Program, its ArchConfig and the board alone:

- ``run_hls.tcl``: the Vitis HLS project (part, clock, kernel and testbench files, m_axi
  settings, IP export), running any of csim / csynth / cosim / export;
- ``vivado_bd.tcl``: the block design for the board's PS (Zynq UltraScale+ or Zynq-7000)
  with the exported kernel IP, implementation to a bitstream, and ``manifest.json``;
- ``Makefile``: ``make csim | hls | cosim | bitstream | clean``.

The render step of ``codesign.hls.render`` writes these next to ``src/`` and ``tb/``.
"""

from __future__ import annotations

import hashlib
import json
import re

from jinja2 import Environment

from .. import __version__
from ..arch import ArchConfig, Board, get_board
from ..templates import environment

HLS_PROJECT = "codesign_hls"
SOLUTION = "solution"
VIVADO_PROJECT = "vivado_project"
BD_NAME = "codesign_bd"
KERNEL_TOP = "codesign_top"
KERNEL_CELL = "codesign_top_0"
IP_VENDOR = "codesign"
IP_LIBRARY = "hls"
IP_VERSION = "1.0"
IP_VLNV = f"{IP_VENDOR}:{IP_LIBRARY}:{KERNEL_TOP}:{IP_VERSION}"
STEPS = ("csim", "csynth", "cosim", "export")
DEFAULT_STEPS = ("csynth", "export")
DEFAULT_JOBS = 2
REPORT_PATH = f"{HLS_PROJECT}/{SOLUTION}/syn/report/csynth.xml"
IP_DIR = f"{HLS_PROJECT}/{SOLUTION}/impl/ip"

# Vivado board-file names (the PS preset comes from them when they are installed).
BOARD_PARTS = {
    "zcu102": "xilinx.com:zcu102:part0:*",
    "zcu104": "xilinx.com:zcu104:part0:*",
    "kv260": "xilinx.com:kv260_som:part0:*",
    "ultra96v2": "avnet.com:ultra96v2:part0:*",
    "pynq-z2": "tul.com.tw:pynq-z2:part0:*",
}

# PS slave port widths the fabric side accepts, by family.
HP_MAX_BITS = {"zynquplus": 128, "zynq": 64}

PROJECT_TEMPLATES = (
    ("run_hls.tcl.j2", "run_hls.tcl"),
    ("vivado_bd.tcl.j2", "vivado_bd.tcl"),
    ("Makefile.j2", "Makefile"),
)

_TCL_BARE = re.compile(r"^[A-Za-z0-9_.:/+*=-]+$")


def tcl_word(value) -> str:
    """One Tcl word: bare when safe, else in braces (braces and backslashes refused)."""
    text = str(value)
    if _TCL_BARE.match(text):
        return text
    if "\\" in text or text.count("{") != text.count("}") or "\n" in text:
        raise ValueError(f"{text!r} cannot be quoted safely for Tcl")
    return "{" + text + "}"


def _environment() -> Environment:
    return environment(filters={"tcl": tcl_word})


# ---------------------------------------------------------------- processing system


def _zynquplus_port(port: str) -> tuple[str, str, str]:
    """S_AXI_HP<n>_FPD / S_AXI_HPC<n>_FPD / S_AXI_LPD -> (USE key, width key, clock pin)."""
    match = re.fullmatch(r"S_AXI_HP(C?)(\d)_FPD", port)
    if match:
        coherent, index = match.group(1) == "C", int(match.group(2))
        gp = index if coherent else index + 2
        clock = f"saxihp{'c' if coherent else ''}{index}_fpd_aclk"
        return f"PSU__USE__S_AXI_GP{gp}", f"PSU__SAXIGP{gp}__DATA_WIDTH", clock
    if port == "S_AXI_LPD":
        return "PSU__USE__S_AXI_GP6", "PSU__SAXIGP6__DATA_WIDTH", "saxi_lpd_aclk"
    raise ValueError(f"unknown Zynq UltraScale+ PS slave port {port!r}")


def _zynq_port(port: str) -> tuple[str, str, str]:
    match = re.fullmatch(r"S_AXI_HP(\d)", port)
    if not match:
        raise ValueError(f"unknown Zynq-7000 PS slave port {port!r}")
    index = int(match.group(1))
    return f"PCW_USE_S_AXI_HP{index}", f"PCW_S_AXI_HP{index}_DATA_WIDTH", f"S_AXI_HP{index}_ACLK"


def ps_settings(board: Board, bus_bits: int, weight_ports: int = 1) -> dict:
    """The PS cell of the block design for the board's family: IP, preset rule, CONFIG
    properties, and the pins the kernel connects to (gmem0, gmem1 and the further weight
    masters gmem2... each get one of the board's PS slave ports, in ``board.pl_ports``
    order)."""
    kernel_masters = [f"m_axi_gmem{index}" for index in range(1 + weight_ports)]
    if len(board.pl_ports) < len(kernel_masters):
        raise ValueError(
            f"{board.name}: {len(kernel_masters)} AXI masters ({weight_ports} weight ports) "
            f"need as many PS slave ports; the board has {len(board.pl_ports)}"
        )
    clock = f"{board.clock_mhz:g}"
    width = str(min(bus_bits, HP_MAX_BITS[board.family]))
    mem_ports = []
    if board.family == "zynquplus":
        config = [
            ("PSU__USE__M_AXI_GP0", "1"),  # M_AXI_HPM0_FPD: control
            ("PSU__USE__M_AXI_GP1", "0"),
            ("PSU__USE__M_AXI_GP2", "0"),
            ("PSU__FPGA_PL0_ENABLE", "1"),
            ("PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ", clock),
            ("PSU__USE__IRQ0", "1"),
        ]
        for index, (kernel, port) in enumerate(zip(kernel_masters, board.pl_ports, strict=False)):
            use, width_key, clock_pin = _zynquplus_port(port)
            config += [(use, "1"), (width_key, width)]
            mem_ports.append(
                {"kernel": kernel, "port": port, "clock": clock_pin, "interconnect": f"mem{index}"}
            )
        return {
            "ps_name": "Zynq UltraScale+ MPSoC",
            "ps_vlnv": "xilinx.com:ip:zynq_ultra_ps_e",
            "ps_rule": "xilinx.com:bd_rule:zynq_ultra_ps_e",
            "ps_automation_preset": 'apply_board_preset "1"',
            "ps_automation_bare": "",
            "ps_config": config,
            "ps_clock": "pl_clk0",
            "ps_reset": "pl_resetn0",
            "ps_irq": "pl_ps_irq0",
            "ctrl_master": "M_AXI_HPM0_FPD",
            "ctrl_clock": "maxihpm0_fpd_aclk",
            "mem_ports": mem_ports,
        }
    if board.family == "zynq":
        config = [
            ("PCW_USE_M_AXI_GP0", "1"),
            ("PCW_EN_CLK0_PORT", "1"),
            ("PCW_EN_RST0_PORT", "1"),
            ("PCW_FPGA0_PERIPHERAL_FREQMHZ", clock),
            ("PCW_USE_FABRIC_INTERRUPT", "1"),
            ("PCW_IRQ_F2P_INTR", "1"),
        ]
        for index, (kernel, port) in enumerate(zip(kernel_masters, board.pl_ports, strict=False)):
            use, width_key, clock_pin = _zynq_port(port)
            config += [(use, "1"), (width_key, width)]
            mem_ports.append(
                {"kernel": kernel, "port": port, "clock": clock_pin, "interconnect": f"mem{index}"}
            )
        automation = (
            'make_external "FIXED_IO, DDR" apply_board_preset "{}" Master "Disable" Slave "Disable"'
        )
        return {
            "ps_name": "Zynq-7000",
            "ps_vlnv": "xilinx.com:ip:processing_system7",
            "ps_rule": "xilinx.com:bd_rule:processing_system7",
            "ps_automation_preset": automation.format(1),
            "ps_automation_bare": automation.format(0),
            "ps_config": config,
            "ps_clock": "FCLK_CLK0",
            "ps_reset": "FCLK_RESET0_N",
            "ps_irq": "IRQ_F2P",
            "ctrl_master": "M_AXI_GP0",
            "ctrl_clock": "M_AXI_GP0_ACLK",
            "mem_ports": mem_ports,
        }
    raise ValueError(f"{board.name}: unknown device family {board.family!r}")


# ---------------------------------------------------------------- rendering


def project_params(
    program,
    arch: ArchConfig,
    board: Board | str,
    model_name: str | None = None,
    *,
    bitstream_dir: str | None = None,
    jobs: int = DEFAULT_JOBS,
) -> dict:
    """Every value the project templates use."""
    board = board if isinstance(board, Board) else get_board(str(board))
    for name in ("tile_in", "tile_out", "bus_bits"):
        if getattr(program, name) != getattr(arch, name):
            raise ValueError(
                f"the Program was compiled with {name}={getattr(program, name)}, "
                f"the ArchConfig has {getattr(arch, name)}"
            )
    model = model_name or program.model
    program_bytes = program.to_bytes()
    ps = ps_settings(board, arch.bus_bits, arch.weight_ports)
    output_name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model}-{board.name}")
    return {
        "codesign_version": __version__,
        "model": model,
        "board": board.name,
        "part": board.part,
        "family": board.family,
        "board_part_pattern": BOARD_PARTS.get(board.name, f"*:{board.name}:*"),
        "clock_mhz": f"{board.clock_mhz:g}",
        "clock_period_ns": f"{1000.0 / board.clock_mhz:.3f}",
        "hls_project": HLS_PROJECT,
        "solution": SOLUTION,
        "top": KERNEL_TOP,
        "all_steps": list(STEPS),
        "default_steps": list(DEFAULT_STEPS),
        "bus_bits": arch.bus_bits,
        "bus_bytes": arch.bus_bytes,
        "ip_vendor": IP_VENDOR,
        "ip_library": IP_LIBRARY,
        "ip_version": IP_VERSION,
        "ip_vlnv": IP_VLNV,
        "ip_display_name": f"codesign accelerator Ti{arch.tile_in} To{arch.tile_out} "
        f"P{arch.attn_parallel}",
        "kernel_cell": KERNEL_CELL,
        "vivado_project": VIVADO_PROJECT,
        "bd_name": BD_NAME,
        "output_name": output_name,
        "bitstream_dir": bitstream_dir or f"bitstreams/{output_name}",
        "jobs": int(jobs),
        "program_sha256": hashlib.sha256(program_bytes).hexdigest(),
        "program_bytes": len(program_bytes),
        "arch_json": json.dumps(arch.to_dict(), sort_keys=True),
        # the kernel keeps the arena's on-chip window in UltraRAM where the part has it
        # (the sources stay board-independent: run_hls.tcl defines CODESIGN_WINDOW_URAM)
        "window_uram": arch.arena_window_kib > 0 and board.uram > 0,
        **ps,
        "clock_sinks": [
            f"{KERNEL_CELL}/ap_clk",
            "proc_sys_reset_0/slowest_sync_clk",
            "ctrl_interconnect/aclk",
            f"ps/{ps['ctrl_clock']}",
            *(f"{mem['interconnect']}/aclk" for mem in ps["mem_ports"]),
            *(f"ps/{mem['clock']}" for mem in ps["mem_ports"]),
        ],
        "reset_sinks": [
            f"{KERNEL_CELL}/ap_rst_n",
            "ctrl_interconnect/aresetn",
            *(f"{mem['interconnect']}/aresetn" for mem in ps["mem_ports"]),
        ],
    }


def project_files(
    program,
    arch: ArchConfig,
    board: Board | str,
    model_name: str | None = None,
    *,
    bitstream_dir: str | None = None,
    jobs: int = DEFAULT_JOBS,
) -> dict[str, str]:
    """``{relative path: text}`` of the project-level files (Tcl scripts, Makefile).

    ``bitstream_dir`` (relative to the project folder, or absolute) is where ``make
    bitstream`` puts ``<model>-<board>.bit/.hwh/.xsa`` and ``manifest.json``; default
    ``bitstreams/<model>-<board>`` inside the project."""
    params = project_params(
        program, arch, board, model_name, bitstream_dir=bitstream_dir, jobs=jobs
    )
    env = _environment()
    return {path: env.get_template(name).render(**params) for name, path in PROJECT_TEMPLATES}


__all__ = [
    "BOARD_PARTS",
    "DEFAULT_STEPS",
    "HLS_PROJECT",
    "IP_DIR",
    "IP_VLNV",
    "REPORT_PATH",
    "SOLUTION",
    "STEPS",
    "project_files",
    "project_params",
    "ps_settings",
    "tcl_word",
]
