"""Vitis HLS and Vivado: find them, run the generated project, read the synthesis report.

Nothing here pretends: without ``vitis_hls`` (or ``vivado``) on PATH or under
``$XILINX_HLS`` / ``$XILINX_VITIS`` / ``$XILINX_VIVADO`` a run returns ``ran: False``
with the reason and no numbers. With the tools, the generated ``run_hls.tcl`` /
``vivado_bd.tcl`` run in the project folder, their output streams to a log file under
``logs/`` while a spinner shows the elapsed time and the latest log line, and the
synthesis report (``codesign_hls/solution/syn/report/csynth.xml``) is parsed into a
dict for the build report.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from .project import DEFAULT_STEPS, IP_DIR, REPORT_PATH, STEPS

VERSION_RE = re.compile(r"v?(20\d\d\.\d)")
TOOL_ENV = {
    "vitis_hls": ("XILINX_HLS", "XILINX_VITIS"),
    "vivado": ("XILINX_VIVADO",),
}
INSTALL_HINT = {
    "vitis_hls": "install Vitis HLS 2023.1 or newer and source <Xilinx>/Vitis_HLS/<version>/"
    "settings64.sh (or set XILINX_HLS)",
    "vivado": "install Vivado 2023.1 or newer and source <Xilinx>/Vivado/<version>/settings64.sh "
    "(or set XILINX_VIVADO)",
}


# ---------------------------------------------------------------- finding the tools


def find_tool(name: str) -> str | None:
    """Path of `name` (vitis_hls, vivado): PATH first, then the Xilinx environment."""
    found = shutil.which(name)
    if found:
        return found
    for variable in TOOL_ENV.get(name, ()):
        root = os.environ.get(variable)
        if root:
            candidate = Path(root) / "bin" / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def find_vitis_hls() -> str | None:
    return find_tool("vitis_hls")


def find_vivado() -> str | None:
    return find_tool("vivado")


def tool_version(path: str, timeout: float = 120.0) -> str | None:
    """The release (``2023.2``) a Xilinx tool reports with ``-version``."""
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = VERSION_RE.search(out.stdout + out.stderr)
    return match.group(1) if match else None


def absent(name: str, steps: Sequence[str] = ()) -> dict:
    """The result of a run that could not happen: the reason, and no numbers."""
    return {
        "tool": name,
        "ran": False,
        "ok": False,
        "reason": f"{name} not found on PATH: {INSTALL_HINT[name]}",
        "steps": list(steps),
        "report": None,
    }


# ---------------------------------------------------------------- running


def _check_steps(steps: Sequence[str]) -> list[str]:
    chosen = []
    for step in steps:
        step = step.lower()
        if step not in STEPS:
            raise ValueError(f"unknown Vitis HLS step {step!r}; choose from {', '.join(STEPS)}")
        if step not in chosen:
            chosen.append(step)
    if not chosen:
        raise ValueError("no Vitis HLS step chosen")
    return chosen


def _stream(
    command: list[str],
    cwd: Path,
    env: dict,
    log_path: Path,
    title: str,
    timeout: float | None,
    show_progress: bool,
) -> tuple[int | None, float, list[str]]:
    """Run `command`, write its output to `log_path`, show a spinner with the elapsed time
    and the latest line; returns (exit code or None on timeout, seconds, last lines)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: list[str] = []
    start = time.monotonic()
    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[title]}[/bold]"),
        TimeElapsedColumn(),
        TextColumn("{task.description}", style="dim"),
        console=console,
        transient=True,
        disable=not show_progress,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def reader(stream) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    code: int | None = None
    with log_path.open("w") as log, progress:
        task = progress.add_task("starting", title=title)
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=reader, args=(process.stdout,), daemon=True).start()
        finished = False
        while not finished:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = ""
            if line is None:
                finished = True
            elif line:
                log.write(line)
                text = line.rstrip()
                if text:
                    tail = [*tail[-19:], text]
                    progress.update(task, description=text[:90])
            if timeout is not None and time.monotonic() - start > timeout:
                process.kill()
                tail.append(f"(killed after {timeout:g} s)")
                process.wait()
                return None, round(time.monotonic() - start, 1), tail
        code = process.wait()
    return code, round(time.monotonic() - start, 1), tail


def run_vitis_hls(
    project_dir,
    steps: Sequence[str] = DEFAULT_STEPS,
    *,
    tb_args: str | None = None,
    timeout: float | None = None,
    show_progress: bool = True,
) -> dict:
    """Run ``vitis_hls -f run_hls.tcl`` with `steps` in a generated project folder.

    Returns ``ran``/``ok``/``reason``, the tool and version, the log path, the elapsed
    seconds and, after csynth, the parsed synthesis report (``report``)."""
    steps = _check_steps(steps)
    project_dir = Path(project_dir)
    if not (project_dir / "run_hls.tcl").is_file():
        raise FileNotFoundError(f"{project_dir}: no run_hls.tcl; render the HLS project first")
    tool = find_vitis_hls()
    if tool is None:
        return absent("vitis_hls", steps)
    version = tool_version(tool)
    if version:
        info = project_dir / "build_info"
        info.mkdir(exist_ok=True)
        (info / "vitis_hls_version.txt").write_text(f"Vitis HLS v{version}\n")
    env = dict(os.environ, CODESIGN_STEPS=" ".join(steps))
    if tb_args is not None:
        env["CODESIGN_TB_ARGS"] = tb_args
    log = project_dir / "logs" / f"vitis_hls_{'_'.join(steps)}.log"
    code, seconds, tail = _stream(
        [tool, "-f", "run_hls.tcl"],
        project_dir,
        env,
        log,
        f"vitis_hls {' '.join(steps)}",
        timeout,
        show_progress,
    )
    result = _tool_result("vitis_hls", tool, version, code, seconds, log, tail)
    result["steps"] = steps
    report = project_dir / REPORT_PATH
    if "csynth" in steps and report.is_file():
        result["report"] = parse_csynth_xml(report)
    elif "csynth" in steps and code == 0:
        result["ok"] = False
        result["reason"] = f"vitis_hls finished but wrote no synthesis report at {report}"
    if "export" in steps:
        result["ip_dir"] = str(project_dir / IP_DIR)
    return result


def run_vivado(
    project_dir,
    bitstream_dir: str | None = None,
    jobs: int = 2,
    *,
    timeout: float | None = None,
    show_progress: bool = True,
) -> dict:
    """Run ``vivado -mode batch -source vivado_bd.tcl`` (after ``run_vitis_hls`` exported
    the IP): block design, implementation, bitstream, .hwh and manifest.json."""
    project_dir = Path(project_dir)
    if not (project_dir / "vivado_bd.tcl").is_file():
        raise FileNotFoundError(f"{project_dir}: no vivado_bd.tcl; render the HLS project first")
    tool = find_vivado()
    if tool is None:
        return absent("vivado")
    log = project_dir / "logs" / "vivado.log"
    command = [tool, "-mode", "batch", "-nojournal", "-nolog", "-source", "vivado_bd.tcl"]
    if bitstream_dir is not None:
        command += ["-tclargs", str(bitstream_dir), str(jobs)]
    code, seconds, tail = _stream(
        command, project_dir, dict(os.environ), log, "vivado bitstream", timeout, show_progress
    )
    return _tool_result("vivado", tool, tool_version(tool), code, seconds, log, tail)


def _tool_result(name, tool, version, code, seconds, log, tail) -> dict:
    """What a vendor-tool run reports: where it ran, how it ended, the log's last lines."""
    result = {
        "tool": name,
        "path": tool,
        "version": version,
        "ran": True,
        "ok": code == 0,
        "returncode": code,
        "seconds": seconds,
        "log": str(log),
        "reason": None,
        "report": None,
    }
    if code != 0:
        what = "timed out" if code is None else f"exited with code {code}"
        result["reason"] = f"{name} {what}; last lines of {log}:\n" + "\n".join(tail[-8:])
    return result


# ---------------------------------------------------------------- csynth.xml


def _text(node, path: str) -> str | None:
    found = node.find(path) if node is not None else None
    if found is None or found.text is None:
        return None
    return found.text.strip()


def _number(text: str | None) -> int | float | None:
    """Report numbers: ints, floats, or None for ``undef`` / ``-`` / missing."""
    if text is None:
        return None
    text = text.strip().replace(",", "")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


RESOURCE_TAGS = {
    "bram_18k": ("BRAM_18K",),
    "dsp": ("DSP", "DSP48E"),  # DSP48E in reports before 2020.2
    "ff": ("FF",),
    "lut": ("LUT",),
    "uram": ("URAM",),
}


def _resources(node) -> dict:
    out = {}
    for key, tags in RESOURCE_TAGS.items():
        value = None
        for tag in tags:
            value = _number(_text(node, tag))
            if value is not None:
                break
        out[key] = value
    return out


def _value(node, tag: str):
    """A number, or {"min", "max"} where the report gives a range (variable trip counts)."""
    child = node.find(tag)
    if child is None:
        return None
    span = child.find("range")
    if span is not None:
        return {"min": _number(_text(span, "min")), "max": _number(_text(span, "max"))}
    return _number(child.text)


def _loops(node, parent: str = "") -> list[dict]:
    """Every loop of SummaryOfLoopLatency, nested ones named parent/child."""
    loops = []
    for child in list(node) if node is not None else []:
        if child.find("TripCount") is None and child.find("Latency") is None:
            continue
        name = f"{parent}/{child.tag}" if parent else child.tag
        loops.append(
            {
                "name": name,
                "trip_count": _value(child, "TripCount"),
                "latency": _value(child, "Latency"),
                "iteration_latency": _value(child, "IterationLatency"),
                "pipeline_ii": _value(child, "PipelineII"),
                "pipeline_depth": _value(child, "PipelineDepth"),
            }
        )
        loops += _loops(child, name)
    return loops


def parse_csynth_xml(path) -> dict:
    """The numbers of a Vitis HLS ``csynth.xml`` the build report shows.

    Latency in cycles (best/average/worst; None where Vitis reports ``undef``), the
    initiation interval, the target and estimated clock, resources used and available
    (BRAM_18K, DSP, FF, LUT, URAM) with utilisation, and the loop table."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise ValueError(f"{path}: not a readable csynth.xml ({err})") from None
    if root.find("PerformanceEstimates") is None or root.find("AreaEstimates") is None:
        raise ValueError(f"{path}: no PerformanceEstimates/AreaEstimates: not a csynth.xml")
    user = root.find("UserAssignments")
    perf = root.find("PerformanceEstimates")
    latency = perf.find("SummaryOfOverallLatency")
    target = _number(_text(user, "TargetClockPeriod"))
    estimated = _number(_text(perf, "SummaryOfTimingAnalysis/EstimatedClockPeriod"))
    used = _resources(root.find("AreaEstimates/Resources"))
    available = _resources(root.find("AreaEstimates/AvailableResources"))
    cycles = {
        "best": _number(_text(latency, "Best-caseLatency")),
        "average": _number(_text(latency, "Average-caseLatency")),
        "worst": _number(_text(latency, "Worst-caseLatency")),
    }
    period = estimated if estimated else target
    latency_ms = {
        key: (
            round(value * target * 1e-6, 6) if isinstance(value, (int, float)) and target else None
        )
        for key, value in cycles.items()
    }
    return {
        "source": str(path),
        "tool_version": _text(root, "ReportVersion/Version"),
        "top": _text(user, "TopModelName"),
        "part": _text(user, "Part"),
        "family": _text(user, "ProductFamily"),
        "target_clock_ns": target,
        "clock_uncertainty_ns": _number(_text(user, "ClockUncertainty")),
        "estimated_clock_ns": estimated,
        "estimated_fmax_mhz": round(1000.0 / period, 1) if period else None,
        "latency_cycles": cycles,
        "latency_ms": latency_ms,
        "interval": {
            "min": _number(_text(latency, "Interval-min")),
            "max": _number(_text(latency, "Interval-max")),
        },
        "resources": used,
        "available": available,
        "utilisation_percent": {
            key: (
                round(100.0 * used[key] / available[key], 1)
                if used[key] is not None and available[key]
                else None
            )
            for key in used
        },
        "loops": _loops(perf.find("SummaryOfLoopLatency")),
    }


def compare_with_estimate(report: dict, resources: dict) -> dict:
    """Vitis numbers next to ``codesign.estimate.estimate_resources``' (BRAM_18K / 2 =
    BRAM36), with the ratio synthesis / estimate."""
    vitis = report["resources"]
    pairs = {
        "dsp": vitis["dsp"],
        "bram36": vitis["bram_18k"] / 2 if vitis["bram_18k"] is not None else None,
        "uram": vitis["uram"],
        "lut": vitis["lut"],
        "ff": vitis["ff"],
    }
    return {
        key: {
            "vitis": value,
            "estimate": resources[key],
            "ratio": round(value / resources[key], 3)
            if value is not None and resources[key]
            else None,
        }
        for key, value in pairs.items()
    }


__all__ = [
    "absent",
    "compare_with_estimate",
    "find_tool",
    "find_vitis_hls",
    "find_vivado",
    "parse_csynth_xml",
    "run_vitis_hls",
    "run_vivado",
    "tool_version",
]
