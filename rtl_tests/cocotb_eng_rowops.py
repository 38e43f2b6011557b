"""cocotb side of test_eng_rowops.py: runs cds_eng_layernorm / cds_eng_eltwise on whole layers.

Per case the engine gets a descriptor (words 2..47 of a one-layer Program's layer), the
Program bytes behind ``rd0`` and an arena behind ``rd1`` / ``wr1`` (rtl_tests/wordmem.py
models with random stalls, latency and backpressure, none on ``timed`` cases); ``start``
pulses, the bench waits for ``done`` and then for the write port to drain, and hands the
whole arena back with the busy cycles. ``op_sel`` (0 ADD, 1 EMBED, 2 POOL) is driven when
the engine has it, and changed right after ``start`` (the engine samples it there).
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from common import Bench, load_inputs, save_outputs
from wordmem import WordMemory, WordReadPort, WordWritePort


def _snapshot(dut, *ports) -> str:
    """Port queues and the engine's top-level state, for a hang report."""
    parts = [f"{p.name}: {len(p.commands)} queued, log {p.log[-6:]}" for p in ports]
    for name in ("running", "p_cmds", "r_cmds", "w_cmds", "w_rows", "core_fin", "o_row",
                 "g1_row", "g0_row", "gx_n", "gy_n", "gp_n", "p_row"):  # fmt: skip
        if hasattr(dut, name):
            parts.append(f"{name}={int(getattr(dut, name).value)}")
    return "; ".join(parts)


@cocotb.test()
async def engine_cases(dut):
    data = load_inputs()
    wpb = int(data["wpb"])
    descs, ops, timed = data["desc"], data["op"], data["timed"]
    program_flat, program_at = data["program"], data["program_at"]
    arena_flat, arena_at = data["arena"], data["arena_at"]
    stall, backpressure = float(data["stall"]), float(data["backpressure"])
    latency = int(data["latency"])

    bench = Bench(dut, seed=int(data["seed"]))
    dut.start.value = 0
    dut.desc.value = 0
    has_op = hasattr(dut, "op_sel")
    if has_op:
        dut.op_sel.value = 0
    empty = WordMemory(np.zeros(4, np.uint32))
    rd0 = WordReadPort(bench, "rd0", empty, wpb)
    rd1 = WordReadPort(bench, "rd1", empty, wpb)
    wr1 = WordWritePort(bench, "wr1", empty, wpb)
    bench.sources += [rd0, rd1, wr1]
    state = {"busy": 0, "done": 0}

    def watch(_cycle: int) -> None:
        state["busy"] += int(dut.busy.value)
        state["done"] += int(dut.done.value)

    bench.watch(watch)
    await bench.start()

    arenas, cycles = [], []
    for case in range(len(descs)):
        program = WordMemory(program_flat[program_at[case] : program_at[case + 1]])
        arena = WordMemory(arena_flat[arena_at[case] : arena_at[case + 1]])
        quiet = bool(timed[case])
        rd0.memory, rd1.memory, wr1.memory = program, arena, arena
        rd0.stall = rd1.stall = 0.0 if quiet else stall
        rd0.latency = rd1.latency = 2 if quiet else latency
        wr1.backpressure = 0.0 if quiet else backpressure
        value = 0
        for index, word in enumerate(descs[case]):
            value |= (int(word) & 0xFFFFFFFF) << (32 * index)
        dut.desc.value = value
        if has_op:
            dut.op_sel.value = int(ops[case])
        state["busy"], state["done"] = 0, 0
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        if has_op:
            dut.op_sel.value = (int(ops[case]) + 1) % 3  # sampled at start only
        try:
            await bench.wait_for(lambda: state["done"] > 0, timeout=20_000)
        except TimeoutError:
            raise AssertionError(f"case {case}: no done; {_snapshot(dut, rd0, rd1, wr1)}") from None
        await bench.wait_for(lambda: wr1.idle and not int(dut.busy.value), timeout=1000)
        await bench.cycles(8)  # nothing may move after done
        if state["done"] != 1:
            raise AssertionError(f"case {case}: done pulsed {state['done']} times")
        if not (rd0.idle and rd1.idle and wr1.idle):
            raise AssertionError(f"case {case}: port traffic left after done")
        arenas.append(arena.words.copy())
        cycles.append(state["busy"])

    save_outputs(
        arena=np.concatenate(arenas).astype(np.uint32), cycles=np.array(cycles, dtype=np.int64)
    )
