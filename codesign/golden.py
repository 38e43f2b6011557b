"""Golden executor: runs a Program bit-exactly with integer numpy arithmetic.

It decodes everything from the Program bytes (descriptors, packed weights, tables)
and keeps activations in an int32 arena, exactly as the kernel sees DDR. Matrix
products are exact integer sums; they use float64 BLAS only when every partial sum
is provably below 2**53 (then the float result *is* the integer), and int64
otherwise. Nonlinear functions come from the Program's tables; the algorithms are
the Edge-MoE ones (single-pass softmax with running max and sum in the rotated key
order, (1/s, m) applied in A·V, one-pass layer norm, expert queues with scatter-add).
docs/numerics.md states each step; the HLS kernel and the RTL implement the same.
Each op's semantics live with its contract in the op registry (``codesign/ops/<op>.py``,
``golden``); this module is the executor they run on: the arena, the weights, the tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .contract import ProgramRefused
from .numerics.exact import align, matmul_exact, shift_round_rows
from .numerics.fixed import Fixed, apply_overflow, count_overflow, shift_round
from .numerics.tables import Table
from .ops import SPECS
from .program import (
    HEADER_BYTES,
    NONE,
    Layer,
    Op,
    Program,
    arena_matrix,
    unpack_block_sparse,
    unpack_fmt,
    unpack_tiles,
)


@dataclass
class RunResult:
    output: np.ndarray  # raw int64 [rows, cols] of the task's output
    fmt: Fixed
    traces: dict[str, np.ndarray] = field(default_factory=dict)  # layer name -> raw output
    saturations: dict[str, int] = field(default_factory=dict)  # layer name -> values clipped
    # the arena's 32-bit words after the run (with ``trace``): what a kernel's DDR holds
    arena: np.ndarray | None = None

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
                ref.kind,
            )
            for name, ref in program.tables.items()
        }
        self._weights: dict[tuple, np.ndarray] = {}
        self.arena = np.zeros(0, np.int64)
        self._sat = 0

    # ---------------------------------------------------------------- arena
    def read(self, offset: int, rows: int, cols: int, stride: int) -> np.ndarray:
        return arena_matrix(self.arena, offset, rows, cols, stride).copy()

    def write(self, offset: int, stride: int, values: np.ndarray) -> None:
        """Store as DDR does: 32-bit words (a value wider than its container wraps)."""
        rows, cols = values.shape
        wrapped = ((np.asarray(values, np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        arena_matrix(self.arena, offset, rows, cols, stride)[:] = wrapped

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
            out = self.execute(layer, task)
            result.saturations[layer.name] = self._sat
            if trace and out is not None:
                result.traces[layer.name] = out
        out_ref = program.outputs[task]
        result.output = self.read(out_ref.offset, out_ref.rows, out_ref.cols, out_ref.stride)
        if trace:
            result.arena = self.arena.astype(np.int32)
        return result

    # ---------------------------------------------------------------- ops
    # ---------------------------------------------------------------- MoE

    def execute(self, layer: Layer, task: int) -> np.ndarray | None:
        """One layer: the method named after its op (``linear``, ``moe_experts``, ...),
        which runs the op's semantics from the op registry unless a subclass overrides it
        to look at the run (the estimator records MoE queue lengths that way)."""
        return getattr(self, layer.op.name.lower())(layer, task)


def _op_method(op_spec):
    def method(self, layer: Layer, task: int) -> np.ndarray | None:
        return op_spec.golden(self, layer, task)

    method.__name__ = op_spec.name.lower()
    method.__doc__ = (op_spec.golden.__doc__ or "").strip() or f"{op_spec.name} (codesign.ops)"
    return method


for _spec in SPECS:  # one method per op, from the registry (codesign/ops/<op>.py)
    setattr(GoldenExecutor, _spec.name.lower(), _op_method(_spec))


def run_golden(program: Program, input_raw: np.ndarray, task: int = 0, trace: bool = False):
    return GoldenExecutor(program).run(input_raw, task, trace)


__all__ = [
    "GoldenExecutor",
    "Op",
    "RunResult",
    "align",
    "matmul_exact",
    "run_golden",
    "shift_round_rows",
    "unpack_fmt",
]
