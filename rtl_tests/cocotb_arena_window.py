"""cocotb side of test_arena_window.py: cds_arena_window between the word ports and DDR.

``window_random`` (toplevel ``cds_arena_window_tb``): the writes, then y rows beside more
writes (with a y port), then the reads on rd and the x port at once, under random AXI
stalls and read backpressure; then one window read without stalls for its rate. The raw
results (read beats, x rows, the AxiRam after the writes, the DDR address-channel log) go
back to the pytest side and its numpy model.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from common import Bench, axi_pauses, load_inputs, queue_word_writes, save_outputs, unpack_lanes


@cocotb.test()
async def window_random(dut):
    from cocotbext.axi import AxiBus, AxiRam

    data = load_inputs()
    seed, wpb, banks = int(data["seed"]), int(data["wpb"]), int(data["banks"])
    rng = random.Random(seed)
    memory = data["memory"].astype(np.uint8)
    dut.base_lo.value = int(data["base"])
    dut.window.value = int(data["window"])
    ram = AxiRam(
        AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst_n, reset_active_level=False,
        size=memory.size,
    )  # fmt: skip
    ram.write(0, memory.tobytes())
    bench = Bench(dut, seed=seed)
    rd_cmd = bench.source("rd_cmd", ["rd_cmd_addr", "rd_cmd_words"])
    rd = bench.sink("rd", ["rd_data", "rd_last"])
    wr_cmd = bench.source("wr_cmd", ["wr_cmd_addr", "wr_cmd_words"])
    wr = bench.source("wr", ["wr_data"])
    x_cmd = x = None
    if banks > 1:
        x_cmd = bench.source("x_cmd", ["x_cmd_addr", "x_cmd_words"])
        x = bench.sink("x", ["x_data", "x_last"])
    log = {"ar": [], "aw": []}

    def watch(_cycle: int) -> None:
        if int(dut.m_axi_ARVALID.value) and int(dut.m_axi_ARREADY.value):
            log["ar"].append((int(dut.m_axi_ARADDR.value), int(dut.m_axi_ARLEN.value)))
        if int(dut.m_axi_AWVALID.value) and int(dut.m_axi_AWREADY.value):
            log["aw"].append((int(dut.m_axi_AWADDR.value), int(dut.m_axi_AWLEN.value)))

    bench.watch(watch)
    await bench.start()
    stall = float(data["stall"])
    channels = (ram.read_if.ar_channel, ram.read_if.r_channel, ram.write_if.aw_channel,
                ram.write_if.w_channel, ram.write_if.b_channel)  # fmt: skip
    for channel in channels:
        channel.set_pause_generator(axi_pauses(rng, stall))
    rd.backpressure = float(data["backpressure"])
    rd_cmd.stall = wr_cmd.stall = wr.stall = stall
    if x is not None:
        x.backpressure = float(data["backpressure"])
        x_cmd.stall = stall

    # the writes, both sides in one stream of commands
    queue_word_writes(wr_cmd, wr, data["writes"], data["write_words"], wpb)
    await bench.wait_for(lambda: wr.idle and wr_cmd.idle, timeout=2_000_000)
    await bench.cycles(2)
    await bench.wait_for(lambda: int(dut.wr_idle.value) == 1, timeout=200_000)

    # y rows into the window's lower half beside wr's writes to its upper half and DDR
    if int(data["y_words"]):
        y = bench.source("y", ["y_addr", "y_words", "y_data"])
        y.stall = stall
        wide = int(data["y_words"])
        y.extend(
            (int(a), int(w), sum(int(v) << (32 * i) for i, v in enumerate(row[:wide])))
            for (a, w), row in zip(data["y_writes"], data["y_data"], strict=True)
        )
        queue_word_writes(wr_cmd, wr, data["later"], data["later_words"], wpb)
        await bench.wait_for(
            lambda: wr.idle and wr_cmd.idle and y.idle and int(dut.y_idle.value) == 1,
            timeout=2_000_000,
        )
        await bench.cycles(2)
        await bench.wait_for(lambda: int(dut.wr_idle.value) == 1, timeout=200_000)
    final = np.frombuffer(ram.read(0, memory.size), np.uint8).copy()

    # the reads: rd and the x port at once
    reads, x_reads = data["reads"], data["x_reads"]
    rd_cmd.extend((int(a), int(w)) for a, w in reads)
    rd_beats = int(sum(-(-int(w) // wpb) for _a, w in reads))
    x_rows = int(sum(-(-int(w) // (wpb * banks)) for _a, w in x_reads))
    if x_cmd is not None:
        x_cmd.extend((int(a), int(w)) for a, w in x_reads)
    await bench.wait_for(
        lambda: len(rd.beats) >= rd_beats and (x is None or len(x.beats) >= x_rows),
        timeout=2_000_000,
    )
    beats = list(rd.beats)
    rows = list(x.beats) if x is not None else []

    # rate: one long window read, no stalls
    for channel in channels:
        channel.set_pause_generator(None)
        channel.pause = False
    rd.backpressure = 0.0
    rd_cmd.stall = 0.0
    stream = []
    for stream_beats in (64, 256):  # the difference is the rate, not the latency
        before = len(rd.beats)
        began = bench.cycle
        rd_cmd.append((0, stream_beats * wpb))
        want = before + stream_beats
        await bench.wait_for(lambda want=want: len(rd.beats) >= want, timeout=100_000)
        stream += [stream_beats, rd.last_cycle - began + 1]
        await bench.cycles(4)
    save_outputs(
        rd_words=np.array(
            [unpack_lanes(d, wpb, 32, signed=False) for d, _last in beats], dtype=np.uint64
        ),
        rd_last=np.array([last for _d, last in beats], dtype=np.uint8),
        x_words=np.array(
            [unpack_lanes(d, wpb * banks, 32, signed=False) for d, _l in rows], dtype=np.uint64
        ).reshape(len(rows), wpb * banks),
        x_last=np.array([last for _d, last in rows], dtype=np.uint8),
        final=final,
        ar=np.array(log["ar"], dtype=np.uint64).reshape(-1, 2),
        aw=np.array(log["aw"], dtype=np.uint64).reshape(-1, 2),
        errors=int(dut.rd_error.value) + int(dut.wr_error.value),
        stream=np.array(stream, dtype=np.int64),
    )
