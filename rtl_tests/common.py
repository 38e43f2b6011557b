"""Shared cocotb helpers for the RTL unit tests (imported by every ``cocotb_*.py`` module).

The pytest side (``test_*.py``) builds a unit with :mod:`codesign.rtl.sim`, computes
inputs and expected values with the golden numerics and calls ``sim.run(..., inputs=...)``;
the cocotb side (this module's users) drives the unit and hands raw results back:

    inputs = load_inputs()                       # dict of numpy arrays from sim.run
    bench = Bench(dut, seed=int(inputs["seed"]))
    await bench.start()                          # clock + active-low reset
    src = bench.source("in", ["in_data"], stall=0.3)
    snk = bench.sink("out", ["out_data"], backpressure=0.3)
    src.extend(beats)                            # ints, or tuples (one int per signal)
    await bench.wait_for(lambda: len(snk.beats) == len(beats))
    save_outputs(out=np.array(snk.column(0)), cycles=bench.cycle)

Conventions every unit follows (see docs/rtl.md): clock ``clk``, synchronous active-low
reset ``rst_n``; a stream ``<name>`` is ``<name>_valid`` / ``<name>_ready`` plus data
signals; a beat moves on a rising edge where valid and ready are both 1; a source keeps
valid and data stable until the beat moves. Lanes are packed little-end first: lane ``i``
of a ``lanes x width`` bus is bits ``[i*width +: width]`` (:func:`pack_lanes`).

One :class:`Bench` loop per clock drives every stream (two awaits per cycle, whatever the
number of streams), which keeps long randomised runs fast. Random stalls (sources) and
backpressure (sinks) come from one seeded generator, so a failing run repeats exactly.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import numpy as np

ENV_IN = "CODESIGN_RTL_IN"
ENV_OUT = "CODESIGN_RTL_OUT"
ENV_PARAMS = "CODESIGN_RTL_PARAMS"

CLOCK_NS = 4  # 250 MHz nominal; only the cycle count matters in simulation

__all__ = [
    "Bench",
    "Sink",
    "Source",
    "build_params",
    "drive_lanes",
    "load_inputs",
    "pack_lanes",
    "save_outputs",
    "to_signed",
    "unpack_lanes",
]


# ------------------------------------------------------------------------ data exchange


def load_inputs() -> dict[str, np.ndarray]:
    """The arrays ``sim.run(..., inputs=...)`` passed in (empty dict when run standalone)."""
    path = os.environ.get(ENV_IN)
    if not path or not os.path.exists(path):
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_outputs(**arrays) -> None:
    """Hand results back to ``sim.run`` (returned there as a dict of numpy arrays)."""
    path = os.environ.get(ENV_OUT)
    if path:
        np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def build_params() -> dict:
    """The Verilog parameters the model was built with (as given to ``sim.build``)."""
    return json.loads(os.environ.get(ENV_PARAMS, "{}"))


# ------------------------------------------------------------------------ bit packing


def to_signed(value: int, width: int) -> int:
    """Two's complement reading of the low `width` bits of `value`."""
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


def pack_lanes(values: Iterable[int], width: int) -> int:
    """Lane i of the result holds values[i] (two's complement, low `width` bits)."""
    mask = (1 << width) - 1
    word = 0
    for i, value in enumerate(values):
        word |= (int(value) & mask) << (i * width)
    return word


def unpack_lanes(word: int, lanes: int, width: int, signed: bool = True) -> list[int]:
    """Inverse of :func:`pack_lanes`."""
    mask = (1 << width) - 1
    out = [(word >> (i * width)) & mask for i in range(lanes)]
    if signed:
        half = 1 << (width - 1)
        out = [v - (1 << width) if v >= half else v for v in out]
    return out


def axi_pauses(rng, probability: float):
    """An endless pause pattern for a cocotbext-axi channel (True = stall this cycle)."""
    return (rng.random() < probability for _ in itertools.count())


def queue_word_writes(wr_cmd: Source, wr: Source, commands, words, wpb: int) -> None:
    """Queue word-port write commands (byte address, words) on `wr_cmd` and their data,
    `wpb` 32-bit words a beat (the last beat of a command carries the rest), on `wr`."""
    wr_cmd.extend((int(a), int(w)) for a, w in commands)
    position = 0
    for _addr, count in commands:
        chunk = [int(v) for v in words[position : position + count]]
        position += int(count)
        for k in range(0, len(chunk), wpb):
            wr.append(pack_lanes(chunk[k : k + wpb], 32))


def _read(handle) -> int:
    return int(handle.value)


# ------------------------------------------------------------------------ streams


class Source:
    """Drives ``<name>_valid`` + data signals from a queue of beats; honours ``<name>_ready``.

    ``stall`` is the probability of leaving a cycle idle before presenting the next beat
    (valid never drops while a beat waits). ``sent`` counts beats that moved;
    ``first_cycle`` / ``last_cycle`` are the bench cycles of the first and last transfer.
    """

    def __init__(self, bench: Bench, name: str, signals: Sequence[str], stall: float):
        self.name = name
        self._valid = getattr(bench.dut, f"{name}_valid")
        self._ready = getattr(bench.dut, f"{name}_ready")
        self._data = [getattr(bench.dut, s) for s in signals]
        self.stall = stall
        self.queue: deque = deque()
        self.sent = 0
        self.first_cycle: int | None = None
        self.last_cycle: int | None = None
        self._presenting = False
        self._valid.value = 0

    def extend(self, beats: Iterable) -> None:
        """Queue beats: an int per beat for one data signal, else a tuple per beat."""
        for beat in beats:
            self.queue.append(beat if isinstance(beat, tuple) else (beat,))

    def append(self, beat) -> None:
        self.extend([beat])

    @property
    def idle(self) -> bool:
        return not self.queue and not self._presenting

    def _drive(self, rng: random.Random) -> None:
        if self._presenting or not self.queue:
            return
        if self.stall and rng.random() < self.stall:
            return
        for handle, value in zip(self._data, self.queue[0], strict=True):
            handle.value = int(value)
        self._valid.value = 1
        self._presenting = True

    def _sample(self, cycle: int) -> None:
        if self._presenting and _read(self._ready):
            self.queue.popleft()
            self.sent += 1
            if self.first_cycle is None:
                self.first_cycle = cycle
            self.last_cycle = cycle
            self._presenting = False

    def _after_edge(self) -> None:
        if not self._presenting:
            self._valid.value = 0


class Sink:
    """Drives ``<name>_ready`` (random backpressure) and records beats that move.

    ``beats`` is a list of tuples (one int per data signal, unsigned); ``cycles`` the
    bench cycle of each beat.
    """

    def __init__(self, bench: Bench, name: str, signals: Sequence[str], backpressure: float):
        self.name = name
        self._valid = getattr(bench.dut, f"{name}_valid")
        self._ready = getattr(bench.dut, f"{name}_ready")
        self._data = [getattr(bench.dut, s) for s in signals]
        self.backpressure = backpressure
        self.beats: list[tuple[int, ...]] = []
        self.cycles: list[int] = []
        self._ready_now = False
        self._ready.value = 0

    def column(self, index: int = 0) -> list[int]:
        return [beat[index] for beat in self.beats]

    @property
    def first_cycle(self) -> int | None:
        return self.cycles[0] if self.cycles else None

    @property
    def last_cycle(self) -> int | None:
        return self.cycles[-1] if self.cycles else None

    def _drive(self, rng: random.Random) -> None:
        ready = not (self.backpressure and rng.random() < self.backpressure)
        if ready != self._ready_now:
            self._ready.value = int(ready)
            self._ready_now = ready

    def _sample(self, cycle: int) -> None:
        if self._ready_now and _read(self._valid):
            self.beats.append(tuple(_read(h) for h in self._data))
            self.cycles.append(cycle)

    def _after_edge(self) -> None:
        pass


class Bench:
    """Clock, reset, cycle counter and the single per-cycle loop that runs all streams.

    ``cycle`` counts rising edges since the end of reset. ``watch(fn)`` registers a
    callback run every cycle (after sampling) with the cycle number, e.g. to note when a
    ``busy`` flag rises and falls.
    """

    def __init__(self, dut, seed: int = 1, clk: str = "clk", rst_n: str = "rst_n"):
        self.dut = dut
        self.clk = getattr(dut, clk)
        self.rst_n = getattr(dut, rst_n) if rst_n else None
        self.rng = random.Random(seed)
        self.sources: list[Source] = []
        self.sinks: list[Sink] = []
        self.watchers: list[Callable[[int], None]] = []
        self.cycle = 0
        self._task = None

    def source(self, name: str, signals: Sequence[str], stall: float = 0.0) -> Source:
        src = Source(self, name, signals, stall)
        self.sources.append(src)
        return src

    def sink(self, name: str, signals: Sequence[str], backpressure: float = 0.0) -> Sink:
        snk = Sink(self, name, signals, backpressure)
        self.sinks.append(snk)
        return snk

    def watch(self, callback: Callable[[int], None]) -> None:
        self.watchers.append(callback)

    async def start(self, reset_cycles: int = 4) -> None:
        """Start the clock, hold reset for `reset_cycles`, then start the stream loop."""
        import cocotb
        from cocotb.clock import Clock
        from cocotb.triggers import RisingEdge

        Clock(self.clk, CLOCK_NS, unit="ns").start()
        if self.rst_n is not None:
            self.rst_n.value = 0
            for _ in range(reset_cycles):
                await RisingEdge(self.clk)
            self.rst_n.value = 1
        await RisingEdge(self.clk)
        self._task = cocotb.start_soon(self._loop())

    async def _loop(self) -> None:
        from cocotb.triggers import ReadOnly, RisingEdge

        rng = self.rng
        while True:
            ports = [*self.sources, *self.sinks]  # streams may be added while running
            for port in ports:
                port._drive(rng)
            await ReadOnly()
            cycle = self.cycle
            for port in ports:
                port._sample(cycle)
            for watcher in self.watchers:
                watcher(cycle)
            await RisingEdge(self.clk)
            self.cycle += 1
            for port in ports:
                port._after_edge()

    async def wait_for(self, condition: Callable[[], bool], timeout: int = 1_000_000) -> int:
        """Wait (in clock cycles) until `condition()` holds; returns the cycle it held."""
        from cocotb.triggers import RisingEdge

        start = self.cycle
        while not condition():
            if self.cycle - start > timeout:
                raise TimeoutError(f"condition not met within {timeout} cycles")
            await RisingEdge(self.clk)
        return self.cycle

    async def cycles(self, count: int) -> None:
        from cocotb.triggers import ClockCycles

        await ClockCycles(self.clk, count)


# ------------------------------------------------------------------------ generic lane streams


async def drive_lanes(dut, inputs: dict) -> dict:
    """Stream beats through a unit with one input and one output stream; return the outputs.

    ``inputs["spec"]`` (JSON) describes the ports::

        {"in_stream": "in", "out_stream": "out", "stall": 0.3, "backpressure": 0.3,
         "quiet": 64,
         "in":  [{"signal": "in_data", "key": "x", "width": 24}, {"signal": "in_frac", ...}],
         "out": [{"signal": "out_data", "key": "y", "width": 24, "signed": true}]}

    and ``inputs[key]`` holds ``[beats, lanes]`` raw integers per port (lanes packed with
    :func:`pack_lanes`; a 1-D array is one lane). The first ``quiet`` beats run without
    stalls or backpressure and are timed (``quiet_cycles``: first input to last output);
    the rest run with the given probabilities. Returns ``{key: [beats, lanes]}`` for the
    outputs, in input order, plus ``quiet_cycles``.
    """
    spec = json.loads(str(inputs["spec"]))
    bench = Bench(dut, seed=int(spec.get("seed", 1)))
    ins, outs = spec["in"], spec["out"]
    src = bench.source(spec.get("in_stream", "in"), [p["signal"] for p in ins])
    snk = bench.sink(spec.get("out_stream", "out"), [p["signal"] for p in outs])
    arrays = [np.asarray(inputs[p["key"]]) for p in ins]
    arrays = [a.reshape(a.shape[0], -1) for a in arrays]
    beats = arrays[0].shape[0]
    packed = [
        tuple(pack_lanes(a[i], p["width"]) for a, p in zip(arrays, ins, strict=True))
        for i in range(beats)
    ]
    quiet = min(int(spec.get("quiet", 0)), beats)
    await bench.start()
    quiet_cycles = 0
    if quiet:
        src.extend(packed[:quiet])
        await bench.wait_for(lambda: len(snk.beats) >= quiet, timeout=50 * quiet + 1000)
        quiet_cycles = snk.last_cycle - src.first_cycle + 1
    src.stall = spec.get("stall", 0)
    snk.backpressure = spec.get("backpressure", 0)
    src.extend(packed[quiet:])
    await bench.wait_for(lambda: len(snk.beats) >= beats, timeout=50 * beats + 1000)
    result = {}
    for j, port in enumerate(outs):
        lanes = int(port.get("lanes", 1))
        rows = [
            unpack_lanes(b[j], lanes, port["width"], port.get("signed", True)) for b in snk.beats
        ]
        result[port["key"]] = np.array(rows, dtype=np.int64)
    result["quiet_cycles"] = np.int64(quiet_cycles)
    return result
