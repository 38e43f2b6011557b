"""Generate the board notebooks from this script, so they stay reviewable as code.

    python docs/notebooks/make_notebooks.py          # writes *.ipynb beside this file
    python docs/notebooks/make_notebooks.py --check  # exit 1 if a notebook is stale

The notebooks take their device as a parameter (first code cell, tagged
``parameters``, read from the environment): on a PYNQ board ``CODESIGN_DEVICE`` is
unset and they load the overlay; CI sets ``CODESIGN_DEVICE=golden`` (or ``csim``, ``rtl``)
and runs them headless against a simulated board. ``CODESIGN_BUNDLE`` is the folder
``codesign deploy`` wrote (default: the notebook's parent folder).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS = """\
import os

# "board": the PYNQ board (the overlay in ../bitstream); "golden", "csim" or "rtl": a
# simulated board behind the same pynq API (the golden executor, the C-simulated HLS
# kernel, or the Verilated RTL accelerator), for running this notebook off the board.
DEVICE = os.environ.get("CODESIGN_DEVICE", "board")
BUNDLE = os.environ.get("CODESIGN_BUNDLE", "..")  # the folder `codesign deploy` wrote
BATCH = int(os.environ.get("CODESIGN_BATCH", "8"))  # images per batched run
REPEATS = int(os.environ.get("CODESIGN_REPEATS", "3"))  # timed runs (best is reported)"""

IMPORTS = """\
%matplotlib inline
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

BUNDLE = Path(BUNDLE).resolve()
try:
    from codesign import runtime
except ImportError:  # on the board: the bundle's driver copy, under its own package name
    sys.path.insert(0, str(BUNDLE / "host"))
    from codesign_host import runtime
print("driver:", runtime.__file__)"""

OPEN = """\
bundle = runtime.Bundle(BUNDLE)
accel = bundle.open(DEVICE)
card = bundle.card
print(bundle)
print(accel)
print("device:", bundle.device)
# how the plots and tables name what ran: the FPGA, or the board simulating it
SIMULATED = DEVICE != "board"
ACCEL = f"simulated ({DEVICE})" if SIMULATED else "FPGA"
BOARD = bundle.manifest["board"]
if SIMULATED:
    print("(simulated board: wall-clock times below measure the simulator, not the FPGA; "
          "the FPGA's latency and FPS come from the cycle count at the board clock)")"""

INTERFACE = """\
layout = accel.layout
info = layout.describe()
print(f"program {info['program_bytes']} bytes, arena {info['arena_bytes']} bytes, "
      f"{info['layers']} layers, {info['bus_bits']}-bit bus")
print("input rows:", info["input"])
for task, ref in enumerate(info["outputs"]):
    print(f"output of task {task} ({card.task_names[task]}):", ref)
for reg in accel.regmap.registers:
    print(f"  0x{reg.offset:02x} {reg.name:8s} {reg.bits:2d} bits  {reg.meaning}")"""

METRICS = """\
def compare(got, want):
    \"\"\"Cosine, max |error| and relative RMS of the accelerator's output vs torch.\"\"\"
    got, want = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
    cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-30))
    rel_rms = float(np.sqrt(np.mean((got - want) ** 2) / (np.mean(want**2) + 1e-30)))
    return {"cosine": cosine, "max_abs_err": float(np.abs(got - want).max()), "rel_rms": rel_rms}


def show_timing(timing):
    \"\"\"One image's kernel time. On the board: measured (start to ap_done). On a simulated
    board: the cycles it counted (RTL) or modelled (cycle model) at the board clock, and
    the simulator's own wall time, which says nothing about the FPGA.\"\"\"
    host_ms = 1e3 * (timing.prepare_s + timing.readback_s)
    if not SIMULATED:
        print(f"  kernel {timing.kernel_s * 1e3:.3f} ms (measured), host {host_ms:.2f} ms")
        return
    if timing.latency_ms is not None:
        rtl = timing.cycles_source.startswith("RTL")
        kind = "counted in the RTL simulation" if rtl else "an estimate"
        print(f"  {timing.cycles_source}: {timing.cycles:,} cycles = {timing.latency_ms:.5g} ms "
              f"per image at {timing.clock_mhz:g} MHz on the {BOARD} ({kind})")
    else:
        print("  this simulated board counts no cycles: no FPGA latency")
    print(f"  simulation wall time: kernel {timing.kernel_s:.3g} s, host {host_ms:.2f} ms")


def best_time(run, repeats=REPEATS):
    \"\"\"Best wall time of `repeats` calls (after one warm-up call), and the last result.\"\"\"
    run()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - began)
    return min(times), result"""

TORCH = """\
model = bundle.torch_model()  # None when torch (or codesign.models) is not installed here
reference = bundle.reference()
images = reference["images"]
batch = np.concatenate([images] * (-(-BATCH // len(images))))[:BATCH]
if model is not None:
    import torch

    def torch_run(x, task):
        with torch.no_grad():
            tensor = torch.as_tensor(x, dtype=torch.float32)
            out = model(tensor, task) if len(card.task_names) > 1 else model(tensor)
        return out.numpy()

    print(f"torch {torch.__version__} on the CPU ({torch.get_num_threads()} threads)")
else:
    torch_run = None
    print("torch is not installed here: comparing with the torch outputs `codesign deploy` "
          "computed on its host (reference.npz); no CPU timing")"""

SINGLE_M3VIT = """\
image = images[:1]
single = {}
for task, name in enumerate(card.task_names):
    single[name] = accel.run(image, task)  # [1, patches, channels]
    print(f"task {task} ({name}): output {single[name].shape}")
    show_timing(accel.timings[0])
    # the accelerator computes exactly the golden executor's integers
    raw = accel.run_raw(accel.quantize_input(image), task)
    exact = np.array_equal(raw, reference[f"golden_raw_task{task}"][:1])
    print(f"  bit-exact with the golden executor: {exact}")
    assert exact, f"task {name}: the accelerator differs from the golden executor"
"""

MAPS_M3VIT = """\
def upsample(maps, image_size):
    \"\"\"Nearest-neighbour upsampling of [..., gh, gw] maps to the image (done by the host).\"\"\"
    height, width = image_size
    scale_h, scale_w = height // maps.shape[-2], width // maps.shape[-1]
    return np.repeat(np.repeat(maps, scale_h, axis=-2), scale_w, axis=-1)


def as_rgb(image):
    \"\"\"The first three channels of a normalised image, stretched to [0, 1] for display.\"\"\"
    rgb = np.moveaxis(image[:3], 0, -1)
    return (rgb - rgb.min()) / (np.ptp(rgb) + 1e-12)


reference_torch = {
    name: (torch_run(image, task) if torch_run else reference[f"torch_task{task}"][:1])
    for task, name in enumerate(card.task_names)
}
for name in card.task_names:
    fpga_map = card.tokens_to_map(single[name])[0]  # [channels, gh, gw]
    torch_map = card.tokens_to_map(reference_torch[name])[0]
    dense = fpga_map.shape[0] > 1  # classes -> a label map; one channel -> a value map
    if dense:
        fpga_view, torch_view = fpga_map.argmax(0), torch_map.argmax(0)
        style = {"cmap": "tab20", "vmin": 0, "vmax": max(19, fpga_map.shape[0] - 1)}
    else:
        fpga_view, torch_view = fpga_map[0], torch_map[0]
        low, high = min(fpga_view.min(), torch_view.min()), max(fpga_view.max(), torch_view.max())
        style = {"cmap": "magma", "vmin": low, "vmax": high}
    figure, axes = plt.subplots(1, 3, figsize=(12, 3))
    axes[0].imshow(as_rgb(image[0]))
    axes[0].set_title("input")
    axes[1].imshow(upsample(fpga_view, card.image_size), interpolation="nearest", **style)
    axes[1].set_title(f"{name}: {ACCEL}")
    shown = axes[2].imshow(upsample(torch_view, card.image_size), interpolation="nearest", **style)
    axes[2].set_title(f"{name}: torch (CPU)")
    for axis in axes:
        axis.axis("off")
    figure.colorbar(shown, ax=axes, shrink=0.8)
    plt.show()"""

SINGLE_VIT = """\
image = images[:1]
logits = accel.run(image, 0)  # [1, classes]
print(f"logits {logits.shape}")
show_timing(accel.timings[0])
raw = accel.run_raw(accel.quantize_input(image), 0)
exact = np.array_equal(raw, reference["golden_raw_task0"][:1])
print(f"bit-exact with the golden executor: {exact}")
assert exact, "the accelerator differs from the golden executor"
"""

BARS_VIT = """\
def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


torch_logits = torch_run(image, 0) if torch_run else reference["torch_task0"][:1]
fpga_p, torch_p = softmax(logits[0]), softmax(torch_logits[0])
top = np.argsort(-torch_p)[: min(10, len(torch_p))]
positions = np.arange(len(top))
figure, axis = plt.subplots(figsize=(8, 3))
axis.bar(positions - 0.2, fpga_p[top], width=0.4, label=ACCEL)
axis.bar(positions + 0.2, torch_p[top], width=0.4, label="torch (CPU)")
axis.set_xticks(positions, [f"class {c}" for c in top], rotation=45)
axis.set_ylabel("probability")
axis.set_title(f"{card.name}: top classes of one image")
axis.legend()
plt.show()
print(f"predicted class: {ACCEL} {fpga_p.argmax()} | torch {torch_p.argmax()}")"""

BATCH_TIMING = """\
rows = []
for task, name in enumerate(card.task_names):
    wall_s, fpga_out = best_time(lambda task=task: accel.run(batch, task))
    timings = accel.timings  # one per image of that batch
    if torch_run is not None:
        torch_s, want = best_time(lambda task=task: torch_run(batch, task))
        torch_fps = BATCH / torch_s
    else:
        want = reference[f"torch_task{task}"]
        fpga_out, torch_fps = accel.run(images, task), float("nan")
    metrics = compare(fpga_out, want)
    if fpga_out.ndim == 2 or fpga_out.shape[-1] > 1:  # classes: compare the arg-max
        metrics["agreement"] = float(np.mean(fpga_out.argmax(-1) == want.argmax(-1)))
    row = {"task": name, "wall_fps": BATCH / wall_s, "wall_s": wall_s / BATCH,
           "kernel_ms": 1e3 * np.mean([t.kernel_s for t in timings]),
           "torch_fps": torch_fps, **metrics}
    if all(t.latency_ms is not None for t in timings):  # the FPGA's time, from cycles
        row["cycles"] = float(np.mean([t.cycles for t in timings]))
        row["sim_ms"] = float(np.mean([t.latency_ms for t in timings]))
        row["sim_fps"] = 1e3 / row["sim_ms"]
        row["clock_mhz"], row["source"] = timings[0].clock_mhz, timings[0].cycles_source
    rows.append(row)

# what the FPGA does: measured on the board; on a simulated board the cycles at the
# board clock (the simulator's wall time gets its own column, labelled as such)
counted = SIMULATED and all("sim_fps" in row for row in rows)
if counted:
    clock = f"{rows[0]['clock_mhz']:g} MHz"
    source = "RTL cycles" if rows[0]["source"].startswith("RTL") else "cycle model"
    FPGA_LABEL = f"{ACCEL} @{clock} ({source})"
    columns = [(f"sim FPS @{clock} ({source})", "sim_fps", "{:.5g}"),
               (f"sim ms/img @{clock}", "sim_ms", "{:.4g}"),
               ("cycles/img", "cycles", "{:.1f}")]
elif SIMULATED:
    FPGA_LABEL = None
    columns = [("sim FPS (no cycle count)", "sim_fps", "{:.1f}")]
else:
    FPGA_LABEL = f"{ACCEL} (measured)"
    columns = [("FPGA FPS (measured)", "wall_fps", "{:.1f}"),
               ("kernel ms (measured)", "kernel_ms", "{:.3f}")]
if SIMULATED:
    columns.append(("sim wall s/img", "wall_s", "{:.3g}"))
columns += [("torch CPU FPS", "torch_fps", "{:.3g}"), ("cosine", "cosine", "{:.6f}"),
            ("max|err|", "max_abs_err", "{:.2e}"), ("rel RMS", "rel_rms", "{:.2%}"),
            ("argmax agree", "agreement", "{:.3f}")]
cells = [["task", *(name for name, _, _ in columns)]]
for row in rows:
    values = (fmt.format(row[key]) if key in row else "-" for _, key, fmt in columns)
    cells.append([row["task"], *values])
widths = [max(len(line[k]) for line in cells) for k in range(len(cells[0]))]
for line in cells:  # columns two spaces apart (a name may hold single spaces)
    fields = zip(line, widths, strict=True)
    print("  ".join(v.rjust(w) if k else v.ljust(w) for k, (v, w) in enumerate(fields)))

bars = [(FPGA_LABEL, "sim_fps" if SIMULATED else "wall_fps")] if FPGA_LABEL else []
if SIMULATED:
    bars.append((f"{DEVICE} simulator (wall clock)", "wall_fps"))
bars.append(("torch (CPU, wall clock)", "torch_fps"))
figure, axis = plt.subplots(figsize=(6, 3))
positions = np.arange(len(rows))
width = 0.8 / len(bars)
shown = []
for k, (label, key) in enumerate(bars):
    heights = [row.get(key, float("nan")) for row in rows]
    hatch = "//" if "simulator" in label else None
    offset = (k - (len(bars) - 1) / 2) * width
    axis.bar(positions + offset, heights, width=width, label=label, hatch=hatch)
    shown += [h for h in heights if np.isfinite(h) and h > 0]
if shown and max(shown) > 30 * min(shown):  # e.g. a simulator next to the FPGA's clock
    axis.set_yscale("log")
axis.set_xticks(positions, [row["task"] for row in rows])
axis.set_ylabel(f"images/s (batch {BATCH})")
axis.set_title(f"{card.name} on the {BOARD}" + (" (simulated)" if SIMULATED else ""))
axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
plt.show()"""

CLOSE = """\
accel.close()  # gives the DDR buffers back"""


def _notebook(
    slug: str, title: str, intro: str, single: list, figures: list
) -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(f"# {title}\n\n{intro}"),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell(IMPORTS),
        new_markdown_cell(
            "## Load the overlay\n\n"
            "On the board, `bundle.open('board')` downloads `bitstream/*.bit` with "
            "`pynq.Overlay`, finds the `codesign_top` kernel in `overlay.ip_dict`, and "
            "allocates the Program and arena buffers with `pynq.allocate`. Off the board, "
            "a simulated board (a `pynq.Device` whose PL is the golden executor, the "
            "C-simulated HLS kernel or the Verilated RTL accelerator) stands in behind the "
            "same `pynq.MMIO` and `pynq.allocate` calls, so everything below is the same code."
        ),
        new_code_cell(OPEN),
        new_markdown_cell(
            "The interface the driver uses (see `interface.md`): where the input and "
            "output rows sit in the arena, and the AXI4-Lite registers."
        ),
        new_code_cell(INTERFACE),
        new_code_cell(METRICS),
        new_code_cell(TORCH),
        new_markdown_cell("## Single-image inference"),
        *single,
        *figures,
        new_markdown_cell(
            "## Batched inference, FPS and torch on the CPU\n\n"
            "A batch ping-pongs between two arenas: while the kernel runs image i, the "
            "host writes image i+1 and reads back image i-1. On the board, FPS is measured: "
            "images per second of `accel.run` (host pre/post-processing included), and "
            "`kernel ms` is start to `ap_done`. On a simulated board the wall clock measures "
            "the simulator (numpy, g++ or Verilator: seconds per image where the FPGA takes "
            "milliseconds), so the FPGA's figures come from the kernel's clock cycles at "
            "the board clock: counted by the RTL on the RTL board, estimated by the cycle "
            "model (`codesign.estimate`, with each image's MoE queue lengths) on the golden "
            "and C-sim boards. `sim FPS` is one image per kernel latency; the simulator's "
            "own time is the separate `sim wall s/img` column. The torch FPS is wall clock "
            "on this CPU. The comparison with torch: cosine similarity, largest absolute "
            "error, relative RMS error and agreement of the arg-max."
        ),
        new_code_cell(BATCH_TIMING),
        new_code_cell(CLOSE),
    ]
    for index, cell in enumerate(cells):
        cell["id"] = f"{slug}-{index:02d}"  # stable ids: regenerating changes nothing
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def notebooks() -> dict[str, nbformat.NotebookNode]:
    m3vit = _notebook(
        "m3vit",
        "M³ViT on the FPGA: multi-task inference",
        "The multi-task mixture-of-experts ViT runs on the codesign accelerator: one "
        "Program, every task selected at run time by the kernel's `task` register. For "
        "each task the notebook runs one image, shows its output map next to torch's, "
        "then times a batch and compares it with torch on the CPU.",
        [new_code_cell(SINGLE_M3VIT)],
        [
            new_markdown_cell(
                "Each task's output, one row of channels per patch, back on the patch grid "
                "(`tokens_to_map`) and upsampled to the image: a label map (arg-max over "
                "classes) for segmentation, a value map for depth."
            ),
            new_code_cell(MAPS_M3VIT),
        ],
    )
    vit = _notebook(
        "vit",
        "ViT on the FPGA: image classification",
        "A Vision Transformer classifier runs on the codesign accelerator. The notebook "
        "classifies one image, plots the class probabilities next to torch's, then times "
        "a batch and compares it with torch on the CPU.",
        [new_code_cell(SINGLE_VIT)],
        [new_code_cell(BARS_VIT)],
    )
    return {"m3vit_on_board.ipynb": m3vit, "vit_on_board.ipynb": vit}


def _ruff_formatted(text: str) -> str:
    """The notebook as `ruff format` leaves it, so the lint of the repo stays clean."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "notebook.ipynb"
        path.write_text(text)
        command = [sys.executable, "-m", "ruff", "format", "--line-length", "100", str(path)]
        subprocess.run(command, check=True, capture_output=True)
        return path.read_text()


def main(argv: list[str]) -> int:
    stale = []
    for name, notebook in notebooks().items():
        text = _ruff_formatted(nbformat.writes(notebook) + "\n")
        path = HERE / name
        if "--check" in argv:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale notebooks (run {Path(__file__).name}): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
