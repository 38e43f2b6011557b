"""Nonlinear units (GELU, exp, reciprocal, rsqrt) and the requantiser vs the golden numerics.

Each unit is built once per ArchConfig (its ROMs come from that config's tables) and
streams >= 1,200 random and edge-case inputs under random stalls and backpressure; every
output must equal the golden evaluator's bit for bit, and the float result must stay
within the table's documented error of torch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import record_cycles

from codesign.numerics.fixed import OVERFLOW, ROUNDING, Fixed, requantize
from codesign.numerics.tables import build_tables, exp_neg, gelu, recip, rsqrt
from codesign.program import pack_fmt
from codesign.rtl import render, sim

BEATS = 350  # per unit and arch: x 3 or 4 lanes >= 1,000 cases
QUIET = 64  # leading beats without stalls, timed
LAT = {
    "cds_gelu": render.LATENCY["gelu"],
    "cds_exp": render.LATENCY["exp"],
    "cds_recip": render.LATENCY["recip"],
    "cds_rsqrt": render.LATENCY["rsqrt"],
}
IN_BITS = {"cds_exp": 32, "cds_recip": 32, "cds_rsqrt": 48}  # the wrappers' defaults
UNITS = ("cds_gelu", "cds_exp", "cds_recip", "cds_rsqrt")


def _lanes(arch) -> int:
    return 4 if arch.tile_in == 4 else 3  # an odd lane count exercises the unpaired ROM port


def _tables(arch):
    return build_tables(**arch.table_params())


@pytest.fixture(scope="module")
def builds(arch):
    """One cached Verilator build per unit for this arch."""
    lanes = _lanes(arch)
    return {u: sim.build(render.unit_sources(u, arch), u, {"LANES": lanes}) for u in UNITS}


def _run(build, spec: dict, arrays: dict) -> dict:
    return sim.run(
        build, "cocotb_nonlinear", testcase="lanes", inputs={"spec": json.dumps(spec), **arrays}
    )


def _spec(ins, outs, lanes, stall=0.3, backpressure=0.3, seed=1) -> dict:
    return {
        "in": [{"signal": s, "key": k, "width": w} for s, k, w in ins],
        "out": [
            {"signal": s, "key": k, "width": w, "lanes": lanes, "signed": sg}
            for s, k, w, sg in outs
        ],
        "stall": stall,
        "backpressure": backpressure,
        "seed": seed,
        "quiet": QUIET,
    }


def _mismatch(name, got, want, inputs) -> str:
    bad = np.argwhere(got != want)
    lines = [f"{name}: {len(bad)} of {got.size} outputs differ from golden"]
    for b, lane in bad[:8]:
        lines.append(
            f"  beat {b} lane {lane}: in={inputs[0][b][lane]} "
            + " ".join(f"{k}={v[b]}" for k, v in inputs[1].items())
            + f" rtl={got[b, lane]} golden={want[b, lane]}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ lint


@pytest.mark.parametrize("unit", [*UNITS, "cds_requant", "cds_requant_pipe", "cds_skid"])
def test_lint_clean(arch, unit):
    """verilator --lint-only -Wall reports nothing, with even and odd lane counts."""
    sources = render.unit_sources(unit, arch)
    sim.lint(sources, unit)
    if unit in UNITS:
        sim.lint(sources, unit, {"LANES": 3, "USE_DSP": 0})


# ------------------------------------------------------------------------------ requant


@pytest.mark.parametrize("unit", ["cds_requant", "cds_requant_pipe"])
def test_requant_exact(arch, unit):
    """cds_requant == fixed.requantize for random values, shifts, widths and all modes; so
    does its longer form with shorter paths, cds_requant_pipe."""
    stages = render.LATENCY[unit.removeprefix("cds_")]
    rng = np.random.default_rng(7)
    in_w, out_w = 64, 24 + arch.tile_in * 2  # 32- or 40-bit containers
    n = 3000
    xs, shifts, fmts, want = [], [], [], []
    edges = [0, 1, -1, (1 << 62) - 1, -(1 << 62), (1 << 63) - 1, -(1 << 63)]
    for i in range(n):
        width = int(rng.integers(1, out_w + 1))
        signed = bool(rng.integers(0, 2)) or width == out_w
        frac = int(rng.integers(-12, 48))
        fmt = Fixed(
            width, width - frac, signed, ROUNDING[rng.integers(0, 7)], OVERFLOW[rng.integers(0, 4)]
        )
        if i < len(edges) * 8:
            x = edges[i % len(edges)]
        else:
            bits = int(rng.integers(1, in_w + 1))
            x = int(rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), dtype=np.int64))
        shift = int(rng.integers(-40, 90)) if i % 5 else int(rng.integers(-2, 3))
        if shift < 0 and abs(x) >= (1 << 62) >> -shift:
            x >>= -shift  # keep golden's requantize inside int64 for left shifts
        if shift > 63 and abs(x) >= 1 << 62:
            x >>= 2  # golden's documented domain for shifts beyond 63
        xs.append(x)
        shifts.append(shift)
        fmts.append(pack_fmt(fmt))
        want.append(int(requantize(np.array([x]), shift + fmt.frac_bits, fmt)[0]))
    build = sim.build(render.unit_sources(unit, arch), unit, {"IN_W": in_w, "OUT_W": out_w})
    out = sim.run(
        build,
        "cocotb_nonlinear",
        testcase="requant",
        inputs={
            "x": np.array(xs, np.int64),
            "shift": np.array(shifts),
            "fmt": np.array(fmts, np.int64),
            "in_w": in_w,
            "stages": stages,
        },
    )
    got, want = out["y"], np.array(want, np.int64)
    bad = np.nonzero(got != want)[0]
    assert not len(bad), "\n".join(
        f"x={xs[i]} shift={shifts[i]} fmt={fmts[i]:#x}: rtl {got[i]} golden {want[i]}"
        for i in bad[:10]
    )


# ------------------------------------------------------------------------------ GELU


def test_gelu(arch, builds):
    table = _tables(arch)["gelu_delta"]
    lanes, h_w = _lanes(arch), 24
    rng = np.random.default_rng(11)
    fracs = rng.integers(-8, 41, BEATS)
    fracs[: BEATS // 2] = rng.integers(10, 22, BEATS // 2)  # the usual pre-activation formats
    h = rng.integers(-(1 << 23), 1 << 23, (BEATS, lanes))
    fmts, out_fmts = [], []
    for b in range(BEATS):
        frac = int(fracs[b])
        g = frac - table.step_bits
        n_seg = table.n_segments
        near = [0, 1, -1, (1 << 23) - 1, -(1 << 23)]
        if g >= 0 and (n_seg << g) < (1 << 23):
            near += [(n_seg << g) - 1, n_seg << g, -(n_seg << g), -((n_seg << g) - 1)]
        span = min(1 << 23, max(2, int(table.domain * 2.0**frac * 1.25)))
        for lane in range(lanes):
            kind = rng.random()
            if kind < 0.15:
                h[b, lane] = near[rng.integers(0, len(near))]
            elif kind < 0.8:
                h[b, lane] = rng.integers(-span, span)
        width = int(rng.integers(6, 25))
        out_frac = int(np.clip(frac + rng.integers(-8, 6), width - 30, width + 8))
        fmt = Fixed(
            width,
            width - out_frac,
            bool(rng.random() < 0.9),
            ROUNDING[rng.integers(0, 7)],
            OVERFLOW[rng.integers(0, 4)],
        )
        if not fmt.signed and fmt.width == 24:
            fmt = fmt.with_(width=23, int_bits=23 - out_frac)
        out_fmts.append(fmt)
        fmts.append(pack_fmt(fmt))
    want = np.stack([gelu(h[b], int(fracs[b]), table, out_fmts[b]) for b in range(BEATS)])
    spec = _spec(
        [("in_data", "x", h_w), ("in_frac", "frac", 8), ("in_fmt", "fmt", 32)],
        [("out_data", "y", 24, True)],
        lanes,
    )
    out = _run(builds["cds_gelu"], spec, {"x": h, "frac": fracs, "fmt": np.array(fmts, np.int64)})
    assert out["y"].shape == want.shape
    assert np.array_equal(out["y"], want), _mismatch("gelu", out["y"], want, (h, {"frac": fracs}))

    # float result vs torch's exact-erf GELU, where the output format neither clips nor
    # is coarser than the table: table error + output rounding + one table ulp
    bound_table = table.max_abs_error() + 2.0**-table.fmt.frac_bits
    x = h * 2.0 ** -fracs[:, None].astype(np.float64)
    ref = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    checked = 0
    for b in range(BEATS):
        fmt = out_fmts[b]
        got = want[b] * 2.0**-fmt.frac_bits
        inside = (ref[b] > fmt.min_value + fmt.lsb) & (ref[b] < fmt.max_value - fmt.lsb)
        err = np.abs(got - ref[b])[inside]
        assert np.all(err <= bound_table + fmt.lsb), (b, err.max(), bound_table, fmt)
        checked += int(inside.sum())
    assert checked > BEATS * lanes // 2
    _throughput(builds["cds_gelu"], out)


# ------------------------------------------------------------------------------ exp


def test_exp(arch, builds):
    table = _tables(arch)["exp"]
    lanes = _lanes(arch)
    rng = np.random.default_rng(12)
    fracs = rng.integers(-8, 41, BEATS)
    fracs[: BEATS // 2] = rng.integers(8, 24, BEATS // 2)
    d = -rng.integers(0, 1 << 31, (BEATS, lanes))
    for b in range(BEATS):
        frac = int(fracs[b])
        g = frac - table.step_bits
        span = min(1 << 31, max(2, int(table.domain * 2.0**frac * 1.1)))
        near = [0, -1, -(1 << 31)]
        if g >= 0 and (table.n_segments << g) < (1 << 31):
            near += [-((table.n_segments << g) - 1), -(table.n_segments << g)]
        for lane in range(lanes):
            kind = rng.random()
            if kind < 0.15:
                d[b, lane] = near[rng.integers(0, len(near))]
            elif kind < 0.85:
                d[b, lane] = -rng.integers(0, span)
    want = np.stack([exp_neg(d[b], int(fracs[b]), table) for b in range(BEATS)])
    spec = _spec(
        [("in_data", "x", 32), ("in_frac", "frac", 8)],
        [("out_data", "y", table.fmt.width, False)],
        lanes,
    )
    out = _run(builds["cds_exp"], spec, {"x": d, "frac": fracs})
    assert np.array_equal(out["y"], want), _mismatch("exp", out["y"], want, (d, {"frac": fracs}))

    ref = torch.exp(torch.from_numpy(d * 2.0 ** -fracs[:, None].astype(np.float64))).numpy()
    err = np.abs(want * 2.0**-table.fmt.frac_bits - ref)
    assert err.max() <= table.max_abs_error() + 2.0**-table.fmt.frac_bits, err.max()
    _throughput(builds["cds_exp"], out)


# ------------------------------------------------------------------------------ recip, rsqrt


def _positive(rng, bits, shape):
    """Positive raw values spread over every bit length, plus powers of two and all-ones."""
    lengths = rng.integers(1, bits + 1, shape)
    hi = np.left_shift(np.int64(1), lengths.astype(np.int64))
    vals = (rng.random(shape) * (hi - hi // 2)).astype(np.int64) + hi // 2
    vals = np.maximum(vals, 1)
    flat = vals.reshape(-1)
    for i in range(0, flat.size, 17):
        k = int(rng.integers(0, bits))
        flat[i] = (1 << k) if i % 2 else (1 << (k + 1)) - 1
    return vals


@pytest.mark.parametrize("unit", ["cds_recip", "cds_rsqrt"])
def test_range_reduced(arch, builds, unit):
    name = unit.removeprefix("cds_")
    table = _tables(arch)[name]
    lanes, bits = _lanes(arch), IN_BITS[unit]
    rng = np.random.default_rng(13 if name == "recip" else 14)
    values = _positive(rng, bits, (BEATS, lanes))
    fracs = rng.integers(-32, 63, BEATS)
    evaluate = recip if name == "recip" else rsqrt
    mant = np.zeros_like(values)
    expo = np.zeros_like(values)
    for b in range(BEATS):
        mant[b], expo[b] = evaluate(values[b], int(fracs[b]), table)
    spec = _spec(
        [("in_data", "x", bits), ("in_frac", "frac", 8)],
        [("out_mant", "mant", table.fmt.width, False), ("out_exp", "exp", 8, True)],
        lanes,
    )
    out = _run(builds[unit], spec, {"x": values, "frac": fracs})
    info = (values, {"frac": fracs})
    assert np.array_equal(out["mant"], mant), _mismatch(name, out["mant"], mant, info)
    assert np.array_equal(out["exp"], expo), _mismatch(name + " exp", out["exp"], expo, info)

    x = torch.from_numpy(values.astype(np.float64) * 2.0 ** -fracs[:, None].astype(np.float64))
    ref = (1.0 / x if name == "recip" else torch.rsqrt(x)).numpy()
    got = np.ldexp(mant.astype(np.float64), -(table.fmt.frac_bits + expo))
    rel = np.abs(got / ref - 1.0)
    assert rel.max() <= table.max_abs_error() * (1 + 1e-9) + 1e-15, rel.max()
    _throughput(builds[unit], out)


def _throughput(build, out):
    """Without stalls a unit takes one beat per cycle after its pipeline latency."""
    cycles, latency = int(out["quiet_cycles"]), LAT[build.top]
    record_cycles(
        build.top,
        f"{QUIET} beats, no stalls",
        cycles,
        QUIET + latency + 1,
        lanes=build.parameters["LANES"],
    )
    assert cycles <= QUIET + latency + 2
