"""Minimal host code for the codesign kernel: pynq and numpy, nothing from codesign.

docs/interface.md shows this file as the example of writing one's own driver; the
tests run it on a simulated board and check it against the golden executor, so the
example stays true. Register offsets and header word indices are literals here on
purpose (they are the documented interface); the tests compare them with
``codesign.arch.register_map()`` and ``codesign.program``.
"""

import time
import zlib

import numpy as np
import pynq

# AXI4-Lite registers (ap_ctrl_hs) and CTRL bits
CTRL, PROGRAM, ARENA, TASK, STATUS = 0x00, 0x10, 0x1C, 0x28, 0x80
AP_START, AP_DONE = 0x1, 0x2
# program.bin header: 32-bit word indices
H_TOTAL_BYTES, H_CRC32, H_ARENA_BYTES, H_BUS_BITS, H_N_TASKS = 4, 5, 11, 12, 16
H_INPUT, H_OUTPUTS = 17, 22  # tensor refs: offset, rows, cols, stride, format word
H_GEOMETRY = 98  # image channels, patch, height, width


def padded(value, multiple):
    return -(-value // multiple) * multiple


def frac_bits(fmt_word):
    """Fraction bits of a format word: bits [15:8] as a signed byte."""
    frac = (fmt_word >> 8) & 0xFF
    return frac - 256 if frac >= 128 else frac


def patchify(images, patch):
    """[B, C, H, W] -> [B, patches, C*patch*patch]: patches row-major, (c, y, x) inside."""
    batch, channels, height, width = images.shape
    x = images.reshape(batch, channels, height // patch, patch, width // patch, patch)
    return x.transpose(0, 2, 4, 1, 3, 5).reshape(batch, -1, channels * patch * patch)


def quantize(values, fmt_word):
    """Floats -> raw input values for a signed RND/SAT format (what the compiler picks
    for the input): round half up at 2**-F, then saturate to the width."""
    width, rounding, overflow = fmt_word & 0xFF, (fmt_word >> 17) & 7, (fmt_word >> 20) & 7
    if not (fmt_word >> 16) & 1 or rounding != 2 or overflow != 1:
        raise NotImplementedError("this example handles signed RND/SAT input formats only")
    if not np.isfinite(values).all():  # NaN has no fixed-point value: refuse, never guess
        raise ValueError("the input has NaN or infinite values")
    raw = np.floor(np.ldexp(np.asarray(values, np.float64), frac_bits(fmt_word)) + 0.5)
    limit = 2 ** (width - 1)
    return np.clip(raw, -limit, limit - 1).astype(np.int64)


def run(control, allocate, program, input_raw, task=0, timeout=10.0):
    """One inference. control: pynq.MMIO of the kernel; allocate(shape, dtype) -> buffer;
    program: the bytes of program.bin; input_raw: int [rows, cols]. Returns the task's
    output as float [rows, cols]."""
    header = np.frombuffer(program[:512], "<u4").astype(np.int64)
    total, arena_bytes = int(header[H_TOTAL_BYTES]), int(header[H_ARENA_BYTES])
    zeroed = bytearray(program)
    zeroed[4 * H_CRC32 : 4 * H_CRC32 + 4] = bytes(4)
    if total != len(program) or zlib.crc32(bytes(zeroed)) != header[H_CRC32]:
        raise ValueError("program.bin is truncated or corrupted (size or CRC-32)")
    bus_bytes = int(header[H_BUS_BITS]) // 8
    if not 0 <= task < header[H_N_TASKS]:
        raise ValueError(f"task {task}: the program has {header[H_N_TASKS]} task(s)")
    in_offset, in_rows, in_cols, in_stride, _ = header[H_INPUT : H_INPUT + 5]
    ref = header[H_OUTPUTS + 5 * task : H_OUTPUTS + 5 * task + 5]
    out_offset, out_rows, out_cols, out_stride, out_fmt = (int(v) for v in ref)

    program_buffer = allocate((padded(total, bus_bytes),), np.uint8)
    program_buffer[:] = 0
    program_buffer[:total] = np.frombuffer(program, np.uint8)
    program_buffer.sync_to_device()
    arena = allocate((padded(arena_bytes, bus_bytes) // 4,), np.int32)
    arena[:] = 0
    rows = arena[in_offset // 4 : (in_offset + in_rows * in_stride) // 4]
    rows.reshape(in_rows, in_stride // 4)[:, :in_cols] = input_raw
    arena.sync_to_device()

    for offset, buffer in ((PROGRAM, program_buffer), (ARENA, arena)):
        address = buffer.device_address
        control.write(offset, address & 0xFFFFFFFF)  # 64-bit pointers: low word first
        control.write(offset + 4, address >> 32)
    control.write(TASK, task)
    control.write(CTRL, AP_START)
    deadline = time.monotonic() + timeout
    while not control.read(CTRL) & AP_DONE:  # ap_done clears when read
        if time.monotonic() > deadline:
            raise TimeoutError(f"ap_done not set after {timeout} s")
    status = control.read(STATUS)  # 0: it ran; else the kernel refused and ran nothing
    if status:
        where = "the header" if status >> 24 & 1 else f"layer {status >> 8 & 0xFFFF}"
        raise RuntimeError(f"the kernel refused the program: code {status & 0xFF} at {where}")

    arena.sync_from_device()
    out = arena[out_offset // 4 : (out_offset + out_rows * out_stride) // 4]
    raw = out.reshape(out_rows, out_stride // 4)[:, :out_cols].astype(np.int64)
    return np.ldexp(raw.astype(np.float64), -frac_bits(out_fmt))


def on_board(bitfile, program_path, images, task=0):
    """The whole thing on a PYNQ board: overlay, kernel IP, buffers, one run per image
    (the patch size comes from the Program header's image geometry)."""
    overlay = pynq.Overlay(bitfile)
    kernel = next(d for d in overlay.ip_dict.values() if ":codesign_top:" in d["type"])
    control = pynq.MMIO(kernel["phys_addr"], kernel["addr_range"])
    with open(program_path, "rb") as handle:
        program = handle.read()
    header = np.frombuffer(program[:512], "<u4")
    input_fmt, patch = int(header[H_INPUT + 4]), int(header[H_GEOMETRY + 1])
    rows = quantize(patchify(images, patch), input_fmt)
    return [run(control, pynq.allocate, program, sample, task) for sample in rows]
