"""The build report's ``estimate`` entry: cycles, latency, resources and fit of one
Program on one board, with the assumptions they rest on, as JSON, markdown and plots."""

from __future__ import annotations

import numpy as np

from .cycles import (
    AXI_LATENCY,
    BREAKDOWN_PARTS,
    LAYER_DISPATCH,
    _board,
    estimate_cycles,
)
from .resources import (
    RESOURCE_LABELS,
    estimate_resources,
    fit_problems,
    fit_table,
    provisional_warning,
)

# ---------------------------------------------------------------- program estimate


def assumptions(board, expert_counts_note: str, task: int, ddr: dict) -> dict:
    """What the numbers rest on; shown in the report next to them (`ddr`: the DdrModel's
    ``to_dict``)."""
    board = _board(board)
    return {
        "board": board.name,
        "part": board.part,
        "clock_mhz": board.clock_mhz,
        "ddr": ddr,
        "task": task,
        "expert_counts": expert_counts_note,
        "notes": [
            "cycles: the per-op schedule of codesign.estimate (weight-stationary UCU, "
            "rotated attention, two-pass LayerNorm), one AXI beat per cycle per master",
            f"per layer: descriptor fetch + {LAYER_DISPATCH}-cycle dispatch + "
            f"the DDR round trips its schedule exposes ({AXI_LATENCY} cycles each: "
            "descriptor, first operands, write acknowledgement, per op more); layers of "
            "other tasks cost a "
            "descriptor fetch; once per run: header, descriptor check pass, table loads",
            f"DDR model: {ddr['description']}",
            f"a layer takes max(schedule, DDR bytes / {ddr['sustained_gbps']:.4g} GB/s); 'bound' "
            "names the larger part: activations (row reads), weights (tile loads "
            "longer than the rows streaming past), compute, or ddr",
            "DSP: 27x18 (DSP48E2) / 25x18 (DSP48E1) ports, wider products split; "
            "INT8 x INT8 packs two MACs per DSP48E2",
            "BRAM/URAM: buffers sized by ArchConfig.max_*, banked for one row of Ti "
            "(or To) values per cycle, cheapest BRAM aspect ratio; buffers >= 1 Mbit "
            "go to UltraRAM while the board has it",
            "LUT/FF: per-unit constants (estimate.py), not synthesis results; "
            "run `make hls` with Vitis for real numbers",
            "breakdown per layer (sums to its cycles): compute (MACs / lane arithmetic), "
            "weights (tile loads the rows do not hide), activations (row reads and "
            "writes the arithmetic does not hide), latency (exposed DDR round trips), "
            "control (descriptor fetch, dispatch, pipeline fill), ddr (DDR bandwidth "
            "beyond the schedule)",
        ],
    }


def estimate_program(
    program, arch, board, expert_counts: dict | None = None, task: int = 0, ddr=None
) -> dict:
    """Cycles per layer, latency at the board clock, resources and fit of one Program.

    `expert_counts` maps MOE_EXPERTS layer names to their queue lengths (see
    ``expert_counts_from_run``); without it every MoE layer is costed with balanced
    queues, and the result says so. `ddr`: a ``codesign.arch.DdrModel`` (default the
    board's at 80 % efficiency)."""
    board = _board(board)
    timing = estimate_cycles(program, arch, board, expert_counts, task, ddr=ddr)
    resources = estimate_resources(program, arch, board)
    fits = fit_table(resources, board)
    macs = sum(entry["macs"] for entry in timing["layers"])
    seconds = timing["latency_ms"] / 1e3
    return {
        "model": program.model,
        "board": board.name,
        "arch": arch.to_dict(),
        "task": task,
        "cycles": timing["cycles"],
        "latency_ms": timing["latency_ms"],
        "macs": macs,
        "gops": 2 * macs / seconds / 1e9 if seconds else 0.0,
        "ddr_bytes": sum(entry["ddr_bytes"] for entry in timing["layers"]),
        "layers": timing["layers"],
        "resources": resources,
        "fits": fits,
        "assumptions": assumptions(board, timing["expert_counts"], task, timing["ddr"]),
    }


def estimate_report_section(
    program, arch, board, expert_counts: dict | None = None, task: int = 0, ddr=None
) -> dict:
    """Exactly what goes under ``report["estimate"]``."""
    full = estimate_program(program, arch, board, expert_counts, task, ddr)
    section = {key: full[key] for key in ("latency_ms", "cycles", "layers", "resources", "fits")}
    section["latency_ms"] = round(section["latency_ms"], 4)
    section["assumptions"] = {
        **full["assumptions"],
        "model": full["model"],
        "macs": full["macs"],
        "gops": round(full["gops"], 2),
        "ddr_bytes": full["ddr_bytes"],
        "arch": full["arch"],
    }
    names = getattr(program, "meta", {}).get("task_names") or []
    if 0 <= task < len(names):
        section["assumptions"]["task_name"] = names[task]
    return section


def estimate_markdown(section: dict) -> str:
    """The estimate as a Markdown chapter of report.md."""
    info = section["assumptions"]
    lines = [
        "## Estimated latency and resources",
        "",
        f"- {section['cycles']:,} cycles at {info['clock_mhz']:g} MHz = "
        f"**{section['latency_ms']:.3f} ms** per image (task {info['task']}), "
        f"{info['gops']:.1f} GOPS; {info['ddr_bytes'] / 1e6:.1f} MB over DDR",
        f"- MoE expert queues: {info['expert_counts']}",
        f"- DDR model: {info['ddr']['description']}",
        "",
        "| resource | used | available | utilisation | fits |",
        "|---|---|---|---|---|",
    ]
    for key, label in RESOURCE_LABELS.items():
        entry = section["fits"][key]
        percent = "n/a" if entry["percent"] is None else f"{entry['percent']:.1f}%"
        lines.append(
            f"| {label} | {entry['used']:,} | {entry['available']:,} | {percent} | "
            f"{'yes' if entry['ok'] else '**no**'} |"
        )
    problems = fit_problems(section["fits"], info["board"])
    if problems:
        lines += ["", "**The design does not fit:** " + "; ".join(problems) + "."]
    warning = provisional_warning(section["resources"], info["board"])
    if warning:
        lines += ["", f"**Warning:** {warning}."]
    lines += [
        "",
        "| layer | op | cycles | µs | bound | MACs | DDR bytes |",
        "|---|---|---|---|---|---|---|",
    ]
    for layer in section["layers"]:
        if not layer["runs"]:
            continue
        lines.append(
            f"| {layer['name']} | {layer['op']} | {layer['cycles']:,} | "
            f"{layer['latency_us']:.1f} | {layer['bound']} | {layer['macs']:,} | "
            f"{layer['ddr_bytes']:,} |"
        )
    lines += ["", "Assumptions:", ""]
    lines += [f"- {note}" for note in info["notes"]]
    return "\n".join(lines) + "\n"


BREAKDOWN_COLOURS = {
    "compute": "#1f77b4",
    "weights": "#ff7f0e",
    "activations": "#2ca02c",
    "latency": "#d62728",
    "control": "#8c8c8c",
    "ddr": "#9467bd",
}


def shade_blocks(ax, names: list[str]) -> None:
    """Shade every other transformer block so a block's layers read as a group."""
    blocks = [name.split(".")[1] if name.startswith("blocks.") else None for name in names]
    first = 0
    for index in range(1, len(names) + 1):
        if index == len(names) or blocks[index] != blocks[first]:
            if blocks[first] is not None and blocks[first].isdigit() and int(blocks[first]) % 2:
                ax.axvspan(first - 0.5, index - 0.5, color="0.5", alpha=0.08, lw=0, zorder=0)
            first = index


def layer_axis(ax, names: list[str], max_labels: int = 160) -> None:
    """Layer names as x tick labels, rotated, every k-th when there are too many to
    read, over shaded blocks."""
    step = max(1, -(-len(names) // max_labels))
    ticks = list(range(0, len(names), step))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90)
    ax.tick_params(axis="x", labelsize=7, length=2)
    ax.set_xlim(-0.6, len(names) - 0.4)
    shade_blocks(ax, names)


def cycles_figure(section: dict):
    """The figure of ``plot_layers``. Top: one bar per running layer stacked by where
    its cycles go, the dense cycles outlined where a layer runs block-sparse. Bottom:
    the same parts as shares of each layer, readable for the short layers too."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    layers = [layer for layer in section["layers"] if layer["runs"]]
    names = [layer["name"] for layer in layers]
    xs = np.arange(len(layers))
    totals = np.array([layer["cycles"] for layer in layers], float)
    fig = Figure(figsize=(max(8.0, 0.17 * len(layers) + 2.5), 7.0), layout="constrained")
    ax, share = fig.subplots(2, 1, sharex=True, height_ratios=(2.4, 1))
    handles, bottom = [], np.zeros(len(layers))
    for part, label in BREAKDOWN_PARTS.items():
        values = np.array([layer["breakdown"][part] for layer in layers], float)
        if not values.any():  # e.g. no layer is DDR-bandwidth bound: no empty legend entry
            continue
        colour = BREAKDOWN_COLOURS[part]
        ax.bar(xs, values, 0.8, bottom=bottom, color=colour, zorder=2)
        share.bar(xs, 100 * values / totals, 0.8, bottom=100 * bottom / totals, color=colour)
        handles.append(Patch(color=colour, label=label))
        bottom += values
    dense_bars = [
        (x, layer["cycles_dense"])
        for x, layer in zip(xs, layers, strict=True)
        if "cycles_dense" in layer
    ]
    if dense_bars:
        dense_x, dense = zip(*dense_bars, strict=True)
        ax.bar(dense_x, dense, 0.8, fill=False, edgecolor="black", ls="--", lw=0.8, zorder=3)
        handles.append(
            Patch(fill=False, edgecolor="black", linestyle="--", label="dense (before pruning)")
        )
    shade_blocks(ax, names)
    layer_axis(share, names)
    ax.set_ylabel("cycles")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.grid(True, axis="y", alpha=0.3, zorder=0)
    share.set_ylabel("share of the layer")
    share.set_ylim(0, 100)
    share.yaxis.set_major_formatter(PercentFormatter())
    info = section["assumptions"]
    clock = info["clock_mhz"]
    micro = ax.secondary_yaxis("right", functions=(lambda c: c / clock, lambda us: us * clock))
    micro.set_ylabel(f"µs at {clock:g} MHz")
    task = f"task {info['task']}" + (f" ({info['task_name']})" if info.get("task_name") else "")
    title = f"{info.get('model', '')} on {info['board']}, {task}: {section['latency_ms']:.3f} ms"
    if dense_bars:
        dense_cycles = section["cycles"] + sum(
            layer["cycles_dense"] - layer["cycles"] for layer in layers if "cycles_dense" in layer
        )
        title += f" block-sparse (dense: {dense_cycles / clock / 1e3:.3f} ms)"
    skipped = len(section["layers"]) - len(layers)
    note = f"; {skipped} layers of other tasks skipped, not shown" if skipped else ""
    ax.set_title(f"{title}\nestimated cycles per layer, by where they go{note}", fontsize=10)
    columns = len(handles) if fig.get_figwidth() >= 14 else -(-len(handles) // 2)
    fig.legend(
        handles=handles, loc="outside upper center", ncol=columns, fontsize="small", frameon=False
    )
    return fig


def plot_layers(section: dict, path) -> None:
    """Cycles per layer, stacked by where they go: why a layer is slow."""
    cycles_figure(section).savefig(path, dpi=110)
