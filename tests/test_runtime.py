"""The PYNQ host runtime: one driver on simulated boards behind the real pynq API.

Same driver code on the golden board and the C-sim board gives the golden executor's
bits; a run that never finishes names the register state; bad buffers and inputs are
refused before the device sees any write; deploy packs a self-contained bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pynq
import pytest
from click.testing import CliRunner
from golden_runs import golden_raw, random_images
from small_models import ARCH_TINY, SMALL_VIT

import codesign
from codesign.arch import register_map
from codesign.golden import GoldenExecutor
from codesign.models import config_from_dict, create_model
from codesign.program import _H_INPUT, _H_OUTPUTS, HEADER_FIELDS
from codesign.runtime import (
    Accelerator,
    BufferMismatchError,
    Bundle,
    KernelBusyError,
    KernelNotFoundError,
    KernelTimeoutError,
    ModelCard,
    ProgramMismatchError,
    SimulatedBoard,
    SimulatedKernelError,
    describe_ctrl,
    find_kernel_ip,
    golden_board,
    minimal_host,
)


@pytest.fixture(scope="module")
def vit_build():
    model = create_model(config_from_dict(SMALL_VIT), seed=3)
    return codesign.build(model, board="zcu102")


def check_board_matches_golden(board, build, count=3):
    """The one driver path: Accelerator.from_device on any board, every task."""
    card = ModelCard.from_build(build)
    images = random_images(build, count)
    with Accelerator.from_device(board, build.program_bytes, card) as accel:
        raw = accel.quantize_input(images)
        np.testing.assert_array_equal(raw, build.quantize_input(images))
        for task in range(build.program.n_tasks):
            got = accel.run_raw(raw, task)
            np.testing.assert_array_equal(got, golden_raw(build, raw, task))
            floats = accel.run(images, task)
            np.testing.assert_array_equal(floats, build.predict(images, task))
            assert len(accel.timings) == count
            # one timing record per image; a simulated board that counts cycles gives the
            # latency at its clock from them (never from the simulator's wall clock)
            for timing in accel.timings:
                if timing.cycles is not None:
                    assert timing.cycles > 0 and timing.clock_mhz > 0
                    assert timing.latency_ms == timing.cycles / (timing.clock_mhz * 1e3)
    return board


@pytest.mark.parametrize("which", ["m3vit-tiny", "vit"])
def test_golden_board_returns_golden_bits(which, tiny_build, vit_build):
    build = tiny_build if which == "m3vit-tiny" else vit_build
    board = check_board_matches_golden(golden_board(), build)
    assert len(board.stats.runs) == 2 * 3 * build.program.n_tasks
    assert board.memory.allocated_bytes == 0  # close() gave every buffer back


def _kernel_refuses(build) -> tuple[bytes, int]:
    """``build``'s Program with one attention head as wide as all of them: the loader
    takes it (the format allows it), the kernel of ARCH_TINY refuses it (ERR_SIZE: a
    head wider than its attention core)."""
    from codesign.program import Op, Program

    program = Program.from_bytes(build.program_bytes)
    index = next(i for i, layer in enumerate(program.layers) if layer.op == Op.ATTENTION)
    program.layers[index].fields["heads"] = 1
    return program.to_bytes(), index


@pytest.mark.csim
@pytest.mark.parametrize("which", ["golden", "csim"])
def test_every_board_raises_program_refused_naming_code_layer_and_op(which, tiny_build):
    """The kernel refuses, runs nothing, sets STATUS; the driver raises ProgramRefused
    (the RTL board: tests/test_rtl_device.py)."""
    from codesign.contract import ProgramRefused
    from codesign.runtime import csim_board

    build = codesign.build("m3vit-tiny", board="zcu102", arch=ARCH_TINY, eval_images=1)
    board = golden_board(arch=ARCH_TINY) if which == "golden" else csim_board(ARCH_TINY)
    blob, layer = _kernel_refuses(build)
    raw = build.quantize_input(random_images(build, 1))
    with Accelerator.from_device(board, blob) as accel:
        with pytest.raises(ProgramRefused) as refused:
            accel.run_raw(raw, 0)
        got = (refused.value.name, refused.value.layer, refused.value.op)
        assert got == ("SIZE", layer, "ATTENTION")
        assert f"ERR_SIZE at layer {layer} (ATTENTION " in str(refused.value)
        assert accel.control.read(0x80) == refused.value.status == (layer << 8) | 9
    with Accelerator.from_device(board, build.program_bytes) as accel:  # the board is fine
        np.testing.assert_array_equal(accel.run_raw(raw, 0), golden_raw(build, raw, 0))
        assert accel.control.read(0x80) == 0


@pytest.mark.csim
@pytest.mark.parametrize("which", ["m3vit-tiny", "vit"])
def test_csim_board_same_driver_returns_golden_bits(which, tiny_build, vit_build):
    from codesign.runtime import csim_board

    build = tiny_build if which == "m3vit-tiny" else vit_build
    board = csim_board(build.state.arch, quiet=True)
    check_board_matches_golden(board, build, count=2)
    assert board.kernel.name == "csim"


def test_one_arena_or_own_buffers_give_the_same_bits(tiny_build):
    """Sequential runs (one arena) and caller-allocated buffers take the same path."""
    from codesign.runtime import ProgramLayout

    raw = tiny_build.quantize_input(random_images(tiny_build, 3, seed=9))
    want = golden_raw(tiny_build, raw, 1)
    board = golden_board()
    with Accelerator.from_device(board, tiny_build.program_bytes, n_arenas=1) as accel:
        np.testing.assert_array_equal(accel.run_raw(raw, 1), want)
    layout = ProgramLayout(tiny_build.program_bytes)
    program = pynq.allocate(layout.program_spec.shape, np.uint8, target=board)
    arenas = [pynq.allocate(layout.arena_spec.shape, np.int32, target=board) for _ in range(3)]
    accel = Accelerator.from_device(board, layout, program_buffer=program, arenas=arenas)
    np.testing.assert_array_equal(accel.run_raw(raw, 1), want)
    assert accel.arenas == arenas


@pytest.mark.slow
@pytest.mark.csim
def test_full_m3vit_on_golden_and_csim_boards():
    """The Edge-MoE M3ViT (129 tokens, 16 experts): one image per task, both boards."""
    from codesign.runtime import csim_board

    build = codesign.build("m3vit", board="zcu102", calib=2)
    raw = build.quantize_input(random_images(build, 1, seed=4))
    for board in (golden_board(), csim_board(build.state.arch, quiet=True)):
        with Accelerator.from_device(board, build.program_bytes) as accel:
            for task in (0, 1):
                np.testing.assert_array_equal(
                    accel.run_raw(raw, task), golden_raw(build, raw, task)
                )


def test_golden_board_reports_the_cycle_model_of_each_run(tiny_build):
    """With a board name the golden board costs each run with codesign.estimate, using
    that run's own MoE queue lengths; without one it claims no cycles."""
    from codesign.estimate import estimate_cycles, expert_counts_from_run
    from codesign.hls.csim import arch_from_program

    raw = tiny_build.quantize_input(random_images(tiny_build, 1, seed=2))[0]
    board = golden_board("zcu102")
    accel = Accelerator.from_device(board, tiny_build.program_bytes)
    for task in (0, 1):
        accel.run_raw(raw, task)
        run = board.last_run()
        counts = expert_counts_from_run(tiny_build.program, raw, task)
        arch = arch_from_program(tiny_build.program)
        want = estimate_cycles(tiny_build.program, arch, "zcu102", counts, task)
        assert run.cycles == want["cycles"] and run.clock_mhz == 300.0
        assert run.latency_ms == pytest.approx(want["latency_ms"])
        assert "cycle model" in run.source
    plain = golden_board()
    Accelerator.from_device(plain, tiny_build.program_bytes).run_raw(raw, 0)
    assert plain.last_run().cycles is None and plain.last_run().latency_ms is None


def test_timeout_names_register_state(tiny_build):
    board = golden_board(stall=True)
    accel = Accelerator.from_device(board, tiny_build.program_bytes)
    raw = tiny_build.quantize_input(random_images(tiny_build, 1))
    expected = (
        r"ap_done never set after 0\.2 s; CTRL=0x00000001 "
        r"\(ap_start=1 ap_done=0 ap_idle=0 ap_ready=0\); program=0x[0-9a-f]{9,}, "
        r"arena=0x[0-9a-f]{9,}, task=1"
    )
    with pytest.raises(KernelTimeoutError, match=expected):
        accel.run_raw(raw, 1, timeout=0.2)
    with pytest.raises(KernelBusyError, match=r"not idle: CTRL=0x00000001"):
        accel.run_raw(raw, 0)  # the hung run still holds the kernel
    board.release()
    np.testing.assert_array_equal(accel.run_raw(raw, 0), golden_raw(tiny_build, raw, 0))


def test_describe_ctrl():
    assert describe_ctrl(0x0E) == "CTRL=0x0000000e (ap_start=0 ap_done=1 ap_idle=1 ap_ready=1)"
    assert describe_ctrl(0x81).endswith("auto_restart=1)")


def _bad_buffers(board, layout):
    spec_p, spec_a = layout.program_spec, layout.arena_spec
    wide = board.allocate((spec_p.shape[0] + 4,), np.uint8)
    return {
        "program dtype": ("program_buffer", board.allocate((spec_p.nbytes // 4,), np.int32)),
        "program size": ("program_buffer", board.allocate((spec_p.shape[0] - 16,), np.uint8)),
        "program host memory": ("program_buffer", np.zeros(spec_p.shape, np.uint8)),
        "program misaligned": ("program_buffer", wide[4 : 4 + spec_p.shape[0]]),
        "arena dtype": ("arenas", [board.allocate(spec_a.shape, np.float32)]),
        "arena size": ("arenas", [board.allocate((spec_a.shape[0] * 2,), np.int32)]),
        "arena 2-d": ("arenas", [board.allocate((1, spec_a.shape[0]), np.int32)]),
    }


@pytest.mark.parametrize(
    "case",
    [
        "program dtype",
        "program size",
        "program host memory",
        "program misaligned",
        "arena dtype",
        "arena size",
        "arena 2-d",
    ],
)
def test_wrong_buffer_refused_before_any_device_write(case, tiny_build):
    from codesign.runtime import ProgramLayout

    board = golden_board(record=True)
    layout = ProgramLayout(tiny_build.program_bytes)
    keyword, buffer = _bad_buffers(board, layout)[case]
    messages = {
        "dtype": "dtype",
        "size": "shape",
        "2-d": "shape",
        "host memory": "device address",
        "misaligned": "not aligned",
    }
    with pytest.raises(BufferMismatchError, match=messages[case.split(" ", 1)[1]]):
        Accelerator.from_device(board, layout, **{keyword: buffer})
    assert board.writes == []
    assert board.stats.register_writes == 0 and board.stats.bytes_flushed == 0


@pytest.mark.parametrize(
    "case, match",
    [
        ("float input", "dtype float64"),
        ("wrong shape", r"shape \(8, 700\)"),
        ("out of range", "outside the input format"),
        ("bad task", "task 2 out of range"),
        ("empty batch", "shape"),
    ],
)
def test_bad_input_refused_before_any_device_write(case, match, tiny_build):
    board = golden_board(record=True)
    accel = Accelerator.from_device(board, tiny_build.program_bytes)
    raw = tiny_build.quantize_input(random_images(tiny_build, 2))
    inputs = {
        "float input": (raw.astype(np.float64), 0),
        "wrong shape": (raw[0][:, :700], 0),
        "out of range": (raw + (1 << 30), 0),
        "bad task": (raw, 2),
        "empty batch": (raw[:0], 0),
    }
    board.writes.clear()
    board.stats.register_writes = 0
    with pytest.raises(BufferMismatchError, match=match):
        accel.run_raw(*inputs[case])
    assert board.writes == [] and board.stats.register_writes == 0


def test_host_and_ddr_copies_are_separate():
    """A forgotten flush or invalidate gives stale data in simulation, as on a board."""
    board = golden_board()
    buffer = pynq.allocate((64,), np.int32, target=board)
    buffer[:] = np.arange(64)
    ddr = board.memory.view(buffer.device_address, buffer.nbytes).view(np.int32)
    assert not ddr.any()
    buffer[8:16].sync_to_device()  # a view flushes only its own bytes
    np.testing.assert_array_equal(ddr[8:16], np.arange(8, 16))
    assert not ddr[:8].any()
    ddr[:] = -1
    assert buffer[0] == 0
    buffer.sync_from_device()
    assert (buffer == -1).all()
    assert buffer.device_address >> 32  # above 4 GiB: the high address word matters


def test_ctrl_protocol_and_dropped_high_word(tiny_build):
    """ap_ctrl_hs as a driver sees it through pynq.MMIO; a driver that writes only the
    low address words makes the simulated kernel fail with a bus error."""
    board = golden_board(stall=True)
    _, desc = find_kernel_ip(board.ip_dict)
    mmio = pynq.MMIO(desc["phys_addr"], desc["addr_range"], device=board)
    assert mmio.read(0x00) == 0x4  # idle
    mmio.write(0x08, 1)
    mmio.write(0x04, 1)
    mmio.write(0x00, 1)
    assert mmio.read(0x00) == 0x1 and board.busy
    board.release()
    assert mmio.read(0x00) == 0xE  # done, idle, ready
    assert mmio.read(0x00) == 0x4  # done and ready clear on read
    assert mmio.read(0x0C) == 0x1  # ISR done (IER bit 0 was set)
    mmio.write(0x0C, 1)
    assert mmio.read(0x0C) == 0x0  # toggle on write

    program = board.allocate((len(tiny_build.program_bytes),), np.uint8)
    program[:] = np.frombuffer(tiny_build.program_bytes, np.uint8)
    program.sync_to_device()
    regs = register_map()
    mmio.write(regs.offset("program"), program.device_address & 0xFFFFFFFF)  # no high word
    mmio.write(0x00, 1)
    with pytest.raises(SimulatedKernelError, match="no buffer covers DDR"):
        for _ in range(2000):
            mmio.read(0x00)
            board._worker.join(0.01)


def test_corrupted_program_in_ddr_fails_the_simulated_kernel(tiny_build):
    board = golden_board()
    accel = Accelerator.from_device(board, tiny_build.program_bytes)
    accel.program_buffer[600] ^= 0xFF
    accel.program_buffer.sync_to_device()
    raw = tiny_build.quantize_input(random_images(tiny_build, 1))
    with pytest.raises(SimulatedKernelError, match="CRC mismatch"):
        accel.run_raw(raw, 0)
    accel.program_buffer[600] ^= 0xFF
    accel.program_buffer.sync_to_device()
    np.testing.assert_array_equal(accel.run_raw(raw, 0), golden_raw(tiny_build, raw, 0))


def test_find_kernel_ip_and_missing_bitstream(tmp_path, tiny_build):
    with pytest.raises(KernelNotFoundError, match="expected one codesign_top kernel in the design"):
        find_kernel_ip({"dma": {"type": "xilinx.com:ip:axi_dma:7.1"}})
    two = {name: {"type": "xilinx.com:hls:codesign_top:1.0"} for name in ("a", "b")}
    with pytest.raises(KernelNotFoundError, match="found 2"):
        find_kernel_ip(two)
    assert find_kernel_ip(two, "b")[0] == "b"
    with pytest.raises(FileNotFoundError, match="make bitstream"):
        Accelerator.from_overlay(tmp_path, tiny_build.program_bytes)


def test_manifest_of_another_arch_is_refused(tmp_path, tiny_build):
    (tmp_path / "design.bit").write_bytes(b"test data, not a bitstream")
    arch = {"bus_bits": 64, "tile_in": 32, "tile_out": 32, "attn_parallel": 8}
    (tmp_path / "manifest.json").write_text(json.dumps({"arch": arch}))
    with pytest.raises(ProgramMismatchError, match="bus_bits 128 vs bitstream 64"):
        Accelerator.from_overlay(tmp_path, tiny_build.program_bytes)


def _recrc_with(blob: bytes, at: int, value: int) -> bytes:
    """``blob`` with the word at byte ``at`` set to ``value`` and its CRC made right."""
    from codesign.fuzz import recrc

    data = bytearray(blob)
    data[at : at + 4] = value.to_bytes(4, "little", signed=value < 0)
    return recrc(bytes(data))


def test_minimal_host_example_is_true(tiny_build):
    """docs/interface.md's example: its constants are the interface, its result golden."""
    regs = register_map()
    assert (
        regs.offset("CTRL"),
        regs.offset("program"),
        regs.offset("arena"),
        regs.offset("task"),
    ) == (minimal_host.CTRL, minimal_host.PROGRAM, minimal_host.ARENA, minimal_host.TASK)
    words = {name: 2 + index for index, name in enumerate(HEADER_FIELDS)}
    assert words["total_bytes"] == minimal_host.H_TOTAL_BYTES
    assert words["arena_bytes"] == minimal_host.H_ARENA_BYTES
    assert words["bus_bits"] == minimal_host.H_BUS_BITS
    assert words["n_tasks"] == minimal_host.H_N_TASKS
    assert (minimal_host.H_INPUT, minimal_host.H_OUTPUTS) == (_H_INPUT, _H_OUTPUTS)
    assert words["crc32"] == minimal_host.H_CRC32
    assert regs.offset("STATUS") == minimal_host.STATUS
    from codesign.program import _H_GEOMETRY

    assert minimal_host.H_GEOMETRY == _H_GEOMETRY

    images = random_images(tiny_build, 2, seed=5)
    patch = tiny_build.graph.meta["patch_size"]
    header = np.frombuffer(tiny_build.program_bytes[:512], "<u4")
    assert int(header[_H_GEOMETRY + 1]) == patch
    fmt_word = int(np.frombuffer(tiny_build.program_bytes[:512], "<u4")[_H_INPUT + 4])
    raw = minimal_host.quantize(minimal_host.patchify(images, patch), fmt_word)
    np.testing.assert_array_equal(raw, tiny_build.quantize_input(images))

    board = golden_board()
    _, desc = find_kernel_ip(board.ip_dict)
    control = pynq.MMIO(desc["phys_addr"], desc["addr_range"], device=board)

    def allocate(shape, dtype):
        return pynq.allocate(shape, dtype, target=board)

    for task in (0, 1):
        got = minimal_host.run(control, allocate, tiny_build.program_bytes, raw[0], task)
        want = GoldenExecutor(tiny_build.program).run(raw[0], task).to_float()
        np.testing.assert_array_equal(got, want)
    # NaN pixels, a corrupted file, a refused Program: errors, never garbage
    with pytest.raises(ValueError, match="NaN"):
        minimal_host.quantize(np.full((1, 2), np.nan), fmt_word)
    corrupt = bytearray(tiny_build.program_bytes)
    corrupt[-1] ^= 1
    with pytest.raises(ValueError, match="CRC"):
        minimal_host.run(control, allocate, bytes(corrupt), raw[0], 0)
    refused = _recrc_with(tiny_build.program_bytes, 512 + 4 * 4, 0)  # layer 0: rows = 0
    with pytest.raises(RuntimeError, match="refused the program: code 9 at layer 0"):
        minimal_host.run(control, allocate, refused, raw[0], 0)


def test_interface_doc_is_up_to_date():
    from codesign.runtime import interface_doc

    assert interface_doc.DOC.read_text() == interface_doc.render(), (
        "docs/interface.md is stale: python -m codesign.runtime.interface_doc"
    )


def test_tokens_to_map_and_patchify_match_torch_side(tiny_build):
    import torch

    from codesign.models import tokens_to_map

    card = ModelCard.from_build(tiny_build)
    outputs = np.random.default_rng(1).standard_normal((2, 8, 19))
    want = tokens_to_map(torch.tensor(outputs), card.grid).numpy()
    np.testing.assert_array_equal(card.tokens_to_map(outputs), want)
    images = random_images(tiny_build, 2)
    np.testing.assert_array_equal(card.patchify(images), tiny_build.graph.patchify(images))
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card


# ---------------------------------------------------------------- deploy


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from codesign.deploy import deploy

    root = tmp_path_factory.mktemp("deploy")
    return deploy("m3vit-tiny", "zcu102", root / "m3vit-tiny-zcu102", bitstreams=root / "none")


def test_deploy_without_bitstream_is_marked_incomplete(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert any(item.endswith("m3vit-tiny-zcu102/*.bit") for item in manifest["missing"])
    assert not (tiny_bundle / "bitstream").exists()
    for name in ("program.bin", "host.json", "regmap.json", "reference.npz", "README.md"):
        assert name in manifest["files"]
    assert "notebooks/m3vit_on_board.ipynb" in manifest["files"]
    assert "host/codesign_host/runtime/driver.py" in manifest["files"]
    assert "Incomplete: no bitstream" in (tiny_bundle / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="make bitstream"):
        Bundle(tiny_bundle).open("board")
    leftovers = [p.name for p in tiny_bundle.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_bundle_on_golden_board_matches_its_reference(tiny_bundle):
    bundle = Bundle(tiny_bundle)
    accel = bundle.open("golden")
    reference = bundle.reference()
    for task in (0, 1):
        raw = accel.run_raw(reference["input_raw"], task)
        np.testing.assert_array_equal(raw, reference[f"golden_raw_task{task}"])
        torch_out = reference[f"torch_task{task}"]
        got = accel.run(reference["images"], task)
        cosine = (got * torch_out).sum() / np.linalg.norm(got) / np.linalg.norm(torch_out)
        assert cosine > 0.999
    assert bundle.torch_model() is not None


def test_deployed_driver_runs_without_torch_or_the_compiler(tiny_bundle, tmp_path):
    """The bundle's host/ copy alone (numpy + pynq) drives a board: torch, jinja2 and
    codesign itself are blocked in a fresh interpreter."""
    script = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "jinja2", "yaml", "hls4ml", "timm", "codesign"):
                    raise ImportError("blocked on the board: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        import codesign_host, codesign_host.runtime as rt
        assert codesign_host.__file__.startswith({str(tiny_bundle)!r}), codesign_host.__file__
        bundle = rt.open_bundle({str(tiny_bundle)!r}, device="golden")
        ref = bundle.reference()
        for task in (0, 1):
            raw = bundle.accelerator.run_raw(ref["input_raw"], task)
            assert np.array_equal(raw, ref[f"golden_raw_task{{task}}"])
        assert bundle.torch_model() is None
        print("ok", codesign_host.__file__)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(tiny_bundle / "host")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_deploy_packs_bitstream_and_checks_its_arch(tmp_path, tiny_build):
    """A bitstream folder as `make bitstream` leaves it (test files, not a real .bit)."""
    from codesign.deploy import DeployError, deploy

    folder = tmp_path / "bitstreams" / "m3vit-tiny-zcu102"
    folder.mkdir(parents=True)
    (folder / "codesign.bit").write_bytes(b"test data, not a bitstream")
    manifest = {"arch": tiny_build.state.arch.to_dict()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    out = deploy("m3vit-tiny", "zcu102", tmp_path / "a", bitstreams=tmp_path / "bitstreams")
    packed = json.loads((out / "manifest.json").read_text())
    assert packed["complete"] is False and packed["missing"][0].endswith("codesign.hwh")
    (folder / "codesign.hwh").write_text("<test/>")
    out = deploy("m3vit-tiny", "zcu102", tmp_path / "a", bitstreams=tmp_path / "bitstreams")
    packed = json.loads((out / "manifest.json").read_text())
    assert packed["complete"] is True and packed["missing"] == []
    assert {"bitstream/codesign.bit", "bitstream/codesign.hwh"} <= set(packed["files"])
    manifest["arch"]["tile_in"] = 16
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DeployError, match=r"cannot run this Program: .*tile_in 32 vs bitstream 16"):
        deploy("m3vit-tiny", "zcu102", tmp_path / "b", bitstreams=tmp_path / "bitstreams")
    assert not (tmp_path / "b").exists()


def test_deploy_is_atomic_and_cli_reports(tmp_path, monkeypatch):
    import codesign.deploy as deploy_module

    def broken(dest):
        raise OSError("disk full while copying the driver")

    monkeypatch.setattr(deploy_module, "_copy_driver", broken)
    runner = CliRunner()
    out = tmp_path / "bundle"
    result = runner.invoke(
        deploy_module.deploy_command, ["--model", "m3vit-tiny", "--out", str(out)]
    )
    assert result.exit_code == 2 and "disk full" in result.output
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    result = runner.invoke(
        deploy_module.deploy_command,
        ["--model", "m3vit-tiny", "--out", str(out), "--bitstreams", str(tmp_path / "none")],
    )
    assert result.exit_code == 0, result.output
    assert "incomplete: no bitstream" in result.output and "make bitstream" in result.output
    assert (out / "manifest.json").is_file()


def test_simulated_board_is_a_pynq_device():
    board = golden_board()
    assert isinstance(board, pynq.Device) and isinstance(board, SimulatedBoard)
    assert board.has_capability("REGISTER_RW") and not board.has_capability("MEMORY_MAPPED")
    buffer = pynq.allocate((4, 4), "u4", target=board)
    assert isinstance(buffer, pynq.buffer.PynqBuffer) and buffer.physical_address >= 1 << 32
    buffer.freebuffer()
    buffer.freebuffer()  # twice is harmless, as on a board
    assert board.memory.allocated_bytes == 0
