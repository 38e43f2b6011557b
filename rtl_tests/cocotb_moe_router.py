"""cocotb side of test_moe_router.py: runs moe_router_core over the cases the pytest side made.

Per case: configuration, ``start``, tokens x experts logit beats on ``lg``; the queue
appends come back on ``qa`` and the queue lengths in one ``qc`` beat. Random stalls and
backpressure on every stream except on ``timed`` cases. Busy cycles are counted per case.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from common import Bench, load_inputs, save_outputs, to_signed

CFG_PORTS = ("cfg_tokens", "cfg_experts", "cfg_top_k", "cfg_logit_fmt", "cfg_score_fmt")


@cocotb.test()
async def router_cases(dut):
    data = load_inputs()
    cfg, timed = data["cfg"], data["timed"]
    logits, offsets = data["logits"], data["logit_offset"]
    width = int(data["width"])
    stall, backpressure = float(data["stall"]), float(data["backpressure"])

    bench = Bench(dut, seed=int(data["seed"]))
    dut.start.value = 0
    for port in CFG_PORTS:
        getattr(dut, port).value = 0
    lg = bench.source("lg", ["lg_data"])
    qa = bench.sink("qa", ["qa_expert", "qa_slot", "qa_token", "qa_score"])
    qc = bench.sink("qc", ["qc_counts"])
    state = {"busy": 0, "done": False}

    def watch(_cycle: int) -> None:
        state["busy"] += int(dut.busy.value)
        state["done"] = state["done"] or bool(int(dut.done.value))

    bench.watch(watch)
    await bench.start()

    score_bits = len(dut.qa_score)
    appends, append_case, cycles = [], [], []
    for case in range(len(cfg)):
        values = logits[offsets[case] : offsets[case + 1]]
        lg.extend(int(v) & ((1 << width) - 1) for v in values)
        quiet = bool(timed[case])
        lg.stall = 0.0 if quiet else stall
        qa.backpressure = qc.backpressure = 0.0 if quiet else backpressure
        for port, value in zip(CFG_PORTS, cfg[case], strict=True):
            getattr(dut, port).value = int(value) & 0xFFFFFFFF
        state["busy"], state["done"] = 0, False
        before = len(qa.beats)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await bench.wait_for(lambda: state["done"], timeout=50 * len(values) + 2000)
        if lg.queue:
            raise AssertionError(f"case {case}: done with {len(lg.queue)} logits unconsumed")
        for expert, slot, token, score in qa.beats[before:]:
            appends.append((expert, slot, token, to_signed(score, score_bits)))
            append_case.append(case)
        cycles.append(state["busy"])

    save_outputs(
        appends=np.array(appends, dtype=np.int64).reshape(-1, 4),
        append_case=np.array(append_case, dtype=np.int64),
        counts=np.array([str(c) for (c,) in qc.beats]),
        cycles=np.array(cycles, dtype=np.int64),
    )
