"""Simulated (object, CDP) pairs through a registered calibrated model: shape, scale rule and shot-noise level."""

import math

import numpy as np
import pytest
import torch

from calibration.simulated_pairs import PairSource
from hil.bench.reconstruct import detector_pixels_per_camera_pixel
from hil.benchmarks.calibration_fixture import hidden_camera_to_model
from hil.common.provenance import REPO_ROOT
from hil.data.datasets import DataSpec
from hil.physics.bench_model import BenchModel
from hil.physics.optics import phase_to_field
from hil.physics.registration import Registration
from hil.physics.system import load_system

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source() -> PairSource:
    """The fixture system (16 x 16 masks on 4 x 4 macro-pixels) on the default fixture bench's 48 x 40 camera."""
    system = load_system(REPO_ROOT / "configs" / "system_fixture.yaml")
    matrix = hidden_camera_to_model(REPO_ROOT / "configs" / "bench_fixture.yaml")
    model = BenchModel(system, Registration(matrix, system.geometry().detector_shape, (40, 48), math.nan))
    mask = np.random.default_rng(0).uniform(0, 2 * math.pi, (16, 16))
    spec = DataSpec(sources=("cells", "phase_screen"), n=16)
    return PairSource(model, model.operator(mask), spec, (20.0, 80.0), frames=2, read_noise_photons=0.0)


def test_pairs_are_reproducible_on_the_camera_pixels_within_the_photon_range(source):
    pairs = source.pairs("train", 6, seed=3)
    assert pairs.y.shape == (6, 1, 40, 48) and pairs.phase_rad.shape == (6, 16, 16)
    assert bool(((pairs.photons >= 20) & (pairs.photons <= 80)).all())
    assert torch.equal(pairs.y, source.pairs("train", 6, seed=3).y)
    assert not torch.equal(pairs.y, source.pairs("train", 6, seed=4).y)


def test_frames_carry_the_shot_noise_of_their_photon_level(source):
    """Relative residual against the clean prediction (scaled on the seen pixels) equals the Poisson closed form
    ``sqrt(sum r / sum r²)`` of the photon rates ``r`` within 10 % (12 frames)."""
    pairs = source.pairs("train", 12, seed=0)
    with torch.no_grad():
        clean = source.op.A(phase_to_field(pairs.phase_rad.double(), None))[:, 0]
    seen = source.op.detector.forward(torch.ones(source.op.geometry.detector_shape, dtype=torch.float64)) > 0
    area = detector_pixels_per_camera_pixel(source.model)
    measured, expected = [], []
    for y, c, photons in zip(pairs.y[:, 0].double(), clean, pairs.photons.double(), strict=True):
        rate = c * photons * area / c.mean()
        scale = float((y[seen] * c[seen]).sum() / c[seen].square().sum())
        measured.append(float((y[seen] - scale * c[seen]).norm() / (scale * c[seen]).norm()))
        expected.append(float(rate[seen].sum().sqrt() / rate[seen].norm()))
    assert np.mean(measured) == pytest.approx(np.mean(expected), rel=0.1)
    assert np.mean(expected) > 0.05  # the noise is large enough to be measured at these levels


def test_bad_photon_ranges_are_refused(source):
    with pytest.raises(ValueError, match="photons_min"):
        PairSource(source.model, source.op, source.spec, (0.0, 10.0))
