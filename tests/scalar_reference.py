"""A deliberately naive, scalar re-implementation of the accelerator, from docs/numerics.md.

This is *not* a test module (pytest does not collect it). It exists to check the vectorised
golden executor (``codesign/golden.py``) against an implementation written independently
from the written contract:

* plain Python ``int`` arithmetic only, one value at a time, in explicit loops; numpy is
  used for nothing but converting the caller's input array into Python ints;
* its own ``shift_round`` / ``apply_overflow`` written from the ap_fixed definitions (the
  rounding modes as statements about the exact rational value, via floor division);
* its own format-word decoding (the bit fields documented in docs/numerics.md);
* its own table interpolation (docs/numerics.md, docs/numerics-tables.md and the
  docstrings of ``codesign/numerics/tables.py``), reading only the ROM entries from the
  Program (``program.read_words``);
* its own reading of packed weights and parameter vectors straight from ``program.data``,
  with the tile order re-derived from the ``pack_tiles`` docstring;
* its own activation arena (a list of int32 words; a value that does not fit an int32
  container is a contract violation and raises).

``ScalarReference(program).run(input_raw, task)`` returns every layer's output (nested
lists of ints), every gate's expert queues, the final output, and a ``coverage`` counter
of the code paths taken (so tests can show that the cases they build reach saturation,
table ends, left shifts, softmax rescales and so on).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from codesign.program import NONE, Op, Post, Program

# Mode names in code order, as docs/numerics.md lists them ("codes are the positions in
# ROUNDING / OVERFLOW").
ROUNDING_NAMES = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV")
OVERFLOW_NAMES = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class ContractError(AssertionError):
    """The Program asks for something docs/numerics.md does not define."""


# ------------------------------------------------------------------------------ formats


@dataclass(frozen=True)
class Fmt:
    """A decoded format word: raw r means r * 2**-frac."""

    width: int
    frac: int
    signed: bool
    rounding: str
    overflow: str

    def __str__(self) -> str:
        sign = "s" if self.signed else "u"
        return f"{sign}{self.width}.F{self.frac} {self.rounding} {self.overflow}"


def decode_fmt(word: int) -> Fmt:
    """width [7:0], fraction bits as int8 [15:8], signed [16], rounding [19:17],
    overflow [22:20]."""
    word = int(word)
    width = word % 256
    frac = (word // 256) % 256
    if frac >= 128:
        frac -= 256
    signed = (word // 65536) % 2 == 1
    rounding = (word // 2**17) % 8
    overflow = (word // 2**20) % 8
    if width < 1 or rounding >= len(ROUNDING_NAMES) or overflow >= len(OVERFLOW_NAMES):
        raise ContractError(f"format word {word:#x} is not a valid format")
    return Fmt(width, frac, signed, ROUNDING_NAMES[rounding], OVERFLOW_NAMES[overflow])


# --------------------------------------------------------------- the two primitives


def shift_round(r: int, s: int, mode: str, cov: Counter | None = None) -> int:
    """The integer nearest r / 2**s under `mode`; s <= 0 is an exact multiplication.

    Written from the definitions: with fl = floor(r / 2**s) and the discarded part
    rem = r - fl * 2**s in [0, 2**s), the exact value is fl + rem / 2**s.
    """
    if s <= 0:
        if cov is not None:
            cov["shift.left"] += 1
        return r * 2 ** (-s)
    unit = 2**s
    fl, rem = divmod(r, unit)  # Python floors, so 0 <= rem < unit
    if mode == "TRN":  # floor
        return fl
    if mode == "TRN_ZERO":  # toward zero: negative values with a fraction go up
        return fl + 1 if (r < 0 and rem != 0) else fl
    twice = 2 * rem
    if twice < unit:  # below the half: nearest is the floor
        return fl
    if twice > unit:  # above the half: nearest is the ceiling
        return fl + 1
    if cov is not None:
        cov["shift.tie"] += 1
    # exactly half way between fl and fl + 1
    if mode == "RND":  # half toward +infinity
        return fl + 1
    if mode == "RND_MIN_INF":  # half toward -infinity
        return fl
    if mode == "RND_ZERO":  # half toward zero
        return fl + 1 if r < 0 else fl
    if mode == "RND_INF":  # half away from zero
        return fl if r < 0 else fl + 1
    if mode == "RND_CONV":  # half to even
        return fl if fl % 2 == 0 else fl + 1
    raise ContractError(f"unknown rounding mode {mode}")


def apply_overflow(r: int, width: int, signed: bool, mode: str, cov: Counter | None = None) -> int:
    """Bring an exact integer into `width` bits like an ap_fixed assignment."""
    if signed:
        lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    else:
        lo, hi = 0, 2**width - 1
    if mode == "WRAP":  # keep the low `width` bits, two's complement when signed
        low = r % 2**width
        if signed and low > hi:
            low -= 2**width
        if cov is not None and low != r:
            cov["overflow.wrap"] += 1
        return low
    if mode == "SAT_SYM" and signed and width > 1:
        # ap_fixed's symmetric saturation never produces the most negative pattern; a
        # 1-bit signed type (max 0) falls back to plain SAT.
        lo = -hi
    if lo <= r <= hi:
        return r
    if cov is not None:
        cov["overflow.clip"] += 1
    if mode == "SAT_ZERO":
        return 0
    if mode in ("SAT", "SAT_SYM"):
        return hi if r > hi else lo
    raise ContractError(f"unknown overflow mode {mode}")


def q(r: int, frac_in: int, fmt: Fmt, cov: Counter | None = None) -> int:
    """requantize: apply_overflow(shift_round(r, F_in - F_out, Q), W, signed, O)."""
    rounded = shift_round(r, frac_in - fmt.frac, fmt.rounding, cov)
    return apply_overflow(rounded, fmt.width, fmt.signed, fmt.overflow, cov)


def align(r: int, frac_from: int, frac_to: int) -> int:
    if frac_to < frac_from:
        raise ContractError(f"align from {frac_from} down to {frac_to} fraction bits is not exact")
    return r * 2 ** (frac_to - frac_from)


# ------------------------------------------------------------------------------ tables


@dataclass
class Rom:
    """One lookup table: the entries from the Program, the parameters from its header."""

    name: str
    entries: list[int]
    frac: int  # fraction bits of the entries (F_t / F_e)
    index_bits: int
    guard_bits: int
    domain_log2: int

    @property
    def step_bits(self) -> int:
        """Grid step 2**-s: the domain [0, 2**domain_log2] in 2**index_bits segments for
        GELU and exp; the mantissa step 2**-index_bits for recip and rsqrt."""
        if self.name in ("gelu_delta", "exp"):
            return self.index_bits - self.domain_log2
        return self.index_bits

    @property
    def segments(self) -> int:
        n = 2**self.index_bits
        return 3 * n if self.name == "rsqrt" else n

    def lerp(self, i: int, r: int, g: int) -> int:
        """T[i] + (((T[i+1] - T[i]) * r) >> G), >> flooring."""
        if not 0 <= i < self.segments:
            raise ContractError(f"{self.name}: segment {i} outside [0, {self.segments})")
        t0, t1 = self.entries[i], self.entries[i + 1]
        return t0 + ((t1 - t0) * r) // 2**g

    def on_grid(self, a: int, frac: int, cov: Counter | None) -> int:
        """Interpolated value at a >= 0 with `frac` fraction bits; 0 past the table."""
        s = self.step_bits
        if frac >= s:
            g = frac - s
            idx, r = a // 2**g, a % 2**g
        else:  # a coarser input lies on grid points
            if cov is not None:
                cov[f"{self.name}.coarse"] += 1
            g = 0
            idx, r = a * 2 ** (s - frac), 0
        if idx >= self.segments:
            if cov is not None:
                cov[f"{self.name}.beyond"] += 1
            return 0
        return self.lerp(idx, r, g)


class Tables:
    """The four ROMs and their evaluators (the Program's entries, the contract's steps)."""

    def __init__(self, roms: dict[str, Rom], cov: Counter):
        self.rom = roms
        self.cov = cov
        for name, rom in roms.items():
            if len(rom.entries) != rom.segments + 1:
                raise ContractError(f"table {name} has {len(rom.entries)} entries")

    @classmethod
    def from_program(cls, program: Program, cov: Counter) -> Tables:
        roms = {}
        for name, ref in program.tables.items():
            entries = [int(v) for v in program.read_words(ref.offset, ref.entries)]
            roms[name] = Rom(
                name, entries, ref.fmt.frac_bits, ref.index_bits, ref.guard_bits, ref.domain_log2
            )
        return cls(roms, cov)

    @property
    def exp_frac(self) -> int:
        return self.rom["exp"].frac

    @property
    def recip_frac(self) -> int:
        return self.rom["recip"].frac

    @property
    def rsqrt_frac(self) -> int:
        return self.rom["rsqrt"].frac

    def exp_neg(self, d: int, frac: int) -> int:
        """e**d for d <= 0 (raw, `frac` fraction bits) with the exp table's fraction bits."""
        if d > 0:
            raise ContractError(f"exp of a positive argument {d}")
        return self.rom["exp"].on_grid(-d, frac, self.cov)

    def gelu(self, h: int, frac: int, out: Fmt) -> int:
        """relu(h) - delta(|h|), delta interpolated (0 past the table), one rounding."""
        rom = self.rom["gelu_delta"]
        delta = rom.on_grid(abs(h), frac, self.cov)
        wide = max(frac, rom.frac)
        value = align(max(h, 0), frac, wide) - align(delta, rom.frac, wide)
        return q(value, wide, out, self.cov)

    def recip(self, v: int, frac: int) -> tuple[int, int]:
        """1/v ~ mant * 2**-(Ft + e): normalise v to L = n + G bits below its leading one
        (truncating), idx = (norm >> G) - N, r = the low G bits, e = p - frac."""
        if v <= 0:
            raise ContractError(f"recip of {v}")
        rom = self.rom["recip"]
        g, n = rom.guard_bits, rom.index_bits
        length = n + g
        p = v.bit_length() - 1
        if p <= length:
            norm = v * 2 ** (length - p)
        else:
            self.cov["recip.truncate"] += 1
            norm = v // 2 ** (p - length)
        mant = rom.lerp(norm // 2**g - 2**n, norm % 2**g, g)
        return mant, p - frac

    def rsqrt(self, u: int, frac: int) -> tuple[int, int]:
        """1/sqrt(u) ~ mant * 2**-(Ft + h): exponent floored to even, mantissa in [1, 4)
        with L = n + G bits below the unit (truncating), h = half the even exponent."""
        if u <= 0:
            raise ContractError(f"rsqrt of {u}")
        rom = self.rom["rsqrt"]
        g, n = rom.guard_bits, rom.index_bits
        e = u.bit_length() - 1 - frac
        e2 = e - e % 2  # Python's % is non-negative: floor to even for negative e too
        if e % 2:
            self.cov["rsqrt.odd_exponent"] += 1
        k = n + g - (e2 + frac)
        if k >= 0:
            norm = u * 2**k
        else:
            self.cov["rsqrt.truncate"] += 1
            norm = u // 2 ** (-k)
        mant = rom.lerp(norm // 2**g - 2**n, norm % 2**g, g)
        return mant, e2 // 2


# ----------------------------------------------------------------------------- results


@dataclass
class RefResult:
    output: list[list[int]]
    traces: dict[str, list[list[int]]] = field(default_factory=dict)
    # gate layer name -> {"counts": [E], "ids": [E][count], "scores": [E][count]}
    queues: dict[str, dict[str, list]] = field(default_factory=dict)
    coverage: Counter = field(default_factory=Counter)


# ---------------------------------------------------------------------------- executor


def bias_of(word: int) -> int:
    """The bias in a UCU bias word: its top 29 bits, signed (docs/program-format.md)."""
    return word >> 3


def shift_of(word: int) -> int:
    """Its output column's weight shift: the word's low 3 bits."""
    return word & 7


def dot(a: list[int], b: list[int]) -> int:
    total = 0
    for x, y in zip(a, b, strict=True):
        total += x * y
    return total


class ScalarReference:
    """Runs a Program one scalar at a time, from the contract in docs/numerics.md."""

    def __init__(self, program: Program):
        self.program = program
        self.cov: Counter = Counter()
        self.tables = Tables.from_program(program, self.cov)
        self.arena: list[int] = []
        self._weights: dict[tuple, list[list[int]]] = {}

    # ------------------------------------------------------------ program data
    def _data_int(self, offset: int, nbytes: int) -> int:
        start = offset - self.program.data_offset
        if start < 0 or start + nbytes > len(self.program.data):
            raise ContractError(f"program read at {offset} ({nbytes} bytes) is outside the data")
        return int.from_bytes(self.program.data[start : start + nbytes], "little", signed=True)

    def vector(self, offset: int, count: int) -> list[int]:
        """`count` consecutive little-endian int32 words (biases, pos, gamma, beta)."""
        if offset == NONE:
            raise ContractError("read of an absent vector")
        return [self._data_int(offset + 4 * k, 4) for k in range(count)]

    def weights(
        self, offset: int, out_dim: int, in_dim: int, container: int, blocks: int = NONE
    ) -> list[list[int]]:
        """W[o][i] from the UCU tile order (pack_tiles docstring, docs/program-format.md):
        tiles of tile_out x tile_in, output tiles outer and input tiles inner, row-major
        inside a tile, each tile padded to whole bus beats; int8, int16 or int32
        little-endian containers. Block-sparse (blocks != NONE): only the non-zero tiles
        are stored, in the same order, indexed by int32 row_ptr[out_tiles + 1] then
        col[nnz] at `blocks`; stored tile k is at weight + k * tile_bytes; a tile not
        listed is all zero."""
        key = (offset, out_dim, in_dim, container, blocks)
        if key in self._weights:
            return self._weights[key]
        if container not in (1, 2, 4):
            raise ContractError(f"weight container of {container} bytes")
        prog = self.program
        t_in, t_out = prog.tile_in, prog.tile_out
        bus = prog.bus_bits // 8
        in_tiles = (in_dim + t_in - 1) // t_in
        out_tiles = (out_dim + t_out - 1) // t_out
        tile_bytes = (t_in * t_out * container + bus - 1) // bus * bus
        # where each (output tile, input tile) is stored, or None for a skipped zero tile
        slot: dict[tuple[int, int], int] = {}
        if blocks == NONE:
            for r in range(out_tiles):
                for c in range(in_tiles):
                    slot[r, c] = r * in_tiles + c
        else:
            row_ptr = self.vector(blocks, out_tiles + 1)
            cols = self.vector(blocks + 4 * (out_tiles + 1), row_ptr[-1])
            for r in range(out_tiles):
                for k in range(row_ptr[r], row_ptr[r + 1]):
                    if not 0 <= cols[k] < in_tiles or (r, cols[k]) in slot:
                        raise ContractError(f"block index names input tile {cols[k]} badly")
                    slot[r, cols[k]] = k
        rows = []
        for o in range(out_dim):
            row = []
            for i in range(in_dim):
                k = slot.get((o // t_out, i // t_in))
                if k is None:
                    row.append(0)
                    continue
                inside = (o % t_out) * t_in + i % t_in
                row.append(self._data_int(offset + k * tile_bytes + inside * container, container))
            rows.append(row)
        self._weights[key] = rows
        return rows

    # ------------------------------------------------------------ arena
    def read(self, offset: int, rows: int, cols: int, stride: int) -> list[list[int]]:
        if offset % 4 or stride % 4:
            raise ContractError(f"unaligned arena access at {offset} stride {stride}")
        base, words = offset // 4, stride // 4
        return [self.arena[base + r * words : base + r * words + cols] for r in range(rows)]

    def write(self, offset: int, stride: int, values: list[list[int]]) -> None:
        base, words = offset // 4, stride // 4
        for r, row in enumerate(values):
            for c, value in enumerate(row):
                if not INT32_MIN <= value <= INT32_MAX:
                    raise ContractError(f"value {value} does not fit its int32 arena container")
                self.arena[base + r * words + c] = value

    # ------------------------------------------------------------ run
    def run(self, input_raw, task: int = 0) -> RefResult:
        prog = self.program
        if not 0 <= task < prog.n_tasks:
            raise ContractError(f"task {task} out of range")
        self.arena = [0] * (prog.arena_bytes // 4)
        ref = prog.input
        rows = [[int(v) for v in row] for row in input_raw]
        if len(rows) != ref.rows or any(len(row) != ref.cols for row in rows):
            raise ContractError("input shape does not match the program")
        self.write(ref.offset, ref.stride, rows)
        result = RefResult(output=[], coverage=self.cov)
        self._result = result
        handlers = {
            Op.LINEAR: self.linear,
            Op.EMBED: self.embed,
            Op.LAYERNORM: self.layernorm,
            Op.ATTENTION: self.attention,
            Op.ADD: self.add,
            Op.POOL: self.pool,
            Op.MOE_GATE: self.moe_gate,
            Op.MOE_EXPERTS: self.moe_experts,
        }
        for layer in prog.layers:
            if layer.task != -1 and layer.task != task:
                continue
            self.cov[f"op.{layer.op.name}"] += 1
            out = handlers[layer.op](layer)
            if out is not None:
                result.traces[layer.name] = out
        out = prog.outputs[task]
        result.output = self.read(out.offset, out.rows, out.cols, out.stride)
        return result

    # ------------------------------------------------------------ ops
    def linear(self, layer) -> list[list[int]]:
        f = layer.fields
        x_fmt, w_fmt, out_fmt = (decode_fmt(f[k]) for k in ("x_fmt", "w_fmt", "out_fmt"))
        rows, n_in, n_out = f["rows"], f["in_dim"], f["out_dim"]
        x = self.read(f["src"], rows, n_in, f["src_stride"])
        w = self.weights(f["weight"], n_out, n_in, f["w_bytes"], f.get("blocks", NONE))
        f_acc = x_fmt.frac + w_fmt.frac
        bias, shifts = None, [0] * n_out
        if f["bias"] != NONE:
            b_fmt = decode_fmt(f["b_fmt"])
            words = self.vector(f["bias"], n_out)
            bias = [align(bias_of(word), b_fmt.frac, f_acc) for word in words]
            shifts = [shift_of(word) for word in words]
        post = Post(f["post"])
        res = None
        if post == Post.ADD:
            res_fmt = decode_fmt(f["res_fmt"])
            res = self.read(f["res"], rows, n_out, f["res_stride"])
        pre_fmt = decode_fmt(f["pre_fmt"]) if post == Post.GELU else None
        out = []
        for t in range(rows):
            row = []
            for o in range(n_out):
                acc = dot(x[t], w[o]) << shifts[o]
                if bias is not None:
                    acc += bias[o]
                if res is not None:
                    acc += align(res[t][o], res_fmt.frac, f_acc)
                if pre_fmt is not None:
                    h = q(acc, f_acc, pre_fmt, self.cov)
                    row.append(self.tables.gelu(h, pre_fmt.frac, out_fmt))
                else:
                    row.append(q(acc, f_acc, out_fmt, self.cov))
            out.append(row)
        self.write(f["dst"], f["dst_stride"], out)
        return out

    def embed(self, layer) -> list[list[int]]:
        f = layer.fields
        x_fmt, pos_fmt, out_fmt = (decode_fmt(f[k]) for k in ("x_fmt", "pos_fmt", "out_fmt"))
        patches, dim, prefix = f["patches"], f["dim"], f["prefix"]
        x = self.read(f["src"], patches, dim, f["src_stride"])
        flat = self.vector(f["pos"], (patches + prefix) * dim)
        pos = [flat[r * dim : (r + 1) * dim] for r in range(patches + prefix)]
        frac = max(x_fmt.frac, pos_fmt.frac)
        out = [
            [q(align(pos[t][c], pos_fmt.frac, frac), frac, out_fmt, self.cov) for c in range(dim)]
            for t in range(prefix)
        ]
        for p in range(patches):
            out.append(
                [
                    q(
                        align(x[p][c], x_fmt.frac, frac)
                        + align(pos[prefix + p][c], pos_fmt.frac, frac),
                        frac,
                        out_fmt,
                        self.cov,
                    )
                    for c in range(dim)
                ]
            )
        self.write(f["dst"], f["dst_stride"], out)
        return out

    def pool(self, layer) -> list[list[int]]:
        """Column sums of the rows times the reciprocal constant, at F_x + F_scale."""
        f = layer.fields
        x_fmt, s_fmt, out_fmt = (decode_fmt(f[k]) for k in ("x_fmt", "scale_fmt", "out_fmt"))
        x = self.read(f["src"], f["rows"], f["cols"], f["src_stride"])
        frac = x_fmt.frac + s_fmt.frac
        sums = [sum(row[c] for row in x) for c in range(f["cols"])]
        out = [[q(total * f["scale"], frac, out_fmt, self.cov) for total in sums]]
        self.write(f["dst"], f["dst_stride"], out)
        return out

    def add(self, layer) -> list[list[int]]:
        f = layer.fields
        x_fmt, res_fmt, out_fmt = (decode_fmt(f[k]) for k in ("x_fmt", "res_fmt", "out_fmt"))
        x = self.read(f["src"], f["rows"], f["cols"], f["src_stride"])
        res = self.read(f["res"], f["rows"], f["cols"], f["res_stride"])
        frac = max(x_fmt.frac, res_fmt.frac)
        out = [
            [
                q(
                    align(a, x_fmt.frac, frac) + align(b, res_fmt.frac, frac),
                    frac,
                    out_fmt,
                    self.cov,
                )
                for a, b in zip(x_row, res_row, strict=True)
            ]
            for x_row, res_row in zip(x, res, strict=True)
        ]
        self.write(f["dst"], f["dst_stride"], out)
        return out

    def layernorm(self, layer) -> list[list[int]]:
        f = layer.fields
        x_fmt, g_fmt, b_fmt, norm_fmt, out_fmt = (
            decode_fmt(f[k]) for k in ("x_fmt", "g_fmt", "b_fmt", "norm_fmt", "out_fmt")
        )
        rows, dim, t = f["rows"], f["dim"], f["stat_shift"]
        x = self.read(f["src"], rows, dim, f["src_stride"])
        gamma = self.vector(f["gamma"], dim)
        beta = self.vector(f["beta"], dim)
        eps_term = f["eps_lo"] + f["eps_hi"] * 2**32
        ft = self.tables.rsqrt_frac
        out_frac = norm_fmt.frac + g_fmt.frac
        out = []
        for row in x:
            s1 = 0
            s1_short = 0
            s2_short = 0
            for v in row:
                s1 += v
                short = v // 2**t  # arithmetic shift (floor)
                s1_short += short
                s2_short += short * short
            u = dim * s2_short - s1_short * s1_short + eps_term
            mant, half = self.tables.rsqrt(u, 2 * (x_fmt.frac - t))
            shift = x_fmt.frac + ft + half - norm_fmt.frac
            y_row = []
            for c, v in enumerate(row):
                n = shift_round((dim * v - s1) * mant, shift, norm_fmt.rounding, self.cov)
                n = apply_overflow(n, norm_fmt.width, norm_fmt.signed, norm_fmt.overflow, self.cov)
                value = n * gamma[c] + align(beta[c], b_fmt.frac, out_frac)
                y_row.append(q(value, out_frac, out_fmt, self.cov))
            out.append(y_row)
        self.write(f["dst"], f["dst_stride"], out)
        return out

    def softmax_row(self, scores: list[int], first: int, score_frac: int, sum_fmt: Fmt):
        """Running max and sum over the keys in the order first, first + 1, ... (mod N)."""
        tables = self.tables
        n = len(scores)
        one = tables.exp_neg(0, score_frac)
        m = scores[first % n]
        s = one
        for t in range(1, n):
            v = scores[(first + t) % n]
            e = tables.exp_neg(-abs(v - m), score_frac)
            if v > m:
                self.cov["softmax.new_max"] += 1
                s = shift_round(s * e, tables.exp_frac, sum_fmt.rounding, self.cov) + one
                m = v
            else:
                if v == m:
                    self.cov["softmax.tie"] += 1
                s = s + e
            s = apply_overflow(s, sum_fmt.width, sum_fmt.signed, sum_fmt.overflow, self.cov)
        return m, s

    def attention(self, layer) -> list[list[int]]:
        f = layer.fields
        qkv_fmt, score_fmt, sum_fmt, prob_fmt, out_fmt = (
            decode_fmt(f[k]) for k in ("qkv_fmt", "score_fmt", "sum_fmt", "prob_fmt", "out_fmt")
        )
        n, dim, heads = f["tokens"], f["dim"], f["heads"]
        hd = dim // heads
        parallel = min(f["parallel"], n)
        if parallel < 1:
            raise ContractError("attention parallelism must be >= 1")
        qkv = self.read(f["src"], n, 3 * dim, f["src_stride"])
        tables = self.tables
        fe, ft = tables.exp_frac, tables.recip_frac
        out = [[0] * dim for _ in range(n)]
        for h in range(heads):
            cols = range(h * hd, (h + 1) * hd)
            qh = [[qkv[i][c] for c in cols] for i in range(n)]
            kh = [[qkv[j][dim + c] for c in cols] for j in range(n)]
            vh = [[qkv[j][2 * dim + c] for c in cols] for j in range(n)]
            for i in range(n):
                scores = [
                    q(dot(qh[i], kh[j]), 2 * qkv_fmt.frac, score_fmt, self.cov) for j in range(n)
                ]
                m, s = self.softmax_row(scores, i % parallel, score_fmt.frac, sum_fmt)
                mant, p = tables.recip(s, fe)
                shift = fe + ft + p - prob_fmt.frac
                probs = []
                for j in range(n):
                    e = tables.exp_neg(scores[j] - m, score_fmt.frac)
                    prob = shift_round(e * mant, shift, prob_fmt.rounding, self.cov)
                    probs.append(
                        apply_overflow(
                            prob, prob_fmt.width, prob_fmt.signed, prob_fmt.overflow, self.cov
                        )
                    )
                for c in range(hd):
                    acc = 0
                    for j in range(n):
                        acc += probs[j] * vh[j][c]
                    out[i][h * hd + c] = q(acc, prob_fmt.frac + qkv_fmt.frac, out_fmt, self.cov)
        self.write(f["dst"], f["dst_stride"], out)
        return out

    # ------------------------------------------------------------ MoE
    @staticmethod
    def queue_layout(f: dict) -> tuple[int, int, int]:
        """Byte offsets of counts[E], ids[E][N], scores[E][N] (int32 each)."""
        experts, tokens = f["experts"], f["tokens"]
        counts = f["queue"]
        ids = counts + 4 * experts
        return counts, ids, ids + 4 * experts * tokens

    def moe_gate(self, layer) -> None:
        f = layer.fields
        x_fmt, w_fmt, logit_fmt, score_fmt = (
            decode_fmt(f[k]) for k in ("x_fmt", "w_fmt", "logit_fmt", "score_fmt")
        )
        tokens, dim, experts, top_k = f["tokens"], f["dim"], f["experts"], f["top_k"]
        x = self.read(f["src"], tokens, dim, f["src_stride"])
        w = self.weights(f["weight"], experts, dim, f["w_bytes"])
        tables = self.tables
        fe, ft = tables.exp_frac, tables.recip_frac
        counts = [0] * experts
        ids: list[list[int]] = [[] for _ in range(experts)]
        scores: list[list[int]] = [[] for _ in range(experts)]
        for t in range(tokens):
            logits = [
                q(dot(x[t], w[e]), x_fmt.frac + w_fmt.frac, logit_fmt, self.cov)
                for e in range(experts)
            ]
            top = max(logits)
            d = [tables.exp_neg(v - top, logit_fmt.frac) for v in logits]
            total = 0
            for value in d:
                total += value
            mant, p = tables.recip(total, fe)
            shift = fe + ft + p - score_fmt.frac
            score = [
                apply_overflow(
                    shift_round(v * mant, shift, score_fmt.rounding, self.cov),
                    score_fmt.width,
                    score_fmt.signed,
                    score_fmt.overflow,
                    self.cov,
                )
                for v in d
            ]
            # top-k by logit, largest first; ties to the lower expert index
            chosen: list[int] = []
            for _ in range(top_k):
                best = -1
                for e in range(experts):
                    if e in chosen:
                        continue
                    if best < 0 or logits[e] > logits[best]:
                        best = e
                    elif logits[e] == logits[best]:
                        self.cov["gate.tie"] += 1
                chosen.append(best)
            for e in chosen:
                ids[e].append(t)
                scores[e].append(score[e])
                counts[e] += 1
        counts_at, ids_at, scores_at = self.queue_layout(f)
        self.write(counts_at, 4 * experts, [counts])
        for e in range(experts):
            if counts[e]:
                self.write(ids_at + 4 * tokens * e, 4 * tokens, [ids[e]])
                self.write(scores_at + 4 * tokens * e, 4 * tokens, [scores[e]])
        self._result.queues[layer.name] = {"counts": counts, "ids": ids, "scores": scores}
        return None

    def moe_experts(self, layer) -> list[list[int]]:
        f = layer.fields
        fmt = {k: decode_fmt(f[k]) for k in f if k.endswith("_fmt") and f[k]}
        tokens, dim, hidden, experts = f["tokens"], f["dim"], f["hidden"], f["experts"]
        x = self.read(f["src"], tokens, dim, f["src_stride"])
        counts_at, ids_at, scores_at = self.queue_layout(f)
        counts = self.read(counts_at, 1, experts, 4 * experts)[0]
        f_acc = fmt["score_fmt"].frac + fmt["y_fmt"].frac
        frac1 = fmt["x_fmt"].frac + fmt["fc1_fmt"].frac
        frac2 = fmt["hidden_fmt"].frac + fmt["fc2_fmt"].frac
        acc = [[0] * dim for _ in range(tokens)]
        for e in range(experts):
            count = counts[e]
            if count == 0:
                continue
            if not 0 < count <= tokens:
                raise ContractError(f"expert {e} queue holds {count} tokens")
            ids = self.read(ids_at + 4 * tokens * e, 1, count, 4 * tokens)[0]
            scores = self.read(scores_at + 4 * tokens * e, 1, count, 4 * tokens)[0]
            w1 = self.weights(f["fc1"] + e * f["fc1_stride"], hidden, dim, f["w_bytes"])
            b1 = self.vector(f["fc1_bias"] + e * f["fc1_bias_stride"], hidden)
            w2 = self.weights(f["fc2"] + e * f["fc2_stride"], dim, hidden, f["w_bytes"])
            b2 = self.vector(f["fc2_bias"] + e * f["fc2_bias_stride"], dim)
            for t, score in zip(ids, scores, strict=True):
                act = []
                for j in range(hidden):
                    pre = dot(x[t], w1[j]) << shift_of(b1[j])
                    pre += align(bias_of(b1[j]), fmt["fc1_bias_fmt"].frac, frac1)
                    pre = q(pre, frac1, fmt["pre_fmt"], self.cov)
                    act.append(self.tables.gelu(pre, fmt["pre_fmt"].frac, fmt["hidden_fmt"]))
                for o in range(dim):
                    y = dot(act, w2[o]) << shift_of(b2[o])
                    y += align(bias_of(b2[o]), fmt["fc2_bias_fmt"].frac, frac2)
                    y = q(y, frac2, fmt["y_fmt"], self.cov)
                    acc[t][o] += score * y
        if f["res"] != NONE:
            res = self.read(f["res"], tokens, dim, f["res_stride"])
            for t in range(tokens):
                for o in range(dim):
                    acc[t][o] += align(res[t][o], fmt["res_fmt"].frac, f_acc)
        out = [[q(v, f_acc, fmt["out_fmt"], self.cov) for v in row] for row in acc]
        self.write(f["dst"], f["dst_stride"], out)
        return out


def run_reference(program: Program, input_raw, task: int = 0) -> RefResult:
    return ScalarReference(program).run(input_raw, task)
