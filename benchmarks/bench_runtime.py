"""FPS of the host driver on each simulated board (golden executor, C-sim kernel).

    python benchmarks/bench_runtime.py [--batch 8] [--repeats 3] [model ...]
        models: m3vit-tiny (default), vit-small (a 32x32 ViT), any registered name

Per model, board and task: single-image latency, batched FPS (two arenas ping-pong),
the kernel's share (start to ap_done) and the host's (write + flush, invalidate + read).
These are simulator speeds, not FPGA speeds: the golden board runs numpy, the C-sim
board the HLS kernel compiled with g++ -O2 on this CPU. "model" is the cycle model's
latency of the last run on a ZCU102 at 300 MHz (codesign.estimate), an estimate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import codesign
from codesign.runtime import Accelerator, ModelCard, csim_board, golden_board
from codesign.runtime.csim_device import build_library, cache_root

VIT_SMALL = {
    "name": "vit-small",
    "family": "vit",
    "image_size": [32, 32],
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 10,
}


def make_build(name: str):
    if name == "vit-small":
        from codesign.models import config_from_dict, create_model

        return codesign.build(create_model(config_from_dict(VIT_SMALL)), board="zcu102")
    return codesign.build(name, board="zcu102")


def best(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times)


def bench(name: str, batch: int, repeats: int) -> None:
    began = time.perf_counter()
    build = make_build(name)
    card = ModelCard.from_build(build)
    print(
        f"{name}: built in {time.perf_counter() - began:.1f} s; program "
        f"{len(build.program_bytes) / 1e6:.2f} MB, arena {build.program.arena_bytes / 1e3:.1f} kB"
    )
    meta = build.graph.meta
    images = np.random.default_rng(0).standard_normal(
        (batch, meta["in_chans"], *meta["image_size"])
    )
    arch = build.state.arch
    cached = any(cache_root().glob("*/codesign_kernel.so"))
    began = time.perf_counter()
    build_library(arch, quiet=True)
    compile_s = time.perf_counter() - began
    note = "cache hit" if compile_s < 1 and cached else "compiled"
    print(f"  C-sim library: {compile_s:.1f} s ({note})")
    boards = (("golden", lambda: golden_board("zcu102")), ("csim", lambda: csim_board(arch)))
    for board_name, factory in boards:
        board = factory()
        began = time.perf_counter()
        accel = Accelerator.from_device(board, build.program_bytes, card)
        open_s = time.perf_counter() - began
        for task, task_name in enumerate(card.task_names):
            single = best(lambda a=accel, t=task: a.run(images[:1], t), repeats)
            batched = best(lambda a=accel, t=task: a.run(images, t), repeats)
            kernel = np.mean([t.kernel_s for t in accel.timings])
            host = np.mean([t.prepare_s + t.readback_s for t in accel.timings])
            run = board.last_run()
            model = f" | model {run.latency_ms:.3f} ms" if run.latency_ms is not None else ""
            print(
                f"  {board_name:6s} {task_name:14s} single {single * 1e3:8.2f} ms | "
                f"batch {batch}: {batch / batched:7.1f} FPS | kernel {kernel * 1e3:8.2f} ms, "
                f"host {host * 1e3:6.3f} ms per image{model}"
            )
        print(
            f"  {board_name:6s} open (copy + flush program) {open_s * 1e3:.1f} ms, "
            f"{board.stats.register_writes} register writes, "
            f"{board.stats.bytes_flushed / 1e6:.2f} MB flushed in all"
        )
        accel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["m3vit-tiny", "vit-small"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name in args.models:
        bench(name, args.batch, args.repeats)


if __name__ == "__main__":
    main()
