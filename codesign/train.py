"""Training loops for the models the project trains itself (the digits ViT; m3vit on
digit scenes, for the quantisation study) and for fine-tuning pruned models; seeded so
a checkpoint can be reproduced.

``fit`` is one loop for both: it takes a loss function, so plain supervised training
(cross-entropy) and distillation from a dense teacher share the schedule (AdamW,
linear warm-up, cosine decay), the augmentation and the ``after_step`` hook that
pruning uses to keep pruned blocks at exactly zero.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]


def shift_images(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in x and y, zero (background) fill.

    The inputs are normalised, so the background value is the smallest pixel value of
    the batch rather than 0.
    """
    if max_shift <= 0:
        return images
    batch, _, height, width = images.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (batch, 2), generator=generator)
    background = images.amin()
    pad = max_shift
    padded = F.pad(images, (pad, pad, pad, pad), value=float(background))
    out = torch.empty_like(images)
    for index in range(batch):
        top = pad + int(shifts[index, 0])
        left = pad + int(shifts[index, 1])
        out[index] = padded[index, :, top : top + height, left : left + width]
    return out


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError("cross-entropy training needs labels")
        return F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)

    return loss


def fit(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray | None,
    loss_fn: LossFn,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.05,
    warmup_fraction: float = 0.05,
    max_shift: int = 0,
    seed: int = 0,
    after_step: Callable[[nn.Module], None] | None = None,
    progress: bool = False,
    description: str = "train",
) -> list[float]:
    """Train ``model`` in place; returns the mean loss of each epoch.

    Deterministic for a given seed (data order, augmentation and dropout-free models),
    on the same torch build and thread count.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(images) == 0:
        raise ValueError("cannot train on an empty set of images")
    x_all = torch.as_tensor(np.asarray(images, np.float32))
    y_all = None if labels is None else torch.as_tensor(np.asarray(labels, np.int64))
    generator = torch.Generator().manual_seed(seed)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 and "pos_embed" not in name else no_decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=lr,
    )
    steps_per_epoch = math.ceil(len(x_all) / batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, int(total * warmup_fraction))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    history = []
    bar_context = nullcontext(None)
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar_context = Progress(
            TextColumn(f"[bold]{description:<12}"),
            BarColumn(),
            TextColumn("epoch {task.completed}/{task.total}"),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
        )
    model.train()
    with bar_context as bar:
        job = bar.add_task(description, total=epochs, loss="") if bar else None
        for _epoch in range(epochs):
            order = torch.randperm(len(x_all), generator=generator)
            losses = []
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                batch = shift_images(x_all[index], max_shift, generator)
                target = None if y_all is None else y_all[index]
                loss = loss_fn(model, batch, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if after_step is not None:
                    after_step(model)
                losses.append(float(loss.detach()))
            history.append(float(np.mean(losses)))
            if bar:
                bar.update(job, advance=1, loss=f"loss {history[-1]:.4f}")
    model.eval()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    x_all = torch.as_tensor(np.asarray(images, np.float32))
    outs = [model(x_all[start : start + batch_size]) for start in range(0, len(x_all), batch_size)]
    return torch.cat(outs).numpy()


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of a classifier in torch float."""
    if len(images) == 0:
        raise ValueError("cannot evaluate on an empty set")
    return float((predict_logits(model, images).argmax(axis=1) == np.asarray(labels)).mean())


def train_digits_vit(
    epochs: int = 100,
    seed: int = 0,
    lr: float = 1e-3,
    batch_size: int = 64,
    max_shift: int = 1,
    progress: bool = False,
):
    """Train the registered ``digits-vit`` on the digits training split.

    Returns (model, dataset, history). The model is rounded to float16 and back so the
    accuracy measured here is that of the stored float16 checkpoint.
    """
    from .datasets import load_digits
    from .models import create_model, get_config

    config = get_config("digits-vit")
    data = load_digits(size=config.image_size[0])
    torch.manual_seed(seed)
    model = create_model(config, seed=seed, weights="random")  # not the shipped checkpoint
    fit(
        model,
        data.train.images,
        data.train.labels,
        cross_entropy_loss(label_smoothing=0.1),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        max_shift=max_shift,
        seed=seed,
        progress=progress,
        description="digits-vit",
    )
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.half().float())
    return model, data


# a depth label d (datasets.load_digit_scenes) is regressed as d / depth_scale - 1; at 40
# m3vit learns both tasks in 3 epochs (at 10 its depth did not converge: RMS 20.9 labels)
SCENE_DEPTH_SCALE = 40.0
# the scenes' and the scene loss's definition: part of a cached checkpoint's key
SCENES_VERSION = 1


def scene_loss(depth_scale: float = SCENE_DEPTH_SCALE) -> LossFn:
    """Both tasks of an M3ViT on digit scenes (``datasets.load_digit_scenes``): cross-entropy
    on each patch's class (task 0) plus the squared error of its depth (task 1)."""

    def loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError("scene training needs labels")
        semseg = model(images, 0)
        depth = model(images, 1)[..., 0]
        target = labels[..., 1].float() / depth_scale - 1
        classes = F.cross_entropy(semseg.flatten(0, 1), labels[..., 0].flatten())
        return classes + F.mse_loss(depth, target)

    return loss


def scene_metrics(
    semseg: np.ndarray,
    depth: np.ndarray,
    labels: np.ndarray,
    depth_scale: float = SCENE_DEPTH_SCALE,
) -> dict:
    """Patch accuracy of the semantic task and RMS error (in depth-label units) of the
    dense one, from outputs [N, patches, classes] and [N, patches, 1]."""
    error = (depth[..., 0] + 1) * depth_scale - labels[..., 1]
    return {
        "patch_accuracy": float((semseg.argmax(-1) == labels[..., 0]).mean()),
        "depth_rms": float(np.sqrt((error**2).mean())),
    }


def _scenes_for(config, scenes: int, seed: int):
    """The digit scenes an M3ViT config is trained and measured on (its input size and
    patch), refusing a model that is not an m3vit or does not take 3 channels."""
    from .datasets import load_digit_scenes

    if config.family != "m3vit":
        raise ValueError(f"{config.name} is a {config.family} model; scene training needs an m3vit")
    if config.in_chans != 3:
        raise ValueError(f"{config.name} takes {config.in_chans} channels; the scenes have 3")
    return load_digit_scenes(
        tuple(config.image_size), config.patch_size, train_scenes=scenes, seed=seed
    )


def train_m3vit_scenes(
    name: str = "m3vit",
    epochs: int = 3,
    scenes: int = 1536,
    seed: int = 0,
    lr: float = 1e-3,
    batch_size: int = 16,
    depth_scale: float = SCENE_DEPTH_SCALE,
    progress: bool = False,
):
    """Train a registered M3ViT-family model on digit scenes of its input size.

    Returns (model, dataset); the model is rounded to float16 and back, like the digits
    ViT, so what is measured is what a float16 checkpoint holds.
    """
    from .models import create_model, get_config

    config = get_config(name)
    data = _scenes_for(config, scenes, seed)
    torch.manual_seed(seed)
    model = create_model(config, seed=seed, weights="random")
    fit(
        model,
        data.train.images,
        data.train.labels,
        scene_loss(depth_scale),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        description=name,
    )
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.half().float())
    return model, data


def scene_checkpoint(
    name: str = "m3vit",
    epochs: int = 3,
    scenes: int = 1536,
    seed: int = 0,
    lr: float = 1e-3,
    progress: bool = False,
):
    """The float16 state dict of ``train_m3vit_scenes`` with these settings: trained once
    (minutes on a CPU; too large to ship in the repository) and kept in the cache,
    keyed by the settings and the torch version. Returns (path, dataset)."""
    from .models import get_config
    from .util import cache_dir, cache_key

    settings = {
        "name": name, "epochs": epochs, "scenes": scenes, "seed": seed, "lr": lr,
        "version": SCENES_VERSION, "depth_scale": SCENE_DEPTH_SCALE,
    }  # fmt: skip
    path = cache_dir() / "trained" / f"{name}-scenes-{cache_key(settings, torch.__version__)}.pt"
    if path.exists():
        return path, _scenes_for(get_config(name), scenes, seed)
    model, data = train_m3vit_scenes(
        name, epochs=epochs, scenes=scenes, seed=seed, lr=lr, progress=progress
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({key: value.half() for key, value in model.state_dict().items()}, partial)
    partial.replace(path)  # never a half-written checkpoint under the final name
    return path, data


__all__ = [
    "accuracy",
    "cross_entropy_loss",
    "fit",
    "predict_logits",
    "scene_checkpoint",
    "scene_loss",
    "scene_metrics",
    "shift_images",
    "train_digits_vit",
    "train_m3vit_scenes",
]
