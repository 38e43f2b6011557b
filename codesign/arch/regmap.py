"""The kernel's AXI4-Lite register map, computed once for every consumer.

Layout follows Vitis HLS ``ap_ctrl_hs`` with ``s_axilite``: control at 0x00, GIE 0x04,
IER 0x08, ISR 0x0C, then the arguments from 0x10 in declaration order. A 32-bit
argument takes one data word and one reserved word; a 64-bit pointer takes two data
words (low, high) and one reserved word. The HLS header, the RTL top, the PYNQ
driver and the cocotb testbench all read this object.
"""

from __future__ import annotations

from dataclasses import dataclass

CTRL = 0x00
GIE = 0x04
IER = 0x08
ISR = 0x0C
AP_START = 1 << 0
AP_DONE = 1 << 1
AP_IDLE = 1 << 2
AP_READY = 1 << 3
AUTO_RESTART = 1 << 7

# (name, bits, meaning) in the kernel's argument order
KERNEL_ARGS = (
    ("program", 64, "DDR address of program.bin (descriptors, weights, tables)"),
    ("arena", 64, "DDR address of the activation arena (input and outputs inside)"),
    ("task", 32, "task id selecting gates and heads"),
)


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    bits: int
    meaning: str


@dataclass(frozen=True)
class RegisterMap:
    registers: tuple[Register, ...]
    size: int  # bytes of address space the control slave decodes

    def offset(self, name: str) -> int:
        for reg in self.registers:
            if reg.name == name:
                return reg.offset
        raise KeyError(f"no register {name!r}")

    def to_dict(self) -> dict:
        return {
            "size": self.size,
            "registers": [
                {"name": r.name, "offset": r.offset, "bits": r.bits, "meaning": r.meaning}
                for r in self.registers
            ],
            "ctrl_bits": {
                "ap_start": AP_START,
                "ap_done": AP_DONE,
                "ap_idle": AP_IDLE,
                "ap_ready": AP_READY,
                "auto_restart": AUTO_RESTART,
            },
        }


def weight_registers(weight_ports: int) -> list[str]:
    """The pointer arguments of the further weight masters (``weights1`` ... for m_axi
    gmem2 ...): the host sets each to the program's address."""
    return [f"weights{index}" for index in range(1, weight_ports)]


def kernel_args(weight_ports: int = 1) -> tuple[tuple[str, int, str], ...]:
    """KERNEL_ARGS, then one pointer per further weight master (``weight_registers``)."""
    extra = tuple(
        (name, 64, f"DDR address of program.bin for weight master gmem{index + 2}")
        for index, name in enumerate(weight_registers(weight_ports))
    )
    return KERNEL_ARGS + extra


def register_map(weight_ports: int = 1) -> RegisterMap:
    """The register map of a kernel with `weight_ports` weight masters
    (ArchConfig.weight_ports)."""
    regs = [
        Register("CTRL", CTRL, 32, "bit0 ap_start, bit1 ap_done, bit2 ap_idle, bit3 ap_ready"),
        Register("GIE", GIE, 32, "global interrupt enable"),
        Register("IER", IER, 32, "interrupt enable (bit0 done, bit1 ready)"),
        Register("ISR", ISR, 32, "interrupt status (toggle on write)"),
    ]
    offset = 0x10
    for name, bits, meaning in kernel_args(weight_ports):
        regs.append(Register(name, offset, bits, meaning))
        offset += 4 * (bits // 32) + 4  # data words then one reserved word
    from ..contract import STATUS_OFFSET

    # the kernel's output register (s_axilite offset pinned to the RTL's debug STATUS)
    regs.append(
        Register(
            "STATUS",
            STATUS_OFFSET,
            32,
            "program check of the last run: 0 ran; else code [7:0], layer [23:8], header [24]",
        )
    )
    end = max(reg.offset + 4 * (reg.bits // 32) for reg in regs)
    size = 1 << (end - 1).bit_length()
    return RegisterMap(tuple(regs), size)
