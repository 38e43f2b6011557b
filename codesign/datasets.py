"""Small real datasets that ship inside packages, for training and pruning studies.

The machines have no network, so anything the project trains on must come from a
package: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes) is that
set. Images are upscaled (a ViT with a few 4x4 patches learns them better than
2x2 patches of the raw 8x8), normalised with the training split's statistics, and
split reproducibly by a seed, stratified per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIGITS_CLASSES = 10
DIGITS_RAW_SIZE = 8
DIGITS_MAX = 16.0  # pixel values are integers 0..16


@dataclass(frozen=True)
class Split:
    """Images [N, C, H, W] float32 and integer labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, count: int, seed: int = 0) -> Split:
        """A seeded random subset of ``count`` samples (all of them if count >= len)."""
        if count < 1:
            raise ValueError(f"need at least one sample, got {count}")
        if count >= len(self):
            return self
        order = np.random.default_rng(seed).permutation(len(self))[:count]
        return Split(self.images[order], self.labels[order])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    mean: float  # normalisation applied to the raw [0, 1] pixels
    std: float
    classes: int


def _upscale(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of [N, H, W] to [N, size, size] (align_corners=False, like torch)."""
    _, height, width = images.shape
    if size == height == width:
        return images.astype(np.float32)

    def axis(out: int, inp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(out) + 0.5) * inp / out - 0.5
        pos = np.clip(pos, 0, inp - 1)
        low = np.floor(pos).astype(int)
        high = np.minimum(low + 1, inp - 1)
        return low, high, (pos - low).astype(np.float32)

    y0, y1, fy = axis(size, height)
    x0, x1, fx = axis(size, width)
    rows = images[:, y0, :] * (1 - fy)[None, :, None] + images[:, y1, :] * fy[None, :, None]
    return (rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx).astype(np.float32)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int):
    """Indices (train, test): each class split in the same proportion, seeded."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * test_fraction)
        test.extend(members[:cut])
        train.extend(members[cut:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def load_digits(size: int = 16, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's digits as [N, 1, size, size] float32, normalised, split by ``seed``."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the digits dataset needs scikit-learn: pip install scikit-learn"
        ) from exc
    if size < DIGITS_RAW_SIZE:
        raise ValueError(f"digits are {DIGITS_RAW_SIZE}x{DIGITS_RAW_SIZE}; size {size} is smaller")
    bunch = sklearn_digits()
    pixels = _upscale(bunch.images.astype(np.float32) / DIGITS_MAX, size)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    mean = float(pixels[train_idx].mean())
    std = float(pixels[train_idx].std())
    images = ((pixels - mean) / std)[:, None].astype(np.float32)
    return Dataset(
        name=f"digits{size}",
        train=Split(images[train_idx], labels[train_idx]),
        test=Split(images[test_idx], labels[test_idx]),
        mean=mean,
        std=std,
        classes=DIGITS_CLASSES,
    )


SCENE_EMPTY = DIGITS_CLASSES  # the semseg class of a cell without a digit
SCENE_DEPTH_STEP = 10  # depth label: SCENE_DEPTH_STEP * grid row + the cell's digit


def load_digit_scenes(
    image_size: tuple[int, int] = (128, 256),
    patch_size: int = 16,
    train_scenes: int = 1536,
    test_scenes: int = 64,
    seed: int = 0,
) -> Dataset:
    """Dense multi-task scenes built from scikit-learn's digits, for M3ViT-shaped models.

    A scene is a grid of patch-sized cells, each empty or holding one digit (upscaled to
    the patch) drawn in a random colour on a noisy background. Labels are per patch,
    [N, patches, 2] int64: the cell's class (its digit, or ``SCENE_EMPTY``) for the
    semantic task, and a depth for the dense regression task that grows with the cell's
    grid row and its digit (``SCENE_DEPTH_STEP * row + digit``, 0 for an empty cell): a
    ramp with objects on it, as a depth map is. Train scenes take digits from the
    digits' training split and test scenes from its test split.
    Why: the m3vit we ship has random weights, whose near-tie decisions say little about
    what quantisation does to a trained network; these scenes let one be trained in
    minutes on a CPU.
    """
    height, width = image_size
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the patch {patch_size}")
    digits = load_digits(size=patch_size, seed=seed)
    raw = {
        "train": (digits.train.images[:, 0] * digits.std + digits.mean, digits.train.labels),
        "test": (digits.test.images[:, 0] * digits.std + digits.mean, digits.test.labels),
    }
    rows, cols = height // patch_size, width // patch_size
    depth_rows = SCENE_DEPTH_STEP * np.arange(rows)[:, None]  # farther down, deeper

    def scenes(split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
        pixels, classes = raw[split]
        rng = np.random.default_rng([seed, split == "test"])  # a split's scenes its own
        images = np.empty((count, 3, height, width), np.float32)
        labels = np.empty((count, rows * cols, 2), np.int64)
        for index in range(count):
            picks = rng.integers(0, len(classes), size=(rows, cols))
            empty = rng.random((rows, cols)) < 0.15
            cell_class = np.where(empty, SCENE_EMPTY, classes[picks])
            colour = rng.uniform(0.4, 1.0, size=(rows, cols, 3)).astype(np.float32)
            ink = np.where(empty[..., None, None], 0.0, pixels[picks])  # [rows, cols, p, p]
            ink = ink.transpose(0, 2, 1, 3).reshape(height, width)
            tint = np.repeat(np.repeat(colour, patch_size, 0), patch_size, 1).transpose(2, 0, 1)
            background = rng.uniform(0.0, 0.3)
            noise = rng.normal(0.0, 0.1, size=(3, height, width))
            images[index] = background + ink[None] * tint + noise
            labels[index, :, 0] = cell_class.ravel()
            labels[index, :, 1] = (depth_rows + np.where(empty, 0, cell_class)).ravel()
        return images, labels

    train_images, train_labels = scenes("train", train_scenes)
    test_images, test_labels = scenes("test", test_scenes)
    mean, std = float(train_images.mean()), float(train_images.std())
    return Dataset(
        name=f"digit-scenes{height}x{width}",
        train=Split((train_images - mean) / std, train_labels),
        test=Split((test_images - mean) / std, test_labels),
        mean=mean,
        std=std,
        classes=DIGITS_CLASSES + 1,
    )


__all__ = ["Dataset", "Split", "load_digit_scenes", "load_digits", "stratified_split"]
