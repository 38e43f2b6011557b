"""Block importance and per-layer distortion curves from one calibration pass.

No labels are needed. The loss on a calibration image is the model's cross-entropy
against its own prediction (argmax pseudo-labels, per token for dense multi-class
heads); a one-channel regression head (M3ViT depth) gets a Gaussian likelihood
around its own output with a sampled target, i.e. a Monte-Carlo Fisher sample.

For every prunable weight matrix W the pass collects, per calibration image n, the
weight gradient G_n (from the layer's input and output gradient, so one batched
backward gives all per-sample gradients) and reduces it immediately to

- ``grad``: the mean gradient g = mean_n G_n (for Taylor scores |w·g|),
- ``per_sample[n, b] = Σ_{i∈b} G_n[i] · w[i]``: the loss change, to first order, of
  sample n when block b is removed (kept for at most ``fisher_samples`` images).

Removing a set P of blocks (Δw = −w on P) changes the loss by about

    ΔL(P) ≈ −Σ_{b∈P} mean_n s[n, b]  +  ½ mean_n (Σ_{b∈P} s[n, b])²

where the second term is ½ Δwᵀ F Δw with the empirical Fisher F = mean_n G_n G_nᵀ,
exact for that F (cross terms between blocks included). A layer's distortion
curve is |first| + second for the k lowest-scoring blocks, k = 0 .. blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .targets import PrunableLayer, PruneError


@dataclass
class LayerScores:
    taylor: np.ndarray  # [go, gi] mean over the block of |w * g|
    magnitude: np.ndarray  # [go, gi] mean over the block of |w|
    first: np.ndarray  # [blocks] mean_n s[n, b]
    per_sample: np.ndarray  # [fisher_samples, blocks] s[n, b]

    def prune_order(self) -> np.ndarray:
        """Block indices (flattened row-major) from least to most important (stable)."""
        return np.argsort(self.taylor.reshape(-1), kind="stable")

    def distortion_curve(self, order: np.ndarray | None = None) -> np.ndarray:
        """[blocks + 1] estimated loss change when the first k blocks of ``order`` go."""
        order = self.prune_order() if order is None else order
        first = np.abs(np.concatenate([[0.0], np.cumsum(self.first[order])]))
        if self.per_sample.shape[0]:
            cumulative = np.cumsum(self.per_sample[:, order].astype(np.float64), axis=1)
            second = 0.5 * np.concatenate([[0.0], (cumulative**2).mean(axis=0)])
        else:
            second = np.zeros_like(first)
        return first + second


def magnitude_scores(layer: PrunableLayer) -> np.ndarray:
    """[go, gi] mean |w| per block (the baseline's importance)."""
    values = layer.block_view(layer.matrix().detach().abs().double())
    return values.mean(dim=(1, 3)).numpy()


def model_tasks(model: nn.Module) -> int:
    return int(getattr(model, "num_tasks", 1)) if hasattr(model, "heads") else 1


def forward_task(model: nn.Module, images: torch.Tensor, task: int) -> torch.Tensor:
    return model(images, task) if hasattr(model, "heads") else model(images)


def label_free_loss(output: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Sum over the batch of each image's loss against the model's own prediction."""
    if output.dim() == 2:  # classification logits [B, C]
        output = output[:, None, :]
    batch, tokens, channels = output.shape
    if channels >= 2:
        pseudo = output.detach().argmax(dim=-1)
        loss = F.cross_entropy(output.reshape(-1, channels), pseudo.reshape(-1), reduction="none")
        return loss.reshape(batch, tokens).mean(dim=1).sum()
    sigma = output.detach().std().clamp_min(1e-6)
    noise = torch.randn(output.shape, generator=generator, dtype=output.dtype)
    target = output.detach() + sigma * noise
    per_image = 0.5 * ((output - target) ** 2).mean(dim=(1, 2)) / sigma**2
    return per_image.sum()


class _Collector:
    """Forward/grad hooks turning each layer's (input, output grad) into block sums."""

    def __init__(self, layers: list[PrunableLayer]):
        self.layers = layers
        self.by_module = {id(layer.module): layer for layer in layers}
        self.grad = {layer.name: torch.zeros(layer.out_dim, layer.in_dim) for layer in layers}
        self.batch_sums: dict[str, torch.Tensor] = {}
        self.handles = [layer.module.register_forward_hook(self._forward) for layer in layers]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _forward(self, module, inputs, output) -> None:
        if not output.requires_grad:
            return
        layer = self.by_module[id(module)]
        x = inputs[0].detach()
        if isinstance(module, nn.Conv2d):  # patches [B, L, C*kh*kw] in weight order
            x = F.unfold(x, module.kernel_size, stride=module.stride).transpose(1, 2)
        elif x.dim() == 2:
            x = x[:, None, :]
        output.register_hook(lambda grad, layer=layer, x=x: self._backward(layer, x, grad))

    def _backward(self, layer: PrunableLayer, x: torch.Tensor, grad: torch.Tensor) -> None:
        if grad.dim() == 4:  # conv output [B, dim, gh, gw] -> [B, L, dim]
            grad = grad.flatten(2).transpose(1, 2)
        elif grad.dim() == 2:
            grad = grad[:, None, :]
        per_sample = torch.einsum("bto,bti->boi", grad.float(), x.float())
        self.grad[layer.name] += per_sample.sum(dim=0)
        weight = layer.matrix().detach().float()
        go, gi = layer.grid
        bh, bw = layer.block
        sums = (per_sample * weight).reshape(len(x), go, bh, gi, bw).sum(dim=(2, 4))
        sums = sums.reshape(len(x), -1).double()
        if layer.name in self.batch_sums:
            self.batch_sums[layer.name] += sums
        else:
            self.batch_sums[layer.name] = sums


def calibrate(
    model: nn.Module,
    layers: list[PrunableLayer],
    images: np.ndarray,
    *,
    batch_size: int = 32,
    fisher_samples: int = 512,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, LayerScores]:
    """One pass over the calibration images; returns each layer's scores."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise PruneError(
            f"the calibration set is empty or not [N, C, H, W] (got shape {images.shape}); "
            "give at least one calibration image"
        )
    generator = torch.Generator().manual_seed(seed)
    collector = _Collector(layers)
    first_sum = {layer.name: torch.zeros(layer.blocks, dtype=torch.float64) for layer in layers}
    kept: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
    stored = 0
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    for layer in layers:
        layer.module.weight.requires_grad_(True)
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        job = bar.add_task("calibrating", total=len(images))
    try:
        x_all = torch.as_tensor(images)
        for start in range(0, len(x_all), batch_size):
            batch = x_all[start : start + batch_size]
            collector.batch_sums = {}
            for task in range(model_tasks(model)):
                loss = label_free_loss(forward_task(model, batch, task), generator)
                loss.backward()
            take = min(len(batch), max(0, fisher_samples - stored))
            for layer in layers:
                sums = collector.batch_sums[layer.name]
                first_sum[layer.name] += sums.sum(dim=0)
                if take:
                    kept[layer.name].append(sums[:take].float())
            stored += take
            if bar:
                bar.update(job, advance=len(batch))
    finally:
        collector.close()
        if bar:
            bar.stop()
        for p, flag in zip(params, flags, strict=True):
            p.grad = None
            p.requires_grad_(flag)
        model.train(was_training)
    count = len(images)
    scores = {}
    for layer in layers:
        weight = layer.matrix().detach().double()
        grad = collector.grad[layer.name].double() / count
        taylor = layer.block_view((weight * grad).abs()).mean(dim=(1, 3)).numpy()
        per_sample = (
            torch.cat(kept[layer.name]).numpy()
            if kept[layer.name]
            else np.zeros((0, layer.blocks), np.float32)
        )
        scores[layer.name] = LayerScores(
            taylor=taylor,
            magnitude=magnitude_scores(layer),
            first=(first_sum[layer.name] / count).numpy(),
            per_sample=per_sample,
        )
    return scores


def output_distortion(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image distortion of an output against the dense model's, in the units of
    ``label_free_loss``: KL(dense ‖ pruned) for classes, ½·Δ²/σ² for one channel."""
    if output.dim() == 2:
        output, reference = output[:, None, :], reference[:, None, :]
    if output.shape[-1] >= 2:
        log_p = F.log_softmax(output, dim=-1)
        log_q = F.log_softmax(reference, dim=-1)
        return (log_q.exp() * (log_q - log_p)).sum(dim=-1).mean(dim=1)
    sigma = reference.std().clamp_min(1e-6)
    return 0.5 * ((output - reference) ** 2).mean(dim=(1, 2)) / sigma**2


@torch.no_grad()
def measure_distortion(
    model: nn.Module,
    layers: list[PrunableLayer],
    orders: dict[str, np.ndarray],
    levels: dict[str, list[int]],
    images: np.ndarray,
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Mean output distortion when only layer l loses its first k blocks (of ``orders``),
    for each k in ``levels[l]``: one forward pass over ``images`` per (layer, k)."""
    was_training = model.training
    model.eval()
    x_all = torch.as_tensor(np.asarray(images, np.float32))
    batches = [x_all[start : start + batch_size] for start in range(0, len(x_all), batch_size)]
    tasks = model_tasks(model)
    references = [[forward_task(model, b, t) for t in range(tasks)] for b in batches]
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        job = bar.add_task("measuring", total=sum(len(v) for v in levels.values()))
    out = {}
    try:
        for layer in layers:
            weight = layer.matrix()
            saved = weight.clone()
            values = []
            for pruned in levels[layer.name]:
                keep = np.ones(layer.blocks, bool)
                keep[orders[layer.name][:pruned]] = False
                mask = torch.as_tensor(keep.reshape(layer.grid))
                mask = mask.repeat_interleave(layer.block[0], 0)
                mask = mask.repeat_interleave(layer.block[1], 1)
                weight.mul_(mask.to(weight.dtype))
                total = 0.0
                for batch, refs in zip(batches, references, strict=True):
                    for task, ref in enumerate(refs):
                        out_task = forward_task(model, batch, task)
                        total += float(output_distortion(out_task, ref).sum())
                values.append(total / len(x_all))
                weight.copy_(saved)
                if bar:
                    bar.update(job, advance=1)
            out[layer.name] = np.array(values, np.float64)
    finally:
        if bar:
            bar.stop()
        model.train(was_training)
    return out


def shaped_curve(taylor: np.ndarray, levels: list[int], measured: np.ndarray) -> np.ndarray:
    """The Taylor curve rescaled piecewise so it passes through the measured samples.

    Between consecutive samples (k_a, k_b) — starting from (0, 0) — the curve follows the
    Taylor estimate's shape: D(k) = D_a + (D_b − D_a)·(T(k) − T(k_a))/(T(k_b) − T(k_a)),
    linear in k where the Taylor curve is flat. Beyond the last sample it keeps the last
    measured value plus the Taylor increase.
    """
    taylor = np.maximum.accumulate(np.asarray(taylor, np.float64))
    points = [0, *levels]
    values = np.maximum.accumulate(np.concatenate([[0.0], measured]))
    curve = np.empty_like(taylor)
    for (k_a, k_b), (d_a, d_b) in zip(pairwise(points), pairwise(values), strict=True):
        ks = np.arange(k_a, k_b + 1)
        rise = taylor[k_b] - taylor[k_a]
        linear = (ks - k_a) / max(1, k_b - k_a)
        share = (taylor[ks] - taylor[k_a]) / rise if rise > 0 else linear
        curve[ks] = d_a + (d_b - d_a) * share
    last = points[-1]
    curve[last:] = values[-1] + taylor[last:] - taylor[last]
    return curve


__all__ = [
    "LayerScores",
    "calibrate",
    "forward_task",
    "label_free_loss",
    "magnitude_scores",
    "measure_distortion",
    "model_tasks",
    "output_distortion",
    "shaped_curve",
]
