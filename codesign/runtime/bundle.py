"""A folder written by ``codesign deploy``, opened on a board or on a simulated one.

Layout (see ``codesign/deploy.py``)::

    manifest.json    what is inside, whether the bitstream is there ("complete")
    report.json      the build report (fidelity vs torch, formats)
    bitstream/       <name>.bit + <name>.hwh (absent until built with Vivado)
    program.bin      the Program; host.json: the ModelCard; regmap.json
    reference.npz    sample images with torch (CPU) and golden outputs per task
    model/           config.json + weights.pt, for a live torch comparison
    host/codesign_host/  this driver (runtime, program format, numerics, register map)
                     under its own name, so it never mixes with an installed codesign
    notebooks/       the board notebooks

The same module runs as ``codesign.runtime.bundle`` (the installed toolkit) and as
``codesign_host.runtime.bundle`` (the copy in a bundle, numpy and pynq only). The copy
runs the "board" and "golden" devices by itself; "csim" and "rtl" need the HLS/RTL
sources and compilers of a full codesign install, which it imports when present.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from .driver import Accelerator
from .layout import ModelCard, ProgramLayout

DEVICES = ("board", "golden", "csim", "rtl")
RTL_TIMEOUT_S = 3600.0  # driver timeout on the Verilated RTL board
PACKAGE = __name__.split(".")[0]  # "codesign", or "codesign_host" in a bundle's host/
FULL_PACKAGE = "codesign"


class CodesignRequiredError(ImportError):
    """A simulated device needs the full codesign install, which this machine lacks."""


class Bundle:
    """The files of a deploy folder, and an Accelerator on the chosen device."""

    def __init__(self, root):
        self.root = Path(root).resolve()
        manifest = self.root / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.root}: no manifest.json; not a codesign deploy folder")
        self.manifest = json.loads(manifest.read_text())
        self.card = ModelCard.load(self.root / "host.json")
        self.layout = ProgramLayout(self.root / "program.bin")
        self.accelerator: Accelerator | None = None
        self.device = None
        self._reference = None

    @property
    def complete(self) -> bool:
        """True when the bitstream is in the folder (else only simulation can run it)."""
        return bool(self.manifest.get("complete"))

    def open(self, device="board", **kwargs) -> Accelerator:
        """An Accelerator on ``device``: "board" (the overlay in ``bitstream/``), a
        simulated board ("golden", "csim", "rtl"), or any ``pynq.Device`` with the kernel.

        On "rtl" the driver's timeout defaults to ``RTL_TIMEOUT_S``: the Verilated RTL
        takes seconds to minutes per inference where the board takes milliseconds."""
        if isinstance(device, str):
            if device not in DEVICES:
                raise ValueError(f"device {device!r}: choose one of {', '.join(DEVICES)}")
            if device == "board":
                if not self.complete:
                    missing = ", ".join(self.manifest.get("missing", [])) or "the bitstream"
                    project = (self.manifest.get("bitstream_build") or {}).get("hls_project")
                    where = f" in {project}" if project else ""
                    raise FileNotFoundError(
                        f"{self.root}: this bundle has no bitstream ({missing} missing); build "
                        f"it with `make bitstream`{where} on a machine with Vivado (see "
                        "README.md), then deploy again - or open it on a simulated board "
                        "(device='golden' or 'csim')"
                    )
                self.accelerator = Accelerator.from_overlay(
                    self.root / "bitstream", self.layout, self.card, **kwargs
                )
                self.device = self.accelerator.overlay.device
                return self.accelerator
            if device == "rtl":
                kwargs.setdefault("timeout", RTL_TIMEOUT_S)
            device = simulated_device(
                device, self.manifest.get("arch"), self.manifest.get("board"), self.layout
            )
        self.device = device
        self.accelerator = Accelerator.from_device(device, self.layout, self.card, **kwargs)
        return self.accelerator

    def reference(self) -> dict[str, np.ndarray]:
        """Sample images and, per task, the torch CPU output and the golden raw output."""
        if self._reference is None:
            with np.load(self.root / "reference.npz") as data:
                self._reference = {key: data[key] for key in data.files}
        return self._reference

    def torch_model(self):
        """The torch model (CPU, eval mode) when torch and codesign.models are installed,
        else None (the notebooks then compare with ``reference.npz``)."""
        try:
            import torch

            from codesign.models import build_model, config_from_dict
        except ImportError:
            return None
        config = config_from_dict(json.loads((self.root / "model" / "config.json").read_text()))
        model = build_model(config)
        state = torch.load(self.root / "model" / "weights.pt", map_location="cpu")
        model.load_state_dict(state)
        return model.eval()

    def __repr__(self) -> str:
        state = "complete" if self.complete else "no bitstream"
        return f"Bundle({self.card.name} for {self.manifest.get('board')}, {state}, {self.root})"


def simulated_device(kind: str, arch: dict | None = None, board: str | None = None, program=None):
    """A fresh simulated board of ``kind`` ("golden", "csim", "rtl") for the ArchConfig
    ``arch``; the golden and C-sim boards also report the cycle model's latency on
    ``board`` (the golden board of a bundle's driver copy does not: no cycle model in it),
    the RTL board its own cycle count at that board's clock (DDR model at its bandwidth).
    ``program`` (a Program, its bytes or a ProgramLayout) gives the RTL its precision."""
    if kind == "golden":
        from .simulated import golden_board

        return golden_board(board if _cycle_model_available() else None)
    if kind not in ("csim", "rtl"):
        raise ValueError(f"no simulated device {kind!r}; choose golden, csim or rtl")
    if PACKAGE != FULL_PACKAGE and program is not None:
        program = _program_bytes(program)  # the full package's classes are not this copy's
    if kind == "csim":  # the full package has the cycle model: C-sim counts no cycles
        return full_runtime_module("csim_device", "csim").csim_board(arch, board=board)
    return full_runtime_module("rtl_device", "rtl").rtl_board(arch, program=program, board=board)


def full_runtime_module(module: str, device: str | None = None):
    """``codesign.runtime.<module>`` of the full codesign install. A bundle's driver copy
    (``codesign_host``) has no C-sim or RTL boards: they compile the HLS kernel or the
    Verilated RTL, so it borrows them from an installed codesign, or says it cannot."""
    try:
        return importlib.import_module(f"{FULL_PACKAGE}.runtime.{module}")
    except ImportError as error:
        if PACKAGE == FULL_PACKAGE:
            raise
        what = f"device={device!r}" if device else f"codesign.runtime.{module}"
        raise CodesignRequiredError(
            f"{what} needs the full codesign package (pip install -e <codesign repo>): it "
            f"compiles the HLS kernel or the RTL; this bundle's driver ({PACKAGE}) runs "
            f"device='board' and device='golden' on its own ({type(error).__name__}: {error})"
        ) from error


def _program_bytes(program) -> bytes:
    """The bytes of a ProgramLayout, a Program or program.bin's contents."""
    if hasattr(program, "program_bytes"):
        return program.program_bytes
    return program.to_bytes() if hasattr(program, "to_bytes") else bytes(program)


def _cycle_model_available() -> bool:
    """The cycle model needs ``estimate`` and ``hls`` beside this runtime; the bundle's
    driver copy leaves them out, so its golden board reports no cycles."""
    try:
        return all(importlib.util.find_spec(f"{PACKAGE}.{name}") for name in ("estimate", "hls"))
    except ImportError:
        return False


def open_bundle(root, device="board", **kwargs) -> Bundle:
    """Open a deploy folder and its Accelerator on ``device`` (see ``Bundle.open``)."""
    bundle = Bundle(root)
    bundle.open(device, **kwargs)
    return bundle


__all__ = [
    "DEVICES",
    "RTL_TIMEOUT_S",
    "Bundle",
    "CodesignRequiredError",
    "full_runtime_module",
    "open_bundle",
    "simulated_device",
]
