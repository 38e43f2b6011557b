"""cocotb side of test_layernorm.py: runs layernorm_core over the cases the pytest side made.

Per case: configuration, ``start``, ceil(dim/LANES) gamma/beta beats on ``prm``, the rows
on ``x`` (ceil(dim/LANES) beats each, the last one zero-padded), and the normalised rows
collected from ``y``. Random stalls and backpressure on every stream except on ``timed``
cases, which measure the schedule with ideal streams. Busy cycles are counted per case.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from common import Bench, load_inputs, pack_lanes, save_outputs

CFG_PORTS = (
    "cfg_rows",
    "cfg_dim",
    "cfg_x_fmt",
    "cfg_g_fmt",
    "cfg_b_fmt",
    "cfg_stat_shift",
    "cfg_eps_lo",
    "cfg_eps_hi",
    "cfg_norm_fmt",
    "cfg_out_fmt",
)


def beats_of(values, lanes: int, width: int) -> list[int]:
    """One row (or parameter vector) as LANES-wide beats, the last one zero-padded."""
    values = list(int(v) for v in values)
    values += [0] * (-len(values) % lanes)
    return [pack_lanes(values[i : i + lanes], width) for i in range(0, len(values), lanes)]


@cocotb.test()
async def layernorm_cases(dut):
    data = load_inputs()
    lanes, width, param_width = int(data["lanes"]), int(data["width"]), int(data["param_width"])
    cfg, timed = data["cfg"], data["timed"]
    x_flat, x_offset = data["x"], data["x_offset"]
    gamma_flat, beta_flat, param_offset = data["gamma"], data["beta"], data["param_offset"]
    stall, backpressure = float(data["stall"]), float(data["backpressure"])

    bench = Bench(dut, seed=int(data["seed"]))
    dut.start.value = 0
    for port in CFG_PORTS:
        getattr(dut, port).value = 0
    prm = bench.source("prm", ["prm_gamma", "prm_beta"])
    x_src = bench.source("x", ["x_data"])
    y_snk = bench.sink("y", ["y_data"])
    state = {"busy": 0, "done": False}

    def watch(_cycle: int) -> None:
        state["busy"] += int(dut.busy.value)
        state["done"] = state["done"] or bool(int(dut.done.value))

    bench.watch(watch)
    await bench.start()

    cycles = []
    for case in range(len(cfg)):
        rows, dim = int(cfg[case, 0]), int(cfg[case, 1])
        x = x_flat[x_offset[case] : x_offset[case + 1]].reshape(rows, dim)
        gamma = gamma_flat[param_offset[case] : param_offset[case + 1]]
        beta = beta_flat[param_offset[case] : param_offset[case + 1]]
        prm.extend(
            zip(
                beats_of(gamma, lanes, param_width), beats_of(beta, lanes, param_width), strict=True
            )
        )
        for row in x:
            x_src.extend(beats_of(row, lanes, width))
        quiet = bool(timed[case])
        for port in (prm, x_src):
            port.stall = 0.0 if quiet else stall
        y_snk.backpressure = 0.0 if quiet else backpressure
        for port, value in zip(CFG_PORTS, cfg[case], strict=True):
            getattr(dut, port).value = int(value) & 0xFFFFFFFF
        state["busy"], state["done"] = 0, False
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        beats = rows * -(-dim // lanes)
        await bench.wait_for(lambda: state["done"], timeout=50 * beats + 2000)
        if prm.queue or x_src.queue:
            raise AssertionError(f"case {case}: done with input beats left unconsumed")
        cycles.append(state["busy"])

    mask = (1 << width) - 1
    y = np.array(
        [[(word >> (c * width)) & mask for c in range(lanes)] for (word,) in y_snk.beats],
        dtype=np.int64,
    ).reshape(-1, lanes)
    save_outputs(y=y, cycles=np.array(cycles, dtype=np.int64))
