"""codesign explore: the search, its Pareto front and pick, constraints, and the Dask runs
(serial and a two-worker LocalCluster agree; a job whose worker dies is retried)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from codesign.exploration import (
    Executor,
    ExploreError,
    explore,
    parse_constraints,
    run_cached,
)

MODEL, BOARD = "m3vit-tiny", "kv260"


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore") / "run"
    return explore(MODEL, BOARD, constraints="lut<=0.6", scheduler="serial", out=out), out


def _dominates(a: dict, b: dict) -> bool:
    keys = ("latency_ms",)
    mine = [a[k] for k in keys] + [a["resources"][r] for r in ("lut", "dsp", "bram36")]
    theirs = [b[k] for k in keys] + [b["resources"][r] for r in ("lut", "dsp", "bram36")]
    return all(x <= y for x, y in zip(mine, theirs, strict=True)) and mine != theirs


def test_front_is_the_non_dominated_fitting_points(serial):
    result, _ = serial
    fitting = [p for p in result.points if p["fits"]]
    assert len(result.points) > 100 and result.front
    assert all(p["fits"] for p in result.front)
    for point in result.front:
        assert not any(_dominates(other, point) for other in fitting)
    off_front = [p for p in fitting if p not in result.front]
    assert off_front and all(any(_dominates(f, p) or _same(f, p) for f in result.front)
                             for p in off_front)  # fmt: skip


def test_the_on_chip_window_is_searched(serial):
    """Every block with and without the arena's on-chip window (sized to what m3vit-tiny's
    memory plan fills: 32 KiB on the 64-bit bus, 64 on the 128-bit one); the window makes
    the same design faster and costs LUTs and RAM, and the front has points with it."""
    result, _ = serial
    windows = {p["knobs"]["arena_window_kib"] for p in result.points}
    assert 0 in windows and len(windows) > 1
    twins = {}
    for point in result.points:
        key = tuple(sorted((k, v) for k, v in point["knobs"].items() if k != "arena_window_kib"))
        twins.setdefault(key, {})[bool(point["knobs"]["arena_window_kib"])] = point
    pairs = [pair for pair in twins.values() if len(pair) == 2]
    assert pairs
    for pair in pairs:
        on, off = pair[True], pair[False]
        assert on["latency_ms"] < off["latency_ms"]
        assert on["resources"]["lut"] > off["resources"]["lut"]
        assert on["arch"]["arena_window_kib"] % (on["knobs"]["bus_bits"] // 2) == 0
    assert any(p["knobs"]["arena_window_kib"] for p in result.front)
    with pytest.raises(ExploreError, match="windows"):
        explore(MODEL, BOARD, windows="sometimes", scheduler="serial")


def _assert_wider_twins_cost_luts(points, field: str, choices) -> None:
    """Every searched point's `field` is one of `choices` for its ArchConfig, at least one
    point has a wider twin (the same knobs but `field`), and a wider one costs more LUTs
    for no more cycles than its derived twin."""
    from codesign.arch import ArchConfig

    twins = {}
    for point in points:
        lanes = point["knobs"][field]
        assert lanes in choices(ArchConfig(**point["arch"]).with_(**{field: 0}))
        key = tuple(sorted((k, v) for k, v in point["knobs"].items() if k != field))
        twins.setdefault(key, {})[lanes] = point
    assert any(len(group) > 1 for group in twins.values()), f"no wider {field} searched"
    for group in twins.values():
        for lanes, point in group.items():
            if lanes and 0 in group:
                assert point["cycles"] <= group[0]["cycles"]
                assert point["resources"]["lut"] > group[0]["resources"]["lut"]


def test_the_drain_width_is_searched_where_the_window_has_row_ports(serial):
    """With a window of RAM rows wider than a beat, each point is also costed with a drain
    of twice and four times a beat's words (up to tile_out): the same layers and weights,
    more LUTs, no more cycles; without one, only the default drain."""
    from codesign.arch import ArchConfig
    from codesign.exploration import drain_choices

    result, _ = serial
    _assert_wider_twins_cost_luts(result.points, "drain_lanes", drain_choices)
    for point in result.points:
        arch = ArchConfig(**point["arch"])
        assert point["knobs"]["drain_lanes"] in drain_choices(arch)
        if not arch.arena_window_kib:
            assert point["knobs"]["drain_lanes"] == 0
    assert drain_choices(ArchConfig(tile_in=64, tile_out=16, arena_window_kib=64)) == [0, 8, 16]
    assert drain_choices(ArchConfig(tile_in=8, tile_out=8, bus_bits=128, arena_window_kib=64)) == [
        0,
        8,
    ]


def test_layernorm_lanes_are_searched_where_its_rows_leave_over_the_y_port(serial):
    """``norm_choices``: with the window's y port, twice and four times the derived
    normalise lanes, up to tile_out; without it only the derived ones. Every searched
    point's LayerNorm width is one of its choices, and a wider one costs more LUTs for
    no more cycles than its twin."""
    from codesign.arch import ArchConfig
    from codesign.exploration import norm_choices

    wide = ArchConfig(tile_in=64, tile_out=16, arena_window_kib=64, drain_lanes=8)
    assert wide.y_port and wide.norm_lanes == 8 and norm_choices(wide) == [0, 16]
    assert norm_choices(wide.with_(tile_out=32, drain_lanes=8)) == [0, 16, 32]
    assert norm_choices(wide.with_(drain_lanes=0)) == [0]  # no y port: rows leave as beats
    result, _ = serial
    _assert_wider_twins_cost_luts(result.points, "layernorm_lanes", norm_choices)


def test_moe_final_lanes_are_searched_where_the_window_has_its_row_ports(serial):
    """``final_choices``: with the window's row ports, twice and four times a bus beat's
    words, up to tile_out; without them only a beat's words. Every searched point's final
    width is one of its choices, and a wider one costs more LUTs for no more cycles."""
    from codesign.arch import ArchConfig
    from codesign.exploration import final_choices

    wide = ArchConfig(tile_in=64, tile_out=16, arena_window_kib=64, drain_lanes=8)
    assert wide.y_port and wide.final_lanes == 4 and final_choices(wide) == [0, 8, 16]
    assert final_choices(wide.with_(tile_out=8)) == [0, 8]
    assert final_choices(wide.with_(drain_lanes=0)) == [0]  # no y port: tiles go as beats
    result, _ = serial
    _assert_wider_twins_cost_luts(result.points, "moe_final_lanes", final_choices)


def test_weight_masters_are_searched_and_bounded_by_the_board(serial):
    """1, 2 and 4 weight masters on the KV260 (five PS ports); more masters cost LUTs, so
    the front keeps the fast ones only where they pay."""
    result, _ = serial
    assert {p["knobs"]["weight_ports"] for p in result.points} == {1, 2, 4}
    by_knobs = {}
    for point in result.points:
        key = tuple(sorted((k, v) for k, v in point["knobs"].items() if k != "weight_ports"))
        by_knobs.setdefault(key, {})[point["knobs"]["weight_ports"]] = point
    pairs = [ports for ports in by_knobs.values() if {1, 4} <= set(ports)]
    assert pairs and all(
        p[4]["resources"]["lut"] > p[1]["resources"]["lut"]
        and p[4]["latency_ms"] <= p[1]["latency_ms"]
        for p in pairs
    )
    with pytest.raises(ExploreError, match="weight_ports 4: pynq-z2 takes one of"):
        explore(MODEL, "pynq-z2", weight_ports="4", scheduler="serial")


def _same(a: dict, b: dict) -> bool:
    return a["latency_ms"] == b["latency_ms"] and a["resources"] == b["resources"]


def test_pick_is_the_fastest_point_within_the_constraint(serial):
    result, _ = serial
    allowed = [p for p in result.points if p["fits"] and p["utilisation"]["lut"] <= 0.6]
    assert result.pick in allowed
    assert result.pick["latency_ms"] == min(p["latency_ms"] for p in allowed)
    assert result.default is not None and result.default["fits"]


def test_outputs_say_what_each_figure_rests_on(serial):
    result, out = serial
    data = json.loads((out / "pareto.json").read_text())
    assert set(data) >= {"points", "front", "pick", "ddr", "estimator", "timing"}
    pick = data["points"][data["pick"]]
    assert pick["knobs"] == result.pick["knobs"] and "arch" in pick and "fits" in pick
    assert "80 % efficiency" in data["ddr"]["description"]
    report = (out / "report.md").read_text()
    assert "Pareto front" in report and "(pick)" in report and "DDR model" in report
    assert (out / "pareto.png").stat().st_size > 10_000


def test_an_impossible_constraint_names_the_closest_point(tmp_path):
    with pytest.raises(ExploreError, match=r"closest is .* which violates: lut <= 1 %"):
        explore(MODEL, BOARD, constraints="lut<=1%", scheduler="serial", out=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written


@pytest.mark.parametrize(
    "spec, message",
    [("lut=0.5", "NAME<=VALUE"), ("luts<=0.5", "not one of"), ("lut<=2", "share of the board"),
     ("latency<=abc", "not a number"), ("latency<=0", "positive")],
)  # fmt: skip
def test_bad_constraints_are_refused(spec, message):
    with pytest.raises(ExploreError, match=message):
        parse_constraints(spec)


def test_percent_and_latency_constraints():
    lut, latency = parse_constraints("lut<=60%, latency<=5")
    assert (lut.key, lut.limit) == ("lut", 0.6)
    assert (latency.key, latency.limit) == ("latency_ms", 5.0)


def test_a_two_worker_local_cluster_gives_the_serial_result(serial):
    result, _ = serial
    distributed = explore(MODEL, BOARD, constraints="lut<=0.6", workers=2)
    assert "LocalCluster" in distributed.timing["scheduler"]
    for key in ("points", "front", "pick"):
        assert json.dumps(distributed.to_dict()[key], sort_keys=True, default=str) == json.dumps(
            result.to_dict()[key], sort_keys=True, default=str
        )


def die_once(marker: str) -> dict:
    """A job whose first run takes its worker process down with it."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return {"value": 42}


def test_a_job_whose_worker_dies_is_retried_and_reported(tmp_path):
    executor = Executor(workers=2)
    try:
        seen = []
        (result,) = executor.map(
            run_cached,
            [(die_once, "job-x", str(tmp_path / "cache"), str(tmp_path / "marker"))],
            progress=lambda *state: seen.append(state),
        )
    finally:
        executor.close()
    assert result["value"] == 42 and result["attempts"] == 2 and not result["cached"]
    assert seen[-1] == (1, 0, 0, 1)
    again = run_cached(die_once, "job-x", str(tmp_path / "cache"), str(tmp_path / "marker"))
    assert again["cached"] and again["attempts"] == 2  # the cache resumes, no third run


def test_every_point_is_the_estimate_of_its_own_program(serial):
    """A point's latency and resources are what the estimator gives for a Program compiled
    at exactly that ArchConfig (attention slots are part of the Program's numerics)."""
    from codesign.arch import ArchConfig, ddr_model
    from codesign.compiler import compile_graph
    from codesign.estimate import estimate_program, estimate_resources
    from codesign.exploration import _graph_for

    result, _ = serial
    graph, _base = _graph_for(MODEL, BOARD, "w16a24", 0)
    fitting = [p for p in result.points if p["fits"]]
    by_slots = {}
    for point in fitting[:: max(1, len(fitting) // 6)]:
        arch = ArchConfig.from_dict(point["arch"])
        program = compile_graph(graph, arch)
        estimate = estimate_program(program, arch, BOARD, None, 0, ddr=ddr_model(BOARD, arch))
        assert point["latency_ms"] == estimate["latency_ms"]
        resources = estimate_resources(program, arch, BOARD)
        assert point["resources"] == {key: resources[key] for key in point["resources"]}
    for point in fitting:
        knobs = dict(point["knobs"], attn_parallel=0)
        by_slots.setdefault(json.dumps(knobs, sort_keys=True), []).append(point)
    rows = [sorted(row, key=lambda p: p["knobs"]["attn_parallel"]) for row in by_slots.values()]
    assert any(row[-1]["latency_ms"] < row[0]["latency_ms"] for row in rows if len(row) > 1)


def test_verification_results_are_judged_keyed_and_cached(serial, tmp_path, monkeypatch):
    """The verification plumbing with stand-in measurements: a synthesis 30 % over the
    estimated LUTs is flagged, a simulation at 1.01 of the estimate is not; the cache key
    changes with the DDR efficiency; a rerun reads the cache."""
    from codesign import exploration

    result, _ = serial
    point = json.loads(json.dumps(result.pick))  # a copy
    calls = []

    def fake_synth(point, board):
        calls.append("synth")
        r = point["resources"]
        return {"tool": "stand-in", "measured": {**r, "lut": round(1.3 * r["lut"])}}

    def fake_sim(point, model, board, efficiency, seed):
        calls.append("sim")
        cycles = point["cycles"]
        return {"model": model, "cycles": round(1.01 * cycles), "estimate_cycles": cycles,
                "ratio": round(1.01 * cycles) / cycles, "bit_exact": True}  # fmt: skip

    monkeypatch.setitem(exploration.VERIFY_JOBS, "synth", fake_synth)
    monkeypatch.setitem(exploration.VERIFY_JOBS, "sim", fake_sim)
    executor = Executor("serial")
    args = (executor, [point], MODEL, BOARD, ("synth", "sim"), 0.8, 0, tmp_path, None)
    exploration._verify(*args)
    assert point["verified"]["synth"]["flagged"] == ["lut +30 %"]
    assert point["verified"]["sim"]["flagged"] == [] and not point["verified"]["sim"]["cached"]
    exploration._verify(*args)
    assert calls == ["synth", "sim"] and point["verified"]["sim"]["cached"]
    exploration._verify(executor, [point], MODEL, BOARD, ("sim",), 0.5, 0, tmp_path, None)
    assert calls == ["synth", "sim", "sim"]  # another DDR model: not the cached run


def test_a_synthesis_beyond_the_margins_is_flagged_though_within_the_bands():
    """Measured: the Ultra96-V2's m3vit pick by the calibrated model (59,058 LUT, 83.7 %)
    synthesised to 62,036 LUT (87.9 %): 5 % off, within the band, beyond the 85 % margin."""
    from codesign import exploration

    point = {"resources": {"dsp": 124, "bram36": 180.5, "uram": 0, "lut": 59058, "ff": 27201}}
    measured = {"dsp": 124, "bram36": 181.0, "uram": 0, "lut": 62036, "ff": 28976}
    judged = exploration._judge("synth", point, {"measured": measured}, "ultra96v2")
    (flag,) = judged["flagged"]
    assert flag.startswith("synthesis beyond the fit margin: LUT: design needs 62,036 (88 %)")
    within = exploration._judge("synth", point, {"measured": point["resources"]}, "ultra96v2")
    assert within["flagged"] == []


def test_a_verification_is_keyed_by_the_sources_it_ran(tmp_path):
    """A cached verification from an edited tree is not reused: the key holds a digest of
    codesign's sources and templates, which any edit of one of them changes."""
    from codesign import exploration
    from codesign.util import source_digest, tree_digest

    package, templates = tmp_path / "codesign", tmp_path / "hls_templates" / "rtl"
    package.mkdir()
    templates.mkdir(parents=True)
    (package / "ops.py").write_text("X = 1\n")
    (templates / "cds_ucu.sv.j2").write_text("module cds_ucu; endmodule\n")
    before = tree_digest(package, templates.parent)
    (templates / "cds_ucu.sv.j2").write_text("module cds_ucu; wire w; endmodule\n")
    assert tree_digest(package, templates.parent) != before
    assert exploration._versions()["sources"] == source_digest()
    point = {"arch": {"tile_in": 8}, "precision": "w16a24"}
    keys = {
        exploration.job_key("sim", point, {**exploration._versions(), "sources": digest})
        for digest in (before, tree_digest(package, templates.parent))
    }
    assert len(keys) == 2


def test_the_verified_pick_is_the_best_point_its_checks_left_standing(serial):
    """When the estimator's pick fails its synthesis (beyond the fit margin), the verified
    pick is the next best point whose synthesis fits and whose RTL run is bit-exact; a
    resource constraint is judged on Yosys's counts; a point that is not bit-exact never
    stands; no standing point gives None, and the report says so."""
    from codesign import exploration
    from codesign.arch import get_board

    result, _ = serial
    ranked = sorted(result.front, key=exploration._objective_key("latency"))[:3]
    fast, middle, slow = (json.loads(json.dumps(p)) for p in ranked)
    board = get_board(BOARD)

    def check(point, lut_share, exact=True, ratio=1.0):
        measured = {**point["resources"], "lut": round(lut_share * board.lut)}
        cycles = round(ratio * point["cycles"])
        sim = {"model": MODEL, "cycles": cycles, "ratio": ratio, "bit_exact": exact}
        point["verified"] = {
            "synth": exploration._judge("synth", point, {"measured": measured}, BOARD),
            "sim": exploration._judge("sim", point, sim, BOARD),
        }

    check(fast, 0.95)  # beyond the 85 % margin
    check(middle, 0.70, exact=False)
    check(slow, 0.60)
    points = [fast, middle, slow]
    assert exploration.verified_pick(points, "latency", [], BOARD) is slow
    lut_cap = exploration.parse_constraints("lut<=0.5")
    assert exploration.verified_pick(points, "latency", lut_cap, BOARD) is None
    check(fast, 0.80)
    assert exploration.verified_pick(points, "latency", [], BOARD) is fast
    # measured, the estimator's fastest is the slowest: the RTL's latency ranks them
    check(fast, 0.80, ratio=slow["latency_ms"] / fast["latency_ms"] * 1.1)
    assert exploration.verified_pick(points, "latency", [], BOARD, MODEL) is slow
    assert exploration.verified_pick(points, "latency", [], BOARD) is fast  # by the estimate
    measured = exploration.measured_latency_ms(fast, MODEL)
    assert measured == pytest.approx(1.1 * slow["latency_ms"], rel=1e-3)
    assert exploration.measured_latency_ms(fast, "m3vit") is None  # another model's run
    outcome = dataclasses.replace(result, verified=points, verified_pick=None, pick=fast)
    assert "none of the 3 verified points passed" in exploration.markdown(outcome)


def test_todays_default_is_verified_beside_the_front(tmp_path, monkeypatch):
    """With verification on, the board's default joins the verified points (so the pick
    is compared with it as measured), the report lists it even off the front, and the
    verified pick is ranked by the RTL's latency (a stand-in simulation finds every point
    but the default 20 % slower than estimated) among the points within the constraint."""
    from codesign import exploration

    def fake_synth(point, board):
        return {"tool": "stand-in", "measured": dict(point["resources"])}

    def fake_sim(point, model, board, efficiency, seed):
        slow = 1.0 if point.get("is_default") else 1.2
        cycles = round(slow * point["cycles"])
        return {"model": model, "cycles": cycles, "estimate_cycles": point["cycles"],
                "ratio": cycles / point["cycles"], "bit_exact": True}  # fmt: skip

    real_default = exploration._default_point

    def marked_default(*args):
        point = real_default(*args)
        if point is not None:
            point["is_default"] = True
        return point

    monkeypatch.setitem(exploration.VERIFY_JOBS, "synth", fake_synth)
    monkeypatch.setitem(exploration.VERIFY_JOBS, "sim", fake_sim)
    monkeypatch.setattr(exploration, "_default_point", marked_default)
    result = explore(MODEL, BOARD, constraints="lut<=0.85", scheduler="serial", verify=1,
                     weight_ports="1", cache=tmp_path / "cache", out=tmp_path / "out")  # fmt: skip
    default = result.default
    assert default is not None and any(point is default for point in result.verified)
    assert len(result.verified) == (1 if result.pick is default else 2)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "(default)" in report and "ms measured (RTL)" in report
    # the plot puts each verified point where it was measured: the stand-in synthesis
    # reports the estimate's resources, the stand-in RTL 1.2x the estimate off the default
    for point in result.verified:
        share, latency = exploration.measured_point(point, "lut", BOARD, MODEL)
        assert share == pytest.approx(100 * point["utilisation"]["lut"], rel=1e-3)
        slow = 1.0 if point is default else 1.2
        assert latency == pytest.approx(slow * point["latency_ms"], rel=1e-3)
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000
    # the best by measured latency among those within the constraint (Yosys's counts)
    allowed = [p for p in result.verified if p["utilisation"]["lut"] <= 0.85]
    best = min(allowed, key=lambda p: exploration.measured_latency_ms(p, MODEL))
    assert result.verified_pick is best
    assert best is default and best is not result.pick  # the case this test is for
    assert "(today's default)" in report
