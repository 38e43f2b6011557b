"""The host driver: one code path for a real PYNQ board and for the simulated boards.

Everything below "I have an MMIO for the kernel's control registers and a way to
allocate DDR buffers" is shared. On a board those come from ``pynq.Overlay`` (the
kernel IP found in ``overlay.ip_dict``) and ``pynq.allocate``; in simulation from a
``SimulatedBoard``, which is a ``pynq.Device``, through the very same ``pynq.MMIO``
and ``pynq.allocate`` calls.

A run: the Program is copied once into a DDR buffer; per image the input rows are
written into an arena buffer and flushed, the addresses and the task go into the
argument registers, ``ap_start`` is set and ``ap_done`` polled (with a timeout), and
the output rows are invalidated and read back. Batches ping-pong between two arenas
so the host prepares image i+1 and reads back image i-1 while the kernel runs image i.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..arch.regmap import (
    AP_DONE,
    AP_IDLE,
    AP_READY,
    AP_START,
    AUTO_RESTART,
    CTRL,
    register_map,
    weight_registers,
)
from ..contract import STATUS_OFFSET, ProgramRefused
from .layout import BufferMismatchError, ModelCard, ProgramLayout

KERNEL_NAME = "codesign_top"  # the HLS top function; the IP's VLNV is <vendor>:hls:codesign_top:<v>
DEFAULT_TIMEOUT_S = 10.0


class KernelTimeoutError(TimeoutError):
    """``ap_done`` was not seen in time; the message names the register state."""


class KernelBusyError(RuntimeError):
    """The kernel is not idle, so a new run cannot start."""


class KernelNotFoundError(LookupError):
    """The design has no codesign kernel (or several, and none was named)."""


class ProgramMismatchError(ValueError):
    """The Program was compiled for another ArchConfig than the bitstream's."""


def describe_ctrl(value: int) -> str:
    """``CTRL=0x00000001 (ap_start=1 ap_done=0 ap_idle=0 ap_ready=0)``."""
    bits = {
        "ap_start": AP_START,
        "ap_done": AP_DONE,
        "ap_idle": AP_IDLE,
        "ap_ready": AP_READY,
    }
    flags = " ".join(f"{name}={int(bool(value & bit))}" for name, bit in bits.items())
    if value & AUTO_RESTART:
        flags += " auto_restart=1"
    return f"CTRL=0x{value:08x} ({flags})"


def find_kernel_ip(ip_dict: dict, name: str | None = None) -> tuple[str, dict]:
    """The codesign kernel in an overlay's (or simulated board's) ``ip_dict``.

    By instance name when given, else the one IP whose VLNV names ``codesign_top``.
    """
    if name is not None:
        if name not in ip_dict:
            known = ", ".join(ip_dict) or "none"
            raise KernelNotFoundError(f"no IP {name!r} in the design; IPs: {known}")
        return name, ip_dict[name]
    found = [
        (key, desc)
        for key, desc in ip_dict.items()
        if str(desc.get("type", "")).split(":")[2:3] == [KERNEL_NAME]
    ]
    if len(found) != 1:
        kinds = ", ".join(f"{k} ({d.get('type')})" for k, d in ip_dict.items()) or "none"
        raise KernelNotFoundError(
            f"expected one {KERNEL_NAME} kernel in the design, found {len(found)}; IPs: {kinds}"
        )
    return found[0]


@dataclass
class RunTiming:
    """One image: wall seconds of host preparation, kernel (start to ap_done) and
    readback; and, on a simulated board that counts them, the kernel's clock cycles.

    On a board the seconds are the FPGA's. On a simulated board they are the simulator's
    (seconds per image where the FPGA takes milliseconds): what the FPGA would take is
    ``cycles`` at ``clock_mhz``, counted by the RTL or modelled (``cycles_source``).
    """

    prepare_s: float = 0.0
    kernel_s: float = 0.0
    readback_s: float = 0.0
    cycles: int | None = None  # None on a board (measured, not counted) or without a count
    clock_mhz: float | None = None
    cycles_source: str = ""

    @property
    def latency_ms(self) -> float | None:
        """The kernel's latency at the board clock from its cycles (None without them)."""
        if self.cycles is None or not self.clock_mhz:
            return None
        return self.cycles / (self.clock_mhz * 1e3)


class Accelerator:
    """Runs a Program on the codesign kernel.

    ``control``: the kernel's AXI4-Lite slave (``pynq.MMIO`` or an IP driver with
    ``read(offset)`` / ``write(offset, value)``). ``allocate``: ``(shape, dtype) ->
    PynqBuffer`` in memory the kernel's masters reach. ``program``: ``program.bin``
    bytes, a path, or a ``Program``. ``card``: the ``ModelCard`` that ``run(images)``
    needs to patchify images and shape outputs (``run_raw`` works without it).
    Buffers may be given (``program_buffer``, ``arenas``); they are checked against
    the Program before anything is written to the device. ``device``: the
    ``pynq.Device`` the kernel is on; when it reports each run's cycles (a
    ``SimulatedBoard``'s ``last_run()``), ``timings`` carry them.
    """

    def __init__(
        self,
        control,
        allocate,
        program,
        card: ModelCard | None = None,
        *,
        program_buffer=None,
        arenas=None,
        n_arenas: int = 2,
        timeout: float = DEFAULT_TIMEOUT_S,
        description: str = "",
        device=None,
    ):
        self.layout = program if isinstance(program, ProgramLayout) else ProgramLayout(program)
        self.card = card
        self.control = control
        # a simulated board reports each run's cycles (``last_run()``); a board does not
        self._last_run = getattr(device, "last_run", None)
        self.timeout = float(timeout)
        self.description = description
        self.regmap = register_map(self.layout.program.weight_ports)
        self._offsets = {reg.name: reg.offset for reg in self.regmap.registers}
        self.timings: list[RunTiming] = []
        # every check before the first write
        if program_buffer is not None:
            self.layout.program_spec.check(program_buffer)
        if arenas is not None:
            arenas = list(arenas)
            if not arenas:
                raise BufferMismatchError("arenas: need at least one arena buffer")
            for arena in arenas:
                self.layout.arena_spec.check(arena)
        elif n_arenas < 1:
            raise BufferMismatchError(f"n_arenas must be >= 1, got {n_arenas}")
        self._require_idle()
        spec = self.layout.program_spec
        self.program_buffer = (
            program_buffer if program_buffer is not None else allocate(spec.shape, spec.dtype)
        )
        self.arenas = arenas or [
            allocate(self.layout.arena_spec.shape, self.layout.arena_spec.dtype)
            for _ in range(n_arenas)
        ]
        self.layout.program_spec.check(self.program_buffer)  # what the allocator returned
        for arena in self.arenas:
            self.layout.arena_spec.check(arena)
        blob = np.frombuffer(self.layout.program_bytes, np.uint8)
        self.program_buffer[: blob.size] = blob
        self.program_buffer[blob.size :] = 0
        self.program_buffer.sync_to_device()

    # ------------------------------------------------------------ construction
    @classmethod
    def from_device(cls, device, program, card=None, *, ip: str | None = None, **kwargs):
        """On any ``pynq.Device`` with an ``ip_dict`` (a ``SimulatedBoard``, or the
        board's device after an overlay is loaded)."""
        import pynq

        name, desc = find_kernel_ip(device.ip_dict, ip)
        control = pynq.MMIO(desc["phys_addr"], desc["addr_range"], device=device)

        def allocate(shape, dtype):
            return pynq.allocate(shape, dtype, target=device)

        kwargs.setdefault("description", f"{name} on {getattr(device, 'name', device.tag)}")
        kwargs.setdefault("device", device)
        return cls(control, allocate, program, card, **kwargs)

    @classmethod
    def from_overlay(cls, overlay, program, card=None, *, ip: str | None = None, **kwargs):
        """On a board: ``overlay`` is a ``pynq.Overlay``, a ``.bit`` path or the folder
        holding one (``bitstreams/<model>-<board>/``)."""
        import pynq

        if not isinstance(program, ProgramLayout):
            program = ProgramLayout(program)
        manifest = {}
        if not isinstance(overlay, pynq.Overlay):
            bitfile = _find_bitfile(Path(overlay))
            manifest = _read_manifest(bitfile.parent)
            if manifest.get("arch"):
                check_program_against_arch(program, manifest["arch"])
            overlay = pynq.Overlay(str(bitfile))
        if ip is None and manifest.get("kernel_cell") in overlay.ip_dict:
            ip = manifest["kernel_cell"]
        name, desc = find_kernel_ip(overlay.ip_dict, ip)
        device = overlay.device
        control = pynq.MMIO(desc["phys_addr"], desc["addr_range"], device=device)

        def allocate(shape, dtype):
            return pynq.allocate(shape, dtype, target=device)

        kwargs.setdefault("description", f"{name} in {Path(overlay.bitfile_name).name}")
        accelerator = cls(control, allocate, program, card, **kwargs)
        accelerator.overlay = overlay
        return accelerator

    # ------------------------------------------------------------ registers
    def read_ctrl(self) -> int:
        """CTRL (note: reading clears ap_done and ap_ready, as on Vitis kernels)."""
        return int(self.control.read(CTRL))

    def _require_idle(self) -> None:
        ctrl = self.read_ctrl()
        if ctrl & AP_START or not ctrl & AP_IDLE:
            raise KernelBusyError(f"kernel is not idle: {describe_ctrl(ctrl)}")

    def _write_args(self, arena, task: int) -> None:
        program = self.program_buffer.device_address
        weight_masters = weight_registers(self.layout.program.weight_ports)
        for name, address in (
            ("program", program),
            ("arena", arena.device_address),
            *((name, program) for name in weight_masters),  # each reads its plane of program.bin
        ):
            offset = self._offsets[name]
            self.control.write(offset, int(address) & 0xFFFFFFFF)
            self.control.write(offset + 4, (int(address) >> 32) & 0xFFFFFFFF)
        self.control.write(self._offsets["task"], int(task))

    def _read_arg(self, name: str) -> int:
        offset = self._offsets[name]
        value = int(self.control.read(offset))
        if next(r.bits for r in self.regmap.registers if r.name == name) == 64:
            value |= int(self.control.read(offset + 4)) << 32
        return value

    def start(self, arena, task: int) -> None:
        """Write the arguments and set ap_start (the arena's input already flushed)."""
        self._write_args(arena, task)
        self.control.write(CTRL, AP_START)

    def wait(self, timeout: float | None = None) -> int:
        """Poll CTRL until ap_done; raise KernelTimeoutError naming the register state."""
        timeout = self.timeout if timeout is None else float(timeout)
        deadline = time.perf_counter() + timeout
        delay = 0.0
        while True:
            ctrl = self.read_ctrl()
            if ctrl & AP_DONE:
                return ctrl
            if time.perf_counter() >= deadline:
                args = (
                    f"program=0x{self._read_arg('program'):x}, "
                    f"arena=0x{self._read_arg('arena'):x}, task={self._read_arg('task')}"
                )
                raise KernelTimeoutError(
                    f"ap_done never set after {timeout:.1f} s; {describe_ctrl(ctrl)}; {args}"
                )
            if delay:
                time.sleep(delay)
            delay = min(max(2 * delay, 5e-6), 5e-4)

    def check_status(self) -> None:
        """After ap_done: raise ProgramRefused when STATUS (0x80, both kernels) says the
        kernel refused the Program and ran nothing."""
        status = int(self.control.read(STATUS_OFFSET))
        if status:
            raise ProgramRefused.from_status(
                status, self.layout.program_bytes, executor=f"the kernel{self._on()}"
            )

    def _on(self) -> str:
        return f" on {self.description}" if self.description else ""

    # ------------------------------------------------------------ runs
    def _prepare(self, arena, raw_rows: np.ndarray) -> None:
        self.layout.write_input(arena, raw_rows)
        self.layout.input_region(arena).sync_to_device()

    def _readback(self, arena, task: int) -> np.ndarray:
        self.layout.output_region(arena, task).sync_from_device()
        return self.layout.read_output(arena, task)

    def run_raw(self, raw, task: int = 0, *, timeout: float | None = None) -> np.ndarray:
        """Raw input [rows, cols] or [B, rows, cols] -> raw outputs [B, rows, cols] (int64).

        Inputs and task are checked before anything is written to the device.
        """
        task = self.layout.check_task(task)
        batch = self.layout.check_input(raw)
        ref = self.layout.output(task)
        outputs = np.empty((len(batch), ref.rows, ref.cols), np.int64)
        timings = [RunTiming() for _ in batch]
        self._require_idle()
        overlap = len(self.arenas) >= 2
        pending = None  # (index, arena, started_at)

        def finish(index, arena, started):
            self.wait(timeout)
            self.check_status()
            done = time.perf_counter()
            timings[index].kernel_s = done - started
            self._note_cycles(timings[index])
            return index, arena, done

        def collect(index, arena):
            began = time.perf_counter()
            outputs[index] = self._readback(arena, task)
            timings[index].readback_s = time.perf_counter() - began

        for index, rows in enumerate(batch):
            arena = self.arenas[index % len(self.arenas)]
            if pending is not None and not overlap:
                collect(*finish(*pending)[:2])
                pending = None
            began = time.perf_counter()
            self._prepare(arena, rows)
            timings[index].prepare_s = time.perf_counter() - began
            finished = finish(*pending) if pending is not None else None
            self.start(arena, task)
            pending = (index, arena, time.perf_counter())
            if finished is not None:
                collect(*finished[:2])  # the previous image, while this one runs
        if pending is not None:
            collect(*finish(*pending)[:2])
        self.timings = timings
        return outputs

    def _note_cycles(self, timing: RunTiming) -> None:
        """The cycles of the run that just finished, when the device counts them (runs
        are one at a time, so the device's last run is this one)."""
        run = self._last_run() if self._last_run is not None else None
        if run is not None and getattr(run, "cycles", None) is not None:
            timing.cycles = int(run.cycles)
            timing.clock_mhz = run.clock_mhz
            timing.cycles_source = run.source

    def quantize_input(self, images) -> np.ndarray:
        """Images [B, C, H, W] (or [C, H, W]) -> raw input rows [B, patches, C*P*P]."""
        return self.layout.quantize_input(self._need_card().patchify(images))

    def run(self, images, task: int = 0, *, timeout: float | None = None) -> np.ndarray:
        """Images -> float outputs shaped like the torch model's: [B, classes] for a ViT,
        [B, patches, channels] for an M3ViT task."""
        raw = self.run_raw(self.quantize_input(images), task, timeout=timeout)
        return self._need_card().finish(self.layout.decode(raw, task))

    def _need_card(self) -> ModelCard:
        if self.card is None:
            raise ValueError("run(images) needs the ModelCard (host.json); use run_raw for rows")
        return self.card

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Give the DDR buffers back (the accelerator is unusable afterwards)."""
        for buffer in (getattr(self, "program_buffer", None), *getattr(self, "arenas", [])):
            if buffer is not None and hasattr(buffer, "freebuffer"):
                buffer.freebuffer()
        self.arenas = []

    def __enter__(self) -> Accelerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        program = self.layout.program
        where = f" ({self.description})" if self.description else ""
        return (
            f"Accelerator({program.model}, {program.n_tasks} task(s), "
            f"{len(self.layout.program_bytes)} B program, {program.arena_bytes} B arena{where})"
        )


def _find_bitfile(path: Path) -> Path:
    if path.is_file():
        return path
    bits = sorted(path.glob("*.bit")) if path.is_dir() else []
    if len(bits) != 1:
        raise FileNotFoundError(
            f"{path}: expected one .bit file (with its .hwh beside it), found {len(bits)}; "
            "bitstreams are built with `make bitstream` on a machine with Vivado"
        )
    return bits[0]


TABLE_INDEX_BITS = {
    "gelu_delta": "gelu_index_bits",
    "exp": "exp_index_bits",
    "recip": "recip_index_bits",
    "rsqrt": "rsqrt_index_bits",
}


def _read_manifest(folder: Path) -> dict:
    """The bitstream's manifest.json (written by `make bitstream`), or {}."""
    path = folder / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def check_program_against_arch(program, arch: dict) -> None:
    """Refuse a Program the bitstream's kernel would reject: another bus width or UCU
    tile, more attention slots, other table sizes (the kernel's own check, ERR_*, would
    make it skip the run and leave the arena untouched, which a host cannot tell)."""
    layout = program if isinstance(program, ProgramLayout) else ProgramLayout(program)
    header = layout.program
    problems = [
        f"{key} {getattr(header, key)} vs bitstream {arch[key]}"
        for key in ("bus_bits", "tile_in", "tile_out")
        if key in arch and arch[key] != getattr(header, key)
    ]
    if "attn_parallel" in arch and header.attn_parallel > arch["attn_parallel"]:
        problems.append(f"attn_parallel {header.attn_parallel} > bitstream {arch['attn_parallel']}")
    for table, key in TABLE_INDEX_BITS.items():
        if key in arch and header.tables[table].index_bits != arch[key]:
            problems.append(f"{key} {header.tables[table].index_bits} vs bitstream {arch[key]}")
    if problems:
        raise ProgramMismatchError(
            "program compiled for another accelerator: " + ", ".join(problems)
        )


__all__ = [
    "Accelerator",
    "KernelBusyError",
    "KernelNotFoundError",
    "KernelTimeoutError",
    "ProgramMismatchError",
    "RunTiming",
    "check_program_against_arch",
    "describe_ctrl",
    "find_kernel_ip",
]
