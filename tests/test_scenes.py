"""Digit scenes and the M3ViT trained on them (the quantisation study's trained m3vit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codesign import train
from codesign.datasets import SCENE_DEPTH_STEP, SCENE_EMPTY, load_digit_scenes
from codesign.models import create_model


def test_scenes_are_reproducible_and_labelled_per_patch():
    data = load_digit_scenes((32, 64), 16, train_scenes=12, test_scenes=4, seed=0)
    assert data.train.images.shape == (12, 3, 32, 64)
    assert data.train.labels.shape == (12, 8, 2)
    classes, depth = data.train.labels[..., 0], data.train.labels[..., 1]
    assert classes.min() >= 0 and classes.max() <= SCENE_EMPTY
    grid_row = np.arange(8) // 4  # a 2 x 4 grid, row-major
    digit = np.where(classes == SCENE_EMPTY, 0, classes)
    np.testing.assert_array_equal(depth, SCENE_DEPTH_STEP * grid_row + digit)
    # normalised by the training scenes' own statistics
    assert abs(float(data.train.images.mean())) < 1e-3
    assert abs(float(data.train.images.std()) - 1) < 1e-3
    again = load_digit_scenes((32, 64), 16, train_scenes=12, test_scenes=4, seed=0)
    np.testing.assert_array_equal(again.test.images, data.test.images)
    # the test scenes do not depend on how many training scenes were drawn
    more = load_digit_scenes((32, 64), 16, train_scenes=20, test_scenes=4, seed=0)
    np.testing.assert_array_equal(more.test.labels, data.test.labels)
    other = load_digit_scenes((32, 64), 16, train_scenes=12, test_scenes=4, seed=1)
    assert not np.array_equal(other.train.labels, data.train.labels)


def test_an_empty_cell_is_background_only():
    data = load_digit_scenes((32, 64), 16, train_scenes=32, test_scenes=1, seed=0)
    raw = data.train.images * data.std + data.mean
    cells = raw.reshape(32, 3, 2, 16, 4, 16).transpose(0, 2, 4, 1, 3, 5).reshape(32, 8, -1)
    empty = data.train.labels[..., 0] == SCENE_EMPTY
    assert empty.any() and (~empty).any()
    # background uniform(0, 0.3) plus noise: an empty cell's spread is the noise's (0.1)
    assert float(cells[empty].std(axis=-1).max()) < 0.13
    assert float(cells[~empty].std(axis=-1).mean()) > 0.2


def test_scenes_reject_a_size_the_patch_does_not_divide():
    with pytest.raises(ValueError, match="not a multiple of the patch"):
        load_digit_scenes((40, 64), 16, train_scenes=1, test_scenes=1)


def test_m3vit_tiny_learns_the_scenes():
    torch.set_num_threads(1)
    # the tiny model learns depth in a few epochs only with it weighted up (scale 10)
    model, data = train.train_m3vit_scenes(
        "m3vit-tiny", epochs=4, scenes=512, lr=2e-3, depth_scale=10.0
    )
    with torch.no_grad():
        x = torch.as_tensor(data.test.images)
        outputs = [model(x, task).numpy() for task in (0, 1)]
    metrics = train.scene_metrics(*outputs, data.test.labels, depth_scale=10.0)
    # chance is about 1 in 11 classes; depth: better than the labels' mean
    assert metrics["patch_accuracy"] > 0.5, metrics
    depth_spread = float(data.test.labels[..., 1].std())
    assert metrics["depth_rms"] < 0.75 * depth_spread, (metrics, depth_spread)


def test_scene_training_needs_an_m3vit():
    with pytest.raises(ValueError, match="needs an m3vit"):
        train.train_m3vit_scenes("digits-vit", epochs=1, scenes=1)


def test_scene_checkpoint_is_trained_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE", str(tmp_path))
    path, data = train.scene_checkpoint("m3vit-tiny", epochs=1, scenes=16)
    assert path.exists() and path.parent.parent == tmp_path
    assert not list(path.parent.glob("*.tmp"))
    state = torch.load(path)
    assert all(value.dtype == torch.float16 for value in state.values())

    def no_training(*args, **kwargs):
        raise AssertionError("the cached checkpoint should have been used")

    monkeypatch.setattr(train, "train_m3vit_scenes", no_training)
    again, again_data = train.scene_checkpoint("m3vit-tiny", epochs=1, scenes=16)
    assert again == path
    np.testing.assert_array_equal(again_data.test.images, data.test.images)
    model = create_model("m3vit-tiny", weights=path)
    assert torch.equal(model.heads[0].weight, state["heads.0.weight"].float())
