"""PYNQ host runtime: the driver for the codesign kernel, and simulated boards.

On a board::

    from codesign.runtime import Accelerator, ModelCard
    accel = Accelerator.from_overlay("bitstreams/m3vit-zcu102", "program.bin",
                                     ModelCard.load("host.json"))
    depth = accel.run(images, task=1)

In simulation the same driver runs on a ``SimulatedBoard`` (a ``pynq.Device``)::

    from codesign.runtime import golden_board
    accel = Accelerator.from_device(golden_board(), program_bytes, card)

``open_bundle`` does either for a folder written by ``codesign deploy``. Only numpy
and pynq are needed on the board. A bundle carries this package as
``codesign_host.runtime`` (its own name, so it never mixes with an installed codesign):
that copy has the board and the golden board; the C-sim and RTL boards compile the HLS
kernel or the RTL and come from the full codesign install (``bundle.full_runtime_module``).
"""

from .bundle import Bundle, CodesignRequiredError, open_bundle
from .driver import (
    Accelerator,
    KernelBusyError,
    KernelNotFoundError,
    KernelTimeoutError,
    ProgramMismatchError,
    RunTiming,
    describe_ctrl,
    find_kernel_ip,
)
from .layout import BufferMismatchError, BufferSpec, ModelCard, ProgramLayout

_SIMULATED = {
    "SimulatedBoard",
    "SimulatedMemory",
    "SimulatedBusError",
    "SimulatedKernelError",
    "KernelModel",
    "KernelRun",
    "GoldenKernel",
    "golden_board",
}
_CSIM = {"CsimKernel", "csim_board"}
_RTL = {"RtlKernel", "rtl_board"}


def __getattr__(name):
    # simulated boards import pynq's Device and the golden executor: load on first use
    if name in _SIMULATED:
        from . import simulated

        return getattr(simulated, name)
    if name in _CSIM | _RTL:
        from .bundle import full_runtime_module

        return getattr(full_runtime_module("csim_device" if name in _CSIM else "rtl_device"), name)
    raise AttributeError(name)


__all__ = [
    "Accelerator",
    "BufferMismatchError",
    "BufferSpec",
    "Bundle",
    "CodesignRequiredError",
    "KernelBusyError",
    "KernelNotFoundError",
    "KernelTimeoutError",
    "ModelCard",
    "ProgramLayout",
    "ProgramMismatchError",
    "RunTiming",
    "describe_ctrl",
    "find_kernel_ip",
    "open_bundle",
    *sorted(_SIMULATED | _CSIM | _RTL),
]
