"""cocotb models of the RTL top's internal word-DMA ports, for testing one op engine alone.

An engine (docs/rtl-top.md) reaches DDR only through word ports: a read port takes a
command (byte offset, word count) and returns the words packed ``WPB`` to a beat (beat
``k`` holds words ``k*WPB ..`` of the range, word ``i`` of a beat in bits ``[32i +: 32]``,
lanes past the end zero, ``<name>_last`` on the final beat); a write port takes a command
and then ``ceil(words / WPB)`` packed beats, and raises ``<name>_idle`` once every
command has landed. These models serve such ports from a numpy array of uint32 words
(the program or the arena buffer), with random stalls, a first-beat latency and
backpressure from the bench's seeded generator. They plug into :class:`common.Bench`
like its sources and sinks (one per-cycle loop drives everything)::

    program = WordMemory(program_bytes)
    arena = WordMemory(np.zeros(arena_bytes // 4, np.uint32))
    bench.sources.append(WordReadPort(bench, "rd0", program, wpb, latency=8, stall=0.2))
    bench.sources.append(WordReadPort(bench, "rd1", arena, wpb))
    bench.sources.append(WordWritePort(bench, "wr1", arena, wpb, backpressure=0.2))

:class:`WordRowPort` serves the on-chip window's x port (``cds_arena_window``) the same
way: a command on a whole RAM row, then rows of ``row_words`` words a cycle.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from common import _read

__all__ = ["WordMemory", "WordReadPort", "WordRowPort", "WordWritePort"]


class WordMemory:
    """A DDR buffer as uint32 words; byte offsets must be multiples of 4."""

    def __init__(self, data: bytes | np.ndarray):
        if isinstance(data, (bytes, bytearray)):
            data = np.frombuffer(bytes(data) + b"\0" * (-len(data) % 4), np.uint32)
        self.words = np.array(data, dtype=np.uint32).ravel()
        self.reads = 0  # words served
        self.writes = 0  # words written

    def check(self, addr: int, count: int, what: str) -> int:
        if addr % 4:
            raise AssertionError(f"{what}: byte offset {addr:#x} is not word aligned")
        if count < 1:
            raise AssertionError(f"{what}: command for {count} words at {addr:#x}")
        start = addr // 4
        if start + count > self.words.size:
            raise AssertionError(
                f"{what}: words [{start}, {start + count}) past the buffer's {self.words.size}"
            )
        return start

    def int32(self) -> np.ndarray:
        return self.words.view(np.int32)


class _CommandPort:
    """The command half both port kinds share: ``<name>_cmd_*`` handshake, queue, log."""

    def __init__(self, bench, name: str, memory: WordMemory, wpb: int, queue_depth: int):
        dut = bench.dut
        self.name, self.memory, self.wpb, self.queue_depth = name, memory, wpb, queue_depth
        self._cmd_valid = getattr(dut, f"{name}_cmd_valid")
        self._cmd_ready = getattr(dut, f"{name}_cmd_ready")
        self._cmd_addr = getattr(dut, f"{name}_cmd_addr")
        self._cmd_words = getattr(dut, f"{name}_cmd_words")
        self._valid = getattr(dut, f"{name}_valid")
        self._ready = getattr(dut, f"{name}_ready")
        self._data = getattr(dut, f"{name}_data")
        self.commands: deque = deque()
        self.log: list[tuple[int, int]] = []  # (addr, words) of every command
        self._cmd_open = True
        self._cycle = 0
        self._cmd_ready.value = 1

    def _offer_command(self) -> None:
        self._cmd_open = len(self.commands) < self.queue_depth  # what cmd_ready shows
        self._cmd_ready.value = int(self._cmd_open)

    def _take_command(self) -> tuple[int, int] | None:
        """The (addr, words) moving this cycle, only if cmd_ready was shown as 1."""
        if not (self._cmd_open and _read(self._cmd_valid)):
            return None
        addr, count = _read(self._cmd_addr), _read(self._cmd_words)
        self.log.append((addr, count))
        return addr, count


class WordReadPort(_CommandPort):
    """Serves ``<name>_cmd_*`` commands as packed beats on ``<name>_valid/ready/data/last``."""

    def __init__(
        self,
        bench,
        name: str,
        memory: WordMemory,
        wpb: int,
        *,
        latency: int = 2,
        stall: float = 0.0,
        queue_depth: int = 4,
    ):
        super().__init__(bench, name, memory, wpb, queue_depth)
        self.latency, self.stall = latency, stall
        self._last = getattr(bench.dut, f"{name}_last")
        self._presenting = False  # commands hold [ready_cycle, beats deque]
        self._valid.value = 0

    @property
    def idle(self) -> bool:
        return not self.commands and not self._presenting

    def _beats(self, addr: int, count: int) -> deque:
        start = self.memory.check(addr, count, f"{self.name} read")
        words = [int(w) for w in self.memory.words[start : start + count]]
        self.memory.reads += count
        beats = deque()
        for first in range(0, count, self.wpb):
            chunk = words[first : first + self.wpb]
            value = 0
            for lane, word in enumerate(chunk):
                value |= word << (32 * lane)
            beats.append((value, int(first + self.wpb >= count)))
        return beats

    def _drive(self, rng) -> None:
        self._offer_command()
        if self._presenting or not self.commands:
            return
        ready_at, beats = self.commands[0]
        if self._cycle < ready_at or (self.stall and rng.random() < self.stall):
            return
        data, last = beats[0]
        self._data.value = data
        self._last.value = last
        self._valid.value = 1
        self._presenting = True

    def _sample(self, cycle: int) -> None:
        self._cycle = cycle
        if self._presenting and _read(self._ready):
            beats = self.commands[0][1]
            beats.popleft()
            self._presenting = False
            if not beats:
                self.commands.popleft()
        command = self._take_command()
        if command is not None:
            self.commands.append([cycle + self.latency, self._beats(*command)])

    def _after_edge(self) -> None:
        if not self._presenting:
            self._valid.value = 0


class WordRowPort(WordReadPort):
    """The window's x port: a command's offset must start a RAM row of `row_words` words,
    and it streams ``ceil(words / row_words)`` whole rows (the last one's words past the
    command are the RAM's next words, as in the RTL: the reader masks them)."""

    def __init__(self, bench, name: str, memory: WordMemory, row_words: int, **kwargs):
        super().__init__(bench, name, memory, row_words, **kwargs)

    def _beats(self, addr: int, count: int) -> deque:
        if addr % (4 * self.wpb):
            raise AssertionError(f"{self.name}: offset {addr:#x} does not start a RAM row")
        start = self.memory.check(addr, count, f"{self.name} read")
        rows = -(-count // self.wpb)
        padded = np.zeros(rows * self.wpb, np.uint32)
        tail = self.memory.words[start : start + rows * self.wpb]
        padded[: tail.size] = tail
        self.memory.reads += count
        beats = deque()
        for row in range(rows):
            value = 0
            for lane in range(self.wpb):
                value |= int(padded[row * self.wpb + lane]) << (32 * lane)
            beats.append((value, int(row == rows - 1)))
        return beats


class WordWritePort(_CommandPort):
    """Takes ``<name>_cmd_*`` commands and their packed beats; drives ``<name>_idle``."""

    def __init__(
        self,
        bench,
        name: str,
        memory: WordMemory,
        wpb: int,
        *,
        backpressure: float = 0.0,
        ack_latency: int = 4,
        queue_depth: int = 4,
    ):
        super().__init__(bench, name, memory, wpb, queue_depth)
        self.backpressure, self.ack_latency = backpressure, ack_latency
        self._idle = getattr(bench.dut, f"{name}_idle")
        self._acks: deque = deque()  # cycles at which finished commands are acknowledged
        self._ready_now = False  # commands hold [next word index, words left]
        self._ready.value = 0
        self._idle.value = 1

    @property
    def idle(self) -> bool:
        return not self.commands and not self._acks

    def _drive(self, rng) -> None:
        self._offer_command()
        ready = bool(self.commands) and not (self.backpressure and rng.random() < self.backpressure)
        self._ready.value = int(ready)
        self._ready_now = ready
        self._idle.value = int(self.idle)

    def _sample(self, cycle: int) -> None:
        self._cycle = cycle
        while self._acks and self._acks[0] <= cycle:
            self._acks.popleft()
        if self._ready_now and self.commands and _read(self._valid):
            command = self.commands[0]
            data = _read(self._data)
            take = min(self.wpb, command[1])
            for lane in range(take):
                self.memory.words[command[0] + lane] = (data >> (32 * lane)) & 0xFFFFFFFF
            self.memory.writes += take
            command[0] += take
            command[1] -= take
            if command[1] == 0:
                self.commands.popleft()
                self._acks.append(cycle + self.ack_latency)
        command = self._take_command()
        if command is not None:
            addr, count = command
            start = self.memory.check(addr, count, f"{self.name} write")
            self.commands.append([start, count])

    def _after_edge(self) -> None:
        pass
