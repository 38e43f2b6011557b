"""Target boards as data: part, PL clock, fabric resources, DDR peak, PS-PL ports.

Resource counts are the device totals from the vendor data sheets; ``ddr_peak_gbps`` is
the PS DDR's peak (bus width x transfer rate, in ``ddr``); what a design sustains of it is
``codesign.arch.ddr`` (default 80 %).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    part: str
    family: str  # "zynquplus" or "zynq"
    clock_mhz: float
    dsp: int
    bram36: int
    uram: int
    lut: int
    ff: int
    ddr_peak_gbps: float  # the PS DDR's peak bandwidth, GB/s (see ``ddr``)
    # PS slave ports the kernel's AXI masters map to, in order: gmem0 (program and weights),
    # gmem1 (arena), then gmem2... (the further weight masters, ArchConfig.weight_ports)
    pl_ports: tuple[str, ...]
    pynq: bool = True
    ddr: str = ""  # the PS DDR: type, width, transfer rate

    @property
    def hp_port_bits(self) -> int:
        """Data width of a PS high-performance slave port: a wider AXI master than this
        moves no more than this many bits per cycle into the DDR."""
        return 64 if self.family == "zynq" else 128

    @property
    def weight_ports_max(self) -> int:
        """Most weight masters a design may have: the program master carries weights
        too, the arena has its own port, each further weight master one more PS port
        (and ArchConfig.weight_ports is one of WEIGHT_PORT_CHOICES)."""
        return max(self.weight_port_choices)

    @property
    def weight_port_choices(self) -> list[int]:
        """The ArchConfig.weight_ports this board has PS ports for."""
        from .config import WEIGHT_PORT_CHOICES

        return [ports for ports in WEIGHT_PORT_CHOICES if ports <= len(self.pl_ports) - 1]

    def to_dict(self) -> dict:
        return asdict(self)


# gmem0 (program and weights), gmem1 (arena), then up to three more weight masters
ZYNQUPLUS_PORTS = (
    "S_AXI_HP0_FPD", "S_AXI_HP1_FPD", "S_AXI_HP2_FPD", "S_AXI_HP3_FPD", "S_AXI_HPC0_FPD",
)  # fmt: skip

BOARDS: dict[str, Board] = {
    board.name: board
    for board in (
        Board(
            name="zcu102",
            description="Xilinx ZCU102 (Zynq UltraScale+ ZU9EG)",
            part="xczu9eg-ffvb1156-2-e",
            family="zynquplus",
            clock_mhz=300.0,
            dsp=2520,
            bram36=912,
            uram=0,
            lut=274080,
            ff=548160,
            ddr_peak_gbps=19.2,
            ddr="DDR4-2400, 64-bit",
            pl_ports=ZYNQUPLUS_PORTS,
        ),
        Board(
            name="zcu104",
            description="Xilinx ZCU104 (Zynq UltraScale+ ZU7EV)",
            part="xczu7ev-ffvc1156-2-e",
            family="zynquplus",
            clock_mhz=300.0,
            dsp=1728,
            bram36=312,
            uram=96,
            lut=230400,
            ff=460800,
            ddr_peak_gbps=19.2,
            ddr="DDR4-2400, 64-bit",
            pl_ports=ZYNQUPLUS_PORTS,
        ),
        Board(
            name="kv260",
            description="AMD Kria KV260 Vision AI Starter Kit (K26 SOM)",
            part="xck26-sfvc784-2LV-c",
            family="zynquplus",
            clock_mhz=250.0,
            dsp=1248,
            bram36=144,
            uram=64,
            lut=117120,
            ff=234240,
            ddr_peak_gbps=19.2,
            ddr="DDR4-2400, 64-bit",
            pl_ports=ZYNQUPLUS_PORTS,
        ),
        Board(
            name="ultra96v2",
            description="Avnet Ultra96-V2 (Zynq UltraScale+ ZU3EG)",
            part="xczu3eg-sbva484-1-i",
            family="zynquplus",
            clock_mhz=200.0,
            dsp=360,
            bram36=216,
            uram=0,
            lut=70560,
            ff=141120,
            ddr_peak_gbps=8.5,
            ddr="LPDDR4-2133, 32-bit",
            pl_ports=ZYNQUPLUS_PORTS,
        ),
        Board(
            name="pynq-z2",
            description="TUL PYNQ-Z2 (Zynq-7000 XC7Z020)",
            part="xc7z020clg400-1",
            family="zynq",
            clock_mhz=100.0,
            dsp=220,
            bram36=140,
            uram=0,
            lut=53200,
            ff=106400,
            ddr_peak_gbps=2.1,
            ddr="DDR3-1050, 16-bit",
            pl_ports=("S_AXI_HP0", "S_AXI_HP1", "S_AXI_HP2", "S_AXI_HP3"),
        ),
    )
}


def list_boards() -> list[str]:
    return list(BOARDS)


def get_board(name: str) -> Board:
    """The board called ``name`` in any spelling the docs use (``Ultra96-V2``, ``PYNQ-Z2``)."""
    from ..names import board_name

    return BOARDS[board_name(name)]
