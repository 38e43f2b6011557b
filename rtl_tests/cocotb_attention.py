"""cocotb side of test_attention.py: runs attention_core over the cases the pytest side made.

Per case it sets the configuration, pulses ``start``, queues every query beat (N per
head, pass 1 only) and every key/value beat (the rotated schedule streams keys 0, 1, .., N-1, 0, ..
for ceil(N/P)*N + r - 1 beats per pass) and collects the ``st`` (softmax statistics) and
``o`` (output rows) beats. Busy cycles per case are counted for the cycle-model check.
Random stalls on both inputs and backpressure on both outputs, except on cases marked
``timed`` (those measure the schedule with ideal streams).
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from common import Bench, load_inputs, pack_lanes, save_outputs, to_signed

CFG_PORTS = (
    "cfg_tokens",
    "cfg_heads",
    "cfg_parallel",
    "cfg_chunks",
    "cfg_qkv_fmt",
    "cfg_score_fmt",
    "cfg_sum_fmt",
    "cfg_prob_fmt",
    "cfg_out_fmt",
)


def stream_beats(tokens: int, slots: int) -> int:
    """Key beats of one pass: ceil(N/P) rounds of N keys, plus the last round's tail."""
    rounds = -(-tokens // slots)
    last = tokens - (rounds - 1) * slots
    return rounds * tokens + last - 1


@cocotb.test()
async def attention_cases(dut):
    data = load_inputs()
    lanes, width = int(data["lanes"]), int(data["width"])
    max_slots = int(data["slots"])
    cfg, timed = data["cfg"], data["timed"]
    head_dims, offsets, flat = data["head_dim"], data["qkv_offset"], data["qkv"]
    stall, backpressure = float(data["stall"]), float(data["backpressure"])
    rng = np.random.default_rng(int(data["seed"]))

    bench = Bench(dut, seed=int(data["seed"]))
    dut.start.value = 0
    for port in CFG_PORTS:
        getattr(dut, port).value = 0
    q_src = bench.source("q", ["q_data"])
    kv_src = bench.source("kv", ["k_data", "v_data"])
    st_snk = bench.sink("st", ["st_max", "st_sum", "st_mant", "st_expo"])
    o_snk = bench.sink("o", ["o_data"])
    busy = {"count": 0, "done": False}

    def watch(_cycle: int) -> None:
        if int(dut.busy.value):
            busy["count"] += 1
        if int(dut.done.value):
            busy["done"] = True

    bench.watch(watch)
    await bench.start()

    def chunked(row, chunks: int) -> list[int]:
        """A head row as `chunks` beats of `lanes` lanes (zero beyond head_dim)."""
        padded = list(row) + [0] * (chunks * lanes - len(row))
        return [pack_lanes(padded[c * lanes : (c + 1) * lanes], width) for c in range(chunks)]

    cycles = []
    for case in range(len(cfg)):
        tokens, heads, parallel, chunks = (int(v) for v in cfg[case, :4])
        head_dim = int(head_dims[case])
        dim = heads * head_dim
        qkv = flat[offsets[case] : offsets[case + 1]].reshape(tokens, 3 * dim)
        slots = max(1, min(parallel, max_slots, tokens))
        keys = stream_beats(tokens, slots)
        for head in range(heads):
            cols = slice(head * head_dim, (head + 1) * head_dim)
            q_rows = [chunked(qkv[i, cols], chunks) for i in range(tokens)]
            k_rows = [chunked(qkv[j, dim:][cols], chunks) for j in range(tokens)]
            v_rows = [chunked(qkv[j, 2 * dim :][cols], chunks) for j in range(tokens)]
            for row in q_rows:  # pass 1 only: pass 2 reads the scores back
                q_src.extend(row)
            for pass_index in range(2):
                for t in range(keys):
                    j = t % tokens
                    # pass 1 ignores v and pass 2 ignores k: send noise there to prove it
                    noise = rng.integers(-(1 << (width - 1)), 1 << (width - 1), head_dim)
                    junk = chunked(noise, chunks)
                    for c in range(chunks):
                        if pass_index == 0:
                            kv_src.append((k_rows[j][c], junk[c]))
                        else:
                            kv_src.append((junk[c], v_rows[j][c]))
        quiet = bool(timed[case])
        for port in (q_src, kv_src):
            port.stall = 0.0 if quiet else stall
        for port in (st_snk, o_snk):
            port.backpressure = 0.0 if quiet else backpressure
        for port, value in zip(CFG_PORTS, cfg[case], strict=True):
            getattr(dut, port).value = int(value) & 0xFFFFFFFF
        await RisingEdge(dut.clk)  # the configuration holds from the cycle before start
        busy["count"], busy["done"] = 0, False
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await bench.wait_for(lambda: busy["done"], timeout=200 * keys * heads * chunks + 2000)
        if q_src.queue or kv_src.queue:
            raise AssertionError(
                f"case {case}: done with {len(q_src.queue)} q / {len(kv_src.queue)} kv beats "
                "left unconsumed"
            )
        cycles.append(busy["count"])

    x_bits = len(dut.st_max)
    sum_bits = len(dut.st_sum)
    stats = np.array(
        [
            (to_signed(m, x_bits), to_signed(s, sum_bits), mant, to_signed(e, 8))
            for m, s, mant, e in st_snk.beats
        ],
        dtype=np.int64,
    ).reshape(-1, 4)
    mask = (1 << width) - 1
    rows = np.array(
        [[(word >> (c * width)) & mask for c in range(lanes)] for (word,) in o_snk.beats],
        dtype=np.int64,
    ).reshape(-1, lanes)
    save_outputs(stats=stats, rows=rows, cycles=np.array(cycles, dtype=np.int64))
