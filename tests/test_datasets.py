"""Data: deterministic, split-disjoint, in range, with clear errors for bad sources."""

import math

import numpy as np
import pytest
import torch

from hil.data.datasets import DataSpec, PhaseObjectDataset, batch
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
