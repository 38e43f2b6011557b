"""``codesign deploy``: one folder to copy to the board.

It holds the bitstream and its ``.hwh`` (from ``bitstreams/<model>-<board>/``), the
Program, the host model card, the register map, the PYNQ driver, the board notebooks,
reference outputs of torch and of the golden executor, the torch weights for a live
comparison, and a README. A missing bitstream is never faked: the rest is packed and
``manifest.json`` says the bundle is incomplete and how to build the bitstream. Written
atomically (a temp folder renamed when complete) to ``build/deploy/<model>-<board>/``
by default, beside ``codesign build``'s ``build/<model>-<board>/``.

The driver is a copy of ``codesign.runtime`` and the numpy-only modules it imports,
packed as its own package ``host/codesign_host``: a partial copy named ``codesign``
would shadow an installed codesign (or be shadowed by it) and mix two trees in one
import, so the bundle's driver never shares a name with the toolkit.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import click
import numpy as np

from . import __version__
from .arch import register_map
from .util import atomic_output_dir

REPO = Path(__file__).resolve().parents[1]
MANIFEST_FORMAT = 1
HOST_PACKAGE = "codesign_host"  # the driver's name in a bundle: never the toolkit's
# The driver and what it imports: numpy-only modules, so the board needs no torch. The
# C-sim and RTL boards (runtime/csim_device.py, rtl_device.py) need the HLS and RTL
# sources and compilers: left out, borrowed from an installed codesign when there is one.
HOST_MODULES = (
    "runtime/__init__.py",
    "runtime/bundle.py",
    "runtime/driver.py",
    "runtime/layout.py",
    "runtime/simulated.py",
    "runtime/minimal_host.py",
    "program.py",
    "contract.py",
    "executors.py",  # the arena interface the simulated boards share
    "ops/*.py",  # the op registry, every op (the loader checks its rules)
    "golden.py",  # lets the board run the golden simulated board for a comparison
    "numerics/__init__.py",
    "numerics/fixed.py",
    "numerics/tables.py",
    "numerics/exact.py",
    "arch/__init__.py",
    "arch/boards.py",
    "arch/config.py",
    "arch/ddr.py",
    "arch/regmap.py",
)
NOTEBOOKS = {"m3vit": "m3vit_on_board.ipynb", "vit": "vit_on_board.ipynb"}
REFERENCE_SEED = 2024


class DeployError(RuntimeError):
    """The bundle cannot be made (e.g. the Program does not match the bitstream)."""


def sample_images(card, count: int, seed: int = REFERENCE_SEED) -> np.ndarray:
    """Smooth synthetic images [count, C, H, W], zero mean and unit variance: waves and
    blobs, so the output maps have structure to look at (no dataset ships here)."""
    rng = np.random.default_rng(seed)
    channels, height, width = card.image_shape
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    images = np.zeros((count, channels, height, width))
    for image in images:
        for channel in image:
            for _ in range(3):
                fy, fx = rng.uniform(0.5, 4.0, 2)
                channel += np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
            for _ in range(2):
                cy, cx = rng.uniform(0, 1, 2) * (height, width) / max(height, width)
                radius = rng.uniform(0.08, 0.3)
                channel += 2.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2)
        image -= image.mean()
        image /= image.std() + 1e-12
    return images


def find_bitstream_dir(model: str, board: str, root: Path | None = None) -> Path:
    """Where `make bitstream` left ``<model>-<board>``: under ``root`` when given, else the
    first that exists of ``bitstreams/`` (working folder, then repo) and the HLS project
    of ``codesign build`` (``build/<model>-<board>/hls/bitstreams/``); if none does, the
    last, where ``make bitstream`` in ``hls_project_dir`` will put it."""
    name = f"{Path(model).stem}-{board}"
    if root is not None:
        return Path(root) / name
    bases = (Path.cwd(), REPO)
    candidates = [base / "bitstreams" / name for base in bases]
    candidates += [base / "build" / name / "hls" / "bitstreams" / name for base in bases]
    for folder in candidates:
        if folder.is_dir():
            return folder
    return hls_project_dir(model, board) / "bitstreams" / name


def _bitstream_files(folder: Path) -> tuple[list[Path], list[str], dict]:
    """(files to pack, what is missing, the bitstream manifest) for a bitstream folder.

    ``make bitstream`` writes ``<name>.bit``, ``<name>.hwh`` and ``manifest.json`` (whose
    ``files`` names them); without a manifest the one ``.bit`` there is taken."""
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    named = manifest.get("files") or {}
    if named.get("bit"):
        bits = [folder / named["bit"]] if (folder / named["bit"]).is_file() else []
    else:
        bits = sorted(folder.glob("*.bit")) if folder.is_dir() else []
    if not bits:
        return [], [f"{folder}/{named.get('bit') or '*.bit'}"], manifest
    if len(bits) > 1:
        raise DeployError(f"{folder}: {len(bits)} .bit files and no manifest naming one")
    hwh = folder / named["hwh"] if named.get("hwh") else bits[0].with_suffix(".hwh")
    if hwh.suffix != ".hwh" or hwh.stem != bits[0].stem:
        raise DeployError(f"{folder}: pynq needs <name>.hwh beside <name>.bit, got {hwh.name}")
    files, missing = [bits[0]], []
    if hwh.is_file():
        files.append(hwh)
    else:
        missing.append(str(hwh))
    if manifest_path.is_file():
        files.append(manifest_path)
    return files, missing, manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


HOST_INIT = '''"""codesign_host: the host driver of a codesign deploy bundle (numpy and pynq only).

A copy of codesign.runtime and the modules it imports (Program format, golden executor,
numerics, register map), written by `codesign deploy` {version}. It has its own name so
it never mixes with an installed codesign: `sys.path.insert(0, "host")` then
`from codesign_host.runtime import open_bundle`. It runs the board and the golden
simulated board alone; the C-sim and RTL boards come from an installed codesign.
"""

__version__ = "{version}"
'''


def _copy_driver(dest: Path) -> None:
    """The runtime and the modules it imports, as the package ``host/codesign_host``
    (their imports between each other are relative, so they work under that name)."""
    package = Path(__file__).resolve().parent
    target = dest / "host" / HOST_PACKAGE
    for pattern in HOST_MODULES:
        for source in sorted(package.glob(pattern)):
            relative = source.relative_to(package)
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    (target / "__init__.py").write_text(HOST_INIT.format(version=__version__))


def hls_project_dir(model: str, board: str) -> Path:
    """The HLS project whose ``make bitstream`` builds this bundle's bitstream: the one
    ``codesign build`` wrote (``build/<model>-<board>/hls``, in the working folder or the
    repo), else where ``codesign build`` will write it from the working folder."""
    name = f"{Path(model).stem}-{board}"
    candidates = [base / "build" / name / "hls" for base in (Path.cwd(), REPO)]
    for folder in candidates:
        if (folder / "Makefile").is_file():
            return folder.resolve()
    return candidates[0].resolve()


def shell_path(path, relative: bool = False) -> str:
    """``path`` as a shell word to copy; with ``relative``, relative to the working folder
    when it is under it."""
    path = Path(path)
    if relative and path.is_relative_to(Path.cwd().resolve()):
        path = path.relative_to(Path.cwd().resolve())
    return shlex.quote(str(path))


def bitstream_steps(howto: dict, relative: bool = False) -> list[str]:
    """Shell commands that build the missing bitstream (``manifest["bitstream_build"]``):
    ``codesign build`` when the HLS project is not written yet (``--out`` named, so both
    commands mean the same folder from anywhere), then ``make bitstream`` in it.
    ``relative`` as in ``shell_path``."""
    project = Path(howto["hls_project"])
    steps = []
    if not howto.get("project_exists"):
        steps.append(f"{howto['codesign_build']} --out {shell_path(project.parent, relative)}")
    return [*steps, f"make -C {shell_path(project, relative)} bitstream"]


def _reference(build, card, count: int) -> dict[str, np.ndarray]:
    """Sample images with, per task, torch (CPU, float32) and golden outputs."""
    import torch

    from .golden import GoldenExecutor
    from .program import Program

    images = sample_images(card, count).astype(np.float32)  # what the bundle stores
    program = Program.from_bytes(build.program_bytes)
    executor = GoldenExecutor(program)
    raw = build.quantize_input(images)
    data = {"images": images, "input_raw": raw.astype(np.int32)}
    multitask = len(card.task_names) > 1
    for task in range(program.n_tasks):
        with torch.no_grad():
            x = torch.as_tensor(images, dtype=torch.float32)
            out = build.module(x, task) if multitask else build.module(x)
        data[f"torch_task{task}"] = out.numpy()
        golden = np.stack([executor.run(sample, task).output for sample in raw])
        data[f"golden_raw_task{task}"] = golden.astype(np.int32)
        data[f"golden_task{task}"] = card.finish(program.outputs[task].fmt.to_float(golden))
    return data


def _readme(manifest: dict) -> str:
    model, board = manifest["model"], manifest["board"]
    notebook = manifest["notebook"]
    if manifest["complete"]:
        status = "Complete: the bitstream and its .hwh are in `bitstream/`."
        device = '"board")  # off the board: "golden" or "csim"'
    else:
        missing = "\n".join(f"- `{item}`" for item in manifest["missing"])
        howto = manifest["bitstream_build"]
        commands = "\n".join(bitstream_steps(howto))
        status = (
            "**Incomplete: no bitstream.** Missing:\n\n"
            f"{missing}\n\n"
            "Build it with `make bitstream` in the HLS project, on the machine that ran "
            "`codesign deploy` (with Vivado installed):\n\n"
            f"```bash\n{commands}\n```\n\n"
            f"It lands in `{howto['output']}`, where `codesign deploy` finds it: run the "
            "deploy again. Until then the notebooks and the example below run on a "
            "simulated board (`CODESIGN_DEVICE=golden` or `csim`)."
        )
        device = '"golden")  # no bitstream yet; "board" on the board'
    return f"""# {model} on {board}: codesign deploy bundle

{status}

## Contents

| path | what |
|---|---|
| `bitstream/` | `<name>.bit` + `<name>.hwh` (what `pynq.Overlay` loads), bitstream manifest |
| `program.bin` | the Program the kernel runs (layers, packed weights, tables) |
| `host.json` | the model card: image size, patch size, tasks, output kind |
| `regmap.json` | the kernel's AXI4-Lite register map |
| `report.json` | the build report: fidelity vs torch, per-layer formats and errors |
| `reference.npz` | sample images; per task the torch (CPU) and golden outputs |
| `model/` | `config.json` + `weights.pt`: the torch model, for a live comparison |
| `host/codesign_host/` | the PYNQ driver: `codesign.runtime` and what it imports (numpy, pynq) |
| `notebooks/{notebook}` | load the overlay, run every task, plot, time, compare with torch |
| `interface.md` | register map, buffer layout, Program format: write your own host code |
| `manifest.json` | every file with its SHA-256, the ArchConfig, completeness |

## On the board

Copy this folder to the board (from the folder that holds it):

```bash
scp -r {manifest["folder"]} xilinx@<board>:~/jupyter_notebooks/
```

Open `notebooks/{notebook}` in the board's Jupyter and run it (it uses the board when
`CODESIGN_DEVICE` is unset).

## From Python

Run from this folder (on the board, or on any machine with numpy and pynq):

```python
import sys

sys.path.insert(0, "host")  # this bundle's driver: the package codesign_host
from codesign_host.runtime import open_bundle

bundle = open_bundle(".", device={device}
images = bundle.reference()["images"]  # float [B, C, H, W]: the bundle's samples
outputs = bundle.accelerator.run(images, task=0)  # the torch model's output shape
```

The driver is packed as `codesign_host`, not `codesign`, so it works the same whether
or not codesign is installed and never mixes with it. It runs `device="board"` and
`device="golden"` (the numpy golden executor) by itself; `device="csim"` (the HLS
kernel under g++) and `device="rtl"` (the Verilated RTL) need the full codesign
install, and say so when it is missing.
"""


def deploy(
    model: str,
    board: str = "zcu102",
    out=None,
    *,
    precision=None,
    weights=None,
    seed: int = 0,
    bitstreams=None,
    images: int = 4,
    calib=None,
    arch=None,
    progress=None,
) -> Path:
    """Build ``model`` for ``board`` and pack the deploy folder; returns its path.

    ``calib`` and ``arch`` as in ``codesign.build`` (default: the model's dataset or
    random images; the board's ArchConfig)."""
    import codesign

    from .program import Program
    from .runtime.layout import ModelCard

    def step(message: str) -> None:
        if progress:
            progress(message)

    step("build")
    build = codesign.build(
        model, board=board, precision=precision, weights=weights, seed=seed, calib=calib,
        arch=arch, progress=False,
    )  # fmt: skip
    card = ModelCard.from_build(build)
    name = f"{Path(str(model)).stem}-{build.state.board.name}"
    out = Path(out) if out is not None else default_out_dir(name)
    bit_dir = find_bitstream_dir(str(model), build.state.board.name, bitstreams)
    bit_files, missing, bit_manifest = _bitstream_files(bit_dir)
    if bit_manifest.get("arch"):
        _check_arch(build.program, bit_manifest["arch"], bit_dir)

    with atomic_output_dir(out) as tmp:
        step("pack")
        if bit_files:
            (tmp / "bitstream").mkdir()
            for path in bit_files:
                shutil.copy2(path, tmp / "bitstream" / path.name)
        (tmp / "program.bin").write_bytes(build.program_bytes)
        Program.from_bytes(build.program_bytes).dump_json(tmp / "program.json")
        (tmp / "host.json").write_text(json.dumps(card.to_dict(), indent=1) + "\n")
        regmap = register_map(build.program.weight_ports)
        (tmp / "regmap.json").write_text(json.dumps(regmap.to_dict(), indent=1) + "\n")
        (tmp / "report.json").write_text(json.dumps(build.report, indent=1) + "\n")
        _write_model(tmp / "model", build, model)
        step("reference")
        np.savez_compressed(tmp / "reference.npz", **_reference(build, card, images))
        _copy_driver(tmp)
        notebook = NOTEBOOKS[card.family]
        (tmp / "notebooks").mkdir()
        source = REPO / "docs" / "notebooks" / notebook
        if not source.is_file():
            raise DeployError(f"{source} is missing (python docs/notebooks/make_notebooks.py)")
        shutil.copy2(source, tmp / "notebooks" / notebook)
        interface = REPO / "docs" / "interface.md"
        if interface.is_file():
            shutil.copy2(interface, tmp / "interface.md")
        hls_project = hls_project_dir(str(model), build.state.board.name)
        manifest = {
            "format": MANIFEST_FORMAT,
            "model": card.name,
            "board": build.state.board.name,
            "part": build.state.board.part,
            "folder": out.name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "codesign_version": __version__,
            "complete": not missing,
            "missing": missing,
            "bitstream_source": str(bit_dir),
            "bitstream_manifest": bit_manifest or None,
            "bitstream_build": None
            if not missing
            else {
                "hls_project": str(hls_project),
                "project_exists": (hls_project / "Makefile").is_file(),
                "codesign_build": _build_command(model, build),
                "output": str(hls_project / "bitstreams" / name),
            },
            "arch": build.state.arch.to_dict(),
            "precision": str(build.state.options.precision),
            "program": {
                "bytes": len(build.program_bytes),
                "sha256": hashlib.sha256(build.program_bytes).hexdigest(),
                "arena_bytes": build.program.arena_bytes,
            },
            "notebook": notebook,
            "fidelity": build.report["fidelity"]["vs_torch"],
        }
        (tmp / "README.md").write_text(_readme(manifest))
        manifest["files"] = {
            str(path.relative_to(tmp)): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
            for path in sorted(tmp.rglob("*"))
            if path.is_file()
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def default_out_dir(name: str) -> Path:
    """``build/deploy/<model>-<board>``: generated, like ``codesign build``'s output, so
    under the one folder that git and ruff ignore."""
    return Path("build") / "deploy" / name


def _build_command(model, build) -> str:
    """The ``codesign build`` that writes the HLS project for this bundle's kernel."""
    from .arch import Precision

    model = str(model)
    if model.endswith((".yaml", ".yml")):
        model = str(Path(model).resolve())  # the commands are run from anywhere
    words = ["codesign", "build", "--model", model, "--board", build.state.board.name]
    precision = build.state.options.precision
    if precision != Precision():
        words += ["--precision", str(precision)]
    return shlex.join(words)


def _write_model(folder: Path, build, model) -> None:
    """Config + state dict, so a machine with torch can rebuild the float model."""
    import torch

    from .models import get_config, load_config

    folder.mkdir()
    name = str(model)
    config = load_config(name) if name.endswith((".yaml", ".yml")) else get_config(name)
    (folder / "config.json").write_text(json.dumps(config.as_dict(), indent=1) + "\n")
    torch.save(build.module.state_dict(), folder / "weights.pt")


def _check_arch(program, built: dict, folder: Path) -> None:
    """The Program must run on the kernel the bitstream was built with: same bus, tile
    and tables, within its attention slots, on-chip maxima and buffer depths."""
    from .arch import ArchConfig
    from .hls.render import RenderError, check_program_fits
    from .runtime.driver import ProgramMismatchError, check_program_against_arch

    known = set(ArchConfig().to_dict())
    try:
        check_program_against_arch(program, built)
        check_program_fits(
            program, ArchConfig.from_dict({k: built[k] for k in built if k in known})
        )
    except (ProgramMismatchError, RenderError) as error:
        raise DeployError(f"{folder}: the bitstream cannot run this Program: {error}") from None


@click.command("deploy")
@click.option("--model", "model", required=True, help="registered name (codesign models) or YAML")
@click.option("--board", default="zcu102", show_default=True, help="target board")
@click.option("--out", type=click.Path(file_okay=False), help="[build/deploy/<model>-<board>]")
@click.option("--precision", help="wNaM: weight/act bits [the board's default for the model]")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="torch state dict")
@click.option("--seed", default=0, show_default=True, help="seed of the random weights")
@click.option("--bitstreams", type=click.Path(file_okay=False), help="[./bitstreams or repo]")
@click.option("--images", default=4, show_default=True, help="reference images in the bundle")
def deploy_command(model, board, out, precision, weights, seed, bitstreams, images) -> None:
    """Pack bitstream, hwh, Program, driver and notebooks into one folder for the board."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True)
    try:
        with Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
            console=err, transient=True,
        ) as bar:  # fmt: skip
            job = bar.add_task("deploy", total=None)
            folder = deploy(
                model,
                board,
                out,
                precision=precision,
                weights=weights,
                seed=seed,
                bitstreams=bitstreams,
                images=images,
                progress=lambda message: bar.update(job, description=message),
            )
    except (ValueError, OSError, DeployError) as error:
        err.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    manifest = json.loads((folder / "manifest.json").read_text())
    size = sum(entry["bytes"] for entry in manifest["files"].values())
    plain = {"markup": False, "highlight": False, "soft_wrap": True}  # copyable as printed
    console.print(f"wrote {folder}{os.sep} ({len(manifest['files'])} files, "
                  f"{size / 1e6:.2f} MB)", **plain)  # fmt: skip
    if manifest["complete"]:
        console.print("  complete: bitstream + hwh packed; copy the folder to the board")
        return
    console.print("[yellow]  incomplete: no bitstream[/yellow] (missing: "
                  + escape(", ".join(manifest["missing"])) + ")", highlight=False)  # fmt: skip
    howto = manifest["bitstream_build"]
    console.print("  build it with `make bitstream` in the HLS project, on a machine with Vivado:",
                  **plain)  # fmt: skip
    for command in bitstream_steps(howto, relative=True):
        console.print(f"    {command}", **plain)
    output = shell_path(howto["output"], relative=True)
    console.print(f"  then deploy again: it picks the bitstream up from {output}", **plain)
    console.print("  meanwhile the notebooks run on a simulated board (CODESIGN_DEVICE=golden)")


__all__ = [
    "DeployError",
    "bitstream_steps",
    "default_out_dir",
    "deploy",
    "deploy_command",
    "find_bitstream_dir",
    "hls_project_dir",
    "sample_images",
    "shell_path",
]
