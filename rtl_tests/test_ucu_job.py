"""cds_ucu_job (the UCU behind the word-DMA ports) vs GoldenExecutor.linear.

Each case is a one-layer Program (the ArchConfig's tables, packed weights, biases, CSR
index) and an arena of random words holding the x rows and residuals. The RTL runs the
layer with rd0 serving the program bytes and rd1 / wr1 the arena (wordmem.py, random
stalls, latency and backpressure); the whole final arena must equal the golden
executor's, word for word (so neighbours of unaligned output columns stay untouched).
Cases: dense and block-sparse (with an all-pruned output tile row, and with every tile
pruned), bias or none, GELU, residual add, in_dim / out_dim off the tile grid, one row,
unaligned dst columns, gather rows (synchronous-RAM gidx table), the ys sink and post 3
with the side stream. Quiet runs of >= 8-row layers are compared with
codesign.estimate.linear_cycles.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ARCHS, record_cycles
from test_attention import one_layer_program

from codesign import estimate
from codesign.golden import GoldenExecutor
from codesign.numerics.fixed import OVERFLOW, ROUNDING, Fixed
from codesign.program import (
    LAYER_FIELDS,
    NONE,
    Layer,
    Op,
    Post,
    pack_block_sparse,
    pack_fmt,
    pack_tiles,
    tile_mask,
)
from codesign.rtl import render, sim
from codesign.rtl.render import POST_SCORE, rtl_params

SEED = 20240611


def _pad(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _fmt(rng, width: int, frac: int, signed: bool = True) -> Fixed:
    return Fixed(
        width, width - frac, signed, ROUNDING[rng.integers(0, 7)], OVERFLOW[rng.integers(0, 4)]
    )


# ------------------------------------------------------------------ one-layer Programs


def make_case(rng, arch, name: str, rows: int, in_dim: int, out_dim: int, *, post: int = 0,
              bias: bool = True, sparse: bool = False, prune_row: bool = False,
              prune_all: bool = False, dst_col: int = 0, gather: bool = False,
              sink: int = 0, stall: float = 0.0, latency: int = 2,
              backpressure: float = 0.0) -> dict:  # fmt: skip
    """One LINEAR as a Program + arena, with the golden executor's final arena."""
    p = rtl_params(arch)
    ti, to, bus_bytes = arch.tile_in, arch.tile_out, arch.bus_bits // 8
    wx = int(rng.choice([p["x_bits"], 16, 10]))
    x_fmt = Fixed(wx, int(rng.integers(1, 6)), True, "RND", "SAT")
    w_fmt = Fixed(16, int(rng.integers(0, 3)), True, "RND", "SAT")
    x = rng.integers(x_fmt.raw_min, x_fmt.raw_max + 1, (rows, in_dim))
    w = rng.integers(w_fmt.raw_min, w_fmt.raw_max + 1, (out_dim, in_dim))
    if sparse:
        keep = rng.random(tile_mask(w, ti, to).shape) < 0.5
        if prune_row:
            keep[rng.integers(0, keep.shape[0]), :] = False
        if prune_all:
            keep[:] = False
        for ot, it in zip(*np.nonzero(~keep), strict=True):
            w[ot * to : (ot + 1) * to, it * ti : (it + 1) * ti] = 0
    acc_frac = x_fmt.frac_bits + w_fmt.frac_bits
    bound = float(np.abs(x).max(initial=1)) * float(np.abs(w).max(initial=1)) * in_dim**0.5
    top = int(np.ceil(np.log2(max(bound * 2.0**-acc_frac, 2.0**-8))))
    fields = dict.fromkeys(LAYER_FIELDS[Op.LINEAR], 0)
    blobs = {}
    container = p["w_container"] // 8
    if sparse:
        weights, index = pack_block_sparse(w, ti, to, container, bus_bytes)
        blobs["blocks"] = np.asarray(index).astype("<i4").tobytes()
        stored = int(index[-(-out_dim // to)])
    else:
        weights = pack_tiles(w, ti, to, container, bus_bytes)
        fields["blocks"] = NONE
        stored = (-(-out_dim // to)) * (-(-in_dim // ti))
    blobs["weight"] = weights
    fields["bias"] = NONE
    b_frac = acc_frac
    if bias:
        b_frac = min(acc_frac, 31 - top)
        blobs["bias"] = rng.integers(-(1 << 31), 1 << 31, out_dim) >> int(rng.integers(4, 20))
        blobs["bias"] = blobs["bias"].astype("<i4").tobytes()
    b_fmt = Fixed(32, 32 - b_frac, True, "RND", "SAT")
    # the arena: x rows, residual rows, output rows, each row a whole number of beats
    src_stride = _pad(4 * in_dim, bus_bytes) + bus_bytes * int(rng.integers(0, 2))
    src_rows = rows + (3 if gather else 0)
    res_stride = _pad(4 * out_dim, bus_bytes)
    dst_stride = _pad(4 * (out_dim + dst_col), bus_bytes) + bus_bytes * int(rng.integers(0, 2))
    src = bus_bytes * int(rng.integers(0, 3))
    res = _pad(src + src_rows * src_stride, bus_bytes)
    dst = res + rows * res_stride
    arena_bytes = dst + rows * dst_stride + bus_bytes
    arena = rng.integers(-(1 << 31), 1 << 31, arena_bytes // 4).astype(np.int64)
    x_all = rng.integers(x_fmt.raw_min, x_fmt.raw_max + 1, (src_rows, in_dim))
    order = np.arange(rows)
    if gather:  # job rows pick arena rows in a random order (some rows unused)
        order = rng.permutation(src_rows)[:rows]
        x_all[order] = x
    else:
        x_all = x
    view = arena[src // 4 : src // 4 + src_rows * src_stride // 4].reshape(src_rows, -1)
    view[:, :in_dim] = x_all
    res_fmt = None
    if post == int(Post.ADD):
        wr = int(rng.integers(8, p["x_bits"] + 1))
        res_fmt = Fixed(wr, wr - min(acc_frac, wr - int(rng.integers(1, 6))), True, "RND", "SAT")
        resid = rng.integers(res_fmt.raw_min, res_fmt.raw_max + 1, (rows, out_dim))
        arena[res // 4 : res // 4 + rows * res_stride // 4].reshape(rows, -1)[:, :out_dim] = resid
    wo = int(rng.integers(8, p["x_bits"] + 1))
    out_fmt = _fmt(rng, wo, wo - (top + int(rng.integers(-2, 3)) + 1))
    pre_fmt = None
    if post == int(Post.GELU):
        wp = int(rng.integers(10, p["x_bits"] + 1))
        pre_fmt = _fmt(rng, wp, wp - int(rng.integers(max(2, top - 3), top + 3)))
        out_fmt = _fmt(rng, wo, wo - int(rng.integers(2, max(3, top))))
    golden_post = 0 if post == POST_SCORE else post
    fields.update(
        src=src, src_stride=src_stride, rows=rows, in_dim=in_dim, out_dim=out_dim,
        dst=dst + 4 * dst_col, dst_stride=dst_stride, x_fmt=pack_fmt(x_fmt),
        w_fmt=pack_fmt(w_fmt), w_bytes=container, b_fmt=pack_fmt(b_fmt), post=golden_post,
        pre_fmt=pack_fmt(pre_fmt) if pre_fmt else 0, res=res if res_fmt else NONE,
        res_stride=res_stride, res_fmt=pack_fmt(res_fmt) if res_fmt else 0,
        out_fmt=pack_fmt(out_fmt),
    )  # fmt: skip
    layer = Layer(Op.LINEAR, name, fields)
    program = one_layer_program(arch, layer, arena_bytes, 1, 1, blobs)  # blobs -> fields
    # golden: gathered rows are first copied to a contiguous scratch area past the arena
    ex = GoldenExecutor(program)
    ex.arena = np.concatenate([arena, np.zeros(rows * src_stride // 4, np.int64)])
    if gather:
        scratch = arena_bytes
        ex.write(scratch, src_stride, x)
        layer.fields["src"] = scratch
    y = ex.linear(layer, 0)
    layer.fields["src"] = src
    expected = ex.arena[: arena_bytes // 4]
    case = {
        "name": name,
        "program": np.frombuffer(program.to_bytes(), np.uint32),
        "arena": arena.astype(np.int32).view(np.uint32),
        "expected": expected.astype(np.int32).view(np.uint32),
        "signals": _job_signals(layer, gather, sink, post),
        "gidx": order.astype(np.int64),
        "stall": stall,
        "latency": latency,
        "backpressure": backpressure,
        "rows": rows,
        "in_dim": in_dim,
        "out_dim": out_dim,
        "stored": stored,
        "post": post,
        "sink": sink,
        "y": y,
    }
    if post == POST_SCORE:  # y -> acc_in + score * y, acc_in from the side stream
        out_tiles = -(-out_dim // to)
        case["acc_in"] = rng.integers(-(1 << 40), 1 << 40, (rows, out_tiles * to))
        case["score"] = rng.integers(0, 1 << 17, rows)
    if sink == 1:
        case["expected"] = case["arena"].copy()  # nothing may be written
    return case


def _job_signals(layer: Layer, gather: bool, sink: int, post: int) -> dict:
    f = layer.fields
    names = ("rows", "in_dim", "out_dim", "src", "src_stride", "weight", "blocks", "w_bytes",
             "bias", "x_fmt", "w_fmt", "b_fmt", "res_fmt", "pre_fmt", "out_fmt", "res",
             "res_stride", "dst", "dst_stride")  # fmt: skip
    out = {n: int(f[n]) & 0xFFFFFFFF for n in names}
    out.update(gather=int(gather), sink=sink, post=post)
    return out


def run_cases(build, arch, cases: list[dict], seed: int) -> dict:
    """All cases through one model; returns the cocotb outputs."""
    p = rtl_params(arch)
    to = arch.tile_out
    arrays = {k: [] for k in ("program", "arena", "gidx", "ss_acc", "ss_score")}
    count = dict.fromkeys(arrays, 0)

    def put(key, values):
        span = [count[key], len(values)]
        arrays[key].append(np.asarray(values))
        count[key] += len(values)
        return span

    jobs = []
    for case in cases:
        side = np.zeros((0, to), np.int64)
        score = np.zeros(0, np.int64)
        if case["post"] == POST_SCORE:
            rows, out_tiles = case["rows"], -(-case["out_dim"] // to)
            side = case["acc_in"].reshape(rows, out_tiles, to).transpose(1, 0, 2)
            side = side.reshape(-1, to)
            score = np.tile(case["score"], out_tiles)
        jobs.append(
            {
                "program": put("program", case["program"].astype(np.int64)),
                "arena": put("arena", case["arena"].astype(np.int64)),
                "gidx": put("gidx", case["gidx"]),
                "ss": [put("ss_acc", side)[0], len(side)],
                "signals": case["signals"],
                "stall": case["stall"],
                "latency": case["latency"],
                "backpressure": case["backpressure"],
            }
        )
        put("ss_score", score)
    inputs = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in arrays.items()}
    if not len(inputs["ss_acc"]):
        inputs["ss_acc"] = np.zeros((0, to), np.int64)
    inputs["shape"] = json.dumps(
        {
            "wpb": arch.bus_bits // 32,
            "to": to,
            "side_bits": p["side_bits"],
            "macc_bits": p["macc_bits"],
            "seed": seed,
        }
    )
    inputs["jobs"] = json.dumps(jobs)
    return sim.run(build, "cocotb_ucu_job", testcase="jobs", inputs=inputs)


def check_cases(arch, cases: list[dict], out: dict, unit: str) -> None:
    to = arch.tile_out
    start, ys_at, side_at = 0, 0, 0
    for case, cycles in zip(cases, out["cycles"], strict=True):
        n = len(case["arena"])
        got = out["arena"][start : start + n]
        start += n
        bad = np.nonzero(got != case["expected"])[0]
        assert not len(bad), (
            f"{case['name']}: {len(bad)} arena words differ from golden, first at word "
            f"{bad[0]}: rtl {got[bad[0]]:#x} golden {case['expected'][bad[0]]:#x}"
        )
        rows, out_dim = case["rows"], case["out_dim"]
        out_tiles = -(-out_dim // to)
        order = [(t, r) for t in range(out_tiles) for r in range(rows)]
        if case["post"] == POST_SCORE:
            side = [tuple(v) for v in out["side"][side_at : side_at + len(order)]]
            side_at += len(order)
            assert side == order, f"{case['name']}: ss_tile/ss_row out of the UCU's order"
        if case["sink"] == 1:
            beats = out["ys"][ys_at : ys_at + len(order)]
            ys_at += len(order)
            assert [tuple(b[:2]) for b in beats] == order, f"{case['name']}: ys_tile/ys_row"
            want = case["y"]
            if case["post"] == POST_SCORE:
                want = case["acc_in"][:, :out_dim] + case["score"][:, None] * case["y"]
            for (t, r), beat in zip(order, beats, strict=True):
                lanes = min(to, out_dim - t * to)
                got_y = beat[2 : 2 + lanes]
                assert np.array_equal(got_y, want[r, t * to : t * to + lanes]), (
                    f"{case['name']}: ys tile {t} row {r}: rtl {got_y} "
                    f"golden {want[r, t * to : t * to + lanes]}"
                )
        if case["stall"] == 0 and case["backpressure"] == 0 and rows >= 8:
            est = estimate.linear_cycles(
                rows, case["in_dim"], out_dim, arch.tile_in, arch.tile_out,
                rtl_params(arch)["w_container"] // 8, arch.bus_bits // 8,
                stored_tiles=case["stored"], residual=case["post"] == int(Post.ADD),
            )  # fmt: skip
            record_cycles(
                unit, f"{case['name']} {rows}x{case['in_dim']}->{out_dim}", int(cycles), est
            )
            # measured 1.007-1.070 (the 16-row score path pays a fixed 20-cycle tail)
            assert 0.9 <= int(cycles) / est <= 1.15, (case["name"], int(cycles), est)
    assert ys_at == len(out["ys"]), "ys beats of a sink-0 job"


# ------------------------------------------------------------------ case lists


def linear_cases(rng, arch) -> list[dict]:
    ti, to, wpb = arch.tile_in, arch.tile_out, arch.bus_bits // 32
    noisy = {"stall": 0.3, "latency": 6, "backpressure": 0.3}
    return [
        make_case(rng, arch, "dense_bias_offgrid", 5, 2 * ti + 1, 2 * to + 3,
                  dst_col=1, **noisy),
        make_case(rng, arch, "dense_gelu_1row", 1, 3 * ti - 1, to + 1, post=1, dst_col=wpb - 1,
                  stall=0.2, latency=3),
        make_case(rng, arch, "dense_res_nobias", 7, ti + 2, 3 * to - 1, post=2, bias=False,
                  dst_col=3, **noisy),
        make_case(rng, arch, "sparse_prunedrow_gelu", 6, 4 * ti, 3 * to + 2, post=1,
                  sparse=True, prune_row=True, dst_col=2, **noisy),
        make_case(rng, arch, "sparse_res", 9, 3 * ti + 3, 2 * to, post=2, bias=False,
                  sparse=True, prune_row=True, stall=0.1, latency=4),
        make_case(rng, arch, "sparse_allpruned_res", 3, 2 * ti, 2 * to - 1, post=2,
                  sparse=True, prune_all=True, dst_col=1, **noisy),
        make_case(rng, arch, "dense_tiny", 2, 1, 1, dst_col=5, **noisy),
        make_case(rng, arch, "quiet_dense", 64, 8 * ti, 4 * to, dst_col=0),
        make_case(rng, arch, "quiet_sparse_res", 64, 8 * ti, 4 * to, post=2, sparse=True),
        make_case(rng, arch, "quiet_gelu_offgrid", 72, 6 * ti + 3, 3 * to + 1, post=1,
                  dst_col=1),
    ]  # fmt: skip


def job_cases(rng, arch) -> list[dict]:
    ti, to = arch.tile_in, arch.tile_out
    noisy = {"stall": 0.3, "latency": 5, "backpressure": 0.3}
    return [
        make_case(rng, arch, "gather_arena", 6, 2 * ti + 1, 2 * to + 1, gather=True,
                  dst_col=1, **noisy),
        make_case(rng, arch, "gather_score_ys", 5, 3 * ti, 2 * to + 2, post=POST_SCORE,
                  gather=True, sink=1, sparse=True, prune_row=True, **noisy),
        make_case(rng, arch, "gelu_ys_1row", 1, ti + 1, to + 1, post=1, sink=1, **noisy),
        make_case(rng, arch, "score_ys_quiet", 16, 4 * ti, 2 * to, post=POST_SCORE, sink=1),
    ]  # fmt: skip


# ------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def job_build(arch):
    return sim.build(render.unit_sources("cds_ucu_job", arch), "cds_ucu_job")


def test_ucu_job(arch, job_build):
    """LINEAR Programs, gather rows, the ys sink and post 3 through cds_ucu_job."""
    rng = np.random.default_rng(SEED + arch.tile_in)
    cases = linear_cases(rng, arch) + job_cases(rng, arch)
    out = run_cases(job_build, arch, cases, seed=7)
    check_cases(arch, cases, out, "cds_ucu_job")


@pytest.mark.parametrize("name", ["archA", "archB", "zcu102"])
def test_lint(name):
    """Verilator -Wall clean, for the test ArchConfigs and a board default."""
    from codesign.arch.config import default_arch

    arch = ARCHS[name] if name in ARCHS else default_arch(name)
    sim.lint(render.unit_sources("cds_ucu_job", arch), "cds_ucu_job")
