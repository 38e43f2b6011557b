"""cocotb side of test_ucu.py: runs a batch of LINEAR operations through one cds_ucu model.

The pytest side sends, per operation, its configuration and the beats of every stream
(x rows, weight beats exactly as stored in the Program, CSR words, biases, side lanes);
this module drives them with the requested stall / backpressure probabilities, pulses
``start`` and collects the output beats and the cycle count of the compute phase.
"""

from __future__ import annotations

import json

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge
from common import Bench, load_inputs, pack_lanes, save_outputs, unpack_lanes


def _span(arr, span):
    start, count = span
    return arr[start : start + count]


@cocotb.test()
async def ops(dut):
    """Every operation of the batch, one after the other, through the same model."""
    data = load_inputs()
    shape = json.loads(str(data["shape"]))
    batch = json.loads(str(data["ops"]))
    ti, to, x_bits = shape["ti"], shape["to"], shape["x_bits"]
    side_bits, macc_bits = shape["side_bits"], shape["macc_bits"]
    bench = Bench(dut, seed=int(shape.get("seed", 1)))
    streams = {
        "x": bench.source("x", ["x_data"]),
        "w": bench.source("w", ["w_data"]),
        "ptr": bench.source("ptr", ["ptr_data"]),
        "col": bench.source("col", ["col_data"]),
        "b": bench.source("b", ["b_data"]),
        "s": bench.source("s", ["s_data", "s_score"]),
    }
    y = bench.sink("y", ["y_data"])
    dut.start.value = 0
    await bench.start()

    outputs, cycles, load_cycles = [], [], []
    for op in batch:
        for src in streams.values():
            src.stall = op["stall"]
        y.backpressure = op["backpressure"]
        cfg = op["cfg"]
        for name, value in cfg.items():
            getattr(dut, f"cfg_{name}").value = int(value)
        x = _span(data["x"], op["x"])
        streams["x"].extend(pack_lanes(row, x_bits) for row in x)
        w = _span(data["w"], op["w"])
        streams["w"].extend(int.from_bytes(row.tobytes(), "little") for row in w)
        streams["ptr"].extend(int(v) for v in _span(data["ptr"], op["ptr"]))
        streams["col"].extend(int(v) for v in _span(data["col"], op["col"]))
        streams["b"].extend(pack_lanes(row, 32) for row in _span(data["b"], op["b"]))
        side = _span(data["s"], op["s"])
        score = _span(data["score"], op["s"])
        streams["s"].extend(
            (pack_lanes(row, side_bits), int(sc)) for row, sc in zip(side, score, strict=True)
        )
        expected = op["y_beats"]
        before = len(y.beats)

        await RisingEdge(dut.clk)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        start_cycle = bench.cycle
        await bench.wait_for(lambda: streams["x"].idle, timeout=100_000)
        wanted = before + expected
        await bench.wait_for(lambda n=wanted: len(y.beats) >= n, timeout=2_000_000)
        # the compute phase starts the cycle after the last x beat
        run_start = streams["x"].last_cycle + 1
        cycles.append(y.cycles[-1] - run_start + 1)
        load_cycles.append(run_start - start_cycle)
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert int(dut.busy.value) == 0, "cds_ucu still busy after its last output beat"
        leftovers = [n for n, s in streams.items() if not s.idle]
        assert not leftovers, f"streams not fully consumed: {leftovers}"
        for beat in y.beats[before:]:
            outputs.append(unpack_lanes(beat[0], to, macc_bits))
        await RisingEdge(dut.clk)

    save_outputs(
        y=np.array(outputs, dtype=np.int64).reshape(-1, to),
        cycles=np.array(cycles, dtype=np.int64),
        load_cycles=np.array(load_cycles, dtype=np.int64),
        ti=ti,
    )
