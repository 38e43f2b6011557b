"""Python API mirroring the CLI: ``codesign.build(...)`` returns a ``Build``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .executors import NAMES
from .flow import BuildState, make_options, run_steps, write_outputs
from .frontend import convert
from .program import Program

EXECUTORS = NAMES  # codesign.executors


class Build:
    """A built accelerator: Program, report, and predictions through an executor."""

    def __init__(self, state: BuildState):
        self._state = state
        self._executors: dict = {}  # codesign.executors, each built on first use

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
        meta = self.graph.meta
        shape = (meta["in_chans"], *meta["image_size"])
        try:
            images = np.asarray(images, np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"images must be numbers shaped [B, *{shape}]") from None
        if images.shape == shape:
            images = images[None]
        if images.ndim != 4 or images.shape[1:] != shape:
            raise ValueError(f"images have shape {images.shape}, expected [B, *{shape}]")
        if len(images) == 0:
            raise ValueError("predict needs at least one image; the batch is empty")
        bad = int(np.count_nonzero(~np.isfinite(images)))
        if bad:
            raise ValueError(f"images contain {bad} NaN or infinite pixel values")
        patches = self.graph.patchify(images)
        return self.program.input.fmt.quantize(patches)

    @property
    def csim(self) -> dict:
        """The C-simulation entry of the report (``ran``, ``bit_exact``, ``seconds``...)."""
        return self._state.report.get("csim", {})

    def predict(self, images, task: int = 0, executor: str = "golden") -> np.ndarray:
        """Run images through an executor; returns float outputs shaped like the torch model's.

        ViT: [B, classes]; M3ViT: [B, patches, channels of the task]. ``executor="golden"``
        is the numpy golden executor; ``"csim"`` the HLS kernel compiled with g++ (compiled
        once per ArchConfig and cached; all images go through one testbench process);
        ``"rtl"`` the open SystemVerilog top under Verilator (``codesign.rtl.harness``; built
        once per ArchConfig and precision, minutes for a large tile, then cached).
        """
        if executor not in EXECUTORS:
            raise ValueError(f"executor {executor!r} is not available; choose from {EXECUTORS}")
        tasks = list(self.graph.tasks)
        if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or task not in tasks:
            raise ValueError(f"task must be one of {tasks} for {self._state.name}, got {task!r}")
        task = int(task)
        raw = self.quantize_input(images)
        if executor not in self._executors:
            from .executors import make_executor

            self._executors[executor] = make_executor(
                executor,
                self._state.arch,
                precision=self._state.options.precision,
                board=self._state.board.name,
                ddr_bytes=len(self.program_bytes) + self.program.arena_bytes,
            )
        from .executors import run_input

        run, fmt = self._executors[executor], self.program.outputs[task].fmt
        outputs = [fmt.to_float(run_input(run, self.program, sample, task)) for sample in raw]
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

    Files (program.bin, program.json, report.json, report.md, hls/...) are written only
    when ``out`` is given. ``precision`` defaults to the board's (w16a24; w8a16 on the
    Ultra96-V2, ``arch.config.BOARD_PRECISION``; m3vit on the ZCU102 w16a16,
    ``MODEL_PRECISION``). Extra keyword options: ``seed``, ``arch``
    (an ArchConfig, checked as given, or a dict of the fields that change the board's
    default, whose buffers are then sized to the model), ``calib``
    (count or images), ``eval_images`` (count or images), ``plot``, ``csim``, ``quant``,
    ``weight_formats`` ("channel" / "tensor"), ``rounding`` ("auto" / "nearest" / "gptq").

    ``csim=True`` also C-simulates the HLS kernel with g++ on the evaluation images of every
    verified task and compares each layer's bits with the golden executor (report
    ``csim.*``). The API default is False: the first compile for an ArchConfig takes tens
    of seconds, which interactive use and tests should not pay by surprise; the
    ``codesign build`` command runs it by default (``--no-csim`` to skip).

    ``progress``: ``None`` (default) shows a progress bar of the build steps on stderr when
    a person is watching (a terminal or a notebook), ``True``/``False`` always/never, or a
    callable ``progress(step_name, index, total)`` called before each step.
    """
    from .flow import STEPS
    from .progress import step_bar

    opts = make_options(model_or_name, board, task, precision, weights, out, **options)
    steps = len(STEPS) + (opts.out is not None)
    with step_bar(steps, progress) as callback:
        state = run_steps(BuildState(opts), callback)
        if opts.out is not None:
            if callback:
                callback("write", len(STEPS), steps)
            write_outputs(state, opts.out, plot=opts.plot)
    return Build(state)


__all__ = ["Build", "build", "convert"]
