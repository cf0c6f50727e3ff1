"""Camera-to-model registration: a rotated, scaled, shifted camera is registered back to the model grid."""

import math

import numpy as np
import pytest
from test_calibration_setup import small_bench

from calibration.geometry import measure_geometry, model_cdp, register
from hil.bench.bench import Bench
from hil.bench.config import load_bench
from hil.bench.frame_log import FrameLog
from hil.physics.registration import load_registration


def _render(system, mask_rad: np.ndarray, camera_to_model: np.ndarray, camera_shape: tuple[int, int]) -> np.ndarray:
    """Exact far-field intensity at each camera pixel (a DFT at the non-integer model coordinates)."""
    geometry = system.geometry()
    side, big = geometry.slm_shape[0], geometry.field_shape[0]
    height_d, width_d = geometry.detector_shape
    rows, cols = np.indices((side, side)) + (big - side) // 2 - big // 2
    field = np.exp(1j * mask_rad)  # 8-bit SLM, macro_pixel 1: the quantisation is below the test's tolerance
    cam_rows, cam_cols = np.indices(camera_shape)
    x, y = camera_to_model @ np.stack([cam_cols.ravel(), cam_rows.ravel(), np.ones(cam_rows.size)])
    fx, fy = x - width_d // 2, y - height_d // 2
    phase = -2j * math.pi * (np.outer(fy, rows.ravel()) + np.outer(fx, cols.ravel())) / big
    return (np.abs(np.exp(phase) @ field.ravel()) ** 2 / big**2).reshape(camera_shape)


def _affine(scale: float, rotation_deg: float, camera_centre, model_centre, shift) -> np.ndarray:
    t = math.radians(rotation_deg)
    a = scale * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    b = np.asarray(model_centre) + np.asarray(shift) - a @ np.asarray(camera_centre)
    return np.hstack([a, b[:, None]])


def test_synthetic_camera_is_registered_back(tmp_path):
    system = load_bench(small_bench(tmp_path, n=16)).system
    mask = np.random.default_rng(3).uniform(0, 2 * math.pi, (16, 16))
    model = model_cdp(system, mask)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_allclose(_render(system, mask, identity, model.shape), model, rtol=0, atol=2e-2 * model.max())
    truth = _affine(0.4, 3.0, (47.5, 47.5), (15.5, 15.5), (0.7, -0.4))
    frame = 1000 * _render(system, mask, truth, (96, 96))
    registration = register(frame, model)
    np.testing.assert_allclose(registration.camera_to_model[:, :2], truth[:, :2], atol=2e-3)
    np.testing.assert_allclose(registration.camera_to_model[:, 2], truth[:, 2], atol=0.1)
    p = registration.parameters()
    assert p["rotation_deg"] == pytest.approx(3.0, abs=0.1) and p["scale_x"] == pytest.approx(0.4, rel=5e-3)
    assert registration.correlation > 0.99
    assert np.corrcoef(registration.resample(frame).ravel(), model.ravel())[0, 1] > 0.99
    loaded = load_registration(registration.save(tmp_path / "reg.json"))
    np.testing.assert_allclose(loaded.camera_to_model, registration.camera_to_model)
    with pytest.raises(ValueError, match=r"registered for \(96, 96\)"):
        loaded.resample(np.zeros((32, 32)))


def test_simulated_bench_camera_sits_on_the_model_grid(tmp_path):
    with Bench.from_config(small_bench(tmp_path, n=16)) as bench, FrameLog(tmp_path / "g.h5", "geometry", {}) as log:
        result = measure_geometry(bench, log, frames=2, dark_frames=2)
    np.testing.assert_allclose(result.registration.camera_to_model, [[1, 0, 0], [0, 1, 0]], atol=0.02)
    assert result.residual_model_px < 0.05


def test_wrong_mask_is_rejected(tmp_path):
    system = load_bench(small_bench(tmp_path, n=16)).system
    rng = np.random.default_rng(5)
    model = model_cdp(system, rng.uniform(0, 2 * math.pi, (16, 16)))
    other = model_cdp(system, rng.uniform(0, 2 * math.pi, (16, 16)))
    with pytest.raises(ValueError, match="correlates|did not converge"):
        register(other, model)
