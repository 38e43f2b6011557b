"""HLS kernel rendering: sources from the ArchConfig alone, the generated headers agree
with codesign.program / codesign.arch, and the synthesisability lint (each rule on a bad
snippet, and every rendered kernel clean)."""

from __future__ import annotations

import json
import re

import pytest
from jinja2 import UndefinedError

from codesign.arch import ArchConfig, register_map
from codesign.hls.lint import RULES, lint_dir, lint_sources, strip_comments
from codesign.hls.render import (
    KERNEL_SOURCE,
    TESTBENCH_SOURCE,
    RenderError,
    _environment,
    check_program_fits,
    kernel_params,
    kernel_sources,
    render_project,
    render_sources,
)
from codesign.program import HEADER_FIELDS, LAYER_FIELDS, Op

ARCHS = {
    "default": ArchConfig(),
    "t16x8-p1-bus64": ArchConfig(tile_in=16, tile_out=8, attn_parallel=1, bus_bits=64),
    "t8x32-p4-bus256": ArchConfig(tile_in=8, tile_out=32, attn_parallel=4, bus_bits=256),
    "small-buffers": ArchConfig(
        tile_in=4, tile_out=16, attn_parallel=2, bus_bits=512, max_tokens=64, max_dim=128
    ),
}


def _defines(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#define\s+(\w+)\s+(\S+)", text, re.M))


@pytest.fixture(scope="module")
def rendered():
    return {name: render_sources(arch) for name, arch in ARCHS.items()}


def test_sources_depend_only_on_the_arch_and_are_deterministic(rendered):
    again = render_sources(ARCHS["default"], "zcu102")
    assert again == rendered["default"]  # the board does not enter the kernel
    assert render_sources(ARCHS["default"], "kv260") == again
    assert KERNEL_SOURCE in again and TESTBENCH_SOURCE in again
    configs = {name: src["src/codesign_config.h"] for name, src in rendered.items()}
    assert len(set(configs.values())) == len(configs)
    for name, arch in ARCHS.items():
        defines = _defines(configs[name])
        assert int(defines["TI"]) == arch.tile_in
        assert int(defines["TO"]) == arch.tile_out
        assert int(defines["ATTN_P"]) == arch.attn_parallel
        assert int(defines["BUS_BITS"]) == arch.bus_bits
        assert int(defines["EXP_ENTRIES"]) == (1 << arch.exp_index_bits) + 1
        assert int(defines["RSQRT_ENTRIES"]) == 3 * (1 << arch.rsqrt_index_bits) + 1
        assert int(defines["ROW_MAX"]) % arch.tile_in == 0
        # unroll / partition factors follow the tile too
        top = rendered[name][KERNEL_SOURCE]
        assert f"cyclic factor={arch.tile_in} dim=2" in top


def test_kernel_interface_matches_the_register_map(rendered):
    top = rendered["default"][KERNEL_SOURCE]
    assert (
        "void codesign_top(const bus_t *program, bus_t *arena, ap_uint<32> task, "
        "ap_uint<32> &status)" in top
    )
    pragmas = re.findall(r"#pragma HLS INTERFACE ([^\n]*)", top)
    maxi = {re.search(r"port=(\w+)", p).group(1): p for p in pragmas if "m_axi" in p}
    assert "bundle=gmem0" in maxi["program"] and "bundle=gmem1" in maxi["arena"]
    assert all("depth=" in p for p in maxi.values())
    lite = {re.search(r"port=(\w+)", p).group(1) for p in pragmas if "s_axilite" in p}
    assert lite == {"program", "arena", "task", "status", "return"}
    status = next(p for p in pragmas if "port=status" in p)
    assert f"offset=0x{register_map().offset('STATUS'):02X}" in status
    assert all("bundle=control" in p for p in pragmas if "s_axilite" in p)
    assert any("ap_ctrl_hs" in p for p in pragmas)
    regmap = _defines(rendered["default"]["src/codesign_regmap.h"])
    for reg in register_map().registers:
        assert int(regmap[f"CODESIGN_REG_{reg.name.upper()}"], 16) == reg.offset
    assert int(regmap["CODESIGN_REG_PROGRAM"], 16) == 0x10
    assert int(regmap["CODESIGN_REG_ARENA"], 16) == 0x1C
    assert int(regmap["CODESIGN_REG_TASK"], 16) == 0x28


def test_weight_masters_are_bundles_and_registers():
    """weight_ports=4: weights1..3 are m_axi gmem2..4 with their own s_axilite registers
    after task (Vitis's declaration order), as codesign.arch.register_map(4) says."""
    from codesign.hls.render import render_sources

    sources = render_sources(ArchConfig(weight_ports=4))
    top = sources[KERNEL_SOURCE]
    assert "ap_uint<32> task, const bus_t *weights1, const bus_t *weights2, " in top
    pragmas = re.findall(r"#pragma HLS INTERFACE ([^\n]*)", top)
    maxi = {re.search(r"port=(\w+)", p).group(1): p for p in pragmas if "m_axi" in p}
    assert {name: re.search(r"bundle=(\w+)", p).group(1) for name, p in maxi.items()} == {
        "program": "gmem0", "arena": "gmem1", "weights1": "gmem2", "weights2": "gmem3",
        "weights3": "gmem4",
    }  # fmt: skip
    regs = register_map(4)
    assert [regs.offset(f"weights{k}") for k in (1, 2, 3)] == [0x30, 0x3C, 0x48]
    regmap = _defines(sources["src/codesign_regmap.h"])
    assert int(regmap["CODESIGN_REG_WEIGHTS3"], 16) == 0x48
    assert regs.offset("STATUS") == register_map().offset("STATUS")


def test_arena_window_array_only_with_a_window(rendered):
    """arena_window_kib > 0 adds the on-chip window (a static array of bus beats bound to
    RAM, its header word, the window arguments and the C-sim accessor); 0 adds none."""
    for sources in rendered.values():
        # code only: comments name the ArchConfig field (the check's header rules read the
        # window word whatever the kernel: a Program with a window is refused)
        kernel = strip_comments("\n".join(kernel_sources(sources).values()))
        assert not re.search(r"\barena_window\b|u32 window_bytes|bind_storage", kernel)
        assert "codesign_window_word" not in sources[TESTBENCH_SOURCE]
        assert int(_defines(sources["src/codesign_config.h"])["ARENA_WINDOW_BEATS"]) == 0
    arch = ArchConfig(arena_window_kib=48, bus_bits=256)
    sources = render_sources(arch)
    beats = 48 * 1024 // 32
    assert int(_defines(sources["src/codesign_config.h"])["ARENA_WINDOW_BEATS"]) == beats
    top = sources[KERNEL_SOURCE]
    assert "static bus_t arena_window[ARENA_WINDOW_BEATS];" in top
    storage = re.findall(r"#pragma HLS bind_storage variable=arena_window ([^\n]*)", top)
    assert storage == ["type=ram_2p impl=uram", "type=ram_2p impl=bram"]  # by CODESIGN_WINDOW_URAM
    assert "(u32)hdr[H_WINDOW_BYTES]" in top
    assert int(_defines(sources["src/codesign_program.h"])["H_WINDOW_BYTES"]) == 104
    assert "u32 codesign_window_word(u32 byte_offset);" in sources["src/codesign_top.h"]
    assert "codesign_window_word(" in sources[TESTBENCH_SOURCE]
    # every op reaches the arena through the window-aware overloads
    for path in ("src/codesign_ucu.h", "src/codesign_rowops.h", "src/codesign_attention.h",
                 "src/codesign_moe.h", KERNEL_SOURCE):  # fmt: skip
        calls = re.findall(r"\b(?:read_words|write_words|load_rows|ucu_run|ucu_epilogue)\(arena,"
                           r"([^,]*),([^,]*),", sources[path])  # fmt: skip
        assert calls and all(c == (" arena_window", " window_bytes") for c in calls), path
    issues = lint_sources(kernel_sources(sources))
    assert not issues, "\n".join(map(str, issues))


def test_project_puts_the_window_in_uram_where_the_part_has_it(tiny_build):
    from codesign.hls.project import project_files

    program, arch = tiny_build.program, tiny_build.state.arch
    expected = {("zcu104", 8): True, ("zcu102", 8): False, ("zcu104", 0): False}
    for (board, window_kib), uram in expected.items():
        tcl = project_files(program, arch.with_(arena_window_kib=window_kib), board)["run_hls.tcl"]
        assert ("-DCODESIGN_WINDOW_URAM" in tcl) == uram, (board, window_kib)


def test_program_layout_header_is_generated_from_program_py(rendered):
    defines = _defines(rendered["default"]["src/codesign_program.h"])
    for index, name in enumerate(HEADER_FIELDS):
        assert int(defines[f"H_{name.upper()}"]) == 2 + index
    for op, fields in LAYER_FIELDS.items():
        assert int(defines[f"OP_{op.name}"]) == int(op)
        for index, name in enumerate(fields):
            assert int(defines[f"{op.name}_{name.upper()}"]) == 2 + index


def test_templates_refuse_missing_values():
    env = _environment()
    params = kernel_params(ArchConfig())
    del params["tile_in"]
    with pytest.raises(UndefinedError):
        env.get_template("codesign_config.h.j2").render(**params)


@pytest.mark.parametrize("name", list(ARCHS))
def test_every_rendered_kernel_passes_the_lint(rendered, name):
    sources = kernel_sources(rendered[name])
    assert set(sources) >= {KERNEL_SOURCE, "src/codesign_ucu.h", "src/codesign_attention.h"}
    issues = lint_sources(sources)
    assert not issues, "\n".join(map(str, issues))


_PRE = "#include <ap_int.h>\ntypedef ap_uint<128> bus_t;\ntypedef int i32;\n#define N 8\n"
BAD_SNIPPETS = {
    "no-dynamic-memory": "void f() { i32 *p = new i32[4]; delete[] p; }",
    "no-recursion": "int a(int x);\nint b(int x) { return a(x); }\nint a(int x) { return b(x); }",
    "no-stl": "#include <vector>\nvoid f() { std::vector<int> v; }",
    "no-unbounded-pointer": "void f(i32 *data) { data[0] = 0; }",
    "static-array-bounds": "void f(int n) { i32 buf[n]; buf[0] = 0; }",
    "loop-tripcount": "void f(int n, i32 out[N]) { for (int i = 0; i < n; i++) { out[0] = i; } }",
    "m-axi-depth": "void codesign_top(const bus_t *program) {\n"
    "#pragma HLS interface m_axi port=program bundle=gmem0\n}",
    "forbidden-header": '#include "hls_math.h"\n',
    "no-stream-depth": "#include <hls_stream.h>\nvoid f() { hls::stream<int, 4> s; }",
    "integer-only": "void f(i32 out[N]) { out[0] = (i32)(0.5 * out[1]); }",
}


def test_every_rule_has_a_failing_snippet():
    assert set(BAD_SNIPPETS) == set(RULES)


@pytest.mark.parametrize("rule", sorted(BAD_SNIPPETS))
def test_lint_rule_fails_on_bad_snippet(rule):
    issues = lint_sources({"bad.cpp": _PRE + BAD_SNIPPETS[rule]})
    assert rule in {issue.rule for issue in issues}, [str(i) for i in issues]
    issue = next(i for i in issues if i.rule == rule)
    assert str(issue).startswith(f"bad.cpp:{issue.line}: [{rule}] ")
    assert issue.line > 4  # points into the snippet, not at the prelude


def test_lint_accepts_the_good_forms():
    good = _PRE + (
        "template <int M> static void g(const bus_t *mem, i32 (&dst)[M], int count) {\n"
        "  for (int k = 0; k < count; k++) {\n"
        "#pragma HLS loop_tripcount min=1 max=M\n"
        "    dst[k] = mem[k].to_int();\n  }\n}\n"
        "void codesign_top(const bus_t *program, i32 n) {\n"
        "#pragma HLS interface m_axi port=program bundle=gmem0 depth=64\n"
        "  static i32 buf[N * 2];\n  i64 acc = 0;  // a comment with new and 1.5 and std::vector\n"
        "  for (int i = 0; i < N; i++) buf[i] = i * 2;\n"
        "  g(program, buf, n);\n}\n"
    )
    assert lint_sources({"good.cpp": good}) == []


def test_lint_catches_a_tripcount_removed_from_the_real_kernel(rendered, tmp_path):
    sources = dict(kernel_sources(rendered["default"]))
    path = "src/codesign_rowops.h"
    text = sources[path]
    first = text.index("#pragma HLS loop_tripcount")
    line = text.count("\n", 0, first)
    sources[path] = text[:first] + "// removed" + text[text.index("\n", first) :]
    issues = lint_sources(sources)
    assert [(i.path, i.rule) for i in issues] == [(path, "loop-tripcount")]
    assert issues[0].line == line  # the loop header, one line above the pragma
    # and the directory entry point sees the same files
    for relative, content in sources.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(content)
    assert [i.rule for i in lint_dir(tmp_path / "src")] == ["loop-tripcount"]


def test_render_project_writes_sources_regmap_and_checks_the_program(tiny_build, tmp_path):
    program, arch = tiny_build.program, tiny_build.state.arch
    project = render_project(program, arch, "zcu102", tmp_path / "hls")
    for relative in (KERNEL_SOURCE, TESTBENCH_SOURCE, "src/codesign_regmap.h", "regmap.json"):
        assert (tmp_path / "hls" / relative).is_file(), relative
    assert project.kernel.read_text() == render_sources(arch)[KERNEL_SOURCE]
    assert (
        json.loads((tmp_path / "hls" / "regmap.json").read_text())
        == register_map(arch.weight_ports).to_dict()
    )
    other = arch.with_(tile_in=16)
    with pytest.raises(RenderError, match="tile_in"):
        check_program_fits(program, other)
    with pytest.raises(RenderError, match="depth"):
        check_program_fits(program, arch, program_max_bytes=1024)
    fewer_slots = arch.with_(attn_parallel=1)
    attention = [layer for layer in program.layers if layer.op == Op.ATTENTION]
    assert attention and attention[0].fields["parallel"] > 1
    with pytest.raises(RenderError, match="parallel"):
        render_project(program, fewer_slots, "zcu102", tmp_path / "other")


def test_depth_grows_only_for_programs_beyond_the_documented_maximum(tiny_build, tmp_path):
    import copy

    from codesign.hls.render import ARENA_MAX_BYTES, depth_limits

    program = tiny_build.program
    assert depth_limits(program)["arena_max_bytes"] == ARENA_MAX_BYTES
    big = copy.copy(program)
    big.arena_bytes = ARENA_MAX_BYTES + 4096
    limits = depth_limits(big)
    assert limits["arena_max_bytes"] == 2 * ARENA_MAX_BYTES
    with pytest.raises(RenderError, match="arena"):
        check_program_fits(big, tiny_build.state.arch)
    project = render_project(big, tiny_build.state.arch, "zcu102", tmp_path / "hls")
    config = (project.root / "src" / "codesign_config.h").read_text()
    depth = int(_defines(config)["ARENA_DEPTH"])
    assert depth * tiny_build.state.arch.bus_bytes == 2 * ARENA_MAX_BYTES
