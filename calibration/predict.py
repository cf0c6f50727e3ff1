"""The calibrated model's prediction of a camera frame, on camera pixels, and its comparison with a capture.

The realised SLM field of a mask (the system's SLM model: gray levels through the measured
``gamma`` when there is one, macro-pixels, crosstalk; unit illumination, no sample) is propagated
to the Fourier plane on a grid ``oversample`` times finer than the model's detector, and each
camera pixel integrates that intensity over its footprint (``footprint x footprint`` sub-samples
mapped through the registration, bilinear interpolation between the fine far-field samples).
Nothing is resampled from the camera: a speckle frame near Nyquist cannot be interpolated, the
band-limited model can.

Used by ``hil deploy --verify`` (the capture of the deployed mask against this prediction).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from hil.physics.optics import centred_fft2
from hil.physics.registration import Registration
from hil.physics.slm import SLMModel
from hil.physics.system import SystemConfig


def predict_camera(
    system: SystemConfig, mask_rad: np.ndarray, registration: Registration, oversample: int = 4, footprint: int = 3
) -> np.ndarray:
    """Predicted intensity ``registration.camera_shape`` of ``mask_rad`` ``(n, n)`` (model units x model-pixel area)."""
    geometry = system.geometry()
    realised = SLMModel(system.slm)(torch.from_numpy(np.asarray(mask_rad, dtype=np.float64))[None])[0]
    side = geometry.field_shape[0] * oversample
    field = torch.zeros((side, side), dtype=torch.complex128)
    roi = realised.shape[0]
    start = side // 2 - roi // 2
    field[start : start + roi, start : start + roi] = torch.polar(torch.ones_like(realised), realised)
    far = (centred_fft2(field).abs().square() * oversample**2).numpy()
    height_d, width_d = geometry.detector_shape
    rows, cols = np.indices(registration.camera_shape, dtype=np.float64)
    offsets = (np.arange(footprint) + 0.5) / footprint - 0.5
    total = np.zeros(registration.camera_shape)
    for dy in offsets:
        for dx in offsets:
            points = np.stack([(cols + dx).ravel(), (rows + dy).ravel(), np.ones(cols.size)])
            x, y = registration.camera_to_model @ points
            fine = [side // 2 + oversample * (y - height_d // 2), side // 2 + oversample * (x - width_d // 2)]
            total += map_coordinates(far, fine, order=1, mode="constant").reshape(registration.camera_shape)
    area = abs(float(np.linalg.det(registration.camera_to_model[:, :2])))
    return total / footprint**2 * area


@dataclass(frozen=True)
class Agreement:
    """A capture against a prediction: Pearson correlation and the relative RMS residual of the best
    linear fit ``capture ≈ scale · prediction + offset`` (+ ``weight · background`` when one is given)."""

    correlation: float
    residual_rel: float
    scale: float
    offset: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def agreement(capture: np.ndarray, prediction: np.ndarray, background: np.ndarray | None = None) -> Agreement:
    """Compare a dark-subtracted capture with a prediction of the same shape (height, width).

    ``background``: a pattern every mask shares (e.g. the mean prediction of random masks: the
    macro-pixel envelope, the zero order). Both images are first freed of it (least squares), so
    the correlation is that of the mask-specific speckle (a partial correlation).
    """
    y, p = np.asarray(capture, dtype=np.float64).ravel(), np.asarray(prediction, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"capture {np.shape(capture)} and prediction {np.shape(prediction)} differ in shape")
    shared = [np.ones_like(p)] + ([] if background is None else [np.asarray(background, dtype=np.float64).ravel()])
    nuisance = np.stack(shared, axis=1)
    y_free = y - nuisance @ np.linalg.lstsq(nuisance, y, rcond=None)[0]
    p_free = p - nuisance @ np.linalg.lstsq(nuisance, p, rcond=None)[0]
    design = np.stack([p, *shared], axis=1)
    coefficients = np.linalg.lstsq(design, y, rcond=None)[0]
    residual = y - design @ coefficients
    spread = float(np.sqrt(np.mean((y - y.mean()) ** 2)))
    norm = float(np.linalg.norm(y_free) * np.linalg.norm(p_free))
    correlation = float(y_free @ p_free) / norm if norm > 0 else 0.0
    residual_rel = float(np.sqrt(np.mean(residual**2))) / max(spread, 1e-300)
    return Agreement(correlation, residual_rel, float(coefficients[0]), float(coefficients[1]))


def identity_registration(system: SystemConfig) -> Registration:
    """The registration of a camera that sits on the model's detector grid."""
    shape = system.geometry().detector_shape
    return Registration(np.array([[1.0, 0, 0], [0, 1.0, 0]]), shape, shape, math.nan)
