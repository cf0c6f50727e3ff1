"""A registered camera inside the operator: footprint integration against an exact continuous-field computation."""

import math

import numpy as np
import pytest
import torch

from hil.common.metrics import phase_psnr
from hil.physics.detector import RegisteredCamera
from hil.physics.optics import CDPGeometry, phase_to_field
from hil.physics.registration import Registration
from hil.solvers import solve

N_OBJ = 8


def _registration(model_side: int, camera_side: int, scale: float, angle_deg: float, shift=(0.7, -0.4)):
    """camera (x, y) -> model (x, y): rotate and scale about the centres, then shift (model bins)."""
    a = math.radians(angle_deg)
    linear = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre_c = np.full(2, (camera_side - 1) / 2)
    centre_m = np.full(2, model_side // 2)
    offset = centre_m + np.asarray(shift) - linear @ centre_c
    matrix = np.concatenate([linear, offset[:, None]], axis=1)
    return Registration(matrix, (model_side, model_side), (camera_side, camera_side), 1.0)


def _exact_camera(u_slm: np.ndarray, registration: Registration, pad: int, points: int = 12) -> np.ndarray:
    """Camera pixels by integrating |continuous Fraunhofer field|² over each footprint (dense midpoint rule).

    Written without the model: a direct DFT sum at arbitrary frequencies (zero frequency at index side//2 of
    the pad*n model grid, centred spatial coordinates), not an FFT or an interpolation.
    """
    side = pad * u_slm.shape[0]
    u = np.zeros((side, side), dtype=complex)
    start = (side - u_slm.shape[0]) // 2
    u[start : start + u_slm.shape[0], start : start + u_slm.shape[0]] = u_slm
    coords = np.arange(side) - side // 2
    hc, wc = registration.camera_shape
    sub = (np.arange(points) + 0.5) / points - 0.5
    cy, cx, sy, sx = np.meshgrid(np.arange(hc), np.arange(wc), sub, sub, indexing="ij")
    mx, my = registration.camera_to_model @ np.stack([(cx + sx).ravel(), (cy + sy).ravel(), np.ones(cx.size)])
    fx, fy = mx - side // 2, my - side // 2  # in model bins = cycles per padded grid
    kx = np.exp(-2j * np.pi * np.outer(fx, coords) / side) / np.sqrt(side)
    ky = np.exp(-2j * np.pi * np.outer(fy, coords) / side) / np.sqrt(side)
    field = np.einsum("pr,rp->p", ky, u @ kx.T)
    area = abs(np.linalg.det(registration.camera_to_model[:, :2])) / points**2
    return (np.abs(field) ** 2 * area).reshape(hc, wc, points * points).sum(axis=-1)


def _case(seed: int = 0):
    rng = np.random.default_rng(seed)
    mask = rng.uniform(0, 2 * np.pi, (N_OBJ, N_OBJ))
    phase = rng.uniform(0, np.pi, (N_OBJ, N_OBJ))
    return mask, phase


@pytest.mark.parametrize("model_pad", [2, 4, 8])
def test_registered_camera_predicts_an_exact_footprint_integral(model_pad):
    """A camera rotated 5°, 0.8 model bins per pixel, shifted: the operator's prediction on camera pixels.

    Compared away from the window's edge (light beyond the model's detector window is not modelled).
    """
    mask, phase = _case()
    registration = _registration(2 * N_OBJ, 18, 0.8, 5.0)
    exact = _exact_camera(np.exp(1j * (mask + phase)), registration, pad=2)
    geometry = CDPGeometry(N_OBJ, pad_factor=model_pad)
    camera = RegisteredCamera(registration, geometry.detector_shape, supersample=4)
    op = geometry.operator(torch.from_numpy(mask)[None], detector=camera)
    predicted = op.A(phase_to_field(torch.from_numpy(phase))[None])[0, 0].numpy()
    inner = (slice(2, -2), slice(2, -2))
    error = np.linalg.norm(predicted[inner] - exact[inner]) / np.linalg.norm(exact[inner])
    # the bilinear density between bins converges as the model grid gets finer (second order)
    assert error < {2: 0.2, 4: 0.06, 8: 0.02}[model_pad]


def test_registered_camera_is_linear_with_its_adjoint_and_conserves_uniform_light():
    registration = _registration(16, 22, 0.8, 5.0)
    camera = RegisteredCamera(registration, (32, 32), supersample=3)
    g = torch.Generator().manual_seed(0)
    a = torch.rand((2, 32, 32), generator=g, dtype=torch.float64)
    b = torch.rand((2, 22, 22), generator=g, dtype=torch.float64)
    assert torch.sum(camera.forward(a) * b) == pytest.approx(float(torch.sum(a * camera.adjoint(b))), rel=1e-12)
    uniform = camera.forward(torch.ones((32, 32), dtype=torch.float64))
    # each camera pixel covers 0.8² model bins = 4 x 0.64 bins of the finer grid
    assert float(uniform[5:17, 5:17].min()) == pytest.approx(4 * 0.64, rel=1e-9)


def test_bad_registration_is_refused():
    bad = Registration(np.array([[1.0, 0, 0], [0, math.nan, 0]]), (16, 16), (16, 16), 1.0)
    with pytest.raises(ValueError, match="finite, invertible"):
        RegisteredCamera(bad, (16, 16))


def test_raar_on_camera_pixels_recovers_the_phase_that_resampling_loses():
    """Consistency on camera pixels (registration and footprint inside the operator, model pad 8) against RAAR
    on the same frame resampled onto the model grid (bilinear warpAffine), noiseless, camera rotated 3°."""
    n = 16
    g = torch.Generator().manual_seed(2)
    mask = torch.rand((1, n, n), generator=g, dtype=torch.float64) * 2 * math.pi
    phase = (torch.rand((1, n, n), generator=g, dtype=torch.float64) * 4).round() / 4 * math.pi
    registration = _registration(2 * n, 32, 0.9, 3.0)
    frame = _exact_camera(np.exp(1j * (mask[0] + phase[0]).numpy()), registration, pad=2)
    geometry = CDPGeometry(n, pad_factor=8)
    op = geometry.operator(mask, detector=RegisteredCamera(registration, geometry.detector_shape))
    camera_space = phase_psnr(
        torch.angle(solve("raar", op, torch.from_numpy(frame)[None, None], iterations=300)), phase
    )
    resampled = torch.from_numpy(registration.resample(frame))[None, None] / 0.9**2
    model_grid = phase_psnr(torch.angle(solve("raar", CDPGeometry(n).operator(mask), resampled, iterations=300)), phase)
    assert float(camera_space) > 45
    assert float(model_grid) < 20
