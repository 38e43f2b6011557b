"""End to end: the full m3vit on the RTL accelerator at its ZCU102 default (w16a16, the
board's ArchConfig for that precision).

The longest tests of the run (a 64x16 UCU to Verilate, then millions of cycles per
task at a few thousand cycles per second), so each task is a module of its own: a
parallel run (pytest-xdist, one module per worker, heavy modules first) simulates the
two tasks at once on two cores; the Verilated model is built once (cached, locked).
Task 1 lives in ``test_e2e_m3vit_depth.py``. The checks are those of ``test_e2e``.
"""

from __future__ import annotations

import pytest
from test_e2e import BOARD, check_run, run_harness

import codesign

pytestmark = pytest.mark.e2e


def check_m3vit_task(task: int) -> None:
    """One task of the full m3vit: bit-exact with golden, close to torch, cycles recorded."""
    build = codesign.build("m3vit", BOARD, task=task)
    (run,) = run_harness(build, [task])["runs"]
    figures = check_run(build, run, "m3vit")
    assert figures["cosine"] > 0.999
    # cycles are not wall time: the RTL's count must stay where the estimator puts it
    assert abs(figures["cycles"] / figures["estimate"] - 1) < 0.05, figures
    print(
        f"m3vit task {task}: {run['cycles']} cycles = {run['cycles'] / 300e3:.3f} ms at "
        f"300 MHz, wall {run['wall']:.0f} s"
    )


@pytest.mark.slow
def test_m3vit_full_task0():
    """The full m3vit, task 0 (semantic segmentation), on its board default (w16a16, 64x16 UCU)."""
    check_m3vit_task(0)
