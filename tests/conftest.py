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
