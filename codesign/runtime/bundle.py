"""A folder written by ``codesign deploy``, opened on a board or on a simulated one.

Layout (see ``codesign/deploy.py``)::

    manifest.json    what is inside, whether the bitstream is there ("complete")
    report.json      the build report (fidelity vs torch, formats)
    bitstream/       <name>.bit + <name>.hwh (absent until built with Vivado)
    program.bin      the Program; host.json: the ModelCard; regmap.json
    reference.npz    sample images with torch (CPU) and golden outputs per task
    model/           config.json + weights.pt, for a live torch comparison
    host/codesign/   this driver (runtime, program format, numerics, register map)
    notebooks/       the board notebooks
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .driver import Accelerator
from .layout import ModelCard, ProgramLayout

DEVICES = ("board", "golden", "csim", "rtl")
RTL_TIMEOUT_S = 3600.0  # driver timeout on the Verilated RTL board


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
                    raise FileNotFoundError(
                        f"{self.root}: this bundle has no bitstream ({missing} missing); build "
                        "it with `make bitstream` on a machine with Vivado, then deploy again"
                        " - or open it on a simulated board (device='golden' or 'csim')"
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
    ``arch``; the golden board also reports the cycle model's latency on ``board``, the
    RTL board its own cycle count at that board's clock (DDR model at its bandwidth).
    ``program`` (a Program, its bytes or a ProgramLayout) gives the RTL its precision."""
    if kind == "golden":
        from .simulated import golden_board

        return golden_board(board if _cycle_model_available() else None)
    if kind == "csim":
        from .csim_device import csim_board

        return csim_board(arch)
    if kind == "rtl":
        from .rtl_device import rtl_board

        return rtl_board(arch, program=program, board=board)
    raise ValueError(f"no simulated device {kind!r}; choose golden, csim or rtl")


def _cycle_model_available() -> bool:
    """The cycle model needs codesign.estimate and codesign.hls, which the bundle's
    driver copy (host/) leaves out: on the board the golden board reports no cycles."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) for m in ("codesign.estimate", "codesign.hls"))
    except ImportError:
        return False


def open_bundle(root, device="board", **kwargs) -> Bundle:
    """Open a deploy folder and its Accelerator on ``device`` (see ``Bundle.open``)."""
    bundle = Bundle(root)
    bundle.open(device, **kwargs)
    return bundle


__all__ = ["DEVICES", "RTL_TIMEOUT_S", "Bundle", "open_bundle", "simulated_device"]
