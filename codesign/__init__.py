"""codesign: FPGA co-design toolkit for Vision Transformers and multi-task MoE ViTs."""

__version__ = "0.1.0"


def __getattr__(name):
    # keep `import codesign` light: torch and the flow load on first use
    if name in ("build", "Build", "convert"):
        from . import api

        return getattr(api, name)
    if name == "explore":
        from .exploration import explore

        return explore
    raise AttributeError(name)
