"""Human-readable build report (Markdown) and its per-layer fidelity plot."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _fmt_metric(value, digits=6) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


ROUNDING_MEANING = {
    "RND": "round half up (toward +inf)",
    "RND_ZERO": "round half toward 0",
    "RND_MIN_INF": "round half toward -inf",
    "RND_INF": "round half away from 0",
    "RND_CONV": "round half to even",
    "TRN": "truncate (toward -inf)",
    "TRN_ZERO": "truncate toward 0",
}
OVERFLOW_MEANING = {
    "SAT": "clamp to the range",
    "SAT_SYM": "clamp to +-max (symmetric)",
    "SAT_ZERO": "set to 0",
    "WRAP": "keep the low W bits (two's complement wrap)",
}


def format_legend(layers: list[dict]) -> list[str]:
    """How to read ``fx24.-1s RND SAT``: the notation of every format in the report,
    the modes this report uses, and a worked example (negative integer bits if any)."""
    from .numerics.fixed import Fixed

    outputs = [layer["formats"]["out_fmt"] for layer in layers if "out_fmt" in layer["formats"]]
    others = [text for layer in layers for text in layer["formats"].values()]
    formats = [Fixed.parse(text) for text in outputs + others]
    if not formats:
        return []
    example = next((fmt for fmt in formats if fmt.int_bits < 0), formats[0])
    top = 2.0 ** (example.int_bits - 1 if example.signed else example.int_bits)
    low = f"{-top:g}" if example.signed else "0"
    roundings = sorted({fmt.rounding for fmt in formats})
    overflows = sorted({fmt.overflow for fmt in formats})
    return [
        "Formats read `fx<W>.<I><s|u> <rounding> <overflow>`, the Vitis type "
        "`ap_fixed<W, I, AP_<rounding>, AP_<overflow>>`:",
        "",
        "- W: bits in all; I: integer bits, the sign bit included; W - I fractional bits, "
        "so the step is 2^-(W-I)",
        "- `s`: signed, values in [-2^(I-1), 2^(I-1)); `u`: unsigned (`ap_ufixed`), "
        "values in [0, 2^I)",
        "- a negative I (small values) puts the binary point |I| bits above the top "
        "stored bit, those bits being implied (sign copies, or 0 when unsigned)",
        f"- e.g. `{example}` holds [{low}, {top:g}) in steps of 2^-{example.frac_bits}",
        "- rounding, when low bits are dropped: "
        + "; ".join(f"{mode}: {ROUNDING_MEANING[mode]}" for mode in roundings),
        "- overflow, when a value is out of range: "
        + "; ".join(f"{mode}: {OVERFLOW_MEANING[mode]}" for mode in overflows),
    ]


def _pruning_bullet(pruning: dict | None) -> list[str]:
    if not pruning or "program" not in pruning:
        return []
    totals = pruning["program"]["totals"]
    return [
        f"- pruning: {pruning.get('spec') or pruning.get('method', 'pruned weights')}, "
        f"{totals['tile_sparsity']:.1%} of the linear weight tiles skipped, linear-layer "
        f"cycles ×{totals['cycle_ratio']:.3f} of dense (see Pruning)"
    ]


def _percent_change(before: int, after: int) -> str:
    return f"{(after - before) / before:+.1%}" if before else "n/a"


def pruning_markdown(pruning: dict, estimate: dict | None = None) -> list[str]:
    """The Pruning chapter: how it was pruned, what the Program stores, the cycles saved."""
    program = pruning["program"]
    totals = program["totals"]
    lines = ["## Pruning", ""]
    method = pruning.get("method", "unknown")
    block = pruning.get("block")
    how = f"- method: {method}"
    if pruning.get("spec"):
        how += f" (`{pruning['spec']}`)"
    if block:
        how += f", blocks {block[0]}×{block[1]} (out × in: the UCU tile)"
    if pruning.get("calibration_images"):
        how += f", {pruning['calibration_images']} calibration image(s)"
    lines.append(how)
    kept = pruning.get("totals", {})
    if "linear_mac_sparsity" in kept:
        target = pruning.get("sparsity")
        lines.append(
            f"- linear MACs removed: {kept['linear_mac_sparsity']:.1%}"
            + (f" (target {target:.0%})" if target is not None else "")
            + f", {kept['macs_kept']:,} of {kept['macs_dense']:,} kept"
        )
    lines += [
        f"- tile sparsity in the Program: {totals['tile_sparsity']:.1%} "
        f"({totals['tiles'] - totals['stored_tiles']:,} of {totals['tiles']:,} LINEAR weight "
        "tiles not stored, neither loaded nor run)",
        f"- linear-layer cycles: {totals['cycles_dense']:,} dense → {totals['cycles']:,} "
        f"pruned (×{totals['cycle_ratio']:.3f}, "
        f"{_percent_change(totals['cycles_dense'], totals['cycles'])})",
    ]
    if estimate and estimate.get("layers"):
        saved = sum(
            layer["cycles_dense"] - layer["cycles"]
            for layer in estimate["layers"]
            if "cycles_dense" in layer
        )
        info = estimate["assumptions"]
        dense = estimate["cycles"] + saved
        lines.append(
            f"- whole run (estimate, task {info['task']}): {dense:,} dense → "
            f"{estimate['cycles']:,} cycles, {dense / info['clock_mhz'] / 1e3:.3f} → "
            f"{estimate['latency_ms']:.3f} ms ({_percent_change(dense, estimate['cycles'])})"
        )
    for entry in pruning.get("excluded", []):
        lines.append(f"- not pruned: {entry['layer']} ({entry['reason']})")
    as_pruned = {entry["layer"]: entry for entry in pruning.get("layers", [])}
    lines += [
        "",
        "Per LINEAR layer: sparsity as pruned (blocks zeroed in torch), tile sparsity "
        "as stored in the Program (also counts tiles that quantised to zero), and the "
        "layer's UCU schedule in cycles (without descriptor fetch and DDR latency).",
        "",
        "| layer | sparsity as pruned | tile sparsity in Program | tiles stored | "
        "cycles dense → pruned | change |",
        "|---|---|---|---|---|---|",
    ]
    for row in program["layers"]:
        pruned = as_pruned.get(row["layer"])
        as_pruned_text = f"{pruned['sparsity']:.1%}" if pruned else "not pruned"
        lines.append(
            f"| {row['layer']} | {as_pruned_text} | "
            f"{row['sparsity']:.1%} | {row['stored_tiles']} / {row['tiles']} | "
            f"{row['cycles_dense']:,} → {row['cycles']:,} | "
            f"{_percent_change(row['cycles_dense'], row['cycles'])} |"
        )
    return lines


def rtl_markdown(rtl: dict, board_name: str) -> list[str]:
    """The open RTL: files, lint, and (with --rtl-synth) Yosys's counts per unit next to
    the board's capacity, the utilisation against the fit margins, and logic depth."""
    lint = rtl.get("lint")
    clean = isinstance(lint, dict) and all(v == "clean" for v in lint.values())
    lines = [
        "## Open RTL",
        "",
        f"- {len(rtl['files'])} SystemVerilog files in `{rtl['filelist']}`; "
        + ("Verilator -Wall clean" if clean else f"lint: {lint}"),
        f"- Vivado: {rtl['vivado']}",
    ]
    synth = rtl.get("synth") or {}
    if "error" in synth:
        return [*lines, f"- synthesis: {synth['error']}"]
    keys = ("dsp", "bram36", "uram", "lut", "ff", "carry8")
    for top, result in synth.get("units", {}).items():
        lines += [
            "",
            f"### {top}: {synth['tool']}, stage {result['stage']} ({result['seconds']:.0f} s)",
            "",
            "Counts are Yosys's (not Vivado's; see docs/rtl-top.md for where they differ); "
            "-1 = not mapped at this stage. LUT levels: the deepest combinational path "
            "(a proxy for timing).",
            "",
            "| unit | DSP | BRAM36 | URAM | LUT | FF | CARRY | LUT levels |",
            "|---|---|---|---|---|---|---|---|",
        ]
        depth = result.get("depth", {})
        for name, counts in result.get("units", {}).items():
            cells = " | ".join(f"{counts[k]:g}" for k in keys)
            lines.append(f"| {name} | {cells} | {depth.get(name.removesuffix(' (glue)'), '')} |")
        total = " | ".join(f"{result[k]:g}" for k in keys)
        lines.append(f"| **total** | {total} | {depth.get(top, '')} |")
        budget = result.get("depth_budget")
        if budget:
            over = ", ".join(f"{unit} {levels:g}" for unit, levels in budget["over"].items())
            lines += [
                "",
                f"LUT-level budget at the board's {budget['clock_mhz']:g} MHz: "
                f'{budget["levels"]:g} (docs/rtl-top.md, "Logic depth"); '
                + (f"deeper: {over}." if over else "every unit is within it."),
            ]
        fit = result.get("utilisation")
        if fit:
            row = []
            for key in keys[:5]:
                entry = fit.get(key)
                row.append(
                    f"{entry['available']:g} ({entry['percent']:g}%"
                    f"{'' if entry['ok'] else ', over ' + str(entry['limit_percent']) + '%'})"
                    if entry
                    else "-"
                )
            lines.append(f"| {board_name} (used %) | {' | '.join(row)} | | |")
            over = [k for k, e in fit.items() if not e["ok"]]
            lines += [
                "",
                "Fits "
                + board_name
                + " within the margins (LUT/FF <= 85 %, DSP/BRAM/URAM <= 90 %)."
                if not over
                else f"**Does not fit {board_name} within the margins: {', '.join(over)}.**",
            ]
    return lines


def _calibration_bullet(calibration: dict | None) -> list[str]:
    """Where the formats came from; random calibration is said in bold."""
    if not calibration or "description" not in calibration:
        return []
    text = calibration["description"]
    return [f"- calibration: **{text}**" if calibration.get("random") else f"- calibration: {text}"]


def _weights_bullet(calibration: dict | None) -> list[str]:
    """How the weights were quantised, with what the rounding did to the layers' outputs."""
    if not calibration or "weights" not in calibration:
        return []
    formats = "a format per output channel" if calibration["weights"] == "channel" else "per tensor"
    rounding = calibration.get("rounding") or {}
    if not rounding:
        return [f"- weights: {formats}, rounded to nearest"]
    near = [entry["output_rel_rms_nearest"] for entry in rounding.values()]
    gptq = [entry["output_rel_rms_gptq"] for entry in rounding.values()]
    return [
        f"- weights: {formats}, GPTQ rounding on the calibration inputs: layer output error "
        f"{sum(near) / len(near):.3%} (nearest) → {sum(gptq) / len(gptq):.3%}, mean over "
        f"{len(rounding)} layers (`calibration.rounding` in report.json)"
    ]


def write_markdown(report: dict, path: Path, plot: bool = True) -> None:
    model, board, fid = report["model"], report["board"], report["fidelity"]["vs_torch"]
    program = report["program"]
    lines = [
        f"# codesign build: {model['name']} on {board['name']}",
        "",
        f"- board: {board['description']} (`{board['part']}`, {board['clock_mhz']:g} MHz)",
        f"- precision: {report['precision']} ({report['dsp_per_mac']} DSP per MAC)",
        f"- model: {model['tokens']} tokens, dim {model['dim']}, depth {model['depth']}, "
        f"{model['heads']} heads; {model['macs'] / 1e9:.3f} GMAC, {model['params'] / 1e6:.3f} M "
        f"params; weights: {model['weights']}",
        f"- program: {program['bytes']} bytes, {program['layers']} layers, "
        f"arena {program['arena_bytes']} bytes, sha256 `{program['sha256'][:16]}…`",
        *_pruning_bullet(report.get("pruning")),
        *_calibration_bullet(report.get("calibration")),
        *_weights_bullet(report.get("calibration")),
        "",
        "## Fidelity of the golden executor vs torch float",
        "",
        "| task | cosine | max abs err | rel RMS | decision agreement |",
        "|---|---|---|---|---|",
    ]
    for task, entry in fid["per_task"].items():
        lines.append(
            f"| {task} | {entry['cosine']:.8f} | {entry['max_abs_err']:.4g} | "
            f"{entry['rel_rms']:.4%} | {_fmt_metric(entry['agreement'], 4)} |"
        )
    lines += [
        "",
        f"Worst case: cosine {fid['cosine']:.8f}, max abs err {fid['max_abs_err']:.4g}, "
        f"rel RMS {fid['rel_rms']:.4%} over {report['fidelity']['images']} image(s) per task "
        f"({report['fidelity']['image_source']}).",
        "",
    ]
    if plot:
        lines += ["![per-layer error](fidelity.png)", ""]
    lines += [
        "## Layers",
        "",
        *format_legend(report["layers"]),
        "",
        "| layer | op | task | output format | saturated | rel RMS vs float |",
        "|---|---|---|---|---|---|",
    ]
    for layer in report["layers"]:
        rel = [t["rel_rms"] for t in layer["fidelity"].values() if "rel_rms" in t]
        lines.append(
            f"| {layer['name']} | {layer['op']} | {layer['task'] if layer['task'] >= 0 else 'all'}"
            f" | {layer['formats'].get('out_fmt', '')} | {layer['saturations']} | "
            f"{(f'{max(rel):.3%}') if rel else 'n/a'} |"
        )
    memory = report["program"].get("memory")
    if memory:
        lines += [
            "",
            "## Arena",
            "",
            f"{report['program']['arena_bytes']:,} bytes: "
            + (
                f"activations share bytes once their lifetimes end (the most live at once: "
                f"{memory['peak_live_bytes']:,}; a block per buffer would take "
                f"{memory['unshared_bytes']:,}). Every buffer's offset and lifetime: "
                "`program.json`, `meta.memory`."
                if memory["reuse"]
                else "a block per buffer (`--no-arena-reuse`): every layer's output survives "
                "the run."
            ),
        ]
        if plot:
            lines += ["", "![the arena's memory plan](memory.png)"]
    if report.get("estimate"):
        from .estimate import estimate_markdown

        lines += ["", estimate_markdown(report["estimate"])]
        if plot:
            lines += ["", "![cycles per layer](cycles.png)"]
    if report.get("pruning"):
        lines += ["", *pruning_markdown(report["pruning"], report.get("estimate"))]
    if report.get("csim"):
        from .hls.csim import markdown_lines

        lines += ["", *markdown_lines(report["csim"])]
    if report.get("rtl"):
        lines += ["", *rtl_markdown(report["rtl"], board["name"])]
    if report.get("vitis"):
        lines += ["", "## Vitis HLS", "", f"```\n{json.dumps(report['vitis'], indent=1)}\n```"]
    timing = report["timing"]
    lines += ["", "## Build time", ""]
    lines += [f"- {stage}: {seconds:.2f} s" for stage, seconds in timing["stages_s"].items()]
    if "total_s" in timing:
        lines.append(f"- total: {timing['total_s']:.2f} s")
    Path(path).write_text("\n".join(lines) + "\n")


TASK_STYLES = (("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-"), ("P", "--"))


def _percent_label(value: float, _position=None) -> str:
    """1e-05 -> '0.00001%': log-axis ticks in the report's unit, without exponents."""
    if value <= 0:
        return ""
    decimals = max(0, -math.floor(math.log10(value) + 1e-9))
    return f"{value:.{decimals}f}%"


def fidelity_figure(report: dict):
    """The figure of ``write_plot``: relative RMS error per layer in %, one line per
    task, each with its own marker, line style and a small offset so equal values on
    shared layers stay visible; the dotted lines are each task's model output."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from .estimate import layer_axis

    names = [layer["name"] for layer in report["layers"]]
    per_task = report["fidelity"]["vs_torch"]["per_task"]
    fig = Figure(figsize=(max(8.0, 0.17 * len(names) + 2.0), 5.0), layout="constrained")
    ax = fig.add_subplot()
    colours = colormaps["tab10"]
    spread = 0.3 if len(per_task) > 1 else 0.0
    for index, task in enumerate(per_task):
        marker, style = TASK_STYLES[index % len(TASK_STYLES)]
        shift = spread * (index / max(1, len(per_task) - 1) - 0.5)
        xs, ys = [], []
        for position, layer in enumerate(report["layers"]):
            stats = layer["fidelity"].get(task)
            if stats and "rel_rms" in stats:
                xs.append(position + shift)
                ys.append(100 * max(stats["rel_rms"], 1e-11))
        colour = colours(index % 10)
        hollow = "none" if index else colour  # the second task's markers show the first's
        ax.plot(xs, ys, ls=style, marker=marker, ms=4, lw=1, color=colour, mfc=hollow,
                label=f"task {task}: layers")  # fmt: skip
        ax.axhline(100 * per_task[task]["rel_rms"], color=colour, ls=(0, (1, 3)), lw=1,
                   label=f"task {task}: model output vs torch")  # fmt: skip
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if high / low < 1e3:  # few decades: ticks at 1, 2, 5 of each so values can be read
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_percent_label))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("relative RMS error vs float (%)")
    layer_axis(ax, names)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.grid(True, axis="x", alpha=0.15)
    ax.set_title(
        f"{report['model']['name']} {report['precision']}: per-layer error of the golden "
        "executor vs the float graph (first image)",
        fontsize=10,
    )
    fig.legend(loc="outside upper center", ncol=len(per_task), fontsize="small", frameon=False)
    return fig


def memory_figure(memory: dict):
    """The arena's memory plan: each buffer a box over the nodes it lives across (x) and
    the bytes it holds (y), so the reuse and what sets the arena's size can be seen."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    buffers = memory["buffers"]
    last = max((b["last"] for b in buffers), default=0)
    fig = Figure(figsize=(max(8.0, 0.08 * last + 3.0), 4.5), layout="constrained")
    ax = fig.add_subplot()
    colours = colormaps["tab10"]
    names = ("activation", "MoE queue / scratch", "input / output")
    kinds = {name: colours(index) for index, name in enumerate(names)}
    for buffer in buffers:
        if "#" in buffer["name"]:
            kind = "MoE queue / scratch"
        elif buffer["first"] < 0 or buffer["last"] == last:
            kind = "input / output"
        else:
            kind = "activation"
        ax.add_patch(
            Rectangle(
                (buffer["first"] - 0.45, buffer["offset"] / 1024),
                buffer["last"] - buffer["first"] + 0.9,
                buffer["nbytes"] / 1024,
                facecolor=kinds[kind],
                edgecolor="black",
                lw=0.3,
                alpha=0.8,
            )
        )
    arena = memory["arena_bytes"] / 1024
    ax.axhline(arena, color="black", ls="--", lw=1)
    ax.set_xlim(-1.5, last + 0.5)
    ax.set_ylim(0, arena * 1.08 or 1)
    ax.set_xlabel("graph node (-1: before the run; the last: after it)")
    ax.set_ylabel("arena offset (KiB)")
    shared = "shared by lifetime" if memory["reuse"] else "a block per buffer"
    ax.set_title(
        f"arena {arena:,.0f} KiB ({shared}; {memory['unshared_bytes'] / 1024:,.0f} KiB unshared)"
    )
    handles = [Patch(color=c, label=k) for k, c in kinds.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def write_memory_plot(memory: dict, path: Path) -> None:
    memory_figure(memory).savefig(path, dpi=110)


def write_plot(report: dict, path: Path) -> None:
    """Relative RMS error per layer, one line per task: where precision is lost."""
    fidelity_figure(report).savefig(path, dpi=110)
