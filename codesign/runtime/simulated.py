"""Simulated boards behind the real pynq API.

``SimulatedBoard`` is a ``pynq.Device`` with the ``REGISTER_RW`` capability: ``pynq.MMIO``
turns every register access into ``read_registers`` / ``write_registers`` calls, and
``pynq.allocate(..., target=board)`` returns ordinary ``PynqBuffer`` objects whose
device addresses live in a simulated DDR. The host side of a buffer and its DDR copy
are separate, like a cacheable buffer on a board: ``sync_to_device`` (flush) copies
host -> DDR, ``sync_from_device`` (invalidate) DDR -> host, so a driver that forgets
either gets stale data here too.

The control slave follows Vitis ``ap_ctrl_hs``: writing ap_start latches the argument
registers and starts the kernel in a worker thread; CTRL reads ap_start=1, ap_idle=0
while it runs; at the end ap_done and ap_ready are set (clear on read) and ap_idle
returns. What computes is a ``KernelModel``: ``GoldenKernel`` (the numpy golden
executor), ``CsimKernel`` (the HLS kernel compiled with g++, ``csim_device.py``) and
``RtlKernel`` (the Verilated RTL top, ``rtl_device.py``) — one ``execute`` method that
reads the Program and the arena from ``SimulatedMemory`` and writes the arena back.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from pynq.buffer import PynqBuffer
from pynq.pl_server.device import Device

from ..arch.regmap import (
    AP_DONE,
    AP_IDLE,
    AP_READY,
    AP_START,
    AUTO_RESTART,
    CTRL,
    GIE,
    IER,
    ISR,
    register_map,
)
from ..contract import STATUS_OFFSET, ProgramRefused
from ..program import HEADER_BYTES, HEADER_FIELDS, Program

KERNEL_BASE = 0xA000_0000  # M_AXI_HPM0_FPD window of a Zynq UltraScale+, where Vivado puts IPs
KERNEL_RANGE = 0x1_0000  # 64 KiB, the address range Vivado assigns an HLS control slave
DDR_BASE = 0x8_0000_0000  # above 4 GiB (ZynqMP DDR high) so the pointers' high words matter
PAGE = 4096
KERNEL_VLNV = "xilinx.com:hls:codesign_top:1.0"
CYCLE_MODEL = "cycle model (codesign.estimate)"  # KernelRun.source of modelled cycles


class SimulatedBusError(RuntimeError):
    """An access to a simulated address no buffer covers (an AXI DECERR on a board)."""


class SimulatedKernelError(RuntimeError):
    """The simulated kernel failed; the cause is chained."""


# ---------------------------------------------------------------- memory


class SimulatedBuffer(PynqBuffer):
    """A PynqBuffer in simulated DDR; releasing it frees its region (views free nothing)."""

    def freebuffer(self):
        handle = getattr(self, "_region", 0)
        if handle:
            self._region = 0
            self.device.memory.free(handle)


@dataclass
class Region:
    handle: int
    address: int
    host: np.ndarray  # what the CPU sees (the PynqBuffer's memory)
    ddr: np.ndarray  # what the kernel's AXI masters see


class SimulatedMemory:
    """DDR as a set of allocated regions (page aligned, never reused after free)."""

    def __init__(self, base: int = DDR_BASE):
        self._next = base
        self._handles = 0
        self._by_handle: dict[int, Region] = {}
        self._starts: list[int] = []
        self._regions: list[Region] = []

    def allocate(self, nbytes: int) -> Region:
        nbytes = max(int(nbytes), 1)
        self._handles += 1
        region = Region(
            self._handles, self._next, np.zeros(nbytes, np.uint8), np.zeros(nbytes, np.uint8)
        )
        self._next += -(-nbytes // PAGE) * PAGE + PAGE  # a guard page between buffers
        self._by_handle[region.handle] = region
        index = bisect.bisect(self._starts, region.address)
        self._starts.insert(index, region.address)
        self._regions.insert(index, region)
        return region

    def region(self, handle: int) -> Region:
        if handle not in self._by_handle:
            raise SimulatedBusError(f"buffer {handle} was freed; it has no DDR any more")
        return self._by_handle[handle]

    def free(self, handle: int) -> None:
        """Forget a region; later kernel accesses to it are bus errors."""
        region = self._by_handle.pop(handle, None)
        if region is None:
            return
        index = self._regions.index(region)
        del self._regions[index]
        del self._starts[index]

    def view(self, address: int, nbytes: int) -> np.ndarray:
        """The DDR bytes [address, address + nbytes) as a writable uint8 view."""
        index = bisect.bisect(self._starts, address) - 1
        if index >= 0:
            region = self._regions[index]
            start = address - region.address
            if start + nbytes <= region.ddr.size:
                return region.ddr[start : start + nbytes]
        raise SimulatedBusError(
            f"no buffer covers DDR [0x{address:x}, 0x{address + nbytes:x}) "
            "(freed, never allocated, or too small)"
        )

    def extent(self, address: int) -> int:
        """Bytes from `address` to the end of the buffer holding it."""
        index = bisect.bisect(self._starts, address) - 1
        if index >= 0:
            region = self._regions[index]
            if address < region.address + region.ddr.size:
                return region.address + region.ddr.size - address
        raise SimulatedBusError(f"no buffer holds DDR address 0x{address:x}")

    @property
    def allocated_bytes(self) -> int:
        return sum(region.ddr.size for region in self._regions)


# ---------------------------------------------------------------- kernels


@dataclass
class KernelRun:
    """What one simulated run reports: wall time of the simulator, and the cycles when
    the model counts them (``source`` says how: an RTL clock count or the cycle model)."""

    task: int
    seconds: float
    cycles: int | None = None
    clock_mhz: float | None = None
    source: str = ""

    @property
    def latency_ms(self) -> float | None:
        """The cycles at the board's clock (None when the model counts none)."""
        if self.cycles is None or not self.clock_mhz:
            return None
        return self.cycles / (self.clock_mhz * 1e3)


class KernelModel:
    """What computes in a simulated board: the PL behind the control registers.

    ``execute(memory, program_address, arena_address, task)`` is called in a worker
    thread when the host sets ap_start, with the latched argument registers. It reads
    the Program and the arena through ``memory.view(address, nbytes)`` (uint8 views of
    the simulated DDR), computes, writes the arena back in place and returns the cycle
    count when it has one (else None). An exception becomes a ``SimulatedKernelError``
    at the host's next register access; returning sets ap_done.

    The Verilated RTL top is one more subclass (``rtl_device.RtlKernel``): ``execute``
    copies the Program and the arena into the testbench's DDR model, writes the three
    arguments and ap_start through the RTL's AXI4-Lite slave, clocks the model to its
    interrupt, copies the arena back and returns the cycles the RTL counted. Nothing
    else changes: the board, the driver and the notebooks stay as they are
    (``Bundle.open("rtl")`` names it).
    """

    name = "kernel"
    clock_mhz: float | None = None  # the PL clock the counted cycles run at
    cycles_source = ""

    def execute(
        self, memory: SimulatedMemory, program_address: int, arena_address: int, task: int
    ) -> int | None:
        raise NotImplementedError

    @staticmethod
    def program_bytes(memory: SimulatedMemory, address: int) -> bytes:
        """The Program in DDR, as long as its header says it is."""
        header = memory.view(address, HEADER_BYTES).view("<u4")
        total = int(header[2 + HEADER_FIELDS.index("total_bytes")])
        return bytes(memory.view(address, total))


class GoldenKernel(KernelModel):
    """The numpy golden executor as the kernel: the reference every board must equal.

    With ``board`` (a board name), each run also reports the cycles of the accelerator's
    schedule from ``codesign.estimate``, costed with this run's real MoE queue lengths:
    a model of the FPGA's latency, labelled as such, never a measurement.
    """

    name = "golden"

    def __init__(self, board: str | None = None, cache_size: int = 4, arch=None):
        from ..executors import GoldenArena

        self.arch = arch  # refuse what the kernel for this ArchConfig refuses (else: the loader)
        # the executor Build.predict uses, whose GoldenExecutors note MoE queue lengths
        self.executor = GoldenArena(arch, cache_size, make=_counting_executor)
        self.board = board
        if board is not None:
            from ..arch import get_board

            self.clock_mhz = get_board(board).clock_mhz
            self.cycles_source = CYCLE_MODEL

    def _executor(self, blob: bytes):
        return self.executor.executor(blob)

    def execute(self, memory, program_address, arena_address, task):
        blob = self.program_bytes(memory, program_address)
        executor = self._executor(blob)
        arena = memory.view(arena_address, executor.program.arena_bytes).view("<i4")
        executor.expert_counts = {} if self.board else None
        self.executor.run(blob, arena, task)  # every layer's output, as the kernel leaves it
        return self._cycles(executor, task)

    def program(self, blob: bytes) -> Program:
        """The Program of ``blob`` (parsed once, cached with its executor)."""
        return self._executor(blob).program

    def model_cycles(self, blob: bytes, raw: np.ndarray, task: int) -> int | None:
        """The cycle model's figure for a run of Program ``blob`` on input ``raw`` that
        another kernel computed (the C-sim board): the golden executor runs the same input
        for the MoE queue lengths, when the Program has MoE layers. None without a board."""
        if self.board is None:
            return None
        executor = self._executor(blob)
        executor.expert_counts = {}
        if any(layer.op.name == "MOE_EXPERTS" for layer in executor.program.layers):
            executor.run(raw, task)
        return self._cycles(executor, task)

    def _cycles(self, executor, task: int) -> int | None:
        if self.board is None:
            return None
        from ..estimate import estimate_cycles
        from ..hls.csim import arch_from_program

        program = executor.program
        timing = estimate_cycles(
            program, arch_from_program(program), self.board, executor.expert_counts, task
        )
        return int(timing["cycles"])


def _counting_executor(program: Program, arch=None):
    """A GoldenExecutor that notes each MoE layer's queue lengths (for the cycle model)."""
    from ..golden import GoldenExecutor

    class CountingExecutor(GoldenExecutor):
        expert_counts: dict

        def execute(self, layer, task):
            if layer.op.name == "MOE_EXPERTS" and self.expert_counts is not None:
                from ..estimate import read_expert_counts  # the cycle model (not in a bundle)

                self.expert_counts[layer.name] = read_expert_counts(self.program, self.arena, layer)
            return super().execute(layer, task)

    executor = CountingExecutor(program, arch)
    executor.expert_counts = None
    return executor


# ---------------------------------------------------------------- the board


@dataclass
class BoardStats:
    register_reads: int = 0
    register_writes: int = 0
    bytes_flushed: int = 0
    bytes_invalidated: int = 0
    runs: list[KernelRun] = field(default_factory=list)


class SimulatedBoard(Device):
    """A pynq ``Device`` whose PL is a ``KernelModel`` and whose DDR is simulated.

    ``stall=True`` keeps a started kernel running forever (ap_done never comes), for
    testing host code's timeout handling. ``record=True`` keeps a log of every device
    write (register writes and buffer flushes) in ``writes``.
    """

    def __init__(
        self,
        kernel: KernelModel,
        name: str | None = None,
        *,
        base_address: int = KERNEL_BASE,
        stall: bool = False,
        record: bool = False,
    ):
        super().__init__(name or f"sim-{kernel.name}")
        self.kernel = kernel
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False, "CALLABLE": False}
        self.memory = SimulatedMemory()
        self.base_address = base_address
        self.stall = stall
        self.record = record
        self.writes: list[tuple[str, int, int]] = []  # (kind, address, bytes)
        self.stats = BoardStats()
        self.ip_dict = {
            "codesign_top_0": {
                "fullpath": "codesign_top_0",
                "type": KERNEL_VLNV,
                "phys_addr": base_address,
                "addr_range": KERNEL_RANGE,
                "state": None,
                "interrupts": {},
                "gpio": {},
            }
        }
        self.mem_dict: dict = {}
        self._regmap = register_map()
        self._lock = threading.Lock()
        self._args = {}  # word offset -> value of the argument registers
        self._start = False
        self._done = False
        self._ready = False
        self._idle = True
        self._auto_restart = False
        self._gie = 0
        self._ier = 0
        self._isr = 0
        self._fault: BaseException | None = None
        self._worker: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.tag

    def __repr__(self) -> str:
        return f"SimulatedBoard({self.tag}, kernel={self.kernel.name})"

    # ------------------------------------------------------------ buffers
    def allocate(self, shape, dtype, **kwargs) -> PynqBuffer:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if np.ndim(shape) else int(shape)
        region = self.memory.allocate(count * dtype.itemsize)
        buffer = SimulatedBuffer(
            shape,
            dtype,
            buffer=region.host,
            device=self,
            device_address=region.address,
            bo=region.handle,
            coherent=False,
        )
        buffer._region = region.handle
        return buffer

    def flush(self, bo, offset, ptr, size) -> None:
        region = self.memory.region(bo)
        region.ddr[offset : offset + size] = region.host[offset : offset + size]
        self.stats.bytes_flushed += size
        self._log("flush", region.address + offset, size)

    def invalidate(self, bo, offset, ptr, size) -> None:
        region = self.memory.region(bo)
        region.host[offset : offset + size] = region.ddr[offset : offset + size]
        self.stats.bytes_invalidated += size

    def _log(self, kind: str, address: int, nbytes: int) -> None:
        if self.record:
            self.writes.append((kind, address, nbytes))

    # ------------------------------------------------------------ registers
    def _control_offset(self, address: int) -> int | None:
        offset = address - self.base_address
        return offset if 0 <= offset < KERNEL_RANGE else None

    def read_registers(self, address: int, length: int) -> bytes:
        self._raise_fault()
        offset = self._control_offset(address)
        if offset is None:  # an MMIO on DDR reads the memory
            return bytes(self.memory.view(address, length))
        self.stats.register_reads += 1
        words = [self._read_word(offset + 4 * k) for k in range(-(-length // 4))]
        return np.array(words, "<u4").tobytes()[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        self._raise_fault()
        data = bytes(data)
        self._log("register", address, len(data))
        offset = self._control_offset(address)
        if offset is None:
            self.memory.view(address, len(data))[:] = np.frombuffer(data, np.uint8)
            return
        self.stats.register_writes += 1
        if len(data) % 4 or offset % 4:
            raise SimulatedBusError(f"unaligned control write at 0x{address:x}")
        for k, word in enumerate(np.frombuffer(data, "<u4")):
            self._write_word(offset + 4 * k, int(word))

    def _read_word(self, offset: int) -> int:
        with self._lock:
            if offset == CTRL:
                value = (
                    AP_START * self._start
                    | AP_DONE * self._done
                    | AP_IDLE * self._idle
                    | AP_READY * self._ready
                    | AUTO_RESTART * self._auto_restart
                )
                self._done = self._ready = False  # clear on read
                return value
            if offset == GIE:
                return self._gie
            if offset == IER:
                return self._ier
            if offset == ISR:
                return self._isr
            return self._args.get(offset, 0)

    def _write_word(self, offset: int, value: int) -> None:
        with self._lock:
            if offset == CTRL:
                self._auto_restart = bool(value & AUTO_RESTART)
                if value & AP_START and self._idle and not self._start:
                    self._launch()
            elif offset == GIE:
                self._gie = value & 1
            elif offset == IER:
                self._ier = value & 3
            elif offset == ISR:
                self._isr ^= value & 3  # toggle on write
            elif offset < self._regmap.size:
                self._args[offset] = value & 0xFFFFFFFF

    def _arg(self, name: str) -> int:
        offset = self._regmap.offset(name)
        bits = next(r.bits for r in self._regmap.registers if r.name == name)
        value = self._args.get(offset, 0)
        if bits == 64:
            value |= self._args.get(offset + 4, 0) << 32
        return value

    # ------------------------------------------------------------ the kernel
    def _launch(self) -> None:
        """ap_start: latch the arguments, leave idle, run the model (lock held)."""
        self._start, self._idle = True, False
        if self.stall:
            return
        program, arena, task = self._arg("program"), self._arg("arena"), self._arg("task")
        self._worker = threading.Thread(
            target=self._execute, args=(program, arena, task), daemon=True
        )
        self._worker.start()

    def _execute(self, program: int, arena: int, task: int) -> None:
        began = time.perf_counter()
        try:
            cycles = self.kernel.execute(self.memory, program, arena, task)
        except ProgramRefused as refused:  # the kernel ran nothing; STATUS says why
            with self._lock:
                self._args[STATUS_OFFSET] = refused.status
                self._finish()
            return
        except BaseException as error:  # surfaced to the host at its next register access
            with self._lock:
                self._fault = error
            return
        kernel = self.kernel
        run = KernelRun(
            task, time.perf_counter() - began, cycles, kernel.clock_mhz, kernel.cycles_source
        )
        with self._lock:
            self._args[STATUS_OFFSET] = 0
            self.stats.runs.append(run)
            self._finish()

    def _finish(self) -> None:
        """End of a run (lock held): ap_done, ap_ready, ap_idle; ISR done if enabled."""
        self._start, self._done, self._ready, self._idle = False, True, True, True
        if self._ier & 1:
            self._isr |= 1

    def _raise_fault(self) -> None:
        if self._fault is not None:
            error, self._fault = self._fault, None
            with self._lock:  # the failed run ends; the board is usable again
                self._start, self._idle = False, True
            raise SimulatedKernelError(
                f"simulated kernel '{self.kernel.name}' failed: {error}"
            ) from error

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._start

    def release(self) -> None:
        """End a stalled run as if the kernel finished (for timeout tests)."""
        with self._lock:
            if self._start:
                self._finish()
        self.stall = False

    def last_run(self) -> KernelRun | None:
        return self.stats.runs[-1] if self.stats.runs else None


def golden_board(board: str | None = None, *, arch=None, **kwargs) -> SimulatedBoard:
    """A simulated board computing with the golden executor (fast, always available);
    with ``board`` each run also reports the cycle model's latency on that board; with
    ``arch`` (an ArchConfig) it refuses exactly what that kernel refuses (STATUS, then
    ``ProgramRefused`` from the driver), else what no kernel could run."""
    return SimulatedBoard(GoldenKernel(board, arch=arch), **kwargs)


__all__ = [
    "CYCLE_MODEL",
    "DDR_BASE",
    "KERNEL_BASE",
    "GoldenKernel",
    "KernelModel",
    "KernelRun",
    "SimulatedBoard",
    "SimulatedBusError",
    "SimulatedKernelError",
    "SimulatedMemory",
    "golden_board",
]
