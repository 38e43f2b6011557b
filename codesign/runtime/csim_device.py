"""The C-simulation board: the HLS kernel compiled with g++ into a shared library.

The kernel is ``codesign.hls.csim.build_kernel(arch)``: the one compiled object the C
testbench links too (one compile per ArchConfig, like one bitstream);
``hls_templates/runtime/kernel_so.cpp.j2`` adds C entry points that pack the simulated
DDR bytes into ``bus_t`` beats, call ``codesign_top`` and unpack the arena (as on a
board, the arena's on-chip window, ``ArchConfig.arena_window_kib``, stays inside the
kernel: the host moves only the input and outputs, which lie past it). Both are
cached under ``$XDG_CACHE_HOME/codesign/`` (``codesign.util.cached_build``) keyed by the
hash of every source, the flags and the compiler version, so only the first use of an
ArchConfig compiles (about a minute on two cores).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

from ..arch import ArchConfig
from ..executors import input_rows
from ..numerics.aptypes import (
    DEFAULT_CXXFLAGS,
    ApTypesNotFoundError,
    ap_types_include,
    cache_dir,
    find_gxx,
)
from ..program import HEADER_BYTES, HEADER_FIELDS
from ..templates import environment
from ..util import cached_build
from .layout import padded
from .simulated import GoldenKernel, KernelModel, SimulatedBoard

# the project's C-sim flags (numerics.aptypes), NDEBUG as in codesign.hls.csim (ap_private
# asserts would abort the whole Python process; numerics are equal with it), and -fPIC
CXX_FLAGS = (*DEFAULT_CXXFLAGS, "-DNDEBUG", "-fPIC")
WRAPPER_TEMPLATE = "kernel_so.cpp.j2"
LIBRARY_NAME = "codesign_kernel.so"


class CsimBuildError(RuntimeError):
    """The kernel library cannot be built (no g++, no ap_types, a compile error)."""


CACHE_KIND = "runtime/csim"  # cache_dir()/runtime/csim/<key>/libcodesign_csim.so


def cache_root() -> Path:
    return cache_dir() / CACHE_KIND


def compiler() -> str:
    cxx = find_gxx()
    if cxx is None:
        raise CsimBuildError("no C++ compiler: g++ (or $CXX) is not on PATH (C-sim board)")
    return cxx


def _arch(arch, program=None) -> ArchConfig:
    """An ArchConfig from a config, its dict, or the Program it must run (else default)."""
    if arch is None and program is not None:
        from ..hls.csim import arch_from_program
        from .layout import ProgramLayout

        layout = program if isinstance(program, ProgramLayout) else ProgramLayout(program)
        return arch_from_program(layout.program)
    if arch is None:
        return ArchConfig()
    if isinstance(arch, ArchConfig):
        return arch
    return ArchConfig.from_dict(dict(arch))


def render_wrapper(arch: ArchConfig) -> str:
    env = environment("runtime")
    from ..contract import STATUS_HEADER_BIT
    from ..hls.render import weight_port_names

    return env.get_template(WRAPPER_TEMPLATE).render(
        bus_bits=arch.bus_bits,
        status_header_bit=STATUS_HEADER_BIT,
        weight_port_names=weight_port_names(arch.weight_ports),
    )


def _compiler_version(cxx: str) -> str:
    result = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else cxx


def build_library(arch=None, *, quiet: bool = False) -> Path:
    """The compiled kernel library for ``arch``, from the cache or built now."""
    arch = _arch(arch)
    from ..hls.csim import CsimError, build_kernel

    cxx = compiler()
    wrapper = render_wrapper(arch)
    try:
        include = ap_types_include()
    except ApTypesNotFoundError as error:
        raise CsimBuildError(f"{error} (pip install hls4ml==1.3.0)") from None
    status = _status("compiling the C-sim kernel (g++ -O2)", quiet)
    try:
        with status:  # the kernel object the testbench links too (one compile for both)
            kernel = build_kernel(arch)
    except CsimError as error:
        raise CsimBuildError(str(error)) from None
    key_data = json.dumps(
        {
            "wrapper": wrapper,
            "kernel": kernel.key,
            "flags": CXX_FLAGS,
            "cxx": _compiler_version(cxx),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_data.encode()).hexdigest()[:20]

    def build(work: Path) -> None:
        began = time.perf_counter()
        (work / "kernel_so.cpp").write_text(wrapper)
        flags = [*CXX_FLAGS, f"-I{kernel.include}", f"-I{include}"]
        command = [cxx, *flags, "-c", str(work / "kernel_so.cpp"), "-o", str(work / "so.o")]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            raise CsimBuildError(f"g++ failed on kernel_so.cpp:\n{result.stderr[-6000:]}")
        link = [cxx, "-shared", "-o", str(work / LIBRARY_NAME), str(work / "so.o"),
                str(kernel.object)]  # fmt: skip
        result = subprocess.run(link, capture_output=True, text=True, check=False)
        if result.returncode:
            raise CsimBuildError(f"linking the C-sim kernel failed:\n{result.stderr}")
        info = {
            "arch": arch.to_dict(),
            "flags": CXX_FLAGS,
            "cxx": _compiler_version(cxx),
            "kernel": kernel.key,
            "seconds": round(time.perf_counter() - began, 1),
        }
        (work / "build.json").write_text(json.dumps(info, indent=1))

    entry, _ = cached_build(
        CACHE_KIND, key, build, complete=lambda entry: (entry / LIBRARY_NAME).is_file()
    )
    return entry / LIBRARY_NAME


def _status(message: str, quiet: bool):
    if quiet:
        from contextlib import nullcontext

        return nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message)


class CsimKernel(KernelModel):
    """The HLS kernel under g++ C-simulation, run in-process through ctypes.

    C-simulation counts no cycles. With ``board`` (a board name) each run reports the
    cycle model's figure for it on that board (``codesign.estimate``, with the run's MoE
    queue lengths from the golden executor on the same input), as the golden board does:
    an estimate, labelled as such.
    """

    name = "csim"

    def __init__(self, arch=None, *, program=None, board: str | None = None, quiet: bool = False):
        self.arch = _arch(arch, program)
        self.cycle_model = GoldenKernel(board) if board is not None else None
        if self.cycle_model is not None:
            self.clock_mhz = self.cycle_model.clock_mhz
            self.cycles_source = self.cycle_model.cycles_source
        from ..executors import CsimArena

        self.executor = CsimArena(self.arch, quiet=quiet)  # the same one Build.predict uses
        self.library_path = self.executor.library_path

    def execute(self, memory, program_address, arena_address, task):
        bus_bytes = self.arch.bus_bytes
        header = memory.view(program_address, HEADER_BYTES).view("<u4")
        total = int(header[2 + HEADER_FIELDS.index("total_bytes")])
        arena_bytes = int(header[2 + HEADER_FIELDS.index("arena_bytes")])
        # the kernel moves whole beats: hand it the beats the buffers hold
        program_span = min(padded(total, bus_bytes), memory.extent(program_address))
        arena_span = min(padded(arena_bytes, bus_bytes), memory.extent(arena_address))
        program = memory.view(program_address, program_span)
        arena = memory.view(arena_address, arena_span)
        blob = raw = None
        if self.cycle_model is not None:  # the input, before the kernel reuses the arena
            blob = self.program_bytes(memory, program_address)
            raw = input_rows(self.cycle_model.program(blob), arena.view("<i4"))
        self.executor.run(program, arena, task)  # ProgramRefused when the kernel refuses
        if self.cycle_model is None:
            return None
        return self.cycle_model.model_cycles(blob, raw, task)


def csim_board(
    arch=None, *, program=None, board: str | None = None, quiet: bool = False, **kwargs
) -> SimulatedBoard:
    """A simulated board whose PL is the C-simulated HLS kernel for ``arch`` (an
    ArchConfig or its dict; or, given ``program``, the one it was compiled for). With
    ``board`` each run also reports the cycle model's latency on that board."""
    kernel = CsimKernel(arch, program=program, board=board, quiet=quiet)
    return SimulatedBoard(kernel, **kwargs)


__all__ = ["CsimBuildError", "CsimKernel", "build_library", "csim_board"]
