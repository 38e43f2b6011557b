"""The Jinja2 templates of every backend (``hls_templates/``): one place to find them and
one environment setup, with ``StrictUndefined`` so a missing value is an error."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined


def templates_root() -> Path:
    """$CODESIGN_HLS_TEMPLATES, else the source tree's ``hls_templates/`` (or a copy
    installed inside the package)."""
    override = os.environ.get("CODESIGN_HLS_TEMPLATES")
    candidates = [Path(override)] if override else []
    here = Path(__file__).resolve().parent
    candidates += [here.parent / "hls_templates", here / "hls_templates"]
    for path in candidates:
        if (path / "codesign_top.cpp.j2").is_file():
            return path
    raise FileNotFoundError(
        "templates not found (looked in " + ", ".join(str(p) for p in candidates) + ")"
    )


def environment(subdir: str = "", filters: dict[str, Callable] | None = None) -> Environment:
    """A strict environment over ``hls_templates/<subdir>``; blocks trimmed, output kept
    byte-stable (trailing newline) so rendered files hash the same across runs."""
    env = Environment(
        loader=FileSystemLoader(str(templates_root() / subdir)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(filters or {})
    return env
