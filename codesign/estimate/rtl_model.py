"""Resources of the open RTL per unit, calibrated against Yosys.

Each unit of ``codesign_top`` costs, per resource, a sum of coefficients times structural
counts of that unit (:func:`features`): MACs and their product bits, output lanes,
attention lanes, bus width, register-file bits. Block RAM is not fitted but counted from
the RTL's memories (:mod:`codesign.estimate.memories`). The coefficients are fitted
(non-negative least squares) to hierarchical Yosys ``synth_xilinx`` runs of the whole top
over a set of ArchConfigs (``python benchmarks/calibrate_synth.py``) and kept, with the
runs they came from, in ``rtl_calibration.json`` beside this module, so a fit can be
checked and redone.
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
# ... and at least one full run of a design the size the boards' models need (m3vit: 144
# tokens), within those bands like the rest: the small tops alone would be extrapolated
LARGE_TOKENS = 128
GLUE = "codesign_top (glue)"


def features(arch, precision=None, family: str = "xcup", uram: bool = False
             ) -> dict[str, dict[str, float]]:  # fmt: skip
    """Structural counts per RTL unit of the ``codesign_top`` rendered for `arch` (the
    block RAM count, ``brams``, depends on the device `family`'s LUTRAM and on whether the
    part has UltraRAM, `uram`, that takes the largest memories: ``urams``)."""
    from ..rtl.render import rtl_params, softmax_sum_bits
    from .memories import unit_memories
    from .resources import mult_dsps

    p = rtl_params(arch, precision)
    x, w = p["x_bits"], p["w_bits"]
    dsp_family = "zynq" if family == "xc7" else "zynquplus"  # DSP48E1 25x18, DSP48E2 27x18

    def dsps(a_bits: int, b_bits: int) -> int:
        return mult_dsps(a_bits, b_bits, dsp_family)

    # the exp cores' multiply: a table difference times the unsigned argument, one more
    # bit signed (attention's, a score minus the row maximum, x + 2 bits; the router's,
    # a logit minus the maximum, x + 1): two DSP48E1s at 24-bit activations, one DSP48E2
    exp_diff, exp_frac, exp_width = _exp_rom(tuple(sorted(arch.table_params().items())))
    # a slot's running softmax sum times the next exp value (signed, one bit more)
    sum_times_exp = dsps(softmax_sum_bits(arch, exp_frac), exp_width + 1)
    dim_w = arch.max_dim.bit_length()  # D = dim as LayerNorm multiplies it
    # D*x, (D*x - S1) * rsqrt mantissa (unsigned, one bit more) and n * gamma per lane
    norm_lane_dsps = (dsps(dim_w + 1, x) + dsps(x + dim_w + 2, arch.table_width + 1)
                      + dsps(x, max(w, 18)))  # fmt: skip
    # a row's variance, once per row: D * S2 (64-bit, as the golden int64) - S1 * S1
    stats_dsps = dsps(dim_w + 1, 64) + dsps(x + dim_w + 1, x + dim_w + 1)
    ti, to, bus = arch.tile_in, arch.tile_out, arch.bus_bits
    words = max(1, bus // 32)
    macs = ti * to
    slots, head = arch.attn_parallel, arch.attention_lanes
    banks = p["attn_banks"]
    token_bits = arch.max_tokens.bit_length()
    tile_bits = max(1, (-(-arch.max_dim // to) - 1).bit_length()) + 1
    units = {
        "cds_ucu_job": {
            "one": 1,
            "macs": macs,
            "multipliers": macs // p["mac_pack"],  # two 8-bit MACs share one (cds_ucu)
            "post_dsps": p["drain_lanes"] * p["post_op_dsps"],  # GELU, score x y
            "mac_bits": macs * (p["mul_x_bits"] + w),
            "drain_lanes": p["drain_lanes"],
            "drain_lane_bits": p["drain_lanes"] * x,  # requantise/GELU/score lanes, x wide
            "bus": bus,
            # the x port's rows into the UCU: a mux (and zero mask) per input lane bit
            "x_port_bits": ti * x if p["window_banks"] > 1 else 0,
        },
        "cds_eng_attention": {
            "one": 1,
            "lanes": slots * head,
            # the k/v row the slots share, pipelined over the stages: ~12 registers a bit
            "row_bits": head * x,
            # q*k and p*v share a multiplier: max(x, 18-bit probability) x x bits
            "lane_dsps": slots * head * dsps(max(x, 18), x),
            "exp_dsps": slots * (dsps(exp_diff, x + 3) + sum_times_exp),
            "lane_bits": slots * head * x,
            "slots": slots,
            "out_lanes": p["attn_out_lanes"],
            "out_lane_bits": p["attn_out_lanes"] * x,
            # 3 x dim, a qkv row's words: a DSP once the word index has 9 bits (dim >= ~170)
            "row_words_dsps": 1 if (3 * arch.max_dim + banks).bit_length() >= 9 else 0,
        },
        "cds_eng_layernorm": {
            "one": 1,
            "sum_lanes": ti,
            "norm_lanes": p["norm_lanes"],
            # the lanes' adders, shifters and requantisers are as wide as the activations
            "sum_lane_bits": ti * x,
            "norm_lane_bits": p["norm_lanes"] * x,
            # (x >> t)^2 per sum lane; D*x, (D*x - S1)*mant and n*gamma per normalise lane
            "lane_dsps": ti * dsps(x, x) + p["norm_lanes"] * norm_lane_dsps + stats_dsps,
        },
        "cds_eng_eltwise": {"one": 1, "lanes": words, "acc_bits": arch.max_dim * 64},
        "cds_eng_moe": {
            "one": 1,
            "tile_out": to,
            "out_lanes": p["moe_out_lanes"],
            # the final pass's beat count, tokens x dim tiles: Yosys maps a multiply to a DSP
            # when its product has 9 bits or more, else to LUTs
            "beat_dsps": dsps(token_bits, tile_bits) if token_bits + tile_bits >= 9 else 0,
            "exp_dsps": dsps(exp_diff, x + 2),
        },
        "cds_controller": {"one": 1, "bus": bus},
        # rd0 (program, weight plane 0) and rd1 (arena) realign; the further weight
        # masters (cds_axi_rdw) read whole beats only
        "cds_axi_rd": {"one": 2, "bus": 2 * bus},
        "cds_axi_rdw": {"one": arch.weight_ports - 1, "bus": (arch.weight_ports - 1) * bus},
        "cds_axi_wr": {"one": 1, "bus": bus},
        # the arena's on-chip window: address registers, order counters, the read FIFOs,
        # the R and x muxes, and the read mux of a RAM deeper than one primitive, which
        # Yosys builds from LUTs (its RAM is counted in memories.py)
        "cds_arena_window": window_features(arch, p, family, uram),
        # a 64-bit address register (and its read mux) per further weight master
        "cds_axil_ctrl": {"one": 1, "weight_regs": arch.weight_ports - 1},
        GLUE: {"one": 1, "bus": bus},
    }
    if not arch.has_moe:  # no MoE engine (max_experts 0): nothing of it to count
        units["cds_eng_moe"] = dict.fromkeys(units["cds_eng_moe"], 0)
    # block RAM and UltraRAM are counted, not fitted: each memory in whole primitives
    # (memories.py)
    memories = unit_memories(arch, precision, family, uram)
    for unit, feats in units.items():
        feats["brams"], feats["urams"] = memories.get(unit, (0.0, 0))
    return units


@lru_cache(maxsize=64)
def _exp_rom(table_params: tuple) -> tuple[int, int, int]:
    """The exp ROM's difference, fraction and entry widths (building the tables is most of
    a features() call; a search asks for the same tables again and again)."""
    from ..rtl.render import build_tables, rom_info

    rom = rom_info(build_tables(**dict(table_params))["exp"])
    return rom.diff_bits, rom.frac, rom.width


def window_features(arch, p: dict, family: str, uram: bool) -> dict[str, float]:
    """cds_arena_window's counts: none without a window; else one, its RAM row's bits
    and those bits once per further primitive its depth takes (block RAM 512 rows deep
    at 72 bits, UltraRAM 4,096: the read mux)."""
    from .memories import Memory, mapped

    if not p["window_beats"]:
        return {"one": 0, "row_bits": 0, "bram_mux_bits": 0, "uram_mux_bits": 0}
    row_bits = arch.bus_bits * p["window_banks"]
    rows = -(-p["window_beats"] // p["window_banks"])
    _, urams = mapped(Memory("cds_arena_window", "window", row_bits, rows), family, uram)
    deep = -(-rows // (4096 if urams else 512)) - 1
    return {
        "one": 1,
        "row_bits": row_bits,
        "bram_mux_bits": 0 if urams else row_bits * deep,
        "uram_mux_bits": row_bits * deep if urams else 0,
    }


# Which counts each resource of a unit is fitted on: few per resource, so that a handful
# of synthesis runs pins them down, chosen by what the RTL instantiates per count (a DSP
# per MAC lane, requantisers per output lane, adder trees per product bit, ...).
FEATURE_SETS = {
    "cds_ucu_job": {
        "dsp": ("one", "multipliers", "post_dsps"),
        "lut": ("one", "mac_bits", "drain_lanes", "x_port_bits"),
        "ff": ("one", "mac_bits", "drain_lane_bits"),
    },
    "cds_eng_attention": {
        "dsp": ("one", "lane_dsps", "slots", "exp_dsps", "row_words_dsps"),
        "lut": ("one", "row_bits", "lane_bits", "out_lane_bits"),
        "ff": ("one", "row_bits", "lane_bits", "out_lane_bits"),
    },
    "cds_eng_layernorm": {
        "dsp": ("one", "lane_dsps"),
        "lut": ("one", "sum_lane_bits", "norm_lane_bits"),
        "ff": ("one", "sum_lane_bits", "norm_lane_bits"),
    },
    "cds_eng_moe": {
        "dsp": ("one", "beat_dsps", "exp_dsps"),
        "lut": ("one", "tile_out", "out_lanes"),
        "ff": ("one", "tile_out", "out_lanes"),
    },
    "cds_arena_window": {
        "dsp": ("one",),
        "lut": ("one", "row_bits", "bram_mux_bits", "uram_mux_bits"),
        "ff": ("one",),
    },
    "cds_eng_eltwise": {
        "dsp": ("lanes",),  # POOL's 48x18 scale multiply per lane
        "lut": ("one", "lanes", "acc_bits"),  # requantisers; POOL's column sums in LUTRAM
        "ff": ("one", "lanes"),
    },
}
DEFAULT_FEATURES = ("one", "bus", "lanes", "weight_regs")
# coefficients known by construction rather than fitted: a multiply that only m3vit-sized
# tops have is one DSP
FIXED = {("dsp", "row_words_dsps"): 1.0}


def feature_names(unit: str, resource: str, available) -> list[str]:
    if resource == "bram36":
        return ["brams"]
    chosen = FEATURE_SETS.get(unit, {}).get(resource, DEFAULT_FEATURES)
    return [name for name in chosen if name in available]


# ---------------------------------------------------------------- calibration


def run_features(run: dict) -> dict[str, dict[str, float]]:
    """:func:`features` of a synthesis run's ArchConfig, precision, family and UltraRAM."""
    from ..arch import ArchConfig

    return features(ArchConfig.from_dict(run["arch"]), run["precision"],
                    run.get("family", "xcup"), run.get("uram", False))  # fmt: skip


def unit_records(records: list[dict]) -> dict[str, list[tuple[dict, dict]]]:
    """Per unit: (features, Yosys counts) of every calibration run."""
    per_unit: dict[str, list] = {}
    for record in records:
        feats = run_features(record)
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
            if resource == "bram36":  # counted (memories.py), not fitted
                coefficients[unit][resource] = {"brams": 1.0}
                continue
            fixed = {n: v for (r, n), v in FIXED.items() if r == resource and n in rows[0][0]}
            names = [n for n in feature_names(unit, resource, rows[0][0]) if n not in fixed]
            matrix = np.array([[f[name] for name in names] for f, _ in rows], dtype=float)
            target = np.array([counts[resource] - sum(v * f[n] for n, v in fixed.items())
                               for f, counts in rows], dtype=float)  # fmt: skip
            scale = np.maximum(matrix.max(axis=0), 1.0)
            solution, _ = nnls(matrix / scale, target)
            values = solution / scale
            if resource == "dsp":
                values = _integer_dsp(matrix, target, values)
            coefficients[unit][resource] = {
                **{name: float(value) for name, value in zip(names, values, strict=True) if value},
                **{name: value for name, value in fixed.items()
                   if name in feature_names(unit, resource, rows[0][0])},
            }  # fmt: skip
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


def has_uram(board) -> bool:
    """Whether the board's part has UltraRAM (synthesis may then map memories to it)."""
    return getattr(board, "uram", 0) > 0


def predict(coefficients: dict, run: dict, resources=RESOURCES, feats=None
            ) -> dict[str, float]:  # fmt: skip
    """The whole top's `resources` by `coefficients` for a run's design (its ArchConfig,
    precision, family; summed over the run's units); `feats`: its ``run_features``."""
    feats = run_features(run) if feats is None else feats
    return {
        resource: sum(_apply(coefficients.get(unit, {}).get(resource, {}), feats[unit], resource)
                      for unit in run["units"] if unit in feats)
        for resource in resources
    }  # fmt: skip


def held_out(records: list[dict]) -> list[dict]:
    """Leave-one-out: each run's totals next to the fit of the other runs (what the model
    says about an ArchConfig it has not seen); empty with fewer than three runs."""
    if len(records) < 3:
        return []
    rows = []
    for run in records:
        estimates = predict(fit([r for r in records if r is not run]), run)
        for resource in RESOURCES:
            estimate = estimates[resource]
            yosys = sum(counts[resource] for counts in run["units"].values())
            error = (estimate - yosys) / yosys if yosys else float(estimate != 0)
            rows.append({"run": run["name"], "resource": resource, "yosys": yosys,
                         "estimate": estimate, "error": round(error, 4)})  # fmt: skip
    return rows


def unseen_errors(runs: list[dict], coefficients: dict | None = None) -> list[dict]:
    """On runs the fit has not seen: the counted block RAM (memories.py) of each run's
    whole top next to Yosys's, and with `coefficients` the fitted DSPs too."""
    rows = []
    for run in runs:
        feats = run_features(run)
        estimates = {"bram36": sum(feats[unit]["brams"] for unit in run["units"] if unit in feats)}
        if coefficients:
            estimates.update(predict(coefficients, run, ("dsp",), feats))
        for resource, estimate in estimates.items():
            yosys = sum(counts[resource] for counts in run["units"].values())
            error = (estimate - yosys) / yosys if yosys else float(estimate != 0)
            rows.append({"run": run["name"], "resource": resource, "yosys": yosys,
                         "estimate": estimate, "error": round(error, 4)})  # fmt: skip
    return rows


def held_out_errors(records: list[dict], memory_runs: list[dict] = ()) -> dict[str, float]:
    """The worst relative held-out error per resource (``held_out``). Block RAM is counted,
    not fitted, so its error is the count's on every run: the ``memory_runs`` (Yosys
    stopped once memories and DSPs are mapped, minutes even at m3vit's sizes) when there
    are any, else the full runs. The memory runs check the DSPs of the fit too (they are
    not part of it)."""
    worst: dict[str, float] = {}
    rows = [row for row in held_out(records) if row["resource"] != "bram36"]
    if len(records) >= 3:
        rows += unseen_errors(records) if not memory_runs else []
        rows += unseen_errors(list(memory_runs), fit(records)) if memory_runs else []
    for row in rows:
        worst[row["resource"]] = max(worst.get(row["resource"], 0.0), abs(row["error"]))
    return worst


def trusted(table: dict) -> tuple[bool, str]:
    """Whether a family's calibration may drive the fit check, and why (not)."""
    runs = len(table["records"])
    if runs < MIN_RUNS:
        return False, f"{runs} runs, fewer than the {MIN_RUNS} the model needs"
    if not any(r["arch"]["max_tokens"] >= LARGE_TOKENS for r in table["records"]):
        return False, (f"no full run with {LARGE_TOKENS}+ tokens: the boards' designs would be "
                       "an extrapolation (m3vit's MoE queues are 150x the runs')")  # fmt: skip
    worst = table.get("held_out") or held_out_errors(table["records"], table.get("memory_runs", []))
    outside = [f"{r} {100 * worst[r]:.0f} %" for r in BANDS if worst.get(r, 1.0) > BANDS[r]]
    if outside:
        return False, "held-out error beyond its band: " + ", ".join(outside)
    return True, f"{runs} runs, held-out error within the bands"


def estimate_rtl(arch, precision=None, family: str = "xcup", *, uram: bool = False,
                 provisional: bool = False, measured: bool = True) -> dict | None:  # fmt: skip
    """Calibrated DSP / BRAM36 / LUT / FF (and counted URAM on a part with UltraRAM,
    `uram`) per RTL unit and in total, or None when the calibration of `family` is not
    ``trusted`` (fewer than MIN_RUNS runs, or held-out errors beyond BANDS);
    ``provisional=True``: whatever it has, saying so. A design the calibration itself
    synthesised gets that run's Yosys counts (``measured=False``: the model's anyway)."""
    table = calibration()["families"].get(family)
    if not table:
        return None
    ok, why = trusted(table)
    if not ok and not provisional:
        return None
    run = measured_run(table, arch, precision, uram) if measured else None
    if run is not None:  # the calibration synthesised this very design: Yosys's counts
        units = {unit: {r: counts.get(r, 0) for r in (*RESOURCES, "uram")}
                 for unit, counts in run["units"].items()}  # fmt: skip
        return {
            "family": family,
            "source": f"Yosys (calibration run {run['name']} of this very design)",
            "runs": len(table["records"]),
            **{r: sum(u[r] for u in units.values()) for r in (*RESOURCES, "uram")},
            "units": units,
        }
    units, borrowed = {}, []
    for unit, feats in features(arch, precision, family, uram).items():
        coeffs = table["coefficients"].get(unit)
        if coeffs is None and feats.get("one"):
            # a unit no run of this family had (the arena window on xc7): another family's
            # fit of it, said in the source, rather than nothing
            coeffs = next((t["coefficients"][unit] for t in calibration()["families"].values()
                           if unit in t["coefficients"]), {})  # fmt: skip
            borrowed.append(unit)
        units[unit] = {
            resource: _apply((coeffs or {}).get(resource, {}), feats, resource)
            for resource in RESOURCES
        }
        units[unit]["uram"] = feats["urams"]
    totals = {r: sum(u[r] for u in units.values()) for r in (*RESOURCES, "uram")}
    totals["bram36"] = round(totals["bram36"], 1)
    lent = f"; {', '.join(borrowed)} from another family's runs" if borrowed else ""
    return {
        "family": family,
        "source": f"estimator calibrated to Yosys ({why}{lent}" + (")" if ok else "; provisional)"),
        "runs": len(table["records"]),
        **totals,
        "units": units,
    }


def measured_run(table: dict, arch, precision=None, uram: bool = False) -> dict | None:
    """The family's calibration run of exactly this design (ArchConfig, precision and
    UltraRAM use), if it has one: near a fit margin the model's error (up to its band)
    decides, so a design Yosys has measured is judged by the measurement."""
    from ..arch import ArchConfig
    from ..arch.config import parse_precision

    wanted = str(parse_precision(precision))
    for run in table["records"]:
        if (run.get("uram", False) == uram and str(parse_precision(run["precision"])) == wanted
                and ArchConfig.from_dict(run["arch"]) == arch):  # fmt: skip
            return run
    return None


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
    "has_uram",
    "held_out",
    "held_out_errors",
    "measured_run",
    "trusted",
    "unseen_errors",
]
