"""The Verilated accelerator as a Python object: a C++ harness loaded with ctypes.

cocotb drives a simulation through VPI from Python, one coroutine step per event; for a
whole inference (millions of cycles) that is far too slow. Here the testbench top
``codesign_tb`` (``codesign_top`` + the SystemVerilog DDR model ``cds_axi_ddr_model``) is
verilated together with ``hls_templates/rtl/harness/harness.cpp.j2`` into one shared
library whose C functions clock the model, run AXI4-Lite transactions on the control
slave with their real handshakes, and read or write the DDR model's memory array
directly (a Verilator config file makes that one array public, nothing else).

* :func:`build_harness` verilates and compiles (``-j2``), cached under
  ``codesign.util.cache_dir()/rtl/harness/`` (``codesign.util.cached_build``) by a hash of
  every source, the parameters, the harness template, the flags and the Verilator and g++
  versions, behind a file lock.
  A big tile takes minutes; a rich progress bar counts the compiled C++ files.
* :class:`RtlHarness` is the ctypes handle: ``reset``, ``axil_write``/``axil_read``,
  ``mem_write``/``mem_read``, ``run(max_cycles)`` (until the interrupt pin), ``cycles``.
* :class:`RtlAccelerator` runs a Program like the board does: Program and arena in DDR,
  argument registers, ap_start, interrupt, then the output and the debug registers
  (spec §4: total cycles and per-layer cycles).

Waveforms: ``CODESIGN_WAVES=1`` builds with tracing and writes one file per harness
instance under ``CODESIGN_WAVES_DIR`` (default ``./rtl_waves``): FST when the compiler
finds ``lz4.h`` (Verilator's FST writer needs liblz4), else VCD.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..arch.regmap import (
    AP_DONE,
    AP_IDLE,
    AP_START,
    CTRL,
    GIE,
    IER,
    ISR,
    register_map,
    weight_registers,
)
from ..util import cache_dir, cached_build
from .sim import ToolMissing, ensure_verilator, waves_enabled

__all__ = [
    "DEBUG_REGISTERS",
    "HarnessBuild",
    "HarnessError",
    "RtlAccelerator",
    "RtlHarness",
    "RtlRun",
    "RtlTimeoutError",
    "build_harness",
    "harness_sources",
]

TB_TOP = "codesign_tb"
DDR_MODULE = "cds_axi_ddr_model"
DDR_INSTANCE = "ddr"  # codesign_tb's instance of the DDR model
DDR_VAR = "mem"
TEMPLATE = "harness.cpp.j2"
LIBRARY = "libcds_harness.so"
_FORMAT = 1  # bump to invalidate every cached harness
HARNESS_KIND = "rtl/harness"  # cache_dir()/rtl/harness/<top>-<key>/
DDR_BASE = 0x8_0000_0000  # the testbench's DDR window = the simulated boards' DDR_BASE
DEFAULT_MAX_CYCLES = 1_000_000_000

from ..contract import DEBUG_REGISTERS, ProgramRefused  # noqa: E402 (the contract's registers)

# Verilator flags of the harness build: no -Wall (lint is `codesign.rtl.sim.lint`'s job),
# X handling as in the cocotb builds so both simulate the same.
VERILATOR_ARGS = ("-Wno-fatal", "--x-assign", "fast", "--x-initial", "fast", "-O3")
# The model's C++: Verilator's default -Os; -O2 simulates ~20% faster, compiles ~2x longer.
OPT_FAST = "-Os"


class HarnessError(RuntimeError):
    """The harness cannot be built or the simulation failed ($fatal, bus error)."""


class RtlTimeoutError(TimeoutError):
    """The RTL did not raise its interrupt in time; the message has the register state."""


# ---------------------------------------------------------------------------- build


@dataclass
class HarnessBuild:
    """A compiled harness library and what the harness needs to know about it."""

    library: Path
    top: str
    mem_member: str
    elem_bits: int
    mem_depth: int
    waves: str  # "" (none), "fst" or "vcd"
    built: bool = False
    seconds: float = 0.0
    parameters: dict = field(default_factory=dict)


def harness_sources(arch, precision=None) -> dict[str, str]:
    """The rendered SystemVerilog of ``codesign_tb`` and everything it instantiates."""
    from .render import list_units, unit_sources

    missing = [unit for unit in (TB_TOP, "codesign_top") if unit not in list_units()]
    if missing:
        raise HarnessError(
            f"no template for {' and '.join(missing)} in hls_templates/rtl/ yet: the RTL "
            "board runs the accelerator top codesign_top inside the testbench codesign_tb"
        )
    return dict(unit_sources([TB_TOP], arch, precision))


def _template_text() -> str:
    from ..templates import templates_root

    return (templates_root() / "rtl" / "harness" / TEMPLATE).read_text()


def _render_harness(**context) -> str:
    from ..templates import environment

    return environment("rtl/harness").get_template(TEMPLATE).render(**context)


def _tool_versions() -> dict:
    exe = ensure_verilator()
    verilator = subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout
    cxx = os.environ.get("CXX", "g++")
    gxx = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    return {"verilator": verilator.strip(), "cxx": (gxx.splitlines() or [cxx])[0]}


_ELEM_BITS = {"CData": 8, "SData": 16, "IData": 32, "QData": 64}
_MEM_RE = re.compile(
    r"VlUnpacked<\s*(CData|SData|IData|QData|VlWide<(\d+)>)\s*/\*(\d+):(\d+)\*/\s*,\s*(\d+)\s*>"
    r"\s+(\w+)\s*;"
)


def _find_memory(root_header: Path, member: str) -> tuple[str, int, int]:
    """The DDR array in the verilated root class: (member, element bits, depth)."""
    text = root_header.read_text()
    found = []
    for match in _MEM_RE.finditer(text):
        kind, wide, msb, lsb, depth, name = match.groups()
        if name != member:
            continue
        bits = 32 * int(wide) if wide else _ELEM_BITS[kind]
        declared = int(msb) - int(lsb) + 1
        if declared != bits:
            raise HarnessError(
                f"{name}: {declared}-bit elements are not a byte image of DDR (stored in "
                f"{bits} bits); declare the DDR model's array with 8/16/32/64 or k*32 bit words"
            )
        found.append((name, bits, int(depth)))
    if len(found) != 1:
        names = ", ".join(f[0] for f in found) or "none"
        raise HarnessError(f"expected the DDR array {member} in {root_header.name}, found: {names}")
    return found[0]


def _wave_format() -> str:
    """FST when the compiler finds lz4.h (Verilator's FST writer needs it), else VCD."""
    cxx = os.environ.get("CXX", "g++")
    probe = subprocess.run(
        [cxx, "-x", "c++", "-E", "-", "-o", os.devnull],
        input="#include <lz4.h>\n",
        capture_output=True,
        text=True,
        check=False,
    )
    return "fst" if probe.returncode == 0 else "vcd"


def _find_port(top_header: Path, port: str) -> str:
    """The C++ member of a top-level port (Verilator renames C++ keywords such as
    ``interrupt`` to ``__SYM__interrupt``)."""
    match = re.search(rf"&\s*((?:__SYM__)?{port})\s*,", top_header.read_text())
    if match is None:
        raise HarnessError(f"{top_header.name}: the top has no port {port!r}")
    return match.group(1)


def build_harness(
    sources: Mapping[str, str],
    *,
    top: str = TB_TOP,
    parameters: Mapping[str, object] | None = None,
    ddr_module: str = DDR_MODULE,
    ddr_instance: str = DDR_INSTANCE,
    ddr_var: str = DDR_VAR,
    waves: bool | None = None,
    jobs: int = 2,
    quiet: bool = False,
) -> HarnessBuild:
    """Verilate `top` from `sources` ({filename: SV text}) with the C++ harness into a
    shared library; from the cache when the same sources were built before."""
    ensure_verilator()
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        raise ToolMissing("no C++ compiler (g++) on PATH for the Verilator harness")
    waves = waves_enabled() if waves is None else waves
    waves = _wave_format() if waves else ""
    params = dict(parameters or {})
    versions = _tool_versions()
    key_data = json.dumps(
        {
            "format": _FORMAT,
            "sources": sorted(sources.items()),
            "top": top,
            "parameters": params,
            "ddr": [ddr_module, ddr_instance, ddr_var],
            "waves": waves,
            "template": _template_text(),
            "flags": [VERILATOR_ARGS, OPT_FAST],
            "versions": versions,
        },
        sort_keys=True,
        default=str,
    )
    key = hashlib.sha256(key_data.encode()).hexdigest()[:20]
    base = cache_dir() / HARNESS_KIND
    entry = base / f"{top}-{key}"
    info_path = entry / "harness.json"

    def cached() -> HarnessBuild | None:
        if not info_path.is_file():
            return None
        info = json.loads(info_path.read_text())
        info_path.touch()
        return HarnessBuild(
            library=entry / LIBRARY,
            top=top,
            mem_member=info["mem_member"],
            elem_bits=info["elem_bits"],
            mem_depth=info["mem_depth"],
            waves=waves,
            parameters=params,
        )

    began = time.perf_counter()
    found: list = []

    def build(work: Path) -> None:
        ddr = (ddr_module, ddr_instance, ddr_var)
        found.extend(_compile(work, sources, top, params, ddr, waves, jobs, quiet))
        info = {
            "top": top,
            "mem_member": found[0],
            "elem_bits": found[1],
            "mem_depth": found[2],
            "parameters": params,
            "waves": waves,
            "seconds": round(time.perf_counter() - began, 1),
            **versions,
        }
        (work / "harness.json").write_text(json.dumps(info, indent=1))
        shutil.rmtree(work / "obj", ignore_errors=True)  # objects: ~100 MB for a big top

    def keep_log(work: Path) -> None:  # the error message names this log
        if (work / "build.log").is_file():
            shutil.copy2(work / "build.log", base / f"failed-{top}-{key}.log")

    _, built = cached_build(
        HARNESS_KIND, f"{top}-{key}", build,
        complete=lambda entry: (entry / "harness.json").is_file(), on_failure=keep_log,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    if not built:
        return cached()
    _prune(base)
    build = cached()
    build.built, build.seconds = True, seconds
    return build


def _compile(work, sources, top, params, ddr, waves, jobs, quiet):
    """verilate -> find the DDR array -> render the harness -> make -> shared library."""
    ddr_module, ddr_instance, ddr_var = ddr
    exe = ensure_verilator()
    src = work / "src"
    src.mkdir(parents=True)
    paths = []
    for name, text in sources.items():
        (src / name).write_text(text)
        paths.append(src / name)
    config = src / "harness.vlt"
    config.write_text(
        f'`verilator_config\npublic_flat_rw -module "{ddr_module}" -var "{ddr_var}"\n'
    )
    obj = work / "obj"
    harness_cpp = work / "harness.cpp"
    harness_cpp.write_text("// rendered after verilation\n")
    log = work / "build.log"
    cmd = [
        str(exe),
        "--cc",
        "--exe",
        "--Mdir",
        str(obj),
        "--top-module",
        top,
        "-o",
        str(work / LIBRARY),
        *VERILATOR_ARGS,
        "-CFLAGS",
        "-fPIC",
        "-LDFLAGS",
        "-shared",
        *([f"--trace-{waves}" if waves == "fst" else "--trace"] if waves else []),
        *[f"-G{name}={value}" for name, value in params.items()],
        str(config),
        *map(str, paths),
        str(harness_cpp),
    ]
    with _Progress(top, quiet) as progress:
        progress.stage("verilating")
        _run(cmd, work, log)
        flat = f"{top}__DOT__{ddr_instance}__DOT__{ddr_var}"  # Verilator's flattened name
        member, bits, depth = _find_memory(obj / f"V{top}___024root.h", flat)
        irq = _find_port(obj / f"V{top}.h", "interrupt")
        harness_cpp.write_text(
            _render_harness(
                top=top,
                ddr_module=ddr_module,
                ddr_var=ddr_var,
                mem_member=member,
                elem_bits=bits,
                mem_depth=depth,
                waves=waves,
                irq_member=irq,
            )
        )
        total = len(list(obj.glob("*.cpp"))) + 1 + 8  # model, harness, runtime objects
        progress.stage("compiling", total)
        make = [
            "make",
            "-C",
            str(obj),
            "-f",
            f"V{top}.mk",
            f"-j{max(1, jobs)}",
            f"OPT_FAST={OPT_FAST}",
            "CFG_CXXFLAGS_PCH_I=-include",  # the wheel's verilated.mk leaves it empty
        ]
        _run(make, work, log, on_line=progress.line)
    return member, bits, depth


def _run(cmd, cwd, log: Path, on_line=None) -> None:
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in proc.stdout:
            out.write(line)
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    if code:
        tail = log.read_text()[-6000:]
        kept = log.parents[1] / f"failed-{log.parent.name.lstrip('.').rsplit('.', 1)[0]}.log"
        raise HarnessError(
            f"harness build failed ({Path(cmd[0]).name} exit {code}); log {kept}:\n{tail}"
        )


class _Progress:
    """A rich progress bar on stderr counting compiled C++ files (or nothing if quiet)."""

    def __init__(self, top: str, quiet: bool):
        self.top, self.quiet = top, quiet
        self._bar = self._task = None

    def __enter__(self):
        if not self.quiet:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(f"RTL harness {self.top}: starting", total=None)
        return self

    def stage(self, name: str, total: int | None = None) -> None:
        if self._bar is not None:
            text = f"RTL harness {self.top}: {name}"
            self._bar.update(self._task, description=text, total=total, completed=0)

    def line(self, line: str) -> None:
        if self._bar is not None and " -c " in line and ".cpp" in line:
            self._bar.advance(self._task)

    def __exit__(self, *exc):
        if self._bar is not None:
            task = self._bar.tasks[0]
            if exc[0] is None and task.total:
                self._bar.update(self._task, completed=task.total)
            self._bar.stop()
        return False


def _prune(base: Path) -> None:
    """Keep the most recently used harness libraries (CODESIGN_RTL_HARNESS_ENTRIES, 8)."""
    limit = int(os.environ.get("CODESIGN_RTL_HARNESS_ENTRIES", "8"))
    entries = [p for p in base.glob("*-*") if (p / "harness.json").is_file()]
    if len(entries) <= limit:
        return
    entries.sort(key=lambda p: (p / "harness.json").stat().st_mtime)
    for old in entries[: len(entries) - limit]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------- ctypes


def _load(library: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library), mode=ctypes.RTLD_LOCAL)
    vp, u32, u64, i32 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int
    signatures = {
        "cds_create": ([ctypes.c_char_p], vp),
        "cds_destroy": ([vp], None),
        "cds_elem_bits": ([], i32),
        "cds_mem_bytes": ([], u64),
        "cds_cycles": ([vp], u64),
        "cds_failed": ([vp], i32),
        "cds_interrupt": ([vp], i32),
        "cds_ddr_oob": ([vp], i32),
        "cds_set_ddr": ([vp, i32, i32, i32], None),
        "cds_reset": ([vp, i32], None),
        "cds_step": ([vp, u64], None),
        "cds_axil_write": ([vp, u32, u32, u64], i32),
        "cds_axil_read": ([vp, u32, ctypes.POINTER(u32), u64], i32),
        "cds_mem_write": ([vp, u64, vp, u64], i32),
        "cds_mem_read": ([vp, u64, vp, u64], i32),
        "cds_run": ([vp, u64], i32),
    }
    for name, (args, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = args, result
    return lib


class RtlHarness:
    """One Verilated model instance (the library may hold several; each has its own
    VerilatedContext). Calls release the GIL, so a host thread can poll meanwhile."""

    AXIL_TIMEOUT = 10_000  # cycles a control-slave transaction may take

    def __init__(self, build: HarnessBuild, *, wave_path: str | Path | None = None):
        self.build = build
        self._lib = _load(build.library)
        if build.waves and wave_path is None:
            wave_dir = Path(os.environ.get("CODESIGN_WAVES_DIR", "rtl_waves"))
            wave_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = f"{build.top}-{stamp}-{os.getpid()}-{id(self):x}.{build.waves}"
            wave_path = wave_dir / name
        self.wave_path = Path(wave_path).resolve() if wave_path else None
        arg = str(self.wave_path).encode() if self.wave_path else None
        self._handle = self._lib.cds_create(arg)
        self.mem_bytes = int(self._lib.cds_mem_bytes())
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._handle:
            self._lib.cds_destroy(self._handle)
            self._handle = None

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def cycles(self) -> int:
        """Rising clock edges since the model was created."""
        return int(self._lib.cds_cycles(self._handle))

    @property
    def interrupt(self) -> bool:
        return bool(self._lib.cds_interrupt(self._handle))

    @property
    def ddr_oob(self) -> bool:
        """The DDR model saw an access outside its array (sticky until reset)."""
        return bool(self._lib.cds_ddr_oob(self._handle))

    def set_ddr(self, latency: int, bytes_per_cycle: float | None) -> None:
        """DDR model timing: first-beat latency (cycles) and bandwidth (None: unlimited)."""
        from fractions import Fraction

        if bytes_per_cycle is None:
            num, den = 0, 1
        else:
            ratio = Fraction(bytes_per_cycle).limit_denominator(1000)
            num, den = ratio.numerator, ratio.denominator
            if not 0 < num < 1 << 16:
                raise ValueError(f"DDR bandwidth {bytes_per_cycle} B/cycle is out of range")
        if not 0 <= latency < 1 << 16:
            raise ValueError(f"DDR latency {latency} cycles is out of range")
        self._lib.cds_set_ddr(self._handle, int(latency), num, den)

    def _check(self) -> None:
        if self._lib.cds_failed(self._handle):
            raise HarnessError(
                f"the simulation stopped ($fatal, $error or $finish) at cycle {self.cycles}; "
                "see the simulator output above"
            )

    def reset(self, cycles: int = 8) -> None:
        self._lib.cds_reset(self._handle, cycles)

    def step(self, cycles: int) -> None:
        self._lib.cds_step(self._handle, cycles)
        self._check()

    def axil_write(self, addr: int, data: int) -> None:
        resp = self._lib.cds_axil_write(
            self._handle, addr, int(data) & 0xFFFFFFFF, self.AXIL_TIMEOUT
        )
        self._axil_result("write", addr, resp)

    def axil_read(self, addr: int) -> int:
        value = ctypes.c_uint32(0)
        resp = self._lib.cds_axil_read(self._handle, addr, ctypes.byref(value), self.AXIL_TIMEOUT)
        self._axil_result("read", addr, resp)
        return int(value.value)

    def _axil_result(self, kind: str, addr: int, resp: int) -> None:
        if resp == -2:
            self._check()
        if resp == -1:
            raise HarnessError(
                f"AXI4-Lite {kind} at 0x{addr:02x}: no handshake within {self.AXIL_TIMEOUT} cycles"
            )
        if resp:
            raise HarnessError(f"AXI4-Lite {kind} at 0x{addr:02x}: response {resp} (not OKAY)")

    def mem_write(self, addr: int, data) -> None:
        """Bytes (or any contiguous array's bytes) into the DDR array at byte `addr`."""
        if isinstance(data, bytes | bytearray | memoryview):
            data = np.frombuffer(data, np.uint8)
        blob = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        if self._lib.cds_mem_write(self._handle, addr, blob.ctypes.data, blob.size):
            raise HarnessError(self._range_message(addr, blob.size))

    def mem_read(self, addr: int, nbytes: int) -> np.ndarray:
        out = np.empty(int(nbytes), np.uint8)
        if self._lib.cds_mem_read(self._handle, addr, out.ctypes.data, out.size):
            raise HarnessError(self._range_message(addr, nbytes))
        return out

    def _range_message(self, addr: int, nbytes: int) -> str:
        return (
            f"DDR model range [0x{addr:x}, 0x{addr + nbytes:x}) is outside its "
            f"{self.mem_bytes} bytes (raise the DDR model's size)"
        )

    def run(self, max_cycles: int) -> bool:
        """Clock until the interrupt pin rises (True) or `max_cycles` pass (False)."""
        result = self._lib.cds_run(self._handle, int(max_cycles))
        if result == -2:
            self._check()
        return result == 1


# ---------------------------------------------------------------------------- the accelerator


@dataclass
class RtlRun:
    """One inference on the RTL: the output rows, the clock counts and the wall time."""

    output: np.ndarray  # raw int64 [rows, cols] of the task's output
    cycles: int  # CYCLES register (start to done, counted by the RTL)
    layer_cycles: dict[str, int]  # PERF_CYCLES per layer name
    harness_cycles: int  # clock edges the harness drove for the run (incl. AXI-Lite traffic)
    seconds: float
    arena: np.ndarray | None = None  # the whole arena after the run (int32), when kept
    check_cycles: int = 0  # CHECK_CYCLES: the rule engine's cycles (header and layers)

    @property
    def cycles_per_second(self) -> float:
        return self.harness_cycles / self.seconds if self.seconds else 0.0


class RtlAccelerator:
    """``codesign_top`` in the Verilated testbench, running Programs like the board does.

    The DDR model answers addresses from ``ddr_base`` (the testbench's DDR_BASE, the
    simulated boards' DDR window: above 4 GiB, so the pointers' high words matter). The
    Program goes to ``ddr_base``, the arena to the next 4 KiB page after it; the argument
    registers get those addresses and the task, GIE and the done interrupt are enabled,
    ap_start is written and the model clocked until the interrupt. ``ddr_latency``
    (cycles from address to first data) and ``ddr_bytes_per_cycle`` (None: unlimited)
    set the DDR model's timing; with ``board`` the bandwidth defaults to that board's
    sustained share (``codesign.arch.ddr_model``: 80 % of its peak).
    """

    def __init__(
        self,
        arch=None,
        precision=None,
        *,
        ddr_latency: int | None = None,
        ddr_bytes_per_cycle: float | None = None,
        board: str | None = None,
        ddr_depth_log2: int | None = None,
        ddr_base: int = DDR_BASE,
        quiet: bool = False,
        build: HarnessBuild | None = None,
        sources: Mapping[str, str] | None = None,
        top: str = TB_TOP,
        ddr_module: str = DDR_MODULE,
    ):
        from ..arch import ArchConfig, ddr_model, get_board
        from ..estimate import AXI_LATENCY

        if arch is None:
            arch = ArchConfig()
        elif not isinstance(arch, ArchConfig):
            arch = ArchConfig.from_dict(dict(arch))
        self.arch, self.precision = arch, precision
        self.board = get_board(board) if board is not None else None
        if ddr_bytes_per_cycle is None and self.board is not None:
            ddr_bytes_per_cycle = ddr_model(self.board, arch).bytes_per_cycle
        self.ddr_latency = AXI_LATENCY if ddr_latency is None else int(ddr_latency)
        self.ddr_bytes_per_cycle = ddr_bytes_per_cycle
        params = {} if ddr_base == DDR_BASE else {"DDR_BASE": f"64'h{ddr_base:x}"}
        if ddr_depth_log2 is not None:
            params["DDR_DEPTH_LOG2"] = int(ddr_depth_log2)
        if build is None:
            if sources is None:
                sources = harness_sources(arch, precision)
            build = build_harness(
                sources, top=top, parameters=params, ddr_module=ddr_module, quiet=quiet
            )
        self.build = build
        self.ddr_base = int(ddr_base)
        self.harness = RtlHarness(build)
        self.harness.reset()
        self.harness.set_ddr(self.ddr_latency, self.ddr_bytes_per_cycle)
        self.regmap = register_map(arch.weight_ports)
        self._loaded: bytes | None = None  # digest of the Program now in DDR

    def close(self) -> None:
        self.harness.close()

    def reset(self) -> None:
        """Pulse ap_rst_n (after a failed run): the RTL is idle again, the DDR timing kept."""
        self.harness.reset()
        self.harness.set_ddr(self.ddr_latency, self.ddr_bytes_per_cycle)
        self._loaded = None

    # ----------------------------------------------------------- DDR
    def _offset(self, address: int, nbytes: int) -> int:
        offset = address - self.ddr_base
        if offset < 0 or offset + nbytes > self.harness.mem_bytes:
            raise HarnessError(
                f"DDR [0x{address:x}, 0x{address + nbytes:x}) is outside the DDR model "
                f"[0x{self.ddr_base:x}, 0x{self.ddr_base + self.harness.mem_bytes:x}); "
                "pass a larger ddr_depth_log2"
            )
        return offset

    def write_ddr(self, address: int, data) -> None:
        blob = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        self.harness.mem_write(self._offset(address, blob.size), blob)

    def read_ddr(self, address: int, nbytes: int) -> np.ndarray:
        return self.harness.mem_read(self._offset(address, nbytes), nbytes)

    @property
    def program_address(self) -> int:
        return self.ddr_base

    def arena_address(self, program_bytes: int) -> int:
        end = self.program_address + program_bytes
        return -(-end // 4096) * 4096

    def load_program(self, program_bytes: bytes, address: int | None = None) -> None:
        """Copy the Program into DDR unless that very Program is there already."""
        address = self.program_address if address is None else address
        digest = hashlib.blake2b(program_bytes + address.to_bytes(8, "little")).digest()
        if digest != self._loaded:
            self.write_ddr(address, np.frombuffer(program_bytes, np.uint8))
            self._loaded = digest

    # ----------------------------------------------------------- registers
    def write_arg(self, name: str, value: int) -> None:
        reg = next(r for r in self.regmap.registers if r.name == name)
        self.harness.axil_write(reg.offset, value & 0xFFFFFFFF)
        if reg.bits == 64:
            self.harness.axil_write(reg.offset + 4, (value >> 32) & 0xFFFFFFFF)

    def register_state(self) -> dict[str, int]:
        """CTRL, ISR and the debug registers (reading CTRL clears ap_done, as on a board)."""
        read = self.harness.axil_read
        state = {"CTRL": read(CTRL), "ISR": read(ISR)}
        for name in ("STATUS", "CYCLES_LO", "CYCLES_HI", "LAYERS_RUN"):
            state[name] = read(DEBUG_REGISTERS[name])
        return state

    def describe_state(self) -> str:
        from ..runtime.driver import describe_ctrl

        state = self.register_state()
        ctrl = describe_ctrl(state.pop("CTRL"))
        rest = " ".join(f"{k}=0x{v:08x}" for k, v in state.items())
        oob = " DDR out-of-bounds access seen" if self.harness.ddr_oob else ""
        return f"{ctrl} {rest}{oob}"

    # ----------------------------------------------------------- a run
    def start(self, program_address: int, arena_address: int, task: int) -> None:
        """Argument registers, interrupt enables, ap_start (the driver's sequence)."""
        ctrl = self.harness.axil_read(CTRL)
        if not ctrl & AP_IDLE:
            from ..runtime.driver import describe_ctrl

            raise HarnessError(f"the RTL is not idle before ap_start: {describe_ctrl(ctrl)}")
        self.write_arg("program", program_address)
        for name in weight_registers(self.arch.weight_ports):  # each reads its plane
            self.write_arg(name, program_address)
        self.write_arg("arena", arena_address)
        self.write_arg("task", task)
        stale = self.harness.axil_read(ISR)
        if stale:  # a leftover interrupt would end the next wait at once
            self.harness.axil_write(ISR, stale)
        self.harness.axil_write(GIE, 1)
        self.harness.axil_write(IER, 1)  # ap_done interrupt
        self.harness.axil_write(CTRL, AP_START)

    def wait(self, max_cycles: int) -> None:
        """Clock to the interrupt; acknowledge it (ISR toggle) and check ap_done."""
        if not self.harness.run(max_cycles):
            raise RtlTimeoutError(
                f"no interrupt from the RTL within {max_cycles} cycles (cycle "
                f"{self.harness.cycles}): {self.describe_state()}"
            )
        isr = self.harness.axil_read(ISR)
        self.harness.axil_write(ISR, isr)  # toggle-on-write clears it
        ctrl = self.harness.axil_read(CTRL)
        if not ctrl & AP_DONE:
            from ..runtime.driver import describe_ctrl

            raise HarnessError(f"interrupt without ap_done: {describe_ctrl(ctrl)} ISR={isr}")
        if self.harness.ddr_oob:
            raise HarnessError(f"the RTL accessed DDR out of bounds: {self.describe_state()}")

    def status_check(self, program: bytes | None = None) -> None:
        """Raise ProgramRefused when STATUS holds a program check error (``program``, its
        bytes, names the layer's op), HarnessError on a bus error flag."""
        status = self.harness.axil_read(DEBUG_REGISTERS["STATUS"])
        if status >> 29:  # codesign_top: rd0, rd1, wr1 bus errors in [31:29]
            raise HarnessError(f"the RTL saw an AXI error response: STATUS=0x{status:08x}")
        if status & 0xFF:  # cds_controller: code [7:0] | bad layer << 8 | header << 24
            raise ProgramRefused.from_status(status, program, executor="the RTL")

    def counters(self, program, task: int) -> tuple[int, dict[str, int]]:
        """CYCLES of the last run and, for every layer the run executed (the task's and
        the shared ones, in Program order), PERF_CYCLES selected by its Program index."""
        read, write = self.harness.axil_read, self.harness.axil_write
        cycles = read(DEBUG_REGISTERS["CYCLES_LO"]) | read(DEBUG_REGISTERS["CYCLES_HI"]) << 32
        ran = [
            (index, layer.name)
            for index, layer in enumerate(program.layers)
            if layer.task in (-1, task)
        ]
        ran = ran[: read(DEBUG_REGISTERS["LAYERS_RUN"])]
        per_layer = {}
        for index, name in ran:
            write(DEBUG_REGISTERS["PERF_SEL"], index)
            per_layer[name] = read(DEBUG_REGISTERS["PERF_CYCLES"])
        return cycles, per_layer

    def execute(
        self,
        program_address: int,
        arena_address: int,
        task: int,
        max_cycles: int,
        program: bytes | None = None,
    ) -> None:
        """One kernel run on what is in DDR (start, clock to the interrupt, check)."""
        self.start(program_address, arena_address, task)
        self.wait(max_cycles)
        self.status_check(program)

    def run_program(
        self,
        program_bytes: bytes,
        input_raw: np.ndarray,
        task: int = 0,
        *,
        max_cycles: int = DEFAULT_MAX_CYCLES,
        keep_arena: bool = False,
    ) -> RtlRun:
        """One inference: the task's output rows, CYCLES and per-layer PERF_CYCLES."""
        from ..program import Program

        program = Program.from_bytes(program_bytes)
        began = time.perf_counter()
        first_cycle = self.harness.cycles
        self.load_program(program_bytes)
        arena_address = self.arena_address(len(program_bytes))
        arena = np.zeros(program.arena_bytes // 4, np.int32)
        ref = program.input
        rows = arena[ref.offset // 4 : ref.offset // 4 + ref.rows * ref.stride // 4]
        rows = rows.reshape(ref.rows, ref.stride // 4)
        rows[:, : ref.cols] = np.asarray(input_raw, np.int64).reshape(ref.rows, ref.cols)
        self.write_ddr(arena_address, arena)
        self.execute(self.program_address, arena_address, task, max_cycles, program_bytes)
        done = self.read_ddr(arena_address, program.arena_bytes).view("<i4")
        out = program.outputs[task]
        out_rows = done[out.offset // 4 : out.offset // 4 + out.rows * out.stride // 4]
        output = out_rows.reshape(out.rows, out.stride // 4)[:, : out.cols]
        cycles, per_layer = self.counters(program, task)
        return RtlRun(
            output=output.astype(np.int64),
            cycles=cycles,
            layer_cycles=per_layer,
            harness_cycles=self.harness.cycles - first_cycle,
            seconds=time.perf_counter() - began,
            arena=done.copy() if keep_arena else None,
            check_cycles=self.harness.axil_read(DEBUG_REGISTERS["CHECK_CYCLES"]),
        )
