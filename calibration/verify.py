"""A capture of a deployed mask against the calibrated model's prediction, on camera pixels (``hil deploy --verify``).

The prediction is the bench's calibrated model itself (:class:`~hil.physics.bench_model.BenchModel`: the
measured SLM response, the SLM-plane field, the registered camera integrating each pixel's footprint) for
the mask with nothing in the beam, ``model.operator(mask).A(ones)``. Nothing is resampled from the camera
(a speckle frame near Nyquist cannot be interpolated; the band-limited model can). The same comparison for
masks that were not deployed gives the chance level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from hil.physics.bench_model import BenchModel


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


def predict_frame(model: BenchModel, mask_rad: np.ndarray) -> np.ndarray:
    """The calibrated model's camera frame ``model.camera_shape`` of ``mask_rad`` ``(n, n)`` with no sample
    (model units)."""
    n = model.system.optics.n
    with torch.no_grad():
        return model.operator(mask_rad).A(torch.ones((1, n, n), dtype=torch.complex128))[0, 0].numpy()


def verify_mask(
    model: BenchModel, mask_rad: np.ndarray, frame: np.ndarray, controls: int = 4, background_masks: int = 8
) -> dict[str, float]:
    """Agreement of a sample-free ``frame`` with the deployed mask's prediction and, as ``chance``, the largest
    with ``controls`` masks not deployed; all freed of the pattern every mask shares (mean of random masks)."""
    if tuple(np.shape(frame)) != tuple(model.camera_shape):
        raise ValueError(
            f"camera frames {np.shape(frame)} (height, width) are not what the calibrated model predicts "
            f"{tuple(model.camera_shape)}: name the camera registration (hil calibrate geometry) in the bench "
            "config's calibration section or pass --registration"
        )
    rng = np.random.default_rng(0)
    random_masks = [rng.uniform(0, 2 * np.pi, np.shape(mask_rad)) for _ in range(background_masks + controls)]
    shared = np.mean([predict_frame(model, m) for m in random_masks[:background_masks]], axis=0)
    measured = agreement(frame, predict_frame(model, mask_rad), shared)
    chance = max(
        abs(agreement(frame, predict_frame(model, m), shared).correlation) for m in random_masks[background_masks:]
    )
    return {**measured.to_dict(), "chance": chance}
