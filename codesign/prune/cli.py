"""``codesign prune``: block-prune a registered model and write the pruned state dict.

A standalone click command (``prune_command``); the main CLI registers it.
"""

from __future__ import annotations

import sys
import time

import click
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def _calibration_data(model, config, data: str, calib: int, seed: int):
    """(calibration images, fine-tuning images, their labels or None, source name)."""
    if calib < 1:
        from .targets import PruneError

        raise PruneError(f"the calibration set is empty (--calib {calib}); give at least one")
    if data == "auto":
        data = "digits" if config.name.startswith("digits") else "random"
    if data == "digits":
        from ..datasets import load_digits

        if config.in_chans != 1 or config.image_size[0] != config.image_size[1]:
            raise click.BadParameter(
                f"digits are one-channel square images; model {config.name} takes "
                f"{config.in_chans}x{config.image_size[0]}x{config.image_size[1]}",
                param_hint="--data",
            )
        dataset = load_digits(size=config.image_size[0])
        calib_split = dataset.train.take(calib, seed=seed)
        return calib_split.images, dataset.train.images, dataset.train.labels, "digits (train)"
    from .spec import calibration_images

    images = calibration_images(model, calib, seed=seed)
    return images, images, None, "random N(0, 1)"


@click.command("prune")
@click.option("--model", "model_name", required=True, help="registered name or YAML config")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="torch state dict")
@click.option(
    "--target-flops",
    type=float,
    help="linear MACs to keep: a fraction of the dense ones (<= 1) or a count",
)
@click.option("--sparsity", type=float, help="fraction of the linear MACs to remove, in [0, 1)")
@click.option(
    "--method", type=click.Choice(["lpvit", "magnitude"]), default="lpvit", show_default=True
)
@click.option("--block", help="block shape BHxBW [default: the board's UCU tile To x Ti]")
@click.option(
    "--board",
    default="zcu102",
    show_default=True,
    help="board whose default ArchConfig (for --precision) sets the block shape (its UCU "
    "tile) and on which each layer's cycles are costed, as a build of the model compiles "
    "it (the allocation's hardware term, the table)",
)
@click.option("--precision", default=None,
              help="wNaM[rK] the build will use [the board's default]")  # fmt: skip
@click.option(
    "--ddr-efficiency",
    default=0.8,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="the DDR model's sustained share of the board's peak",
)
@click.option("--calib", default=64, show_default=True, help="calibration images")
@click.option(
    "--data",
    type=click.Choice(["auto", "digits", "random"]),
    default="auto",
    show_default=True,
    help="calibration/fine-tuning images (auto: digits for digits models, else random)",
)
@click.option("--finetune", "finetune_epochs", default=0, show_default=True,
              help="epochs of distillation fine-tuning (0 = none)")  # fmt: skip
@click.option("--min-keep", default=0.1, show_default=True, help="minimum kept fraction/layer")
@click.option("--hw-weight", default=0.5, show_default=True, help="hardware term weight [0, 1]")
@click.option(
    "--measure-levels",
    default=8,
    show_default=True,
    help="sparsity levels per layer where the distortion is measured (0: Taylor only)",
)
@click.option("--seed", default=0, show_default=True, help="seed (random weights, sampling)")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="pruned state dict")
def prune_command(
    model_name,
    weights,
    target_flops,
    sparsity,
    method,
    block,
    board,
    precision,
    ddr_efficiency,
    calib,
    data,
    finetune_epochs,
    min_keep,
    hw_weight,
    measure_levels,
    seed,
    out,
) -> None:
    """Block-prune the linear layers (LPViT) and write a state dict with zeroed blocks,
    the masks and a per-layer sparsity table (OUT and OUT with suffix .json)."""
    import copy

    from ..arch import get_board
    from ..arch.config import default_arch
    from ..flow import torch_threads
    from ..models import WeightsError, create_model, resolve_config
    from .core import prune
    from .finetune import finetune
    from .io import save_pruned
    from .targets import PruneError, parse_block

    started = time.perf_counter()
    try:
        if (target_flops is None) == (sparsity is None):
            raise click.UsageError("give exactly one of --target-flops and --sparsity")
        config = resolve_config(model_name)
        arch = default_arch(get_board(board).name, config.name, precision)
        if block is not None:
            bh, bw = parse_block(block)
            if bh & (bh - 1) == 0 and bw & (bw - 1) == 0:
                arch = arch.with_(tile_out=bh, tile_in=bw)  # a pruned block is a skipped tile
        model = create_model(config, seed=seed, weights=weights)
        images, train_images, train_labels, source = _calibration_data(
            model, config, data, calib, seed
        )
        with torch_threads(1):
            pruned, result = prune(
                model,
                images,
                method=method,
                sparsity=sparsity,
                target_macs=target_flops,
                block=block,
                arch=arch,
                board=board,
                precision=precision,
                ddr_efficiency=ddr_efficiency,
                min_keep=min_keep,
                hw_weight=hw_weight,
                measure_levels=measure_levels,
                seed=seed,
                progress=True,
            )
            if finetune_epochs > 0:
                finetune(
                    pruned,
                    copy.deepcopy(model),
                    result,
                    train_images,
                    train_labels,
                    epochs=finetune_epochs,
                    seed=seed,
                    progress=True,
                )
                result.summary["finetune"] = {"epochs": finetune_epochs, "data": source}
        result.summary["model"] = config.name
        result.summary["weights"] = str(weights) if weights else f"random (seed {seed})"
        result.summary["calibration"] = {"images": len(images), "data": source}
        checkpoint, side = save_pruned(out, pruned, result)
    except (PruneError, WeightsError, ValueError, OSError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    _print_summary(result.summary)
    console.print(f"wrote {checkpoint} (state dict + masks) and {side} (per-layer table)")
    console.print(f"  wall time {time.perf_counter() - started:.1f} s")


def _print_summary(summary: dict) -> None:
    table = Table(title=f"{summary['method']} block pruning, blocks {summary['block']}")
    for column in ("layer", "shape", "blocks", "kept", "sparsity", "cycles dense", "cycles"):
        table.add_column(column, no_wrap=True, justify="left" if column == "layer" else "right")
    for row in summary["layers"]:
        table.add_row(
            row["layer"],
            "x".join(map(str, row["shape"])),
            str(row["blocks"]),
            str(row["kept_blocks"]),
            f"{row['sparsity']:.1%}",
            f"{row['cycles_dense']:,}",
            f"{row['cycles_pruned']:,}",
        )
    console.print(table)
    totals = summary["totals"]
    console.print(
        f"linear MACs {totals['macs_kept']:,} of {totals['macs_dense']:,} kept "
        f"(sparsity {totals['linear_mac_sparsity']:.1%}); cycles of these layers "
        f"{totals['cycles_pruned']:,} vs {totals['cycles_dense']:,} dense "
        f"({totals['cycle_ratio']:.1%})"
    )
    cost = summary["cycles"]
    console.print(
        f"  cycles: the build's estimate on the {cost['board']} at {cost['precision']} (UCU "
        f"{cost['tile'][0]}x{cost['tile'][1]}, {cost['weight_ports']} weight port(s), "
        f"{cost['window_kib']} KiB window); DDR model: {cost['ddr']['description']}"
    )
    for item in summary["excluded"]:
        console.print(f"  not pruned: {item['layer']} ({item['reason']})")


if __name__ == "__main__":
    prune_command()


__all__ = ["prune_command"]
