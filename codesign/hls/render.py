"""Render the Vitis HLS kernel, its headers and its C testbench from Jinja2 templates.

The kernel is an interpreter of program.bin, so its sources depend on the ArchConfig
alone (tile, attention slots, bus width, table sizes, on-chip maxima): every Program
compiled for that ArchConfig runs on one binary. ``render_sources`` is that pure
function; ``render_project`` writes the sources for a concrete Program (checking that
the Program fits the kernel) together with the register map and, when the project
module is available, the Vitis/Vivado project files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment

from .. import program as program_format
from ..arch import ArchConfig, Board, get_board, register_map, weight_registers
from ..arch.regmap import AP_DONE, AP_IDLE, AP_READY, AP_START, AUTO_RESTART
from ..contract import (
    BIAS_SHIFT_BITS,
    CHECK_ERRORS,
    MAX_WEIGHT_SHIFT,
    STATUS_HEADER_BIT,
    STATUS_OFFSET,
)
from ..numerics.fixed import OVERFLOW, ROUNDING
from ..program import (
    HEADER_BYTES,
    HEADER_FIELDS,
    LAYER_FIELDS,
    LAYER_WORDS,
    MAGIC,
    MAX_TASKS,
    NAME_WORDS,
    TABLE_NAMES,
    TABLE_WORDS,
    VERSION,
    Op,
    Post,
    Program,
    padded,
)
from ..templates import environment, templates_root

# m_axi depth = the largest buffers the kernel is documented to take (the ArchConfig does
# not bound the number of layers, so these are explicit limits, checked on render and by
# the kernel). C/RTL co-simulation copies exactly `depth` beats, so the testbench
# allocates buffers of this size.
PROGRAM_MAX_BYTES = 128 << 20
ARENA_MAX_BYTES = 64 << 20
MAX_LAYERS_HINT = 512  # loop_tripcount for the layer loop (reports only, not a limit)

KERNEL_TOP = "codesign_top"
KERNEL_SOURCE = "src/codesign_top.cpp"
TESTBENCH_SOURCE = "tb/tb_codesign.cpp"

# (template, rendered path); headers first, then the kernel and the testbench.
SOURCE_TEMPLATES = (
    ("codesign_config.h.j2", "src/codesign_config.h"),
    ("codesign_program.h.j2", "src/codesign_program.h"),
    ("codesign_regmap.h.j2", "src/codesign_regmap.h"),
    ("codesign_numerics.h.j2", "src/codesign_numerics.h"),
    ("codesign_memory.h.j2", "src/codesign_memory.h"),
    ("codesign_ucu.h.j2", "src/codesign_ucu.h"),
    ("codesign_rowops.h.j2", "src/codesign_rowops.h"),
    ("codesign_attention.h.j2", "src/codesign_attention.h"),
    ("codesign_moe.h.j2", "src/codesign_moe.h"),
    ("codesign_top.h.j2", "src/codesign_top.h"),
    ("codesign_top.cpp.j2", KERNEL_SOURCE),
    ("tb_codesign.cpp.j2", TESTBENCH_SOURCE),
)


class RenderError(ValueError):
    """The Program cannot run on the kernel rendered for this ArchConfig."""


def template_dir() -> Path:
    """Where the HLS templates live (see ``codesign.templates.templates_root``)."""
    return templates_root()


def _environment() -> Environment:
    return environment()


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def weight_port_names(ports: int) -> list[str]:
    """The kernel arguments weights stream over: `program` (gmem0), weights1... (gmem2...)."""
    return ["program", *weight_registers(ports)]


def kernel_params(
    arch: ArchConfig,
    *,
    program_max_bytes: int = PROGRAM_MAX_BYTES,
    arena_max_bytes: int = ARENA_MAX_BYTES,
) -> dict:
    """Every value the templates use, derived from the ArchConfig alone."""
    if arch.tile_in < 1 or arch.tile_out < 1:
        raise RenderError("tile sizes must be >= 1")
    bus_bytes = arch.bus_bytes
    max_lin_in = max(arch.max_in_dim, arch.max_hidden)
    max_lin_out = max(arch.max_hidden, 3 * arch.max_dim)
    lanes = max(arch.tile_in, arch.tile_out, bus_bytes // 4)
    row_max = padded(max(max_lin_in, max_lin_out, 3 * arch.max_dim), lanes)
    max_in_tiles = _ceil_div(max_lin_in, arch.tile_in)
    max_tile_rows = _ceil_div(max_lin_out, arch.tile_out)
    window_beats = _ceil_div(arch.arena_window_bytes, bus_bytes)
    params = {
        "tile_in": arch.tile_in,
        "tile_out": arch.tile_out,
        "attn_parallel": arch.attn_parallel,
        "attn_lanes": arch.attention_lanes,
        "bus_bits": arch.bus_bits,
        "bus_bytes": bus_bytes,
        "words_per_beat": bus_bytes // 4,
        "halves_per_beat": bus_bytes // 2,
        "weight_ports": arch.weight_ports,
        "weight_beat_bytes": arch.weight_beat_bytes,
        # the weight masters' pointers: gmem0's `program`, then weights1... (gmem2...)
        "weight_port_names": weight_port_names(arch.weight_ports),
        "wport_params": "".join(
            f", const bus_t *{name}" for name in weight_port_names(arch.weight_ports)[1:]
        ),
        "wport_args": "".join(f", {name}" for name in weight_port_names(arch.weight_ports)[1:]),
        "max_tokens": arch.max_tokens,
        "max_dim": arch.max_dim,
        "max_hidden": arch.max_hidden,
        "max_experts": arch.max_experts,
        "max_heads": arch.max_heads,
        "max_head_dim": arch.max_head_dim,
        "max_lin_in": max_lin_in,
        "max_lin_out": max_lin_out,
        "row_max": row_max,
        "max_in_tiles": max_in_tiles,
        "max_tile_rows": max_tile_rows,
        "max_tiles": max_in_tiles * max_tile_rows,
        "max_head_chunks": _ceil_div(arch.max_head_dim, arch.attention_lanes),
        "max_attn_steps": arch.max_tokens * arch.max_tokens + arch.attn_parallel - 1,
        "gelu_index_bits": arch.gelu_index_bits,
        "exp_index_bits": arch.exp_index_bits,
        "recip_index_bits": arch.recip_index_bits,
        "rsqrt_index_bits": arch.rsqrt_index_bits,
        "gelu_entries": (1 << arch.gelu_index_bits) + 1,
        "exp_entries": (1 << arch.exp_index_bits) + 1,
        "recip_entries": (1 << arch.recip_index_bits) + 1,
        "rsqrt_entries": 3 * (1 << arch.rsqrt_index_bits) + 1,
        "program_max_bytes": program_max_bytes,
        "arena_max_bytes": arena_max_bytes,
        "program_depth": _ceil_div(program_max_bytes, bus_bytes),
        "arena_depth": _ceil_div(arena_max_bytes, bus_bytes),
        "max_layers": MAX_LAYERS_HINT,
        # the arena's on-chip window (ArchConfig.arena_window_kib; 0 beats: none, and no
        # window code at all): a static array of bus beats in codesign_top, passed with the
        # Program's window_bytes wherever the arena pointer goes (window_params/window_args)
        "arena_window_bytes": arch.arena_window_bytes,
        "arena_window_beats": window_beats,
        "window_params": (
            ", bus_t arena_window[ARENA_WINDOW_BEATS], u32 window_bytes" if window_beats else ""
        ),
        "window_args": ", arena_window, window_bytes" if window_beats else "",
        # AXI bursts: up to 4 KiB (the AXI boundary), at most 256 beats
        "read_burst": min(256, 4096 // bus_bytes),
        "write_burst": min(256, 4096 // bus_bytes),
    }
    params.update(_format_params())
    params["status_offset"] = STATUS_OFFSET
    params["status_header_bit"] = STATUS_HEADER_BIT
    regmap = register_map(arch.weight_ports)
    params["regmap"] = regmap
    params["ctrl_bits"] = [
        ("ap_start", AP_START),
        ("ap_done", AP_DONE),
        ("ap_idle", AP_IDLE),
        ("ap_ready", AP_READY),
        ("auto_restart", AUTO_RESTART),
    ]
    return params


def _format_params() -> dict:
    """The program.bin layout, straight from codesign.program's tables."""
    magic = int.from_bytes(MAGIC[:4], "little"), int.from_bytes(MAGIC[4:], "little")
    return {
        "version": VERSION,
        "header_bytes": HEADER_BYTES,
        "layer_words": LAYER_WORDS,
        "name_words": NAME_WORDS,
        "max_tasks": MAX_TASKS,
        "magic_lo": magic[0],
        "magic_hi": magic[1],
        "header_words": [(name, 2 + index) for index, name in enumerate(HEADER_FIELDS)],
        "h_input": program_format._H_INPUT,
        "h_outputs": program_format._H_OUTPUTS,
        "h_tables": program_format._H_TABLES,
        "h_window": program_format._H_WINDOW,
        "table_names": list(TABLE_NAMES),
        "table_words": list(TABLE_WORDS),
        "ops": [(op.name, int(op)) for op in Op],
        "posts": [(post.name, int(post)) for post in Post],
        "bias_shift_bits": BIAS_SHIFT_BITS,
        "max_weight_shift": MAX_WEIGHT_SHIFT,
        "layer_fields": [(op.name, list(fields)) for op, fields in LAYER_FIELDS.items()],
        "rounding": list(ROUNDING),
        "overflow": list(OVERFLOW),
        "errors": list(CHECK_ERRORS),
    }


def _board(board: Board | str | None) -> Board | None:
    if board is None or isinstance(board, Board):
        return board
    return get_board(board)


def render_sources(
    arch: ArchConfig,
    board: Board | str | None = None,
    *,
    program_max_bytes: int = PROGRAM_MAX_BYTES,
    arena_max_bytes: int = ARENA_MAX_BYTES,
) -> dict[str, str]:
    """Kernel sources, headers and testbench, keyed by path relative to the project.

    Depends only on the ArchConfig (and the documented buffer maxima): the board is
    accepted for symmetry with ``render_project`` and checked, but board specifics (part,
    clock) live in the project files, so one kernel binary serves every board.
    """
    _board(board)
    env = _environment()
    params = kernel_params(
        arch, program_max_bytes=program_max_bytes, arena_max_bytes=arena_max_bytes
    )
    params["check_cpp"] = check_cpp(arch, program_max_bytes, arena_max_bytes)
    return {path: env.get_template(name).render(**params) for name, path in SOURCE_TEMPLATES}


def check_cpp(
    arch: ArchConfig,
    program_max_bytes: int = PROGRAM_MAX_BYTES,
    arena_max_bytes: int = ARENA_MAX_BYTES,
) -> str:
    """The kernel's check_header/check_layer, generated from the op registry's rules."""
    from ..ops import cpp_check, kernel_check_params

    params = kernel_check_params(
        arch, program_max_bytes=program_max_bytes, arena_max_bytes=arena_max_bytes
    )
    return cpp_check(params)


def kernel_sources(sources: dict[str, str]) -> dict[str, str]:
    """The synthesised part of a rendered project (what lint checks): src/ only."""
    return {path: text for path, text in sources.items() if path.startswith("src/")}


def depth_limits(program: Program) -> dict[str, int]:
    """m_axi depth limits for `program`: the documented defaults, or the next power of two
    when the Program is larger (then, and only then, the kernel binary depends on it)."""

    def fit(size: int, default: int) -> int:
        return default if size <= default else 1 << (size - 1).bit_length()

    total = program.data_offset + len(program.data)
    return {
        "program_max_bytes": fit(total, PROGRAM_MAX_BYTES),
        "arena_max_bytes": fit(program.arena_bytes, ARENA_MAX_BYTES),
    }


def check_program_fits(program: Program, arch: ArchConfig, **limits) -> None:
    """Raise RenderError naming why `program` cannot run on the kernel for `arch`."""
    problems = []
    for name in ("bus_bits", "tile_in", "tile_out"):
        if getattr(program, name) != getattr(arch, name):
            problems.append(
                f"program {name}={getattr(program, name)} but the ArchConfig has "
                f"{getattr(arch, name)}"
            )
    total = program.data_offset + len(program.data)
    program_max = limits.get("program_max_bytes", PROGRAM_MAX_BYTES)
    arena_max = limits.get("arena_max_bytes", ARENA_MAX_BYTES)
    if total > program_max:
        problems.append(f"program is {total} bytes, above the kernel's {program_max}-byte depth")
    if program.arena_bytes > arena_max:
        problems.append(
            f"arena is {program.arena_bytes} bytes, above the kernel's {arena_max}-byte depth"
        )
    for layer in program.layers:
        parallel = layer.fields.get("parallel")
        if layer.op == Op.ATTENTION and parallel is not None and parallel > arch.attn_parallel:
            problems.append(
                f"layer {layer.name}: attention parallel {parallel} exceeds P={arch.attn_parallel}"
            )
    if problems:
        raise RenderError("; ".join(problems))


@dataclass
class RenderedProject:
    """What render_project wrote."""

    root: Path
    files: list[str] = field(default_factory=list)  # relative paths
    project_files: bool = False  # whether the Tcl/Makefile project files were rendered too

    @property
    def kernel(self) -> Path:
        return self.root / KERNEL_SOURCE

    @property
    def testbench(self) -> Path:
        return self.root / TESTBENCH_SOURCE


def render_project(
    program: Program,
    arch: ArchConfig,
    board: Board | str,
    out_dir: str | os.PathLike,
    model_name: str | None = None,
    bitstream_dir: str | None = None,
    **limits,
) -> RenderedProject:
    """Write the HLS project for `program` into out_dir.

    Kernel sources (``src/``), testbench (``tb/``), ``regmap.json``, and the Vitis and
    Vivado project files (``codesign.hls.project``); ``bitstream_dir`` (relative to the
    project) is where ``make bitstream`` puts .bit/.hwh/manifest.json. ``limits``
    (program_max_bytes, arena_max_bytes) default to ``depth_limits(program)``.
    """
    board = _board(board)
    limits = limits or depth_limits(program)
    check_program_fits(program, arch, **limits)
    root = Path(out_dir)
    files = dict(render_sources(arch, board, **limits))
    files["regmap.json"] = json.dumps(register_map(arch.weight_ports).to_dict(), indent=1) + "\n"
    from .project import project_files

    files.update(project_files(program, arch, board, model_name, bitstream_dir=bitstream_dir))
    has_project = True
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return RenderedProject(root, sorted(files), has_project)


__all__ = [
    "ARENA_MAX_BYTES",
    "CHECK_ERRORS",
    "KERNEL_SOURCE",
    "KERNEL_TOP",
    "PROGRAM_MAX_BYTES",
    "TESTBENCH_SOURCE",
    "RenderError",
    "RenderedProject",
    "check_program_fits",
    "depth_limits",
    "kernel_params",
    "kernel_sources",
    "render_project",
    "render_sources",
    "template_dir",
]
