"""The op registry: one rule table, generated into the C++ kernel, the SV controller and
the Python check; its docs; and the structure the generators rely on."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from small_models import ARCH_TINY

from codesign import ops
from codesign.arch import ArchConfig
from codesign.contract import ERROR_CODES
from codesign.ops import BY_CODE, SPECS, cpp_check, kernel_check_params, microcode
from codesign.ops.expr import Bin, CeilDiv, Cmp, F, FmtPart, Logic, Not, Rule

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_rules_doc_is_up_to_date():
    from codesign.ops import doc

    assert doc.DOC.read_text() == doc.render(), "stale: python -m codesign.ops.doc"


def test_program_format_doc_lists_every_field_of_every_op():
    text = (DOCS / "program-format.md").read_text()
    for spec in SPECS:
        section = text.split(f"### {spec.name} (op {spec.code})")[1].split("###")[0]
        section = section.split("## ")[0]
        listed = re.findall(r"^\| (\d+) \| `(\w+)` \|$", section, re.M)
        assert listed == [(str(i + 2), name) for i, name in enumerate(spec.field_names)]


def _linear_rows_rule_changed(limit: int):
    """The registry with LINEAR's row range rule's upper bound replaced by ``limit``."""
    linear = BY_CODE[1]
    rules = list(linear.rules)
    index = next(i for i, r in enumerate(rules) if r.why.startswith("rows in"))
    rules[index] = Rule("SIZE", (F("rows") >= 1) & (F("rows") <= limit), why=f"rows <= {limit}")
    changed = dataclasses.replace(linear, rules=tuple(rules))
    return tuple(changed if s is linear else s for s in SPECS), changed


def test_one_rule_changed_changes_the_cpp_the_sv_and_the_python_check(monkeypatch, tiny_build):
    """The three checks are generated from the rule table: edit one rule and all three
    follow (nothing restates it by hand)."""
    from codesign.hls.render import render_sources
    from codesign.program import Program
    from codesign.rtl.render import check_context

    arch = tiny_build.state.arch
    params = kernel_check_params(arch)
    limit = 7  # below every kernel's max_tokens: a value nobody else emits
    before_cpp = render_sources(arch)["src/codesign_top.cpp"]
    before_sv = check_context(arch, None)["engine"]
    program = Program.from_bytes(tiny_build.program_bytes)
    specs, changed = _linear_rows_rule_changed(limit)
    monkeypatch.setattr(ops, "SPECS", specs)
    monkeypatch.setitem(ops.BY_CODE, 1, changed)
    after_cpp = render_sources(arch)["src/codesign_top.cpp"]
    after_sv = check_context(arch, None)["engine"]
    cpp_rows = "((i64)d[LINEAR_ROWS] <= {}LL)"
    assert cpp_rows.format(params["max_tokens"]) in before_cpp
    assert cpp_rows.format(limit) in after_cpp and cpp_rows.format(limit) not in before_cpp

    # the SV controller's rule engine: LINEAR's microcode compares rows with the new bound
    def linear_bounds(engine):
        code = engine.words[engine.entries[1] : engine.unknown_entry]
        decoded = [microcode._decode(word) for word in code]
        rows = microcode.sel(microcode.SRC_FIELD_S, BY_CODE[1].field_names.index("rows"))
        return {i.imm for i in decoded if i.op == "LE" and i.a == rows}

    assert params["max_tokens"] in linear_bounds(before_sv)
    assert limit not in linear_bounds(before_sv)
    assert limit in linear_bounds(after_sv)
    index = next(i for i, layer in enumerate(program.layers) if layer.op.name == "LINEAR")
    program.layers[index].fields["rows"] = limit + 1
    blob = program.to_bytes()
    refusal = ops.check_blob(blob, params, 0)
    assert (refusal.code, refusal.layer) == (ERROR_CODES["SIZE"], index)
    answer = microcode.verdict(blob, params, 0)
    assert (answer.code, answer.layer) == (ERROR_CODES["SIZE"], index)


def test_every_op_and_error_reaches_both_generated_checks():
    params = kernel_check_params(ArchConfig())
    cpp, engine = cpp_check(params), microcode.image(params)
    ends = sorted([*engine.entries.values(), engine.unknown_entry])
    for spec in SPECS:
        assert f"case OP_{spec.name}:" in cpp
        start = engine.entries[spec.code]
        code = [microcode._decode(w) for w in engine.words[start : ends[ends.index(start) + 1]]]
        asserted = {i.imm & 0xFF for i in code if i.op == "ASSERT"}
        assert code[-1].op == "END"
        for rule in spec.rules:
            assert f"return ERR_{rule.error};" in cpp
            assert ERROR_CODES[rule.error] in asserted, (spec.name, rule.why)
    assert max(BY_CODE) < 1 << ops.OP_CODE_BITS


def _arithmetic_fields(node) -> set[str]:
    """Fields that appear inside +, -, *, ceil_div (not in plain comparisons)."""
    if isinstance(node, (Bin, CeilDiv)):
        return node.fields() if isinstance(node, Bin) else node.a.fields()
    if isinstance(node, (Cmp, Logic)):
        return _arithmetic_fields(node.a) | _arithmetic_fields(node.b)
    if isinstance(node, Not):
        return _arithmetic_fields(node.a)
    if isinstance(node, FmtPart):
        return set()
    return set()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_counts_are_range_checked_before_any_arithmetic_uses_them(spec):
    """Every rule runs only after the ones before it passed, so products stay far below
    2**63 in C++, SV and Python alike, provided each count used in arithmetic has had
    its range rule first (and the rule table refers only to its own fields)."""
    kinds = dict(spec.fields)
    checked: set[str] = set()
    for rule in spec.rules:
        assert rule.fields() <= set(kinds) | {"task"}, rule.why
        for name in _arithmetic_fields(rule.must) | (
            _arithmetic_fields(rule.when) if rule.when is not None else set()
        ):
            if kinds.get(name) == "c":
                assert name in checked, f"{spec.name}: {name} used in {rule.why!r} unchecked"
        if rule.error == "SIZE" or rule.why.startswith(("parallel", "post", "stat_shift")):
            checked |= {n for n in rule.must.fields() if kinds.get(n) == "c"}
        if rule.error in ("WEIGHT", "BLOCKS"):
            checked |= {n for n in rule.must.fields() if kinds.get(n) == "c"}


def test_the_python_check_never_raises_on_garbage():
    import numpy as np

    from codesign.fuzz import recrc
    from codesign.program import MAGIC

    params = kernel_check_params(ARCH_TINY)
    rng = np.random.default_rng(0)
    for length in [0, 3, 511, 512, 513, 700, 2048, 20000]:
        for _ in range(20):
            blob = bytearray(rng.integers(0, 256, length, np.uint8).tobytes())
            if length >= 8:
                blob[:8] = MAGIC
            if length >= 16 and rng.random() < 0.5:
                blob[8:12] = (2).to_bytes(4, "little")  # version
            result = ops.check_blob(recrc(bytes(blob)), params, int(rng.integers(0, 3)))
            assert result is None or result.code in ERROR_CODES.values()


def test_every_op_carries_its_semantics_and_cycle_model():
    """Golden execution and the cycle model are reached through the registry (no op is
    special-cased by name in codesign.golden or codesign.estimate.cycles)."""
    import inspect

    from codesign import golden
    from codesign.estimate import cycles

    for spec in SPECS:
        assert callable(spec.golden) and callable(spec.estimate), spec.name
        assert 2.0 <= spec.round_trips <= 8.0, spec.name
    for function in (golden.GoldenExecutor, cycles._layer_estimate, cycles.exposed_latency):
        text = inspect.getsource(function)
        for spec in SPECS:
            assert f"Op.{spec.name}" not in text, (function.__name__, spec.name)


def test_header_words_the_rules_read_are_the_program_layouts():
    """codesign.ops restates the header word indices it reads (codesign.program imports
    the registry, not the other way round): they must be the layout's."""
    from codesign import program

    for name, (index, _signed) in ops.HEADER_WORD_INDEX.items():
        if name in program.HEADER_FIELDS:
            assert index == 2 + program.HEADER_FIELDS.index(name), name
    assert ops.HEADER_WORD_INDEX["magic_lo"][0] == 0
    assert ops._H_TABLES == program._H_TABLES
    assert (ops.TABLE_NAMES, ops.TABLE_WORDS) == (program.TABLE_NAMES, program.TABLE_WORDS)


def test_rule_engine_refuses_an_unknown_op_wherever_it_is(tiny_build):
    """An unknown op code at any layer is ERR_OP at that layer on the rule engine too,
    with the registers left by the layers checked before it (as in the hardware)."""
    from codesign.fuzz import recrc
    from codesign.program import HEADER_BYTES, LAYER_WORDS

    params = kernel_check_params(tiny_build.state.arch)
    for late in range(len(tiny_build.program.layers)):
        blob = bytearray(tiny_build.program_bytes)
        at = HEADER_BYTES + 4 * LAYER_WORDS * late
        blob[at : at + 4] = (200).to_bytes(4, "little")
        answer = microcode.verdict(recrc(bytes(blob)), params)
        assert (answer.code, answer.layer) == (ERROR_CODES["OP"], late)
    assert microcode.verdict(tiny_build.program_bytes, params).code == 0


def test_a_program_for_a_wider_precision_is_refused_by_a_narrower_rtl_build(tiny_build):
    """The w16a24 Program against the checks of RTL builds: one for w16a16 refuses it with
    ERR_FORMAT at the first layer whose activations it cannot carry (the rule engine's
    model agrees, layer and all); builds for w16a24 and w16a27 run it; the HLS kernel's
    parameters take any format. ``bits`` counts an unsigned format's extra sign bit."""
    from codesign.numerics.fixed import Fixed
    from codesign.ops.expr import Env, bits, evaluate
    from codesign.program import pack_fmt
    from codesign.rtl.render import rtl_check_params

    arch = tiny_build.state.arch
    blob = tiny_build.program_bytes
    narrow = rtl_check_params(arch, "w16a16")
    refusal = ops.check_blob(blob, narrow, 0)
    assert refusal.name == "FORMAT" and "act_bits" in refusal.detail, refusal
    first = next(i for i, layer in enumerate(tiny_build.program.layers) if "x_fmt" in layer.fields)
    assert refusal.layer == first
    answer = microcode.verdict(blob, narrow)
    assert (answer.code, answer.layer) == (refusal.code, refusal.layer)
    for precision in ("w16a24", "w16a27"):
        params = rtl_check_params(arch, precision)
        assert ops.check_blob(blob, params, 0) is None, precision
        assert microcode.verdict(blob, params).code == 0, precision
    assert ops.check_blob(blob, kernel_check_params(arch), 0) is None
    # a build whose engines carry 24 bits but whose UCU multiplies 16 (w16a16r24) refuses
    # it at the first matrix multiply, by the multipliers' width
    mixed = rtl_check_params(arch, "w16a16r24")
    refusal = ops.check_blob(blob, mixed, 0)
    assert refusal.name == "FORMAT" and "mul_bits" in refusal.detail, refusal
    assert tiny_build.program.layers[refusal.layer].op.name in ("LINEAR", "MOE_GATE")
    answer = microcode.verdict(blob, mixed)
    assert (answer.code, answer.layer) == (refusal.code, refusal.layer)

    def needed(word: int) -> int:
        env = Env(field=lambda name: word, kind=lambda name: "f", header=None, param=None)
        return evaluate(bits(F("f")), env)

    assert needed(pack_fmt(Fixed(17, 1, signed=False))) == 18
    assert needed(pack_fmt(Fixed(24, 8, signed=True))) == 24


def test_window_rules_cost_the_rule_engine_nothing_without_a_window():
    """A rule guarded by a kernel parameter folds away when the guard is false: a kernel
    without an on-chip window runs none of the one-side-of-the-window checks (its DEPTH
    rule already holds the header's window at 0), one with a window runs them all."""
    from codesign.arch import ArchConfig

    plain = microcode.image(kernel_check_params(ArchConfig(arena_window_kib=0))).words
    window = microcode.image(kernel_check_params(ArchConfig(arena_window_kib=64))).words
    sides = sum(1 for spec in SPECS for rule in spec.rules if "one side of the window" in rule.why)
    assert sides >= 8
    assert len(window) - len(plain) >= 3 * sides


def _programs(engine):
    """Each program of an engine image (header, every op, the unknown-op refusal)."""
    starts = sorted({engine.header_entry, *engine.entries.values(), engine.unknown_entry})
    return {start: engine.program_at(start) for start in starts}


@pytest.mark.parametrize(
    "arch, w_bytes",
    [(ArchConfig(), (2,)), (ARCH_TINY, (1,)), (ArchConfig(arena_window_kib=64), (1, 2))],
)
def test_rule_engine_schedule_has_no_hazard_the_pipeline_would_see(arch, w_bytes):
    """The RTL engine has no hazard logic: every register an instruction reads was last
    written DEPENDENT_SLOTS issue slots before it or more (waits included), in the same
    program (registers keep other programs' values), and no wait overflows its field.
    The schedule interleaves rules, so it leaves few slots empty."""
    engine = microcode.image(kernel_check_params(arch, w_bytes=w_bytes))
    slots = 0
    for start, code in _programs(engine).items():
        written: dict[int, int] = {}
        slot = -1
        for instr in code:
            assert 0 <= instr.wait < 1 << microcode.WAIT_BITS
            slot += 1 + instr.wait
            for selector in (instr.a, instr.b):
                if selector >> 7 == microcode.SRC_REG and instr.op not in ("END", "LDI"):
                    reg = selector & 127
                    assert reg in written, (start, instr, "reads a register it never wrote")
                    assert slot - written[reg] >= microcode.DEPENDENT_SLOTS, (start, instr)
            if instr.op not in ("ASSERT", "END"):
                written[instr.dst] = slot
        slots += slot + 1
    # few empty slots are left: a rule's chain of results mostly waits behind others' work
    steps = sum(len(code) for code in _programs(engine).values())
    assert slots < 1.1 * steps, (slots, steps)


def test_rule_engine_in_order_schedule_gives_the_same_verdicts(tiny_build, monkeypatch):
    """Interleaving changes when rules are computed, never which one answers: 300 fuzzed
    Programs get the same code and layer from the scheduled microcode as from the rules
    issued one by one (the compiler's fallback, hazard-free too); the interleaved
    schedule takes at most 3/4 of the in-order one's cycles."""
    from codesign.fuzz import mutants

    params = kernel_check_params(tiny_build.state.arch)
    fast = microcode.build_image(params)
    schedule = microcode.schedule
    monkeypatch.setattr(
        microcode, "schedule", lambda steps, **_: schedule(steps, lookahead=0, in_order=True)
    )
    slow = microcode.build_image(params)
    for engine in (fast, slow):  # both free of the hazards the pipeline would see
        for code in _programs(engine).values():
            written, slot = {}, -1
            for instr in code:
                slot += 1 + instr.wait
                for selector in (instr.a, instr.b):
                    if selector >> 7 == microcode.SRC_REG and instr.op not in ("END", "LDI"):
                        assert slot - written[selector & 127] >= microcode.DEPENDENT_SLOTS
                if instr.op not in ("ASSERT", "END"):
                    written[instr.dst] = slot
    cycles, want = {}, None
    blobs = [tiny_build.program_bytes] + [m.blob for m in mutants(tiny_build.program_bytes, 300)]
    for name, engine in (("fast", fast), ("slow", slow)):
        monkeypatch.setattr(microcode, "image", lambda _params, engine=engine: engine)
        answers = [microcode.verdict(blob, params) for blob in blobs]
        cycles[name] = [a.header_cycles + sum(a.layer_cycles) for a in answers]
        verdicts = [(a.code, a.layer) for a in answers]
        want = verdicts if name == "fast" else want
        assert verdicts == want, name
    assert want[0] == (0, None) and sum(1 for code, _ in want if code) > 50
    assert cycles["fast"][0] < 0.75 * cycles["slow"][0], (cycles["fast"][0], cycles["slow"][0])
