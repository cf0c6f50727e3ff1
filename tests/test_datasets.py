"""Data: deterministic, split-disjoint, in range, with clear errors for bad sources."""

import math

import numpy as np
import pytest
import torch

from hil.data.datasets import (
    DataSpec,
    PhaseObjectDataset,
    _test_plan,
    batch,
    distinct_test_images,
    sources_of_test_items,
)
from hil.data.objects import SYNTHETIC_KINDS


@pytest.mark.parametrize("source", ["skimage", "lfw", *SYNTHETIC_KINDS])
def test_items_are_deterministic_and_in_range(source):
    spec = DataSpec(sources=(source,), n=32, phi_max_rad=2.0)
    a, _ = batch(spec, "train", 3, seed=5)
    b, _ = batch(spec, "train", 3, seed=5)
    assert torch.equal(a, b)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 2.0 + 1e-6 and a.std() > 0.05
    c, _ = batch(spec, "train", 3, seed=6)
    assert not torch.equal(a, c)


def test_splits_use_disjoint_images():
    spec = DataSpec(sources=("skimage",), n=16)
    train = PhaseObjectDataset(spec, "train", 1)._indices["skimage"]
    test = PhaseObjectDataset(spec, "test", 1)._indices["skimage"]
    assert len(train) > len(test) > 0 and not set(train) & set(test)


def test_amplitude_contrast():
    spec = DataSpec(sources=("cells",), n=16, amplitude_contrast=0.4, phi_max_rad=math.pi)
    _, amp = batch(spec, "val", 2)
    assert amp.min() >= 0.6 - 1e-6 and amp.max() <= 1.0 and amp.std() > 0.01


def test_folder_and_npz_sources(tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), (np.random.default_rng(i).random((40, 50)) * 255).astype(np.uint8))
    phase, _ = batch(DataSpec(sources=(f"folder:{tmp_path}",), n=16), "train", 2)
    assert phase.shape == (2, 16, 16)
    np.savez(tmp_path / "maps.npz", stack=np.random.default_rng(0).random((5, 20, 20)))
    phase, _ = batch(DataSpec(sources=(f"npz:{tmp_path / 'maps.npz'}:stack",), n=16), "test", 2)
    assert phase.shape == (2, 16, 16)


def test_bad_sources_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PhaseObjectDataset(DataSpec(sources=(f"folder:{tmp_path / 'nope'}",)), "train", 1)
    with pytest.raises(ValueError, match="no image files"):
        PhaseObjectDataset(DataSpec(sources=(f"folder:{tmp_path}",)), "train", 1)
    with pytest.raises(ValueError, match="unknown data source 'mnist'"):
        PhaseObjectDataset(DataSpec(sources=("mnist",)), "train", 1)
    with pytest.raises(ValueError, match="split must be one of"):
        PhaseObjectDataset(DataSpec(), "training", 1)


def test_an_empty_split_is_an_error_not_a_fallback(tmp_path):
    # 2 maps: indices 0 and 1 hash to train and test, so the validation split is empty
    np.savez(tmp_path / "two.npz", stack=np.random.default_rng(0).random((2, 20, 20)))
    spec = DataSpec(sources=(f"npz:{tmp_path / 'two.npz'}",), n=16)
    assert len(PhaseObjectDataset(spec, "test", 1)._indices[spec.sources[0]]) == 1
    with pytest.raises(ValueError, match="has no image in split 'val'"):
        PhaseObjectDataset(spec, "val", 1)


def test_test_items_come_from_test_images_only():
    # LFW faces (25 x 25) are resized whole, so a test item equals the resized stored image it came from
    spec = DataSpec(sources=("lfw",), n=32, augment=False)
    test, _ = batch(spec, "test", 8)
    train = PhaseObjectDataset(spec, "train", 1)
    stored_train, _ = batch(spec, "train", 64)
    assert not set(train._indices["lfw"]) & set(PhaseObjectDataset(spec, "test", 1)._indices["lfw"])
    distance = (test[:, None] - stored_train[None]).abs().amax(dim=(-2, -1))
    assert float(distance.min()) > 0.05  # no test face is a training face
    assert len({tuple(t.flatten()[:50].tolist()) for t in test}) == 8  # the test split walks distinct images


def test_test_plan_shows_every_stored_image_once_before_repeating():
    # finite sources a (2 test images) and b (3) take turns with a synthetic source s; a sits out
    # after its 2 images until b has shown its 3, then the next round starts
    plan = _test_plan(("a", "b", "s"), {"a": 2, "b": 3}, 12)
    assert plan == [
        ("a", 0), ("b", 0), ("s", 0), ("a", 1), ("b", 1), ("s", 1), ("b", 2), ("s", 2),
        ("a", 2), ("b", 3), ("s", 3), ("a", 3),
    ]  # fmt: skip
    # one finite source: plain turns, its images cycling (the classical benchmark's sets)
    assert _test_plan(("a", "s"), {"a": 2}, 6) == [("a", 0), ("s", 0), ("a", 1), ("s", 1), ("a", 2), ("s", 2)]


def test_distinct_test_images_counts_stored_images_per_source():
    spec = DataSpec(sources=("skimage", "lfw", "cells"), n=16)
    counts = distinct_test_images(spec, 64)
    assert counts["skimage"] == len(PhaseObjectDataset(spec, "test", 1)._indices["skimage"]) == 4
    assert counts["lfw"] == counts["cells"] == 30  # skimage sits out after its 4 while LFW has unshown faces


def test_training_configs_test_set_carries_64_distinct_held_out_images():
    from hil.learning.train_config import load_train_config

    configs = [load_train_config(f"configs/train_{role}.yaml") for role in ("teacher", "student")]
    specs = [c.data_spec(c.system_config()) for c in configs]
    assert specs[0] == specs[1]  # the teacher trains on the student's split: KD leaks no test image
    spec = specs[0]
    test = PhaseObjectDataset(spec, "test", 64)
    shown = {(source, int(test._indices[source][k])) for source, k in test._plan}
    assert len(shown) == 64 and len({source for source, _ in shown}) == 2
    sources = sources_of_test_items(spec, 64)  # what the benchmark reports each item's kind as
    assert sources == tuple(source for source, _ in test._plan) and sources.count("skimage") == 6
    held_in = {(s, int(i)) for split in ("train", "val") for s, i in _stored_pairs(spec, split)}
    assert not shown & held_in


def _stored_pairs(spec: DataSpec, split: str) -> list[tuple[str, int]]:
    ds = PhaseObjectDataset(spec, split, 1)
    return [(s, int(i)) for s, idx in ds._indices.items() for i in idx]


def test_split_fractions_are_checked():
    with pytest.raises(ValueError, match="split_fractions"):
        DataSpec(split_fractions=(0.8, 0.3, 0.1))
