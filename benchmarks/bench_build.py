"""Build and golden-executor speed: wall time per build stage, per inference, per model.

    python benchmarks/bench_build.py [model ...]     (default: m3vit-tiny vit-tiny m3vit)

Prints absolute seconds and the golden executor's throughput in GMAC/s of the
model's work (integer arithmetic in numpy), so changes can be compared run to run.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import codesign


def bench(name: str) -> None:
    start = time.perf_counter()
    build = codesign.build(name, board="zcu102")
    wall = time.perf_counter() - start
    timing = build.report["timing"]["stages_s"]
    stages = ", ".join(f"{k} {v:.2f}" for k, v in timing.items())
    print(f"{name}: build {wall:.2f} s wall ({stages})")
    graph = build.graph
    images = np.random.default_rng(0).standard_normal(
        (3, graph.meta["in_chans"], *graph.meta["image_size"])
    )
    for task in graph.tasks:
        build.predict(images[:1], task=task)  # warm the weight cache
        start = time.perf_counter()
        build.predict(images, task=task)
        per_image = (time.perf_counter() - start) / len(images)
        gmacs = graph.macs(task) / per_image / 1e9
        rate = f"{gmacs:.2f} GMAC/s exact integer"
        print(f"  task {task}: golden {per_image * 1e3:.1f} ms/image ({rate})")
    print(f"  program {build.report['program']['bytes'] / 1e6:.2f} MB, "
          f"{build.report['program']['layers']} layers")  # fmt: skip


if __name__ == "__main__":
    for model in sys.argv[1:] or ["m3vit-tiny", "vit-tiny", "m3vit"]:
        bench(model)
