"""Whole-top Yosys synthesis of each board's default ArchConfig for a model (m3vit by
default; on a board that holds no m3vit, the largest model it does, BOARD_MODELS):
resources per unit and in total next to the board's capacity and the fit margins, the
calibrated estimate beside them, logic depth and its budget, and the synthesis wall time.

    python benchmarks/bench_synth.py                        # every board (hours: WASM Yosys)
    python benchmarks/bench_synth.py --boards ultra96v2 --json out.json
    python benchmarks/bench_synth.py --write-docs           # the table in docs/rtl-top.md
    python benchmarks/bench_synth.py --stage ffs            # DSP and block RAM only (minutes)
    python benchmarks/bench_synth.py --boards zcu102 --arch weight_ports=4   # a variant

The ArchConfig is the one ``codesign build --model M --board B`` chooses (the board's
default, shrunk until the calibrated estimate fits). Counts are Yosys's
(``synth_xilinx -family xcup``, ``xc7`` for Zynq-7000), not Vivado's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from codesign import flow
from codesign.arch import get_board
from codesign.cli import parse_arch
from codesign.estimate import rtl_model
from codesign.rtl import TOP, depth_budget, synth, synth_top, utilisation

BOARDS = ("zcu102", "zcu104", "kv260", "ultra96v2", "pynq-z2")
# m3vit unless it does not fit the board at any precision that keeps its accuracy: then
# the largest registered model that does (the PYNQ-Z2's xc7z020 holds no m3vit, vit-tiny
# or deit-small; vit-tiny only at w8a8, cosine 0.87 vs torch)
BOARD_MODELS = {"pynq-z2": "digits-vit"}
DOC = Path(__file__).resolve().parents[1] / "docs" / "rtl-top.md"
MARK = "<!-- bench_synth -->"


def chosen_arch(model: str, board_name: str, precision: str | None, changes: dict | None = None):
    """The ArchConfig a build of `model` on `board_name` picks (with `changes`, fields of
    ``--arch``, on top), and the precision."""
    state = flow.BuildState(flow.make_options(model, board_name, None, precision, None, None,
                                              calib=1))  # fmt: skip
    for step in (flow.step_load, flow.step_convert, flow.step_transform, flow.step_quantize,
                 flow.step_compile):  # fmt: skip
        step(state)
    return state.arch.with_(**(changes or {})), str(state.options.precision)


def run_board(model: str, board_name: str, precision: str | None, timeout: float | None,
              stage: str = "full", changes: dict | None = None) -> dict:  # fmt: skip
    board = get_board(board_name)
    family, uram = rtl_model.family_of(board), rtl_model.has_uram(board)
    arch, prec = chosen_arch(model, board_name, precision, changes)
    result = synth_top(arch, prec, family, timeout=timeout, stage=stage, uram=uram)
    counts = {k: getattr(result, k) for k in ("dsp", "bram36", "uram", "lut", "ff")}
    return {
        "board": board_name,
        "model": model,
        "stage": stage,
        "precision": prec,
        "family": family,
        "uram_mapping": uram,
        "arch": arch.to_dict(),
        "yosys": counts,
        "utilisation": utilisation(counts, board),
        # the calibrated model's figures, trusted or not (its "source" says which)
        "estimate": rtl_model.estimate_rtl(
            arch, prec, family, uram=uram, provisional=True, measured=False
        ),
        "units": result.units,
        "depth": result.depth,
        "depth_budget": depth_budget(board.clock_mhz, family),
        "dsp_packable_ffs": result.dsp_ffs.get(TOP),
        "seconds": result.seconds,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| board | ArchConfig | LUT | FF | DSP | BRAM36 | estimate LUT / DSP / BRAM36 "
        "| LUT levels (budget) | Yosys time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        arch, fit, est = row["arch"], row["utilisation"], row["estimate"] or {}

        def cell(key, fit=fit):
            entry = fit.get(key)
            return f"{entry['used']:g} ({entry['percent']:g} %)" if entry else "-"

        used = row["yosys"].get("uram", 0)
        uram = f" + {used} URAM ({fit['uram']['percent']:g} %)" if used else ""
        model = "" if row.get("model", "m3vit") == "m3vit" else f" ({row['model']})"
        lines.append(
            f"| {row['board']}{model} | {arch['tile_in']}x{arch['tile_out']}, "
            f"P={arch['attn_parallel']}, "
            f"{arch['bus_bits']}-bit, {arch.get('weight_ports', 1)} weight master(s)"
            f"{_drain_text(arch)} | "
            f"{cell('lut')} | {cell('ff')} | {cell('dsp')} | "
            f"{cell('bram36')}{uram} | {est.get('lut', '-')} / {est.get('dsp', '-')} / "
            f"{est.get('bram36', '-')} | {row['depth'].get(TOP, '-')} ({_budget(row):g}) | "
            f"{row['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def _budget(row: dict) -> float:
    """The row's LUT-level budget at its board's clock (from the board, so rows written
    before the JSON kept it get it too)."""
    return depth_budget(get_board(row["board"]).clock_mhz, row["family"])


def _drain_text(arch: dict) -> str:
    lanes = arch.get("drain_lanes", 0)
    return f", {lanes}-lane drain" if lanes else ""


def fit_summary(rows: list[dict]) -> str:
    """Whether each design is within the margins, and its binding resource."""
    parts = []
    for row in rows:
        fit = row["utilisation"]
        key = max(("lut", "dsp", "bram36"),
                  key=lambda k, fit=fit: fit[k]["percent"] / fit[k]["limit_percent"])  # fmt: skip
        verdict = "" if all(e["ok"] for e in fit.values()) else " (over the margin)"
        parts.append(f"{row['board']} {key.upper()} {fit[key]['percent']:g} %{verdict}")
    return (
        "Against the fit margins (85 % of the LUTs, 90 % of the DSPs and block RAM), each "
        "design's closest resource: " + ", ".join(parts) + "."
    )


def unit_markdown(row: dict) -> str:
    """One design's units: Yosys against the calibrated model, LUT levels."""
    arch, est = row["arch"], (row["estimate"] or {}).get("units", {})
    lines = [
        f"Per unit, {row['board']}, {row.get('model', 'm3vit')} ({arch['tile_in']}×"
        f"{arch['tile_out']} UCU, "
        f"P{arch['attn_parallel']} × {arch['attn_lanes'] or 'whole-row'} lanes, "
        f"{arch['bus_bits']}-bit bus, {arch['weight_ports']} weight master(s)"
        f"{_drain_text(arch)}, "
        f"{row['precision']}; {row['seconds']:.0f} s of unit runs):",
        "",
        f"| unit | instances | LUT | estimate | FF | DSP | BRAM36 | LUT levels (budget "
        f"{_budget(row):g}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for unit, got in row["units"].items():
        model = est.get(unit, {}).get("lut")
        vs = f"{model:,} ({100 * (model / got['lut'] - 1):+.1f} %)" if model and got["lut"] else "-"
        uram = f" + {got['uram']} URAM" if got.get("uram") else ""
        lines.append(
            f"| {unit} | {got.get('instances', 1)} | {got['lut']:,} | {vs} | {got['ff']:,} | "
            f"{got['dsp']} | {got['bram36']:g}{uram} | {row['depth'].get(unit, '-')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="default: m3vit (BOARD_MODELS where it does not fit)")
    parser.add_argument("--boards", nargs="*", default=list(BOARDS), choices=list(BOARDS))
    parser.add_argument("--precision")
    parser.add_argument("--timeout", type=float, help="seconds per Yosys run")
    parser.add_argument("--stage", choices=("full", "ffs"), default="full",
                        help="ffs: stop before LUT mapping (DSP and block RAM final)")  # fmt: skip
    parser.add_argument("--json", type=Path)
    parser.add_argument("--arch", help="fields on top of each board's ArchConfig: weight_ports=4")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.write_docs and args.stage != "full":
        parser.error("--write-docs records whole runs only (--stage full)")
    if args.write_docs and args.arch:
        parser.error("--write-docs records the boards' own designs (no --arch)")
    console = Console()
    rows = []
    for board in args.boards:
        model = args.model or BOARD_MODELS.get(board, "m3vit")
        with console.status(f"synthesising {model} on {board}"):
            try:
                changes = parse_arch(args.arch, board, model) if args.arch else None
                rows.append(run_board(model, board, args.precision, args.timeout,
                                      args.stage, changes))  # fmt: skip
            except (synth.SynthError, ValueError) as error:
                console.print(f"[red]{board}: {str(error)[:400]}[/red]")
    table = Table("board", "LUT", "FF", "DSP", "BRAM36", "fits", "seconds")
    for row in rows:
        fit = row["utilisation"]
        table.add_row(row["board"], *(f"{fit[k]['used']:g} ({fit[k]['percent']:g}%)" if k in fit
                                      else "-" for k in ("lut", "ff", "dsp", "bram36")),
                      str(all(e["ok"] for e in fit.values())), f"{row['seconds']:.0f}")  # fmt: skip
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.write_docs and rows:
        write_docs(rows)
    return 0


def write_docs(rows: list[dict]) -> None:
    """The whole-top table, the fit summary and each design's units in docs/rtl-top.md."""
    text = DOC.read_text()
    units = "\n\n".join(unit_markdown(row) for row in rows)
    block = f"{MARK}\n{markdown(rows)}\n\n{fit_summary(rows)}\n\n{units}\n{MARK}"
    if MARK in text:
        text = re.sub(f"{MARK}.*?{MARK}", lambda _: block, text, flags=re.S)
    else:
        text += f"\n{block}\n"
    DOC.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
