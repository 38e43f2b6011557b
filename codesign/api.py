"""Python API mirroring the CLI: ``codesign.build(...)`` returns a ``Build``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .flow import BuildState, make_options, run_steps, write_outputs
from .frontend import convert
from .golden import GoldenExecutor
from .program import Program

EXECUTORS = ("golden",)


class Build:
    """A built accelerator: Program, report, and predictions through an executor."""

    def __init__(self, state: BuildState):
        self._state = state
        self._golden: GoldenExecutor | None = None

    @property
    def report(self) -> dict:
        return self._state.report

    @property
    def program(self) -> Program:
        return self._state.program

    @property
    def program_bytes(self) -> bytes:
        return self._state.program_bytes

    @property
    def graph(self):
        """The quantised Graph IR the Program was compiled from."""
        return self._state.graph_quant

    @property
    def module(self):
        return self._state.module

    @property
    def out_dir(self) -> Path | None:
        return self._state.out_dir

    @property
    def state(self) -> BuildState:
        """Every intermediate artefact of the build steps."""
        return self._state

    def quantize_input(self, images) -> np.ndarray:
        """Images [B, C, H, W] (or one [C, H, W]) -> raw input matrices [B, patches, K]."""
        if hasattr(images, "detach"):
            images = images.detach().cpu().numpy()
        patches = self.graph.patchify(np.asarray(images, np.float64))
        return self.program.input.fmt.quantize(patches)

    def predict(self, images, task: int = 0, executor: str = "golden") -> np.ndarray:
        """Run images through an executor; returns float outputs shaped like the torch model's.

        ViT: [B, classes]; M3ViT: [B, patches, channels of the task].
        """
        if executor not in EXECUTORS:
            raise ValueError(f"executor {executor!r} is not available; choose from {EXECUTORS}")
        if self._golden is None:
            self._golden = GoldenExecutor(Program.from_bytes(self.program_bytes))
        raw = self.quantize_input(images)
        outputs = [self._golden.run(sample, task).to_float() for sample in raw]
        out = np.stack(outputs)
        if self.graph.meta["output_kind"] == "classification":
            out = out[:, 0, :]
        return out

    def __repr__(self) -> str:
        fid = self.report.get("fidelity", {}).get("vs_torch", {})
        return (
            f"Build({self._state.name} on {self._state.board.name}, "
            f"cosine={fid.get('cosine', float('nan')):.6f}, out={self.out_dir})"
        )


def build(
    model_or_name,
    board: str = "zcu102",
    task=None,
    precision=None,
    weights=None,
    out=None,
    *,
    progress=None,
    **options,
) -> Build:
    """Build an accelerator for a registered model name or an ``nn.Module``.

    Files (program.bin, program.json, report.json, report.md...) are written only when
    ``out`` is given. Extra keyword options: ``seed``, ``arch`` (ArchConfig), ``calib``
    (count or images), ``eval_images`` (count or images), ``plot``.
    """
    opts = make_options(model_or_name, board, task, precision, weights, out, **options)
    state = run_steps(BuildState(opts), progress)
    if opts.out is not None:
        write_outputs(state, opts.out, plot=opts.plot)
    return Build(state)


__all__ = ["Build", "build", "convert"]
