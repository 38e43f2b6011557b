"""C-simulation speed: compile time of the HLS kernel, and run time per model and task
against the numpy golden executor on the same input.

    python benchmarks/bench_csim.py [--models m3vit-tiny vit-tiny m3vit] [--cold]

``--cold`` recompiles the kernel (otherwise a cached binary reports 0 s of compile).
``kernel`` is the time inside codesign_top (measured by the testbench); ``process`` adds
loading program.bin, writing the case files and comparing every layer's output.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import codesign
from codesign.golden import GoldenExecutor
from codesign.hls.csim import CsimCase, build_csim, expected_regions, run_cases


def bench(models: list[str], cold: bool, repeat: int) -> None:
    console = Console()
    table = Table(title="HLS kernel C-simulation (g++ -O2) vs golden executor (numpy)")
    for column in ("model", "task", "golden s", "csim kernel s", "csim process s", "ratio"):
        table.add_column(column, justify="right" if column != "model" else "left")
    compiles = []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        job = progress.add_task("benchmark", total=len(models))
        for name in models:
            progress.update(job, description=f"{name}: build")
            build = codesign.build(name)
            program, arch = build.program, build.state.arch
            progress.update(job, description=f"{name}: compile")
            binary = build_csim(arch, force=cold)
            compiles.append((name, binary.compile_seconds, binary.cached))
            meta = build.graph.meta
            shape = (1, meta["in_chans"], *meta["image_size"])
            raw = build.quantize_input(np.random.default_rng(0).standard_normal(shape))[0]
            executor = GoldenExecutor(program)
            for task in range(program.n_tasks):
                progress.update(job, description=f"{name}: task {task}")
                golden_s = []
                for _ in range(repeat):
                    start = time.perf_counter()
                    result = executor.run(raw, task)
                    golden_s.append(time.perf_counter() - start)
                traced = executor.run(raw, task, trace=True)
                case = CsimCase(
                    raw, task, expected_regions(program, traced.traces, traced.arena, task)
                )
                kernel_s, process_s = [], []
                for _ in range(repeat):
                    (outcome,), seconds, _ = run_cases(binary, build.program_bytes, [case])
                    if not outcome.bit_exact:
                        where = outcome.first_mismatch
                        raise SystemExit(f"{name} task {task}: C-sim mismatch at {where}")
                    kernel_s.append(outcome.kernel_seconds)
                    process_s.append(seconds)
                got = outcome.output.reshape(result.output.shape)
                np.testing.assert_array_equal(got, result.output)
                golden, kernel = min(golden_s), min(kernel_s)
                table.add_row(
                    name,
                    str(task),
                    f"{golden:.3f}",
                    f"{kernel:.3f}",
                    f"{min(process_s):.3f}",
                    f"{kernel / golden:.2f}x",
                )
            progress.advance(job)
    console.print(table)
    for name, seconds, cached in compiles:
        note = "cached binary (use --cold to recompile)" if cached else "compiled"
        console.print(f"compile for {name}'s ArchConfig: {seconds:.2f} s ({note})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["m3vit-tiny", "vit-tiny", "m3vit"])
    parser.add_argument("--cold", action="store_true", help="recompile the kernel")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    args = parser.parse_args()
    bench(args.models, args.cold, args.repeat)


if __name__ == "__main__":
    main()
