"""Model configs (one YAML file per model in the repo's ``models/`` folder) and factories.

Everything downstream (frontend, compiler, estimator, report) starts from a name
here, so the configs are validated strictly: an unknown key or a bad value is an
error naming the file and the key, never a silently ignored typo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from codesign.models.m3vit import M3ViT, MoEMlp
from codesign.models.vit import VisionTransformer
from codesign.names import MODELS_DIR, registered_models  # one registry, torch-free

FAMILIES = ("vit", "m3vit")

# Init choices (see init_weights): timm's scheme, with norms and biases perturbed so
# that a quantised datapath sees non-trivial scales and offsets, and gates wide
# enough that random routing spreads tokens over most experts.
WEIGHT_STD = 0.02  # trunc-normal std of linear/conv weights, pos_embed, cls_token (timm)
NORM_WEIGHT_STD = 0.1  # LayerNorm weight = 1 + 0.1·N(0,1)
BIAS_STD = 0.02  # LayerNorm and linear biases = 0.02·N(0,1)
GATE_LOGIT_STD = 1.0  # gate weight std = GATE_LOGIT_STD / sqrt(dim): logits ≈ N(0, 1)


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class MoEConfig:
    """Mixture-of-experts settings of the odd M3ViT blocks."""

    num_experts: int
    top_k: int
    expert_hidden: int


@dataclass(frozen=True)
class TaskConfig:
    """One M3ViT task: its name and the channels of its per-patch head."""

    name: str
    channels: int


def _check_positive_int(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key}: expected a positive integer, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """A model's shape, as read from its YAML file; checked on construction."""

    name: str
    family: str
    image_size: tuple[int, int]
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    description: str = ""
    in_chans: int = 3
    mlp_ratio: float = 4.0
    num_classes: int | None = None
    moe: MoEConfig | None = None
    tasks: tuple[TaskConfig, ...] = ()
    checkpoint: str | None = None  # trained weights beside the YAML, used unless told otherwise
    dataset: str | None = None  # real images to calibrate on by default (codesign.calibration)
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family: expected one of {list(FAMILIES)}, got {self.family!r}")
        if not isinstance(self.description, str):
            raise ValueError(f"description: expected a string, got {self.description!r}")
        if not isinstance(self.image_size, tuple) or len(self.image_size) != 2:
            raise ValueError(f"image_size: expected [H, W], got {self.image_size!r}")
        for value in self.image_size:
            _check_positive_int(value, "image_size")
        for key in ("patch_size", "embed_dim", "depth", "num_heads", "in_chans"):
            _check_positive_int(getattr(self, key), key)
        if any(size % self.patch_size for size in self.image_size):
            raise ValueError(
                f"image_size: {list(self.image_size)} is not a multiple of "
                f"patch_size {self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"num_heads: embed_dim {self.embed_dim} is not divisible by {self.num_heads}"
            )
        ratio = self.mlp_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
            raise ValueError(f"mlp_ratio: expected a positive number, got {ratio!r}")
        if self.mlp_hidden <= 0:
            raise ValueError(f"mlp_ratio: {ratio} gives an empty MLP for dim {self.embed_dim}")
        if self.family == "vit":
            self._check_vit()
        else:
            self._check_m3vit()

    def _check_vit(self) -> None:
        if self.num_classes is None:
            raise ValueError("num_classes: required for family 'vit'")
        _check_positive_int(self.num_classes, "num_classes")
        if self.moe is not None:
            raise ValueError("moe: only allowed for family 'm3vit'")
        if self.tasks:
            raise ValueError("tasks: only allowed for family 'm3vit'")

    def _check_m3vit(self) -> None:
        if self.num_classes is not None:
            raise ValueError("num_classes: not used by family 'm3vit' (give tasks instead)")
        if not isinstance(self.moe, MoEConfig):
            raise ValueError("moe: required for family 'm3vit'")
        for key in ("num_experts", "top_k", "expert_hidden"):
            _check_positive_int(getattr(self.moe, key), f"moe.{key}")
        if self.moe.top_k > self.moe.num_experts:
            raise ValueError(
                f"moe.top_k: {self.moe.top_k} exceeds num_experts {self.moe.num_experts}"
            )
        if self.depth < 2:
            raise ValueError(f"depth: {self.depth} leaves no odd block for the MoE")
        if not isinstance(self.tasks, tuple) or not self.tasks:
            raise ValueError("tasks: family 'm3vit' needs at least one task")
        names = []
        for index, task in enumerate(self.tasks):
            if not isinstance(task, TaskConfig):
                raise ValueError(f"tasks[{index}]: expected {{name, channels}}, got {task!r}")
            if not isinstance(task.name, str) or not task.name:
                raise ValueError(f"tasks[{index}].name: expected a non-empty string")
            _check_positive_int(task.channels, f"tasks[{index}].channels")
            names.append(task.name)
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: duplicate task names in {names}")

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches along (H, W)."""
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    @property
    def patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def tokens(self) -> int:
        """Patches plus the CLS token."""
        return self.patches + 1

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        """Dense MLP hidden width, rounded down like timm's ``int(dim * mlp_ratio)``."""
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    @property
    def task_channels(self) -> tuple[int, ...]:
        return tuple(task.channels for task in self.tasks)

    def as_dict(self) -> dict[str, Any]:
        """The YAML schema as plain data (lists, dicts); omits unused family fields."""
        data = asdict(self)
        data.pop("source")
        for optional in ("checkpoint", "dataset"):
            if data[optional] is None:
                data.pop(optional)
        data["image_size"] = list(self.image_size)
        if self.family == "vit":
            data.pop("moe")
            data.pop("tasks")
        else:
            data.pop("num_classes")
            data["tasks"] = [asdict(task) for task in self.tasks]
        return data


_REQUIRED_KEYS = ("name", "family", "image_size", "patch_size", "embed_dim", "depth", "num_heads")
_OPTIONAL_KEYS = (
    "description",
    "in_chans",
    "mlp_ratio",
    "num_classes",
    "moe",
    "tasks",
    "checkpoint",
    "dataset",
)
# ``weights=RANDOM_WEIGHTS`` asks for the seeded random init even where a checkpoint ships
RANDOM_WEIGHTS = "random"
_MOE_KEYS = ("num_experts", "top_k", "expert_hidden")
_TASK_KEYS = ("name", "channels")


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [key for key in data if key not in allowed]
    if unknown:
        raise ValueError(f"{where}unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")


def _check_required(data: Mapping[str, Any], required: tuple[str, ...], where: str) -> None:
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"{where}missing key {missing[0]!r}")


def config_from_dict(data: Any, source: str = "<dict>") -> ModelConfig:
    """Build a checked ModelConfig from YAML-shaped data; errors start with ``source``."""
    try:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping of config keys, got {type(data).__name__}")
        _check_keys(data, _REQUIRED_KEYS + _OPTIONAL_KEYS, "")
        _check_required(data, _REQUIRED_KEYS, "")
        values = dict(data)
        image_size = values["image_size"]
        if isinstance(image_size, int) and not isinstance(image_size, bool):
            image_size = [image_size, image_size]
        if not isinstance(image_size, (list, tuple)) or len(image_size) != 2:
            raise ValueError(f"image_size: expected [H, W], got {image_size!r}")
        values["image_size"] = tuple(image_size)
        if values.get("moe") is not None:
            moe = values["moe"]
            if not isinstance(moe, Mapping):
                raise ValueError(f"moe: expected a mapping, got {moe!r}")
            _check_keys(moe, _MOE_KEYS, "moe: ")
            _check_required(moe, _MOE_KEYS, "moe: ")
            values["moe"] = MoEConfig(**moe)
        tasks = values.get("tasks") or []
        if not isinstance(tasks, list):
            raise ValueError(f"tasks: expected a list of {{name, channels}}, got {tasks!r}")
        parsed_tasks = []
        for index, task in enumerate(tasks):
            if not isinstance(task, Mapping):
                raise ValueError(f"tasks[{index}]: expected {{name, channels}}, got {task!r}")
            _check_keys(task, _TASK_KEYS, f"tasks[{index}]: ")
            _check_required(task, _TASK_KEYS, f"tasks[{index}]: ")
            parsed_tasks.append(TaskConfig(**task))
        values["tasks"] = tuple(parsed_tasks)
        ratio = values.get("mlp_ratio")
        if isinstance(ratio, int) and not isinstance(ratio, bool):
            values["mlp_ratio"] = float(ratio)
        return ModelConfig(**values, source=source)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def load_config(path: str | Path) -> ModelConfig:
    """Read and check one model YAML file (registered or user-provided)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read model config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    return config_from_dict(data, source=str(path))


def list_models() -> list[str]:
    """Names of the registered models (the YAML files in the repo's models/ folder)."""
    return registered_models()


def get_config(name: str) -> ModelConfig:
    """The registered config called ``name``; an unknown name lists the known ones."""
    from codesign.names import resolve

    name = resolve(name, list_models(), "model", "registered models")
    path = MODELS_DIR / f"{name}.yaml"
    config = load_config(path)
    if config.name != name:
        raise ValueError(f"{path}: name: {config.name!r} does not match the file name {name!r}")
    return config


def resolve_config(name_or_config: str | Path | ModelConfig) -> ModelConfig:
    """A ModelConfig from a config, a registered name, or a path to a YAML file."""
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    if isinstance(name_or_config, Path) or str(name_or_config).endswith((".yaml", ".yml")):
        return load_config(name_or_config)
    return get_config(name_or_config)


def build_model(config: ModelConfig) -> nn.Module:
    """Instantiate the module for ``config`` with torch's default init (see create_model)."""
    if config.family == "vit":
        model: nn.Module = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            num_classes=config.num_classes,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
        )
    else:
        assert config.moe is not None
        model = M3ViT(
            img_size=config.image_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            num_experts=config.moe.num_experts,
            top_k=config.moe.top_k,
            expert_hidden=config.moe.expert_hidden,
            tasks=[(task.name, task.channels) for task in config.tasks],
        )
    model.config = config
    return model


def init_weights(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Seeded, reproducible init that leaves torch's global RNG alone.

    timm's scheme (trunc-normal std 0.02 for linear/conv weights, pos_embed and
    cls_token), except where an all-ones/all-zeros value would hide numerics bugs:
    LayerNorm weight 1 + 0.1·N(0,1), LayerNorm and linear biases 0.02·N(0,1).
    MoE gate weights get std GATE_LOGIT_STD/sqrt(dim), so the gate logits on LN2
    outputs are about N(0, 1) and random routing spreads tokens over most experts
    (std 0.02 would give near-uniform probabilities and ties decided by rounding).
    Parameters are drawn in module order from one local generator.
    """
    generator = torch.Generator().manual_seed(seed)
    gate_ids = {
        id(gate)
        for module in model.modules()
        if isinstance(module, MoEMlp)
        for gate in module.gates
    }
    done: set[int] = set()

    def fill(param: torch.Tensor, values: torch.Tensor) -> None:
        param.copy_(values)
        done.add(id(param))

    def normal(param: torch.Tensor, std: float, mean: float = 0.0) -> None:
        fill(param, mean + std * torch.randn(param.shape, generator=generator))

    def trunc_normal(param: torch.Tensor, std: float = WEIGHT_STD) -> None:
        # Rejection sampling at ±2σ: exact, and ~10x faster than nn.init.trunc_normal_.
        values = torch.randn(param.shape, generator=generator)
        outside = values.abs() > 2
        while outside.any():
            values[outside] = torch.randn(int(outside.sum()), generator=generator)
            outside = values.abs() > 2
        fill(param, std * values)

    with torch.no_grad():
        for name in ("cls_token", "pos_embed"):
            if isinstance(getattr(model, name, None), nn.Parameter):
                trunc_normal(getattr(model, name))
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                normal(module.weight, NORM_WEIGHT_STD, mean=1.0)
                normal(module.bias, BIAS_STD)
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                if id(module) in gate_ids:
                    normal(module.weight, GATE_LOGIT_STD / math.sqrt(module.in_features))
                else:
                    trunc_normal(module.weight)
                if module.bias is not None:
                    normal(module.bias, BIAS_STD)
    untouched = [name for name, param in model.named_parameters() if id(param) not in done]
    if untouched:
        raise TypeError(f"init_weights does not know how to initialise {untouched}")
    return model


def _describe_file(path: Path) -> str:
    """What a file that torch cannot load looks like, in a few words."""
    head = path.read_bytes()[:512]
    if not head:
        return "the file is empty"
    if head[:2] == b"PK":
        return "a zip archive torch.load refused (not tensors and plain containers only)"
    if head.lstrip()[:1] in (b"{", b"["):
        return "it looks like JSON"
    if head[:1] == b"\x80":
        return "a pickle that is not a plain state dict"
    if all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return "it is a text file"
    return "unrecognised binary content"


def _read_state_dict(weights: str | Path | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(weights, Mapping):
        state, source = weights, "state dict"
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            # torch's own message runs to a dozen lines of advice (weights_only=False...)
            # that do not apply: name the file and what was expected, in one line
            raise WeightsError(
                f"{path}: not a torch state dict ({_describe_file(path)}; expected a file "
                f"written by torch.save(model.state_dict()))"
            ) from None
        source = str(path)
    if isinstance(state, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping):
        raise WeightsError(f"{source}: expected a state dict (a mapping), got {type(state)}")
    return state, source


def load_weights(model: nn.Module, weights: str | Path | Mapping[str, Any]) -> nn.Module:
    """Load a state dict (path or mapping; ``{"model": ...}``/``{"state_dict": ...}`` too)
    strictly, naming every missing, unexpected or mis-shaped tensor on failure."""
    state, source = _read_state_dict(weights)
    expected = model.state_dict()
    problems = [f"missing key: {key}" for key in expected if key not in state]
    problems += [f"unexpected key: {key}" for key in state if key not in expected]
    for key, value in state.items():
        if key not in expected:
            continue
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key}: file has a {type(value).__name__}, not a tensor")
        elif value.shape != expected[key].shape:
            problems.append(
                f"{key}: file has {tuple(value.shape)}, model expects {tuple(expected[key].shape)}"
            )
    if problems:
        shown = problems[:20]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more")
        config = getattr(model, "config", None)
        target = f"model {config.name!r}" if config is not None else type(model).__name__
        raise WeightsError(f"{source} does not fit {target}:\n  " + "\n  ".join(shown))
    model.load_state_dict(state, strict=True)
    return model


def create_model(
    name_or_config: str | Path | ModelConfig,
    *,
    seed: int = 0,
    weights: str | Path | Mapping[str, Any] | None = None,
) -> nn.Module:
    """The model for a registered name, a YAML path or a config, seeded-initialised
    (see init_weights), loaded from ``weights`` or else from the config's shipped
    ``checkpoint`` (``weights="random"`` keeps the random init), in eval mode.

    Built on the meta device first so construction draws nothing from the global RNG.
    """
    config = resolve_config(name_or_config)
    with torch.device("meta"):
        model = build_model(config)
    model = model.to_empty(device="cpu")
    init_weights(model, seed=seed)
    if weights is None:
        weights = checkpoint_path(config)
    elif isinstance(weights, str) and weights == RANDOM_WEIGHTS:
        weights = None
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def checkpoint_path(config: ModelConfig) -> Path | None:
    """The trained weights a config ships with (``checkpoint:`` beside its YAML), if any."""
    if not config.checkpoint:
        return None
    base = Path(config.source).parent if config.source and config.source != "<dict>" else MODELS_DIR
    return base / config.checkpoint


def _structure(model_or_config: nn.Module | ModelConfig | str | Path) -> nn.Module:
    if isinstance(model_or_config, nn.Module):
        model = model_or_config
    else:
        with torch.device("meta"):
            model = build_model(resolve_config(model_or_config))
    if not isinstance(model, (VisionTransformer, M3ViT)):
        raise TypeError(f"expected a VisionTransformer or M3ViT, got {type(model).__name__}")
    return model


def _linear_macs(layer: nn.Linear) -> int:
    return layer.in_features * layer.out_features


def count_macs(
    model_or_config: nn.Module | ModelConfig | str | Path, *, task: int | str = 0
) -> int:
    """Multiply-accumulates of one image's inference.

    Counts the matmuls the UCU executes: patch embedding, QKV, q·kᵀ, attn·V,
    projection, MLPs, MoE gate, top-k experts per token, and the head (the CLS token
    for ViT; every patch token for the M3ViT head of ``task``). Norms, softmax,
    GELU, scaling, residual adds and the per-expert score multiply are not MACs.
    """
    model = _structure(model_or_config)
    task_id = model.task_index(task) if isinstance(model, M3ViT) else task
    patch_embed = model.patch_embed
    kernel_h, kernel_w = patch_embed.patch_size
    tokens = model.num_tokens
    macs = (
        patch_embed.num_patches
        * patch_embed.proj.out_channels
        * (patch_embed.proj.in_channels * kernel_h * kernel_w)
    )
    for block in model.blocks:
        attn = block.attn
        macs += tokens * (_linear_macs(attn.qkv) + _linear_macs(attn.proj))
        macs += 2 * attn.num_heads * tokens * tokens * attn.head_dim
        mlp = block.mlp
        if isinstance(mlp, MoEMlp):
            expert = mlp.experts[0]
            expert_macs = _linear_macs(expert.fc1) + _linear_macs(expert.fc2)
            macs += tokens * (_linear_macs(mlp.gates[task_id]) + mlp.top_k * expert_macs)
        else:
            macs += tokens * (_linear_macs(mlp.fc1) + _linear_macs(mlp.fc2))
    if isinstance(model, M3ViT):
        macs += patch_embed.num_patches * _linear_macs(model.heads[task_id])
    else:
        macs += _linear_macs(model.head)
    return macs


def count_params(model_or_config: nn.Module | ModelConfig | str | Path) -> int:
    """Number of parameters (all experts and all task gates/heads included)."""
    if isinstance(model_or_config, nn.Module):
        model = model_or_config
    else:
        model = _structure(model_or_config)
    return sum(param.numel() for param in model.parameters())
