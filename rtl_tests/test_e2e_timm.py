"""End to end on the RTL: a timm ViT with the options of docs/timm.md at once.

Average pooling (POOL), two register tokens without positions (EMBED's prefix rows),
qk-norm (LAYERNORM in place on each head of q and k), a pre-norm and the tanh GELU (the
GELU ROM of ``ArchConfig(gelu="tanh")``): the Verilated accelerator's output must equal
the golden executor's bit for bit, track timm's forward, and take the cycles the
estimator says (the checks of ``test_e2e``).
"""

from __future__ import annotations

import pytest
from test_e2e import TINY_ARCH, check_run, run_rtl

import codesign
from codesign.models.timm_support import import_timm, timm_vit

pytestmark = pytest.mark.e2e


def test_timm_options_on_the_rtl():
    timm, reason = import_timm()
    if timm is None:
        pytest.skip(reason)
    model = timm_vit("all at once")
    arch = TINY_ARCH.with_(max_tokens=32, gelu="tanh")
    build = codesign.build(model, "zcu102", arch=arch)
    ops = {layer.op.name for layer in build.program.layers}
    assert {"POOL", "EMBED", "LAYERNORM"} <= ops
    assert build.program.tables["gelu_delta"].kind == 1
    result = run_rtl(build, [0], ddr="axiram")
    figures = check_run(build, result["runs"][0], "timm-options")
    assert figures["cosine"] > 0.999
