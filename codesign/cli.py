"""Command line: ``codesign models``, ``codesign boards``, ``codesign build``."""

from __future__ import annotations

import sys
import time
from typing import ClassVar

import click
from rich.console import Console
from rich.table import Table

# wide enough that tables stay whole when the output goes to a file or a pipe
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _table(*columns: str) -> Table:
    table = Table()
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


class _LazyGroup(click.Group):
    """Subcommands that live beside their subsystems load on first use, so a typo in
    ``codesign build`` is refused before torch is imported (seconds on a busy machine)."""

    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "deploy": ("codesign.deploy", "deploy_command"),
        "prune": ("codesign.prune.cli", "prune_command"),
        "rtl": ("codesign.rtl.cli", "rtl_group"),
    }

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx, name):
        if name in self.LAZY:
            import importlib

            module, attr = self.LAZY[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="codesign")
def main() -> None:
    """FPGA co-design toolkit for Vision Transformers and multi-task MoE ViTs."""


@main.command("models")
def models_cmd() -> None:
    """List the registered model configurations."""
    from .models import count_macs, get_config, list_models

    table = _table("name", "family", "input", "tokens", "dim", "depth", "heads", "MoE", "GMAC")
    for name in list_models():
        cfg = get_config(name)
        moe = f"{cfg.moe.num_experts}x top-{cfg.moe.top_k}" if cfg.moe else "-"
        table.add_row(
            name,
            cfg.family,
            "x".join(map(str, (cfg.in_chans, *cfg.image_size))),
            str(cfg.tokens),
            str(cfg.embed_dim),
            str(cfg.depth),
            str(cfg.num_heads),
            moe,
            f"{count_macs(cfg) / 1e9:.3f}",
        )
    console.print(table)


@main.command("boards")
def boards_cmd() -> None:
    """List the supported boards."""
    from .arch import BOARDS

    table = _table("name", "part", "MHz", "DSP", "BRAM36", "URAM", "LUT", "FF", "DDR (peak GB/s)")
    for board in BOARDS.values():
        table.add_row(
            board.name,
            board.part,
            f"{board.clock_mhz:g}",
            str(board.dsp),
            str(board.bram36),
            str(board.uram),
            str(board.lut),
            str(board.ff),
            f"{board.ddr} ({board.ddr_peak_gbps:g})",
        )
    console.print(table)


@main.command("build")
@click.option(
    "--model",
    "model",
    required=True,
    help="registered name (codesign models), a YAML config, or timm:NAME[:key=value,...]",
)
@click.option("--board", default="zcu102", show_default=True, help="target board")
@click.option("--task", type=int, multiple=True, help="task id(s) to verify (default: all)")
@click.option(
    "--weights",
    help="torch state dict file; 'random' for seeded random weights "
    "(default: the model's shipped checkpoint if it has one, else random)",
)
@click.option(
    "--precision",
    help="wNaM[rK]: weight/act(/residual) bits [the board's: w16a24; w8a16 on the Ultra96-V2, "
    "w16a16 for m3vit on the ZCU102]",
)
@click.option("--out", type=click.Path(file_okay=False), help="output dir [build/<model>-<board>]")
@click.option("--seed", default=0, show_default=True, help="seed of the random weights")
@click.option(
    "--calib",
    help="calibration images: a folder of images, an .npy array [N, C, H, W], 'digits', or "
    "a count N of random images (default: the model's dataset if it has one, else 4 random)",
)
@click.option(
    "--quant",
    type=click.Choice(["auto", "max"]),
    default="auto",
    show_default=True,
    help="formats: auto = activations of 12 bits or fewer get LayerNorm smoothing and "
    "MSE-chosen ranges; max = every range from the calibrated maximum",
)
@click.option(
    "--weight-formats",
    type=click.Choice(["channel", "tensor"]),
    default="channel",
    show_default=True,
    help="a weight format per output channel of every linear layer and expert, or per tensor",
)
@click.option(
    "--rounding",
    type=click.Choice(["auto", "nearest", "gptq"]),
    default="auto",
    show_default=True,
    help="weight rounding: gptq minimises each layer's output error on the calibration "
    "images; auto = gptq for weights of 8 bits or fewer, nearest above",
)
@click.option(
    "--ddr-efficiency",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.8,
    show_default=True,
    help="the DDR model's sustained share of the board's peak (latency estimate)",
)
@click.option(
    "--images",
    default="1",
    show_default=True,
    help="evaluation images per task: a count of random images, an .npy file or a folder of "
    "images (read as --calib reads them)",
)
@click.option("--no-plot", is_flag=True, help="skip the fidelity plot")
@click.option(
    "--csim/--no-csim",
    default=True,
    show_default=True,
    help="C-simulate the HLS kernel (g++) and check it bit for bit against the golden executor",
)
@click.option(
    "--arch",
    "arch_spec",
    help="ArchConfig fields, e.g. tile_in=16,tile_out=32,attn_parallel=4,bus_bits=256 "
    "(default: the board's, shrunk until it fits)",
)
@click.option(
    "--arena-reuse/--no-arena-reuse",
    default=True,
    show_default=True,
    help="activations share arena bytes when their lifetimes do not overlap; without, every "
    "layer's output stays in the arena after a run (for debugging, at the unshared size)",
)
@click.option("--vitis", is_flag=True, help="run vitis_hls csynth on the project (if on PATH)")
@click.option("--prune", "prune_spec", help="block-prune first: lpvit:0.5, magnitude:0.3, ...")
@click.option("--rtl", is_flag=True, help="write the open RTL (rtl/, filelist.f) and lint it")
@click.option(
    "--rtl-synth",
    type=click.Choice(["dsp", "ffs", "full"]),
    help="with --rtl: Yosys counts of the whole accelerator per unit, the board's "
    "utilisation and logic depth (full: minutes for small tops, hours for m3vit-sized)",
)
def build_cmd(
    model,
    board,
    task,
    weights,
    precision,
    out,
    seed,
    calib,
    quant,
    weight_formats,
    rounding,
    ddr_efficiency,
    images,
    no_plot,
    csim,
    arch_spec,
    arena_reuse,
    vitis,
    prune_spec,
    rtl,
    rtl_synth,
) -> None:
    """Compile a model for a board and verify it bit-exactly against torch."""
    from pathlib import Path

    from .arch import parse_precision
    from .names import board_name, model_name
    from .util import check_output_dir

    started = time.perf_counter()
    try:  # names and specs first: a typo is refused before torch loads
        model, board = model_name(model), board_name(board)
        precision = parse_precision(precision) if precision else None
        arch = parse_arch(arch_spec, board, model, precision) if arch_spec else None
        if out is not None:
            check_output_dir(Path(out))
        if calib is not None and not (calib.isdigit() or calib == "digits" or Path(calib).exists()):
            raise ValueError(
                f"--calib {calib}: not a count, 'digits', an .npy file or a folder of images"
            )
        if images.isdigit():
            images = int(images)
        elif not Path(images).exists():
            raise ValueError(f"--images {images}: not a count, an .npy file or a folder of images")
    except ValueError as error:
        err_console.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    from .flow import STEPS, BuildState, default_out_dir, make_options, run_steps, write_outputs
    from .progress import step_bar

    try:
        opts = make_options(
            model,
            board,
            list(task) or None,
            precision,
            weights,
            out,
            seed=seed,
            calib=calib,
            quant=quant,
            weight_formats=weight_formats,
            rounding=rounding,
            ddr_efficiency=ddr_efficiency,
            eval_images=images,
            plot=not no_plot,
            csim=csim,
            arch=arch,
            arena_reuse=arena_reuse,
            prune=prune_spec,
            rtl=rtl,
            rtl_synth=rtl_synth,
        )
        state = BuildState(opts)
        steps = len(STEPS)
        with step_bar(steps + 1, progress=True, console=err_console) as progress:
            run_steps(state, progress)
            progress("write", steps, steps + 1)
            out_dir = opts.out or default_out_dir(Path(str(model)).stem, state.board.name)
            write_outputs(state, out_dir, plot=opts.plot)
    except (ValueError, OSError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    fid = state.report["fidelity"]["vs_torch"]
    console.print(f"wrote {out_dir}/ ({_listing(Path(out_dir))})")
    console.print(f"  weights: {state.report['model']['weights']}")
    calibration = state.report["calibration"]
    style = "[yellow]" if calibration["random"] else ""
    console.print(f"  {style}calibration: {calibration['description']}")
    for name, entry in fid["per_task"].items():
        agree = "" if entry["agreement"] is None else f", agreement {entry['agreement']:.4f}"
        console.print(
            f"  {name}: cosine {entry['cosine']:.6f}, rel_rms {entry['rel_rms']:.4%}, "
            f"max_abs_err {entry['max_abs_err']:.4g}{agree}"
        )
    _print_estimate(state.report.get("estimate"), state.report["arch"])
    _print_pruning(state.report.get("pruning"))
    _print_rtl(state.report.get("rtl"))
    failed = _print_csim(state.report.get("csim", {}))
    if vitis:
        failed |= _run_vitis(state, out_dir)
    console.print(f"  wall time {time.perf_counter() - started:.1f} s")
    if failed:
        sys.exit(1)


def _listing(folder) -> str:
    """What a build folder holds, as the user will find it (folders end in /)."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(name for name in names if not name.startswith("."))


def parse_arch(spec: str, board: str, model: str | None = None, precision: str | None = None):
    """``key=value,...``: the fields that change the board's default ArchConfig for `model`
    at `precision` (the build sizes the buffers left out to the model)."""
    from .arch import ArchConfig, get_board
    from .arch.config import default_arch

    base = default_arch(get_board(board).name, model, precision).to_dict()
    changes = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in base:
            known = ", ".join(base)
            raise ValueError(f"--arch: {item!r} is not key=value with a key among {known}")
        kind = type(base[key])
        try:
            changes[key] = kind(value)
        except ValueError:
            raise ValueError(f"--arch: {key} needs a {kind.__name__}, got {value!r}") from None
    ArchConfig.from_dict({**base, **changes})  # every field checked before the build starts
    return changes


def _print_estimate(estimate: dict | None, arch: dict) -> None:
    """Modelled figures, each saying what it rests on (DDR model, estimator not synthesis)."""
    from .estimate.resources import provisional_warning

    if not estimate:
        return
    res, assumed = estimate["resources"], estimate["assumptions"]
    console.print(
        f"  latency (cycle model, task {assumed['task']}): {estimate['latency_ms']:.2f} ms/image, "
        f"{estimate['cycles']} cycles at {assumed['clock_mhz']:g} MHz; DDR model: "
        f"{assumed['ddr']['description']}"
    )
    source = res.get("source", "estimator constants")
    console.print(
        f"  resources ({source}; not a synthesis of this build): UCU {arch['tile_out']}x"
        f"{arch['tile_in']}, P={arch['attn_parallel']}; DSP {res['dsp']}, BRAM36 "
        f"{res['bram36']}, LUT {res['lut']}, FF {res['ff']} (fits by this estimate)"
    )
    warning = provisional_warning(res, assumed["board"])
    if warning:
        console.print(f"  [yellow]warning[/]: {warning}")


def _print_pruning(pruning: dict | None) -> None:
    if not pruning:
        return
    totals = pruning["program"]["totals"]
    console.print(
        f"  pruning: {pruning.get('method', 'weights')} — {totals['tile_sparsity']:.1%} of "
        f"linear tiles skipped, linear-layer cycles {totals['cycle_ratio']:.1%} of dense "
        "(the estimate on this board, DDR model above)"
    )


def _print_rtl(rtl: dict | None) -> None:
    if not rtl:
        return
    lint = rtl.get("lint")
    clean = isinstance(lint, dict) and all(v == "clean" for v in lint.values())
    lint_text = "Verilator -Wall clean" if clean else f"lint: {lint}"
    console.print(f"  RTL: {len(rtl['files'])} files in {rtl['filelist']}; {lint_text}")
    for unit, counts in rtl.get("synth", {}).get("units", {}).items():
        keys = ("dsp", "bram36", "lut", "ff")
        shown = ", ".join(f"{k} {counts[k]}" for k in keys if counts.get(k, -1) >= 0)
        fit = counts.get("utilisation", {})
        over = [key for key, entry in fit.items() if not entry["ok"]]
        verdict = (f"; over the fit margin: {', '.join(over)}" if over
                   else "; fits the board" if fit else "")  # fmt: skip
        console.print(f"  Yosys {unit}: {shown}{verdict}")


def _run_vitis(state, out_dir) -> bool:
    """Synthesise with vitis_hls when it is installed; say so plainly when it is not."""
    import json
    import os
    from pathlib import Path

    from .hls.vitis import compare_with_estimate, run_vitis_hls

    result = run_vitis_hls(Path(out_dir) / "hls", ("csynth",))
    if not result.get("ran"):
        console.print(f"  [yellow]Vitis HLS: not run: {result.get('reason')}[/yellow]")
    elif result.get("report") and state.report.get("estimate"):
        result["vs_estimate"] = compare_with_estimate(
            result["report"], state.report["estimate"]["resources"]
        )
    state.report["vitis"] = result
    path = Path(out_dir) / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state.report, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    if result.get("ran") and not result.get("ok"):
        err_console.print(f"[red]Vitis HLS failed[/red]: {result.get('reason')}")
        return True
    return False


def _print_csim(csim: dict) -> bool:
    """One line about the C-simulation; True when it ran and the bits differ."""
    if not csim.get("ran"):
        reason = csim.get("reason") or "not run"
        if csim.get("bit_exact") is False:  # it was attempted and broke
            err_console.print(f"[red]C-sim FAILED[/red]: {reason}")
            return True
        style = "" if reason.startswith("disabled") else "[yellow]"
        console.print(f"  {style}C-sim: not run: {reason}")
        return False
    timing = f"run {csim['seconds']:.2f} s, compile {csim['compile_seconds']:.2f} s"
    if csim["bit_exact"]:
        console.print(f"  C-sim: bit-exact with the golden executor ({timing})")
        return False
    err_console.print(
        f"[red]C-sim MISMATCH[/red]: first mismatching layer {csim['first_mismatch']} ({timing})"
    )
    for case in csim.get("cases", []):
        for line in case.get("mismatches", [])[:5]:
            err_console.print(f"  {case['case']}: {line}")
    return True


@main.command("explore")
@click.option("--model", "model", required=True, help="a registered model name")
@click.option("--board", required=True, help="target board")
@click.option(
    "--precision",
    "precisions",
    help="comma-separated precisions to search, e.g. w16a24,w8a16 [the board's default]",
)
@click.option(
    "--objective",
    type=click.Choice(["latency", "throughput", "dsp", "lut"]),
    default="latency",
    show_default=True,
    help="what the pick minimises (throughput ranks like latency for one model)",
)
@click.option(
    "--constraint",
    "constraints",
    default="",
    help="e.g. lut<=0.6,dsp<=80%,latency<=5 (resources as a share of the board, latency in ms)",
)
@click.option(
    "--verify",
    default=3,
    show_default=True,
    help="front points (best by the objective) to synthesise with Yosys and simulate as "
    "RTL; 0 = estimator only. Whole-top synthesis of a large design takes hours",
)
@click.option(
    "--verify-kinds",
    default="synth,sim",
    show_default=True,
    help="which checks the verified points get: synth, sim or both",
)
@click.option(
    "--scheduler",
    default=None,
    help="a Dask scheduler (tcp://HOST:PORT); default a LocalCluster, 'serial' in-process",
)
@click.option("--workers", default=2, show_default=True, help="LocalCluster workers")
@click.option(
    "--ddr-efficiency",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.8,
    show_default=True,
    help="the DDR model's sustained share of the board's peak bandwidth",
)
@click.option(
    "--weight-ports",
    default=None,
    help="weight masters to search, e.g. 1,4 [1, 2 and 4 as far as the board has PS ports]",
)
@click.option(
    "--window",
    "windows",
    type=click.Choice(["both", "none", "model"]),
    default="both",
    show_default=True,
    help="the arena's on-chip window: none, as large as the model's memory plan fills it, "
    "or both searched",
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="output dir [explore/<model>-<board>]"
)
def explore_cmd(
    model, board, precisions, objective, constraints, verify, verify_kinds, scheduler,
    workers, ddr_efficiency, weight_ports, windows, out,
) -> None:  # fmt: skip
    """Search the ArchConfig space: Pareto front of latency vs resources, and a pick."""
    from pathlib import Path

    from .exploration import ExploreError, explore
    from .names import board_name, model_name
    from .progress import job_bar

    try:
        model, board = model_name(model), board_name(board)
        out_dir = Path(out) if out else Path("explore") / f"{model}-{board}"
        if verify and "synth" in verify_kinds:
            err_console.print(
                f"verifying {verify} point(s) with whole-top Yosys synthesis: minutes for a "
                "small design, hours for a large one (--verify-kinds sim or --verify 0 skip it)"
            )
        with job_bar() as bar:
            result = explore(
                model, board, precisions, objective, constraints, verify=verify,
                verify_kinds=tuple(k for k in verify_kinds.split(",") if k),
                scheduler=scheduler, workers=workers, out=out_dir,
                ddr_efficiency=ddr_efficiency, progress=bar, weight_ports=weight_ports,
                windows=windows,
            )  # fmt: skip
    except (ExploreError, ValueError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    pick, default = result.pick, result.default
    table = _table("point", "latency ms", "LUT %", "DSP %", "BRAM36 %", "verified")
    for point in result.front[:12]:
        u = point["utilisation"]
        flags = [", ".join(v["flagged"]) or "ok" for v in point["verified"].values()]
        table.add_row(
            ("* " if point is pick else "") + _point_text(point), f"{point['latency_ms']:.3f}",
            f"{100 * u['lut']:.1f}", f"{100 * u['dsp']:.1f}", f"{100 * u['bram36']:.1f}",
            "; ".join(flags) or "-",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{result.timing['points']} points, {len(result.front)} on the front, search "
        f"{result.timing['search_s']} s ({result.timing['scheduler']}); estimates at "
        f"{result.ddr['description']}"
    )
    console.print(f"pick: {_point_text(pick)}, {pick['latency_ms']:.3f} ms")
    if result.verified:
        from .exploration import _verified_pick_text

        console.print(f"verified pick: {_verified_pick_text(result)}")
    if default is not None:
        ratio = pick["latency_ms"] / default["latency_ms"]
        console.print(
            f"what a build picks today: {_point_text(default)}, {default['latency_ms']:.3f} ms "
            f"(pick / default {ratio:.3f})"
            + (", outside the searched space" if default.get("searched") is False else "")
        )
    from .rtl import FIT_LIMITS

    tight = [f"{key} {100 * pick['utilisation'][key]:.1f} %" for key, limit in FIT_LIMITS.items()
             if pick["utilisation"][key] > limit]  # fmt: skip
    if tight:
        margins = ",".join(f"{k.removesuffix('36')}<={v}" for k, v in FIT_LIMITS.items())
        console.print(
            f"[yellow]note:[/yellow] the pick uses {', '.join(tight)} of {board} by the "
            f"estimate, beyond the margins the synthesis fit check holds; --constraint "
            f"{margins} keeps them"
        )
    console.print(f"wrote {out_dir}/pareto.json, pareto.png, report.md")


def _point_text(point: dict) -> str:
    k = point["knobs"]
    return (
        f"{point['precision']} {k['tile_in']}x{k['tile_out']} P{k['attn_parallel']}"
        f"x{k['attn_lanes']} bus{k['bus_bits']}"
        + (f" w{k['weight_ports']}" if k.get("weight_ports", 1) > 1 else "")
        + (f" win{k['arena_window_kib']}K" if k.get("arena_window_kib") else "")
    )


def run() -> None:
    """The ``codesign`` console script: Ctrl-C at any point (also while torch loads)
    ends with one line and exit status 130, never a traceback."""
    try:
        main()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    run()
