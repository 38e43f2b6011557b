"""The Program: layer descriptors + packed weights + tables, and its binary format.

``program.bin`` (version 1, little-endian, 32-bit words) is what every executor runs:

    [0, 512)            header (see HEADER_FIELDS)
    [512, +n*256)       layer descriptors, LAYER_WORDS words each:
                          word 0 op, word 1 task (-1 = every task),
                          words 2.. the op's fields in LAYER_FIELDS order,
                          last 16 words the layer name (ASCII, NUL padded)
    [data_offset, end)  tables and weights, each array aligned to the bus width

Addresses in descriptors are byte offsets: weights/tables from the start of the
program buffer, activations from the start of the arena buffer (the second kernel
argument). Activations are int32 containers, row-major, rows padded to the bus
width. A format is one word (see ``pack_fmt``). The CRC-32 covers the whole file
with the crc word taken as zero.
"""

from __future__ import annotations

import functools
import json
import zlib
from dataclasses import dataclass, field

import numpy as np

from .arch.config import WEIGHT_PORT_CHOICES
from .contract import NONE, Post, ProgramError, ProgramRefused, describe_layer
from .numerics.fixed import OVERFLOW, OVERFLOW_CODE, ROUNDING, ROUNDING_CODE, Fixed
from .ops import HEADER_WORD_INDEX, LAYER_FIELDS, TABLE_NAMES, TABLE_WORDS, Op
from .ops.base import interpolation_limits

MAGIC = b"CDSGPROG"
VERSION = 6  # 2: LINEAR carries nnz (stored tiles of a block-sparse matrix); 3: EMBED prefix, POOL;
# 4: UCU bias words carry per-output-channel weight shifts; 5: weight_ports (striped weights);
# 6: window_bytes (the on-chip arena window)
HEADER_BYTES = 512
LAYER_WORDS = 64
NAME_WORDS = 16
FIELD_WORDS = LAYER_WORDS - 2 - NAME_WORDS
MAX_TASKS = 8


# Op codes, descriptor fields and their rules live in the op registry (codesign.ops).
assert all(len(f) <= FIELD_WORDS for f in LAYER_FIELDS.values())

# Header: (name, words). Tensor refs are offset, rows, cols, stride, fmt.
REF_WORDS = ("offset", "rows", "cols", "stride", "fmt")
HEADER_FIELDS = (
    "version",
    "header_bytes",
    "total_bytes",
    "crc32",
    "n_layers",
    "layer_words",
    "layers_offset",
    "data_offset",
    "data_bytes",
    "arena_bytes",
    "bus_bits",
    "tile_in",
    "tile_out",
    "attn_parallel",
    "n_tasks",
)
_H_INPUT = 2 + len(HEADER_FIELDS)  # word index of the input ref
_H_OUTPUTS = _H_INPUT + len(REF_WORDS)
_H_TABLES = _H_OUTPUTS + MAX_TASKS * len(REF_WORDS)
_H_NAME = _H_TABLES + len(TABLE_NAMES) * len(TABLE_WORDS)
_H_NAME_WORDS = 8
_H_GEOMETRY = _H_NAME + _H_NAME_WORDS  # image channels, patch, height, width (0: unknown)
GEOMETRY_WORDS = ("channels", "patch", "height", "width")
# lanes of a head row the attention datapath takes per cycle (0: the whole row); no
# executor's answer depends on it, only the schedule (codesign.estimate)
_H_ATTN_LANES = _H_GEOMETRY + len(GEOMETRY_WORDS)
# the AXI masters weights stream over: every weight matrix is striped across them
# (``stripe_ports``), so this word changes where each executor finds a weight
_H_WEIGHT_PORTS = _H_ATTN_LANES + 1
# arena offsets below this many bytes are the kernel's on-chip window (0: none): only
# the kernel sees them, so the input and outputs the host moves lie at or past it
_H_WINDOW = _H_WEIGHT_PORTS + 1
# the UCU drain's lanes it was compiled for (ArchConfig.drain_lanes, 0: a bus beat's
# words); like attn_lanes no executor's answer depends on it, only the schedule
_H_DRAIN_LANES = _H_WINDOW + 1
# LayerNorm's normalise lanes (ArchConfig.layernorm_lanes, 0: derived as the ArchConfig
# derives them); only the schedule depends on it
_H_NORM_LANES = _H_DRAIN_LANES + 1
# the MoE experts' final-pass lanes (ArchConfig.moe_final_lanes, 0: a bus beat's words);
# only the schedule depends on it
_H_FINAL_LANES = _H_NORM_LANES + 1
assert _H_FINAL_LANES < HEADER_BYTES // 4
assert HEADER_WORD_INDEX["window_bytes"][0] == _H_WINDOW


def pack_fmt(fmt: Fixed) -> int:
    """One word: width [7:0], frac bits as int8 [15:8], signed [16], rounding [19:17],
    overflow [22:20] (codes from ROUNDING / OVERFLOW)."""
    frac = fmt.frac_bits
    if not -128 <= frac <= 127:
        raise ProgramError(f"format {fmt} has fraction bits outside int8")
    return (
        fmt.width
        | ((frac & 0xFF) << 8)
        | (int(fmt.signed) << 16)
        | (ROUNDING_CODE[fmt.rounding] << 17)
        | (OVERFLOW_CODE[fmt.overflow] << 20)
    )


def unpack_fmt(word: int) -> Fixed:
    width = word & 0xFF
    frac = (word >> 8) & 0xFF
    frac = frac - 256 if frac >= 128 else frac
    rounding, overflow = (word >> 17) & 7, (word >> 20) & 7
    if not 1 <= width <= 63 or rounding >= len(ROUNDING) or overflow >= len(OVERFLOW):
        raise ProgramError(f"format word 0x{word:08x} is not a valid format")
    return Fixed(
        width, width - frac, bool((word >> 16) & 1), ROUNDING[rounding], OVERFLOW[overflow]
    )


@dataclass
class TensorRef:
    """An activation matrix in the arena."""

    offset: int
    rows: int
    cols: int
    stride: int  # bytes per row
    fmt: Fixed

    def words(self) -> list[int]:
        return [self.offset, self.rows, self.cols, self.stride, pack_fmt(self.fmt)]

    @classmethod
    def from_words(cls, words) -> TensorRef:
        return cls(int(words[0]), int(words[1]), int(words[2]), int(words[3]), unpack_fmt(words[4]))

    def to_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in REF_WORDS[:4]}, "fmt": str(self.fmt)}


@dataclass
class TableRef:
    name: str
    offset: int
    entries: int
    fmt: Fixed
    index_bits: int
    guard_bits: int
    domain_log2: int
    kind: int = 0  # which function (gelu_delta: numerics.tables.GELU_KINDS index)

    def words(self) -> list[int]:
        return [
            self.offset,
            self.entries,
            pack_fmt(self.fmt),
            self.index_bits,
            self.guard_bits,
            self.domain_log2 & 0xFFFFFFFF,
            self.kind,
        ]


@dataclass
class Layer:
    op: Op
    name: str
    fields: dict[str, int]
    task: int = -1

    def words(self) -> list[int]:
        names = LAYER_FIELDS[self.op]
        missing = set(names) - set(self.fields)
        extra = set(self.fields) - set(names)
        if missing or extra:
            raise ProgramError(
                f"layer {self.name}: missing fields {sorted(missing)}, unknown {sorted(extra)}"
            )
        body = [int(self.fields[n]) & 0xFFFFFFFF for n in names]
        body += [0] * (FIELD_WORDS - len(body))
        encoded = self.name.encode("ascii")[: NAME_WORDS * 4 - 1]
        name = np.frombuffer(encoded.ljust(NAME_WORDS * 4, b"\0"), "<u4").tolist()
        return [int(self.op), self.task & 0xFFFFFFFF, *body, *name]

    def fmt(self, key: str) -> Fixed:
        return unpack_fmt(self.fields[key])

    def to_dict(self) -> dict:
        out = {"op": self.op.name, "name": self.name, "task": self.task}
        for key in LAYER_FIELDS[self.op]:
            value = self.fields[key]
            if key.endswith("_fmt"):
                out[key] = str(unpack_fmt(value)) if value else None
            elif key == "post":
                out[key] = Post(value).name
            else:
                out[key] = None if value == NONE else value
        return out


@dataclass
class Program:
    """A compiled model: what the golden executor, C-sim and RTL all run."""

    model: str
    bus_bits: int
    tile_in: int
    tile_out: int
    attn_parallel: int
    layers: list[Layer]
    data: bytes  # tables + weights; offsets in layers count from the program start
    arena_bytes: int
    input: TensorRef
    outputs: list[TensorRef]
    tables: dict[str, TableRef]
    meta: dict = field(default_factory=dict)  # json-only extras (formats, shapes)
    # the image the input patches come from: channels, patch, height, width (0 = unknown)
    geometry: tuple[int, int, int, int] = (0, 0, 0, 0)
    attn_lanes: int = 0  # ArchConfig.attn_lanes it was compiled for (0: whole head rows)
    weight_ports: int = 1  # ArchConfig.weight_ports: weight matrices striped over this many
    window_bytes: int = 0  # arena offsets below it are on chip (ArchConfig.arena_window_kib)
    drain_lanes: int = 0  # ArchConfig.drain_lanes it was compiled for (0: a beat's words)
    norm_lanes: int = 0  # ArchConfig.layernorm_lanes it was compiled for (0: derived)
    final_lanes: int = 0  # ArchConfig.moe_final_lanes it was compiled for (0: a beat's words)

    @property
    def weight_beat_bytes(self) -> int:
        """Bytes one beat of all weight masters carries (weight tiles pad to this)."""
        return self.weight_ports * self.bus_bits // 8

    @property
    def data_offset(self) -> int:
        return HEADER_BYTES + len(self.layers) * LAYER_WORDS * 4

    @property
    def n_tasks(self) -> int:
        return len(self.outputs)

    # ------------------------------------------------------------------ encode
    def to_bytes(self) -> bytes:
        if not 1 <= len(self.outputs) <= MAX_TASKS:
            raise ProgramError(f"{len(self.outputs)} tasks; the format holds 1..{MAX_TASKS}")
        layers = np.array([layer.words() for layer in self.layers], "<u4").reshape(-1)
        total = self.data_offset + len(self.data)
        header = np.zeros(HEADER_BYTES // 4, "<u4")
        header[:2] = np.frombuffer(MAGIC, "<u4")
        values = {
            "version": VERSION,
            "header_bytes": HEADER_BYTES,
            "total_bytes": total,
            "crc32": 0,
            "n_layers": len(self.layers),
            "layer_words": LAYER_WORDS,
            "layers_offset": HEADER_BYTES,
            "data_offset": self.data_offset,
            "data_bytes": len(self.data),
            "arena_bytes": self.arena_bytes,
            "bus_bits": self.bus_bits,
            "tile_in": self.tile_in,
            "tile_out": self.tile_out,
            "attn_parallel": self.attn_parallel,
            "n_tasks": self.n_tasks,
        }
        header[2 : 2 + len(HEADER_FIELDS)] = [values[k] for k in HEADER_FIELDS]
        header[_H_INPUT : _H_INPUT + 5] = self.input.words()
        for task, ref in enumerate(self.outputs):
            header[_H_OUTPUTS + 5 * task : _H_OUTPUTS + 5 * task + 5] = ref.words()
        for index, name in enumerate(TABLE_NAMES):
            start = _H_TABLES + index * len(TABLE_WORDS)
            header[start : start + len(TABLE_WORDS)] = self.tables[name].words()
        name = self.model.encode("ascii")[: _H_NAME_WORDS * 4 - 1].ljust(_H_NAME_WORDS * 4, b"\0")
        header[_H_NAME : _H_NAME + _H_NAME_WORDS] = np.frombuffer(name, "<u4")
        header[_H_GEOMETRY : _H_GEOMETRY + len(GEOMETRY_WORDS)] = [int(v) for v in self.geometry]
        header[_H_ATTN_LANES] = self.attn_lanes
        header[_H_WEIGHT_PORTS] = self.weight_ports
        header[_H_WINDOW] = self.window_bytes
        header[_H_DRAIN_LANES] = self.drain_lanes
        header[_H_NORM_LANES] = self.norm_lanes
        header[_H_FINAL_LANES] = self.final_lanes
        blob = bytearray(header.tobytes() + layers.tobytes() + self.data)
        crc = zlib.crc32(bytes(blob))
        crc_at = (2 + HEADER_FIELDS.index("crc32")) * 4
        blob[crc_at : crc_at + 4] = crc.to_bytes(4, "little")
        return bytes(blob)

    def save(self, path) -> None:
        from pathlib import Path

        Path(path).write_bytes(self.to_bytes())

    # ------------------------------------------------------------------ decode
    @classmethod
    def from_bytes(cls, blob: bytes, source: str = "program") -> Program:
        """Parse and validate; any inconsistency raises ProgramError naming what is wrong."""
        if len(blob) < HEADER_BYTES:
            raise ProgramError(
                f"{source}: truncated: {len(blob)} bytes, smaller than the "
                f"{HEADER_BYTES}-byte header"
            )
        if blob[:8] != MAGIC:
            raise ProgramError(f"{source}: not a codesign program (bad magic {blob[:8]!r})")
        header = np.frombuffer(blob[:HEADER_BYTES], "<u4")
        values = dict(zip(HEADER_FIELDS, (int(v) for v in header[2:]), strict=False))
        if values["version"] != VERSION:
            raise ProgramError(
                f"{source}: program version {values['version']}, this codesign reads {VERSION}"
            )
        if values["total_bytes"] != len(blob):
            raise ProgramError(
                f"{source}: truncated or padded: header says {values['total_bytes']} bytes, "
                f"file has {len(blob)}"
            )
        zeroed = bytearray(blob)
        crc_at = (2 + HEADER_FIELDS.index("crc32")) * 4
        zeroed[crc_at : crc_at + 4] = b"\0\0\0\0"
        if zlib.crc32(bytes(zeroed)) != values["crc32"]:
            raise ProgramError(f"{source}: CRC mismatch: the file is corrupted")
        _check_structure(blob, values, source)
        n_layers = values["n_layers"]
        data_offset = HEADER_BYTES + n_layers * LAYER_WORDS * 4
        words = np.frombuffer(blob[HEADER_BYTES:data_offset], "<u4").reshape(n_layers, LAYER_WORDS)
        layers = [cls._decode_layer(index, row, source) for index, row in enumerate(words)]
        tables = {}
        for index, name in enumerate(TABLE_NAMES):
            start = _H_TABLES + index * len(TABLE_WORDS)
            t = [int(v) for v in header[start : start + len(TABLE_WORDS)]]
            domain = t[5] - (1 << 32) if t[5] >= 1 << 31 else t[5]
            tables[name] = TableRef(name, t[0], t[1], unpack_fmt(t[2]), t[3], t[4], domain, t[6])
        name = bytes(header[_H_NAME : _H_NAME + _H_NAME_WORDS].tobytes()).rstrip(b"\0")
        program = cls(
            model=name.decode("ascii", "replace").replace("\ufffd", "?"),
            bus_bits=values["bus_bits"],
            tile_in=values["tile_in"],
            tile_out=values["tile_out"],
            attn_parallel=values["attn_parallel"],
            layers=layers,
            data=bytes(blob[data_offset:]),
            arena_bytes=values["arena_bytes"],
            input=TensorRef.from_words(header[_H_INPUT : _H_INPUT + 5]),
            outputs=[
                TensorRef.from_words(header[_H_OUTPUTS + 5 * t : _H_OUTPUTS + 5 * t + 5])
                for t in range(values["n_tasks"])
            ],
            tables=tables,
            geometry=tuple(int(v) for v in header[_H_GEOMETRY : _H_GEOMETRY + len(GEOMETRY_WORDS)]),
            attn_lanes=int(header[_H_ATTN_LANES]),
            weight_ports=int(header[_H_WEIGHT_PORTS]),
            window_bytes=int(header[_H_WINDOW]),
            drain_lanes=int(header[_H_DRAIN_LANES]),
            norm_lanes=int(header[_H_NORM_LANES]),
            final_lanes=int(header[_H_FINAL_LANES]),
        )
        return program

    @staticmethod
    def _decode_layer(index: int, row, source: str) -> Layer:
        op = Op(int(row[0]))  # known: _check_structure refused unknown codes
        task = int(row[1])
        task = task - (1 << 32) if task >= 1 << 31 else task
        names = LAYER_FIELDS[op]
        fields = {key: int(v) for key, v in zip(names, row[2 : 2 + len(names)], strict=True)}
        raw_name = bytes(row[LAYER_WORDS - NAME_WORDS :].tobytes()).split(b"\0")[0]
        name = raw_name.decode("ascii", "replace").replace("\ufffd", "?")
        return Layer(op, name or f"layer{index}", fields, task)

    @classmethod
    def load(cls, path) -> Program:
        from pathlib import Path

        path = Path(path)
        if not path.is_file():
            raise ProgramError(f"{path}: no such program file")
        return cls.from_bytes(path.read_bytes(), source=str(path))

    def validate(self, source: str = "program", arch=None, task: int = 0) -> None:
        """Refuse what the loader (``arch`` None) or the kernel for ``arch`` would refuse:
        every rule of the op registry, every address inside its buffer."""
        _check_rules(self.to_bytes(), source, arch, task)

    # ------------------------------------------------------------------ dump
    def to_json(self) -> dict:
        return {
            "format": {"magic": MAGIC.decode(), "version": VERSION},
            "model": self.model,
            "arch": {
                "bus_bits": self.bus_bits,
                "tile_in": self.tile_in,
                "tile_out": self.tile_out,
                "attn_parallel": self.attn_parallel,
                "attn_lanes": self.attn_lanes,
                "weight_ports": self.weight_ports,
                "window_bytes": self.window_bytes,
                "drain_lanes": self.drain_lanes,
                "norm_lanes": self.norm_lanes,
                "final_lanes": self.final_lanes,
            },
            "sizes": {
                "header_bytes": HEADER_BYTES,
                "layers": len(self.layers),
                "data_offset": self.data_offset,
                "data_bytes": len(self.data),
                "total_bytes": self.data_offset + len(self.data),
                "arena_bytes": self.arena_bytes,
            },
            "geometry": dict(zip(GEOMETRY_WORDS, self.geometry, strict=True)),
            "input": self.input.to_dict(),
            "outputs": [ref.to_dict() for ref in self.outputs],
            "tables": {
                name: {
                    "offset": t.offset,
                    "entries": t.entries,
                    "fmt": str(t.fmt),
                    "index_bits": t.index_bits,
                    "guard_bits": t.guard_bits,
                    "domain_log2": t.domain_log2,
                }
                for name, t in self.tables.items()
            },
            "layers": [layer.to_dict() for layer in self.layers],
            "meta": self.meta,
        }

    def dump_json(self, path) -> None:
        from pathlib import Path

        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    def read_words(self, offset: int, count: int, dtype: str = "<i4") -> np.ndarray:
        """Read `count` elements at a program byte offset (weights, tables, biases)."""
        itemsize = np.dtype(dtype).itemsize
        start = offset - self.data_offset
        if start < 0 or start + count * itemsize > len(self.data):
            raise ProgramError(f"read of {count} x {dtype} at {offset} is outside the program data")
        return np.frombuffer(self.data, dtype, count, start).astype(np.int64)

    def read_bytes(self, offset: int, count: int) -> np.ndarray:
        """`count` raw bytes (uint8) at a program byte offset, bounds checked."""
        start = offset - self.data_offset
        if start < 0 or start + count > len(self.data):
            raise ProgramError(f"read of {count} bytes at {offset} is outside the program data")
        return np.frombuffer(self.data, np.uint8, count, start)


# ---------------------------------------------------------------- loader checks

BUS_WIDTHS = (32, 64, 128, 256, 512, 1024)
MAX_TILE = 256
# the golden executor holds the arena as int64: bound what a file may ask for
LOADER_ARENA_MAX_BYTES = 1 << 28
LOADER_PROGRAM_MAX_BYTES = 1 << 31


def _fmt_word_ok(word: int) -> bool:
    """A format word of a header tensor or table: at most 32 bits wide (an int32 word),
    known rounding and overflow codes."""
    return (
        1 <= word & 0xFF <= 32
        and (word >> 17) & 7 < len(ROUNDING)
        and (word >> 20) & 7 < len(OVERFLOW)
    )


def _check_structure(blob: bytes, values: dict, source: str) -> None:
    """What the loader needs before the rules can be evaluated: sane geometry and tables
    (the kernel compares these with its build; without an ArchConfig the loader checks
    them for consistency), then the rules themselves (format limits)."""
    if values["bus_bits"] not in BUS_WIDTHS:
        raise ProgramError(f"{source}: bus_bits {values['bus_bits']} is not one of {BUS_WIDTHS}")
    for name in ("tile_in", "tile_out", "attn_parallel"):
        if not 1 <= values[name] <= MAX_TILE:
            raise ProgramError(f"{source}: {name} {values[name]} outside 1..{MAX_TILE}")
    header = np.frombuffer(blob[:HEADER_BYTES], "<u4")
    lanes = int(header[_H_ATTN_LANES])
    if lanes & (lanes - 1) or lanes > MAX_TILE:
        raise ProgramError(
            f"{source}: attn_lanes {lanes} is neither 0 (whole head rows) nor a power of two "
            f"up to {MAX_TILE}"
        )
    for name, word, default in (
        ("drain_lanes", _H_DRAIN_LANES, "a bus beat's words"),
        ("norm_lanes", _H_NORM_LANES, "derived"),
        ("final_lanes", _H_FINAL_LANES, "a bus beat's words"),
    ):
        lanes = int(header[word])
        if lanes & (lanes - 1) or lanes > MAX_TILE:
            raise ProgramError(
                f"{source}: {name} {lanes} is neither 0 ({default}) nor a power of two up to "
                f"{MAX_TILE}"
            )
    ports = int(header[_H_WEIGHT_PORTS])
    if ports not in WEIGHT_PORT_CHOICES:
        raise ProgramError(f"{source}: weight_ports {ports} is not one of {WEIGHT_PORT_CHOICES}")
    for index, name in enumerate(TABLE_NAMES):
        start = _H_TABLES + index * len(TABLE_WORDS)
        t = dict(
            zip(
                TABLE_WORDS, (int(v) for v in header[start : start + len(TABLE_WORDS)]), strict=True
            )
        )
        index_bits = t["index_bits"]
        expected = (3 if name == "rsqrt" else 1) * (1 << min(index_bits, 20)) + 1
        if not 1 <= index_bits <= 16 or t["entries"] != expected:
            raise ProgramError(
                f"{source}: table {name}: {t['entries']} entries for {index_bits} index bits"
            )
        fmt = t["fmt"]
        if not _fmt_word_ok(fmt):
            raise ProgramError(f"{source}: table {name}: format word 0x{fmt:08x} is not valid")
        domain = t["domain_log2"] - (1 << 32) if t["domain_log2"] >> 31 else t["domain_log2"]
        if not -32 <= domain <= 32 or t["guard_bits"] > 32:
            raise ProgramError(f"{source}: table {name}: domain or guard bits out of range")
    _check_rules(blob, source, None, 0, header)
    _check_table_values(blob, header, source)
    refs = [("input", _H_INPUT)] + [
        (f"output {task}", _H_OUTPUTS + 5 * task) for task in range(values["n_tasks"])
    ]
    window = int(header[_H_WINDOW])
    for what, at in refs:
        offset, rows, cols, stride, fmt = (int(v) for v in header[at : at + 5])
        bus = values["bus_bits"] // 8
        if offset < window:
            raise ProgramError(
                f"{source}: the {what} tensor at arena offset {offset} lies in the on-chip "
                f"window (below {window}), where the host cannot reach it"
            )
        if (
            offset % bus
            or stride % bus
            or stride < 4 * cols
            or not 1 <= rows <= 65535
            or not 1 <= cols <= 65535
            or offset + rows * stride > values["arena_bytes"]
            or not _fmt_word_ok(fmt)
        ):
            raise ProgramError(
                f"{source}: the {what} tensor lies outside the arena or is malformed"
            )


def _check_table_values(blob: bytes, header, source: str) -> None:
    """The four tables must hold exactly what their header words describe (the kernels
    compute with tables built from their ArchConfig; a corrupt table would make the
    golden executor disagree with them, or fail)."""
    t = {}
    for index, name in enumerate(TABLE_NAMES):
        start = _H_TABLES + index * len(TABLE_WORDS)
        t[name] = dict(
            zip(
                TABLE_WORDS, (int(v) for v in header[start : start + len(TABLE_WORDS)]), strict=True
            )
        )

    def domain(name):
        value = t[name]["domain_log2"]
        return float(2.0 ** (value - (1 << 32) if value >> 31 else value))

    try:
        expected = _tables(
            t["gelu_delta"]["index_bits"],
            domain("gelu_delta"),
            t["exp"]["index_bits"],
            domain("exp"),
            t["recip"]["index_bits"],
            t["rsqrt"]["index_bits"],
            t["recip"]["guard_bits"],
            t["exp"]["fmt"] & 0xFF,
            t["gelu_delta"]["kind"],
        )
    except (ValueError, TypeError) as error:
        raise ProgramError(
            f"{source}: the tables' header words describe no valid table: {error}"
        ) from None
    for name in TABLE_NAMES:
        table, words = expected[name], t[name]
        values = np.frombuffer(blob, "<i4", words["entries"], words["offset"])
        same = (
            len(table.values) == words["entries"]
            and pack_fmt(table.fmt) == words["fmt"]
            and table.guard_bits == words["guard_bits"]
            and table.kind == words["kind"]
            and np.array_equal(values, np.asarray(table.values, np.int64))
        )
        if not same:
            raise ProgramError(
                f"{source}: table {name} does not hold the values its header describes"
            )


@functools.lru_cache(maxsize=16)
def _tables(
    gelu_bits, gelu_range, exp_bits, exp_range, recip_bits, rsqrt_bits, guard, width, gelu_kind
):
    from .numerics.tables import GELU_KINDS, build_tables

    if not 0 <= gelu_kind < len(GELU_KINDS):
        raise ValueError(f"gelu_delta kind {gelu_kind} is not one of 0..{len(GELU_KINDS) - 1}")
    return build_tables(
        gelu_index_bits=gelu_bits,
        gelu_range=gelu_range,
        exp_index_bits=exp_bits,
        exp_range=exp_range,
        recip_index_bits=recip_bits,
        rsqrt_index_bits=rsqrt_bits,
        guard_bits=guard,
        table_width=width,
        gelu=GELU_KINDS[gelu_kind],
    )


def loader_params(header) -> dict:
    """The check parameters of the format itself: geometry and tables as the header says,
    sizes at the format's limits (a kernel's are ArchConfig-bound: kernel_check_params)."""
    from .ops import FORMAT_LIMITS, HEADER_WORD_INDEX
    from .ops.base import DATAPATH_BITS

    params = {**FORMAT_LIMITS, **DATAPATH_BITS}
    words = {name: int(header[index]) for name, (index, _) in HEADER_WORD_INDEX.items()}
    for name in HEADER_WORD_INDEX:
        if name.split("_")[0] in ("gelu", "exp", "recip", "rsqrt"):
            value = words[name]
            params[name] = (
                value - (1 << 32) if name.endswith("domain_log2") and value >> 31 else value
            )
    params.update(
        bus_bits=words["bus_bits"],
        bus_bytes=words["bus_bits"] // 8,
        weight_ports=words["weight_ports"],
        weight_beat_bytes=words["weight_ports"] * (words["bus_bits"] // 8),
        tile_in=words["tile_in"],
        tile_out=words["tile_out"],
        w_bytes=WEIGHT_CONTAINERS,
        max_tasks=MAX_TASKS,
        program_max_bytes=LOADER_PROGRAM_MAX_BYTES,
        arena_max_bytes=LOADER_ARENA_MAX_BYTES,
        window_max_bytes=LOADER_ARENA_MAX_BYTES,
    )
    params.update(interpolation_limits(params))
    exp_fmt = words["exp_fmt"]
    frac = (exp_fmt >> 8) & 0xFF
    params["exp_frac"] = frac - 256 if frac >= 128 else frac
    params["attn_parallel"] = int(header[2 + HEADER_FIELDS.index("attn_parallel")])
    return params


def _check_rules(blob: bytes, source: str, arch, task: int, header=None) -> None:
    from .ops import check_blob, kernel_check_params

    if arch is None:
        header = np.frombuffer(blob[:HEADER_BYTES], "<u4") if header is None else header
        params, who = loader_params(header), "the loader"
    else:
        params, who = kernel_check_params(arch), "the kernel check"
    refusal = check_blob(blob, params, task)
    if refusal is not None:
        raise ProgramRefused(
            refusal.code,
            refusal.layer,
            None if refusal.layer is None else describe_layer(blob, refusal.layer)[0],
            executor=f"{source}: {who}",
            detail=refusal.detail,
        )


# ---------------------------------------------------------------- weight layout


WEIGHT_CONTAINERS = (1, 2, 4)  # bytes: int8, int16, int32


def weight_container_bytes(fmt: Fixed) -> int:
    """Weights pack at their true width: up to 8 bits one byte each (half the DDR traffic
    of int16), up to 16 bits int16, wider ones int32."""
    return 1 if fmt.width <= 8 else 2 if fmt.width <= 16 else 4


def weight_dtype(container: int) -> str:
    """numpy dtype of a weight container of `container` bytes (little-endian, signed)."""
    if container not in WEIGHT_CONTAINERS:
        raise ProgramError(f"weight container of {container} bytes (must be 1, 2 or 4)")
    return {1: "<i1", 2: "<i2", 4: "<i4"}[container]


def padded(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def arena_matrix(words: np.ndarray, offset: int, rows: int, cols: int, stride: int) -> np.ndarray:
    """The [rows, cols] elements of an activation matrix at arena byte `offset`, rows
    `stride` bytes apart, as a view of the arena's 32-bit words (assignable)."""
    start, pitch = offset // 4, stride // 4
    return words[start : start + rows * pitch].reshape(rows, pitch)[:, :cols]


def tiled_bytes(
    out_dim: int, in_dim: int, tile_in: int, tile_out: int, container: int, bus_bytes: int,
    ports: int = 1,
) -> int:  # fmt: skip
    """Bytes of one packed weight matrix (each tile padded to a weight beat: `ports` bus
    beats)."""
    tiles = (-(-out_dim // tile_out)) * (-(-in_dim // tile_in))
    return tiles * padded(tile_in * tile_out * container, ports * bus_bytes)


def stripe_ports(block: bytes, ports: int, bus_bytes: int) -> bytes:
    """A weight matrix's bytes as `ports` planes, one per weight master: plane k holds bus
    beat k of every weight beat (``ports`` consecutive bus beats), and the planes follow
    each other. Each master then bursts through one contiguous plane, and the beats the
    masters deliver together are one weight beat in the tile order."""
    if ports == 1:
        return bytes(block)
    beats = np.frombuffer(block, np.uint8).reshape(-1, ports, bus_bytes)
    return beats.transpose(1, 0, 2).tobytes()


def unstripe_ports(block: np.ndarray, ports: int, bus_bytes: int) -> np.ndarray:
    """Inverse of ``stripe_ports`` on a uint8 array."""
    if ports == 1:
        return block
    return block.reshape(ports, -1, bus_bytes).transpose(1, 0, 2).reshape(-1)


def _tile_array(raw: np.ndarray, tile_in: int, tile_out: int, container: int,
                beat_bytes: int) -> np.ndarray:  # fmt: skip
    """[tiles, tile_bytes / container] in the UCU's order, each tile zero padded."""
    out_dim, in_dim = raw.shape
    n_out, n_in = -(-out_dim // tile_out), -(-in_dim // tile_in)
    full = np.zeros((n_out * tile_out, n_in * tile_in), np.int64)
    full[:out_dim, :in_dim] = raw
    tiles = full.reshape(n_out, tile_out, n_in, tile_in).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(n_out * n_in, tile_out * tile_in)
    tile_bytes = padded(tile_out * tile_in * container, beat_bytes)
    pad = (tile_bytes - tile_out * tile_in * container) // container
    if pad:
        tiles = np.concatenate([tiles, np.zeros((tiles.shape[0], pad), np.int64)], axis=1)
    return tiles.astype(weight_dtype(container))


def pack_tiles(
    raw: np.ndarray, tile_in: int, tile_out: int, container: int, bus_bytes: int, ports: int = 1
) -> bytes:
    """[out, in] raw weights -> the UCU's tile order.

    Tiles of tile_out x tile_in, output tiles outer, input tiles inner; inside a tile
    row-major (one output feature's tile_in weights after another); zero padding at
    the matrix edges; every tile padded to a whole number of weight beats (`ports` bus
    beats); the whole matrix striped over the `ports` weight masters (``stripe_ports``).
    """
    tiles = _tile_array(raw, tile_in, tile_out, container, ports * bus_bytes)
    return stripe_ports(tiles.tobytes(), ports, bus_bytes)


def _read_weight_block(program: Program, offset: int, tiles: int, container: int) -> np.ndarray:
    """`tiles` stored weight tiles from `offset`, unstriped: [tiles, tile_elems]."""
    tile_bytes = padded(program.tile_out * program.tile_in * container, program.weight_beat_bytes)
    block = program.read_bytes(offset, tiles * tile_bytes)
    block = unstripe_ports(block, program.weight_ports, program.bus_bits // 8)
    elems = tile_bytes // container
    return np.ascontiguousarray(block).view(weight_dtype(container)).reshape(tiles, elems)


def unpack_tiles(
    program: Program, offset: int, out_dim: int, in_dim: int, container: int
) -> np.ndarray:
    """Inverse of ``pack_tiles`` reading from the program: raw [out, in] int64."""
    tile_in, tile_out = program.tile_in, program.tile_out
    n_out, n_in = -(-out_dim // tile_out), -(-in_dim // tile_in)
    flat = _read_weight_block(program, offset, n_out * n_in, container)
    tiles = flat[:, : tile_out * tile_in].reshape(n_out, n_in, tile_out, tile_in)
    full = tiles.transpose(0, 2, 1, 3).astype(np.int64)
    return full.reshape(n_out * tile_out, n_in * tile_in)[:out_dim, :in_dim]


# ---------------------------------------------------------------- block-sparse layout


def tile_mask(raw: np.ndarray, tile_in: int, tile_out: int) -> np.ndarray:
    """[out_tiles, in_tiles] True where a weight tile has any non-zero entry."""
    out_dim, in_dim = raw.shape
    n_out, n_in = -(-out_dim // tile_out), -(-in_dim // tile_in)
    full = np.zeros((n_out * tile_out, n_in * tile_in), bool)
    full[:out_dim, :in_dim] = raw != 0
    return full.reshape(n_out, tile_out, n_in, tile_in).any(axis=(1, 3))


def pack_block_sparse(
    raw: np.ndarray, tile_in: int, tile_out: int, container: int, bus_bytes: int, ports: int = 1
) -> tuple[bytes, np.ndarray]:
    """Only the non-zero tiles, in ``pack_tiles`` order, plus their CSR block index.

    The index is int32: ``row_ptr[out_tiles + 1]`` (prefix counts of stored tiles per
    output tile row) then ``col[nnz]`` (input tile index of each stored tile, ascending
    within a row). Stored tile k is the k-th tile of the stored block (``weight + k *
    tile_bytes`` before the block is striped over the weight masters, ``stripe_ports``).
    A pruned block (block shape = UCU tile) therefore costs neither bandwidth nor cycles.
    """
    mask = tile_mask(raw, tile_in, tile_out)
    tiles = _tile_array(raw, tile_in, tile_out, container, ports * bus_bytes)[mask.reshape(-1)]
    row_ptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    cols = np.nonzero(mask)[1]
    stored = stripe_ports(tiles.tobytes(), ports, bus_bytes)
    return stored, np.concatenate([row_ptr, cols]).astype(np.int64)


def unpack_block_sparse(
    program: Program, offset: int, index: int, out_dim: int, in_dim: int, container: int
) -> np.ndarray:
    """Dense raw [out, in] from the stored non-zero tiles and their CSR index."""
    tile_in, tile_out = program.tile_in, program.tile_out
    n_out, n_in = -(-out_dim // tile_out), -(-in_dim // tile_in)
    row_ptr = program.read_words(index, n_out + 1)
    nnz = int(row_ptr[-1])
    cols = program.read_words(index + 4 * (n_out + 1), nnz)
    flat = _read_weight_block(program, offset, nnz, container).astype(np.int64)
    tiles = flat[:, : tile_out * tile_in].reshape(nnz, tile_out, tile_in)
    full = np.zeros((n_out * tile_out, n_in * tile_in), np.int64)
    for row in range(n_out):
        for k in range(int(row_ptr[row]), int(row_ptr[row + 1])):
            col = int(cols[k])
            # a column listed twice adds up, as the UCU accumulates every stored tile
            full[row * tile_out : (row + 1) * tile_out, col * tile_in : (col + 1) * tile_in] += (
                tiles[k]
            )
    return full[:out_dim, :in_dim]
