"""One interface to the three executors of a Program: golden, csim and rtl.

An ``Executor`` runs a Program on an arena as the kernel does: ``run(program, arena,
task)`` takes the Program's bytes and the arena's 32-bit words with the input rows in
place, leaves every layer's output in the arena, and returns an ``ArenaRun`` (the cycles
when the executor counts them). Each refuses, with ``ProgramRefused``, exactly what its
kernel refuses. ``Build.predict`` and the fuzzer use them directly; each simulated board
(``codesign.runtime``) puts one behind the PYNQ API (the golden board with a cycle
model, the RTL board placing the buffers at the host's DDR addresses).

- ``golden``: the numpy golden executor (``codesign.golden``), for an ArchConfig or,
  without one, at the format's own limits;
- ``csim``: the HLS kernel compiled by g++ into a shared library (one build per
  ArchConfig, cached) and called in this process;
- ``rtl``: the Verilated RTL top (``codesign.rtl.harness``), one build per ArchConfig and
  precision; it counts cycles.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .contract import ProgramRefused
from .program import Program, arena_matrix

NAMES = ("golden", "csim", "rtl")


@dataclass
class ArenaRun:
    cycles: int | None = None  # counted by the executor (the RTL), else None
    source: str = ""
    layer_cycles: dict[str, int] = field(default_factory=dict)  # per layer, when counted


class Executor(Protocol):
    name: str

    def run(self, program: bytes, arena: np.ndarray, task: int) -> ArenaRun: ...


def initial_arena(program: Program, raw: np.ndarray) -> np.ndarray:
    """The arena a host hands over: zeros, the input rows at the header's input tensor."""
    arena = np.zeros(program.arena_bytes // 4, np.int32)
    ref = program.input
    arena_matrix(arena, ref.offset, ref.rows, ref.cols, ref.stride)[:] = raw
    return arena


def input_rows(program: Program, arena: np.ndarray) -> np.ndarray:
    """The raw input rows [rows, cols] (int64) from the arena's 32-bit words."""
    ref = program.input
    return arena_matrix(arena, ref.offset, ref.rows, ref.cols, ref.stride).astype(np.int64)


def output_rows(program: Program, arena: np.ndarray, task: int) -> np.ndarray:
    """Task ``task``'s raw output rows [rows, cols] (int64) from the arena."""
    ref = program.outputs[task]
    return arena_matrix(arena, ref.offset, ref.rows, ref.cols, ref.stride).astype(np.int64)


def _total_bytes(program: bytes) -> int:
    """The header's total_bytes: a buffer in DDR is padded to whole beats."""
    from .program import HEADER_FIELDS

    at = 4 * (2 + HEADER_FIELDS.index("total_bytes"))
    return int.from_bytes(program[at : at + 4], "little")


def run_input(executor: Executor, program: Program, raw: np.ndarray, task: int) -> np.ndarray:
    """One input through ``executor``: the task's raw output [rows, cols]."""
    arena = initial_arena(program, raw)
    executor.run(program.to_bytes(), arena, task)
    return output_rows(program, arena, task)


class GoldenArena:
    """The golden executor behind the arena interface (executors cached per Program;
    ``make(program, arch)`` builds one, e.g. a GoldenExecutor subclass that records)."""

    name = "golden"

    def __init__(self, arch=None, cache_size: int = 4, make=None):
        self.arch = arch
        self._make = make
        self._cache: OrderedDict[bytes, object] = OrderedDict()
        self._cache_size = cache_size

    def executor(self, program: bytes):
        """The (cached) GoldenExecutor of ``program``; the loader's checks run once."""
        from .golden import GoldenExecutor

        key = hashlib.blake2b(program, digest_size=16).digest()
        if key not in self._cache:
            parsed = Program.from_bytes(program, "program in DDR")
            make = self._make or GoldenExecutor
            self._cache[key] = make(parsed, self.arch)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def run(self, program: bytes, arena: np.ndarray, task: int) -> ArenaRun:
        executor = self.executor(bytes(program))
        executor.run(input_rows(executor.program, arena), task)
        arena[: executor.arena.size] = executor.arena.astype(np.int32)
        return ArenaRun()


class CsimArena:
    """The HLS kernel under g++, as a shared library called in this process (ctypes)."""

    name = "csim"

    def __init__(self, arch, *, quiet: bool = False, library=None):
        import ctypes

        from .runtime.csim_device import build_library

        self.arch = arch
        self.library_path = library or build_library(arch, quiet=quiet)
        lib = ctypes.CDLL(str(self.library_path))
        lib.codesign_so_run.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
        ]
        lib.codesign_so_run.restype = ctypes.c_uint
        lib.codesign_so_check.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.codesign_so_check.restype = ctypes.c_int
        lib.codesign_so_bus_bits.restype = ctypes.c_int
        if lib.codesign_so_bus_bits() != arch.bus_bits:
            raise RuntimeError(f"{self.library_path}: compiled for another bus width")
        self._lib = lib

    def check(self, program, task: int) -> tuple[int, int | None]:
        """The kernel's program check alone: (code, layer or None)."""
        import ctypes

        blob = np.ascontiguousarray(np.frombuffer(bytes(program), np.uint8))
        bad = ctypes.c_int(-1)
        code = self._lib.codesign_so_check(blob.ctypes.data, blob.size, task & 0xFFFFFFFF, bad)
        return int(code), (None if bad.value < 0 else bad.value)

    def run(self, program, arena: np.ndarray, task: int) -> ArenaRun:
        """``program``: bytes or a contiguous uint8 array (a view of simulated DDR works,
        no copy); ``arena``: a contiguous array, written in place."""
        if isinstance(program, (bytes, bytearray)):
            program = np.frombuffer(bytes(program), np.uint8)
        if not (program.flags.c_contiguous and arena.flags.c_contiguous):
            raise ValueError("the C-sim executor needs contiguous program and arena buffers")
        status = self._lib.codesign_so_run(
            program.ctypes.data, program.nbytes, arena.ctypes.data, arena.nbytes, task & 0xFFFFFFFF
        )
        if status:  # the kernel's STATUS register: it refused and ran nothing
            raise ProgramRefused.from_status(status, bytes(program), executor="the C-sim kernel")
        return ArenaRun()


class RtlArena:
    """The Verilated RTL top: the Program and the arena copied into its DDR model."""

    name = "rtl"

    def __init__(
        self,
        arch,
        precision=None,
        *,
        board=None,
        ddr_bytes: int = 0,
        accelerator=None,
        max_cycles: int | None = None,
    ):
        from .rtl.harness import DEFAULT_MAX_CYCLES, RtlAccelerator

        self.max_cycles = max_cycles or DEFAULT_MAX_CYCLES
        if accelerator is None:
            depth = (-(-(ddr_bytes + 4096) // (arch.bus_bits // 8)) - 1).bit_length()
            accelerator = RtlAccelerator(
                arch,
                precision,
                board=board,
                # the testbench's default DDR (2**20 beats) unless program + arena need more
                ddr_depth_log2=depth if depth > 20 else None,
            )
        self.accelerator = accelerator

    def run(self, program, arena: np.ndarray, task: int, *, program_at=None, arena_at=None):
        """As every executor; ``program_at``/``arena_at`` place the buffers in the DDR
        model (default: the Program at its base, the arena after it)."""
        accel = self.accelerator
        program = bytes(program)
        program_at = accel.program_address if program_at is None else program_at
        arena_at = accel.arena_address(len(program)) if arena_at is None else arena_at
        accel.load_program(program, program_at)
        accel.write_ddr(arena_at, arena)
        accel.execute(program_at, arena_at, int(task), self.max_cycles, program)
        arena[:] = accel.read_ddr(arena_at, arena.nbytes).view(arena.dtype)
        parsed = Program.from_bytes(program[: _total_bytes(program)], "program in DDR")
        cycles, layers = accel.counters(parsed, int(task))
        return ArenaRun(cycles, "RTL counter (CYCLES register)", layers)


def make_executor(
    name: str, arch=None, *, precision=None, board=None, ddr_bytes: int = 0
) -> Executor:
    """The executor called ``name`` (``NAMES``) for ``arch``."""
    if name == "golden":
        return GoldenArena(arch)
    if name == "csim":
        return CsimArena(arch)
    if name == "rtl":
        return RtlArena(arch, precision, board=board, ddr_bytes=ddr_bytes)
    raise ValueError(f"executor {name!r} is not available; choose from {NAMES}")


__all__ = [
    "NAMES",
    "ArenaRun",
    "CsimArena",
    "Executor",
    "GoldenArena",
    "RtlArena",
    "initial_arena",
    "input_rows",
    "make_executor",
    "output_rows",
    "run_input",
]
