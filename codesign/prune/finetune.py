"""Short fine-tuning of a pruned model by distillation from the dense one, masks fixed.

Loss per batch: T²·KL(teacher ‖ student) on temperature-T softened outputs, plus
cross-entropy on labels when there are any (weighted 1 − kd_weight). For M3ViT
each task contributes: per-token KL for multi-class heads, MSE for one-channel
heads. After every optimiser step the pruned blocks are zeroed again, so they stay
exactly zero and the compiler still skips them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ..train import fit
from .core import PruneResult
from .scores import forward_task, model_tasks
from .targets import find_prunable


def distillation_term(student: torch.Tensor, teacher: torch.Tensor, temperature: float):
    if student.shape[-1] == 1:
        return F.mse_loss(student, teacher)
    channels = student.shape[-1]
    log_p = F.log_softmax(student.reshape(-1, channels) / temperature, dim=-1)
    q = F.softmax(teacher.reshape(-1, channels) / temperature, dim=-1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature**2


def finetune(
    student: nn.Module,
    teacher: nn.Module,
    result: PruneResult,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    epochs: int = 10,
    lr: float = 5e-4,
    batch_size: int = 64,
    temperature: float = 2.0,
    kd_weight: float = 0.7,
    max_shift: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Fine-tune ``student`` in place; returns the loss per epoch."""
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"kd_weight must be in [0, 1], got {kd_weight}")
    teacher.eval()  # read under no_grad only; its parameters are left as they are
    for param in student.parameters():
        param.requires_grad_(True)
    layers, _ = find_prunable(student, result.block)
    tasks = model_tasks(student)

    def loss_fn(model: nn.Module, batch: torch.Tensor, target: torch.Tensor | None):
        total = batch.new_zeros(())
        for task in range(tasks):
            out = forward_task(model, batch, task)
            with torch.no_grad():
                ref = forward_task(teacher, batch, task)
            kd = distillation_term(out, ref, temperature)
            if target is not None and out.dim() == 2:
                ce = F.cross_entropy(out, target)
                total = total + kd_weight * kd + (1 - kd_weight) * ce
            else:
                total = total + kd
        return total

    return fit(
        student,
        images,
        labels,
        loss_fn,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=0.0,
        max_shift=max_shift,
        seed=seed,
        after_step=lambda _model: result.apply(layers),
        progress=progress,
        description="fine-tune",
    )


__all__ = ["distillation_term", "finetune"]
