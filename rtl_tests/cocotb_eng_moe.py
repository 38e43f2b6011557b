"""cocotb side of test_eng_moe.py: cds_eng_moe + cds_ucu_job (cds_eng_moe_tb) per case.

Per case the program bytes are served on ``rd0`` and the arena (junk plus the case's
tensors) on ``rd1``/``wr1`` by the :mod:`wordmem` models. The gate layer runs first
(``is_experts = 0``) unless the case brings its own queue, then the experts layer; the
arena is saved after each, with the busy cycles of each layer. Random read stalls, read
latency and write backpressure, except on ``timed`` cases (ideal ports, for the cycle
table).
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from common import Bench, load_inputs, save_outputs
from wordmem import WordMemory, WordReadPort, WordWritePort


def _desc_value(words) -> int:
    value = 0
    for index, word in enumerate(words):
        value |= (int(word) & 0xFFFFFFFF) << (32 * index)
    return value


@cocotb.test()
async def moe_cases(dut):
    data = load_inputs()
    wpb = int(data["wpb"])
    gate_desc, experts_desc = data["gate_desc"], data["experts_desc"]
    run_gate, timed = data["run_gate"], data["timed"]
    a_off, arena_flat = data["arena_offset"], data["arena"]
    p_off, program_flat = data["program_offset"], data["program"]
    stall, backpressure = float(data["stall"]), float(data["backpressure"])
    rng = np.random.default_rng(int(data["seed"]))

    bench = Bench(dut, seed=int(data["seed"]))
    dut.start.value = 0
    dut.is_experts.value = 0
    dut.desc.value = 0
    placeholder = WordMemory(np.zeros(1, np.uint32))
    rd0 = WordReadPort(bench, "rd0", placeholder, wpb)
    rd1 = WordReadPort(bench, "rd1", placeholder, wpb)
    wr1 = WordWritePort(bench, "wr1", placeholder, wpb)
    bench.sources += [rd0, rd1, wr1]
    state = {"busy": 0, "done": False, "phases": None}

    def watch(_cycle: int) -> None:
        if int(dut.busy.value):
            state["busy"] += 1
            if state["phases"] is not None:  # cycles per engine state (timed cases)
                state["phases"][int(dut.u_eng.state.value)] += 1
        if int(dut.done.value):
            state["done"] = True

    bench.watch(watch)
    await bench.start()

    async def run_layer(desc, is_experts: int) -> int:
        dut.desc.value = _desc_value(desc)
        dut.is_experts.value = is_experts
        state["busy"], state["done"] = 0, False
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        try:
            await bench.wait_for(lambda: state["done"], timeout=400_000)
        except TimeoutError:
            eng = dut.u_eng
            raise AssertionError(
                f"no done: engine state {int(eng.state.value)}, "
                f"job busy {int(eng.ucu_busy.value)}, rd0 commands {rd0.log[-3:]}, "
                f"rd1 commands {rd1.log[-3:]}, wr1 commands {wr1.log[-3:]}"
            ) from None
        await bench.wait_for(lambda: wr1.idle and rd1.idle and rd0.idle, timeout=10_000)
        if int(dut.busy.value):
            raise AssertionError("busy after done")
        return state["busy"]

    gate_arenas, arenas, gate_cycles, experts_cycles, phases = [], [], [], [], []
    for case in range(len(timed)):
        program = WordMemory(program_flat[p_off[case] : p_off[case + 1]].astype(np.uint32))
        arena = WordMemory(arena_flat[a_off[case] : a_off[case + 1]].astype(np.uint32))
        quiet = bool(timed[case])
        rd0.memory = program
        rd1.memory = wr1.memory = arena
        for port in (rd0, rd1):
            port.stall = 0.0 if quiet else stall
            port.latency = 2 if quiet else int(rng.integers(1, 12))
        wr1.backpressure = 0.0 if quiet else backpressure
        cycles = 0
        state["phases"] = np.zeros(32, np.int64) if quiet else None
        if run_gate[case]:
            cycles = await run_layer(gate_desc[case], 0)
        gate_cycles.append(cycles)
        gate_arenas.append(arena.int32().copy())
        experts_cycles.append(await run_layer(experts_desc[case], 1))
        arenas.append(arena.int32().copy())
        phases.append(state["phases"] if quiet else np.zeros(32, np.int64))

    save_outputs(
        gate_arena=np.concatenate(gate_arenas).astype(np.int64),
        arena=np.concatenate(arenas).astype(np.int64),
        gate_cycles=np.array(gate_cycles, dtype=np.int64),
        experts_cycles=np.array(experts_cycles, dtype=np.int64),
        phases=np.stack(phases),
    )
