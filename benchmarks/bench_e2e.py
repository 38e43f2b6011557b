"""Whole models on the Verilated RTL accelerator: cycles vs the estimator, wall time.

    python benchmarks/bench_e2e.py --model m3vit-tiny          # seconds
    python benchmarks/bench_e2e.py --model m3vit --tasks 0 1   # the full model: minutes
    python benchmarks/bench_e2e.py --model m3vit-tiny --latency 2 64   # latency sweep
    python benchmarks/bench_e2e.py --model m3vit --precision w8a16 --json runs.json
    python benchmarks/bench_e2e.py --model m3vit --prune lpvit:0.5 --tasks 0   # pruned vs dense

Builds the model for the board's default ArchConfig (or ``--arch``), runs the first
evaluation image per task through ``codesign.rtl.harness`` (codesign_top + the
SystemVerilog DDR model, timed by the same ``codesign.arch.ddr_model`` as the estimator:
the board's DDR peak at ``--ddr-efficiency``, default 80 %, and the first-beat latency),
checks the output bit for bit against the golden executor and prints total and per-layer
cycles next to ``codesign.estimate.estimate_cycles``, the simulated latency at the board
clock, the simulation's wall time and cycles per second, and the float output vs torch.
With several ``--latency`` values (DDR first-beat latency in cycles) it runs each and
prints, per op, the DDR round trips the schedule exposes (cycles gained per cycle of
latency), next to the estimator's ``LAYER_ROUND_TRIPS``. ``--json`` writes every run
(``runs``: latency, cycles, estimate, bit-exactness, fidelity vs torch, per-op cycles,
UCU utilisation, the DDR model assumed). A pruned model (``--prune SPEC`` or a pruned
``--weights`` file) also runs the same quantised weights stored dense, and prints the
block-sparse layers' measured cycles against their dense ones next to the estimator's
ratio (``pruning`` in each run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import codesign
from codesign.arch import ddr_model
from codesign.cli import parse_arch
from codesign.estimate import AXI_LATENCY, estimate_cycles, expert_counts_from_run, layer_cost
from codesign.estimate.cycles import arena_on_chip
from codesign.fidelity import agreement, compare
from codesign.golden import GoldenExecutor
from codesign.rtl.harness import RtlAccelerator

UCU_OPS = ("LINEAR", "MOE_GATE", "MOE_EXPERTS")  # the ops whose MACs run on the UCU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="m3vit-tiny")
    parser.add_argument("--board", default="zcu102")
    parser.add_argument("--tasks", type=int, nargs="*", default=None)
    parser.add_argument("--layers", action="store_true", help="print every layer")
    parser.add_argument("--precision", help="e.g. w16a24, w8a16 [the model's on the board]")
    parser.add_argument("--arch", default=None, help="ArchConfig fields, e.g. attn_lanes=16")
    parser.add_argument("--weights", default=None, help="a torch state dict (e.g. pruned)")
    parser.add_argument("--prune", default=None, help="block-prune first: lpvit:0.5, ...")
    parser.add_argument("--ddr-efficiency", type=float, default=0.8,
                        help="the DDR model's sustained share of the peak")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument(
        "--latency", type=int, nargs="+", default=[AXI_LATENCY], help="DDR latency, cycles"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    arch = parse_arch(args.arch, args.board, args.model) if args.arch else None
    build = codesign.build(
        args.model, args.board, precision=args.precision, arch=arch, weights=args.weights,
        prune=args.prune,
    )  # fmt: skip
    arch = build.state.arch
    print(
        f"{args.model} on {args.board}: {arch.tile_in}x{arch.tile_out} UCU, "
        f"P={arch.attn_parallel} x {arch.attention_lanes} lanes, "
        f"{arch.bus_bits}-bit bus; compiled in {time.perf_counter() - started:.1f} s"
    )
    ddr = ddr_model(args.board, arch, efficiency=args.ddr_efficiency)
    print(f"DDR model: {ddr.describe()}")
    program = build.program
    dense = _dense_twin(build)
    stored = max(len(build.program_bytes), len(dense.to_bytes()) if dense else 0)
    total = stored + program.arena_bytes
    depth = max(16, (-(-(total + 4096) // (arch.bus_bits // 8)) - 1).bit_length())
    started = time.perf_counter()
    accel = RtlAccelerator(
        arch,
        build.state.options.precision,
        ddr_bytes_per_cycle=ddr.bytes_per_cycle,
        ddr_latency=args.latency[0],
        ddr_depth_log2=depth,
    )
    print(f"harness ready in {time.perf_counter() - started:.1f} s (cached after the first build)")
    tasks = args.tasks if args.tasks is not None else list(range(program.n_tasks))
    per_latency, runs = {}, []
    for latency in args.latency:
        accel.ddr_latency = latency
        accel.reset()
        print(f"\n=== DDR latency {latency} cycles ===")
        per_latency[latency] = _run_tasks(args, build, accel, tasks, latency, runs, dense)
    accel.close()
    if len(args.latency) > 1:
        _round_trips(build, per_latency)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "board": args.board,
                                         "runs": runs}, indent=1))  # fmt: skip
        print(f"wrote {args.json}")


def _dense_twin(build):
    """A block-sparse build's quantised weights stored dense (None if nothing is sparse)."""
    from codesign.compiler import compile_graph
    from codesign.program import NONE, Op

    sparse = any(
        layer.op == Op.LINEAR and layer.fields["blocks"] != NONE for layer in build.program.layers
    )
    if not sparse:
        return None
    return compile_graph(build.graph, build.state.arch, block_sparse=False)


def _pruning_run(accel, build, dense, raw, task, run, est, golden_output) -> dict:
    """The block-sparse layers' measured cycles against the same weights stored dense."""
    twin = accel.run_program(dense.to_bytes(), raw, task, max_cycles=2_000_000_000)
    sparse = [layer for layer in est["layers"] if layer.get("block_sparse")]
    names = [layer["name"] for layer in sparse]
    cycles = sum(run.layer_cycles[name] for name in names)
    dense_cycles = sum(twin.layer_cycles[name] for name in names)
    estimate = sum(layer["cycles"] for layer in sparse)
    estimate_dense = sum(layer["cycles_dense"] for layer in sparse)
    entry = {
        "layers": len(names),
        "cycles": cycles,
        "dense_cycles": dense_cycles,
        "ratio": cycles / dense_cycles,
        "estimate_ratio": estimate / estimate_dense,
        "dense_bit_exact": bool(np.array_equal(twin.output, golden_output)),
        "dense_total_cycles": twin.cycles,
    }
    print(
        f"  pruned layers ({len(names)}): measured {cycles:,} vs {dense_cycles:,} stored dense "
        f"(ratio {entry['ratio']:.3f}; estimate {entry['estimate_ratio']:.3f}); the dense "
        f"twin bit-exact: {entry['dense_bit_exact']}, {twin.cycles:,} cycles in all"
    )
    return entry


def _run_tasks(args, build, accel, tasks, latency, runs: list, dense=None) -> dict:
    """Every task once at this latency; per task the layers' measured cycles (each run's
    figures appended to `runs`); `dense`: a pruned build's weights stored dense, run too."""
    program, arch = build.program, build.state.arch
    clock_mhz = build.state.board.clock_mhz
    ddr = ddr_model(args.board, arch, efficiency=args.ddr_efficiency, latency_cycles=latency)
    precision = build.state.options.precision
    # MACs per UCU cycle: Ti x To whatever the packing (at 8 bits two of them share one
    # multiplier, which halves the DSPs, not the cycles)
    capacity = arch.macs
    layer_cycles = {}
    for task in tasks:
        raw = build.state.first_input[task]
        run = accel.run_program(build.program_bytes, raw, task, max_cycles=2_000_000_000)
        layer_cycles[task] = run.layer_cycles
        golden = GoldenExecutor(program).run(raw, task)
        exact = np.array_equal(run.output, golden.output)
        counts = expert_counts_from_run(program, raw, task)
        est = estimate_cycles(program, arch, args.board, expert_counts=counts, task=task, ddr=ddr)
        out = golden.fmt.to_float(run.output)
        ref = build.state.torch_out[task][0]
        if build.graph.meta["output_kind"] == "classification":
            out = out[0]
        fid = compare(out, ref)
        agree = agreement(out, ref)
        print(f"\ntask {task}: bit-exact with golden: {exact}")
        print(
            f"  cycles {run.cycles:,} vs estimate {est['cycles']:,} "
            f"(ratio {run.cycles / est['cycles']:.3f}); "
            f"{run.cycles / clock_mhz / 1e3:.3f} ms at {clock_mhz:.0f} MHz"
        )
        print(f"  wall {run.seconds:.1f} s, {run.cycles_per_second:,.0f} simulated cycles/s")
        print(
            f"  vs torch: cosine {fid['cosine']:.8f}, rel_rms {fid['rel_rms']:.3e}, "
            f"agreement {agree}"
        )
        by_op: dict[str, list[int]] = {}
        for layer in est["layers"]:
            if not layer["runs"] or layer["name"] not in run.layer_cycles:
                continue
            measured = run.layer_cycles[layer["name"]]
            pair = by_op.setdefault(layer["op"], [0, 0])
            pair[0] += measured
            pair[1] += layer["cycles"]
            if args.layers:
                print(
                    f"    {layer['name']:<32} {measured:>10,} {layer['cycles']:>10,} "
                    f"{measured / layer['cycles']:>6.3f}"
                )
        for op, (measured, estimate) in sorted(by_op.items()):
            print(
                f"  {op:<12} measured {measured:>10,}  estimate {estimate:>10,}  "
                f"ratio {measured / estimate:.3f}"
            )
        ucu_macs = sum(layer["macs"] for layer in est["layers"]
                       if layer["runs"] and layer["op"] in UCU_OPS)  # fmt: skip
        utilisation = ucu_macs / (run.cycles * capacity)
        print(f"  UCU utilisation: {100 * utilisation:.1f} % ({ucu_macs:,} MACs, "
              f"{capacity} per cycle)")  # fmt: skip
        runs.append({
            "task": task,
            "precision": str(precision),
            "arch": arch.to_dict(),
            "latency_ms": run.cycles / clock_mhz / 1e3,
            "cycles": run.cycles,
            "estimate_cycles": est["cycles"],
            "bit_exact": bool(exact),
            "cosine": fid["cosine"],
            "rel_rms": fid["rel_rms"],
            "agreement": agree,
            "per_op": {op: {"cycles": m, "estimate_cycles": e} for op, (m, e) in by_op.items()},
            "ucu_utilisation": utilisation,
            "ddr": ddr.to_dict(),
            "wall_seconds": run.seconds,
        })  # fmt: skip
        if dense is not None:
            runs[-1]["pruning"] = _pruning_run(
                accel, build, dense, raw, task, run, est, golden.output
            )
    return layer_cycles


def _latency_cycles(build, layer, counts, latency: int) -> int:
    """The estimator's cycles of `layer` spent on DDR latency at `latency` cycles."""
    ddr = ddr_model(build.state.board, build.state.arch, latency_cycles=latency)
    return layer_cost(build.program, build.state.arch, layer, ddr, counts)["latency_cycles"]


def _round_trips(build, per_latency: dict) -> None:
    """Per op: extra cycles per cycle of DDR latency, measured and in the estimator."""
    low, high = min(per_latency), max(per_latency)
    program = build.program
    print(f"\nDDR round trips exposed per layer (cycles per latency cycle, {low} -> {high}):")
    by_op: dict[str, list[tuple[float, float]]] = {}
    for task, cycles in per_latency[high].items():
        counts = expert_counts_from_run(program, build.state.first_input[task], task)
        for layer in program.layers:
            if layer.name not in cycles:
                continue
            slope = (cycles[layer.name] - per_latency[low][task][layer.name]) / (high - low)
            on_chip = arena_on_chip(program, layer)
            # the estimator's slope: exposed round trips and streams waiting on the latency
            model = (
                _latency_cycles(build, layer, counts.get(layer.name), high)
                - _latency_cycles(build, layer, counts.get(layer.name), low)
            ) / (high - low)
            key = layer.op.name + (" +res" if layer.fields.get("post") == 2 else "")
            key += " (window)" if on_chip else ""
            by_op.setdefault(key, []).append((slope, model))
    for op, pairs in sorted(by_op.items()):
        slopes = [p[0] for p in pairs]
        print(
            f"  {op:<16} measured {min(slopes):5.2f}..{max(slopes):5.2f}  "
            f"estimator {pairs[0][1]:5.2f}  ({len(pairs)} layers)"
        )


if __name__ == "__main__":
    main()
