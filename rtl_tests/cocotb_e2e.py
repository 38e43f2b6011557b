"""cocotb side of the end-to-end test: one Program through the whole RTL accelerator.

The host's part is what a PYNQ driver does on a board: put program.bin and the arena
(input inside) in DDR, write the two buffer addresses and the task into the AXI4-Lite
control slave (cocotbext-axi ``AxiLiteMaster``), set ap_start, wait for ap_done, read the
output back. DDR is either cocotbext-axi ``AxiRam`` on both m_axi masters (one shared
sparse memory; the board's bandwidth cap as a pause generator on the data channels) or,
for long runs, the SystemVerilog DDR model of ``codesign_tb`` (first-beat latency and a
shared bandwidth cap, no Python per cycle). Per-layer cycles come from the RTL top's
debug registers (docs/rtl-top.md); a Vitis-exported top has none, so they are skipped
when STATUS reads back as an unmapped register would.
"""

from __future__ import annotations

import itertools
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from common import CLOCK_NS, load_inputs, save_outputs

from codesign.arch.regmap import AP_DONE, AP_START, CTRL, register_map, weight_registers

# RTL-only debug registers (docs/rtl-top.md)
STATUS, CYCLES_LO, CYCLES_HI, PERF_SEL, PERF_CYCLES, LAYERS_RUN = (
    0x80,
    0x84,
    0x88,
    0x8C,
    0x90,
    0x94,
)


def _pause_generator(busy_fraction: float):
    """Cycle pattern that stalls a channel `busy_fraction` of the time, evenly spread."""
    if busy_fraction <= 0:
        return None
    credit = 0.0
    pattern = []
    for _ in range(1000):
        credit += 1.0 - busy_fraction
        if credit >= 1.0:
            credit -= 1.0
            pattern.append(0)
        else:
            pattern.append(1)
    return itertools.cycle(pattern)


class DdrModel:
    """Byte access to the memory array of codesign_tb's DDR model (cocotb handles)."""

    def __init__(self, dut, bus_bytes: int, base: int):
        self.mem = dut.ddr.mem
        self.bus_bytes = bus_bytes
        self.base = base

    def _span(self, address: int, length: int) -> tuple[int, int, int]:
        offset = address - self.base
        first = offset // self.bus_bytes
        last = (offset + length - 1) // self.bus_bytes
        return first, last, offset - first * self.bus_bytes

    def read(self, address: int, length: int) -> bytes:
        first, last, skip = self._span(address, length)
        data = b"".join(
            int(self.mem[i].value).to_bytes(self.bus_bytes, "little")
            for i in range(first, last + 1)
        )
        return data[skip : skip + length]

    def write(self, address: int, data: bytes) -> None:
        first, last, skip = self._span(address, len(data))
        head = self.read(self.base + first * self.bus_bytes, skip) if skip else b""
        end = skip + len(data)
        tail_len = (last + 1 - first) * self.bus_bytes - end
        tail = self.read(address + len(data), tail_len) if tail_len else b""
        blob = head + bytes(data) + tail
        for i in range(first, last + 1):
            at = (i - first) * self.bus_bytes
            self.mem[i].value = int.from_bytes(blob[at : at + self.bus_bytes], "little")


def _controller_state(dut) -> str:
    """Where our RTL top's controller stands (empty for a Vitis export)."""
    try:
        top = dut if hasattr(dut, "u_controller") else dut.dut  # codesign_top or codesign_tb
        ctl = top.u_controller
        text = (
            f"controller state {int(ctl.state.value)}, layer {int(ctl.layer.value)}, "
            f"op {int(ctl.d_op.value)}, run pass {int(ctl.run_pass.value)}"
        )
        text += (
            f"; moe state {int(top.u_moe.state.value)}, job state {int(top.u_job.state.value)}, "
            f"wr1 idle {int(top.wr1_idle.value)}"
        )
        return text
    except AttributeError:
        return ""


async def _wait_done(dut, axil, clk, poll: int, limit: int) -> int:
    waited = 0
    while True:
        await ClockCycles(clk, poll)
        waited += poll
        ctrl = int.from_bytes(await axil.read(CTRL, 4), "little")
        if ctrl & AP_DONE:
            return waited
        if waited > limit:
            raise TimeoutError(
                f"no ap_done within {limit} cycles (CTRL={ctrl:#x}; {_controller_state(dut)})"
            )


def _accept_vitis_lock_width() -> None:
    """Vitis HLS exports AxLOCK 2 bits wide (AXI3 style); AXI4 has 1 and cocotbext-axi
    checks it. The RAM ignores the lock, so let the slave channels take either width."""
    from cocotbext.axi import axi_channels

    for sink, name in ((axi_channels.AxiAWSink, "awlock"), (axi_channels.AxiARSink, "arlock")):
        sink._signal_widths = {k: v for k, v in sink._signal_widths.items() if k != name}


@cocotb.test()
async def run_program(dut):
    from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

    _accept_vitis_lock_width()

    inputs = load_inputs()
    program = inputs["program"].tobytes()
    input_rows = inputs["input_rows"].tobytes()  # the input region of the arena
    input_offset = int(inputs["input_offset"])
    program_addr, arena_addr = int(inputs["program_addr"]), int(inputs["arena_addr"])
    tasks = [int(t) for t in inputs["tasks"]]
    out_offset, out_bytes = inputs["out_offset"], inputs["out_bytes"]
    ddr = str(inputs["ddr"])
    bus_bytes = int(inputs["bus_bytes"])
    limit = int(inputs["max_cycles"])

    clk = dut.ap_clk
    Clock(clk, CLOCK_NS, unit="ns").start()
    dut.ap_rst_n.value = 0
    axil = AxiLiteMaster(
        AxiLiteBus.from_prefix(dut, "s_axi_control"), clk, dut.ap_rst_n, reset_active_level=False
    )
    if ddr == "axiram":
        ram = AxiRam(
            AxiBus.from_prefix(dut, "m_axi_gmem0"),
            clk,
            dut.ap_rst_n,
            reset_active_level=False,
            size=2**40,
        )
        ram1 = AxiRam(
            AxiBus.from_prefix(dut, "m_axi_gmem1"),
            clk,
            dut.ap_rst_n,
            reset_active_level=False,
            mem=ram.mem,
        )
        busy = 1.0 - min(1.0, float(inputs["ddr_bytes_per_cycle"]) / (2 * bus_bytes))
        for port in (ram, ram1):
            gen = _pause_generator(busy)
            if gen is not None:
                port.read_if.r_channel.set_pause_generator(gen)
                port.write_if.w_channel.set_pause_generator(_pause_generator(busy))
        write_mem, read_mem = ram.write, ram.read
    else:
        mem = DdrModel(dut, bus_bytes, int(inputs["ddr_base"]))
        write_mem, read_mem = mem.write, mem.read
        dut.ddr_latency.value = int(inputs["ddr_latency"])
        num, den = inputs["ddr_bandwidth"]  # bytes per cycle = num / den
        dut.ddr_bw_num.value = int(num)
        dut.ddr_bw_den.value = int(den)
        dut.ddr_load.value = 0
        dut.ddr_dump.value = 0

    write_mem(program_addr, program)
    await ClockCycles(clk, 8)
    dut.ap_rst_n.value = 1
    await ClockCycles(clk, 4)

    from codesign.program import Program

    weight_ports = Program.from_bytes(program).weight_ports
    regs = register_map(weight_ports)
    await axil.write(regs.offset("program"), program_addr.to_bytes(8, "little"))
    for name in weight_registers(weight_ports):  # each further weight master reads program.bin
        await axil.write(regs.offset(name), program_addr.to_bytes(8, "little"))
    await axil.write(regs.offset("arena"), arena_addr.to_bytes(8, "little"))
    results: dict[str, np.ndarray] = {}
    for index, task in enumerate(tasks):
        write_mem(arena_addr + input_offset, input_rows)  # layers may reuse the input's space
        await axil.write(regs.offset("task"), task.to_bytes(4, "little"))
        started = time.perf_counter()
        await axil.write(CTRL, AP_START.to_bytes(4, "little"))
        waited = await _wait_done(dut, axil, clk, int(inputs["poll"]), limit)
        wall = time.perf_counter() - started

        async def reg(offset: int) -> int:
            return int.from_bytes(await axil.read(offset, 4), "little")

        status = await reg(STATUS)
        cycles = await reg(CYCLES_LO) | (await reg(CYCLES_HI) << 32)
        layers = []
        if cycles:  # the RTL top's debug registers (a Vitis export reads 0 there)
            for layer in range(int(inputs["n_layers"])):
                await axil.write(PERF_SEL, layer.to_bytes(4, "little"))
                layers.append(await reg(PERF_CYCLES))
        else:
            cycles = waited
        out = read_mem(arena_addr + int(out_offset[index]), int(out_bytes[index]))
        results[f"out{index}"] = np.frombuffer(bytes(out), np.uint8)
        results[f"status{index}"] = np.array(status)
        results[f"cycles{index}"] = np.array(cycles)
        results[f"layers{index}"] = np.array(layers, np.int64)
        results[f"wall{index}"] = np.array(wall)
    save_outputs(**results)
