"""The RTL board: the open SystemVerilog accelerator, Verilated, behind the pynq API.

``RtlKernel`` is the ``KernelModel`` of a ``SimulatedBoard`` whose PL is ``codesign_top``
in the Verilator testbench ``codesign_tb`` (``codesign.rtl.harness``). On ap_start it
copies the Program and the arena from the board's simulated DDR into the DDR model of the
testbench (same addresses relative to the DDR window), writes the argument registers
through the RTL's own AXI4-Lite slave, clocks the model until its interrupt, copies the
arena back and reports the cycles the RTL counted (CYCLES register) and, per layer,
PERF_CYCLES. The host driver cannot tell it from the golden or C-sim board.

The harness library is built once per (ArchConfig, precision) and cached (minutes for a
large tile; ``codesign.rtl.harness.build_harness``).
"""

from __future__ import annotations

import threading

from ..arch import ArchConfig
from ..contract import ProgramRefused
from ..program import HEADER_BYTES, HEADER_FIELDS
from .simulated import PAGE, KernelModel, SimulatedBoard, SimulatedKernelError

# cycles one run may take before the kernel gives up and reports the register state
# (the host driver has its own wall-clock timeout)
DEFAULT_MAX_CYCLES = 200_000_000


def _arch_precision(arch, precision, program) -> tuple[ArchConfig, str | None]:
    """The ArchConfig and precision the RTL is built for: given, or the Program's."""
    if program is not None:
        from ..program import Program
        from .layout import ProgramLayout

        if isinstance(program, ProgramLayout):
            program = program.program
        elif not isinstance(program, Program):
            program = Program.from_bytes(bytes(program))
        if arch is None:
            from ..hls.csim import arch_from_program

            arch = arch_from_program(program)
        if precision is None:
            precision = program.meta.get("precision")
    if arch is None:
        arch = ArchConfig()
    elif not isinstance(arch, ArchConfig):
        arch = ArchConfig.from_dict(dict(arch))
    return arch, precision


class RtlKernel(KernelModel):
    """``codesign_top`` under Verilator: the RTL that would be the bitstream."""

    name = "rtl"
    cycles_source = "RTL clock count (Verilator, CYCLES register)"

    def __init__(
        self,
        arch=None,
        *,
        program=None,
        precision=None,
        board: str | None = None,
        ddr_latency: int | None = None,
        ddr_bytes_per_cycle: float | None = None,
        max_cycles: int = DEFAULT_MAX_CYCLES,
        quiet: bool = False,
        accelerator=None,
    ):
        from ..rtl.harness import RtlAccelerator

        if accelerator is not None:  # share one Verilated model (and its build)
            arch, precision = accelerator.arch, accelerator.precision
        self.arch, self.precision = _arch_precision(arch, precision, program)
        if accelerator is None:
            accelerator = RtlAccelerator(
                self.arch,
                self.precision,
                ddr_latency=ddr_latency,
                ddr_bytes_per_cycle=ddr_bytes_per_cycle,
                board=board,
                quiet=quiet,
            )
        self.accelerator = accelerator
        self.max_cycles = int(max_cycles)
        from ..executors import RtlArena

        # the executor Build.predict uses too; the board adds the DDR placement
        self.executor = RtlArena(self.arch, accelerator=accelerator, max_cycles=self.max_cycles)
        if board is not None:
            from ..arch import get_board

            self.clock_mhz = get_board(board).clock_mhz
        self.layer_cycles: dict[str, int] = {}  # PERF_CYCLES of the last run, by layer
        self.harness_seconds = 0.0  # wall time of the last run's simulation
        self.harness_cycles = 0  # clock edges the harness drove in the last run
        self._lock = threading.Lock()

    def execute(self, memory, program_address, arena_address, task):
        import time

        accel = self.accelerator
        header = memory.view(program_address, HEADER_BYTES).view("<u4")
        total = int(header[2 + HEADER_FIELDS.index("total_bytes")])
        arena_bytes = int(header[2 + HEADER_FIELDS.index("arena_bytes")])
        bus = self.arch.bus_bytes
        # the RTL reads and writes whole beats: copy the beats the buffers hold
        program_span = min(-(-total // bus) * bus, memory.extent(program_address))
        arena_span = min(-(-arena_bytes // bus) * bus, memory.extent(arena_address))
        program_blob = bytes(memory.view(program_address, program_span))
        arena = memory.view(arena_address, arena_span)
        program_at, arena_at = self._placement(
            program_address, program_span, arena_address, arena_span
        )
        with self._lock:
            began = time.perf_counter()
            first = accel.harness.cycles
            self.executor.max_cycles = self.max_cycles  # a test may shorten it between runs
            try:
                run = self.executor.run(
                    program_blob, arena, int(task), program_at=program_at, arena_at=arena_at
                )
            except ProgramRefused:
                raise  # the RTL ran nothing; STATUS says why (the board shows it)
            except Exception as error:
                accel.reset()  # like a PL reset: the next run starts from idle
                raise SimulatedKernelError(f"RTL run failed: {error}") from error
            self.layer_cycles = run.layer_cycles
            self.harness_seconds = time.perf_counter() - began
            self.harness_cycles = accel.harness.cycles - first
        return run.cycles

    def _placement(self, program_address, program_span, arena_address, arena_span):
        """Where the Program and the arena go in the testbench's DDR model.

        The model's window starts at the boards' DDR base, so buffers keep the addresses
        the host allocated (pointers and their high words are the board's) whenever they
        fit in the model; otherwise (a long session's allocations run past the model's
        size) they are moved to the start of the window, the Program first.
        """
        base, size = self.accelerator.ddr_base, self.accelerator.harness.mem_bytes

        def inside(address: int, span: int) -> bool:
            return base <= address and address + span <= base + size

        if inside(program_address, program_span) and inside(arena_address, arena_span):
            return program_address, arena_address
        program_at = base
        arena_at = base + -(-program_span // PAGE) * PAGE
        if arena_at + arena_span > base + size:
            raise SimulatedKernelError(
                f"the Program ({program_span} B) and arena ({arena_span} B) do not fit the "
                f"RTL testbench's DDR model ({size} B): raise its DDR_DEPTH_LOG2"
            )
        return program_at, arena_at

    def close(self) -> None:
        self.accelerator.close()


def rtl_board(
    arch=None,
    *,
    program=None,
    precision=None,
    board: str | None = None,
    ddr_latency: int | None = None,
    ddr_bytes_per_cycle: float | None = None,
    max_cycles: int = DEFAULT_MAX_CYCLES,
    quiet: bool = False,
    **kwargs,
) -> SimulatedBoard:
    """A simulated board whose PL is the Verilated RTL top for ``arch`` (an ArchConfig or
    its dict; or, given ``program``, the one it was compiled for, with its precision).
    With ``board`` the DDR model gets that board's bandwidth and runs report latency at
    its clock."""
    kernel = RtlKernel(
        arch,
        program=program,
        precision=precision,
        board=board,
        ddr_latency=ddr_latency,
        ddr_bytes_per_cycle=ddr_bytes_per_cycle,
        max_cycles=max_cycles,
        quiet=quiet,
    )
    return SimulatedBoard(kernel, **kwargs)


__all__ = ["DEFAULT_MAX_CYCLES", "RtlKernel", "rtl_board"]
