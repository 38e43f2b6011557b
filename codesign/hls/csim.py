"""C-simulation of the HLS kernel with g++ against the open ``ap_types`` headers.

The rendered kernel and its testbench are compiled once per ArchConfig (the binary
depends on nothing else) and cached under ``<cache>/csim/<hash of the sources>/``. A run
writes program.bin and one directory per case (input, task, the golden executor's
per-layer outputs), runs the testbench, and parses its verdict: every layer's output
region and the final output compared bit for bit, with the first mismatch named.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..arch import ArchConfig, Board
from ..numerics.aptypes import (
    DEFAULT_CXXFLAGS,
    ApTypesNotFoundError,
    ap_types_include,
    find_gxx,
)
from ..program import Layer, Program, arena_matrix
from ..util import cached_build
from .render import (
    KERNEL_SOURCE,
    TESTBENCH_SOURCE,
    depth_limits,
    kernel_sources,
    render_sources,
)

#: g++ flags of the C-simulation: the toolchain defaults, all warnings, and NDEBUG (ap_private
#: asserts on some legal narrowing casts otherwise; see numerics/fixed.py).
# -fPIC: the one kernel object links into the testbench and into the C-sim library
CSIM_FLAGS: tuple[str, ...] = (*DEFAULT_CXXFLAGS, "-Wall", "-DNDEBUG", "-fPIC")
CSIM_CACHE_VERSION = "1"
RUN_TIMEOUT_S = 3600

_WARNING_RE = re.compile(r"^(?P<path>[^:\s][^:]*):(?P<line>\d+):(?:\d+:)? warning: (?P<msg>.*)$")


class CsimError(RuntimeError):
    """The C-simulation could not be built or run (not a mismatch: that is a result)."""


def csim_unavailable() -> str | None:
    """Why C-simulation cannot run here (no g++, no ap_types headers), or None."""
    if find_gxx() is None:
        return "no C++ compiler: g++ (or $CXX) is not on PATH"
    try:
        ap_types_include()
    except ApTypesNotFoundError as err:
        return f"ap_types headers not found ({err}); pip install hls4ml==1.3.0"
    return None


# ---------------------------------------------------------------- compile


@dataclass
class CsimBinary:
    """A compiled testbench + kernel for one ArchConfig."""

    path: Path
    key: str
    compile_seconds: float  # 0.0 when it came from the cache
    cached: bool
    warnings: list[str] = field(default_factory=list)  # our own (ap_types' are filtered out)


def _compiler_id(gxx: str) -> str:
    out = subprocess.run([gxx, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else gxx


def _own_warnings(stderr: str, root: Path) -> list[str]:
    """Warnings located in our sources (relative to root); those inside ap_types are not ours."""
    aptypes = str(ap_types_include().resolve())
    found = []
    for line in stderr.splitlines():
        match = _WARNING_RE.match(line.strip())
        if not match:
            continue
        path = match["path"]
        resolved = str((root / path).resolve()) if not os.path.isabs(path) else path
        if resolved.startswith(aptypes):
            continue
        try:
            shown = str(Path(resolved).relative_to(root.resolve()))
        except ValueError:
            shown = path
        found.append(f"{shown}:{match['line']}: {match['msg']}")
    return sorted(set(found))


def _source_key(sources: dict[str, str], gxx: str) -> str:
    digest = hashlib.sha256()
    for part in (CSIM_CACHE_VERSION, _compiler_id(gxx), *CSIM_FLAGS, str(ap_types_include())):
        digest.update(part.encode() + b"\0")
    for path in sorted(sources):
        digest.update(path.encode() + b"\0" + sources[path].encode() + b"\0")
    return digest.hexdigest()[:24]


@dataclass
class KernelObject:
    """The HLS kernel compiled once per set of rendered sources: ``src/`` (the headers the
    testbench and the C-sim library include) and ``kernel.o`` (position independent),
    which the testbench (``build_csim``) and the library (``runtime.csim_device``) both
    link, so the kernel is compiled once for either."""

    root: Path
    key: str
    compile_seconds: float  # 0.0 when it came from the cache
    cached: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def object(self) -> Path:
        return self.root / "kernel.o"

    @property
    def include(self) -> Path:
        return self.root / "src"


def _compile(gxx: str, work: Path, relative: str, obj: Path, includes: list[str]) -> str:
    cmd = [gxx, *CSIM_FLAGS, *includes, "-c", relative, "-o", str(obj)]
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise CsimError(f"g++ failed on {relative} ({res.returncode}):\n{res.stderr[-6000:]}")
    return res.stderr


def build_kernel(arch: ArchConfig, board: Board | str | None = None, *, sources=None,
                 force: bool = False) -> KernelObject:  # fmt: skip
    """Compile (or fetch from the cache) the kernel of ``sources`` (default: rendered for
    ``arch``): its ``src/`` only."""
    reason = csim_unavailable()
    if reason:
        raise CsimError(reason)
    gxx = find_gxx()
    sources = kernel_sources(sources if sources is not None else render_sources(arch, board))
    key = _source_key(sources, gxx)
    started = time.perf_counter()
    found: list[str] = []

    def build(work: Path) -> None:
        for relative, text in sources.items():
            (work / relative).parent.mkdir(parents=True, exist_ok=True)
            (work / relative).write_text(text)
        includes = [f"-I{ap_types_include()}", f"-I{work / 'src'}"]
        stderr = _compile(gxx, work, KERNEL_SOURCE, work / "kernel.o", includes)
        found.extend(_own_warnings(stderr, work))
        (work / "warnings.txt").write_text("\n".join(found) + ("\n" if found else ""))

    root, built = cached_build(
        "csim/kernel", key, build, complete=lambda e: (e / "kernel.o").is_file(), force=force
    )
    if not built:
        warnings = (root / "warnings.txt").read_text().splitlines()
        return KernelObject(root, key, 0.0, True, [w for w in warnings if w])
    return KernelObject(root, key, round(time.perf_counter() - started, 3), False, found)


def build_csim(
    arch: ArchConfig,
    board: Board | str | None = None,
    *,
    sources: dict[str, str] | None = None,
    force: bool = False,
) -> CsimBinary:
    """Compile (or fetch from the cache) the C-simulation binary for `arch`: the
    testbench linked with the kernel object (``build_kernel``, shared with the C-sim
    library). Published atomically, so concurrent builders of the same ArchConfig are safe.
    """
    sources = sources if sources is not None else render_sources(arch, board)
    kernel = build_kernel(arch, board, sources=sources, force=force)
    gxx = find_gxx()
    bench = {TESTBENCH_SOURCE: sources[TESTBENCH_SOURCE]}
    key = _source_key({**bench, "kernel": kernel.key}, gxx)
    started = time.perf_counter()
    found: list[str] = []

    def build(work: Path) -> None:
        (work / TESTBENCH_SOURCE).parent.mkdir(parents=True, exist_ok=True)
        (work / TESTBENCH_SOURCE).write_text(bench[TESTBENCH_SOURCE])
        includes = [f"-I{ap_types_include()}", f"-I{kernel.include}"]
        stderr = _compile(gxx, work, TESTBENCH_SOURCE, work / "tb.o", includes)
        link = subprocess.run(
            [gxx, str(work / "tb.o"), str(kernel.object), "-o", str(work / "tb_codesign")],
            capture_output=True,
            text=True,
            check=False,
        )
        if link.returncode != 0:
            raise CsimError(f"linking the C-simulation failed:\n{link.stderr[-4000:]}")
        found.extend(_own_warnings(stderr, work))
        (work / "warnings.txt").write_text("\n".join(found) + ("\n" if found else ""))
        (work / "tb.o").unlink()

    def usable(entry: Path) -> bool:
        exe = entry / "tb_codesign"
        return exe.is_file() and os.access(exe, os.X_OK)

    root, built = cached_build("csim", key, build, complete=usable, force=force)
    exe = root / "tb_codesign"
    if not built:
        warnings = (root / "warnings.txt").read_text().splitlines()
        found = [w for w in warnings if w]
    seconds = round(time.perf_counter() - started, 3) if built else 0.0
    return CsimBinary(
        exe, key, seconds + kernel.compile_seconds, not built and kernel.cached,
        sorted(set(kernel.warnings + found)),
    )  # fmt: skip


# ---------------------------------------------------------------- cases


@dataclass
class CsimCase:
    """One kernel run: an input matrix, a task, and optionally the expected regions."""

    input_raw: np.ndarray
    task: int = 0
    # (name, arena offset, rows, cols, stride, raw values [rows, cols]) in check order
    expected: list[tuple[str, int, int, int, int, np.ndarray]] | None = None
    label: str = ""


def output_region(layer: Layer) -> tuple[int, int, int, int] | None:
    """(offset, rows, cols, stride) of the arena region a layer writes, or None (MoE gate:
    its queue is not an output and is shared by every gate)."""
    from ..ops import spec

    return spec(layer.op).output_region(layer.fields)


def expected_regions(
    program: Program, traces: dict[str, np.ndarray], arena: np.ndarray, task: int
) -> list[tuple[str, int, int, int, int, np.ndarray]]:
    """The regions the testbench checks: every traced layer's output, then the final output,
    each with what the golden executor's ``arena`` (32-bit words) holds there after the run.

    The testbench compares them once the run is over, so a region is expected with whatever
    later layers wrote over it: activations share arena bytes once their lifetimes end
    (``codesign.memory_plan``), and qk-norm normalises q and k inside the qkv rows. A
    mismatch is named by the first layer whose region differs; build with
    ``--no-arena-reuse`` for every layer's output to survive the run untouched. A region
    below the Program's ``window_bytes`` is in the kernel's on-chip window, not in DDR:
    the testbench reads it there (``codesign_window_word``).
    """
    words = np.asarray(arena)

    def rows_at(offset: int, rows: int, cols: int, stride: int) -> np.ndarray:
        if offset % 4 or stride % 4 or offset // 4 + rows * (stride // 4) > words.size:
            raise CsimError(f"region at {offset} ({rows} x {stride} bytes) is outside the arena")
        return arena_matrix(words, offset, rows, cols, stride).copy()

    regions = []
    for layer in program.layers:
        region = output_region(layer)
        if region is None or layer.name not in traces:
            continue
        offset, rows, cols, stride = region
        if np.shape(traces[layer.name]) != (rows, cols):
            raise CsimError(
                f"trace of {layer.name} has shape {np.shape(traces[layer.name])}, not "
                f"{(rows, cols)}"
            )
        regions.append((layer.name, offset, rows, cols, stride, rows_at(*region)))
    ref = program.outputs[task]
    output = rows_at(ref.offset, ref.rows, ref.cols, ref.stride)
    regions.append((f"output[task {task}]", ref.offset, ref.rows, ref.cols, ref.stride, output))
    return regions


def write_case(case_dir: Path, case: CsimCase) -> None:
    """The files one testbench case reads (see tb_codesign.cpp)."""
    case_dir.mkdir(parents=True, exist_ok=True)
    np.asarray(case.input_raw, np.int64).astype("<i4").tofile(case_dir / "input.bin")
    (case_dir / "task.txt").write_text(f"{case.task}\n")
    if case.expected is None:
        return
    lines, blobs = [], []
    for name, offset, rows, cols, stride, values in case.expected:
        if any(ch.isspace() for ch in name[:1]):
            raise CsimError(f"region name {name!r} starts with whitespace")
        lines.append(f"{offset} {rows} {cols} {stride} {name}")
        blobs.append(np.asarray(values, np.int64).astype("<i4").tobytes())
    (case_dir / "expected.txt").write_text("\n".join(lines) + "\n")
    (case_dir / "expected.bin").write_bytes(b"".join(blobs))


# ---------------------------------------------------------------- run


@dataclass
class CaseResult:
    label: str
    task: int
    bit_exact: bool | None  # None: nothing to compare against
    first_mismatch: str | None
    mismatches: list[str]  # testbench lines, one per mismatching region
    regions: int
    kernel_seconds: float
    output: np.ndarray | None = None


@dataclass
class CsimResult:
    """Outcome of a C-simulation; ``ran`` False means it could not run here (see reason)."""

    ran: bool
    bit_exact: bool | None = None
    seconds: float = 0.0  # testbench run time (all cases), wall clock
    compile_seconds: float = 0.0  # 0.0 when the binary came from the cache
    first_mismatch: str | None = None
    reason: str | None = None
    cached: bool = False
    binary: str | None = None
    warnings: list[str] = field(default_factory=list)
    cases: list[CaseResult] = field(default_factory=list)
    log: str = ""

    @property
    def kernel_seconds(self) -> float:
        return round(sum(case.kernel_seconds for case in self.cases), 6)

    def to_report(self) -> dict:
        """The report.json entry (``csim.*``)."""
        return {
            "ran": self.ran,
            "bit_exact": self.bit_exact,
            "seconds": round(self.seconds, 3),
            "compile_seconds": round(self.compile_seconds, 3),
            "first_mismatch": self.first_mismatch,
            "reason": self.reason,
            "cached_binary": self.cached,
            "kernel_seconds": self.kernel_seconds,
            "warnings": list(self.warnings),
            "cases": [
                {
                    "case": case.label,
                    "task": case.task,
                    "bit_exact": case.bit_exact,
                    "first_mismatch": case.first_mismatch,
                    "regions": case.regions,
                    "mismatches": case.mismatches[:20],
                    "kernel_seconds": round(case.kernel_seconds, 4),
                }
                for case in self.cases
            ],
        }


def _parse(stdout: str, labels: list[str], dirs: list[Path]) -> tuple[list[CaseResult], str]:
    by_dir = {str(d): i for i, d in enumerate(dirs)}
    results: list[CaseResult | None] = [None] * len(dirs)
    current, mismatches, seconds, errors = None, [], 0.0, []
    for line in stdout.splitlines():
        if line.startswith("CASE "):
            current = by_dir.get(line.split()[1])
            mismatches, seconds = [], 0.0
        elif line.startswith("MISMATCH "):
            mismatches.append(line[len("MISMATCH ") :])
        elif line.startswith("KERNEL_SECONDS "):
            seconds = float(line.split()[1])
        elif line.startswith("ERROR "):
            errors.append(line[len("ERROR ") :])
        elif line.startswith("RESULT ") and current is not None:
            parts = line.split()
            verdict = parts[2]
            info = dict(p.split("=", 1) for p in parts[3:] if "=" in p)
            first = info.get("first", "-")
            results[current] = CaseResult(
                label=labels[current],
                task=-1,
                bit_exact=None if verdict == "RAN" else verdict == "PASS",
                first_mismatch=None if first == "-" else first,
                mismatches=mismatches,
                regions=int(info.get("layers", 0)),
                kernel_seconds=seconds,
            )
    missing = [labels[i] for i, r in enumerate(results) if r is None]
    if missing:
        detail = "; ".join(errors) or "no verdict in the testbench output"
        raise CsimError(f"C-simulation did not finish case(s) {', '.join(missing)}: {detail}")
    return [r for r in results if r is not None], "; ".join(errors)


def run_cases(
    binary: CsimBinary,
    program_bytes: bytes,
    cases: Sequence[CsimCase],
    *,
    work_dir: str | os.PathLike | None = None,
    keep: bool = False,
    timeout: float = RUN_TIMEOUT_S,
) -> tuple[list[CaseResult], float, str]:
    """Run the testbench on `cases`; returns per-case results, wall seconds and the log."""
    if not cases:
        raise ValueError("no C-simulation cases to run")
    base = Path(work_dir) if work_dir is not None else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="csim-", dir=base))
    try:
        (tmp / "program.bin").write_bytes(program_bytes)
        dirs, labels = [], []
        for index, case in enumerate(cases):
            label = case.label or f"case{index}"
            case_dir = tmp / f"case{index}"
            write_case(case_dir, case)
            dirs.append(case_dir)
            labels.append(label)
        started = time.perf_counter()
        proc = subprocess.run(
            [str(binary.path), str(tmp / "program.bin"), *map(str, dirs)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        seconds = time.perf_counter() - started
        log = proc.stdout + (f"\n[stderr]\n{proc.stderr}" if proc.stderr.strip() else "")
        if proc.returncode not in (0, 1):
            tail = "\n".join(log.splitlines()[-20:])
            raise CsimError(f"testbench exited with status {proc.returncode}:\n{tail}")
        results, _ = _parse(proc.stdout, labels, dirs)
        for case, case_dir, result in zip(cases, dirs, results, strict=True):
            result.task = case.task
            result.output = np.fromfile(case_dir / "output.bin", "<i4").astype(np.int64)
        return results, seconds, log
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def run_csim(
    program: Program,
    arch: ArchConfig,
    cases: Sequence[CsimCase],
    *,
    board: Board | str | None = None,
    work_dir: str | os.PathLike | None = None,
    keep: bool = False,
    progress: Callable[[str], None] | None = None,
) -> CsimResult:
    """Compile (cached) and run the C-simulation of `program` on `cases`.

    Never raises for an environment that lacks g++ or ap_types: the result says
    ``ran=False`` and why. A mismatch is a result (``bit_exact=False``), not an error.
    """
    reason = csim_unavailable()
    if reason:
        return CsimResult(ran=False, reason=reason)
    if progress:
        progress("compile")
    binary = build_csim(arch, board, sources=render_sources(arch, board, **depth_limits(program)))
    if progress:
        progress("run")
    program_bytes = program.to_bytes()
    results, seconds, log = run_cases(binary, program_bytes, cases, work_dir=work_dir, keep=keep)
    for case, result in zip(cases, results, strict=True):
        ref = program.outputs[case.task]
        if result.output is not None and result.output.size == ref.rows * ref.cols:
            result.output = result.output.reshape(ref.rows, ref.cols)
    compared = [r for r in results if r.bit_exact is not None]
    bit_exact = all(r.bit_exact for r in compared) if compared else None
    first = next((r.first_mismatch for r in results if r.bit_exact is False), None)
    return CsimResult(
        ran=True,
        bit_exact=bit_exact,
        seconds=round(seconds, 3),
        compile_seconds=binary.compile_seconds,
        first_mismatch=first,
        cached=binary.cached,
        binary=str(binary.path),
        warnings=binary.warnings,
        cases=results,
        log=log,
    )


# ---------------------------------------------------------------- executor


def arch_from_program(program: Program, base: ArchConfig | None = None) -> ArchConfig:
    """The ArchConfig a Program was compiled for, as far as program.bin records it: tile,
    bus, weight masters, attention slots and lanes, the UCU drain's, LayerNorm's and the
    MoE final pass's lanes from the header, table parameters from the table headers, an
    on-chip arena window of at least the header's window_bytes (whole KiB); the on-chip
    maxima from `base` (default ArchConfig) or the Program's meta."""
    if "arch" in program.meta:
        return ArchConfig.from_dict(program.meta["arch"])
    tables = program.tables
    base = base or ArchConfig()
    window_kib = max(base.arena_window_kib, -(-program.window_bytes // 1024))
    return base.with_(
        tile_in=program.tile_in,
        tile_out=program.tile_out,
        attn_parallel=program.attn_parallel,
        attn_lanes=program.attn_lanes,
        bus_bits=program.bus_bits,
        weight_ports=program.weight_ports,
        arena_window_kib=window_kib,
        drain_lanes=program.drain_lanes,
        layernorm_lanes=program.norm_lanes,
        moe_final_lanes=program.final_lanes,
        gelu_index_bits=tables["gelu_delta"].index_bits,
        gelu_range=float(2 ** tables["gelu_delta"].domain_log2),
        exp_index_bits=tables["exp"].index_bits,
        exp_range=float(2 ** tables["exp"].domain_log2),
        recip_index_bits=tables["recip"].index_bits,
        rsqrt_index_bits=tables["rsqrt"].index_bits,
        table_guard_bits=tables["recip"].guard_bits,
        table_width=tables["exp"].fmt.width,
    )


def markdown_lines(csim: dict) -> list[str]:
    """The report.md section for a ``csim`` report entry."""
    lines = ["", "## C-simulation (HLS kernel, g++)", ""]
    if not csim or not csim.get("ran"):
        lines.append(f"- not run: {(csim or {}).get('reason') or 'disabled'}")
        return lines
    verdict = {True: "bit-exact with the golden executor", False: "**MISMATCH**", None: "ran"}
    lines.append(
        f"- {verdict[csim['bit_exact']]} on {len(csim['cases'])} case(s); run "
        f"{csim['seconds']:.2f} s (kernel {csim['kernel_seconds']:.2f} s), compile "
        f"{csim['compile_seconds']:.2f} s{' (cached binary)' if csim.get('cached_binary') else ''}"
    )
    if csim.get("first_mismatch"):
        lines.append(f"- first mismatching layer: `{csim['first_mismatch']}`")
        for case in csim["cases"]:
            lines += [f"  - {case['case']}: {m}" for m in case["mismatches"][:5]]
    return lines


__all__ = [
    "CSIM_FLAGS",
    "CaseResult",
    "CsimBinary",
    "CsimCase",
    "CsimError",
    "CsimResult",
    "KernelObject",
    "arch_from_program",
    "build_csim",
    "build_kernel",
    "csim_unavailable",
    "expected_regions",
    "markdown_lines",
    "output_region",
    "run_cases",
    "run_csim",
    "write_case",
]
