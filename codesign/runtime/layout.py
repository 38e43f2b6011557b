"""What the host must know to drive the kernel: buffer shapes, where the input and the
outputs sit in the arena, how raw values decode, and how images become input rows.

Everything here reads ``program.bin`` (``codesign.program``) plus a small ``host.json``
model card (image size, patch size, task names); it needs numpy only, so it runs on a
board where neither torch nor the compiler is installed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..program import Program, TensorRef


class BufferMismatchError(ValueError):
    """A buffer (or input array) the kernel cannot use: wrong dtype, shape or address.

    Raised before anything is written to the device.
    """


def padded(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


@dataclass(frozen=True)
class BufferSpec:
    """The exact buffer the kernel expects for one of its two DDR arguments."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    align: int  # bytes; the device address must be a multiple (one bus beat)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def check(self, buffer) -> None:
        """Refuse a buffer that is not exactly this one; says what differs."""
        what = f"{self.name} buffer"
        if not isinstance(buffer, np.ndarray):
            raise BufferMismatchError(
                f"{what}: expected an array from pynq.allocate, got {type(buffer).__name__}"
            )
        if buffer.dtype != np.dtype(self.dtype):
            raise BufferMismatchError(
                f"{what}: dtype {buffer.dtype}, the kernel needs {np.dtype(self.dtype)} "
                f"(shape {self.shape})"
            )
        if tuple(buffer.shape) != tuple(self.shape):
            raise BufferMismatchError(
                f"{what}: shape {tuple(buffer.shape)} ({buffer.nbytes} bytes), the kernel "
                f"needs {self.shape} ({self.nbytes} bytes)"
            )
        if not buffer.flags.c_contiguous:
            raise BufferMismatchError(f"{what}: not contiguous; allocate it with pynq.allocate")
        address = getattr(buffer, "device_address", None)
        if address is None:
            raise BufferMismatchError(
                f"{what}: has no device address; allocate it with pynq.allocate"
            )
        if address % self.align:
            raise BufferMismatchError(
                f"{what}: device address 0x{address:x} is not aligned to the {self.align}-byte bus"
            )


class ProgramLayout:
    """Buffer specs and arena geometry of one Program (parsed and CRC-checked)."""

    def __init__(self, program: bytes | Program | str | Path, source: str = "program"):
        if isinstance(program, (str, Path)):
            source = str(program)
            program = Path(program).read_bytes()
        if isinstance(program, Program):
            self.program_bytes = program.to_bytes()
            Program.from_bytes(self.program_bytes, source)  # the loader's checks, as for bytes
            self.program = program
        else:
            self.program_bytes = bytes(program)
            self.program = Program.from_bytes(self.program_bytes, source)
        program = self.program
        self.bus_bytes = program.bus_bits // 8
        self.program_spec = BufferSpec(
            "program",
            np.dtype(np.uint8),
            (padded(len(self.program_bytes), self.bus_bytes),),
            self.bus_bytes,
        )
        self.arena_spec = BufferSpec(
            "arena",
            np.dtype(np.int32),
            (padded(program.arena_bytes, self.bus_bytes) // 4,),
            self.bus_bytes,
        )

    @property
    def input(self) -> TensorRef:
        return self.program.input

    @property
    def n_tasks(self) -> int:
        return self.program.n_tasks

    def output(self, task: int) -> TensorRef:
        self.check_task(task)
        return self.program.outputs[task]

    def check_task(self, task) -> int:
        if isinstance(task, bool) or not isinstance(task, (int, np.integer)):
            raise BufferMismatchError(f"task must be an int, got {task!r}")
        if not 0 <= task < self.n_tasks:
            raise BufferMismatchError(
                f"task {task} out of range: the program has {self.n_tasks} task(s)"
            )
        return int(task)

    # ------------------------------------------------------------ input
    def check_input(self, raw) -> np.ndarray:
        """Raw input rows [rows, cols] or a batch [B, rows, cols] -> int32 [B, rows, cols]."""
        ref = self.input
        array = np.asarray(raw)
        if array.dtype.kind not in "iu":
            raise BufferMismatchError(
                f"input: dtype {array.dtype}; raw input must be integers in {ref.fmt} "
                "(quantise floats with quantize_input)"
            )
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[1:] != (ref.rows, ref.cols) or len(array) == 0:
            raise BufferMismatchError(
                f"input: shape {np.shape(raw)}, the program takes [{ref.rows}, {ref.cols}] "
                f"or a batch [B, {ref.rows}, {ref.cols}]"
            )
        low, high = int(array.min()), int(array.max())
        if low < ref.fmt.raw_min or high > ref.fmt.raw_max:
            raise BufferMismatchError(
                f"input: raw values [{low}, {high}] outside the input format {ref.fmt} "
                f"[{ref.fmt.raw_min}, {ref.fmt.raw_max}]"
            )
        return array.astype(np.int32)

    def quantize_input(self, patches) -> np.ndarray:
        """Float patch rows -> raw input values (bit-exact with ap_fixed conversion)."""
        return self.input.fmt.quantize(patches)

    @staticmethod
    def _rows(arena: np.ndarray, ref: TensorRef) -> np.ndarray:
        """The arena words of a tensor: [rows, stride / 4] (a view; rows are padded)."""
        start, words = ref.offset // 4, ref.stride // 4
        return arena[start : start + ref.rows * words].reshape(ref.rows, words)

    def input_region(self, arena: np.ndarray) -> np.ndarray:
        ref = self.input
        return arena[ref.offset // 4 : ref.offset // 4 + ref.rows * ref.stride // 4]

    def output_region(self, arena: np.ndarray, task: int) -> np.ndarray:
        ref = self.output(task)
        return arena[ref.offset // 4 : ref.offset // 4 + ref.rows * ref.stride // 4]

    def write_input(self, arena: np.ndarray, raw_rows: np.ndarray) -> None:
        """Raw [rows, cols] into the arena's input rows (padding words set to zero)."""
        rows = self._rows(arena, self.input)
        rows[:] = 0
        rows[:, : self.input.cols] = raw_rows

    def read_output(self, arena: np.ndarray, task: int) -> np.ndarray:
        """Raw [rows, cols] of a task's output, sign-extended to int64."""
        ref = self.output(task)
        return self._rows(arena, ref)[:, : ref.cols].astype(np.int64)

    def decode(self, raw: np.ndarray, task: int) -> np.ndarray:
        """Raw output values -> float (value = raw * 2**-frac_bits)."""
        return self.output(task).fmt.to_float(raw)

    def describe(self) -> dict:
        """Sizes and offsets for people (the notebooks print this)."""
        program = self.program
        return {
            "model": program.model,
            "program_bytes": len(self.program_bytes),
            "arena_bytes": program.arena_bytes,
            "bus_bits": program.bus_bits,
            "layers": len(program.layers),
            "input": {**program.input.to_dict()},
            "outputs": [ref.to_dict() for ref in program.outputs],
        }


# ---------------------------------------------------------------- host model card


@dataclass(frozen=True)
class ModelCard:
    """The host side of a model: how images become input rows and outputs become results.

    ``output_kind`` is ``"classification"`` (output row 0 holds the class logits) or
    ``"dense"`` (one output row per patch, channels of the task).
    """

    name: str
    family: str
    image_size: tuple[int, int]
    patch_size: int
    in_chans: int
    task_names: tuple[str, ...]
    output_kind: str

    @property
    def grid(self) -> tuple[int, int]:
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, *self.image_size)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        data["task_names"] = list(self.task_names)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        return cls(
            name=str(data["name"]),
            family=str(data["family"]),
            image_size=tuple(int(v) for v in data["image_size"]),
            patch_size=int(data["patch_size"]),
            in_chans=int(data["in_chans"]),
            task_names=tuple(data["task_names"]),
            output_kind=str(data["output_kind"]),
        )

    @classmethod
    def load(cls, path) -> ModelCard:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_build(cls, build) -> ModelCard:
        """From a ``codesign.Build`` (its quantised graph's metadata)."""
        meta = build.graph.meta
        kind = meta["output_kind"]
        return cls(
            name=build.state.name,
            family="vit" if kind == "classification" else "m3vit",
            image_size=tuple(int(v) for v in meta["image_size"]),
            patch_size=int(meta["patch_size"]),
            in_chans=int(meta["in_chans"]),
            task_names=tuple(meta["task_names"]),
            output_kind="classification" if kind == "classification" else "dense",
        )

    def patchify(self, images) -> np.ndarray:
        """Images [B, C, H, W] or [C, H, W] -> patch rows [B, patches, C*P*P] (conv order)."""
        if hasattr(images, "detach"):
            images = images.detach().cpu().numpy()
        images = np.asarray(images, np.float64)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise BufferMismatchError(
                f"images have shape {images.shape}, model {self.name} takes "
                f"[B, {', '.join(map(str, self.image_shape))}]"
            )
        patch = self.patch_size
        grid_h, grid_w = self.grid
        x = images.reshape(len(images), self.in_chans, grid_h, patch, grid_w, patch)
        x = x.transpose(0, 2, 4, 1, 3, 5)
        return x.reshape(len(images), grid_h * grid_w, self.in_chans * patch * patch)

    def finish(self, outputs: np.ndarray) -> np.ndarray:
        """Decoded outputs [B, rows, cols] -> the torch model's shape.

        Classification: [B, classes]; dense (M3ViT): [B, patches, channels].
        """
        return outputs[:, 0, :] if self.output_kind == "classification" else outputs

    def tokens_to_map(self, outputs: np.ndarray) -> np.ndarray:
        """Dense outputs [B, patches, channels] -> maps [B, channels, grid_h, grid_w]
        (numpy twin of ``codesign.models.tokens_to_map``; upsampling is the host's)."""
        grid_h, grid_w = self.grid
        batch, patches, channels = outputs.shape
        if patches != grid_h * grid_w:
            raise ValueError(f"{patches} patch tokens do not fill a {grid_h}x{grid_w} grid")
        return outputs.transpose(0, 2, 1).reshape(batch, channels, grid_h, grid_w)


__all__ = ["BufferMismatchError", "BufferSpec", "ModelCard", "ProgramLayout", "padded"]
