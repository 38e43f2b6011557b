"""The host/kernel contract constants, in one place.

Every executor (golden, C-sim, RTL) and every host (the PYNQ driver, the minimal host)
reads these: the program check's result codes, how a refusal is packed into the
STATUS register, the debug registers, the post-op codes of LINEAR. The HLS templates,
the RTL templates and the docs are rendered from them; nothing restates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

NONE = 0xFFFFFFFF  # an absent address (no bias, no residual, dense weights)


class Post(IntEnum):
    """What LINEAR does after requantising the accumulator."""

    NONE = 0
    GELU = 1
    ADD = 2


# A UCU bias word (LINEAR and the experts' fc1/fc2): bits 31..3 the bias, bits 2..0 the
# weight shift of its output column. Column c's weights are stored in w_fmt with s_c fewer
# fraction bits (per-output-channel formats: a column of small weights keeps the bits a
# per-tensor format would spend on the largest column), and the executors compute
# (acc_c << s_c) + align(bias_c) at frac(x) + frac(w_fmt). All-zero shifts: per tensor.
BIAS_SHIFT_BITS = 3
MAX_WEIGHT_SHIFT = (1 << BIAS_SHIFT_BITS) - 1
BIAS_BITS = 32 - BIAS_SHIFT_BITS


def pack_bias_words(bias: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
    """int32 bias words from raw biases (BIAS_BITS wide) and column weight shifts."""
    bias = np.asarray(bias, np.int64)
    shifts = np.zeros_like(bias) if shifts is None else np.asarray(shifts, np.int64)
    if shifts.shape != bias.shape:
        raise ValueError(f"{shifts.shape} weight shifts for {bias.shape} biases")
    limit = 1 << (BIAS_BITS - 1)
    if bias.size and (bias.min() < -limit or bias.max() >= limit):
        raise ValueError(f"a bias outside {BIAS_BITS} signed bits")
    if shifts.size and (shifts.min() < 0 or shifts.max() > MAX_WEIGHT_SHIFT):
        raise ValueError(f"a weight shift outside 0..{MAX_WEIGHT_SHIFT}")
    return ((bias << BIAS_SHIFT_BITS) | shifts).astype(np.int32)


def unpack_bias_words(words) -> tuple[np.ndarray, np.ndarray]:
    """(raw biases, column weight shifts) of int32 bias words."""
    words = np.asarray(words, np.int64)
    return words >> BIAS_SHIFT_BITS, words & MAX_WEIGHT_SHIFT


# Results of the kernel's program check: code, name, message. 0 = runnable.
CHECK_ERRORS = (
    (0, "OK", "the program runs on this kernel"),
    (1, "MAGIC", "not a codesign program (bad magic)"),
    (2, "VERSION", "program format version differs from the kernel's"),
    (3, "LAYOUT", "header or descriptor size, or layer count, inconsistent"),
    (4, "BUS", "program packed for another bus width"),
    (5, "TILE", "program packed for another UCU tile (tile_in/tile_out)"),
    (6, "TABLE", "lookup table header or location differs from the kernel's ArchConfig"),
    (7, "TASKS", "task count outside 1..8, the task argument or a layer's task out of range"),
    (8, "OP", "unknown op code"),
    (9, "SIZE", "layer exceeds the kernel's maximum sizes (ArchConfig.max_*)"),
    (10, "FORMAT", "invalid or too wide format word, or wider than the build's datapaths"),
    (11, "ALIGN", "a bias or residual has more fraction bits than its accumulator"),
    (12, "PARALLEL", "attention parallel outside 1..P (or > tokens), or heads do not divide dim"),
    (13, "SOFTMAX", "softmax sum format must have the exp table's fraction bits"),
    (14, "DEPTH", "program or arena larger than the kernel's m_axi depth"),
    (15, "WEIGHT", "weight container not one this kernel reads, or unknown post-op"),
    (16, "REGION", "an address, stride or extent outside its buffer, or not bus-aligned"),
    (17, "BLOCKS", "block-sparse index malformed (row pointers or tile columns)"),
)
ERROR_CODES = {name: code for code, name, _ in CHECK_ERRORS}
ERROR_NAMES = {code: name for code, name, _ in CHECK_ERRORS}
ERROR_MESSAGES = {code: message for code, _, message in CHECK_ERRORS}

# STATUS (the check result after a run): code [7:0], bad layer [23:8], header flag [24].
STATUS_CODE_BITS = 8
STATUS_LAYER_SHIFT = 8
STATUS_LAYER_BITS = 16
STATUS_HEADER_BIT = 24

# Debug registers: STATUS on both kernels (HLS and RTL); the rest RTL only.
DEBUG_REGISTERS = {
    "STATUS": 0x80,  # program check result of the last run (0 = it ran)
    "CYCLES_LO": 0x84,
    "CYCLES_HI": 0x88,
    "PERF_SEL": 0x8C,  # write: layer index
    "PERF_CYCLES": 0x90,  # cycles of the selected layer in the last run
    "LAYERS_RUN": 0x94,
    "CHECK_CYCLES": 0x98,  # cycles the rule engine ran in the last run (header and layers)
}
STATUS_OFFSET = DEBUG_REGISTERS["STATUS"]


def pack_status(code: int, layer: int | None) -> int:
    """The STATUS word both kernels write: ``layer=None`` for a header refusal."""
    if code == 0:
        return 0
    if layer is None:
        return (1 << STATUS_HEADER_BIT) | code
    return ((layer & 0xFFFF) << STATUS_LAYER_SHIFT) | code


def unpack_status(status: int) -> tuple[int, int | None]:
    """(code, layer or None when the header was refused)."""
    code = status & ((1 << STATUS_CODE_BITS) - 1)
    if status >> STATUS_HEADER_BIT & 1:
        return code, None
    return code, (status >> STATUS_LAYER_SHIFT) & ((1 << STATUS_LAYER_BITS) - 1)


class ProgramError(ValueError):
    """A program.bin that is malformed, truncated or inconsistent."""


class ProgramRefused(ProgramError):  # noqa: N818 (the issue's and the docs' name)
    """The kernel (or an executor standing in for it) refused a Program before running it.

    ``code``/``name`` are the check result (``CHECK_ERRORS``), ``layer`` the descriptor
    index (None: the header), ``op`` that layer's op name, ``detail`` what the executor
    knows beyond the code (the golden executor names the rule).
    """

    def __init__(
        self,
        code: int,
        layer: int | None = None,
        op: str | None = None,
        *,
        executor: str = "the kernel",
        layer_name: str | None = None,
        detail: str = "",
    ):
        self.code = code
        self.name = ERROR_NAMES.get(code, str(code))
        self.layer = layer
        self.op = op
        self.layer_name = layer_name
        self.detail = detail
        self.executor = executor
        self.status = pack_status(code, layer)
        if layer is None:
            where = "the header"
        else:
            where = f"layer {layer}"
            if op:
                where += f" ({op}{' ' + layer_name if layer_name else ''})"
        message = ERROR_MESSAGES.get(code, "unknown check result")
        text = f"{executor} refused the program: ERR_{self.name} at {where}: {message}"
        if detail:
            text += f" [{detail}]"
        super().__init__(text)

    @classmethod
    def from_status(cls, status: int, program: bytes | None = None, **kwargs) -> ProgramRefused:
        """Decode a STATUS word; ``program`` (its bytes) names the layer's op."""
        code, layer = unpack_status(status)
        op = name = None
        if layer is not None and program is not None:
            op, name = describe_layer(program, layer)
        return cls(code, layer, op, layer_name=name, **kwargs)


def describe_layer(blob: bytes, layer: int) -> tuple[str | None, str | None]:
    """Op and name of descriptor ``layer`` read straight from the bytes (no validation)."""
    from .ops import op_name_of_code
    from .program import HEADER_BYTES, LAYER_WORDS, NAME_WORDS

    start = HEADER_BYTES + layer * LAYER_WORDS * 4
    if start + LAYER_WORDS * 4 > len(blob):
        return None, None
    code = int.from_bytes(blob[start : start + 4], "little")
    raw = blob[start + (LAYER_WORDS - NAME_WORDS) * 4 : start + LAYER_WORDS * 4]
    name = raw.split(b"\0")[0].decode("ascii", "replace") or None
    return op_name_of_code(code), name


@dataclass(frozen=True)
class Refusal:
    """A check result as a value: what ``ProgramRefused`` is raised from."""

    code: int
    layer: int | None
    detail: str = ""

    @property
    def name(self) -> str:
        return ERROR_NAMES[self.code]

    @property
    def status(self) -> int:
        return pack_status(self.code, self.layer)


__all__ = [
    "CHECK_ERRORS",
    "DEBUG_REGISTERS",
    "ERROR_CODES",
    "NONE",
    "STATUS_OFFSET",
    "Post",
    "ProgramError",
    "ProgramRefused",
    "Refusal",
    "describe_layer",
    "pack_status",
    "unpack_status",
]
