"""The memories of the open RTL per unit, and the block RAM a synthesis maps them to.

Block RAM does not grow with a memory's bits: a memory takes whole RAMB18/RAMB36
primitives in one of their aspect ratios (16K x 1 ... 512 x 36 for a RAMB18), a second
read port doubles it, and a shallow one goes to LUTRAM instead. A linear fit in buffer
bits cannot follow that (it was 87 % off on held-out runs), so the resource model counts
block RAM structurally: :func:`inventory` lists each memory ``codesign_top`` declares
that can land in block RAM (width, depth, ports, instances, from the same ArchConfig
arithmetic the templates use; a test compares it with the memories Yosys infers from the
rendered RTL), and :func:`blocks` picks, as Yosys's ``memory_libmap`` does, the cheapest
of the block-RAM configurations and LUTRAM by the library's costs. Memories below
``MIN_DEPTH`` words and the FIFOs and register files of a few dozen words are LUTRAM or
flip-flops and are left to the fitted LUT/FF terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# (cost, {width: depth}) of the block-RAM primitives as Yosys's Xilinx library offers them
# (brams_xc*.txt: RAMB18 cost 129, RAMB36 257; true dual port up to 18 / 36 bits, simple
# dual port twice as wide); the same aspect ratios on 7-series and UltraScale+
_RAMB18 = (129, {1: 16384, 2: 8192, 4: 4096, 9: 2048, 18: 1024})
_RAMB36 = (257, {1: 32768, 2: 16384, 4: 8192, 9: 4096, 18: 2048, 36: 1024})
_SDP_WIDE = {18: (36, 512), 36: (72, 512)}  # RAMB18 / RAMB36 as one write + one read port
# LUTRAM (lutrams_xcu.txt / lutrams_xc5v.txt): cost per primitive and the width of one
# primitive per address width, as dual port (RAM32M/RAM64M/RAM128X1D/RAM256X1D) and as
# simple dual port (RAM32M16/RAM64M8 on UltraScale+, RAM32M/RAM64M on 7-series)
_LUTRAM = {
    "xcup": ((16, {5: 8, 6: 4, 7: 2, 8: 1}), (16, {5: 14, 6: 7})),
    "xc7": ((8, {5: 4, 6: 2, 7: 1}), (8, {5: 6, 6: 3})),
}
# UltraRAM (urams.txt, parts that have it and ``synth_xilinx -uram``): URAM288, 4K x 72
# only, two ports that each read or write, no initial contents
_URAM = (1024, 72, 4096)
MIN_DEPTH = 64  # shallower memories are LUTRAM or registers whatever their width
# what one ROM bit costs as logic, in the library's cost units: a ROM whose bits cost less
# than its block RAM becomes LUTs (256-entry function tables do; 1,024-entry ones do not)
ROM_BIT_COST = 1 / 64


@dataclass(frozen=True)
class Memory:
    """One memory of a unit: `count` copies of `depth` words of `width` bits."""

    unit: str
    name: str
    width: int
    depth: int
    reads: int = 1  # read ports (a ROM read by two lanes has 2)
    rom: bool = False
    count: int = 1
    # read without a clock edge: block RAM cannot (LUTRAM, or registers and multiplexers
    # when it has more read ports than LUTRAM either)
    async_read: bool = False
    # one read port shares the write port's address (they never run in the same cycle):
    # with a second reader it is one true-dual-port RAM, not a copy per reader
    rw_port: bool = False
    block: bool = False  # marked ram_style "block": block RAM whatever it costs
    # written a 32-bit word at a time (a write enable per word): block RAM then keeps 8
    # data bits of each 9-bit byte (a RAMB36 holds 64 bits a row, not 72)
    word_enables: bool = False


@lru_cache(maxsize=256)
def _varying_bits(words: tuple[int, ...]) -> int:
    width = max(words, default=0).bit_length()
    if not words or not width:
        return 0
    columns = set()
    for start in range(0, width, 64):  # 64-bit slices of the words, one column per bit
        part = np.array([(word >> start) & (2**64 - 1) for word in words], dtype=np.uint64)
        bits = (part[:, None] >> np.arange(min(64, width - start), dtype=np.uint64)) & 1
        packed = np.packbits(bits.astype(np.uint8), axis=0).T
        columns |= {row.tobytes() for row in packed if row.any() and not _all_ones(row, words)}
    return len(columns)


def _all_ones(packed_column, words) -> bool:
    """Whether a packed column is 1 in every one of the len(words) rows."""
    return bool(np.unpackbits(packed_column)[: len(words)].all())


def varying_bits(words) -> int:
    """Bit columns of a ROM that synthesis keeps: not the same in every word, and one of
    each set of identical columns."""
    return _varying_bits(tuple(int(word) for word in words))


def _bram_cost(width: int, depth: int, reads: int, true_dual: bool,
               word_enables: bool = False) -> tuple[int, float]:  # fmt: skip
    """(cost, BRAM36) of the cheapest block-RAM mapping of one copy."""
    best = None
    # a RAM with one write port and R read ports is R simple-dual-port copies; a ROM's two
    # read ports, or a read port on the write's address and one more, are the two ports of
    # one true-dual-port primitive
    copies = 1 if true_dual and reads <= 2 else reads
    for cost, ratios, size in ((*_RAMB18, 0.5), (*_RAMB36, 1.0)):
        shapes = dict(ratios)
        if not true_dual:  # each copy is one write + one read port: simple dual port
            top = max(ratios)
            wide, deep = _SDP_WIDE[top]
            shapes[wide] = deep
        for shape_width, shape_depth in shapes.items():
            if word_enables:
                if shape_width < 32 - 32 // 9:  # narrower than a word: no use for enables
                    continue
                shape_width -= shape_width // 9
            n = math.ceil(width / shape_width) * math.ceil(depth / shape_depth) * copies
            if best is None or n * cost < best[0]:
                best = (n * cost, n * size)
    return best


def _lutram_cost(width: int, depth: int, reads: int, family: str, rw_port: bool = False
                 ) -> float:  # fmt: skip
    """Cost of one write and `reads` read ports in LUTRAM: a copy per reader, primitives of
    one address width side by side (pro rata of the bits used, the library's
    ``widthscale``) and deep ones one after another behind a multiplexer, the cheapest
    kind and address width. `rw_port` with two readers: one copy of the dual-port kind
    (read/write + read), as Yosys maps it (measured: a 192 x 24 bank is then a RAMB18 pair
    on xcup, where the simple-dual-port kind would be cheaper, and LUTRAM at 8 bits on xc7)."""
    best = math.inf
    kinds = _LUTRAM[family]
    if rw_port and reads == 2:
        kinds, reads = kinds[:1], 1
    for cost, widths in kinds:
        for abits, prim_width in widths.items():
            slices = math.ceil(depth / 2**abits)
            # primitives, then the read multiplexers over the slices and the write decode
            # as libmap scores them (half a unit per multiplexed bit, one per slice)
            muxes = 0.5 * width * reads * (slices - 1) + (slices if slices > 1 else 0)
            best = min(best, cost * slices * width / prim_width * reads + muxes)
    return best


def mapped(memory: Memory, family: str = "xcup", uram: bool = False) -> tuple[float, int]:
    """(BRAM36, URAM288) that `memory` takes, all its copies: the cheapest of block RAM,
    LUTRAM (or logic, for a ROM) and, on a part with UltraRAM (`uram`), URAM288."""
    if memory.depth < MIN_DEPTH or memory.async_read or memory.reads > 2:
        return 0.0, 0
    cost, bram36 = _bram_cost(memory.width, memory.depth, memory.reads,
                              memory.rom or memory.rw_port, memory.word_enables)  # fmt: skip
    best = (cost, bram36, 0)
    if memory.block:
        return bram36 * memory.count, 0
    if memory.rom:
        soft = memory.width * memory.depth * ROM_BIT_COST
    else:
        # a read port on the write's address and one more: one copy of the dual-port
        # primitives (read/write + read), not the simple-dual-port ones
        soft = _lutram_cost(memory.width, memory.depth, memory.reads, family, memory.rw_port)
    if soft < best[0]:
        best = (soft, 0.0, 0)
    if uram and not memory.rom:
        tile_cost, tile_width, tile_depth = _URAM
        # a write and a read port are the primitive's two; a second reader needs a copy
        # even on the write's port: URAM's read/write port keeps its output while it
        # writes, and the RTL's shared ports read on every cycle (so Yosys cannot merge)
        copies = memory.reads
        # whole 72-bit columns, then the rest of the width folded: several of its slices a
        # 72-bit row, each on its own 8- or 9-bit write enables (a 25-bit, 5,184-word score
        # bank is one URAM of 2 x 2,592; a 384-bit row buffer 5 columns + one folded)
        columns, rest = divmod(memory.width, tile_width)
        tiles = columns * math.ceil(memory.depth / tile_depth)
        if rest:
            fold = max(tile_width // (math.ceil(rest / byte) * byte) for byte in (8, 9))
            tiles += math.ceil(memory.depth / (tile_depth * fold))
        if tiles * copies * tile_cost < best[0]:
            best = (tiles * copies * tile_cost, 0.0, tiles * copies)
    return best[1] * memory.count, best[2] * memory.count


def blocks(memory: Memory, family: str = "xcup", uram: bool = False) -> float:
    """BRAM36 (RAMB36 + RAMB18 / 2) that `memory` takes, all its copies."""
    return mapped(memory, family, uram)[0]


@lru_cache(maxsize=64)
def _engine_rom(params: tuple) -> tuple[int, int]:
    """(words, kept bits) of the controller's rule-engine ROM for these check constants."""
    from ..ops import microcode

    words = microcode.image(dict(params)).words
    return len(words), varying_bits(words)


def _rom(unit: str, name: str, rom, lanes: int) -> Memory:
    """A function table of `lanes` lanes: one two-port ROM per pair of lanes."""
    mask = (1 << rom.diff_bits) - 1
    words = [((diff & mask) << rom.width) | base for base, diff in rom.words]
    return Memory(unit, name, varying_bits(words), rom.n_segments, reads=2, rom=True,
                  count=(lanes + 1) // 2)  # fmt: skip


def attention_banks(lanes: int, words_per_beat: int, x_words: int = 0) -> int:
    """The attention engine's q/k/v banks: a power of two, at least its lanes, a beat and
    a row of the window's x port (`x_words`, 0: none), so a row or beat is one write."""
    return 2 ** (max(2, lanes, words_per_beat, x_words) - 1).bit_length()


def inventory(arch, precision=None) -> list[Memory]:
    """The memories of ``codesign_top`` rendered for `arch` that may map to block RAM."""
    from ..rtl.render import build_tables, rom_info, rtl_check_params, rtl_params

    p = rtl_params(arch, precision)
    tables = {name: rom_info(t) for name, t in build_tables(**arch.table_params()).items()}
    x, tokens, to = p["x_bits"], arch.max_tokens, arch.tile_out
    x_mul = p["mul_x_bits"]  # the UCU's row buffer keeps what its multipliers take
    wpb = arch.bus_bits // 32
    # attention: q/k/v rows striped over NB one-activation banks, two read ports each
    banks = p["attn_banks"]
    slots = arch.attn_parallel
    rounds = -(-tokens // slots)
    # MoE: the logits buffer {row, expert tile}, the accumulator {token, dim tile}
    expert_tiles = -(-arch.max_experts // to)
    dim_tiles = -(-arch.max_dim // to)
    expert_bits = max(1, (arch.max_experts - 1).bit_length())
    queue_depth = 1 << (expert_bits + max(1, (-(-tokens // wpb) - 1).bit_length()))
    engine_words, engine_bits = _engine_rom(
        tuple(sorted(rtl_check_params(arch, precision).items()))
    )
    col_depth = -(-(p["max_out_tiles"] * p["max_in_tiles"]) // wpb)
    norm_beats = -(-arch.max_dim // arch.tile_in)
    param_bits = p["norm_param_bits"]
    row_fifo = max(4, 2 ** (norm_beats + 1).bit_length())
    memories = [
        Memory("cds_ucu_job", "row buffer", arch.tile_in * x_mul, tokens * p["max_in_tiles"]),
        Memory("cds_ucu_job", "accumulator bank", to * p["acc_bits"], tokens, count=2),
        Memory("cds_ucu_job", "column pointers", wpb * p["in_tile_bits"], col_depth),
        # biases: a bus beat a row, in To/WPB banks when an output tile spans several beats
        Memory(
            "cds_ucu_job",
            "biases",
            arch.bus_bits,
            p["max_out_tiles"] if to > wpb else -(-(p["max_out_tiles"] * to) // wpb),
            count=max(1, to // wpb),
        ),
        _rom("cds_ucu_job", "GELU table", tables["gelu_delta"], p["drain_lanes"]),
        Memory(
            "cds_eng_attention",
            "q/k/v bank",
            x,
            tokens * -(-3 * arch.max_dim // banks),
            reads=2,
            count=banks,
            rw_port=True,  # LOAD writes and RUN's q reads share a port
        ),
        Memory("cds_eng_attention", "score bank", x + 1, rounds * tokens, count=slots),
        # each query row's running maximum, reciprocal mantissa and exponent
        Memory("cds_eng_attention", "row maxima", x, tokens),
        Memory("cds_eng_attention", "row reciprocals", tables["recip"].width, tokens),
        Memory("cds_eng_attention", "row exponents", 8, tokens),
        _rom("cds_eng_attention", "exp table", tables["exp"], slots),
        _rom("cds_eng_attention", "reciprocal table", tables["recip"], 1),
        _rom("cds_eng_layernorm", "rsqrt table", tables["rsqrt"], 1),
        # LayerNorm: Ti lanes a beat; gamma twice (staged, then the core's) and beta, the
        # row held for the normalise pass (two rows), and the input FIFO
        Memory(
            "cds_eng_layernorm", "gamma and beta", arch.tile_in * param_bits, norm_beats, count=3
        ),
        Memory("cds_eng_layernorm", "row buffer", arch.tile_in * x, 2 * norm_beats),
        Memory("cds_eng_layernorm", "row FIFO", arch.tile_in * x, row_fifo),
        # POOL's column sums: a 64-bit accumulator per word of a beat, dim / WPB deep
        Memory("cds_eng_eltwise", "column sums", 64, -(-arch.max_dim // wpb), count=wpb),
        Memory("cds_eng_moe", "accumulator", to * p["macc_bits"], tokens * dim_tiles),
        Memory("cds_eng_moe", "logits", to * x, tokens * expert_tiles),
        # the expert queues: WPB banks with synchronous reads; the token ids have two read
        # ports (the side stream / gate writer on the write's address, the gather / ys
        # write-back), the scores one
        Memory(
            "cds_eng_moe",
            "expert queue ids",
            tokens.bit_length(),
            queue_depth,
            reads=2,
            count=wpb,
            rw_port=True,
        ),
        # (single port: block RAM when deep, rtl.render.SP_LUTRAM_MAX_DEPTH)
        Memory(
            "cds_eng_moe",
            "expert queue scores",
            p["score_bits"] + 1,
            queue_depth,
            count=wpb,
            block=queue_depth > p["sp_lutram_max_depth"],
        ),
        _rom("cds_eng_moe", "exp table", tables["exp"], 1),
        _rom("cds_eng_moe", "reciprocal table", tables["recip"], 1),
        Memory("cds_controller", "rule engine", engine_bits, engine_words, rom=True),
        Memory("cds_controller", "layer cycles", 32, 1024),
        # rd0 (program and weight plane 0), rd1 (arena); a reader per further weight master
        Memory("cds_axi_rd", "read FIFO", arch.bus_bits, 256, count=2),
        *(
            [Memory("cds_axi_rdw", "read FIFO", arch.bus_bits, 256, count=arch.weight_ports - 1)]
            if arch.weight_ports > 1
            else []
        ),
        # the arena's on-chip window: window_banks beats a row (the x port's width), a
        # write enable per word
        *(
            [
                Memory(
                    "cds_arena_window",
                    "window",
                    arch.bus_bits * p["window_banks"],
                    -(-p["window_beats"] // p["window_banks"]),
                    word_enables=True,
                )
            ]
            if p["window_beats"]
            else []
        ),
    ]
    # max_experts 0: the top has no MoE engine
    return [m for m in memories if arch.has_moe or m.unit != "cds_eng_moe"]


def unit_blocks(arch, precision=None, family: str = "xcup", uram: bool = False
                ) -> dict[str, float]:  # fmt: skip
    """BRAM36 per unit of ``codesign_top`` by :func:`mapped` over :func:`inventory`."""
    return {unit: bram36 for unit, (bram36, _) in unit_memories(arch, precision, family,
                                                                uram).items()}  # fmt: skip


def unit_memories(arch, precision=None, family: str = "xcup", uram: bool = False
                  ) -> dict[str, tuple[float, int]]:  # fmt: skip
    """(BRAM36, URAM288) per unit of ``codesign_top``; `uram`: the part has UltraRAM and
    synthesis may use it (``synth_xilinx -uram``)."""
    per_unit: dict[str, tuple[float, int]] = {}
    for memory in inventory(arch, precision):
        bram36, tiles = mapped(memory, family, uram)
        old = per_unit.get(memory.unit, (0.0, 0))
        per_unit[memory.unit] = (old[0] + bram36, old[1] + tiles)
    return per_unit


__all__ = [
    "MIN_DEPTH",
    "ROM_BIT_COST",
    "Memory",
    "attention_banks",
    "blocks",
    "inventory",
    "mapped",
    "unit_blocks",
    "unit_memories",
    "varying_bits",
]
