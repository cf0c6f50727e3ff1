"""Camera-to-model registration: the affine map from camera pixels to the model's detector grid.

A known mask is shown with the sample removed; the model's CDP of that mask (the shared
operator through the system's SLM model, unit object) is the template. OpenCV's
``findTransformECC`` (``MOTION_AFFINE``, coarse-to-fine) finds the warp that maps model pixels
onto camera pixels, starting from the moments of both images (centroid and size), and
``warpAffine`` resamples any later frame onto the model grid. Intensities are compared as
``log1p(I / mean I)`` so the bright zero order does not dominate the fit.

Pixel coordinates are (x, y) = (column, row), pixel centres at integers, as OpenCV uses them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from hil.bench.bench import Bench
from hil.bench.frame_log import FrameLog
from hil.physics.registration import Registration
from hil.physics.slm import SLMModel
from hil.physics.system import SystemConfig

ECC_PASSES = ((7, 200), (1, 200))  # (gaussFiltSize, iterations): coarse then fine
MIN_CORRELATION = 0.8  # a sample left in the beam gave 0.70-0.73 with a wrong map; a Gaussian beam 0.86


def model_cdp(system: SystemConfig, mask_rad: np.ndarray) -> np.ndarray:
    """The model's CDP ``(Hd, Wd)`` of ``mask_rad`` ``(n, n)`` for a unit object, float64, model units."""
    slm = SLMModel(system.slm)
    masks = slm.transmittance(torch.from_numpy(np.asarray(mask_rad, dtype=np.float64))[None])
    op = system.geometry().operator(masks)
    n = system.optics.n
    return op.A(torch.ones((1, n, n), dtype=torch.complex128))[0, 0].numpy()


def _features(image: np.ndarray) -> np.ndarray:
    image = np.clip(np.asarray(image, dtype=np.float64), 0, None)
    return np.log1p(image / max(float(image.mean()), 1e-12)).astype(np.float32)


def _moments_warp(model: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Initial model->camera warp ``(2, 3)``: match intensity centroids and RMS radii."""

    def centre_radius(image: np.ndarray) -> tuple[np.ndarray, float]:
        weights = np.clip(image, 0, None)
        rows, cols = np.indices(image.shape)
        total = weights.sum()
        centre = np.array([(weights * cols).sum() / total, (weights * rows).sum() / total])
        radius = math.sqrt((weights * ((cols - centre[0]) ** 2 + (rows - centre[1]) ** 2)).sum() / total)
        return centre, radius

    (c_model, r_model), (c_frame, r_frame) = centre_radius(model), centre_radius(frame)
    scale = r_frame / r_model
    return np.array([[scale, 0, c_frame[0] - scale * c_model[0]], [0, scale, c_frame[1] - scale * c_model[1]]])


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def register(frame: np.ndarray, model: np.ndarray, initial_model_to_camera: np.ndarray | None = None) -> Registration:
    """Affine registration of a dark-subtracted camera ``frame`` to the ``model`` CDP (both (height, width)).

    Raises ``ValueError`` when ECC does not converge or the registered frame correlates with
    the model below :data:`MIN_CORRELATION` (wrong mask, sample in the beam, camera not in focus).
    """
    frame = np.asarray(frame, dtype=np.float64)
    model = np.asarray(model, dtype=np.float64)
    warp = (_moments_warp(model, frame) if initial_model_to_camera is None else initial_model_to_camera).astype(
        np.float32
    )
    template, image = _features(model), _features(frame)
    for blur, iterations in ECC_PASSES:
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-7)
        try:
            _, warp = cv2.findTransformECC(template, image, warp, cv2.MOTION_AFFINE, criteria, None, blur)
        except cv2.error as exc:
            raise ValueError(f"camera-to-model registration did not converge: {exc.err}") from None
    camera_to_model = cv2.invertAffineTransform(warp.astype(np.float64))
    registration = Registration(camera_to_model, model.shape, frame.shape, 0.0)
    correlation = _correlation(registration.resample(frame), model)
    if not correlation >= MIN_CORRELATION:
        raise ValueError(
            f"registered frame correlates {correlation:.3f} with the model CDP (< {MIN_CORRELATION}): check that "
            "the sample is out of the beam, the mask is the one shown, and the camera sees the Fourier plane"
        )
    return Registration(camera_to_model, model.shape, frame.shape, correlation)


def measure_geometry(
    bench: Bench, log: FrameLog, mask_rad: np.ndarray, frames: int = 4, dark_frames: int = 4
) -> Registration:
    """Show ``mask_rad`` (sample out of the beam), record dark and lit frames into ``log``, register."""
    if frames < 1 or dark_frames < 0:
        raise ValueError(f"need frames >= 1 and dark_frames >= 0, got {frames}, {dark_frames}")
    bench.show_mask(mask_rad)
    bench.light_off()
    dark = [log.add("dark", bench.capture()) for _ in range(dark_frames)]
    with bench.lit():
        lit = [log.add("lit", bench.capture()) for _ in range(frames)]
    frame = np.mean(lit, axis=0) - (np.mean(dark, axis=0) if dark else 0.0)
    registration = register(frame, model_cdp(bench.spec.system, mask_rad))
    log.set_result(registration.to_dict())
    return registration
