"""The build: named steps from a torch model to a Program, its verification and report.

Each step reads and writes fields of one ``BuildState``; ``STEPS`` lists them in order
so a caller (the CLI, the Python API, a test) can run them one by one, show progress,
and inspect every intermediate artefact (float graph, transformed graph, quantised
graph, Program, golden traces).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .arch import ArchConfig, Board, Precision, get_board, parse_precision, register_map
from .arch.config import default_arch, default_precision
from .arch.ddr import DEFAULT_EFFICIENCY
from .compiler import compile_graph
from .fidelity import agreement, compare, worst
from .frontend import convert
from .golden import GoldenExecutor
from .ir import Graph, run_float
from .passes import run_passes
from .program import Program
from .quantize import quantize
from .util import atomic_output_dir

CALIB_SEED = 1234
EVAL_SEED = 4321


@dataclass
class BuildOptions:
    model: object  # registered name, config path, or an nn.Module
    board: str = "zcu102"
    tasks: list[int] | None = None  # tasks to verify and report (the Program holds all)
    precision: Precision = field(default_factory=Precision)
    weights: str | None = None
    seed: int = 0
    arch: ArchConfig | None = None  # None: the board's default, shrunk until it fits
    # an arch given as a dict (or --arch key=value): the buffer maxima and tables it left
    # out are sized to the model, like the board's default
    arch_fields: frozenset[str] | None = None
    # None: the model's dataset, else 4 random images; a count (random), "digits", an .npy
    # path, a folder of images, or an array [N, C, H, W] (see codesign.calibration)
    calib: int | str | Path | np.ndarray | None = None
    # a count (seeded Gaussian images), an .npy path or a folder of images, or an array
    eval_images: int | str | Path | np.ndarray = 1
    # "auto": narrow activations get LayerNorm smoothing and MSE-chosen formats
    # (codesign.quantize); "max": every format from the calibrated maximum
    quant: str = "auto"
    # "channel": a format per output channel of every linear layer and expert; "tensor"
    weight_formats: str = "channel"
    # "auto": GPTQ (each layer's output error on the calibration inputs) for weights of up
    # to 8 bits, round-to-nearest above; or "nearest" / "gptq" (codesign.rounding)
    rounding: str = "auto"
    ddr_efficiency: float = DEFAULT_EFFICIENCY  # the DDR model's sustained share of the peak
    # activations share arena bytes when their lifetimes do not overlap (codesign.memory_plan)
    arena_reuse: bool = True
    out: Path | None = None
    plot: bool = True
    csim: bool = False  # run the HLS kernel's g++ C-simulation after verify (CLI default: on)
    prune: str | None = None  # e.g. "lpvit:0.5": block-prune before conversion
    rtl: bool = False  # write the open RTL (rtl/ + filelist.f), lint it with Verilator
    rtl_synth: str | None = None  # also count its resources with Yosys: "dsp", "ffs", "full"


@dataclass
class BuildState:
    options: BuildOptions
    board: Board | None = None
    arch: ArchConfig | None = None
    module: object = None
    name: str = ""
    graph_float: Graph | None = None
    graph: Graph | None = None
    graph_quant: Graph | None = None
    program: Program | None = None
    program_bytes: bytes = b""
    eval_images: np.ndarray | None = None
    torch_out: dict[int, np.ndarray] = field(default_factory=dict)
    golden_out: dict[int, np.ndarray] = field(default_factory=dict)
    fidelity: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    # C-sim cases from verify: the golden executor's per-layer outputs of every image/task
    csim_cases: list = field(default_factory=list)
    csim: dict = field(default_factory=dict)  # report entry of the C-simulation
    rtl_files: dict[str, str] = field(default_factory=dict)  # the rtl step: file -> text
    arch_choice: dict = field(default_factory=dict)
    pruning: dict = field(default_factory=dict)  # summary of --prune or of pruned --weights
    estimate: dict = field(default_factory=dict)  # report entry of the cycle/resource model
    first_input: dict[int, np.ndarray] = field(default_factory=dict)  # task -> raw input
    weights_path: object = None  # the state dict loaded (a path or mapping), None if random
    weights_source: str = ""  # how the report names it when not simply the path
    calibration: object = None  # codesign.calibration.Calibration, resolved once


def _images(spec, count_or_array, shape, seed: int) -> np.ndarray:
    if isinstance(count_or_array, (str, Path)):  # an .npy file or a folder of images
        from .calibration import load_images

        return load_images(count_or_array, shape).images
    if isinstance(count_or_array, (int, np.integer)):
        if count_or_array < 1:
            raise ValueError(f"need at least one {spec} image, got {count_or_array}")
        rng = np.random.default_rng(seed)
        return rng.standard_normal((int(count_or_array), *shape))
    images = np.asarray(count_or_array, np.float64)
    if images.ndim == 3:
        images = images[None]
    if images.shape[1:] != tuple(shape) or len(images) == 0:
        raise ValueError(f"{spec} images have shape {images.shape}, expected (N, *{tuple(shape)})")
    return images


def _image_source(spec) -> str:
    """Where the evaluation images came from, for the report."""
    if isinstance(spec, (int, np.integer)):
        return "random (seeded Gaussian)"
    if isinstance(spec, (str, Path)):
        return Path(spec).name
    return "given by the caller"


def _torch_forward(module, images: np.ndarray, task: int, multitask: bool) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = torch.as_tensor(images, dtype=torch.float32)
        out = module(x, task) if multitask else module(x)
    return out.double().numpy()


# ---------------------------------------------------------------- steps


def step_load(state: BuildState) -> None:
    """Resolve board and ArchConfig; create or take the torch model."""
    opts = state.options
    state.board = get_board(opts.board)
    name = opts.model if isinstance(opts.model, str) else None
    state.arch = opts.arch or default_arch(state.board.name, name, opts.precision)
    if state.arch.weight_ports > state.board.weight_ports_max:
        raise ValueError(
            f"ArchConfig.weight_ports={state.arch.weight_ports}: {state.board.name} has "
            f"{len(state.board.pl_ports)} PS slave ports for the kernel's masters (program, "
            f"arena, further weight ports), so at most {state.board.weight_ports_max}"
        )
    if isinstance(opts.model, str) and opts.model.startswith("timm:"):
        from .models import RANDOM_WEIGHTS, load_weights
        from .models.timm_support import create_from_spec, parse_spec

        state.module = create_from_spec(opts.model, seed=opts.seed)
        if opts.weights not in (None, RANDOM_WEIGHTS):
            load_weights(state.module, opts.weights)
            state.weights_path = opts.weights
        state.name = parse_spec(opts.model)[0]
    elif isinstance(opts.model, (str, Path)):
        from .models import RANDOM_WEIGHTS, checkpoint_path, create_model, resolve_config

        config = resolve_config(str(opts.model))
        weights = opts.weights
        if weights is None and checkpoint_path(config) is not None:
            weights = checkpoint_path(config)  # the model ships trained weights: use them
            state.weights_source = f"{config.checkpoint} (the model's shipped checkpoint)"
        elif weights == RANDOM_WEIGHTS:
            weights = None
        state.module = create_model(config, seed=opts.seed, weights=weights or RANDOM_WEIGHTS)
        state.weights_path = weights
        state.name = Path(str(opts.model)).stem
    else:
        state.module = opts.model
        if opts.weights is not None:
            from .models import load_weights

            load_weights(state.module, opts.weights)
            state.weights_path = opts.weights
        state.module.eval()
        state.name = getattr(state.module, "name", None) or type(state.module).__name__.lower()


def step_prune(state: BuildState) -> None:
    """LPViT / magnitude block pruning (blocks = UCU tiles), or the summary a pruned
    weights file carries; either way the compiler then stores the layers block-sparse."""
    opts = state.options
    if opts.prune:
        from .prune.spec import apply_prune_spec

        images = _calibration(state, _input_shape(state.module)).images
        # each layer costed on the ArchConfig this build compiles for
        state.module, state.pruning = apply_prune_spec(
            state.module,
            opts.prune,
            images,
            state.arch,
            board=state.board.name,
            precision=opts.precision,
            ddr_efficiency=opts.ddr_efficiency,
            given=opts.arch is not None,
            given_fields=opts.arch_fields,
        )
    elif isinstance(state.weights_path, (str, Path)):
        from .prune.io import read_pruning_summary

        state.pruning = read_pruning_summary(state.weights_path) or {}
        tile = state.pruning.get("tile")
        if tile and opts.arch is None:  # compile onto the tile the blocks were pruned for
            state.arch = state.arch.with_(tile_out=int(tile[0]), tile_in=int(tile[1]))


def step_convert(state: BuildState) -> None:
    """torch module -> float Graph IR."""
    state.graph_float = convert(state.module, state.name)


def step_transform(state: BuildState) -> None:
    """Graph passes: fold the attention scale, fuse GELU and residual adds."""
    state.graph = run_passes(state.graph_float)


def step_quantize(state: BuildState) -> None:
    """Calibrate on sample images and choose every tensor's format."""
    graph = state.graph
    shape = (graph.meta["in_chans"], *graph.meta["image_size"])
    state.calibration = _calibration(state, shape)
    images = state.calibration.images
    state.graph_quant = quantize(
        graph,
        graph.patchify(images),
        state.options.precision,
        method=state.options.quant,
        real_calibration=not state.calibration.random,
        weight_formats=state.options.weight_formats,
        rounding=state.options.rounding,
    )


def _calibration(state: BuildState, shape):
    """The calibration images (resolved once: prune and quantize see the same ones)."""
    if state.calibration is None:
        from .calibration import resolve

        dataset = getattr(getattr(state.module, "config", None), "dataset", None)
        state.calibration = resolve(state.options.calib, shape, dataset=dataset, seed=CALIB_SEED)
    return state.calibration


def _input_shape(module) -> tuple[int, int, int]:
    embed = module.patch_embed
    return (embed.proj.in_channels, *embed.img_size)


def step_compile(state: BuildState) -> None:
    """Quantised graph + ArchConfig -> Program (descriptors, packed weights, tables).

    The design must fit the board: a user's ArchConfig that does not is refused with
    the resource and the overshoot; without one, the largest default that fits is used.
    """
    from .dse import choose_arch, model_limits, model_tables, sized_window
    from .estimate import check_fits

    if state.options.arch is None:  # the default's buffers must at least hold this model
        needs = model_limits(state.graph_quant)
        state.arch = state.arch.with_(
            **{key: max(getattr(state.arch, key), value) for key, value in needs.items()},
            **model_tables(state.graph_quant),
        )
    elif state.options.arch_fields is not None:  # the rest of a partial arch: sized
        given = state.options.arch_fields
        sizes = {**model_limits(state.graph_quant), **model_tables(state.graph_quant)}
        state.arch = state.arch.with_(**{k: v for k, v in sizes.items() if k not in given})
    program = compile_graph(state.graph_quant, state.arch, arena_reuse=state.options.arena_reuse)
    given = state.options.arch_fields or frozenset()
    defaulted = state.options.arch is None or state.options.arch_fields is not None
    if defaulted and "arena_window_kib" not in given:  # cut to what the plan uses
        sized = sized_window(state.arch, program)
        if sized != state.arch:
            state.arch = sized
            program = compile_graph(state.graph_quant, sized, arena_reuse=state.options.arena_reuse)
    if state.options.arch is None:
        chosen, tried = choose_arch(program, state.graph_quant, state.board, state.arch)
        state.arch_choice = {
            "chosen_automatically": True,
            "rejected": [
                {"arch": {k: v for k, v in a.to_dict().items() if v != chosen.to_dict()[k]},
                 "problems": problems}
                for a, problems in tried
            ],
        }  # fmt: skip
        if chosen != state.arch:
            state.arch = chosen
            program = compile_graph(
                state.graph_quant, chosen, arena_reuse=state.options.arena_reuse
            )
    else:
        check_fits(program, state.arch, state.board)
        state.arch_choice = {"chosen_automatically": False, "rejected": []}
    state.program = program
    state.program_bytes = program.to_bytes()


def _tasks(state: BuildState) -> list[int]:
    tasks = state.options.tasks
    available = state.graph.tasks
    if tasks is None:
        return available
    for task in tasks:
        if task not in available:
            raise ValueError(f"task {task} not in model {state.name} (tasks {available})")
    return list(tasks)


def step_verify(state: BuildState) -> None:
    """Run the golden executor from the Program bytes; compare with torch and the float IR
    (the quantised graph's: calibration may have rescaled channels, e.g. smoothing)."""
    graph, program = state.graph_quant, Program.from_bytes(state.program_bytes)
    shape = (graph.meta["in_chans"], *graph.meta["image_size"])
    state.eval_images = _images("evaluation", state.options.eval_images, shape, EVAL_SEED)
    patches = graph.patchify(state.eval_images)
    executor = GoldenExecutor(program)
    multitask = len(graph.tasks) > 1
    names = graph.meta["task_names"]
    per_task, per_layer = {}, {}
    keep = state.options.csim
    state.csim_cases = []
    for task in _tasks(state):
        ref = _torch_forward(state.module, state.eval_images, task, multitask)
        outs, layer_stats = [], {}
        for index, sample in enumerate(patches):
            raw = program.input.fmt.quantize(sample)
            state.first_input.setdefault(task, raw)
            result = executor.run(raw, task, trace=index == 0 or keep)
            if keep or index == 0:  # the first image always: the HLS testbench's case
                state.csim_cases.append(_csim_case(program, raw, task, index, result))
            outs.append(result.to_float())
            for layer, count in result.saturations.items():
                layer_stats.setdefault(layer, {"saturations": 0})["saturations"] += count
            if index == 0:
                floats = run_float(graph, sample, task)
                for meta in state.program.meta["layers"]:
                    if meta["name"] in result.traces:
                        fmt = _layer_out_fmt(state.program, meta["name"])
                        got = fmt.to_float(result.traces[meta["name"]])
                        want = floats[meta["outputs"][0]]
                        if "columns" in meta:  # the layer writes these columns only
                            start, count = meta["columns"]
                            want = want[:, start : start + count]
                        layer_stats[meta["name"]].update(compare(got, want))
        golden = np.stack(outs).reshape(ref.shape)
        state.torch_out[task], state.golden_out[task] = ref, golden
        entry = compare(golden, ref)
        entry["agreement"] = agreement(golden, ref)
        per_task[names[task]] = entry
        for layer, stats in layer_stats.items():
            merged = per_layer.setdefault(layer, {"saturations": 0})
            merged["saturations"] += stats.pop("saturations")
            merged.setdefault("tasks", {})[names[task]] = stats
    state.fidelity = {
        "vs_torch": {**worst(list(per_task.values())), "per_task": per_task},
        "images": len(state.eval_images),
        "image_source": _image_source(state.options.eval_images),
        "layers": per_layer,
    }


def _csim_case(program: Program, raw: np.ndarray, task: int, index: int, result):
    """A C-sim case: the input and every traced layer's golden output (int32, as in DDR)."""
    from .hls.csim import CsimCase, expected_regions

    regions = [
        (name, offset, rows, cols, stride, np.asarray(values).astype(np.int32))
        for name, offset, rows, cols, stride, values in expected_regions(
            program, result.traces, result.arena, task
        )
    ]
    return CsimCase(raw, task, regions, f"task{task}.image{index}")


def step_estimate(state: BuildState) -> None:
    """Cycles per layer, latency, resources and fit, with the MoE queue lengths the
    golden executor saw on the first evaluation image of the first verified task."""
    from .arch import ddr_model
    from .estimate import estimate_report_section, expert_counts_from_run

    task = min(state.first_input)
    counts = expert_counts_from_run(state.program, state.first_input[task], task)
    ddr = ddr_model(state.board, state.arch, efficiency=state.options.ddr_efficiency)
    state.estimate = estimate_report_section(
        state.program, state.arch, state.board, expert_counts=counts or None, task=task, ddr=ddr
    )


def step_csim(state: BuildState) -> None:
    """C-simulate the rendered HLS kernel (g++) on the images and tasks verify ran, and
    compare every layer's output and the final output with the golden executor's bits."""
    from .hls.csim import CsimError, CsimResult, run_csim

    if not state.options.csim:
        state.csim = CsimResult(ran=False, reason="disabled (--no-csim / csim=False)").to_report()
        return
    try:
        result = run_csim(state.program, state.arch, state.csim_cases, board=state.board)
    except CsimError as err:  # a compile error or a crashed testbench: a failure, not silence
        result = CsimResult(ran=False, bit_exact=False, reason=f"C-simulation failed: {err}")
    state.csim = result.to_report()


def step_rtl(state: BuildState) -> None:
    """Render the open RTL of this ArchConfig and precision (``state.rtl_files``: every
    unit and the filelists), lint it with Verilator and, with ``rtl_synth``, count its
    resources with Yosys; written to ``rtl/`` with the other outputs."""
    if not (state.options.rtl or state.options.rtl_synth):
        return
    from .rtl import rtl_files, rtl_report

    state.rtl_files = rtl_files(state.arch, state.options.precision)
    state.report["rtl"] = rtl_report(
        state.rtl_files, state.arch, state.options.precision,
        synth_stage=state.options.rtl_synth, program=state.program, board=state.board,
    )  # fmt: skip


def _pruning_report(state: BuildState) -> dict:
    """Per-layer sparsity as pruned and as stored in the Program, and the cycle change."""
    if not state.pruning:
        return {}
    from .arch import ddr_model
    from .prune.report import program_sparsity

    ddr = ddr_model(state.board, state.arch, efficiency=state.options.ddr_efficiency)
    return {
        **state.pruning,
        "program": program_sparsity(state.program, state.arch, state.board, ddr),
    }


def _layer_out_fmt(program: Program, name: str):
    for layer in program.layers:
        if layer.name == name:
            return layer.fmt("out_fmt")
    raise KeyError(name)


def step_report(state: BuildState) -> None:
    """Assemble report.json content from everything the steps produced."""
    graph, program, board, arch = state.graph_quant, state.program, state.board, state.arch
    layers = []
    for layer in program.layers:
        fidelity = state.fidelity["layers"].get(layer.name, {})
        formats = {
            k: str(layer.fmt(k)) for k in layer.fields if k.endswith("_fmt") and layer.fields[k]
        }
        layers.append(
            {
                "name": layer.name,
                "op": layer.op.name,
                "task": layer.task,
                "formats": formats,
                "saturations": fidelity.get("saturations", 0),
                "fidelity": fidelity.get("tasks", {}),
            }
        )
    tensors = [
        {
            "tensor": name,
            "shape": list(t.shape),
            "format": str(t.fmt),
            "calibrated_max_abs": graph.meta["calibration"]["max_abs"].get(name),
        }
        for name, t in graph.tensors.items()
    ]
    state.report = {
        "codesign_version": __version__,
        "model": {
            "name": state.name,
            "macs": graph.macs(),
            "macs_per_task": {graph.meta["task_names"][t]: graph.macs(t) for t in graph.tasks},
            "params": int(sum(p.numel() for p in state.module.parameters())),
            "tokens": graph.meta["tokens"],
            "dim": graph.meta["dim"],
            "depth": graph.meta["depth"],
            "heads": graph.meta["heads"],
            "image_size": list(graph.meta["image_size"]),
            "tasks": graph.meta["task_names"],
            "weights": state.weights_source
            or (str(state.weights_path) if state.weights_path is not None else "random (seeded)"),
            "seed": state.options.seed,
        },
        "board": board.to_dict(),
        "arch": arch.to_dict(),
        "arch_choice": state.arch_choice,
        "precision": str(state.options.precision),
        "dsp_per_mac": state.options.precision.dsp_per_mac,
        "program": {
            "bytes": len(state.program_bytes),
            "sha256": hashlib.sha256(state.program_bytes).hexdigest(),
            "layers": len(program.layers),
            "arena_bytes": program.arena_bytes,
            "memory": {k: v for k, v in program.meta["memory"].items() if k != "buffers"},
        },
        "register_map": register_map(state.arch.weight_ports).to_dict(),
        "calibration": {
            **{k: v for k, v in graph.meta["calibration"].items() if k != "max_abs"},
            **state.calibration.to_report(),
        },
        "fidelity": {key: state.fidelity[key] for key in ("vs_torch", "images", "image_source")},
        "estimate": state.estimate,
        "pruning": _pruning_report(state),
        "csim": dict(state.csim),
        "layers": layers,
        "tensors": tensors,
        "timing": {"stages_s": dict(state.timings)},
        "host": {"python": platform.python_version(), "machine": platform.machine()},
    }


STEPS: list[tuple[str, Callable[[BuildState], None]]] = [
    ("load", step_load),
    ("prune", step_prune),
    ("convert", step_convert),
    ("transform", step_transform),
    ("quantize", step_quantize),
    ("compile", step_compile),
    ("verify", step_verify),
    ("estimate", step_estimate),
    ("csim", step_csim),
    ("report", step_report),
    ("rtl", step_rtl),
]


@contextmanager
def torch_threads(count: int):
    """Run torch single-threaded: its work here is many small ops, where OpenMP threads
    only contend with each other (10-50x slower on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_steps(state: BuildState, progress: Callable[[str, int, int], None] | None = None):
    with torch_threads(1):
        for index, (name, step) in enumerate(STEPS):
            if progress:
                progress(name, index, len(STEPS))
            start = time.perf_counter()
            step(state)
            state.timings[name] = round(time.perf_counter() - start, 3)
    state.report["timing"]["stages_s"] = dict(state.timings)
    state.report["timing"]["total_s"] = round(sum(state.timings.values()), 3)
    return state


# ---------------------------------------------------------------- output


def default_out_dir(name: str, board: str) -> Path:
    return Path("build") / f"{name}-{board}"


def write_outputs(state: BuildState, out: Path, plot: bool = True) -> Path:
    """Write the build folder atomically: a temp dir beside it, renamed when complete."""
    from .estimate import plot_layers
    from .hls.csim import write_case
    from .hls.render import render_project
    from .report import write_markdown, write_memory_plot, write_plot

    out = Path(out)
    with atomic_output_dir(out) as tmp:
        (tmp / "program.bin").write_bytes(state.program_bytes)
        state.program.dump_json(tmp / "program.json")
        (tmp / "graph.json").write_text(json.dumps(graph_summary(state.graph_quant), indent=1))
        regmap = register_map(state.arch.weight_ports)
        (tmp / "regmap.json").write_text(json.dumps(regmap.to_dict(), indent=1))
        if plot:
            write_plot(state.report, tmp / "fidelity.png")
            write_memory_plot(state.program.meta["memory"], tmp / "memory.png")
            if state.report.get("estimate"):
                plot_layers(state.report["estimate"], tmp / "cycles.png")
        write_markdown(state.report, tmp / "report.md", plot=plot)
        # `make bitstream` delivers to bitstreams/<model>-<board>/ beside the build folder's
        # parent (the project's bitstreams/ when building from the repository root)
        target = Path.cwd() / "bitstreams" / f"{state.name}-{state.board.name}"
        bitstreams = os.path.relpath(target, (out / "hls").resolve())
        render_project(state.program, state.arch, state.board, tmp / "hls", state.name, bitstreams)
        first_image = [case for case in state.csim_cases if case.label.endswith(".image0")]
        for case in first_image:  # testbench inputs of the HLS project (tb/cases/task<k>)
            write_case(tmp / "hls" / "tb" / "cases" / f"task{case.task}", case)
        if first_image:  # tb_codesign's arguments for Vitis csim/cosim (run_hls.tcl)
            args = ["../program.bin", *(f"tb/cases/task{case.task}" for case in first_image)]
            (tmp / "hls" / "tb" / "args.txt").write_text(" ".join(args) + "\n")
        if state.rtl_files:  # the rtl step's artefacts
            from .rtl import write_rtl

            write_rtl(tmp / "rtl", state.arch, files=state.rtl_files)
        (tmp / "report.json").write_text(json.dumps(state.report, indent=1) + "\n")
    state.out_dir = out
    return out


def graph_summary(graph: Graph) -> dict:
    """The quantised IR as JSON (no weights): nodes, tensors, formats."""
    return {
        "name": graph.name,
        "input": graph.input,
        "outputs": {str(k): v for k, v in graph.outputs.items()},
        "tensors": {
            n: {"shape": list(t.shape), "fmt": str(t.fmt)} for n, t in graph.tensors.items()
        },
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": n.inputs,
                "outputs": n.outputs,
                "task": n.task,
                "attrs": {
                    k: (v if k != "formats" else _formats_summary(v)) for k, v in n.attrs.items()
                },
                "params": {k: list(v.shape) for k, v in n.params.items()},
            }
            for n in graph.nodes
        ],
    }


def _formats_summary(formats: dict) -> dict:
    """A node's formats as text; per-channel shifts as their range, raw weights left out
    (they are in program.bin)."""
    summary = {}
    for key, value in formats.items():
        if key.endswith("_raw"):
            continue
        if key.endswith("_shifts"):
            summary[key] = f"per output channel, {int(value.min())}..{int(value.max())}"
        else:
            summary[key] = str(value)
    return summary


def make_options(
    model, board="zcu102", task=None, precision=None, weights=None, out=None, **kwargs
) -> BuildOptions:
    from .names import board_name, model_name
    from .util import check_output_dir

    if out is not None:
        check_output_dir(out)  # before minutes of work, not after
    if isinstance(model, (str, Path)):
        model = model_name(model)
    board = board_name(board)
    if task is None:
        tasks = None
    elif isinstance(task, (list, tuple)):
        tasks = list(task)
    else:
        tasks = [task]
    for entry in tasks or ():
        if isinstance(entry, bool) or not isinstance(entry, (int, np.integer)):
            raise ValueError(f"task ids are integers, got {entry!r}")
    if isinstance(kwargs.get("arch"), dict):  # fields on top of the board's default
        kwargs["arch_fields"] = frozenset(kwargs["arch"])
        base = default_arch(board, model if isinstance(model, str) else None, precision)
        kwargs["arch"] = ArchConfig.from_dict({**base.to_dict(), **kwargs["arch"]})
    elif kwargs.get("arch") is not None and not isinstance(kwargs["arch"], ArchConfig):
        got = kwargs["arch"]
        raise ValueError(f"arch must be an ArchConfig or a dict of its fields, got {got!r}")
    return BuildOptions(
        model=model,
        board=board,
        tasks=tasks,
        precision=parse_precision(precision)
        if precision is not None
        else default_precision(board, model if isinstance(model, str) else None),
        weights=weights,
        out=Path(out) if out else None,
        **kwargs,
    )
