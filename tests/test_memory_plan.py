"""The arena's memory plan: buffers share bytes only when their lifetimes do not overlap,
and a Program compiled with reuse computes exactly what one without reuse computes."""

from __future__ import annotations

import numpy as np
import pytest

from codesign.compiler import CompileError, _Compiler, compile_graph
from codesign.golden import GoldenExecutor
from codesign.memory_plan import Buffer, MemoryPlan, Placement, check, plan

ALIGN = 64


def _random_buffers(rng, count: int, nodes: int) -> list[Buffer]:
    buffers = []
    for index in range(count):
        first = int(rng.integers(-1, nodes))
        last = int(rng.integers(first, nodes + 1))
        nbytes = int(rng.integers(1, 5000))
        buffers.append(Buffer(f"t{index}", nbytes, first, last))
    return buffers


@pytest.mark.parametrize("seed", range(20))
def test_a_plan_never_puts_live_buffers_on_the_same_bytes(seed):
    rng = np.random.default_rng(seed)
    buffers = _random_buffers(rng, int(rng.integers(1, 60)), 30)
    memory = plan(buffers, ALIGN)
    check(memory)
    assert all(place.offset % ALIGN == 0 for place in memory.placements.values())
    assert memory.peak_live_bytes <= memory.arena_bytes
    assert memory.arena_bytes <= memory.unshared_bytes
    assert memory.unshared_bytes == sum(-(-b.nbytes // ALIGN) * ALIGN for b in buffers)
    assert plan(list(reversed(buffers)), ALIGN).to_dict() == memory.to_dict()  # deterministic


def test_a_chain_of_activations_takes_two_buffers_of_bytes():
    """x0 -> x1 -> ... -> x9: each tensor lives from its producer to its consumer, so two
    buffers' worth of bytes hold the chain (the peak), not ten."""
    buffers = [Buffer(f"x{i}", 1024, i - 1, i) for i in range(10)]
    memory = plan(buffers, ALIGN)
    assert memory.arena_bytes == memory.peak_live_bytes == 2048
    assert memory.unshared_bytes == 10 * 1024
    unshared = plan(buffers, ALIGN, reuse=False)
    assert unshared.arena_bytes == 10 * 1024
    assert [unshared.offset(f"x{i}") for i in range(10)] == [1024 * i for i in range(10)]


def test_the_check_catches_live_buffers_that_overlap():
    a, b = Buffer("a", 128, 0, 3), Buffer("b", 128, 2, 5)
    bad = MemoryPlan({"a": Placement(a, 0), "b": Placement(b, 64)}, 256, True, ALIGN)
    with pytest.raises(AssertionError, match="a and b are live together"):
        check(bad)
    check(MemoryPlan({"a": Placement(a, 0), "b": Placement(b, 128)}, 256, True, ALIGN))
    with pytest.raises(ValueError, match="share a name"):
        plan([a, Buffer("a", 64, 5, 6)], ALIGN)


def test_reuse_changes_the_addresses_and_nothing_else(tiny_build):
    """m3vit-tiny (both tasks; MoE queues and scratch, qk-free attention, residuals):
    compiled with and without reuse, the golden executor gives the same bits, every layer
    traces the same values, and the shared arena is the plan's peak."""
    shared = tiny_build.program
    unshared = compile_graph(tiny_build.graph, tiny_build.state.arch, arena_reuse=False)
    memory = shared.meta["memory"]
    assert memory["reuse"] and not unshared.meta["memory"]["reuse"]
    assert shared.arena_bytes == memory["peak_live_bytes"] < unshared.arena_bytes
    assert unshared.arena_bytes == unshared.meta["memory"]["unshared_bytes"]
    assert any(
        a.fields.get("dst") != b.fields.get("dst")
        for a, b in zip(shared.layers, unshared.layers, strict=True)
    )
    raw = tiny_build.quantize_input(tiny_build.state.eval_images[:1])[0]
    ref = shared.input
    for task in range(shared.n_tasks):
        one = GoldenExecutor(shared).run(raw, task, trace=True)
        two = GoldenExecutor(unshared).run(raw, task, trace=True)
        np.testing.assert_array_equal(one.output, two.output)
        # the input rows survive the run (a host may run every task on one upload)
        rows = one.arena[ref.offset // 4 : (ref.offset + ref.rows * ref.stride) // 4]
        np.testing.assert_array_equal(rows.reshape(ref.rows, -1)[:, : ref.cols], raw)
        assert one.traces.keys() == two.traces.keys()
        for name, values in one.traces.items():
            np.testing.assert_array_equal(values, two.traces[name], err_msg=name)


def test_an_op_that_touches_a_dead_tensor_is_refused(tiny_build, monkeypatch):
    """The plan's lifetimes come from node inputs and outputs; the compiler refuses an op
    that reaches any other tensor instead of handing it bytes another tensor holds."""
    real = _Compiler.layernorm

    def layernorm(self, node):
        dead = [
            name
            for name in self.graph.tensors
            if name in self.memory.placements and self.memory.placements[name].buffer.last < self.at
        ]
        if dead:  # the first LayerNorm has none: the patch embedding's output is its input
            self.ref(dead[0])
        return real(self, node)

    monkeypatch.setattr(_Compiler, "layernorm", layernorm)
    with pytest.raises(CompileError, match="outside the lifetime the memory plan gave it"):
        compile_graph(tiny_build.graph, tiny_build.state.arch)


def test_the_report_says_how_the_arena_was_planned(tiny_build):
    program = tiny_build.report["program"]
    assert program["memory"]["reuse"] is True
    assert program["arena_bytes"] == program["memory"]["peak_live_bytes"]
    assert program["memory"]["unshared_bytes"] > program["arena_bytes"]
