"""cocotb side of test_axi.py: the AXI plumbing of codesign_top under cocotbext-axi.

``dma_and_control`` (toplevel ``cds_axi_dma_tb``: cds_axil_ctrl + cds_axi_rd + cds_axi_wr
on one AXI4 bundle served by an ``AxiRam``): first the control slave through an
``AxiLiteMaster`` (ap_ctrl_hs handshake, clear-on-read, interrupts, auto restart, debug
registers; expectations are asserted here), then a start latches the two base addresses
and random word commands run on the read and write ports under random AXI stalls and
engine backpressure. The raw results (read beats, AXI address-channel log, RAM snapshots)
go back to the pytest side, which compares them with its numpy model.

``ddr_model`` (toplevel ``cds_axi_ddr_tb``: the DDR model behind 1-bit LOCK ports, an
``AxiMaster`` per port): data through the shared memory, first-beat latency and the
bandwidth cap, measured in cycles.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from common import Bench, axi_pauses, load_inputs, queue_word_writes, save_outputs, unpack_lanes

CTRL, GIE, IER, ISR = 0x00, 0x04, 0x08, 0x0C
AP_START, AP_DONE, AP_IDLE, AP_READY, AUTO_RESTART = 1, 2, 4, 8, 0x80


async def _pulse(dut, name: str) -> None:
    getattr(dut, name).value = 1
    await RisingEdge(dut.clk)
    getattr(dut, name).value = 0


async def _check_control(dut, bench: Bench, axil, offsets: dict) -> None:
    """The ap_ctrl_hs contract that codesign/runtime/driver.py relies on."""
    starts = []
    bench.watch(lambda cycle: starts.append(cycle) if int(dut.ctl_start.value) else None)

    async def expect(addr: int, want: int, what: str) -> None:
        got = await axil.read_dword(addr)
        assert got == want, f"{what}: read 0x{got:08x} at 0x{addr:02x}, want 0x{want:08x}"

    await expect(CTRL, AP_IDLE, "CTRL after reset")
    assert int(dut.interrupt.value) == 0
    # arguments are plain r/w registers (byte strobes honoured)
    values = {"program_lo": 0x89ABCDE4, "program_hi": 0x8, "arena_lo": 0x100, "arena_hi": 0x9}
    for name, value in values.items():
        await axil.write_dword(offsets[name], value)
    await axil.write_dword(offsets["task"], 0x12345678)
    await axil.write(offsets["task"] + 1, b"\xab")  # one byte lane only
    for name, value in values.items():
        await expect(offsets[name], value, name)
    await expect(offsets["task"], 0x1234AB78, "task after a one-byte write")
    await expect(0x40, 0, "unmapped register")
    await expect(0xFC, 0, "unmapped register")
    # debug registers read the controller's inputs; PERF_SEL is r/w and drives an output
    dut.dbg_status.value = 0x00030007
    dut.dbg_cycles.value = 0x1122334455667788
    dut.dbg_perf_cycles.value = 4242
    dut.dbg_layers_run.value = 17
    dut.dbg_check_cycles.value = 9001
    await expect(0x80, 0x00030007, "STATUS")
    await expect(0x84, 0x55667788, "CYCLES lo")
    await expect(0x88, 0x11223344, "CYCLES hi")
    await expect(0x90, 4242, "PERF_CYCLES")
    await expect(0x94, 17, "LAYERS_RUN")
    await expect(0x98, 9001, "CHECK_CYCLES")
    await axil.write_dword(0x8C, 5)
    await expect(0x8C, 5, "PERF_SEL")
    assert int(dut.dbg_perf_sel.value) == 5

    # a run: ap_start -> one start pulse with the latched arguments; busy until done
    await axil.write_dword(IER, 3)
    await axil.write_dword(GIE, 1)
    await axil.write_dword(CTRL, AP_START)
    await bench.cycles(3)
    assert len(starts) == 1, f"{len(starts)} start pulses after one ap_start"
    assert int(dut.ctl_program.value) == 0x8_89ABCDE4
    assert int(dut.ctl_arena.value) == 0x9_00000100
    assert int(dut.ctl_task.value) == 0x1234AB78
    await expect(CTRL, AP_START, "CTRL while running")
    await axil.write_dword(offsets["task"], 7)  # a write during the run does not disturb it
    assert int(dut.ctl_task.value) == 0x1234AB78
    await axil.write_dword(CTRL, AP_START)  # ap_start again while running: ignored
    assert int(dut.interrupt.value) == 0
    await _pulse(dut, "ctl_done")
    await bench.cycles(2)
    assert len(starts) == 1
    assert int(dut.interrupt.value) == 1
    await expect(ISR, 3, "ISR after done (done and ready enabled)")
    await expect(CTRL, AP_DONE | AP_IDLE | AP_READY, "CTRL after done")
    await expect(CTRL, AP_IDLE, "CTRL read again (done/ready clear on read)")
    await axil.write_dword(ISR, 1)  # toggle on write
    await expect(ISR, 2, "ISR after toggling bit 0")
    assert int(dut.interrupt.value) == 1
    await axil.write_dword(ISR, 2)
    await expect(ISR, 0, "ISR after toggling bit 1")
    assert int(dut.interrupt.value) == 0
    await axil.write_dword(GIE, 0)
    await axil.write_dword(IER, 1)

    # auto restart: every done re-launches until auto_restart is cleared
    await axil.write_dword(CTRL, AP_START | AUTO_RESTART)
    await bench.cycles(3)
    assert len(starts) == 2
    await _pulse(dut, "ctl_done")
    await bench.cycles(3)
    assert len(starts) == 3, "auto restart did not launch again"
    await expect(CTRL, AP_START | AP_DONE | AP_READY | AUTO_RESTART, "CTRL on auto restart")
    await axil.write_dword(CTRL, 0)  # clear auto_restart; the current run goes on
    await _pulse(dut, "ctl_done")
    await bench.cycles(3)
    assert len(starts) == 3
    await expect(CTRL, AP_DONE | AP_IDLE | AP_READY, "CTRL after the last run")
    await expect(ISR, 1, "ISR with only done enabled")
    assert int(dut.interrupt.value) == 0  # GIE off
    bench.watchers.clear()


@cocotb.test()
async def dma_and_control(dut):
    from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

    data = load_inputs()
    seed = int(data["seed"])
    wpb = int(data["wpb"])
    rng = random.Random(seed)
    memory = data["memory"].astype(np.uint8)
    offsets = {k: int(v) for k, v in zip(data["reg_names"], data["reg_offsets"], strict=True)}

    for name in (
        "ctl_done",
        "dbg_status",
        "dbg_cycles",
        "dbg_perf_cycles",
        "dbg_layers_run",
        "dbg_check_cycles",
    ):
        getattr(dut, name).value = 0
    ram = AxiRam(
        AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst_n, reset_active_level=False,
        size=memory.size,
    )  # fmt: skip
    ram.write(0, memory.tobytes())
    axil = AxiLiteMaster(
        AxiLiteBus.from_prefix(dut, "s_axi_control"), dut.clk, dut.rst_n, reset_active_level=False
    )
    bench = Bench(dut, seed=seed)
    rd_cmd = bench.source("rd_cmd", ["rd_cmd_addr", "rd_cmd_words"])
    rd = bench.sink("rd", ["rd_data", "rd_last"])
    wr_cmd = bench.source("wr_cmd", ["wr_cmd_addr", "wr_cmd_words"])
    wr = bench.source("wr", ["wr_data"])
    await bench.start()

    await _check_control(dut, bench, axil, offsets)

    # the DMA bases come from the control registers, latched by a start
    program, arena = int(data["program_base"]), int(data["arena_base"])
    for name, value in (("program", program), ("arena", arena)):
        await axil.write_dword(offsets[f"{name}_lo"], value & 0xFFFFFFFF)
        await axil.write_dword(offsets[f"{name}_hi"], value >> 32)
    await axil.write_dword(CTRL, AP_START)
    await bench.wait_for(lambda: int(dut.ctl_program.value) == program)

    # AXI address channels as issued, and how long the write port stayed busy
    log = {"ar": [], "aw": [], "busy": 0, "r_stall": 0}

    def watch(_cycle: int) -> None:
        if int(dut.m_axi_ARVALID.value) and int(dut.m_axi_ARREADY.value):
            log["ar"].append((int(dut.m_axi_ARADDR.value), int(dut.m_axi_ARLEN.value)))
        if int(dut.m_axi_AWVALID.value) and int(dut.m_axi_AWREADY.value):
            log["aw"].append((int(dut.m_axi_AWADDR.value), int(dut.m_axi_AWLEN.value)))
        if int(dut.m_axi_RVALID.value) and not int(dut.m_axi_RREADY.value):
            log["r_stall"] += 1
        log["busy"] += 1 - int(dut.wr_idle.value)

    bench.watch(watch)
    stall = float(data["stall"])
    for channel in (ram.read_if.ar_channel, ram.read_if.r_channel, ram.write_if.aw_channel,
                    ram.write_if.w_channel, ram.write_if.b_channel):  # fmt: skip
        channel.set_pause_generator(axi_pauses(rng, stall))
    rd.backpressure = float(data["backpressure"])
    rd_cmd.stall = wr_cmd.stall = wr.stall = stall

    rd_cmds, wr_cmds, wr_words = data["rd_cmds"], data["wr_cmds"], data["wr_words"]
    rd_cmd.extend((int(a), int(w)) for a, w in rd_cmds)
    queue_word_writes(wr_cmd, wr, wr_cmds, wr_words, wpb)
    total_beats = int(sum(-(-int(w) // wpb) for _a, w in rd_cmds))
    await bench.wait_for(
        lambda: len(rd.beats) >= total_beats and wr.idle and wr_cmd.idle, timeout=2_000_000
    )
    idle_cycle = await bench.wait_for(lambda: int(dut.wr_idle.value) == 1, timeout=100_000)
    landed = np.frombuffer(ram.read(0, memory.size), np.uint8).copy()  # at wr_idle
    await bench.cycles(50)
    final = np.frombuffer(ram.read(0, memory.size), np.uint8).copy()
    random_beats, random_ar, random_aw = list(rd.beats), list(log["ar"]), list(log["aw"])

    # streaming rate without stalls: one long unaligned read, then one long write
    for channel in (ram.read_if.ar_channel, ram.read_if.r_channel, ram.write_if.aw_channel,
                    ram.write_if.w_channel, ram.write_if.b_channel):  # fmt: skip
        channel.set_pause_generator(None)
        channel.pause = False
    rd.backpressure = 0.0
    rd_cmd.stall = wr_cmd.stall = wr.stall = 0.0
    stream_words = int(data["stream_words"])
    stream_beats = -(-stream_words // wpb)
    before = len(rd.beats)
    began = bench.cycle
    rd_cmd.append((4, stream_words))
    await bench.wait_for(lambda: len(rd.beats) >= before + stream_beats, timeout=100_000)
    read_cycles = rd.last_cycle - began + 1
    began = bench.cycle
    wr_cmd.append((4, stream_words))
    wr.extend([0x5A5A5A5A] * stream_beats)
    await bench.wait_for(lambda: wr.idle, timeout=100_000)
    await bench.cycles(1)
    write_done = await bench.wait_for(lambda: int(dut.wr_idle.value) == 1, timeout=100_000)
    write_cycles = write_done - began
    save_outputs(
        rd_words=np.array(
            [unpack_lanes(d, wpb, 32, signed=False) for d, _last in random_beats], dtype=np.uint32
        ),
        rd_last=np.array([last for _d, last in random_beats], dtype=np.uint8),
        landed=landed,
        final=final,
        ar=np.array(random_ar, dtype=np.uint64).reshape(-1, 2),
        aw=np.array(random_aw, dtype=np.uint64).reshape(-1, 2),
        wr_busy_cycles=log["busy"],
        r_stalls=log["r_stall"],
        rd_idle=int(dut.rd_idle.value),
        errors=int(dut.rd_error.value) + int(dut.wr_error.value),
        cycles=idle_cycle,
        stream=np.array([stream_beats, read_cycles, write_cycles], dtype=np.int64),
    )


@cocotb.test()
async def ddr_model(dut):
    from cocotbext.axi import AxiBus, AxiMaster

    data = load_inputs()
    seed = int(data["seed"])
    base = int(data["base"])
    bus_bytes = int(data["bus_bytes"])
    init = data["init"]  # uint32 words, loaded through the memory array's handles
    wpb = bus_bytes // 4
    dut.latency.value = 0
    dut.bw_num.value = 0
    dut.bw_den.value = 1
    dut.load.value = 0
    dut.dump.value = 0
    for index in range(len(init) // wpb):
        lanes = [int(v) for v in init[index * wpb : (index + 1) * wpb]]
        dut.ddr.mem[index].value = sum(v << (32 * i) for i, v in enumerate(lanes))
    bench = Bench(dut, seed=seed)
    port0 = AxiMaster(AxiBus.from_prefix(dut, "s0"), dut.clk, dut.rst_n, reset_active_level=False)
    port1 = AxiMaster(AxiBus.from_prefix(dut, "s1"), dut.clk, dut.rst_n, reset_active_level=False)
    events = {"ar": [], "r": [], "beats": 0}

    def watch(cycle: int) -> None:
        if int(dut.s0_ARVALID.value) and int(dut.s0_ARREADY.value):
            events["ar"].append(cycle)
        if int(dut.s0_RVALID.value) and int(dut.s0_RREADY.value):
            events["r"].append(cycle)
        for port in ("s0", "s1"):
            for ch in ("R", "W"):
                valid = getattr(dut, f"{port}_{ch}VALID")
                ready = getattr(dut, f"{port}_{ch}READY")
                events["beats"] += int(valid.value) & int(ready.value)

    bench.watch(watch)
    await bench.start()

    # data: what the cocotb handles loaded, then a write on port 1 read back on port 0
    span = len(init) * 4
    loaded = await port0.read(base, span)
    payload = bytes(np.random.default_rng(seed).integers(0, 256, 999, dtype=np.uint8))
    await port1.write(base + 4100, payload)  # unaligned, crosses a 4 KB page
    readback = await port0.read(base, span)

    # latency: one single-beat read at a time
    latencies = []
    for latency in (2, 7, 40):
        dut.latency.value = latency
        events["ar"].clear()
        events["r"].clear()
        await port0.read(base + bus_bytes * latency, bus_bytes)
        latencies.append((latency, events["r"][0] - events["ar"][0]))

    # bandwidth: reads on port 0 and writes on port 1 at once, under a shared cap
    rates = []
    dut.latency.value = 4
    for num, den in (tuple(pair) for pair in data["caps"]):
        dut.bw_num.value = int(num)
        dut.bw_den.value = int(den)
        events["beats"] = 0
        start = bench.cycle
        reader = cocotb.start_soon(port0.read(base, 64 * bus_bytes * 8))
        writer = cocotb.start_soon(port1.write(base + span, bytes(64 * bus_bytes * 8)))
        await reader
        await writer
        rates.append((int(num), int(den), events["beats"], bench.cycle - start))
    dut.bw_num.value = 0
    save_outputs(
        loaded=np.frombuffer(loaded.data, np.uint8),
        readback=np.frombuffer(readback.data, np.uint8),
        payload=np.frombuffer(payload, np.uint8),
        latencies=np.array(latencies, dtype=np.int64),
        rates=np.array(rates, dtype=np.int64),
        oob=int(dut.oob.value),
        mem0=int(dut.ddr.mem[0].value),
    )
