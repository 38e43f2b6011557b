"""cocotb side of test_eng_attention.py: runs cds_eng_attention on one arena per case.

Per case the arena (int32 words with the qkv rows placed and junk everywhere else) is
served to the engine's ``rd1``/``wr1`` word ports (and, where the engine has one, the
window's x port ``xw``, with the case's ``window_bytes``) by the :mod:`wordmem` models, the
descriptor words go on ``desc``, ``start`` is pulsed and the run ends at ``done``. The
whole arena comes back for the bit-exact comparison (so writes outside the output
slices would show), with the cycles from ``start`` to ``done`` and the words read and
written. Random read stalls, read latency and write backpressure, except on cases
marked ``timed`` (those measure the schedule with ideal ports).
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from common import Bench, load_inputs, save_outputs
from wordmem import WordMemory, WordReadPort, WordRowPort, WordWritePort


@cocotb.test()
async def engine_cases(dut):
    data = load_inputs()
    wpb = int(data["wpb"])
    descs, timed = data["desc"], data["timed"]
    offsets, flat = data["arena_offset"], data["arena"]
    stall, backpressure = float(data["stall"]), float(data["backpressure"])
    rng = np.random.default_rng(int(data["seed"]))

    bench = Bench(dut, seed=int(data["seed"]))
    dut.start.value = 0
    dut.desc.value = 0
    placeholder = WordMemory(np.zeros(1, np.uint32))
    rd1 = WordReadPort(bench, "rd1", placeholder, wpb)
    wr1 = WordWritePort(bench, "wr1", placeholder, wpb)
    bench.sources += [rd1, wr1]
    xw = None
    if hasattr(dut, "xw_cmd_valid"):
        xw = WordRowPort(bench, "xw", placeholder, int(data["row_words"]))
        bench.sources.append(xw)
    state = {"busy": 0, "done": False}

    def watch(_cycle: int) -> None:
        if int(dut.busy.value):
            state["busy"] += 1
        if int(dut.done.value):
            state["done"] = True

    bench.watch(watch)
    await bench.start()

    arenas, cycles, reads, writes, commands, x_commands = [], [], [], [], [], []
    for case in range(len(descs)):
        memory = WordMemory(flat[offsets[case] : offsets[case + 1]].astype(np.uint32))
        quiet = bool(timed[case])
        rd1.memory = wr1.memory = memory
        rd1.stall = 0.0 if quiet else stall
        rd1.latency = 2 if quiet else int(rng.integers(1, 12))
        wr1.backpressure = 0.0 if quiet else backpressure
        rd1.log.clear()
        if xw is not None:
            xw.memory = memory
            xw.stall = 0.0 if quiet else stall
            xw.latency = 3 if quiet else int(rng.integers(1, 6))
            xw.log.clear()
            dut.window_bytes.value = int(data["window_bytes"][case])
        desc = 0
        for index, word in enumerate(descs[case]):
            desc |= (int(word) & 0xFFFFFFFF) << (32 * index)
        dut.desc.value = desc
        state["busy"], state["done"] = 0, False
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await bench.wait_for(lambda: state["done"], timeout=2_000_000)
        await bench.wait_for(
            lambda: wr1.idle and rd1.idle and (xw is None or xw.idle), timeout=10_000
        )
        if int(dut.busy.value):
            raise AssertionError(f"case {case}: busy after done")
        cycles.append(state["busy"])
        reads.append(memory.reads)
        writes.append(memory.writes)
        commands.append(len(rd1.log))
        x_commands.append(len(xw.log) if xw is not None else 0)
        arenas.append(memory.int32().copy())

    save_outputs(
        arena=np.concatenate(arenas).astype(np.int64),
        cycles=np.array(cycles, dtype=np.int64),
        reads=np.array(reads, dtype=np.int64),
        writes=np.array(writes, dtype=np.int64),
        read_commands=np.array(commands, dtype=np.int64),
        x_commands=np.array(x_commands, dtype=np.int64),
    )
