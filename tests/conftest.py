"""Shared fixtures: small compiled programs reused across test modules."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_build():
    """m3vit-tiny built through the whole flow (no files written)."""
    import codesign

    return codesign.build("m3vit-tiny", board="zcu102", eval_images=2)


@pytest.fixture(scope="session")
def tiny_program(tiny_build):
    return tiny_build.program_bytes


def _weight(markers: set[str]) -> int:
    """0: whole models on the RTL, whole-top synthesis; 1: other RTL end-to-end runs; 2:
    other whole models."""
    if {"slow", "e2e"} <= markers or "synth" in markers:
        return 0
    return 1 if "e2e" in markers else 2 if "slow" in markers else 3


def pytest_collection_modifyitems(session, config, items):
    """Modules with heavy tests run first (the heaviest first), each module's tests kept
    together and in order.

    With one worker per core (pytest-xdist, ``--dist loadfile``) a module is one unit of
    work: the long ones must start at once, not be handed out last while the other
    worker idles. Without xdist this changes the order only.
    """
    first_seen: dict[str, int] = {}
    markers: dict[str, set[str]] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        first_seen.setdefault(module, len(first_seen))
        markers.setdefault(module, set()).update(m.name for m in item.iter_markers())
    weight = {module: _weight(found) for module, found in markers.items()}

    def key(item):
        module = item.nodeid.split("::")[0]
        return weight[module], first_seen[module]

    items.sort(key=key)
