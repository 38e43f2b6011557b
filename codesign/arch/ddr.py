"""The DDR a board's PL masters see, in one description the estimator and the RTL
simulation's DDR model (``cds_axi_ddr_model``) share.

A PL master moves at most one beat of its width per PL cycle; all masters together are
capped at the PS DDR's sustained bandwidth, a share (``efficiency``) of its peak (bus
width x transfer rate: refresh, page misses and read/write turnarounds take the rest);
every read waits ``latency_cycles`` for its first data. The default efficiency, 80 %, is
the figure the accelerator's latency claims are made at; a model at 100 % is allowed
(``efficiency=1.0``) and says so wherever it is printed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_EFFICIENCY = 0.8
DEFAULT_LATENCY = 64  # PL cycles from a read address to its first data (~210 ns at 300 MHz)


@dataclass(frozen=True)
class DdrModel:
    """Ports, widths, clock, the DDR's peak and sustained share, first-beat latency."""

    peak_gbps: float  # the PS DDR's peak: bus width x transfer rate
    clock_mhz: float  # the PL clock the masters run at
    port_bits: int = 128  # data width of each AXI master
    ports: int = 2  # AXI masters moving data (program and weights, arena, more weights)
    efficiency: float = DEFAULT_EFFICIENCY  # sustained share of the peak
    latency_cycles: int = DEFAULT_LATENCY

    def __post_init__(self) -> None:
        if not 0.0 < self.efficiency <= 1.0:
            raise ValueError(f"DDR efficiency {self.efficiency} must be in (0, 1]")
        if self.peak_gbps <= 0 or self.clock_mhz <= 0:
            raise ValueError("DDR peak bandwidth and PL clock must be positive")
        if not 0 <= self.latency_cycles < 1 << 16:
            raise ValueError(f"DDR latency {self.latency_cycles} cycles outside 0..65535")
        if self.ports < 1 or self.port_bits < 8:
            raise ValueError(f"{self.ports} port(s) of {self.port_bits} bits: need >= 1 of >= 8")

    @property
    def sustained_gbps(self) -> float:
        return self.peak_gbps * self.efficiency

    @property
    def bytes_per_cycle(self) -> float:
        """What all masters together may move per PL cycle (the DDR's sustained share)."""
        return self.sustained_gbps * 1e3 / self.clock_mhz

    @property
    def port_gbps(self) -> float:
        """What one master moves at one beat per cycle."""
        return self.port_bits / 8 * self.clock_mhz / 1e3

    def describe(self) -> str:
        return (
            f"{self.ports} x {self.port_bits}-bit AXI masters at {self.clock_mhz:g} MHz "
            f"(one beat per cycle each, {self.port_gbps:g} GB/s), sharing the DDR's "
            f"{self.peak_gbps:g} GB/s peak at {100 * self.efficiency:g} % efficiency = "
            f"{self.sustained_gbps:.4g} GB/s; {self.latency_cycles}-cycle first-beat latency"
        )

    def to_dict(self) -> dict:
        derived = {"sustained_gbps": self.sustained_gbps, "bytes_per_cycle": self.bytes_per_cycle}
        return {**asdict(self), **derived, "description": self.describe()}


def ddr_model(board, arch=None, *, efficiency: float | None = None,
              latency_cycles: int | None = None) -> DdrModel:  # fmt: skip
    """The DDR model of `board` (a Board or its name) with the masters of `arch`."""
    from .boards import get_board

    board = get_board(board) if isinstance(board, str) else board
    return DdrModel(
        peak_gbps=board.ddr_peak_gbps,
        clock_mhz=board.clock_mhz,
        port_bits=arch.bus_bits if arch is not None else 128,
        ports=1 + (arch.weight_ports if arch is not None else 1),
        efficiency=DEFAULT_EFFICIENCY if efficiency is None else float(efficiency),
        latency_cycles=DEFAULT_LATENCY if latency_cycles is None else int(latency_cycles),
    )
