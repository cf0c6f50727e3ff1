"""Phase from one captured CDP: camera frame -> model units on the camera's pixels -> classical solver or
learned decoder, both through the calibrated model the capture file records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from hil.bench.capture import read_model
from hil.bench.frame_log import CaptureError, open_h5, read_array, read_json_attr, read_number_attr, verify_checksums
from hil.bench.signals import SignalError, check_signal
from hil.common.config import ConfigError, from_mapping
from hil.learning.bundle import Bundle
from hil.learning.coded_system import decode
from hil.physics.bench_model import BenchModel
from hil.physics.camera import CameraSpec
from hil.physics.optics import Binning, CDPOperator
from hil.physics.registration import Registration
from hil.physics.system import SystemConfig
from hil.solvers import solve


def uniform_mask(n: int, seed: int) -> np.ndarray:
    """A uniformly random coded phase mask ``(n, n)`` in radians (the classical baseline's mask)."""
    return np.random.default_rng(seed).uniform(0, 2 * np.pi, (n, n))


def frame_to_photons(cdp_adu: np.ndarray, camera: CameraSpec) -> torch.Tensor:
    """Dark-subtracted frame (ADU, (height, width)) -> detected photons per pixel, float32."""
    return torch.from_numpy(np.asarray(cdp_adu, dtype=np.float32) / (camera.gain_adu_per_e * camera.quantum_efficiency))


def to_model_units(op: CDPOperator, photons: torch.Tensor) -> torch.Tensor:
    """Photons ``(height, width)`` on the operator's camera pixels -> one CDP ``(1, 1, height, width)`` in model units.

    On the model's own detector (binning) the energy fixes the scale exactly
    (:meth:`~hil.physics.optics.CDPOperator.normalise_intensities`). A registered camera need not cover the
    model's detector window, nor lie inside it, so no energy balance holds: the frame is scaled so that its
    pixels inside the window sum to what the model predicts there for a flat object (the mask's own speckle:
    within 3.5 % of the prediction for the true sample on the fixture benches, ``benchmarks/calibrated_model.md``),
    and pixels outside the window, which the model cannot predict, are set to 0 (no solver or loss uses them).
    """
    expected = op.camera_shape
    if tuple(photons.shape) != expected:
        raise ValueError(
            f"captured CDP has shape {tuple(photons.shape)} (height, width) but the model predicts {expected}: "
            "name the camera registration (hil calibrate geometry) in the bench config's calibration section, "
            "or fix the camera window/binning"
        )
    y = photons.clamp_min(0)[None, None].to(op.masks.real.dtype)
    if isinstance(op.detector, Binning):
        return op.normalise_intensities(y)
    seen = op.detector.forward(torch.ones(op.geometry.detector_shape, dtype=y.dtype)) > 0
    with torch.no_grad():
        flat = op.A(torch.ones((1, op.geometry.n, op.geometry.n), dtype=op.masks.dtype))
    measured = y[..., seen].sum()
    if not measured > 0:
        raise ValueError("the captured CDP has no light on the camera pixels the model predicts")
    return torch.where(seen, y * (flat[..., seen].sum() / measured), torch.zeros_like(y))


def reconstruct_classical(op: CDPOperator, y: torch.Tensor, iterations: int = 50, seed: int = 0) -> torch.Tensor:
    """RAAR with the unit-modulus and [0, π] range priors; phase in radians ``(B, n, n)``."""
    return torch.angle(solve("raar", op, y, iterations=iterations, seed=seed))


def single_precision(op: CDPOperator) -> CDPOperator:
    """``op`` in complex64, the precision of the learned decoders' weights (same detector)."""
    offset = None if op.offset is None else op.offset.to(torch.complex64)
    return CDPOperator(op.geometry, op.masks.to(torch.complex64), op.detector, offset)


def reconstruct_bundle(bundle: Bundle, op: CDPOperator, y: torch.Tensor, photons_per_pixel: float) -> torch.Tensor:
    """The bundle's decoder on CDPs ``y`` of its own mask, told the calibrated operator ``op`` of the bench that
    recorded them (e.g. :attr:`LoadedCapture.op`); phase in radians ``(B, n, n)``."""
    op = single_precision(op)
    return decode(bundle.system.eval(), op, y.to(torch.float32), float(photons_per_pixel))


@dataclass
class LoadedCapture:
    """A capture file ready for reconstruction: its calibrated model, mask and CDP in model units.

    ``photons_per_pixel`` is what the averaged CDP integrated (``frames`` times the mean photons per
    model detector pixel of one frame, the unit the decoders were trained in): it sets the decoder's
    noise level. ``op`` is the calibrated model's operator of the mask, on the camera's own pixels when
    the capture carries a registration.
    """

    model: BenchModel
    mask_rad: torch.Tensor  # (n, n) radians, as uploaded
    photons_per_pixel: float  # mean photons per model detector pixel integrated over the averaged frames
    frames: int  # light frames averaged into the CDP
    op: CDPOperator  # the calibrated model's operator of the mask
    y: torch.Tensor  # (1, 1, height, width) model units, on the operator's camera pixels

    @property
    def system(self) -> SystemConfig:
        return self.model.system

    @property
    def photons_per_frame(self) -> float:
        return self.photons_per_pixel / self.frames


def _frame_count(h5: h5py.File) -> int:
    """Light frames averaged into ``cdp_adu``: the stored count, else the frames kept in the file."""
    if "frames" in h5.attrs:
        return int(read_number_attr(h5, "frames", minimum=1))
    return len(h5["frames"]) if "frames" in h5 else 1


def detector_pixels_per_camera_pixel(model: BenchModel) -> float:
    """Area of one camera pixel in the system's detector pixels (1 without a registration, ``b²`` binned)."""
    if model.registration is None:
        return float(model.system.camera.binning**2)
    return abs(float(np.linalg.det(model.registration.camera_to_model[:, :2])))


def load_capture(path: str | Path, registration: Registration | None = None) -> LoadedCapture:
    """Read a file written by :func:`hil.bench.capture.capture_cdp`; a :class:`CaptureError` names what is
    missing, malformed or corrupted.

    The operator is the calibrated model the file records (:func:`hil.bench.capture.read_model`: system,
    registration, SLM-plane field); ``registration`` replaces the recorded one (a capture made before the
    geometry was calibrated). The CDP stays on the camera's pixels (nothing is resampled) and is normalised
    there. A CDP without signal (mean at the dark level) is refused: there is nothing to reconstruct.
    """
    path = Path(path)
    with open_h5(path) as h5:  # every read is checked: shape, dtype, finiteness, JSON, checksums
        verify_checksums(h5)
        camera_data = read_json_attr(h5, "camera_spec_json")
        cdp_adu, mask = read_array(h5, "cdp_adu", ndim=2), read_array(h5, "mask_rad", ndim=2)
        frames = _frame_count(h5)
        model = read_model(h5, registration)
    try:
        camera = from_mapping(CameraSpec, camera_data, where=f"{path}:camera_spec_json")
    except ConfigError as exc:
        raise CaptureError(str(exc)) from None
    n = model.system.optics.n
    if mask.shape != (n, n):
        raise CaptureError(f"{path}: mask_rad has shape {mask.shape}, the system's optics.n is {n}")
    try:
        check_signal(cdp_adu[None], 0.0, camera)
    except SignalError as exc:
        raise SignalError(f"{path}: {exc}") from None
    mask_rad = torch.from_numpy(np.asarray(mask, dtype=np.float64))
    op = model.operator(mask_rad)
    photons = frame_to_photons(cdp_adu, camera)
    try:
        y = to_model_units(op, photons)
    except ValueError as exc:
        raise CaptureError(f"{path}: {exc}") from None
    per_detector_pixel = float(photons.mean()) / detector_pixels_per_camera_pixel(model)
    return LoadedCapture(model, mask_rad, frames * per_detector_pixel, frames, op, y)
