"""Fuzzing the Program contract: thousands of mutants of good programs (m3vit-tiny dense
and block-sparse) through the golden executor and the C-sim kernel. Zero crashes, zero
hangs, the same verdict (loader, refusal code and layer, or a run) on every mutant, and
the same arena bits wherever both ran. The RTL gets a sample (tests/test_rtl_device.py);
``benchmarks/fuzz_programs.py`` runs 20,000 and more."""

from __future__ import annotations

import numpy as np
import pytest
from small_models import ARCH_TINY

from codesign import fuzz

pytestmark = [pytest.mark.csim]


@pytest.fixture(scope="module")
def builds():
    import codesign

    dense = codesign.build("m3vit-tiny", board="zcu102", arch=ARCH_TINY, eval_images=1)
    sparse = codesign.build(
        "m3vit-tiny", board="zcu102", arch=ARCH_TINY, eval_images=1, prune="lpvit:0.5"
    )
    return dense, sparse


def _raw(build):
    meta = build.graph.meta
    images = np.random.default_rng(0).standard_normal((1, meta["in_chans"], *meta["image_size"]))
    return build.quantize_input(images)[0]


@pytest.mark.parametrize(("which", "count", "seed"), [("dense", 1200, 11), ("sparse", 900, 12)])
def test_golden_and_csim_agree_on_every_mutant(builds, which, count, seed):
    from codesign.hls.csim import csim_unavailable

    if csim_unavailable():
        pytest.skip(csim_unavailable())
    build = builds[0] if which == "dense" else builds[1]
    report = fuzz.compare(build.program_bytes, ARCH_TINY, _raw(build), count, seed, tasks=2)
    assert report.tried == count
    assert report.crashes == []
    assert report.disagreements == []
    assert report.bit_differences == []
    # the mix reaches every layer of the contract (a fuzzer that only trips the CRC or
    # only runs good programs would pass the three checks above and prove nothing)
    assert report.both_ran >= count // 5
    assert report.golden["loader"] >= count // 20
    for code in ("ERR_REGION", "ERR_LAYOUT", "ERR_TASKS", "ERR_SIZE", "ERR_FORMAT", "ERR_OP"):
        assert report.golden[code] > 0, code
    if which == "sparse":
        assert report.golden["ERR_BLOCKS"] > 0
    assert set(report.kinds) == set(fuzz.KINDS)


def test_mutants_are_reproducible_and_keep_the_crc_right(builds):
    import zlib

    blob = builds[0].program_bytes
    first = fuzz.mutants(blob, 50, seed=3)
    again = fuzz.mutants(blob, 50, seed=3)
    assert [m.blob for m in first] == [m.blob for m in again]
    for mutant in first:
        if mutant.kind in ("stale-crc", "truncate") or len(mutant.blob) < 512:
            continue
        data = bytearray(mutant.blob)
        crc = int.from_bytes(data[fuzz.CRC_AT : fuzz.CRC_AT + 4], "little")
        data[fuzz.CRC_AT : fuzz.CRC_AT + 4] = b"\0\0\0\0"
        assert zlib.crc32(bytes(data)) == crc, mutant.note


def test_a_crashing_kernel_is_a_finding_not_the_end(builds, tmp_path, monkeypatch):
    """The C-sim side runs in a child process: a segfault there is reported on the mutant
    it happened on and the rest still get their verdict."""
    from codesign.hls.csim import csim_unavailable

    if csim_unavailable():
        pytest.skip(csim_unavailable())
    blob = builds[0].program_bytes
    items = fuzz.mutants(blob, 6, seed=1)
    poison = fuzz.Mutant(2, "poison", b"CRASH!", 0, "makes the worker abort")
    items[2] = poison
    monkeypatch.setenv("CODESIGN_FUZZ_CRASH_ON", "CRASH!")
    results = fuzz.CsimRunner(ARCH_TINY, items, _raw(builds[0])).wait()
    assert results[2].crash and "exit status" in results[2].crash
    assert all(results[i].crash is None for i in (0, 1, 3, 4, 5)), results
