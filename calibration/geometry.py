"""Camera-to-model registration: the affine map from camera pixels to the model's detector grid.

The bench procedure (:func:`measure_geometry`) registers on a **spot grid**: blazed gratings of
known spatial frequency send the light to known points of the model's detector grid (the grating
equation; a Gaussian beam, an iris or a static aberration change the shape of a spot, not where
it lands). On the camera each spot's centre is the thresholded centroid around the peak of the
frame minus the flat grating's frame (so light left in the zero order is not taken for a spot),
and a least-squares affine maps camera centres onto model centres. Its rms residual (model
pixels) is reported and gates the result: a spot taken from the wrong order, clipping or too
little light shows up there. Frames are refused when saturated, when the dark frames hold the
lit pattern, or when a spot does not stand out of the noise.

:func:`register` is the template alternative: OpenCV's ``findTransformECC`` (``MOTION_AFFINE``,
coarse-to-fine) between a frame and a model CDP of the same mask, for benches whose model
template already includes the illumination (a uniform beam); intensities are compared as
``log1p(I / mean I)`` so the bright zero order does not dominate the fit.

Pixel coordinates are (x, y) = (column, row), pixel centres at integers, as OpenCV uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from calibration.frame_checks import camera_ceiling_adu, refuse_lit_dark, refuse_saturated
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


SPOT_WINDOW_PX = 4  # half-width of the window around a spot's peak (camera pixels)
SPOT_THRESHOLD = 0.1  # fraction of a spot's peak (above the local background) left out of its centroid
SPOT_MIN_SIGMAS = 20.0  # a spot's peak must exceed the dark noise by this factor
MAX_RESIDUAL_MODEL_PX = 0.2  # rms of the affine fit over the spots, model pixels


def spot_masks(n: int, cycles: int) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Blazed gratings ``(n, n)`` radians with (x, y) cycles per mask in {-cycles, 0, cycles}²."""
    rows, cols = np.indices((n, n))
    out = []
    for v in (-cycles, 0, cycles):
        for u in (-cycles, 0, cycles):
            out.append(((u, v), np.mod(2 * math.pi * (u * cols + v * rows) / n, 2 * math.pi)))
    return out


def spot_centre(image: np.ndarray, radius: int = SPOT_WINDOW_PX) -> tuple[np.ndarray, float]:
    """(x, y) centre of the brightest spot in ``image`` (thresholded centroid, re-centred twice) and its
    peak height above the local background (the window border's median)."""
    image = np.asarray(image, dtype=np.float64)
    row, col = np.unravel_index(int(np.argmax(image)), image.shape)
    centre = np.array([col, row], dtype=np.float64)
    height = 0.0
    for _ in range(3):
        c0, r0 = int(round(centre[0])), int(round(centre[1]))
        top, left = max(r0 - radius, 0), max(c0 - radius, 0)
        window = image[top : r0 + radius + 1, left : c0 + radius + 1]
        border = np.concatenate([window[0], window[-1], window[1:-1, 0], window[1:-1, -1]])
        background = float(np.median(border))
        height = float(window.max()) - background
        weights = np.clip(window - background - SPOT_THRESHOLD * height, 0, None)
        rows, cols = np.indices(window.shape)
        centre = np.array([(weights * (cols + left)).sum(), (weights * (rows + top)).sum()]) / weights.sum()
    return centre, height


def model_spot(system: SystemConfig, u: int, v: int, model: np.ndarray) -> np.ndarray:
    """Model-grid (x, y) of the first order of a grating with (u, v) cycles per mask: the grating
    equation, zero frequency at (W // 2, H // 2), ``pad_factor`` detector pixels per cycle; raises
    if the model's own CDP ``model`` of that grating does not peak there (a convention mismatch)."""
    height, width = model.shape
    pad = system.optics.pad_factor
    x, y = width // 2 + pad * u, height // 2 + pad * v
    peak_row, peak_col = np.unravel_index(int(np.argmax(model)), model.shape)
    if (peak_col, peak_row) != (x, y):
        raise ValueError(f"the model's CDP of grating ({u}, {v}) peaks at {(peak_col, peak_row)}, not at {(x, y)}")
    return np.array([x, y], dtype=np.float64)


def fit_affine(camera_xy: np.ndarray, model_xy: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares ``camera_to_model`` ``(2, 3)`` from matched points ``(N, 2)``; rms residual (model px)."""
    camera_xy, model_xy = np.asarray(camera_xy, dtype=np.float64), np.asarray(model_xy, dtype=np.float64)
    design = np.hstack([camera_xy, np.ones((len(camera_xy), 1))])
    solution, *_ = np.linalg.lstsq(design, model_xy, rcond=None)
    residual = model_xy - design @ solution
    return solution.T, float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))


@dataclass(frozen=True)
class GeometryResult:
    """The registration and the evidence for it: spot centres (camera and model (x, y)) and the fit's rms residual."""

    registration: Registration
    camera_xy: np.ndarray
    model_xy: np.ndarray
    residual_model_px: float
    min_spot_sigmas: float

    def to_dict(self) -> dict[str, object]:
        return {
            **self.registration.to_dict(),
            "camera_xy": self.camera_xy.tolist(),
            "model_xy": self.model_xy.tolist(),
            "residual_model_px": self.residual_model_px,
            "min_spot_sigmas": self.min_spot_sigmas,
        }


def measure_geometry(
    bench: Bench, log: FrameLog, cycles: int | None = None, frames: int = 2, dark_frames: int = 4
) -> GeometryResult:
    """Show the spot-grid gratings (sample out of the beam), record dark and lit frames into ``log``, fit.

    ``cycles``: grating periods across the mask (default ``n // 4``: spots half-way to the edge of
    the model's detector). Raises ``ValueError`` on saturated frames, lit dark frames, a spot
    lost in the noise, or a fit residual above :data:`MAX_RESIDUAL_MODEL_PX`.
    """
    system = bench.spec.system
    n = system.optics.n
    cycles = max(1, n // 4) if cycles is None else cycles
    if frames < 1 or dark_frames < 2 or not 1 <= cycles < n // 2:
        raise ValueError(
            f"need frames >= 1, dark_frames >= 2 and 1 <= cycles < {n // 2}; got {frames}, {dark_frames}, {cycles}"
        )
    gratings = spot_masks(n, cycles)
    ceiling = camera_ceiling_adu(bench.camera)
    bench.show_mask(gratings[0][1])
    bench.light_off()
    dark = np.stack([log.add("dark", bench.capture()) for _ in range(dark_frames)])
    noise_adu = float(np.std(dark[1] - dark[0]) / math.sqrt(2))
    lit = []
    with bench.lit():
        for (u, v), mask in gratings:
            bench.show_mask(mask)
            shots = np.stack([log.add("lit", bench.capture(), cycles_xy=[u, v]) for _ in range(frames)])
            refuse_saturated(shots, ceiling, f"geometry spot ({u}, {v})")
            lit.append(shots.mean(axis=0))
    dark_ok = refuse_lit_dark(dark, lit[0])
    camera_xy, model_xy, sigmas, model_sum = [], [], [], 0.0
    flat = lit[len(lit) // 2]  # the (0, 0) grating: every order at the centre
    for ((u, v), mask), frame in zip(gratings, lit, strict=True):
        # the flat frame's zero order, subtracted, cannot outshine a weak first order elsewhere
        centre, height = spot_centre(frame - (dark.mean(axis=0) if (u, v) == (0, 0) else flat))
        sigmas.append(height / max(noise_adu / math.sqrt(frames), 1e-12))
        if sigmas[-1] < SPOT_MIN_SIGMAS:
            raise ValueError(
                f"geometry spot ({u}, {v}): peak only {sigmas[-1]:.3g} noise sigmas (< {SPOT_MIN_SIGMAS:g}): "
                "raise the exposure or check that the camera sees the Fourier plane"
            )
        model = model_cdp(system, mask)
        camera_xy.append(centre)
        model_xy.append(model_spot(system, u, v, model))
        model_sum = model_sum + model
    camera_to_model, residual = fit_affine(np.array(camera_xy), np.array(model_xy))
    lit_sum = np.sum(lit, axis=0) - len(lit) * dark.mean(axis=0)
    registration = Registration(camera_to_model, model_sum.shape, lit_sum.shape, 0.0)
    correlation = _correlation(registration.resample(lit_sum), model_sum)
    result = GeometryResult(
        Registration(camera_to_model, model_sum.shape, lit_sum.shape, correlation),
        np.array(camera_xy),
        np.array(model_xy),
        residual,
        float(min(sigmas)),
    )
    log.set_result({**result.to_dict(), "dark_check": dark_ok.to_dict()})
    if residual > MAX_RESIDUAL_MODEL_PX:
        raise ValueError(
            f"spot-grid registration residual {residual:.3g} model px rms (> {MAX_RESIDUAL_MODEL_PX}): a spot was "
            "taken from another diffraction order or the camera does not see the Fourier plane"
        )
    return result
