"""timm ViTs as a user makes them: the import on this toolchain, and the timm options the
frontend maps (the issue table of docs/timm.md), shared by tests and benchmarks.

timm itself is optional (``pip install timm``): nothing in the toolkit needs it, but a
user's model usually comes from it.
"""

from __future__ import annotations

import os
import re
import sys

import torch

_TORCHVISION_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_torchvision_stub_library = None  # keeps the stub op definitions alive


def import_timm():
    """Import timm, working around the CPU-torch / CUDA-torchvision mismatch.

    torchvision 0.28 registers fake kernels for its C++ ops at import, and on a CPU
    torch without its compiled ops that fails with "operator torchvision::nms does
    not exist". timm never calls those ops for a ViT, so the schemas are defined
    (without kernels) and the import retried. Returns (timm, None) or (None, reason).
    """
    global _torchvision_stub_library
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network; never try the hub
    for _ in range(len(_TORCHVISION_SCHEMAS) + 1):
        try:
            import timm

            return timm, None
        except ImportError as exc:
            return None, f"timm cannot be imported ({exc}); install timm to run this check"
        except RuntimeError as exc:
            match = re.search(r"operator torchvision::(\w+) does not exist", str(exc))
            if not match or match.group(1) not in _TORCHVISION_SCHEMAS:
                return None, f"timm import failed: {exc}"
            if _torchvision_stub_library is None:
                _torchvision_stub_library = torch.library.Library("torchvision", "DEF")
            _torchvision_stub_library.define(_TORCHVISION_SCHEMAS[match.group(1)])
            for module in [
                name for name in sys.modules if name.startswith(("torchvision", "timm"))
            ]:
                del sys.modules[module]
    return None, "timm import failed after stubbing torchvision ops"


SPEC_PREFIX = "timm:"


def parse_spec(spec: str) -> tuple[str, dict]:
    """``timm:NAME[:key=value,...]`` -> (NAME, keyword arguments of timm.create_model).

    Values are Python literals (``reg_tokens=4``, ``fc_norm=False``) or else strings
    (``global_pool=avg``). The model is always made without downloading weights.
    """
    import ast

    if not spec.startswith(SPEC_PREFIX):
        raise ValueError(f"a timm model is {SPEC_PREFIX}NAME[:key=value,...], not {spec!r}")
    name, _, rest = spec[len(SPEC_PREFIX) :].partition(":")
    if not name:
        raise ValueError(f"{spec!r}: no timm model name after {SPEC_PREFIX!r}")
    kwargs = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{spec!r}: {item!r} is not key=value")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        kwargs[key.strip()] = value
    if kwargs.pop("pretrained", False):
        raise ValueError(f"{spec!r}: no network here; pass trained weights with --weights")
    return name, kwargs


def create_from_spec(spec: str, seed: int = 0):
    """The timm model a ``timm:`` spec names, random weights from `seed`, in eval mode;
    an unknown name names timm's closest models."""
    import difflib

    name, kwargs = parse_spec(spec)
    timm, reason = import_timm()
    if timm is None:
        raise RuntimeError(f"{spec}: {reason}")
    known = timm.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"timm has no model {name!r}{hint}")
    torch.manual_seed(seed)
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as error:
        raise ValueError(f"{spec}: timm.create_model refused the options: {error}") from None
    return model.eval()


# name -> timm.create_model keyword arguments: every option the frontend maps beyond the
# plain CLS-token ViT (docs/timm.md), and the DeiT distilled model's two heads
OPTIONS: dict[str, dict] = {
    "plain": {},
    "global_pool=avg": {"global_pool": "avg"},
    "global_pool=avg, fc_norm=False": {"global_pool": "avg", "fc_norm": False},
    "class_token=False": {"class_token": False, "global_pool": "avg"},
    "reg_tokens=4": {"reg_tokens": 4},
    "no_embed_class=True": {"no_embed_class": True},
    "qk_norm=True": {"qk_norm": True},
    "pre_norm=True": {"pre_norm": True},
    "act_layer=gelu_tanh": {"act_layer": "gelu_tanh"},
    "final_norm=False": {"final_norm": False},
    "distilled": {"distilled": True},
    "all at once": {  # DINOv2-with-registers / SigLIP-like
        "global_pool": "avg",
        "reg_tokens": 2,
        "no_embed_class": True,
        "qk_norm": True,
        "pre_norm": True,
        "act_layer": "gelu_tanh",
    },
}
SMALL = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def timm_vit(option: str, num_classes: int = 5, seed: int = 0, **size):
    """A timm ViT (DeiT distilled for "distilled") with `option` of ``OPTIONS``, random
    weights from `seed`, in eval mode; `size` overrides ``SMALL``."""
    timm, reason = import_timm()
    if timm is None:
        raise RuntimeError(reason)
    kwargs = dict(OPTIONS[option])
    name = "vit_tiny_patch16_224"
    if kwargs.pop("distilled", False):
        name = "deit_tiny_distilled_patch16_224"
    torch.manual_seed(seed)
    return timm.create_model(
        name, pretrained=False, num_classes=num_classes, **{**SMALL, **size}, **kwargs
    ).eval()
