"""Golden executor: runs a Program bit-exactly with integer numpy arithmetic.

It decodes everything from the Program bytes (descriptors, packed weights, tables)
and keeps activations in an int32 arena, exactly as the kernel sees DDR. Matrix
products are exact integer sums; they use float64 BLAS only when every partial sum
is provably below 2**53 (then the float result *is* the integer), and int64
otherwise. Nonlinear functions come from the Program's tables; the algorithms are
the Edge-MoE ones (single-pass softmax with running max and sum in the rotated key
order, (1/s, m) applied in A·V, one-pass layer norm, expert queues with scatter-add).
docs/numerics.md states each step; the HLS kernel and the RTL implement the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .contract import ProgramRefused
from .numerics.fixed import Fixed, apply_overflow, count_overflow, shift_round
from .numerics.tables import Table, exp_neg, gelu, recip, rsqrt
from .program import (
    HEADER_BYTES,
    NONE,
    Layer,
    Op,
    Post,
    Program,
    unpack_block_sparse,
    unpack_fmt,
    unpack_tiles,
)

_EXACT_FLOAT = 2.0**53


def matmul_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [m, k] @ b[n, k]^T over the integers."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    k = a.shape[1]
    peak_a = int(np.abs(a).max(initial=0))
    peak_b = int(np.abs(b).max(initial=0))
    bound = peak_a * peak_b * k
    if bound < _EXACT_FLOAT:
        return np.rint(a.astype(np.float64) @ b.T.astype(np.float64)).astype(np.int64)
    # int64 sums wrap modulo 2**64 like the kernel's 64-bit accumulators; only a Program
    # whose data breaks its formats' widths gets there (the compiler never does)
    return a @ b.T


def shift_round_rows(raw: np.ndarray, shifts: np.ndarray, rounding: str) -> np.ndarray:
    """shift_round with a per-row shift (broadcast over trailing axes)."""
    shifts = np.asarray(shifts)
    out = np.empty_like(raw)
    for value in np.unique(shifts):
        mask = np.broadcast_to(
            (shifts == value).reshape(shifts.shape + (1,) * (raw.ndim - shifts.ndim)), raw.shape
        )
        out[mask] = shift_round(raw[mask], int(value), rounding)
    return out


def align(raw: np.ndarray, frac_from: int, frac_to: int) -> np.ndarray:
    """Exact re-scaling to more fraction bits."""
    if frac_to < frac_from:
        raise ValueError(f"cannot align {frac_from} fraction bits down to {frac_to} exactly")
    shift = frac_to - frac_from
    if shift >= 64:  # every bit shifted out of the 64-bit word, as in the kernel
        return np.zeros_like(np.asarray(raw, np.int64))
    return np.asarray(raw, np.int64) << np.int64(shift)


@dataclass
class RunResult:
    output: np.ndarray  # raw int64 [rows, cols] of the task's output
    fmt: Fixed
    traces: dict[str, np.ndarray] = field(default_factory=dict)  # layer name -> raw output
    saturations: dict[str, int] = field(default_factory=dict)  # layer name -> values clipped

    def to_float(self) -> np.ndarray:
        return self.fmt.to_float(self.output)


class GoldenExecutor:
    """Bit-exact reference for the accelerator; one instance per Program."""

    def __init__(self, program: Program | bytes, arch=None):
        """``arch``: refuse, before each run, exactly what the kernel built for that
        ArchConfig refuses (``ProgramRefused``); without it, what no kernel could run
        (the loader's checks, the format's own limits)."""
        if isinstance(program, (bytes, bytearray)):
            self._blob = bytes(program)
            program = Program.from_bytes(self._blob)
        else:
            self._blob = None
        self.program = program
        self.arch = arch
        self._checked: set[int] = set()
        self.tables = {
            name: Table(
                name,
                program.read_words(ref.offset, ref.entries),
                ref.fmt,
                ref.index_bits,
                ref.guard_bits,
                2.0**ref.domain_log2 if name in ("gelu_delta", "exp") else 1.0,
            )
            for name, ref in program.tables.items()
        }
        self._weights: dict[tuple, np.ndarray] = {}
        self.arena = np.zeros(0, np.int64)
        self._sat = 0

    # ---------------------------------------------------------------- arena
    def read(self, offset: int, rows: int, cols: int, stride: int) -> np.ndarray:
        start, words = offset // 4, stride // 4
        return self.arena[start : start + rows * words].reshape(rows, words)[:, :cols].copy()

    def write(self, offset: int, stride: int, values: np.ndarray) -> None:
        """Store as DDR does: 32-bit words (a value wider than its container wraps)."""
        rows, cols = values.shape
        start, words = offset // 4, stride // 4
        wrapped = ((np.asarray(values, np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        self.arena[start : start + rows * words].reshape(rows, words)[:, :cols] = wrapped

    def weights(
        self, offset: int, out_dim: int, in_dim: int, container: int, blocks: int = NONE
    ) -> np.ndarray:
        """Raw [out, in] weights, dense or from non-zero tiles + CSR block index."""
        key = (offset, out_dim, in_dim, container, blocks)
        if key not in self._weights:
            if blocks == NONE:
                w = unpack_tiles(self.program, offset, out_dim, in_dim, container)
            else:
                w = unpack_block_sparse(self.program, offset, blocks, out_dim, in_dim, container)
            self._weights[key] = w
        return self._weights[key]

    def vector(self, offset: int, count: int) -> np.ndarray:
        return self.program.read_words(offset, count)

    def quant(self, raw: np.ndarray, frac: int, fmt: Fixed) -> np.ndarray:
        """Requantise and count the values the overflow mode had to clip."""
        rounded = shift_round(raw, frac - fmt.frac_bits, fmt.rounding)
        self._sat += count_overflow(rounded, fmt.width, fmt.signed)
        return apply_overflow(rounded, fmt.width, fmt.signed, fmt.overflow)

    # ---------------------------------------------------------------- run
    def check(self, task: int) -> None:
        """The kernel's program check for ``task`` (the op registry's rules)."""
        if task in self._checked:
            return
        if self._blob is None:
            self._blob = self.program.to_bytes()
        from .ops import check_blob, kernel_check_params
        from .program import loader_params

        if self.arch is not None:
            params = kernel_check_params(self.arch)
        else:
            params = loader_params(np.frombuffer(self._blob[:HEADER_BYTES], "<u4"))
        refusal = check_blob(self._blob, params, task)
        if refusal is not None:
            layer = refusal.layer
            raise ProgramRefused(
                refusal.code,
                layer,
                None if layer is None else self.program.layers[layer].op.name,
                executor="the golden executor",
                layer_name=None if layer is None else self.program.layers[layer].name,
                detail=refusal.detail,
            )
        self._checked.add(task)

    def run(self, input_raw: np.ndarray, task: int = 0, trace: bool = False) -> RunResult:
        program = self.program
        if not isinstance(task, (int, np.integer)) or not 0 <= task < program.n_tasks:
            raise ValueError(f"task {task} out of range: the program has {program.n_tasks} tasks")
        self.check(int(task))
        ref = program.input
        input_raw = np.asarray(input_raw, np.int64)
        if input_raw.shape != (ref.rows, ref.cols):
            raise ValueError(f"input has shape {input_raw.shape}, expected {(ref.rows, ref.cols)}")
        if input_raw.min(initial=0) < ref.fmt.raw_min or input_raw.max(initial=0) > ref.fmt.raw_max:
            raise ValueError(f"input raw values outside the input format {ref.fmt}")
        self.arena = np.zeros(program.arena_bytes // 4, np.int64)
        self.write(ref.offset, ref.stride, input_raw)
        result = RunResult(np.zeros(0), program.outputs[task].fmt)
        for layer in program.layers:
            if layer.task not in (-1, task):
                continue
            self._sat = 0
            out = getattr(self, layer.op.name.lower())(layer, task)
            result.saturations[layer.name] = self._sat
            if trace and out is not None:
                result.traces[layer.name] = out
        out_ref = program.outputs[task]
        result.output = self.read(out_ref.offset, out_ref.rows, out_ref.cols, out_ref.stride)
        return result

    # ---------------------------------------------------------------- ops
    def linear(self, layer: Layer, task: int) -> np.ndarray:
        f = layer.fields
        x_fmt, w_fmt, out_fmt = (layer.fmt(k) for k in ("x_fmt", "w_fmt", "out_fmt"))
        x = self.read(f["src"], f["rows"], f["in_dim"], f["src_stride"])
        w = self.weights(f["weight"], f["out_dim"], f["in_dim"], f["w_bytes"], f["blocks"])
        acc_frac = x_fmt.frac_bits + w_fmt.frac_bits
        acc = matmul_exact(x, w)
        if f["bias"] != NONE:
            acc += align(
                self.vector(f["bias"], f["out_dim"]), layer.fmt("b_fmt").frac_bits, acc_frac
            )
        post = Post(f["post"])
        if post == Post.ADD:
            res = self.read(f["res"], f["rows"], f["out_dim"], f["res_stride"])
            acc += align(res, layer.fmt("res_fmt").frac_bits, acc_frac)
        if post == Post.GELU:
            pre_fmt = layer.fmt("pre_fmt")
            pre = self.quant(acc, acc_frac, pre_fmt)
            y = gelu(pre, pre_fmt.frac_bits, self.tables["gelu_delta"], out_fmt)
        else:
            y = self.quant(acc, acc_frac, out_fmt)
        self.write(f["dst"], f["dst_stride"], y)
        return y

    def embed(self, layer: Layer, task: int) -> np.ndarray:
        f = layer.fields
        x_fmt, pos_fmt, out_fmt = (layer.fmt(k) for k in ("x_fmt", "pos_fmt", "out_fmt"))
        patches, dim = f["patches"], f["dim"]
        x = self.read(f["src"], patches, dim, f["src_stride"])
        pos = self.vector(f["pos"], (patches + 1) * dim).reshape(patches + 1, dim)
        frac = max(x_fmt.frac_bits, pos_fmt.frac_bits)
        value = align(pos, pos_fmt.frac_bits, frac)
        value[1:] += align(x, x_fmt.frac_bits, frac)
        y = self.quant(value, frac, out_fmt)
        self.write(f["dst"], f["dst_stride"], y)
        return y

    def add(self, layer: Layer, task: int) -> np.ndarray:
        f = layer.fields
        x_fmt, res_fmt, out_fmt = (layer.fmt(k) for k in ("x_fmt", "res_fmt", "out_fmt"))
        x = self.read(f["src"], f["rows"], f["cols"], f["src_stride"])
        res = self.read(f["res"], f["rows"], f["cols"], f["res_stride"])
        frac = max(x_fmt.frac_bits, res_fmt.frac_bits)
        y = self.quant(
            align(x, x_fmt.frac_bits, frac) + align(res, res_fmt.frac_bits, frac), frac, out_fmt
        )
        self.write(f["dst"], f["dst_stride"], y)
        return y

    def layernorm(self, layer: Layer, task: int) -> np.ndarray:
        """One pass: S1 = sum x, S2 = sum (x >> t)^2; no division anywhere.

        u = D*S2' - S1'^2 + eps*D^2 (S' over the truncated x) is D^2 (var + eps) in units
        of 2**-2(Fx-t); (x - mean)/std = (D*x - S1) * rsqrt(u), with rsqrt as mantissa
        and exponent so the product keeps full precision at any scale.
        """
        f = layer.fields
        x_fmt, g_fmt, b_fmt = (layer.fmt(k) for k in ("x_fmt", "g_fmt", "b_fmt"))
        norm_fmt, out_fmt = layer.fmt("norm_fmt"), layer.fmt("out_fmt")
        rows, dim, shift = f["rows"], f["dim"], f["stat_shift"]
        x = self.read(f["src"], rows, dim, f["src_stride"])
        s1 = x.sum(axis=1)
        xs = x >> np.int64(shift)
        s1s = xs.sum(axis=1)
        s2s = (xs * xs).sum(axis=1)
        eps = f["eps_lo"] | (f["eps_hi"] << 32)
        eps = eps - (1 << 64) if eps >> 63 else eps  # a signed 64-bit word, as the kernel reads
        u = dim * s2s - s1s * s1s + eps
        stat_frac = 2 * (x_fmt.frac_bits - shift)
        table = self.tables["rsqrt"]
        mant, half_exp = rsqrt(u, stat_frac, table)
        centred = dim * x - s1[:, None]
        shifts = x_fmt.frac_bits + table.fmt.frac_bits + half_exp - norm_fmt.frac_bits
        rounded = shift_round_rows(centred * mant[:, None], shifts, norm_fmt.rounding)
        self._sat += count_overflow(rounded, norm_fmt.width, norm_fmt.signed)
        norm = apply_overflow(rounded, norm_fmt.width, norm_fmt.signed, norm_fmt.overflow)
        gamma = self.vector(f["gamma"], dim)
        beta = self.vector(f["beta"], dim)
        frac = norm_fmt.frac_bits + g_fmt.frac_bits
        y = self.quant(norm * gamma + align(beta, b_fmt.frac_bits, frac), frac, out_fmt)
        self.write(f["dst"], f["dst_stride"], y)
        return y

    def _softmax_stats(self, scores: np.ndarray, score_frac: int, parallel: int, sum_fmt: Fixed):
        """Running max m and sum s per (head, query) over keys in the rotated order.

        Query i sits in slot i mod P and sees keys (i mod P + t) mod N for t = 0..N-1.
        New key x: if x > m, s = round(s * e^(m-x)) + 1 and m = x; else s += e^(x-m).
        """
        _heads, tokens, _ = scores.shape
        table = self.tables["exp"]
        one = int(table.values[0])
        queries = np.arange(tokens)
        start = queries % parallel
        m = scores[:, queries, start]
        s = np.full(m.shape, one, np.int64)
        for step in range(1, tokens):
            x = scores[:, queries, (start + step) % tokens]
            e = exp_neg(-np.abs(x - m), score_frac, table)
            greater = x > m
            rescaled = shift_round(s * e, table.fmt.frac_bits, sum_fmt.rounding) + one
            s = np.where(greater, rescaled, s + e)
            s = apply_overflow(s, sum_fmt.width, sum_fmt.signed, sum_fmt.overflow)
            m = np.maximum(m, x)
        return m, s

    def attention(self, layer: Layer, task: int) -> np.ndarray:
        f = layer.fields
        qkv_fmt, score_fmt, sum_fmt, prob_fmt, out_fmt = (
            layer.fmt(k) for k in ("qkv_fmt", "score_fmt", "sum_fmt", "prob_fmt", "out_fmt")
        )
        tokens, dim, heads = f["tokens"], f["dim"], f["heads"]
        head_dim = dim // heads
        exp_table, recip_table = self.tables["exp"], self.tables["recip"]
        if sum_fmt.frac_bits != exp_table.fmt.frac_bits:
            raise ValueError(f"{layer.name}: sum format must have the exp table's fraction bits")
        qkv = self.read(f["src"], tokens, 3 * dim, f["src_stride"])
        split = qkv.reshape(tokens, 3, heads, head_dim).transpose(1, 2, 0, 3)  # [3, H, N, hd]
        scores = np.stack([matmul_exact(split[0, h], split[1, h]) for h in range(heads)])
        scores = self.quant(scores, 2 * qkv_fmt.frac_bits, score_fmt)
        m, s = self._softmax_stats(scores, score_fmt.frac_bits, f["parallel"], sum_fmt)
        mant, exponent = recip(s, exp_table.fmt.frac_bits, recip_table)
        out = np.zeros((tokens, dim), np.int64)
        for h in range(heads):
            e = exp_neg(scores[h] - m[h][:, None], score_fmt.frac_bits, exp_table)
            shifts = exp_table.fmt.frac_bits + recip_table.fmt.frac_bits + exponent[h]
            shifts = shifts - prob_fmt.frac_bits
            probs = shift_round_rows(e * mant[h][:, None], shifts, prob_fmt.rounding)
            probs = apply_overflow(probs, prob_fmt.width, prob_fmt.signed, prob_fmt.overflow)
            acc = matmul_exact(probs, split[2, h].T)
            out[:, h * head_dim : (h + 1) * head_dim] = self.quant(
                acc, prob_fmt.frac_bits + qkv_fmt.frac_bits, out_fmt
            )
        self.write(f["dst"], f["dst_stride"], out)
        return out

    # ---------------------------------------------------------------- MoE
    def _queue_layout(self, f: dict) -> tuple[int, int, int]:
        """Arena offsets of counts[E], tokens[E][N], scores[E][N] (int32 each)."""
        experts, tokens = f["experts"], f["tokens"]
        counts = f["queue"]
        ids = counts + 4 * experts
        return counts, ids, ids + 4 * experts * tokens

    def moe_gate(self, layer: Layer, task: int) -> np.ndarray:
        """Gate softmax over experts, top-k by logit (ties to the lower index), queues."""
        f = layer.fields
        x_fmt, w_fmt = layer.fmt("x_fmt"), layer.fmt("w_fmt")
        logit_fmt, score_fmt = layer.fmt("logit_fmt"), layer.fmt("score_fmt")
        tokens, dim, experts, top_k = f["tokens"], f["dim"], f["experts"], f["top_k"]
        x = self.read(f["src"], tokens, dim, f["src_stride"])
        w = self.weights(f["weight"], experts, dim, f["w_bytes"])
        logits = self.quant(matmul_exact(x, w), x_fmt.frac_bits + w_fmt.frac_bits, logit_fmt)
        exp_table, recip_table = self.tables["exp"], self.tables["recip"]
        e = exp_neg(logits - logits.max(axis=1, keepdims=True), logit_fmt.frac_bits, exp_table)
        mant, exponent = recip(e.sum(axis=1), exp_table.fmt.frac_bits, recip_table)
        shifts = exp_table.fmt.frac_bits + recip_table.fmt.frac_bits + exponent
        probs = shift_round_rows(
            e * mant[:, None], shifts - score_fmt.frac_bits, score_fmt.rounding
        )
        probs = apply_overflow(probs, score_fmt.width, score_fmt.signed, score_fmt.overflow)
        chosen = np.argsort(-logits, axis=1, kind="stable")[:, :top_k]
        counts_at, ids_at, scores_at = self._queue_layout(f)
        counts = np.zeros(experts, np.int64)
        ids = np.zeros((experts, tokens), np.int64)
        scores = np.zeros((experts, tokens), np.int64)
        for token in range(tokens):
            for expert in chosen[token]:
                slot = counts[expert]
                ids[expert, slot] = token
                scores[expert, slot] = probs[token, expert]
                counts[expert] = slot + 1
        self.write(counts_at, 4 * experts, counts[None])
        self.write(ids_at, 4 * tokens, ids)
        self.write(scores_at, 4 * tokens, scores)
        return None

    def moe_experts(self, layer: Layer, task: int) -> np.ndarray:
        """Each non-empty expert gathers its tokens, runs fc1-GELU-fc2 once, scatters
        score * y into an exact accumulator; the residual joins before one rounding."""
        f = layer.fields
        fmt = layer.fmt
        tokens, dim, hidden, experts = f["tokens"], f["dim"], f["hidden"], f["experts"]
        x_fmt, pre_fmt, hidden_fmt, y_fmt = (
            fmt(k) for k in ("x_fmt", "pre_fmt", "hidden_fmt", "y_fmt")
        )
        w1_fmt, w2_fmt, score_fmt = fmt("fc1_fmt"), fmt("fc2_fmt"), fmt("score_fmt")
        x = self.read(f["src"], tokens, dim, f["src_stride"])
        counts_at, ids_at, scores_at = self._queue_layout(f)
        counts = self.read(counts_at, 1, experts, 4 * experts)[0]
        ids = self.read(ids_at, experts, tokens, 4 * tokens)
        scores = self.read(scores_at, experts, tokens, 4 * tokens)
        acc_frac = score_fmt.frac_bits + y_fmt.frac_bits
        acc = np.zeros((tokens, dim), np.int64)
        frac1 = x_fmt.frac_bits + w1_fmt.frac_bits
        frac2 = hidden_fmt.frac_bits + w2_fmt.frac_bits
        for expert in range(experts):
            count = min(int(counts[expert]), tokens)  # the kernel clamps a corrupt queue
            if count <= 0:
                continue
            rows = ids[expert, :count].copy()
            corrupt = (rows < 0) | (rows >= tokens)  # contributes nothing (score 0, token 0)
            rows[corrupt] = 0
            scores[expert, :count][corrupt] = 0
            w1 = self.weights(f["fc1"] + expert * f["fc1_stride"], hidden, dim, f["w_bytes"])
            b1 = self.vector(f["fc1_bias"] + expert * f["fc1_bias_stride"], hidden)
            pre = matmul_exact(x[rows], w1) + align(b1, fmt("fc1_bias_fmt").frac_bits, frac1)
            pre = self.quant(pre, frac1, pre_fmt)
            act = gelu(pre, pre_fmt.frac_bits, self.tables["gelu_delta"], hidden_fmt)
            self.write(f["scratch"], f["scratch_stride"], act)
            w2 = self.weights(f["fc2"] + expert * f["fc2_stride"], dim, hidden, f["w_bytes"])
            b2 = self.vector(f["fc2_bias"] + expert * f["fc2_bias_stride"], dim)
            y = matmul_exact(act, w2) + align(b2, fmt("fc2_bias_fmt").frac_bits, frac2)
            y = self.quant(y, frac2, y_fmt)
            np.add.at(acc, rows, scores[expert, :count, None] * y)  # a token may repeat
        if f["res"] != NONE:
            res = self.read(f["res"], tokens, dim, f["res_stride"])
            acc += align(res, fmt("res_fmt").frac_bits, acc_frac)
        out = self.quant(acc, acc_frac, fmt("out_fmt"))
        self.write(f["dst"], f["dst_stride"], out)
        return out


def run_golden(program: Program, input_raw: np.ndarray, task: int = 0, trace: bool = False):
    return GoldenExecutor(program).run(input_raw, task, trace)


__all__ = ["GoldenExecutor", "Op", "RunResult", "matmul_exact", "run_golden", "unpack_fmt"]
