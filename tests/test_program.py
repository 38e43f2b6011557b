"""program.bin: round trip, human-readable dump, and clear errors on bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codesign.numerics.fixed import Fixed
from codesign.program import (
    HEADER_BYTES,
    LAYER_WORDS,
    NONE,
    VERSION,
    Op,
    Program,
    ProgramError,
    pack_block_sparse,
    pack_fmt,
    pack_tiles,
    unpack_block_sparse,
    unpack_fmt,
    unpack_tiles,
)


def test_round_trip_is_byte_identical(tiny_program):
    program = Program.from_bytes(tiny_program)
    assert program.to_bytes() == tiny_program
    assert program.model == "m3vit-tiny"
    assert program.n_tasks == 2
    ops = [layer.op for layer in program.layers]
    assert ops.count(Op.MOE_GATE) == 2 * ops.count(Op.MOE_EXPERTS)
    assert {layer.task for layer in program.layers} == {-1, 0, 1}


def test_json_dump_names_every_field(tiny_build, tmp_path):
    path = tmp_path / "program.json"
    tiny_build.program.dump_json(path)
    data = json.loads(path.read_text())
    assert data["format"]["version"] == VERSION
    assert len(data["layers"]) == len(tiny_build.program.layers)
    first = data["layers"][0]
    assert first["op"] == "LINEAR" and first["name"] == "patch_embed.proj"
    assert first["out_fmt"].startswith("fx")
    assert set(data["tables"]) == {"gelu_delta", "exp", "recip", "rsqrt"}


@pytest.mark.parametrize(
    "fmt",
    [
        Fixed(24, 6),
        Fixed(16, -3),
        Fixed(17, 1, False),
        Fixed(8, 10, True, "TRN", "WRAP"),
        Fixed(32, 2, True, "RND_CONV", "SAT_SYM"),
    ],
)
def test_format_word_round_trip(fmt):
    assert unpack_fmt(pack_fmt(fmt)) == fmt


@pytest.mark.parametrize("shape", [(5, 7), (32, 32), (33, 65), (1, 100)])
@pytest.mark.parametrize("container", [1, 2, 4])
@pytest.mark.parametrize("ports", [1, 2, 4])
def test_tile_packing_round_trip(tiny_build, shape, container, ports):
    rng = np.random.default_rng(0)
    bound = 2 ** (8 * container - 1)
    raw = rng.integers(-bound, bound, size=shape)
    program = Program.from_bytes(tiny_build.program_bytes)
    program.weight_ports = ports
    bus_bytes = program.bus_bits // 8
    packed = pack_tiles(raw, program.tile_in, program.tile_out, container, bus_bytes, ports)
    assert len(packed) % (ports * bus_bytes) == 0
    program.data = packed
    program.layers = []
    back = unpack_tiles(program, program.data_offset, *shape, container)
    np.testing.assert_array_equal(back, raw)


def test_tile_order_is_output_tiles_outer():
    raw = np.arange(4 * 4).reshape(4, 4)  # out=4, in=4, tiles 2x2
    words = np.frombuffer(pack_tiles(raw, 2, 2, 4, 4), "<i4")
    # first tile: outputs 0-1, inputs 0-1; second: outputs 0-1, inputs 2-3
    np.testing.assert_array_equal(words[:8], [0, 1, 4, 5, 2, 3, 6, 7])


@pytest.mark.parametrize("ports", [2, 4])
def test_weights_are_striped_into_one_plane_per_master(ports):
    """Plane p (the p-th 1/ports of the matrix) holds bus beat p of every weight beat, so
    master p bursts through it and the masters' beats together are the tile order."""
    raw = np.arange(8 * 8).reshape(8, 8)  # one 8x8 tile of int32: 256 bytes, 16 beats of 16
    flat = np.frombuffer(pack_tiles(raw, 8, 8, 4, 16), "<i4").reshape(-1, 4)  # beats
    striped = np.frombuffer(pack_tiles(raw, 8, 8, 4, 16, ports), "<i4").reshape(ports, -1, 4)
    for plane in range(ports):
        np.testing.assert_array_equal(striped[plane], flat[plane::ports])


def test_weight_ports_is_in_the_header_and_checked(tiny_program):
    from codesign.arch.config import default_arch
    from codesign.program import _H_WEIGHT_PORTS

    program = Program.from_bytes(tiny_program)  # built for the ZCU102's default
    assert program.weight_ports == default_arch("zcu102").weight_ports == 4
    bad = _recrc(_corrupt(tiny_program, 4 * _H_WEIGHT_PORTS, (3).to_bytes(4, "little")))
    with pytest.raises(ProgramError, match="weight_ports 3 is not one of"):
        Program.from_bytes(bad)


@pytest.mark.parametrize(
    "word,field,lanes",
    [
        ("norm_lanes", "layernorm_lanes", "norm_lanes"),
        ("final_lanes", "moe_final_lanes", "final_lanes"),
    ],
)
def test_the_output_lanes_are_in_the_header_and_checked(
    tiny_program, tiny_build, word, field, lanes
):
    """norm_lanes (ArchConfig.layernorm_lanes) and final_lanes (moe_final_lanes): only the
    schedule depends on them, so each is a header word and nothing else; 0 where the
    ArchConfig derives the lanes, a word that is not a power of two is refused, naming
    it, and the lanes are at most what a row (tile_in) or a tile (tile_out) has."""
    from dataclasses import replace

    from codesign import program as program_module
    from codesign.arch import ArchConfig
    from codesign.compiler import compile_graph
    from codesign.hls.csim import arch_from_program

    at = getattr(program_module, f"_H_{word.upper()}")
    program = Program.from_bytes(tiny_program)
    assert getattr(program, word) == getattr(tiny_build.state.arch, field) == 0
    wide = tiny_build.state.arch.with_(**{field: 8})
    compiled = compile_graph(tiny_build.graph, wide)
    assert getattr(compiled, word) == 8
    blob = compiled.to_bytes()
    assert int.from_bytes(blob[4 * at : 4 * at + 4], "little") == 8
    assert (
        replace(compiled, **{word: 0}).to_bytes()
        == compile_graph(tiny_build.graph, tiny_build.state.arch).to_bytes()
    )
    read = Program.from_bytes(blob)
    assert getattr(read, word) == 8
    read.meta.pop("arch", None)  # program.bin alone: the header says it
    assert getattr(arch_from_program(read), field) == 8
    bad = _recrc(_corrupt(blob, 4 * at, (6).to_bytes(4, "little")))
    with pytest.raises(ProgramError, match=f"{word} 6 is neither 0"):
        Program.from_bytes(bad)
    with pytest.raises(ValueError, match=f"{field}=3"):
        ArchConfig(**{field: 3})
    assert getattr(ArchConfig(tile_in=8, tile_out=8, **{field: 32}), lanes) == 8


def test_the_window_is_in_the_header_and_checked(tiny_program, tiny_build):
    """window_bytes: a region across the window's edge, a window larger than the kernel's
    and host tensors inside it are refused with what is wrong."""
    from codesign.ops import check_blob, kernel_check_params
    from codesign.program import _H_WINDOW

    program = Program.from_bytes(tiny_program)
    window = program.window_bytes
    assert 0 < window == tiny_build.program.window_bytes
    word = int.from_bytes(tiny_program[4 * _H_WINDOW : 4 * _H_WINDOW + 4], "little")
    assert word == window
    arch = tiny_build.state.arch
    assert check_blob(tiny_program, kernel_check_params(arch), 0) is None
    # a kernel built with a smaller window refuses the Program
    small = kernel_check_params(arch.with_(arena_window_kib=window // 1024 // 2))
    refusal = check_blob(tiny_program, small, 0)
    assert refusal is not None and refusal.name == "DEPTH", refusal
    # the first layer's destination straddling the window's edge
    dst_at = HEADER_BYTES + 4 * (2 + 5)
    edge = (window - 64).to_bytes(4, "little")
    with pytest.raises(ProgramError, match=r"ERR_REGION at layer 0 .*one side of the window"):
        Program.from_bytes(_recrc(_corrupt(tiny_program, dst_at, edge)))
    # a window ending inside the input rows: the first layer reads them across its edge
    ref = program.input
    grown = (ref.offset + 64).to_bytes(4, "little")
    with pytest.raises(ProgramError, match=r"ERR_REGION at layer 0 .*one side of the window"):
        Program.from_bytes(_recrc(_corrupt(tiny_program, 4 * _H_WINDOW, grown)))
    # a window taking the input rows whole: no layer straddles it, but the host writes them
    taken = (ref.offset + ref.rows * ref.stride).to_bytes(4, "little")
    with pytest.raises(ProgramError, match=r"the input tensor .* lies in the on-chip window"):
        Program.from_bytes(_recrc(_corrupt(tiny_program, 4 * _H_WINDOW, taken)))


def _corrupt(blob: bytes, offset: int, value: bytes) -> bytes:
    data = bytearray(blob)
    data[offset : offset + len(value)] = value
    return bytes(data)


def test_truncated_file_is_rejected(tiny_program):
    with pytest.raises(ProgramError, match="truncated"):
        Program.from_bytes(tiny_program[:-16])
    with pytest.raises(ProgramError, match="truncated"):
        Program.from_bytes(tiny_program[:100])


def test_bad_magic_version_and_crc(tiny_program):
    with pytest.raises(ProgramError, match="magic"):
        Program.from_bytes(b"NOTAPROG" + tiny_program[8:])
    with pytest.raises(ProgramError, match="version"):
        Program.from_bytes(_corrupt(tiny_program, 8, (7).to_bytes(4, "little")))
    with pytest.raises(ProgramError, match="CRC"):
        Program.from_bytes(_corrupt(tiny_program, len(tiny_program) - 4, b"\x01\x02\x03\x04"))


def _recrc(blob: bytes) -> bytes:
    import zlib

    data = bytearray(blob)
    data[20:24] = b"\0\0\0\0"
    data[20:24] = zlib.crc32(bytes(data)).to_bytes(4, "little")
    return bytes(data)


def test_inconsistent_descriptor_is_rejected_even_with_valid_crc(tiny_program):
    bad_op = _recrc(_corrupt(tiny_program, HEADER_BYTES, (99).to_bytes(4, "little")))
    with pytest.raises(ProgramError, match="ERR_OP at layer 0: unknown op code"):
        Program.from_bytes(bad_op)
    # first layer's weight address (field 8 after op and task) pointing past the end
    weight_at = HEADER_BYTES + 4 * (2 + 8)
    far = _recrc(_corrupt(tiny_program, weight_at, (len(tiny_program) + 64).to_bytes(4, "little")))
    with pytest.raises(ProgramError, match=r"ERR_REGION at layer 0 .*weights: inside the program"):
        Program.from_bytes(far)
    # destination beyond the arena
    dst_at = HEADER_BYTES + 4 * (2 + 5)
    huge = _recrc(_corrupt(tiny_program, dst_at, (2**30).to_bytes(4, "little")))
    with pytest.raises(ProgramError, match="arena"):
        Program.from_bytes(huge)
    assert LAYER_WORDS * 4 == 256


def test_load_missing_file(tmp_path):
    with pytest.raises(ProgramError, match="no such program file"):
        Program.load(tmp_path / "nope.bin")


@pytest.mark.parametrize("ports", [1, 2, 4])
def test_block_sparse_layout_round_trip_and_index(tiny_program, ports):
    rng = np.random.default_rng(3)
    raw = rng.integers(-100, 100, size=(40, 70))
    raw[0:8, 8:16] = 0  # one whole tile (8x8) pruned
    raw[16:24, :] = 0  # a whole output tile row pruned
    tiles, index = pack_block_sparse(raw, 8, 8, 2, 16, ports)
    n_out, n_in = 5, 9
    row_ptr, cols = index[: n_out + 1], index[n_out + 1 :]
    assert row_ptr[-1] == len(cols) == n_out * n_in - 1 - n_in
    assert list(cols[: row_ptr[1]]) == [c for c in range(n_in) if c != 1]
    assert row_ptr[3] == row_ptr[2]  # empty row
    assert len(tiles) == len(cols) * 8 * 8 * 2
    program = Program.from_bytes(tiny_program)
    program.layers, program.tile_in, program.tile_out, program.bus_bits = [], 8, 8, 128
    program.weight_ports = ports
    program.data = tiles + index.astype("<i4").tobytes()
    start = program.data_offset
    back = unpack_block_sparse(program, start, start + len(tiles), 40, 70, 2)
    np.testing.assert_array_equal(back, raw)


def test_pruned_model_compiles_block_sparse_and_matches_dense_bits(tmp_path):
    import torch

    import codesign
    from codesign.compiler import compile_graph
    from codesign.golden import GoldenExecutor
    from codesign.models import create_model

    model = create_model("m3vit-tiny", seed=2)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[32:64, 0:32] = 0  # one 32x32 tile of the default UCU
            block.attn.proj.weight[:, 32:] = 0
    build = codesign.build(model)
    sparse = build.program
    linears = {layer.name: layer for layer in sparse.layers if layer.op == Op.LINEAR}
    assert linears["blocks.0.attn.qkv"].fields["blocks"] != NONE
    assert linears["blocks.0.attn.proj"].fields["blocks"] != NONE
    assert linears["blocks.0.mlp.fc1"].fields["blocks"] == NONE
    dense = compile_graph(build.graph, build.state.arch, block_sparse=False)
    assert len(dense.data) > len(sparse.data)
    raw = build.quantize_input(np.random.default_rng(0).standard_normal((1, 3, 32, 64)))[0]
    for task in (0, 1):
        a = GoldenExecutor(Program.from_bytes(sparse.to_bytes())).run(raw, task).output
        b = GoldenExecutor(Program.from_bytes(dense.to_bytes())).run(raw, task).output
        np.testing.assert_array_equal(a, b)


def test_eight_bit_weights_are_stored_one_byte_each():
    """w8 weights pack as int8: half the weight bytes of w16 and fewer weight-load cycles,
    with the same weight values."""
    import codesign
    from codesign.program import unpack_tiles

    builds = {
        prec: codesign.build("m3vit-tiny", board="zcu102", eval_images=1, precision=prec)
        for prec in ("w8a16", "w16a16")
    }
    narrow, wide = (builds[prec].program for prec in ("w8a16", "w16a16"))
    assert {layer.fields["w_bytes"] for layer in narrow.layers if "w_bytes" in layer.fields} == {1}
    assert {layer.fields["w_bytes"] for layer in wide.layers if "w_bytes" in layer.fields} == {2}
    linear = next(layer for layer in narrow.layers if layer.op.name == "LINEAR")
    f = linear.fields
    w8 = unpack_tiles(narrow, f["weight"], f["out_dim"], f["in_dim"], 1)
    assert w8.min() >= -128 and w8.max() <= 127 and np.abs(w8).max() >= 64  # uses the range
    weight_bytes = {
        prec: sum(row["weight_bytes"] for row in build.report["estimate"]["layers"])
        for prec, build in builds.items()
    }
    assert weight_bytes["w8a16"] < 0.56 * weight_bytes["w16a16"]
    cycles = {prec: build.report["estimate"]["cycles"] for prec, build in builds.items()}
    assert cycles["w8a16"] < cycles["w16a16"]


def test_a_loaded_program_says_its_weight_masters_to_every_consumer():
    """The runtime boards and C-sim rebuild the ArchConfig from program.bin alone: the
    weight masters must come back with it (a board costing a 4-master Program as 1-master
    would refuse it)."""
    import codesign
    from codesign.hls.csim import arch_from_program

    build = codesign.build("m3vit-tiny", arch={"weight_ports": 2}, eval_images=1)
    loaded = Program.from_bytes(build.program_bytes)
    assert loaded.weight_ports == 2 and "arch" not in loaded.meta
    assert arch_from_program(loaded).weight_ports == 2
