"""Resources of the open RTL per unit, calibrated against Yosys.

Each unit of ``codesign_top`` costs, per resource, a sum of coefficients times structural
counts of that unit (:func:`features`): MACs and their product bits, output lanes,
attention lanes, bus width, buffer bits. The coefficients are fitted (non-negative least
squares) to hierarchical Yosys ``synth_xilinx`` runs of the whole top over a set of
ArchConfigs (``python benchmarks/calibrate_synth.py``) and kept, with the runs they came
from, in ``rtl_calibration.json`` beside this module, so a fit can be checked and redone.
A figure from this model is the estimator's (calibrated); a figure from
``codesign.rtl.synth`` is Yosys's; neither is Vivado's.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

CALIBRATION = Path(__file__).with_name("rtl_calibration.json")
RESOURCES = ("dsp", "bram36", "lut", "ff")
# runs per device family before the fit check trusts the model: with fewer, each unit's
# few coefficients are pinned by the runs themselves and say nothing about other configs
MIN_RUNS = 8
# what the model must meet on runs it was not fitted on (leave-one-out, relative error of
# the whole top) before the fit check relies on it: DSPs exact, BRAM36 10 %, LUT/FF 20 %
BANDS = {"dsp": 0.0, "bram36": 0.10, "lut": 0.20, "ff": 0.20}
GLUE = "codesign_top (glue)"


def features(arch, precision=None) -> dict[str, dict[str, float]]:
    """Structural counts per RTL unit of the ``codesign_top`` rendered for `arch`."""
    from ..ops import kernel_check_params, microcode
    from ..rtl.render import rtl_params
    from .resources import mult_dsps

    p = rtl_params(arch, precision)
    x, w, acc = p["x_bits"], p["w_bits"], p["acc_bits"]
    dim_w = arch.max_dim.bit_length()  # D = dim as LayerNorm multiplies it
    norm_lane_dsps = (mult_dsps(dim_w + 1, x) + mult_dsps(x + dim_w + 2, 19)
                      + mult_dsps(x, max(w, 18)))  # fmt: skip
    ti, to, bus = arch.tile_in, arch.tile_out, arch.bus_bits
    words = max(1, bus // 32)
    macs = ti * to
    slots, head = arch.attn_parallel, arch.attention_lanes
    tokens = arch.max_tokens
    engine = microcode.image(kernel_check_params(arch, w_bytes=(p["w_container"] // 8,)))
    return {
        "cds_ucu_job": {
            "one": 1,
            "macs": macs,
            "multipliers": macs // p["mac_pack"],  # two 8-bit MACs share one (cds_ucu)
            "post_dsps": p["drain_lanes"] * p["post_op_dsps"],  # GELU, score x y
            "mac_bits": macs * (x + w),
            "drain_lanes": p["drain_lanes"],
            "drain_lane_bits": p["drain_lanes"] * x,  # requantise/GELU/score lanes, x wide
            "acc_bits": 2 * to * acc,
            "bus": bus,
            "row_bits": tokens * p["max_in_tiles"] * ti * x,
        },
        "cds_eng_attention": {
            "one": 1,
            "lanes": slots * head,
            # q*k and p*v share a multiplier: max(x, 18-bit probability) x x bits
            "lane_dsps": slots * head * mult_dsps(max(x, 18), x),
            "lane_bits": slots * head * x,
            "slots": slots,
            "out_lanes": p["attn_out_lanes"],
            "out_lane_bits": p["attn_out_lanes"] * x,
            "score_bits": slots * -(-tokens // slots) * tokens * (x + 1),
            "qkv_bits": 3 * tokens * arch.max_dim * x,
        },
        "cds_eng_layernorm": {
            "one": 1,
            "sum_lanes": ti,
            "norm_lanes": p["norm_lanes"],
            # the lanes' adders, shifters and requantisers are as wide as the activations
            "sum_lane_bits": ti * x,
            "norm_lane_bits": p["norm_lanes"] * x,
            # (x >> t)^2 per sum lane; D*x, (D*x - S1)*mant and n*gamma per normalise lane
            "lane_dsps": ti * mult_dsps(x, x) + p["norm_lanes"] * norm_lane_dsps,
            "row_bits": 2 * arch.max_dim * x,
        },
        "cds_eng_eltwise": {"one": 1, "lanes": words, "acc_bits": arch.max_dim * 64},
        "cds_eng_moe": {
            "one": 1,
            "tile_out": to,
            "out_lanes": p["moe_out_lanes"],
            "acc_bits": tokens * arch.max_dim * 48,
            "queue_bits": arch.max_experts * tokens * 32,
        },
        "cds_controller": {
            "one": 1,
            "bus": bus,
            "rom_bits": len(engine.words) * microcode.WORD_BITS,
        },
        "cds_axi_rd": {"one": 2, "bus": 2 * bus},
        "cds_axi_wr": {"one": 1, "bus": bus},
        "cds_axil_ctrl": {"one": 1},
        GLUE: {"one": 1, "bus": bus},
    }


# Which counts each resource of a unit is fitted on: few per resource, so that a handful
# of synthesis runs pins them down, chosen by what the RTL instantiates per count (a DSP
# per MAC lane, requantisers per output lane, adder trees per product bit, ...).
FEATURE_SETS = {
    "cds_ucu_job": {
        "dsp": ("one", "multipliers", "post_dsps"),
        "lut": ("one", "mac_bits", "drain_lanes"),
        "ff": ("one", "mac_bits", "drain_lane_bits"),
        "bram36": ("one", "row_bits", "acc_bits"),
    },
    "cds_eng_attention": {
        "dsp": ("one", "lane_dsps", "slots"),
        "lut": ("one", "lane_bits", "out_lane_bits"),
        "ff": ("one", "lane_bits", "out_lane_bits"),
        "bram36": ("one", "score_bits", "qkv_bits"),
    },
    "cds_eng_layernorm": {
        "dsp": ("one", "lane_dsps"),
        "lut": ("one", "sum_lane_bits", "norm_lane_bits"),
        "ff": ("one", "sum_lane_bits", "norm_lane_bits"),
        "bram36": ("one", "row_bits"),
    },
    "cds_eng_moe": {
        "dsp": ("one",),
        "lut": ("one", "tile_out", "out_lanes"),
        "ff": ("one", "tile_out", "out_lanes"),
        "bram36": ("one", "acc_bits", "queue_bits"),
    },
    "cds_eng_eltwise": {
        "dsp": ("lanes",),  # POOL's 48x18 scale multiply per lane
        "lut": ("one", "lanes", "acc_bits"),  # requantisers; POOL's column sums in LUTRAM
        "ff": ("one", "lanes"),
        "bram36": ("one",),
    },
    "cds_controller": {"bram36": ("one", "rom_bits")},
}
DEFAULT_FEATURES = ("one", "bus", "lanes")


def feature_names(unit: str, resource: str, available) -> list[str]:
    chosen = FEATURE_SETS.get(unit, {}).get(resource, DEFAULT_FEATURES)
    return [name for name in chosen if name in available]


# ---------------------------------------------------------------- calibration


def unit_records(records: list[dict]) -> dict[str, list[tuple[dict, dict]]]:
    """Per unit: (features, Yosys counts) of every calibration run."""
    from ..arch import ArchConfig

    per_unit: dict[str, list] = {}
    for record in records:
        arch = ArchConfig.from_dict(record["arch"])
        feats = features(arch, record["precision"])
        for unit, counts in record["units"].items():
            if unit in feats:
                per_unit.setdefault(unit, []).append((feats[unit], counts))
    return per_unit


def fit(records: list[dict]) -> dict:
    """Non-negative least squares per unit and resource over `records` (each a Yosys run:
    arch, precision, units with their counts). DSP coefficients are rounded to integers
    (a DSP count is structural: exact or wrong)."""
    from scipy.optimize import nnls

    coefficients: dict[str, dict[str, dict[str, float]]] = {}
    for unit, rows in unit_records(records).items():
        coefficients[unit] = {}
        for resource in RESOURCES:
            names = feature_names(unit, resource, rows[0][0])
            matrix = np.array([[f[name] for name in names] for f, _ in rows], dtype=float)
            target = np.array([counts[resource] for _, counts in rows], dtype=float)
            scale = np.maximum(matrix.max(axis=0), 1.0)
            solution, _ = nnls(matrix / scale, target)
            values = solution / scale
            if resource == "dsp":
                values = _integer_dsp(matrix, target, values)
            coefficients[unit][resource] = {
                name: float(value) for name, value in zip(names, values, strict=True) if value
            }
    return coefficients


def _integer_dsp(matrix: np.ndarray, target: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Rounded DSP coefficients when they reproduce every run exactly, else the fit."""
    rounded = np.round(values * 4) / 4  # DSPs per lane come in quarters at most
    return rounded if np.array_equal(matrix @ rounded, target) else values


@lru_cache(maxsize=1)
def calibration() -> dict:
    """The committed calibration: {"families": {family: {"coefficients", "records"}}}."""
    if not CALIBRATION.exists():
        return {"families": {}}
    return json.loads(CALIBRATION.read_text())


def family_of(board) -> str:
    return "xc7" if getattr(board, "family", "zynquplus") == "zynq" else "xcup"


def held_out(records: list[dict]) -> list[dict]:
    """Leave-one-out: each run's totals next to the fit of the other runs (what the model
    says about an ArchConfig it has not seen); empty with fewer than three runs."""
    from ..arch import ArchConfig

    if len(records) < 3:
        return []
    rows = []
    for run in records:
        table = fit([r for r in records if r is not run])
        feats = features(ArchConfig.from_dict(run["arch"]), run["precision"])
        for resource in RESOURCES:
            estimate = sum(_apply(table.get(unit, {}).get(resource, {}), feats[unit], resource)
                           for unit in run["units"] if unit in feats)  # fmt: skip
            yosys = sum(counts[resource] for counts in run["units"].values())
            error = (estimate - yosys) / yosys if yosys else float(estimate != 0)
            rows.append({"run": run["name"], "resource": resource, "yosys": yosys,
                         "estimate": estimate, "error": round(error, 4)})  # fmt: skip
    return rows


def held_out_errors(records: list[dict]) -> dict[str, float]:
    """The worst relative held-out error per resource (``held_out``)."""
    worst: dict[str, float] = {}
    for row in held_out(records):
        worst[row["resource"]] = max(worst.get(row["resource"], 0.0), abs(row["error"]))
    return worst


def trusted(table: dict) -> tuple[bool, str]:
    """Whether a family's calibration may drive the fit check, and why (not)."""
    runs = len(table["records"])
    if runs < MIN_RUNS:
        return False, f"{runs} runs, fewer than the {MIN_RUNS} the model needs"
    worst = table.get("held_out") or held_out_errors(table["records"])
    outside = [f"{r} {100 * worst[r]:.0f} %" for r in BANDS if worst.get(r, 1.0) > BANDS[r]]
    if outside:
        return False, "held-out error beyond its band: " + ", ".join(outside)
    return True, f"{runs} runs, held-out error within the bands"


def estimate_rtl(arch, precision=None, family: str = "xcup", *, provisional: bool = False
                 ) -> dict | None:  # fmt: skip
    """Calibrated DSP / BRAM36 / LUT / FF per RTL unit and in total, or None when the
    calibration of `family` is not ``trusted`` (fewer than MIN_RUNS runs, or held-out
    errors beyond BANDS); ``provisional=True``: whatever it has, saying so."""
    table = calibration()["families"].get(family)
    if not table:
        return None
    ok, why = trusted(table)
    if not ok and not provisional:
        return None
    units = {}
    for unit, feats in features(arch, precision).items():
        coeffs = table["coefficients"].get(unit, {})
        units[unit] = {
            resource: _apply(coeffs.get(resource, {}), feats, resource) for resource in RESOURCES
        }
    totals = {r: sum(u[r] for u in units.values()) for r in RESOURCES}
    totals["bram36"] = round(totals["bram36"], 1)
    return {
        "family": family,
        "source": f"estimator calibrated to Yosys ({why}" + (")" if ok else "; provisional)"),
        "runs": len(table["records"]),
        **totals,
        "uram": 0,
        "units": units,
    }


def _apply(coeffs: dict, feats: dict, resource: str):
    value = sum(coeffs.get(name, 0.0) * feats[name] for name in feats)
    if resource == "bram36":
        return round(value * 2) / 2
    return round(value)


__all__ = [
    "BANDS",
    "CALIBRATION",
    "calibration",
    "estimate_rtl",
    "family_of",
    "features",
    "fit",
    "held_out",
    "held_out_errors",
    "trusted",
]
