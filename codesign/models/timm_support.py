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
