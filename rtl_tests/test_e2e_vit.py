"""End to end: vit-tiny (197 tokens, 1000 classes) on the RTL accelerator.

A module of its own so that a parallel run (pytest-xdist, one module per worker, heavy
modules first) simulates it beside the full m3vit. The checks are those of ``test_e2e``.
"""

from __future__ import annotations

import pytest
from test_e2e import VIT_ARCH, check_run, compiled, run_harness

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_vit_tiny():
    """vit-tiny (197 tokens, 1000 classes) on a 16x16 UCU: 6.4M cycles, ~3 min here."""
    build = compiled("vit-tiny", VIT_ARCH)
    run = run_harness(build, [0])["runs"][0]
    figures = check_run(build, run, "vit-tiny")
    assert figures["cosine"] > 0.999
