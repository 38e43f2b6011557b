"""codesign explore's simulation check for real: a front point of m3vit-tiny on the
Ultra96-V2 (4x8 UCU, one attention slot of 8 lanes, 64-bit bus) run on the
Verilated top with the DDR model, its cycles against the estimate and its output against
the golden executor."""

from __future__ import annotations

import pytest

from codesign.exploration import BANDS, _graph_for, evaluate, sim_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_sim_job_runs_a_front_point_on_the_rtl():
    graph, base = _graph_for("m3vit-tiny", "ultra96v2", "w16a24", 0)
    arch = base.with_(tile_in=4, tile_out=8, attn_parallel=1, attn_lanes=8, bus_bits=64)
    point = evaluate(graph, "ultra96v2", arch, "w16a24", 0.8)
    assert point["fits"]
    result = sim_job(point, "m3vit-tiny", "ultra96v2", 0.8, 0)
    assert result["bit_exact"]
    assert result["cycles"] > 0 and abs(result["ratio"] - 1) <= BANDS["cycles"]
