"""The Vitis HLS / Vivado project files, the tool runner and the csynth.xml parser.

Vitis HLS and Vivado are not installed here: the generated Tcl is run by tclsh against
stand-ins of the vendor commands (tests/data/vendor_stubs.tcl) that record every call,
so a syntax error, an undefined variable, an unknown command or a wrong order fails.
The real flow runs in ``test_real_vitis_flow`` when vitis_hls is on PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from codesign.arch import BOARDS, ArchConfig, get_board
from codesign.hls import project as hls_project
from codesign.hls import vitis

DATA = Path(__file__).parent / "data"
STUBS = DATA / "vendor_stubs.tcl"
needs_tclsh = pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh not installed")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def _render(program, arch, board, root: Path, **kwargs) -> dict[str, str]:
    files = hls_project.project_files(program, arch, board, **kwargs)
    root.mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        (root / relative).write_text(text)
    # the kernel and testbench are another module's job; their file names are enough here
    from codesign.hls.render import SOURCE_TEMPLATES

    for _, relative in SOURCE_TEMPLATES:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("// placeholder\n")
    return files


def _tclsh(root: Path, script: str, stub_dir: Path, board_part="", args=(), env=None):
    stub_dir.mkdir(parents=True, exist_ok=True)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("CODESIGN_")}
    run_env.update(env or {})
    out = subprocess.run(
        ["tclsh", str(STUBS), script, str(stub_dir), board_part, *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=run_env,
        timeout=60,
    )
    calls = [line for line in out.stdout.splitlines() if not line.startswith(("codesign:", " "))]
    return out, calls


def _names(calls: list[str]) -> list[str]:
    return [call.split()[0] for call in calls]


def _in_order(names: list[str], expected: list[str]) -> bool:
    position = 0
    for name in names:
        if position < len(expected) and name == expected[position]:
            position += 1
    return position == len(expected)


# ---------------------------------------------------------------- rendering


def _masters_for(arch, board):
    """The ZCU102 build's ArchConfig with no more weight masters than `board` has ports for
    (the PYNQ-Z2 has two)."""
    return arch.with_(weight_ports=min(arch.weight_ports, board.weight_ports_max))


@pytest.mark.parametrize("board_name", list(BOARDS))
def test_project_files_for_every_board(tiny_build, board_name, tmp_path):
    board = get_board(board_name)
    program, arch = tiny_build.program, _masters_for(tiny_build.state.arch, board)
    files = hls_project.project_files(program, arch, board)
    assert sorted(files) == ["Makefile", "run_hls.tcl", "vivado_bd.tcl"]
    period = f"{1000.0 / board.clock_mhz:.3f}"
    hls = files["run_hls.tcl"]
    assert f"set part_name {board.part}\n" in hls
    assert f"set clock_period_ns {period}\n" in hls
    assert "set top_name codesign_top\n" in hls
    assert "create_clock -period $clock_period_ns" in hls
    assert "-std=c++17 -DNDEBUG" in hls
    assert "export_design -format ip_catalog" in hls
    assert "config_interface -m_axi_addr64" in hls
    bd = files["vivado_bd.tcl"]
    ps_ip = "zynq_ultra_ps_e" if board.family == "zynquplus" else "processing_system7"
    assert f"xilinx.com:ip:{ps_ip} ps" in bd
    assert f"set part_name {board.part}\n" in bd
    assert f"set clock_mhz {board.clock_mhz:g}\n" in bd
    for kernel_port, ps_port in zip(("gmem0", "gmem1"), board.pl_ports, strict=False):
        assert f"codesign_top_0/m_axi_{kernel_port}]" in bd
        assert f"ps/{ps_port}]" in bd
    assert "codesign_top_0/s_axi_control]" in bd
    assert f"set kernel_vlnv {hls_project.IP_VLNV}\n" in bd
    sha = hashlib.sha256(program.to_bytes()).hexdigest()
    assert f"set program_sha256 {sha}\n" in bd
    makefile = files["Makefile"]
    assert f"BITSTREAM_DIR ?= bitstreams/m3vit-tiny-{board_name}\n" in makefile
    for target in ("csim:", "hls:", "cosim:", "bitstream:", "clean:"):
        assert f"\n{target}" in makefile


def test_bus_width_reaches_the_scripts(tiny_build, tmp_path):
    from codesign.compiler import compile_graph

    arch = ArchConfig(bus_bits=64)
    program = compile_graph(tiny_build.graph, arch)
    files = hls_project.project_files(program, arch, "zcu102", "custom-name")
    assert "-m_axi_alignment_byte_size 8 -m_axi_max_widen_bitwidth 64" in files["run_hls.tcl"]
    assert "CONFIG.PSU__SAXIGP2__DATA_WIDTH 64" in files["vivado_bd.tcl"]
    assert "set model custom-name\n" in files["vivado_bd.tcl"]
    with pytest.raises(ValueError, match="bus_bits"):
        hls_project.project_files(program, ArchConfig(), "zcu102")


def test_render_project_writes_the_project_files(tiny_build, tmp_path):
    from codesign.hls.render import render_project

    rendered = render_project(tiny_build.program, tiny_build.state.arch, "kv260", tmp_path)
    assert rendered.project_files
    for name in ("Makefile", "run_hls.tcl", "vivado_bd.tcl"):
        assert name in rendered.files and (tmp_path / name).is_file()


def test_tcl_quoting():
    assert hls_project.tcl_word("xczu9eg-ffvb1156-2-e") == "xczu9eg-ffvb1156-2-e"
    assert hls_project.tcl_word("two words") == "{two words}"
    with pytest.raises(ValueError):
        hls_project.tcl_word("unbalanced {")
    with pytest.raises(ValueError):
        hls_project.tcl_word("back\\slash")


# ---------------------------------------------------------------- run_hls.tcl under tclsh


@needs_tclsh
def test_run_hls_default_steps_in_order(tiny_build, tmp_path):
    root = tmp_path / "proj"
    _render(tiny_build.program, tiny_build.state.arch, "zcu102", root)
    out, calls = _tclsh(root, "run_hls.tcl", tmp_path / "stub")
    assert out.returncode == 0, out.stderr
    names = _names(calls)
    assert _in_order(
        names,
        [
            "open_project",
            "set_top",
            "add_files",
            "open_solution",
            "set_part",
            "create_clock",
            "config_interface",
            "config_export",
            "csynth_design",
            "export_design",
            "exit",
        ],
    )
    assert "csim_design" not in names and "cosim_design" not in names
    assert calls[0] == "open_project -reset codesign_hls"
    assert "set_part xczu9eg-ffvb1156-2-e" in calls
    assert "create_clock -period 3.333 -name default" in calls
    kernel = [c for c in calls if c.startswith("add_files ") and " -tb " not in c]
    bench = [c for c in calls if c.startswith("add_files -tb ")]
    assert any("src/codesign_top.cpp" in c for c in kernel)
    assert any("tb/tb_codesign.cpp" in c for c in bench)
    assert all("-std=c++17 -DNDEBUG" in c for c in kernel + bench)


@needs_tclsh
def test_run_hls_csim_and_cosim_take_the_testbench_arguments(tiny_build, tmp_path):
    root = tmp_path / "proj"
    _render(tiny_build.program, tiny_build.state.arch, "zcu102", root)
    # the layout the build writes: program.bin beside the project, cases under tb/
    (tmp_path / "program.bin").write_bytes(tiny_build.program_bytes)
    (root / "case0").mkdir()
    (root / "tb" / "cases" / "task0").mkdir(parents=True)
    (root / "tb" / "args.txt").write_text("../program.bin tb/cases/task0\n")
    out, calls = _tclsh(root, "run_hls.tcl", tmp_path / "stub", env={"CODESIGN_STEPS": "csim"})
    assert out.returncode == 0, out.stderr
    csim = [c for c in calls if c.startswith("csim_design")]
    assert len(csim) == 1 and "csynth_design" not in _names(calls)
    assert f"{tmp_path / 'program.bin'} {root / 'tb' / 'cases' / 'task0'}" in csim[0]
    data = [c for c in calls if c.startswith("add_files -tb") and "-cflags" not in c]
    assert sorted(c.split()[-1] for c in data) == [
        str(root / "tb" / "args.txt"),
        str(root / "tb" / "cases"),
    ]
    # a csim-only run keeps the synthesised solution: no -reset
    assert "open_project codesign_hls" in calls
    # -tclargs win over the environment; CODESIGN_TB_ARGS over tb/args.txt
    out, calls = _tclsh(
        root,
        "run_hls.tcl",
        tmp_path / "stub",
        args=["cosim"],
        env={"CODESIGN_STEPS": "csim", "CODESIGN_TB_ARGS": "../program.bin case0 extra"},
    )
    assert out.returncode == 0, out.stderr
    cosim = [c for c in calls if c.startswith("cosim_design")]
    assert len(cosim) == 1 and cosim[0].endswith("case0 extra}")
    assert "csim_design" not in _names(calls)


@needs_tclsh
def test_run_hls_errors_are_clear(tiny_build, tmp_path):
    root = tmp_path / "proj"
    _render(tiny_build.program, tiny_build.state.arch, "zcu102", root)
    out, _ = _tclsh(root, "run_hls.tcl", tmp_path / "stub", args=["synth"])
    assert out.returncode != 0 and "unknown step 'synth'" in out.stderr
    out, _ = _tclsh(root, "run_hls.tcl", tmp_path / "stub", env={"CODESIGN_STEPS": "csim"})
    assert out.returncode != 0 and "tb/args.txt" in out.stderr
    for path in (root / "src").iterdir():
        path.unlink()
    out, _ = _tclsh(root, "run_hls.tcl", tmp_path / "stub")
    assert out.returncode != 0 and "no kernel sources" in out.stderr


# ---------------------------------------------------------------- vivado_bd.tcl under tclsh


def _vivado_outputs(root: Path, stub_dir: Path, legacy_handoff: bool = False) -> None:
    """Where Vivado would have left the IP, the bitstream and the hardware handoff."""
    ip = root / hls_project.IP_DIR
    ip.mkdir(parents=True)
    (ip / "component.xml").write_text("<component/>\n")
    run = stub_dir / "run_impl_1"
    run.mkdir(parents=True)
    (run / "codesign_bd_wrapper.bit").write_bytes(b"bit")
    kind = "srcs" if legacy_handoff else "gen"
    handoff = root / "vivado_project" / f"vivado_project.{kind}" / "sources_1" / "bd"
    handoff = handoff / "codesign_bd" / "hw_handoff"
    handoff.mkdir(parents=True)
    (handoff / "codesign_bd.hwh").write_text("<hwh/>\n")


@needs_tclsh
@pytest.mark.parametrize("board_name", list(BOARDS))
def test_vivado_block_design_for_every_board(tiny_build, board_name, tmp_path):
    board = get_board(board_name)
    root, stub_dir = tmp_path / "proj", tmp_path / "stub"
    arch = _masters_for(tiny_build.state.arch, board)
    _render(tiny_build.program, arch, board, root)
    with_board_files = board_name in ("zcu102", "pynq-z2")
    _vivado_outputs(root, stub_dir, legacy_handoff=board_name == "kv260")
    board_part = f"vendor:{board_name}:part0:1.0" if with_board_files else ""
    out, calls = _tclsh(root, "vivado_bd.tcl", stub_dir, board_part)
    assert out.returncode == 0, out.stderr
    names = _names(calls)
    assert _in_order(
        names,
        [
            "create_project",
            "get_board_parts",
            "create_bd_design",
            "create_bd_cell",
            "set_property",
            "create_bd_cell",
            "connect_bd_net",
            "connect_bd_intf_net",
            "assign_bd_address",
            "validate_bd_design",
            "save_bd_design",
            "generate_target",
            "make_wrapper",
            "add_files",
            "launch_runs",
            "wait_on_run",
            "write_hw_platform",
            "report_utilization",
        ],
    )
    assert f"create_project -force vivado_project {root / 'vivado_project'} -part {board.part}" in (
        calls
    )
    family_ps = "zynq_ultra_ps_e" if board.family == "zynquplus" else "processing_system7"
    assert f"create_bd_cell -type ip -vlnv xilinx.com:ip:{family_ps} ps" in calls
    automation = [c for c in calls if c.startswith("apply_bd_automation")]
    if board.family == "zynq":  # DDR and FIXED_IO are made external either way
        assert len(automation) == 1
        assert f'apply_board_preset "{int(with_board_files)}"' in automation[0]
    else:
        assert len(automation) == int(with_board_files)
    ps_config = next(c for c in calls if c.startswith("set_property -dict") and c.endswith(" ps"))
    clock = f"{board.clock_mhz:g}"
    if board.family == "zynquplus":
        assert f"CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {clock}" in ps_config
        assert "CONFIG.PSU__USE__S_AXI_GP2 1" in ps_config  # HP0
        assert "CONFIG.PSU__USE__S_AXI_GP3 1" in ps_config  # HP1
    else:
        assert f"CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {clock}" in ps_config
        assert "CONFIG.PCW_USE_S_AXI_HP0 1" in ps_config
        assert "CONFIG.PCW_S_AXI_HP1_DATA_WIDTH 64" in ps_config
    assert f"create_bd_cell -type ip -vlnv {hls_project.IP_VLNV} codesign_top_0" in calls
    intf = [c for c in calls if c.startswith("connect_bd_intf_net")]
    assert f"connect_bd_intf_net mem0/M00_AXI ps/{board.pl_ports[0]}" in intf
    assert f"connect_bd_intf_net mem1/M00_AXI ps/{board.pl_ports[1]}" in intf
    assert "connect_bd_intf_net ctrl_interconnect/M00_AXI codesign_top_0/s_axi_control" in intf

    out_dir = root / "bitstreams" / f"m3vit-tiny-{board_name}"
    assert (out_dir / f"m3vit-tiny-{board_name}.bit").read_bytes() == b"bit"
    assert (out_dir / f"m3vit-tiny-{board_name}.hwh").is_file()
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["model"] == "m3vit-tiny" and manifest["board"] == board_name
    assert manifest["part"] == board.part
    assert manifest["clock_mhz"] == board.clock_mhz
    assert manifest["program_sha256"] == hashlib.sha256(tiny_build.program_bytes).hexdigest()
    assert manifest["arch"] == arch.to_dict()
    assert manifest["tools"]["vivado"] == "2023.2"  # what the stand-in `version` returns
    assert manifest["files"]["bit"] == f"m3vit-tiny-{board_name}.bit"
    assert manifest["date"].endswith("Z")
    assert manifest["timing_wns_ns"] == 0.042 and manifest["timing_met"] is True


def test_weight_masters_get_their_own_ps_ports():
    """gmem0 (program and weights), gmem1 (arena), then gmem2..4 on the next PS slave ports;
    a board without enough ports refuses the ArchConfig before anything is built."""
    zcu102 = hls_project.ps_settings(get_board("zcu102"), 128, weight_ports=4)
    ports = {mem["kernel"]: mem["port"] for mem in zcu102["mem_ports"]}
    assert ports == {
        "m_axi_gmem0": "S_AXI_HP0_FPD", "m_axi_gmem1": "S_AXI_HP1_FPD",
        "m_axi_gmem2": "S_AXI_HP2_FPD", "m_axi_gmem3": "S_AXI_HP3_FPD",
        "m_axi_gmem4": "S_AXI_HPC0_FPD",
    }  # fmt: skip
    config = dict(zcu102["ps_config"])
    assert config["PSU__USE__S_AXI_GP0"] == "1" and config["PSU__SAXIGP0__DATA_WIDTH"] == "128"
    assert get_board("pynq-z2").weight_ports_max == 2
    with pytest.raises(ValueError, match=r"5 AXI masters .*the board has 4"):
        hls_project.ps_settings(get_board("pynq-z2"), 64, weight_ports=4)
    import codesign

    with pytest.raises(ValueError, match=r"pynq-z2 has 4 PS slave ports .* at most 2"):
        codesign.build("m3vit-tiny", "pynq-z2", arch={"weight_ports": 4})


@needs_tclsh
def test_vivado_needs_the_exported_ip_and_honours_the_output_dir(tiny_build, tmp_path):
    root, stub_dir = tmp_path / "proj", tmp_path / "stub"
    _render(tiny_build.program, tiny_build.state.arch, "zcu104", root)
    out, _ = _tclsh(root, "vivado_bd.tcl", stub_dir)
    assert out.returncode != 0 and "make hls" in out.stderr
    _vivado_outputs(root, stub_dir)
    target = tmp_path / "elsewhere"
    out, calls = _tclsh(root, "vivado_bd.tcl", stub_dir, args=[str(target), "7"])
    assert out.returncode == 0, out.stderr
    assert "launch_runs impl_1 -to_step write_bitstream -jobs 7" in calls
    assert (target / "manifest.json").is_file()
    (root / "build_info").mkdir()
    (root / "build_info" / "vitis_hls_version.txt").write_text("Vitis HLS v2023.2\n")
    env = {"CODESIGN_BITSTREAM_DIR": str(tmp_path / "from_env")}
    out, _ = _tclsh(root, "vivado_bd.tcl", stub_dir, env=env)
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "from_env" / "manifest.json").read_text())
    assert manifest["tools"]["vitis_hls"] == "Vitis HLS v2023.2"


# ---------------------------------------------------------------- Makefile


def _make(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VITIS_HLS="codesign-test-no-vitis_hls", VIVADO="codesign-test-no-vivado")
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@needs_make
def test_makefile_targets_dry_run(tiny_build, tmp_path):
    root = tmp_path / "proj"
    _render(tiny_build.program, tiny_build.state.arch, "ultra96v2", root)
    hls_run = 'CODESIGN_STEPS="csynth export" codesign-test-no-vitis_hls -f run_hls.tcl'
    expected = {
        "csim": ["CODESIGN_STEPS=csim codesign-test-no-vitis_hls -f run_hls.tcl"],
        "hls": [hls_run, "-version > build_info/vitis_hls_version.txt"],
        "cosim": [hls_run, "CODESIGN_STEPS=cosim codesign-test-no-vitis_hls -f run_hls.tcl"],
        "bitstream": [
            hls_run,
            "codesign-test-no-vivado -mode batch -nojournal -log logs/vivado.log "
            "-source vivado_bd.tcl -tclargs bitstreams/m3vit-tiny-ultra96v2 2",
        ],
        "clean": ["rm -rf codesign_hls vivado_project logs build_info"],
    }
    for target, commands in expected.items():
        out = _make(root, "-n", target)
        assert out.returncode == 0, out.stderr
        for command in commands:
            assert command in out.stdout, (target, out.stdout)
    out = _make(root, "-n", "bitstream", "BITSTREAM_DIR=/opt/out", "JOBS=8")
    assert "-tclargs /opt/out 8" in out.stdout
    assert "make csim" in _make(root).stdout  # help is the default goal


@needs_make
def test_makefile_says_clearly_when_the_tools_are_absent(tiny_build, tmp_path):
    root = tmp_path / "proj"
    _render(tiny_build.program, tiny_build.state.arch, "zcu102", root)
    for target, tool in (
        ("csim", "codesign-test-no-vitis_hls"),
        ("hls", "codesign-test-no-vitis_hls"),
    ):
        out = _make(root, target)
        assert out.returncode != 0
        assert f"'{tool}' is not on PATH" in out.stdout
        assert "Vitis HLS 2023.1 or newer" in out.stdout
    (root / hls_project.IP_DIR).mkdir(parents=True)
    (root / hls_project.IP_DIR / "component.xml").write_text("<component/>\n")
    out = _make(root, "bitstream")
    assert out.returncode != 0 and "'codesign-test-no-vivado' is not on PATH" in out.stdout
    assert not (root / "bitstreams").exists()


# ---------------------------------------------------------------- vitis.py


def test_parse_csynth_fixture():
    report = vitis.parse_csynth_xml(DATA / "csynth_fixture.xml")
    assert report["top"] == "codesign_top"
    assert report["part"] == "xczu9eg-ffvb1156-2-e"
    assert report["tool_version"] == "2023.2"
    assert report["target_clock_ns"] == 3.333
    assert report["estimated_clock_ns"] == 2.915
    assert report["estimated_fmax_mhz"] == pytest.approx(343.1)
    assert report["latency_cycles"] == {"best": 1210, "average": None, "worst": 41873405}
    assert report["latency_ms"]["worst"] == pytest.approx(41873405 * 3.333e-6)
    assert report["interval"] == {"min": 1211, "max": 41873406}
    assert report["resources"] == {
        "bram_18k": 1186,
        "dsp": 2214,
        "ff": 201337,
        "lut": 143210,
        "uram": 0,
    }
    assert report["available"]["dsp"] == 2520 and report["available"]["bram_18k"] == 1824
    assert report["utilisation_percent"]["dsp"] == pytest.approx(87.9)
    assert report["utilisation_percent"]["uram"] is None  # the part has no URAM
    loops = {loop["name"]: loop for loop in report["loops"]}
    assert loops["LAYERS"]["trip_count"] == {"min": 1, "max": 512}
    assert loops["CHECK_LAYERS"]["pipeline_ii"] == 80
    assert loops["CHECK_LAYERS/READ_DESCRIPTOR"]["trip_count"] == 16


def test_parse_older_dsp_tag_and_bad_files(tmp_path):
    text = (DATA / "csynth_fixture.xml").read_text()
    old = tmp_path / "old.xml"
    old.write_text(text.replace("<DSP>", "<DSP48E>").replace("</DSP>", "</DSP48E>"))
    assert vitis.parse_csynth_xml(old)["resources"]["dsp"] == 2214
    broken = tmp_path / "broken.xml"
    broken.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"not a readable csynth\.xml"):
        vitis.parse_csynth_xml(broken)
    other = tmp_path / "other.xml"
    other.write_text("<profile><UserAssignments/></profile>")
    with pytest.raises(ValueError, match=r"not a csynth\.xml"):
        vitis.parse_csynth_xml(other)


def test_compare_with_estimate(tiny_build):
    from codesign.estimate import estimate_resources

    report = vitis.parse_csynth_xml(DATA / "csynth_fixture.xml")
    resources = estimate_resources(tiny_build.program, tiny_build.state.arch, "zcu102")
    table = vitis.compare_with_estimate(report, resources)
    assert table["bram36"]["vitis"] == 593
    assert table["dsp"]["ratio"] == pytest.approx(2214 / resources["dsp"], abs=1e-3)


@pytest.fixture
def no_xilinx(monkeypatch, tmp_path):
    """A PATH and environment without any Xilinx tool."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for variable in ("XILINX_HLS", "XILINX_VITIS", "XILINX_VIVADO"):
        monkeypatch.delenv(variable, raising=False)
    return empty


def test_absent_tools_give_a_reason_and_no_numbers(tiny_build, tmp_path, no_xilinx):
    root = tmp_path / "proj"
    _render(tiny_build.program, tiny_build.state.arch, "zcu102", root)
    assert vitis.find_vitis_hls() is None and vitis.find_vivado() is None
    result = vitis.run_vitis_hls(root, show_progress=False)
    assert result["ran"] is False and result["ok"] is False
    assert "vitis_hls not found on PATH" in result["reason"]
    assert result["report"] is None and result["steps"] == ["csynth", "export"]
    assert not (root / "logs").exists()
    result = vitis.run_vivado(root, show_progress=False)
    assert result["ran"] is False and "vivado not found" in result["reason"]
    with pytest.raises(ValueError, match="unknown Vitis HLS step"):
        vitis.run_vitis_hls(root, ["synthesis"])
    with pytest.raises(FileNotFoundError, match=r"run_hls\.tcl"):
        vitis.run_vitis_hls(tmp_path / "nowhere")


def test_runner_streams_the_log_and_reports_failure(tiny_build, tmp_path, no_xilinx, monkeypatch):
    """The runner's plumbing with a stand-in executable found through $XILINX_HLS: it
    records what it was given and fails; the result says so and carries no report."""
    root = tmp_path / "proj"
    _render(tiny_build.program, tiny_build.state.arch, "zcu102", root)
    bin_dir = tmp_path / "xilinx" / "bin"
    bin_dir.mkdir(parents=True)
    tool = bin_dir / "vitis_hls"
    tool.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-version" ]; then exit 0; fi\n'
        'echo "stand-in called with: $*"\n'
        'echo "steps: $CODESIGN_STEPS; tb: $CODESIGN_TB_ARGS"\n'
        "exit 3\n"
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("XILINX_HLS", str(tmp_path / "xilinx"))
    assert vitis.find_vitis_hls() == str(tool)
    result = vitis.run_vitis_hls(
        root, ["csim"], tb_args="program.bin case0", show_progress=False, timeout=60
    )
    assert result["ran"] and not result["ok"] and result["returncode"] == 3
    assert result["version"] is None and result["report"] is None
    assert "exited with code 3" in result["reason"]
    log = Path(result["log"]).read_text()
    assert "stand-in called with: -f run_hls.tcl" in log
    assert "steps: csim; tb: program.bin case0" in log


@pytest.mark.vendor
@pytest.mark.skipif(vitis.find_vitis_hls() is None, reason="vitis_hls not on PATH")
def test_real_vitis_flow(tiny_build, tmp_path):
    from codesign.estimate import estimate_resources
    from codesign.hls.render import render_project

    render_project(tiny_build.program, tiny_build.state.arch, "zcu102", tmp_path)
    result = vitis.run_vitis_hls(tmp_path, ["csynth", "export"], show_progress=False)
    assert result["ran"] and result["ok"], result["reason"]
    report = result["report"]
    assert report["top"] == "codesign_top" and report["part"] == "xczu9eg-ffvb1156-2-e"
    assert report["resources"]["dsp"] > 0
    assert (tmp_path / hls_project.IP_DIR / "component.xml").is_file()
    resources = estimate_resources(tiny_build.program, tiny_build.state.arch, "zcu102")
    print(json.dumps(vitis.compare_with_estimate(report, resources), indent=1))
