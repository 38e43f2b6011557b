"""Command line: ``codesign models``, ``codesign boards``, ``codesign build``."""

from __future__ import annotations

import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# wide enough that tables stay whole when the output goes to a file or a pipe
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def _table(*columns: str) -> Table:
    table = Table()
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


@click.group()
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

    table = _table("name", "part", "MHz", "DSP", "BRAM36", "URAM", "LUT", "FF", "DDR GB/s")
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
            f"{board.ddr_gbps:g}",
        )
    console.print(table)


@main.command("build")
@click.option("--model", "model", required=True, help="registered name (codesign models) or YAML")
@click.option("--board", default="zcu102", show_default=True, help="target board")
@click.option("--task", type=int, multiple=True, help="task id(s) to verify (default: all)")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="torch state dict")
@click.option("--precision", default="w16a24", show_default=True, help="wNaM: weight/act bits")
@click.option("--out", type=click.Path(file_okay=False), help="output dir [build/<model>-<board>]")
@click.option("--seed", default=0, show_default=True, help="seed of the random weights")
@click.option("--calib", default=4, show_default=True, help="calibration images")
@click.option("--images", default=1, show_default=True, help="evaluation images per task")
@click.option("--no-plot", is_flag=True, help="skip the fidelity plot")
def build_cmd(model, board, task, weights, precision, out, seed, calib, images, no_plot) -> None:
    """Compile a model for a board and verify it bit-exactly against torch."""
    from pathlib import Path

    from .flow import BuildState, default_out_dir, make_options, run_steps, write_outputs

    started = time.perf_counter()
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
            eval_images=images,
            plot=not no_plot,
        )
        state = BuildState(opts)
        columns = (
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err_console, transient=False) as bar:
            job = bar.add_task("build", total=8)

            def progress(name, index, total):
                bar.update(job, description=name, completed=index)

            run_steps(state, progress)
            bar.update(job, description="write", completed=7)
            out_dir = opts.out or default_out_dir(Path(str(model)).stem, state.board.name)
            write_outputs(state, out_dir, plot=opts.plot)
            bar.update(job, description="done", completed=8)
    except (ValueError, OSError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    fid = state.report["fidelity"]["vs_torch"]
    console.print(f"wrote {out_dir}/ (program.bin, program.json, report.json, report.md)")
    for name, entry in fid["per_task"].items():
        agree = "" if entry["agreement"] is None else f", agreement {entry['agreement']:.4f}"
        console.print(
            f"  {name}: cosine {entry['cosine']:.6f}, rel_rms {entry['rel_rms']:.4%}, "
            f"max_abs_err {entry['max_abs_err']:.4g}{agree}"
        )
    console.print(f"  wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
