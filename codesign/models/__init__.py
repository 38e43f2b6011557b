"""Torch reference models (ViT/DeiT with timm's layout, multi-task MoE M3ViT) and their
registry of YAML configs; every other stage starts from one of these."""

from codesign.models.m3vit import M3ViT, M3ViTBlock, MoEMlp, select_top_k, tokens_to_map
from codesign.models.registry import (
    MODELS_DIR,
    ModelConfig,
    MoEConfig,
    TaskConfig,
    WeightsError,
    build_model,
    config_from_dict,
    count_macs,
    count_params,
    create_model,
    get_config,
    init_weights,
    list_models,
    load_config,
    load_weights,
    resolve_config,
)
from codesign.models.vit import Attention, Block, Mlp, PatchEmbed, VisionTransformer

__all__ = [
    "MODELS_DIR",
    "Attention",
    "Block",
    "M3ViT",
    "M3ViTBlock",
    "Mlp",
    "MoEConfig",
    "MoEMlp",
    "ModelConfig",
    "PatchEmbed",
    "TaskConfig",
    "VisionTransformer",
    "WeightsError",
    "build_model",
    "config_from_dict",
    "count_macs",
    "count_params",
    "create_model",
    "get_config",
    "init_weights",
    "list_models",
    "load_config",
    "load_weights",
    "resolve_config",
    "select_top_k",
    "tokens_to_map",
]
