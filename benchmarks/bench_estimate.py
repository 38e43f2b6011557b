"""Estimated latency and resources of a model on every board, and the estimator's speed.

    python benchmarks/bench_estimate.py [--model m3vit] [--boards zcu102,kv260,...]
                                        [--precisions w16a24,w8a16] [--measured]
                                        [--task 0] [--json PATH]

For each board the model is compiled with the board's default ArchConfig, then
``codesign.estimate`` gives cycles, latency at the board clock, DSP/BRAM/URAM/LUT/FF
and whether the design fits, with the DDR model each latency assumes (``--ddr-efficiency``,
default 80 % of the board's peak). ``--measured`` runs the golden executor on one random
image and costs the MoE layers with the queue lengths it produced (otherwise: balanced
queues). Numbers are printed, not asserted; compare run to run, and with the published
Edge-MoE figure for M3ViT on the ZCU102 (34.64 ms at 300 MHz).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict

import numpy as np
from rich.console import Console
from rich.table import Table

from codesign import estimate as est
from codesign.arch import BOARDS, ddr_model
from codesign.flow import STEPS, BuildState, make_options

EDGE_MOE_MS = 34.64  # M3ViT on ZCU102, 300 MHz (Edge-MoE, ICCAD 2023)


def compile_for(model: str, board: str, precision: str | None = None, **options):
    """Run the build steps up to the Program (no verification: not needed here)."""
    state = BuildState(
        make_options(model, board=board, precision=precision, calib=1, eval_images=1, **options)
    )
    for name, step in STEPS:
        step(state)
        if name == "compile":
            break
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="m3vit")
    parser.add_argument("--boards", default=",".join(BOARDS))
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--measured", action="store_true", help="queue lengths of a golden run")
    parser.add_argument("--precisions", default="w16a24", help="comma-separated, e.g. w16a24,w8a16")
    parser.add_argument("--ddr-efficiency", type=float, help="sustained share of the DDR peak")
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 160)
    rows = []

    summary = Table(title=f"{args.model}: estimate per board (default ArchConfig)")
    for column in ("board", "precision", "Ti x To, P", "MHz", "cycles", "ms", "GOPS", "DSP",
                   "BRAM36", "URAM", "LUT", "FF", "fits"):  # fmt: skip
        summary.add_column(column, justify="right" if column != "board" else "left")
    options = {} if args.ddr_efficiency is None else {"ddr_efficiency": args.ddr_efficiency}
    ddr_args = {} if args.ddr_efficiency is None else {"efficiency": args.ddr_efficiency}
    for board, precision in (
        (board, precision)
        for board in args.boards.split(",")
        for precision in args.precisions.split(",")
    ):
        start = time.perf_counter()
        try:
            state = compile_for(args.model, board, precision, **options)
        except est.DesignDoesNotFit as error:  # the board is too small for this model
            console.print(f"{board} {precision}: {error}")
            summary.add_row(board, precision, *["-"] * 10, "no")
            rows.append({"board": board, "precision": precision, "fits": False,
                         "error": str(error)})  # fmt: skip
            continue
        compile_s = time.perf_counter() - start
        program, arch = state.program, state.arch
        counts = None
        if args.measured and any(layer.op.name == "MOE_EXPERTS" for layer in program.layers):
            graph = state.graph
            images = np.random.default_rng(0).standard_normal(
                (1, graph.meta["in_chans"], *graph.meta["image_size"])
            )
            raw = program.input.fmt.quantize(graph.patchify(images))[0]
            start = time.perf_counter()
            counts = est.expert_counts_from_run(program, raw, args.task)
            console.print(
                f"{board}: golden run for queue lengths {time.perf_counter() - start:.1f} s"
            )
        repeats = 20
        start = time.perf_counter()
        for _ in range(repeats):
            result = est.estimate_program(
                program, arch, board, counts, args.task, ddr=ddr_model(board, arch, **ddr_args)
            )
        estimate_ms = (time.perf_counter() - start) / repeats * 1e3
        fits = result["fits"]
        rows.append({
            "board": board,
            "precision": precision,
            "arch": arch.to_dict(),
            "cycles": result["cycles"],
            "latency_ms": result["latency_ms"],
            "fits": all(entry["ok"] for entry in fits.values()),
            "resources": {key: fits[key]["used"] for key in fits},
            "ddr": result["assumptions"]["ddr"],
        })  # fmt: skip
        summary.add_row(
            board,
            precision,
            f"{arch.tile_in}x{arch.tile_out}, {arch.attn_parallel}",
            f"{BOARDS[board].clock_mhz:g}",
            f"{result['cycles']:,}",
            f"{result['latency_ms']:.3f}",
            f"{result['gops']:.1f}",
            *(
                f"{fits[key]['used']:,}{'' if fits[key]['ok'] else ' !'}"
                for key in ("dsp", "bram36", "uram", "lut", "ff")
            ),
            "yes" if all(entry["ok"] for entry in fits.values()) else "NO",
        )
        console.print(
            f"{board} {precision}: compile {compile_s:.1f} s, estimate_program "
            f"{estimate_ms:.2f} ms, queues {result['assumptions']['expert_counts']}; "
            f"DDR model: {result['assumptions']['ddr']['description']}"
        )
        if board == "zcu102":
            by_op: dict[str, int] = defaultdict(int)
            for layer in result["layers"]:
                by_op[layer["op"]] += layer["cycles"]
            ops = Table(title=f"{args.model} on zcu102 at {precision}: cycles per op")
            for column in ("op", "cycles", "share", "ms"):
                ops.add_column(column, justify="right" if column != "op" else "left")
            for op, cycles in sorted(by_op.items(), key=lambda kv: -kv[1]):
                ops.add_row(
                    op,
                    f"{cycles:,}",
                    f"{cycles / result['cycles']:.1%}",
                    f"{cycles / (BOARDS[board].clock_mhz * 1e3):.3f}",
                )
            ops.add_row("start (header, check, tables)", f"{est.startup_cycles(program):,}", "", "")
            console.print(ops)
            if args.model == "m3vit":
                console.print(
                    f"m3vit on zcu102: {result['latency_ms']:.2f} ms estimated vs Edge-MoE "
                    f"{EDGE_MOE_MS} ms measured ({EDGE_MOE_MS / result['latency_ms']:.2f}x)"
                )
    console.print(summary)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "task": args.task, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
