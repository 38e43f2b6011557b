"""Random images for a build and the golden executor's raw outputs for them: what the
driver tests (golden, C-sim and RTL boards) compare against."""

from __future__ import annotations

import numpy as np

from codesign.golden import GoldenExecutor


def random_images(build, count: int, seed: int = 0) -> np.ndarray:
    meta = build.graph.meta
    return np.random.default_rng(seed).standard_normal(
        (count, meta["in_chans"], *meta["image_size"])
    )


def golden_raw(build, raw, task: int) -> np.ndarray:
    executor = GoldenExecutor(build.program)
    return np.stack([executor.run(sample, task).output for sample in raw])
