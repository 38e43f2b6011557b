"""Boards, ArchConfig, precision specs and the register map."""

from __future__ import annotations

import pytest

from codesign.arch import ArchConfig, Precision, get_board, list_boards, parse_precision
from codesign.arch.regmap import AP_DONE, AP_START, register_map


def test_required_boards_and_zcu102_facts():
    assert {"zcu102", "zcu104", "kv260", "ultra96v2", "pynq-z2"} <= set(list_boards())
    zcu102 = get_board("ZCU102")
    assert zcu102.part == "xczu9eg-ffvb1156-2-e"
    assert (zcu102.dsp, zcu102.bram36, zcu102.lut, zcu102.ff) == (2520, 912, 274080, 548160)
    assert zcu102.clock_mhz == 300


def test_unknown_board_lists_known_ones():
    with pytest.raises(ValueError, match="zcu102"):
        get_board("vcu118")


@pytest.mark.parametrize(
    ("spec", "weights", "acts", "dsp"),
    [("w16a24", 16, 24, 1), ("W8A16", 8, 16, 1), ("w18a27", 18, 27, 1), ("w20a24", 20, 24, 2)],
)
def test_precision_specs(spec, weights, acts, dsp):
    precision = parse_precision(spec)
    assert (precision.weight_bits, precision.activation_bits) == (weights, acts)
    assert precision.dsp_per_mac == dsp
    assert str(precision) == spec.lower()


def test_a_residual_width_is_part_of_the_spec():
    """w8a8r16: multiplies at 8 bits, the residual stream at 16; r equal to a is the
    plain spec (one spelling per precision), a narrower one is refused."""
    mixed = parse_precision("w8a8r16")
    assert (mixed.activation_bits, mixed.residual_bits, mixed.stream_bits) == (8, 16, 16)
    assert str(mixed) == "w8a8r16" and mixed.dsp_per_mac == 1
    assert (
        parse_precision("w8a8r8") == parse_precision("w8a8")
        and str(parse_precision("w8a8r8")) == "w8a8"
    )
    assert parse_precision("w8a16").stream_bits == 16


@pytest.mark.parametrize(
    "spec", ["16/24", "w16", "a24w16", "w1a24", "w16a64", "w8a16r8", "w8a8r33"]
)
def test_bad_precision_specs(spec):
    with pytest.raises(ValueError):
        parse_precision(spec)


def test_default_precision_is_one_dsp_per_mac():
    assert Precision().dsp_per_mac == 1


def test_arch_validation():
    with pytest.raises(ValueError, match="power of two"):
        ArchConfig(tile_in=24)
    with pytest.raises(ValueError, match="bus_bits"):
        ArchConfig(bus_bits=96)
    with pytest.raises(ValueError, match="unknown ArchConfig fields"):
        ArchConfig.from_dict({"tiles": 3})
    arch = ArchConfig(tile_in=16)
    assert ArchConfig.from_dict(arch.to_dict()) == arch
    with pytest.raises(ValueError, match="attn_lanes=12"):
        ArchConfig(attn_lanes=12)


def test_attention_lanes():
    """attn_lanes 0 means whole head rows; more lanes than a head has are whole rows too,
    and a Program records only a real chunking."""
    whole = ArchConfig(max_dim=192, max_heads=3)  # heads of 64 values
    assert whole.attention_lanes == 64 and whole.header_attn_lanes == 0
    assert ArchConfig(max_dim=192, max_heads=3, attn_lanes=128).header_attn_lanes == 0
    chunked = ArchConfig(max_dim=192, max_heads=3, attn_lanes=16)
    assert chunked.attention_lanes == 16 and chunked.header_attn_lanes == 16


def test_register_map_follows_vitis_layout():
    regmap = register_map()
    assert [(r.name, r.offset) for r in regmap.registers] == [
        ("CTRL", 0x00),
        ("GIE", 0x04),
        ("IER", 0x08),
        ("ISR", 0x0C),
        ("program", 0x10),
        ("arena", 0x1C),
        ("task", 0x28),
        ("STATUS", 0x80),
    ]
    assert regmap.size == 0x100
    assert (AP_START, AP_DONE) == (1, 2)
    assert regmap.to_dict()["registers"][4]["bits"] == 64


def test_ddr_model_is_the_boards_peak_at_its_sustained_share():
    from codesign.arch import DdrModel, ddr_model

    zcu102 = ddr_model("zcu102", ArchConfig())
    assert zcu102.efficiency == 0.8 and zcu102.latency_cycles == 64
    assert zcu102.bytes_per_cycle == pytest.approx(19.2 * 0.8 * 1e3 / 300)
    assert "80 % efficiency" in zcu102.describe() and "128-bit" in zcu102.describe()
    assert ddr_model("pynq-z2").peak_gbps == 2.1  # DDR3-1050, 16 bits wide
    with pytest.raises(ValueError, match="efficiency"):
        DdrModel(peak_gbps=19.2, clock_mhz=300, efficiency=1.5)


def test_default_masters_are_no_wider_than_the_boards_ps_ports():
    """Zynq-7000's HP ports are 64 bits: PYNQ-Z2's default bus is 64 bits (a wider master
    would not move more per cycle through them)."""
    from codesign.arch import get_board
    from codesign.arch.config import default_arch

    assert get_board("pynq-z2").hp_port_bits == 64 and get_board("zcu102").hp_port_bits == 128
    assert default_arch("pynq-z2").bus_bits == 64
    for board in ("zcu102", "zcu104", "kv260", "ultra96v2", "pynq-z2"):
        assert default_arch(board).bus_bits <= get_board(board).hp_port_bits


def test_a_model_with_defaults_of_its_own_gets_them_and_others_get_m3vits():
    """MODEL_DEFAULTS (explore's picks for that model, synthesised): the build, --arch
    and the precision follow the model; a model without a row gets m3vit's."""
    from codesign.arch import get_board
    from codesign.arch.config import (
        BOARD_DEFAULTS,
        BOARD_PRECISION,
        MODEL_DEFAULTS,
        MODEL_PRECISION,
        ArchConfig,
        default_arch,
        default_precision,
    )
    from codesign.flow import make_options

    assert "vit-tiny" in MODEL_DEFAULTS
    for model, boards in MODEL_DEFAULTS.items():
        for board, fields in boards.items():
            arch = default_arch(board, model)
            assert arch == ArchConfig(**fields) != default_arch(board)
            assert arch.bus_bits <= get_board(board).hp_port_bits
            assert arch.weight_ports <= get_board(board).weight_ports_max
            expected = MODEL_PRECISION.get(model, {}).get(
                board, BOARD_PRECISION.get(board, "w16a24")
            )
            assert str(default_precision(board, model)) == expected
            options = make_options(model, board, arch={"max_tokens": 256})
            assert options.arch == arch.with_(max_tokens=256)
            assert options.precision == default_precision(board, model)
    for board, fields in BOARD_DEFAULTS.items():
        assert default_arch(board, "deit-small") == default_arch(board) == ArchConfig(**fields)
        assert default_precision(board, "deit-small") == default_precision(board)


def test_a_precision_with_a_default_of_its_own_gets_it(monkeypatch):
    """PRECISION_DEFAULTS (explore's pick at that precision, synthesised): a build at that
    precision, its --arch and explore's base follow it; the board's default precision and
    models with defaults of their own keep theirs."""
    from codesign.arch.config import (
        BOARD_DEFAULTS,
        MODEL_DEFAULTS,
        PRECISION_DEFAULTS,
        ArchConfig,
        default_arch,
        default_precision,
    )
    from codesign.flow import make_options

    for board, precisions in PRECISION_DEFAULTS.items():
        for precision, fields in precisions.items():
            assert precision != str(default_precision(board))
            assert default_arch(board, "m3vit", precision) == ArchConfig(**fields)
            assert default_arch(board, "deit-small", precision) == ArchConfig(**fields)
            assert ArchConfig(**fields) != default_arch(board) == default_arch(board, "deit-small")
    fields = {**BOARD_DEFAULTS["kv260"], "attn_parallel": 2}
    monkeypatch.setitem(PRECISION_DEFAULTS, "kv260", {"w8a16": fields})
    assert default_arch("kv260", None, "W8A16") == ArchConfig(**fields)
    assert default_arch("kv260", None, "w16a24") == default_arch("kv260") != ArchConfig(**fields)
    options = make_options("m3vit", "kv260", precision="w8a16", arch={"max_tokens": 256})
    assert options.arch == ArchConfig(**fields).with_(max_tokens=256)
    own = MODEL_DEFAULTS["vit-tiny"]["kv260"]
    assert default_arch("kv260", "vit-tiny", "w8a16") == ArchConfig(**own)


def test_a_model_with_a_precision_of_its_own_gets_that_precisions_default(monkeypatch):
    """MODEL_PRECISION (m3vit at w16a16 on the ZCU102): a build of that model without a
    precision gets it and the board's default at it (PRECISION_DEFAULTS), --arch starts
    from that default; other models, and the model on other boards, keep the board's."""
    from codesign.arch.config import (
        BOARD_DEFAULTS,
        MODEL_PRECISION,
        PRECISION_DEFAULTS,
        ArchConfig,
        default_arch,
        default_precision,
    )
    from codesign.flow import make_options

    assert str(default_precision("zcu102", "m3vit")) == "w16a16"
    for model, boards in MODEL_PRECISION.items():
        for board, precision in boards.items():
            assert str(default_precision(board, model)) == precision
            assert precision != str(default_precision(board))
            own = ArchConfig(**PRECISION_DEFAULTS[board][precision])
            assert default_arch(board, model) == default_arch(board, model, precision) == own
            assert default_arch(board) == ArchConfig(**BOARD_DEFAULTS[board]) != own
            options = make_options(model, board, arch={"max_tokens": 256})
            assert str(options.precision) == precision
            assert options.arch == own.with_(max_tokens=256)
            # asked for, the board's own precision brings the board's own default back
            board_precision = str(default_precision(board))
            options = make_options(model, board, precision=board_precision, arch={})
            assert options.arch == default_arch(board)
    assert default_precision("zcu104", "m3vit") == default_precision("zcu104")
    assert default_precision("zcu102", "deit-small") == default_precision("zcu102")
    # a model precision the board has no default for gets the board's ArchConfig
    monkeypatch.setitem(MODEL_PRECISION, "vit-tiny", {"zcu104": "w8a16"})
    assert default_arch("zcu104", "vit-tiny") == ArchConfig(**BOARD_DEFAULTS["zcu104"])
    assert str(make_options("vit-tiny", "zcu104").precision) == "w8a16"
