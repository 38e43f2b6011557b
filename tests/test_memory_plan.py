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
    arch = tiny_build.state.arch.with_(arena_window_kib=0)  # the plan alone, all in DDR
    shared = compile_graph(tiny_build.graph, arch)
    unshared = compile_graph(tiny_build.graph, arch, arena_reuse=False)
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
    memory = program["memory"]
    assert memory["reuse"] is True
    assert memory["peak_live_bytes"] <= program["arena_bytes"] < memory["unshared_bytes"]
    # the board default's window holds every buffer only the kernel touches
    assert memory["window_bytes"] > 0 and memory["spilled"] == []
    assert memory["ddr_bytes"] == program["arena_bytes"] - memory["window_bytes"]


@pytest.mark.parametrize("seed", range(10))
def test_the_window_takes_what_only_the_kernel_touches(seed):
    """With a window, the host's buffers (input, outputs) lie past it, the others in it
    as far as they fit and past it when not; no two live buffers share a byte."""
    rng = np.random.default_rng(seed)
    buffers = _random_buffers(rng, int(rng.integers(2, 40)), 30)
    buffers = [
        Buffer(b.name, b.nbytes, b.first, b.last, host=bool(i < 2)) for i, b in enumerate(buffers)
    ]
    window = int(rng.integers(1, 40)) * 512
    memory = plan(buffers, ALIGN, window=window)
    check(memory)
    assert 0 <= memory.window_bytes <= window
    for place in memory.placements.values():
        if place.buffer.host:
            assert place.offset >= memory.window_bytes
        if place.offset < memory.window_bytes:
            assert place.end <= memory.window_bytes
    spilled = memory.to_dict()["spilled"]
    assert all(memory.offset(name) >= memory.window_bytes for name in spilled)
    # a window that holds everything spills nothing; none gives the plan of before
    assert plan(buffers, ALIGN, window=1 << 30).to_dict()["spilled"] == []
    unflagged = [Buffer(b.name, b.nbytes, b.first, b.last) for b in buffers]
    assert {n: p.offset for n, p in plan(buffers, ALIGN).placements.items()} == {
        n: p.offset for n, p in plan(unflagged, ALIGN).placements.items()
    }


@pytest.mark.parametrize("window_kib", [64, 8])
def test_a_window_changes_addresses_not_results(tiny_build, window_kib):
    """m3vit-tiny with every kernel-only buffer on chip (64 KiB) and with spills (8 KiB):
    the same bits as an arena all in DDR, the host's tensors past the window."""
    arch = tiny_build.state.arch
    program = compile_graph(tiny_build.graph, arch.with_(arena_window_kib=window_kib))
    ddr_only = compile_graph(tiny_build.graph, arch.with_(arena_window_kib=0))
    window = program.window_bytes
    assert 0 < window <= window_kib * 1024 and ddr_only.window_bytes == 0
    assert all(ref.offset >= window for ref in (program.input, *program.outputs))
    spilled = program.meta["memory"]["spilled"]
    assert bool(spilled) == (window_kib == 8)
    raw = tiny_build.quantize_input(tiny_build.state.eval_images[:1])[0]
    for task in range(program.n_tasks):
        np.testing.assert_array_equal(
            GoldenExecutor(program).run(raw, task).output,
            GoldenExecutor(ddr_only).run(raw, task).output,
        )


def test_the_build_cuts_the_window_to_what_the_plan_uses(tiny_build):
    """The board's default window (1 MiB on the ZCU102) is the most a build gives: it keeps
    whole 4,096-beat granules of what the memory plan placed there."""
    from codesign.arch.config import default_arch
    from codesign.dse import window_granule_kib

    arch, program = tiny_build.state.arch, tiny_build.program
    granule = window_granule_kib(arch)
    assert arch.arena_window_kib < default_arch("zcu102").arena_window_kib
    assert arch.arena_window_kib % granule == 0
    assert (arch.arena_window_kib - granule) * 1024 < program.window_bytes
    assert program.window_bytes <= arch.arena_window_kib * 1024
