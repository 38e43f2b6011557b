"""The full m3vit on the RTL, task 1 (depth): a module of its own so that a parallel run
simulates it beside task 0 (see ``test_e2e_m3vit``)."""

from __future__ import annotations

import pytest
from test_e2e_m3vit import check_m3vit_task

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_m3vit_full_task1():
    """The full m3vit, task 1 (depth), on its board default (w16a16, 64x16 UCU)."""
    check_m3vit_task(1)
