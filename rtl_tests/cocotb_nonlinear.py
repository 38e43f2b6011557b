"""cocotb side of test_nonlinear.py: streams the cases the pytest side prepared."""

from __future__ import annotations

import cocotb
from common import drive_lanes, load_inputs, save_outputs


@cocotb.test()
async def lanes(dut):
    """Every beat in, every beat out, under random stalls and backpressure."""
    save_outputs(**await drive_lanes(dut, load_inputs()))


@cocotb.test()
async def requant(dut):
    """cds_requant without a handshake: a case per cycle in, its result STAGES - 1 edges
    later."""
    import numpy as np
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

    data = load_inputs()
    xs, shifts, fmts = data["x"], data["shift"], data["fmt"]
    in_w = int(data["in_w"])
    behind = int(data["stages"]) - 1
    Clock(dut.clk, 4, unit="ns").start()
    dut.en.value = 1
    got = []
    for i in range(len(xs) + behind):
        if i < len(xs):
            dut.x.value = int(xs[i]) & ((1 << in_w) - 1)
            dut.shift.value = int(shifts[i]) & 0xFF
            dut.fmt.value = int(fmts[i])
        await RisingEdge(dut.clk)  # the first stage takes case i, y takes case i - behind
        await ReadOnly()
        if i >= behind:
            got.append(dut.y.value.to_signed())
        await FallingEdge(dut.clk)
    save_outputs(y=np.array(got, dtype=np.int64))
