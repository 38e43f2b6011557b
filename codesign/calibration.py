"""Where calibration images come from: real data when there is some, random only when said.

Formats are chosen from the largest magnitudes seen while calibrating, so images unlike
the real inputs give formats that saturate or waste bits on real data. ``resolve`` turns
what the user gave (``--calib`` / ``calib=``) into images and a description that the
build prints and writes into the report:

- nothing: the model's own dataset when its config names one (``dataset: digits``),
  else ``DEFAULT_RANDOM`` seeded Gaussian images, flagged as random;
- a count ``N``: N seeded Gaussian images (flagged);
- ``digits``: scikit-learn's digits (training split), for 1-channel square models;
- a ``.npy`` file: an array [N, C, H, W] (or [N, H, W] for one channel), used as is;
- a folder of images (PNG/JPEG/BMP): resized to the model's input, scaled to [0, 1] and
  normalised with ImageNet's mean and std for 3 channels (timm's default) or
  (x - 0.5) / 0.5 for one channel; preprocess into an .npy for anything else;
- an array: used as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_RANDOM = 4
DATASET_IMAGES = 64  # images taken from a model's dataset when the user names no count
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Calibration:
    images: np.ndarray  # [N, C, H, W] float64
    kind: str  # "random", "dataset", "npy", "folder", "array"
    description: str

    @property
    def random(self) -> bool:
        return self.kind == "random"

    def to_report(self) -> dict:
        return {
            "source": self.kind,
            "description": self.description,
            "images": len(self.images),
            "random": self.random,
        }


def _random(count: int, shape, seed: int) -> Calibration:
    if count < 1:
        raise ValueError(f"need at least one calibration image, got {count}")
    images = np.random.default_rng(seed).standard_normal((int(count), *shape))
    return Calibration(
        images,
        "random",
        f"{count} random Gaussian image(s): formats may not fit real inputs "
        "(give real images with --calib DIR|FILE.npy)",
    )


def _dataset(name: str, shape, count: int, seed: int) -> Calibration:
    if name != "digits":
        raise ValueError(f"unknown calibration dataset {name!r} (known: digits)")
    chans, height, width = shape
    if chans != 1 or height != width:
        raise ValueError(f"the digits dataset is 1-channel and square; the model takes {shape}")
    from .datasets import load_digits

    data = load_digits(size=height).train.take(count, seed=seed)
    images = data.images.astype(np.float64)
    return Calibration(images, "dataset", f"{len(images)} images of scikit-learn's digits")


def _check(images: np.ndarray, shape, source: str) -> np.ndarray:
    if images.ndim == 3 and shape[0] == 1:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1:] != tuple(shape) or len(images) == 0:
        raise ValueError(
            f"{source}: images have shape {images.shape}, expected (N, *{tuple(shape)})"
        )
    bad = int(np.count_nonzero(~np.isfinite(images)))
    if bad:
        raise ValueError(f"{source}: {bad} pixel values are NaN or infinite")
    return images


def _load_npy(path: Path, shape) -> Calibration:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a numpy .npy array ({exc})") from None
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: holds {array.dtype}, not numbers")
    images = _check(np.asarray(array, np.float64), shape, str(path))
    return Calibration(images, "npy", f"{len(images)} image(s) from {path.name}")


def _load_folder(folder: Path, shape, count: int | None) -> Calibration:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if count is not None:
        files = files[:count]
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    chans, height, width = shape
    if chans not in (1, 3):
        raise ValueError(f"{folder}: images load as 1 or 3 channels; the model takes {chans}")
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if chans == 1 else "RGB")
                image = image.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, np.float64) / 255.0
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{path}: cannot read as an image ({exc})") from None
        if chans == 1:
            images.append(((pixels - 0.5) / 0.5)[None])
        else:
            mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
            images.append(((pixels - mean) / std).transpose(2, 0, 1))
    norm = "(x-0.5)/0.5" if chans == 1 else "ImageNet mean/std"
    return Calibration(
        np.stack(images), "folder", f"{len(images)} image(s) from {folder.name}/ ({norm})"
    )


def load_images(path: str | Path, shape) -> Calibration:
    """Images of ``shape`` (C, H, W) from an .npy file or a folder of images, read as
    ``--calib`` reads them (the build's ``--images`` evaluates on such files too)."""
    shape, path = tuple(int(s) for s in shape), Path(path)
    if path.is_dir():
        return _load_folder(path, shape, None)
    if path.is_file():
        return _load_npy(path, shape)
    raise ValueError(f"{path}: neither an .npy file nor a folder of images")


def resolve(spec, shape, *, dataset: str | None = None, seed: int = 0) -> Calibration:
    """Calibration images of ``shape`` (C, H, W) for what the user gave (see module doc)."""
    shape = tuple(int(s) for s in shape)
    if spec is None:
        if dataset:
            return _dataset(dataset, shape, DATASET_IMAGES, seed)
        return _random(DEFAULT_RANDOM, shape, seed)
    if isinstance(spec, bool):
        raise ValueError(f"calib must be a count, a path or images, got {spec!r}")
    if isinstance(spec, (int, np.integer)):
        return _random(int(spec), shape, seed)
    if isinstance(spec, str) and spec.strip().isdigit():
        return _random(int(spec), shape, seed)
    if isinstance(spec, str) and spec in ("digits",):
        return _dataset(spec, shape, DATASET_IMAGES, seed)
    if isinstance(spec, (str, Path)):
        if Path(spec).exists():
            return load_images(spec, shape)
        raise ValueError(
            f"--calib {spec}: not a count, 'digits', an .npy file or a folder of images"
        )
    images = _check(np.asarray(spec, np.float64), shape, "calib")
    return Calibration(images, "array", f"{len(images)} image(s) given by the caller")
