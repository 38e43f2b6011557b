"""cocotb side of test_ucu_job.py: LINEAR jobs through cds_ucu_job.

The pytest side sends, per job, the program buffer, the initial arena, the job signals,
the gather table and the side beats, and the DMA knobs (stall, latency, backpressure).
This module serves rd0 / rd1 / wr1 with the word-port models of wordmem.py, models the
gather table as a synchronous RAM, pulses ``start``, waits for ``done`` and hands back the
final arena, the ``ys`` beats, the (tile, row) of every side beat and the cycles from start
to done.
"""

from __future__ import annotations

import json

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge
from common import Bench, _read, load_inputs, pack_lanes, save_outputs, unpack_lanes
from wordmem import WordMemory, WordReadPort, WordWritePort


def _span(arr, span):
    start, count = span
    return arr[start : start + count]


class GatherRam:
    """gidx_data <= table[gidx_addr] every clock: a synchronous RAM read, no enable."""

    def __init__(self, dut):
        self._addr, self._data = dut.gidx_addr, dut.gidx_data
        self.table: list[int] = []
        self._next = 0
        self._data.value = 0

    def _drive(self, rng) -> None:
        pass

    def _sample(self, cycle: int) -> None:
        addr = _read(self._addr)
        self._next = self.table[addr] if addr < len(self.table) else 0xDEADBEEF

    def _after_edge(self) -> None:
        self._data.value = self._next


@cocotb.test()
async def jobs(dut):
    """Every job of the batch, one after the other, through the same model."""
    data = load_inputs()
    shape = json.loads(str(data["shape"]))
    batch = json.loads(str(data["jobs"]))
    wpb, to, side_bits = shape["wpb"], shape["to"], shape["side_bits"]
    bench = Bench(dut, seed=int(shape.get("seed", 1)))
    empty = WordMemory(np.zeros(1, np.uint32))
    rd0 = WordReadPort(bench, "rd0", empty, wpb)
    rd1 = WordReadPort(bench, "rd1", empty, wpb)
    wr1 = WordWritePort(bench, "wr1", empty, wpb)
    bench.sources += [rd0, rd1, wr1]
    gather = GatherRam(dut)
    bench.sources.append(gather)
    ss = bench.source("ss", ["ss_acc", "ss_score"])
    ys = bench.sink("ys", ["ys_data", "ys_tile", "ys_row"])
    done_cycles: list[int] = []
    side_log: list[tuple[int, int]] = []

    def watch(cycle: int) -> None:
        if _read(dut.done):
            done_cycles.append(cycle)
        if _read(dut.ss_valid) and _read(dut.ss_ready):
            side_log.append((_read(dut.ss_tile), _read(dut.ss_row)))

    bench.watch(watch)
    dut.start.value = 0
    await bench.start()

    arenas, cycles, ys_out, ss_out = [], [], [], []
    for job in batch:
        program = WordMemory(_span(data["program"], job["program"]).astype(np.uint32))
        arena = WordMemory(_span(data["arena"], job["arena"]).astype(np.uint32))
        rd0.memory, rd1.memory, wr1.memory = program, arena, arena
        rd0.stall = rd1.stall = job["stall"]
        rd0.latency = rd1.latency = job["latency"]
        wr1.backpressure = job["backpressure"]
        for name, value in job["signals"].items():
            getattr(dut, f"job_{name}").value = int(value)
        gather.table = [int(v) for v in _span(data["gidx"], job["gidx"])]
        acc = _span(data["ss_acc"], job["ss"])
        score = _span(data["ss_score"], job["ss"])
        ss.stall = job["stall"]
        ss.extend((pack_lanes(row, side_bits), int(sc)) for row, sc in zip(acc, score, strict=True))
        ys.backpressure = job["backpressure"]
        ys_before, side_before = len(ys.beats), len(side_log)
        before = len(done_cycles)

        await RisingEdge(dut.clk)
        dut.start.value = 1
        start_cycle = bench.cycle
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await bench.wait_for(lambda n=before: len(done_cycles) > n, timeout=400_000)
        cycles.append(done_cycles[before] - start_cycle)
        # the data is sent; let the write port land it, then nothing may be left over
        await bench.wait_for(lambda: wr1.idle, timeout=10_000)
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert int(dut.busy.value) == 0, "still busy after done"
        assert len(done_cycles) == before + 1, "done pulsed more than once"
        for port in (rd0, rd1):
            assert port.idle, f"{port.name}: commands or data left over after done"
        assert ss.idle, "side beats left over after done"
        for beat in ys.beats[ys_before:]:
            ys_out.append([beat[1], beat[2], *unpack_lanes(beat[0], to, shape["macc_bits"])])
        ss_out.extend(side_log[side_before:])
        arenas.append(arena.words.copy())
        await RisingEdge(dut.clk)

    width = max([len(a) for a in arenas] + [1])
    save_outputs(
        arena=np.concatenate(arenas).astype(np.uint32) if arenas else np.zeros(0, np.uint32),
        arena_width=np.int64(width),
        cycles=np.array(cycles, dtype=np.int64),
        ys=np.array(ys_out, dtype=np.int64).reshape(-1, 2 + to),
        side=np.array(ss_out, dtype=np.int64).reshape(-1, 2),
    )
