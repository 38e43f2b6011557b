"""Pruning study on the digits ViT: LPViT vs magnitude block pruning at 30/50/70 %.

    python benchmarks/prune_study.py                 # ~5-10 min on one core
    python benchmarks/prune_study.py --finetune 5 --sparsities 0.5

For each method and linear-MAC sparsity: prune the trained digits ViT (8x8 blocks =
the UCU tile of an ArchConfig(tile_in=8, tile_out=8) accelerator), measure torch
test accuracy before and after distillation fine-tuning, compile the fine-tuned
model, measure the accelerator's accuracy with the golden executor (bit-exact with
the HLS kernel and RTL), and read the estimator cycles of the compiled Program
(linear layers and the whole inference). Prints a table and writes results.json
and accuracy_vs_cycles.png to --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import codesign
import codesign.estimate
from codesign.arch.config import default_arch
from codesign.datasets import load_digits
from codesign.models import MODELS_DIR, create_model
from codesign.prune import finetune, program_cycles, program_sparsity, prune
from codesign.train import accuracy, train_digits_vit

console = Console(width=160)
BLOCK = (8, 8)


def golden_accuracy(build, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the compiled accelerator (golden executor, fixed point)."""
    return float((build.predict(images).argmax(axis=1) == labels).mean())


def csim_check(build, arch, images: np.ndarray) -> dict:
    """C-simulate the compiled Program on a few images; every layer compared with golden."""
    from codesign.golden import GoldenExecutor
    from codesign.hls.csim import CsimCase, csim_unavailable, expected_regions, run_csim

    reason = csim_unavailable()
    if reason is not None:
        return {"ran": False, "reason": reason}
    executor = GoldenExecutor(build.program)
    cases = []
    for index, raw in enumerate(build.quantize_input(images)):
        result = executor.run(raw, 0, trace=True)
        regions = expected_regions(build.program, result.traces, result.arena, 0)
        cases.append(CsimCase(raw, 0, regions, f"image{index}"))
    outcome = run_csim(build.program, arch, cases)
    return {
        "ran": outcome.ran,
        "bit_exact": outcome.bit_exact,
        "images": len(cases),
        "first_mismatch": outcome.first_mismatch,
        "reason": outcome.reason,
    }


def evaluate_build(model, arch, data, calib_images, golden: bool, csim_images: int) -> dict:
    started = time.perf_counter()
    build = codesign.build(
        model, arch={"tile_in": arch.tile_in, "tile_out": arch.tile_out}, calib=calib_images,
        eval_images=data.test.images[:2], plot=False,
    )  # fmt: skip
    # the build's estimate on the board (per layer: descriptors, round trips, DDR bound;
    # the DDR model at 80 % of the ZCU102's peak), the same cycles the pruning weighed
    built = build.state.arch
    cycles = program_cycles(build.program, built, "zcu102")
    sparsity = program_sparsity(build.program, built, "zcu102")
    entry = {
        "program_bytes": len(build.program_bytes),
        "cycles_linear": cycles["linear"],
        "cycles_total": cycles["total"],
        "tile_sparsity": sparsity["totals"]["tile_sparsity"],
        "cosine_vs_torch": build.report["fidelity"]["vs_torch"]["cosine"],
        "ddr": sparsity["totals"]["ddr"]["description"],
    }
    if golden:
        entry["golden_accuracy"] = golden_accuracy(build, data.test.images, data.test.labels)
    if csim_images:
        entry["csim"] = csim_check(build, built, data.test.images[:csim_images])
    entry["build_seconds"] = round(time.perf_counter() - started, 1)
    return entry


def simulator_status() -> str:
    """What the cycle numbers can come from in this tree."""
    rtl_ucu = importlib.util.find_spec("codesign.rtl") is not None and any(
        Path(codesign.__file__).parents[1].glob("hls_templates/rtl/*ucu*")
    )
    parts = [
        "cycles are the build's estimate on the ZCU102 (codesign.estimate.layer_cost per"
        " layer, DDR model at 80 % of the peak)"
    ]
    parts.append("C-sim is functional (bit-exactness), it counts no cycles")
    parts.append("RTL UCU present" if rtl_ucu else "no RTL UCU yet: no simulated cycles")
    return "; ".join(parts)


def csim_cell(csim: dict | None) -> str:
    if not csim:
        return "-"
    if not csim["ran"]:
        return "n/a"
    return f"exact x{csim['images']}" if csim["bit_exact"] else "MISMATCH"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    dense = next(r for r in results if r["method"] == "dense")
    ax.scatter(
        [dense["cycles_total"]], [100 * dense["accuracy"]], marker="*", s=160, c="k", label="dense"
    )
    styles = {"lpvit": ("tab:blue", "o"), "magnitude": ("tab:orange", "s")}
    for method, (color, marker) in styles.items():
        rows = sorted(
            (r for r in results if r["method"] == method), key=lambda r: r["cycles_total"]
        )
        if not rows:
            continue
        cycles = [r["cycles_total"] for r in rows]
        after = [100 * r["accuracy"] for r in rows]
        before = [100 * r["accuracy_before_ft"] for r in rows]
        ax.plot(cycles, after, marker=marker, color=color, label=f"{method} + fine-tune")
        ax.plot(cycles, before, marker=marker, color=color, ls="--", mfc="none", alpha=0.7,
                label=f"{method}, no fine-tune")  # fmt: skip
        for row, accuracy_pct in zip(rows, after, strict=True):
            ax.annotate(f"{row['sparsity']:.0%}", (row["cycles_total"], accuracy_pct),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)  # fmt: skip
    ax.set_xlabel("estimated cycles per image (whole model, 8x8 UCU)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits ViT: block pruning, accuracy vs cycles")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--methods", nargs="+", default=["lpvit", "magnitude"])
    parser.add_argument("--finetune", type=int, default=10, help="fine-tuning epochs")
    parser.add_argument("--calib", type=int, default=256, help="calibration images")
    parser.add_argument("--hw-weight", type=float, default=0.5)
    parser.add_argument(
        "--measure-levels", type=int, default=8, help="measured distortion samples (0: Taylor)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true", help="train instead of loading")
    parser.add_argument("--no-golden", action="store_true", help="skip golden accuracy")
    parser.add_argument("--csim", type=int, default=4, help="test images to C-simulate (0: off)")
    parser.add_argument("--out", type=Path, default=Path("build/prune-study"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    # the ZCU102's default with BLOCK as its UCU tile, the buffers sized to the model as a
    # build's (a whole ArchConfig() keeps its generic maxima: more block RAM than the part)
    arch = default_arch("zcu102").with_(tile_in=BLOCK[1], tile_out=BLOCK[0])
    started = time.perf_counter()
    if args.retrain:
        dense, data = train_digits_vit(seed=args.seed, progress=True)
    else:
        dense = create_model("digits-vit", weights=MODELS_DIR / "digits-vit.pt")
        data = load_digits(size=16)
    calib = data.train.take(args.calib, seed=args.seed)
    quant_calib = calib.images[:64]
    golden = not args.no_golden
    results = [
        {
            "method": "dense",
            "sparsity": 0.0,
            "accuracy": accuracy(dense, data.test.images, data.test.labels),
            "accuracy_before_ft": accuracy(dense, data.test.images, data.test.labels),
            "linear_mac_sparsity": 0.0,
            **evaluate_build(dense, arch, data, quant_calib, golden, args.csim),
        }
    ]
    console.print(f"dense: test accuracy {results[0]['accuracy']:.4f} ({len(data.test)} images)")
    for sparsity in args.sparsities:
        for method in args.methods:
            step = time.perf_counter()
            pruned, result = prune(
                dense,
                calib.images if method == "lpvit" else None,
                method=method,
                sparsity=sparsity,
                block=BLOCK,
                arch=arch,
                hw_weight=args.hw_weight,
                measure_levels=args.measure_levels,
                seed=args.seed,
            )
            prune_seconds = time.perf_counter() - step
            before = accuracy(pruned, data.test.images, data.test.labels)
            if args.finetune:
                finetune(
                    pruned,
                    dense,
                    result,
                    data.train.images,
                    data.train.labels,
                    epochs=args.finetune,
                    seed=args.seed,
                    max_shift=1,
                    progress=True,
                )
            after = accuracy(pruned, data.test.images, data.test.labels)
            entry = {
                "method": method,
                "sparsity": sparsity,
                "accuracy_before_ft": before,
                "accuracy": after,
                "linear_mac_sparsity": result.summary["totals"]["linear_mac_sparsity"],
                "prune_seconds": round(prune_seconds, 2),
                "layer_sparsity": {r["layer"]: r["sparsity"] for r in result.summary["layers"]},
                **evaluate_build(pruned, arch, data, quant_calib, golden, args.csim),
            }
            results.append(entry)
            console.print(
                f"{method} {sparsity:.0%}: acc {before:.4f} -> {after:.4f} after fine-tuning, "
                f"linear cycles {entry['cycles_linear'] / results[0]['cycles_linear']:.1%} of dense"
            )
    dense_row = results[0]
    table = Table(title="digits ViT block pruning (8x8 blocks = UCU tiles)")
    for column in ("method", "sparsity", "acc no-FT", "acc FT", "golden acc", "C-sim",
                   "lin. cycles", "vs dense", "total cycles", "vs dense "):  # fmt: skip
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(
            row["method"],
            f"{row['linear_mac_sparsity']:.1%}",
            f"{100 * row['accuracy_before_ft']:.2f}",
            f"{100 * row['accuracy']:.2f}",
            f"{100 * row['golden_accuracy']:.2f}" if "golden_accuracy" in row else "-",
            csim_cell(row.get("csim")),
            f"{row['cycles_linear']:,}",
            f"{row['cycles_linear'] / dense_row['cycles_linear']:.1%}",
            f"{row['cycles_total']:,}",
            f"{row['cycles_total'] / dense_row['cycles_total']:.1%}",
        )
    console.print(table)
    console.print(simulator_status())
    summary = {
        "model": "digits-vit",
        "checkpoint": "retrained" if args.retrain else str(MODELS_DIR / "digits-vit.pt"),
        "arch": arch.to_dict(),  # before the build sized its buffers to the model
        "block": list(BLOCK),
        "test_images": len(data.test),
        "calibration_images": len(calib),
        "finetune_epochs": args.finetune,
        "hw_weight": args.hw_weight,
        "measure_levels": args.measure_levels,
        "simulators": simulator_status(),
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(results, args.out / "accuracy_vs_cycles.png")
    console.print(f"wrote {args.out}/results.json and accuracy_vs_cycles.png "
                  f"in {summary['seconds']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
