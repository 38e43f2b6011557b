"""The Vitis HLS kernel: rendering from templates, static lint, and g++ C-simulation."""

from .render import (
    RenderedProject,
    RenderError,
    kernel_sources,
    render_project,
    render_sources,
)

__all__ = [
    "RenderError",
    "RenderedProject",
    "kernel_sources",
    "render_project",
    "render_sources",
]
