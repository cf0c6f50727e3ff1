"""SLM phase response by two-region interference recovers the simulated SLM's hidden stroke, model-free."""

import math

import numpy as np
import pytest
from test_calibration_setup import small_bench

from calibration.slm_response import measure_slm_response, phase_steps, response_from_steps
from hil.bench.bench import Bench
from hil.bench.frame_log import FrameLog
from hil.physics.slm import SLMSpec


def test_reduced_stroke_is_measured_at_every_level(tmp_path):
    cfg = small_bench(tmp_path, n=16, bitdepth=4, slm={"phase_range_rad": 0.8 * 2 * math.pi})
    with Bench.from_config(cfg) as bench, FrameLog(tmp_path / "s.h5", "slm-response", {}) as log:
        result = measure_slm_response(bench, log)
        truth = np.asarray(bench.slm.slm.gamma_sim)
        assert (bench.slm.slm.display == 15).all()  # blanked afterwards (phase 0 is the top level)
    np.testing.assert_allclose(result.gamma, truth, atol=3e-3)  # units of 2π
    assert result.phase_range_rad == pytest.approx(0.8 * 2 * math.pi, rel=5e-3)
    assert result.modulation_snr > 30 and result.ellipse_residual < 0.01
    spec = SLMSpec(bitdepth=4, gamma=tuple(result.system_keys()["gamma"]))
    realised = np.mod(-2 * math.pi * truth, 2 * math.pi)
    error = np.angle(np.exp(1j * (spec.level_phases() - realised)))
    assert np.abs(error).max() < 0.02  # radians


def test_sparse_levels_are_interpolated_on_an_8_bit_slm(tmp_path):
    cfg = small_bench(tmp_path, n=16, bitdepth=8, slm={"phase_range_rad": 0.9 * 2 * math.pi}, read_noise_e=2.0)
    with Bench.from_config(cfg) as bench, FrameLog(tmp_path / "s.h5", "slm-response", {}) as log:
        result = measure_slm_response(bench, log, levels=list(range(0, 256, 15)), frames=2)
        truth = np.asarray(bench.slm.slm.gamma_sim)
    assert len(result.gamma) == 256 and result.measured_levels[-1] == 255
    np.testing.assert_allclose(result.gamma, truth, atol=5e-3)


def test_phase_steps_from_frames_of_unknown_optics():
    rng = np.random.default_rng(2)
    a, b, c = rng.uniform(50, 100, 300), rng.normal(0, 20, 300), rng.normal(0, 20, 300)  # any optics, any camera
    truth = np.linspace(0, 0.85 * 2 * math.pi, 20) ** 1.1 / (0.85 * 2 * math.pi) ** 0.1
    frames = a + np.outer(np.cos(truth), b) + np.outer(np.sin(truth), c)
    steps, snr, ellipse, rank = phase_steps(frames.reshape(20, 15, 20))
    relative = np.unwrap(steps - steps[0])
    relative = relative if relative[-1] > 0 else -relative  # the sign is arbitrary
    np.testing.assert_allclose(relative, truth - truth[0], atol=1e-9)
    assert ellipse < 1e-9 and rank < 1e-9
    noisy = frames + rng.normal(0, 0.5, frames.shape)
    steps = phase_steps(noisy)[0]
    relative = np.unwrap(steps - steps[0])
    relative = relative if relative[-1] > 0 else -relative
    np.testing.assert_allclose(relative, truth - truth[0], atol=0.01)
    with pytest.raises(ValueError, match="at least 6 gray levels"):
        phase_steps(frames[:5])


def test_unwrapping():
    levels = np.arange(0, 16, 3)
    steps = np.angle(np.exp(-1j * 2 * math.pi * 0.07 * levels))  # wrapped, gamma_sign -1: gamma = 0.07 g
    np.testing.assert_allclose(response_from_steps(steps, levels, 16, 0), 0.07 * np.arange(16), atol=1e-12)
