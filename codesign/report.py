"""Human-readable build report (Markdown) and its per-layer fidelity plot."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt_metric(value, digits=6) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


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
        f"rel RMS {fid['rel_rms']:.4%} over {report['fidelity']['images']} image(s) per task.",
        "",
    ]
    if plot:
        lines += ["![per-layer error](fidelity.png)", ""]
    lines += [
        "## Layers",
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
    if report.get("estimate"):
        from .estimate import estimate_markdown

        lines += ["", estimate_markdown(report["estimate"])]
        if plot:
            lines += ["", "![cycles per layer](cycles.png)"]
    if report.get("csim"):
        from .hls.csim import markdown_lines

        lines += ["", *markdown_lines(report["csim"])]
    if report.get("vitis"):
        lines += ["", "## Vitis HLS", "", f"```\n{json.dumps(report['vitis'], indent=1)}\n```"]
    timing = report["timing"]
    lines += ["", "## Build time", ""]
    lines += [f"- {stage}: {seconds:.2f} s" for stage, seconds in timing["stages_s"].items()]
    if "total_s" in timing:
        lines.append(f"- total: {timing['total_s']:.2f} s")
    Path(path).write_text("\n".join(lines) + "\n")


def write_plot(report: dict, path: Path) -> None:
    """Relative RMS error per layer, one line per task: where precision is lost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["fidelity"]["vs_torch"]["per_task"])
    fig, ax = plt.subplots(figsize=(max(6, 0.12 * len(report["layers"])), 3.5))
    for task in tasks:
        xs, ys = [], []
        for index, layer in enumerate(report["layers"]):
            stats = layer["fidelity"].get(task)
            if stats and "rel_rms" in stats:
                xs.append(index)
                ys.append(max(stats["rel_rms"], 1e-9))
        ax.semilogy(xs, ys, marker=".", label=task)
    ax.set_xlabel("layer (program order)")
    ax.set_ylabel("relative RMS error vs float")
    ax.set_title(f"{report['model']['name']} {report['precision']}: per-layer error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
