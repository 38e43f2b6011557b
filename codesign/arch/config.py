"""ArchConfig: the compile-time shape of the accelerator, and the precision spec.

One ArchConfig is one bitstream: the UCU tile, the attention parallelism, the DDR bus
width, the lookup-table sizes and the maximum model sizes the on-chip buffers hold.
Every Program compiled for an ArchConfig runs on it unchanged.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import asdict, dataclass, fields, replace

from ..numerics.tables import GELU_KINDS

# DSP48E2 multiplier ports: one MAC per DSP while both operands fit.
DSP_ACTIVATION_BITS = 27
DSP_WEIGHT_BITS = 18
# products of up to 48 bits summed over <= 2**14 inputs stay below 2**62 (int64 / ap_int<64>)
MAX_PRODUCT_BITS = 48


@dataclass(frozen=True)
class Precision:
    """Bit widths of weights and activations (``w16a24``); formats are set by calibration.

    ``residual_bits`` (``w8a8r16``): the residual stream (patch embedding, embedding and
    every residual add's output: what LayerNorm and the next add read) at that width,
    every other activation, the operands of every multiply, at ``activation_bits``. At
    8 bits the re-quantisation of the residual stream in every block is where an 8-bit
    ViT loses most (docs/quantization.md); widening it keeps the multiplies at 8 bits."""

    weight_bits: int = 16
    activation_bits: int = 24
    residual_bits: int | None = None  # None: activation_bits

    def __post_init__(self) -> None:
        if not 2 <= self.weight_bits <= 32:
            raise ValueError(f"weight width {self.weight_bits} outside 2..32 bits")
        if not 4 <= self.activation_bits <= 32:
            raise ValueError(f"activation width {self.activation_bits} outside 4..32 bits")
        if self.weight_bits + self.activation_bits > MAX_PRODUCT_BITS:
            raise ValueError(
                f"w{self.weight_bits}a{self.activation_bits}: weight + activation bits must be "
                f"<= {MAX_PRODUCT_BITS} so every accumulator fits 64 bits"
            )
        if self.residual_bits == self.activation_bits:
            object.__setattr__(self, "residual_bits", None)  # one spelling per precision
        if self.residual_bits is not None and not (self.activation_bits < self.residual_bits <= 32):
            raise ValueError(
                f"residual width {self.residual_bits} must be wider than the activations' "
                f"{self.activation_bits} bits and at most 32"
            )

    @property
    def stream_bits(self) -> int:
        """The residual stream's width: the widest activation the engines carry."""
        return self.residual_bits or self.activation_bits

    @property
    def dsp_per_mac(self) -> int:
        """DSP48E2 slices one multiply of this precision costs (27x18 per slice)."""
        small, large = sorted((self.weight_bits, self.activation_bits))
        if small <= DSP_WEIGHT_BITS and large <= DSP_ACTIVATION_BITS:
            return 1
        return 2 if small <= DSP_WEIGHT_BITS or large <= DSP_ACTIVATION_BITS else 4

    def __str__(self) -> str:
        residual = f"r{self.residual_bits}" if self.residual_bits else ""
        return f"w{self.weight_bits}a{self.activation_bits}{residual}"


_PRECISION_RE = re.compile(r"^w(\d+)a(\d+)(?:r(\d+))?$")


def parse_precision(spec: str | Precision | None) -> Precision:
    """Parse ``w16a24`` style specs (weights first, then activations)."""
    if spec is None:
        return Precision()
    if isinstance(spec, Precision):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"precision must be a string like 'w16a24' or a Precision, got {spec!r}")
    match = _PRECISION_RE.match(spec.strip().lower())
    if not match:
        raise ValueError(
            f"precision {spec!r} is not of the form wNaM[rK] (e.g. w16a24, w8a16, w8a8r16): "
            "N = weight bits, M = activation bits, K = the residual stream's bits"
        )
    residual = int(match.group(3)) if match.group(3) else None
    return Precision(int(match.group(1)), int(match.group(2)), residual)


WEIGHT_PORT_CHOICES = (1, 2, 4)  # AXI masters for weights (Board.weight_ports_max bounds it)

# what the on-chip buffers and 16-bit descriptor fields can hold (inclusive); the table
# fields are checked where the tables are built (numerics.tables)
_FIELD_RANGES = (
    ("max_tokens", 1, 65535),
    ("max_dim", 1, 65535),
    ("max_hidden", 1, 65535),
    ("max_experts", 0, 64),  # 0: no MoE engine (a plain ViT's design)
    ("max_heads", 1, 64),
    ("max_in_dim", 1, 65535),
    ("arena_window_kib", 0, 16384),
)


def output_lanes(width: int, bus_bits: int) -> int:
    """Lanes of an output stage (requantise / post-op) that handles `width` values a row:
    the int32 words one bus beat carries, at most `width`, halved until they divide it.
    A row then passes the stage in as many cycles as its writes take on the bus, so wider
    lanes would buy nothing but LUTs. The UCU drain, attention's output, LayerNorm's
    normalise pass and the MoE final pass all follow this."""
    lanes = max(1, min(width, bus_bits // 32))
    while width % lanes:
        lanes //= 2
    return lanes


# pipeline latencies (cycles) of the RTL's shared units: the units built on them and the
# estimator count their stages from here
RTL_LATENCY = {"requant": 2, "requant_pipe": 7}
RTL_LATENCY["gelu"] = 6 + RTL_LATENCY["requant_pipe"]  # interpolation, then requantise
RTL_LATENCY["exp"] = 5  # segment, table read, D * r, its shift, the add
RTL_LATENCY["recip"] = RTL_LATENCY["rsqrt"] = 5  # leading one, normalise, table, D * r, the add
# the UCU drain: aligned operands, their sum, requantise, GELU (or its bypass), score
# product, collect
RTL_LATENCY["ucu_drain"] = 5 + RTL_LATENCY["requant_pipe"] + RTL_LATENCY["gelu"]
MAC_PACK_BITS = 8  # weights and activations this narrow: two MACs share one DSP multiply


def drain_chunks(tile_out: int, bus_bits: int) -> int:
    """Cycles one output row spends in the UCU's drain (tile_out / output_lanes)."""
    return tile_out // output_lanes(tile_out, bus_bits)


@dataclass(frozen=True)
class ArchConfig:
    """Compile-time parameters of the accelerator (HLS templates and RTL render from these)."""

    tile_in: int = 32  # Ti: input features per UCU tile
    tile_out: int = 32  # To: output features per UCU tile (Ti*To MACs)
    attn_parallel: int = 8  # P: query slots in the reordered attention
    # lanes of a head row the attention datapath takes per cycle (0: the whole row,
    # max_dim // max_heads); fewer lanes trade cycles (ceil(head_dim / lanes) per key)
    # for multipliers, adders and the qkv buffer's rotators
    attn_lanes: int = 0
    bus_bits: int = 128  # AXI data width of the DDR masters
    # AXI masters the weight tiles stream over (the program master and weight_ports - 1
    # more, each on its own PS port): a weight beat is weight_ports x bus_bits wide
    weight_ports: int = 1
    # the on-chip arena window (KiB, 0: none): arena offsets below it live in block RAM
    # (UltraRAM where the part has it) next to the engines instead of DDR; the compiler's
    # memory plan puts the buffers only the kernel touches there and spills the rest
    arena_window_kib: int = 0
    # lanes of the UCU's drain (requantise / GELU / score; 0: a bus beat's words, what the
    # arena master's writes take a cycle; at most tile_out: more mean tile_out). More pay
    # off only with the window's row port: an output tile row the UCU writes into the
    # window goes in one cycle, not its beats; LayerNorm's normalise pass then has as many
    # lanes (norm_lanes), its rows going through the same port
    drain_lanes: int = 0
    # lanes of LayerNorm's normalise pass (0: the drain's where the window has its y port,
    # else a bus beat's words; at most tile_in: more mean tile_in). With the y port a
    # normalised row leaves an output tile row (tile_out words) a write, so up to tile_out
    # lanes pay off; the lanes' multiplies and requantisers are in LUTs and DSPs
    layernorm_lanes: int = 0
    # lanes of the MoE experts' final pass (the exact sums plus the residual, requantised;
    # 0: a bus beat's words; at most tile_out: more mean tile_out). With the window's row
    # ports a token's output tile goes out in one y write and its residual comes in one x
    # read, so up to tile_out lanes pay off; over the bus a tile takes its beats anyway
    moe_final_lanes: int = 0
    # lookup tables (see docs/numerics-tables.md)
    gelu_index_bits: int = 8
    gelu_range: float = 8.0
    exp_index_bits: int = 10
    exp_range: float = 16.0
    recip_index_bits: int = 8
    rsqrt_index_bits: int = 7
    table_guard_bits: int = 10
    table_width: int = 17
    gelu: str = "erf"  # the GELU table's function: "erf" (nn.GELU) or "tanh" (approximate)
    # largest model the on-chip buffers hold; max_experts 0 builds no MoE engine (its
    # LUTs are a fifth of a Zynq-7020), and a Program with an MoE op then fails the check
    max_tokens: int = 256
    max_dim: int = 512
    max_hidden: int = 2048
    max_experts: int = 16
    max_heads: int = 8
    max_in_dim: int = 1024

    def __post_init__(self) -> None:
        if self.gelu not in GELU_KINDS:
            raise ValueError(f"ArchConfig.gelu={self.gelu!r} must be one of {GELU_KINDS}")
        for spec in fields(self):
            value, kind = getattr(self, spec.name), type(spec.default)
            if kind is str:
                continue
            wanted = numbers.Integral if kind is int else numbers.Real
            if isinstance(value, bool) or not isinstance(value, wanted):
                noun = "an integer" if kind is int else "a number"
                raise ValueError(f"ArchConfig.{spec.name} must be {noun}, got {value!r}")
        for name in ("tile_in", "tile_out", "attn_parallel"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"ArchConfig.{name}={value} must be a power of two >= 1")
        for name, derived in (
            ("attn_lanes", "the whole head row"),
            ("drain_lanes", "a bus beat's words"),
            ("layernorm_lanes", "the drain's, or a bus beat's words"),
            ("moe_final_lanes", "a bus beat's words"),
        ):
            value = getattr(self, name)
            if not 0 <= value <= 256 or value & (value - 1):
                raise ValueError(
                    f"ArchConfig.{name}={value} must be 0 ({derived}) or a power of two up to 256"
                )
        if self.bus_bits not in (32, 64, 128, 256, 512):
            raise ValueError(f"ArchConfig.bus_bits={self.bus_bits} must be 32..512, a power of 2")
        if self.weight_ports not in WEIGHT_PORT_CHOICES:
            raise ValueError(
                f"ArchConfig.weight_ports={self.weight_ports} must be one of "
                f"{', '.join(map(str, WEIGHT_PORT_CHOICES))} (a weight beat is a power of two "
                "bus beats)"
            )
        for name, low, high in _FIELD_RANGES:
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"ArchConfig.{name}={value} must be in {low}..{high}")
        if self.max_dim < self.max_heads:
            raise ValueError(
                f"ArchConfig.max_dim={self.max_dim} must be at least max_heads={self.max_heads}"
            )

    @property
    def bus_bytes(self) -> int:
        return self.bus_bits // 8

    @property
    def has_moe(self) -> bool:
        """Whether the design has the MoE engine (and the HLS kernel its MoE ops)."""
        return self.max_experts > 0

    @property
    def arena_window_bytes(self) -> int:
        """Bytes of the on-chip arena window (0: the whole arena is in DDR)."""
        return self.arena_window_kib * 1024

    @property
    def weight_beat_bytes(self) -> int:
        """Bytes of weights one beat of all weight masters carries (tiles pad to this)."""
        return self.weight_ports * self.bus_bytes

    @property
    def output_lanes(self) -> int:
        """Lanes of the UCU's requantise / post-op datapath: ``drain_lanes``, or by
        default a bus beat's words (see ``output_lanes``)."""
        if self.drain_lanes:
            return min(self.drain_lanes, self.tile_out)
        return output_lanes(self.tile_out, self.bus_bits)

    @property
    def drain_chunks(self) -> int:
        """Cycles one output row spends in the UCU's drain (tile_out / ``output_lanes``)."""
        return self.tile_out // self.output_lanes

    @property
    def window_banks(self) -> int:
        """Bus beats a row of the window's RAM holds (tile_in words; 1: no window, or
        tile_in no wider than a beat): above 1 the window has its row ports."""
        if not self.arena_window_bytes:
            return 1
        return max(1, 32 * self.tile_in // self.bus_bits)

    @property
    def y_port(self) -> bool:
        """Whether the window has a row port for the UCU's output rows: a window of RAM rows
        wider than a bus beat (the x port's) and a drain with more lanes than a beat has
        words, so an output tile row is ready to go in one write."""
        return (
            self.window_banks > 1
            and self.output_lanes > self.bus_bits // 32
            and self.tile_out <= self.tile_in
        )

    @property
    def norm_lanes(self) -> int:
        """Lanes of LayerNorm's normalise pass: ``layernorm_lanes`` (at most tile_in, its
        sum lanes), else the drain's where the window has its y port (a normalised row
        leaves as output tile rows, one write a cycle), else a bus beat's words
        (``output_lanes``: its rows leave a beat a cycle)."""
        if self.layernorm_lanes:
            return min(self.layernorm_lanes, self.tile_in)
        if self.y_port:
            return self.output_lanes
        return output_lanes(self.tile_in, self.bus_bits)

    @property
    def final_lanes(self) -> int:
        """Lanes of the MoE experts' final pass: ``moe_final_lanes`` (at most tile_out, a
        tile's words), else a bus beat's words (``output_lanes``), what its tiles take over
        the bus."""
        if self.moe_final_lanes:
            return min(self.moe_final_lanes, self.tile_out)
        return output_lanes(self.tile_out, self.bus_bits)

    @property
    def macs(self) -> int:
        return self.tile_in * self.tile_out

    @property
    def max_head_dim(self) -> int:
        """Widest attention head: the RTL attention core has this many lanes, so every
        executor refuses a head with more features (dim / heads)."""
        return self.max_dim // self.max_heads

    @property
    def attention_lanes(self) -> int:
        """Lanes the attention datapath handles per cycle: ``attn_lanes``, at most (and by
        default) the widest head."""
        return min(self.attn_lanes or self.max_head_dim, self.max_head_dim)

    @property
    def header_attn_lanes(self) -> int:
        """``attn_lanes`` as a Program compiled for this ArchConfig records it: 0 when the
        datapath takes whole head rows."""
        return self.attn_lanes if self.attention_lanes < self.max_head_dim else 0

    def with_(self, **changes) -> ArchConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ArchConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ArchConfig fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def table_params(self) -> dict:
        """Keyword arguments for ``numerics.tables.build_tables``."""
        return {
            "gelu_index_bits": self.gelu_index_bits,
            "gelu_range": self.gelu_range,
            "exp_index_bits": self.exp_index_bits,
            "exp_range": self.exp_range,
            "recip_index_bits": self.recip_index_bits,
            "rsqrt_index_bits": self.rsqrt_index_bits,
            "guard_bits": self.table_guard_bits,
            "table_width": self.table_width,
            "gelu": self.gelu,
        }


# Each board's default ArchConfig: the pick of `codesign explore --model m3vit --board B
# --verify 0` (m3vit at w16a24; the Ultra96-V2 at w8a16, the only precision at which m3vit
# fits it) by the Yosys-calibrated resource model within the fit margins, DDR model at
# 80 % of the board's peak (docs/explore.md), kept where the pick's whole-top synthesis
# (benchmarks/bench_synth.py) is within the fit margins, else the next point down the
# front: the Ultra96-V2's pick (one slot of 16 lanes) synthesised to 87.9 % of the LUTs.
# The PYNQ-Z2's holds no m3vit at a precision that keeps its accuracy (w8a16: BRAM36 180
# of 140 even at 4x4 with buffers sized to it, by the xc7 calibration trusted since
# stop 48); a build shrinks it to the model: digits-vit, the largest registered model it
# holds, gets 4x8 with one slot of 8 lanes and no MoE engine, 44,389 LUT (83.4 %) in
# Yosys. The build sizes the buffers to its model.
# The on-chip window (arena_window_kib) is the most a build gives it: the build cuts it to
# what the model's memory plan places there (codesign.dse.sized_window; m3vit: 580.5 KiB
# of activations, the input rows and outputs stay in DDR). The Ultra96-V2 and PYNQ-Z2
# have no block RAM to spare for it; on the KV260 its logic (and the x port's) took the
# whole top past the 85 % LUT margin in Yosys (100,354 LUT, 85.7 %, without the x port).
# Attention lanes: at most half a head (m3vit's heads are 64 wide), so a key takes two
# cycles of its lanes and the running sum's two-cycle update costs nothing; P2 x 64 (the
# searched shape before the update took two cycles) now idles every other cycle, and
# P4 x 32 has the same MACs in fewer LUTs (ZCU102 whole top in Yosys: 215,724 LUT
# against 224,505). The ZCU102's UCU drains 8 lanes wide into the window's y port
# (drain_lanes): m3vit 7.77 -> 7.29 ms on the RTL for 230,725 LUT (84.2 %, +15.0 k);
# with LayerNorm on the row ports as well, 7.03 ms at 227,590 LUT (83.0 %). The ZCU104's
# does too since LayerNorm's gearboxes shrank: 8.60 ms on the RTL (8.75 by the estimate
# without), 191,201 LUT (83.0 %, +22.6 k), UCU busy 53.5 %.
BOARD_DEFAULTS = {
    "zcu102": {"tile_in": 32, "tile_out": 32, "attn_parallel": 4, "attn_lanes": 32,
               "weight_ports": 4, "arena_window_kib": 1024, "drain_lanes": 8},
    "zcu104": {"tile_in": 32, "tile_out": 16, "attn_parallel": 4, "attn_lanes": 32,
               "weight_ports": 4, "arena_window_kib": 1024, "drain_lanes": 8},
    "kv260": {"tile_in": 16, "tile_out": 16, "attn_parallel": 4, "attn_lanes": 8,
              "bus_bits": 64, "weight_ports": 4},
    "ultra96v2": {"tile_in": 8, "tile_out": 8, "attn_parallel": 1, "attn_lanes": 8,
                  "bus_bits": 64},
    # Zynq-7000: 64-bit HP ports (Board.hp_port_bits)
    "pynq-z2": {"tile_in": 8, "tile_out": 16, "attn_parallel": 2, "bus_bits": 64},
}  # fmt: skip


# A board's default precision where m3vit does not fit it at w16a24: the Ultra96-V2 holds
# it only with 8-bit weights (m3vit at w8a16: cosine 0.9999 vs torch, docs/quantization.md)
BOARD_PRECISION = {"ultra96v2": "w8a16"}

# Models with defaults of their own, from the same search for that model (`codesign explore
# --model M --board B --verify 0`, docs/explore.md) and kept, like BOARD_DEFAULTS, only
# once the whole top synthesised within the fit margins: model -> board -> fields (and
# precision). Any other model, and a board missing here, gets the board's (m3vit's at the
# board's precision: BOARD_DEFAULTS, or PRECISION_DEFAULTS at a precision of its own).
# vit-tiny: on the KV260 m3vit's default does not hold its 197 tokens and the build shrank
# it to a 4x4 UCU (370.7 ms); the pick (32x8, P2 x 16: 51.3 ms) synthesised to 85.1 % of
# the LUTs and 89.9 % of the block RAM, P8 x 8 to 95 %, so the default is the next point
# with room (32x4, P2 x 16: 68.0 ms, 78.4 % LUT). On the ZCU102 and ZCU104 m3vit's
# defaults are within 1.6 % and 0.4 % of the vit-tiny picks and stay. On the Ultra96-V2
# vit-tiny fits at w8a8 only, which keeps cosine 0.87 vs torch: no default there.
MODEL_DEFAULTS: dict[str, dict[str, dict]] = {
    "vit-tiny": {
        "kv260": {"tile_in": 32, "tile_out": 4, "attn_parallel": 2, "attn_lanes": 16,
                  "bus_bits": 64},
    },
}  # fmt: skip
# m3vit on the ZCU102 at w16a16 (PRECISION_DEFAULTS below): cosine 0.9999999 and rel RMS
# 0.04 % vs torch on the seeded m3vit, the m3vit trained on digit scenes at its float
# accuracy (docs/quantization.md); 5.70 ms on the RTL against 6.91 ms at w16a24. Other
# models keep the board's precision until their accuracy at 16-bit activations is measured.
MODEL_PRECISION: dict[str, dict[str, str]] = {"m3vit": {"zcu102": "w16a16"}}

# Defaults for a precision the user asks for where the board's own default leaves the
# freed resources unused (narrower activations and weights take fewer LUTs and DSPs), from
# `codesign explore --model m3vit --board B --precision P --verify 0` and kept, like
# BOARD_DEFAULTS, once the whole top synthesised within the fit margins: board ->
# precision -> fields. Models with defaults of their own (MODEL_DEFAULTS) keep theirs.
# ZCU102 at w8a16: the pick (64x16 UCU, P4 x 64 lanes; 5.40 ms by the estimate against
# 6.65 ms on the w16a24 default) synthesised to 203,947 LUT (74.4 %), 1,403 DSP; its
# attention as P8 x 32 (half a head of lanes, as above). ZCU102 at w8a8r16: the same
# shape, its UCU two MACs per DSP: 210,141 LUT (76.7 %), 907 DSP (36 %), 727.5 BRAM36
# (79.8 %; the buffers keep the base's maxima, which fit) in Yosys. Both drain 8 lanes
# wide into the window's y port: w8a16 223,084 LUT (81.4 %), w8a8r16 222,900 (81.3 %),
# 915 DSP; m3vit 5.62 -> 5.14 ms at w8a8r16 on the RTL.
# ZCU102 at w16a16 (16-bit activations, cosine 0.9999999 vs torch on the seeded m3vit):
# the w8a16 shape, its products 16 x 16: 217,491 LUT (79.4 %), 1,435 DSP in Yosys at
# 7.0 levels; m3vit 5.70 ms on the RTL against 6.91 ms at w16a24 on the board's default
# (at w16a16 that default gains nothing: 6.85 ms by the estimate).
# Not kept: a 64x32 UCU at w8a8r16 (4.18 ms on the RTL, 4.09 by the estimate, against
# 4.76 / 4.66 on 64x16): 235,022 LUT in Yosys with its buffers sized to m3vit, 85.7 %,
# 2,054 LUT over the margin (the calibrated model said 224,417, 81.9 %); with the base's
# buffers 240,317 (87.7 %). Summing four packed products before splitting them (an
# offset instead of a borrow adder per product) made that UCU larger, not smaller:
# 96,307 LUT against 82,468.
# LayerNorm's normalise pass on 16 lanes (layernorm_lanes; the drain's 8 before), at
# w16a16: m3vit 5.70 -> 5.58 ms on the RTL (LayerNorm 94.5 k -> 57.5 k cycles) for 12.8 k
# LUT, 230,268 LUT (84.0 %), 1,459 DSP, 7.0 levels in Yosys; at w8a8r16: 4.76 -> 4.64 ms,
# 222,434 LUT (81.2 %), 963 DSP, 7.0 levels. w8a16 keeps 8 (not synthesised with 16).
# the ZCU102's shape at 16-bit or narrower activations (w8a16's pick, above)
_ZCU102_64X16 = {"tile_in": 64, "tile_out": 16, "attn_parallel": 8, "attn_lanes": 32,
                 "weight_ports": 4, "arena_window_kib": 1024, "drain_lanes": 8}  # fmt: skip
# The MoE experts' final pass on 8 lanes over the window's row ports (moe_final_lanes; a
# beat's 4 over the bus before), at w8a8r16: m3vit 4.64 -> 4.58 ms on the RTL (MoE experts
# 399.4 k -> 380.8 k cycles, UCU busy 49.6 -> 50.2 %), 227,998 LUT (83.2 %, the MoE engine
# +5.5 k), 7.0 levels in Yosys; 16 lanes were 4.55 ms but 237,193 LUT (86.5 %, over the
# margin). w16a16 keeps 4: its top has ~2.7 k LUT left below the margin.
_ZCU102_64X16_LN16 = {**_ZCU102_64X16, "layernorm_lanes": 16}
PRECISION_DEFAULTS: dict[str, dict[str, dict]] = {
    "zcu102": {"w8a16": _ZCU102_64X16, "w16a16": _ZCU102_64X16_LN16,
               "w8a8r16": {**_ZCU102_64X16_LN16, "moe_final_lanes": 8}},
}  # fmt: skip


def default_precision(board_name: str, model: str | None = None) -> Precision:
    """The precision a build of `model` (a registered name) on this board gets unless the
    user chooses one."""
    own = MODEL_PRECISION.get(model or "", {})
    spec = own.get(board_name, BOARD_PRECISION.get(board_name, str(Precision())))
    return parse_precision(spec)


def default_arch(board_name: str, model: str | None = None,
                 precision: str | Precision | None = None) -> ArchConfig:  # fmt: skip
    """The ArchConfig a build of `model` (a registered name; None or any other: the
    board's) at `precision` (None: the model's default precision on this board,
    ``default_precision``) gets unless the user chooses one (``MODEL_DEFAULTS``, else
    ``PRECISION_DEFAULTS``, else ``BOARD_DEFAULTS``)."""
    own = MODEL_DEFAULTS.get(model or "", {})
    if board_name in own:
        return ArchConfig(**own[board_name])
    if precision is None:
        precision = default_precision(board_name, model)
    fields = PRECISION_DEFAULTS.get(board_name, {}).get(str(parse_precision(precision)))
    return ArchConfig(**(fields if fields is not None else BOARD_DEFAULTS.get(board_name, {})))
