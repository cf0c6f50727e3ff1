"""Phase from one captured CDP: camera frame -> model units -> classical solver or learned decoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from hil.bench.frame_log import CaptureError, open_h5, read_array, read_json_attr, read_number_attr, verify_checksums
from hil.bench.signals import SignalError, check_signal
from hil.common.config import ConfigError, from_mapping
from hil.learning.bundle import Bundle
from hil.learning.coded_system import decode
from hil.physics.camera import CameraSpec
from hil.physics.optics import CDPOperator
from hil.physics.registration import Registration
from hil.physics.slm import SLMModel
from hil.physics.system import SystemConfig
from hil.solvers import solve


def mask_operator(system: SystemConfig, mask_rad: np.ndarray | torch.Tensor) -> CDPOperator:
    """The operator of a mask ``(n, n)`` in radians as the system's SLM realises it."""
    mask = torch.as_tensor(mask_rad, dtype=torch.float64)
    return system.geometry().operator(SLMModel(system.slm).transmittance(mask[None]))


def uniform_mask(n: int, seed: int) -> np.ndarray:
    """A uniformly random coded phase mask ``(n, n)`` in radians (the classical baseline's mask)."""
    return np.random.default_rng(seed).uniform(0, 2 * np.pi, (n, n))


def frame_to_photons(cdp_adu: np.ndarray, camera: CameraSpec) -> torch.Tensor:
    """Dark-subtracted frame (ADU, (height, width)) -> detected photons per pixel, float32."""
    return torch.from_numpy(np.asarray(cdp_adu, dtype=np.float32) / (camera.gain_adu_per_e * camera.quantum_efficiency))


def to_model_units(op: CDPOperator, photons: torch.Tensor) -> torch.Tensor:
    """Photons ``(height, width)`` on the model's detector grid -> one CDP ``(1, 1, Hd, Wd)`` in model units."""
    expected = op.geometry.camera_shape
    if tuple(photons.shape) != expected:
        raise ValueError(
            f"captured CDP has shape {tuple(photons.shape)} (height, width) but the model's detector grid is "
            f"{expected}: register the camera to the model grid (camera-to-model calibration) or fix the "
            "camera window/binning"
        )
    return op.normalise_intensities(photons.clamp_min(0)[None, None].to(op.masks.real.dtype))


def reconstruct_classical(op: CDPOperator, y: torch.Tensor, iterations: int = 50, seed: int = 0) -> torch.Tensor:
    """RAAR with the unit-modulus and [0, π] range priors; phase in radians ``(B, n, n)``."""
    return torch.angle(solve("raar", op, y, iterations=iterations, seed=seed))


def reconstruct_bundle(bundle: Bundle, y: torch.Tensor, photons_per_pixel: float) -> torch.Tensor:
    """The bundle's decoder on CDPs made with its own mask; phase in radians ``(B, n, n)``."""
    system = bundle.system.eval()
    op = system.operator()
    return decode(system, op, y.to(op.masks.real.dtype), float(photons_per_pixel))


@dataclass
class LoadedCapture:
    """A capture file ready for reconstruction: its system, mask and CDP in model units.

    ``photons_per_pixel`` is what the averaged CDP integrated (``frames`` times the mean photons
    per detector pixel of one frame): it sets the decoder's noise level.
    """

    system: SystemConfig
    mask_rad: torch.Tensor  # (n, n) radians, as uploaded
    photons_per_pixel: float  # mean photons per detector pixel integrated over the averaged frames
    frames: int  # light frames averaged into the CDP
    op: CDPOperator  # the operator of the realised mask (through the system's SLM model)
    y: torch.Tensor  # (1, 1, Hd, Wd) model units

    @property
    def photons_per_frame(self) -> float:
        return self.photons_per_pixel / self.frames


def _frame_count(h5: h5py.File) -> int:
    """Light frames averaged into ``cdp_adu``: the stored count, else the frames kept in the file."""
    if "frames" in h5.attrs:
        return int(read_number_attr(h5, "frames", minimum=1))
    return len(h5["frames"]) if "frames" in h5 else 1


def load_capture(path: str | Path, registration: Registration | None = None) -> LoadedCapture:
    """Read a file written by :func:`hil.bench.capture.capture_cdp`; a :class:`CaptureError` names what is
    missing, malformed or corrupted.

    ``registration`` (from ``hil calibrate geometry``) resamples the camera frame onto the model's
    detector grid first; without it the frame must already be on that grid. A CDP without signal
    (mean at the dark level) is refused: there is nothing to reconstruct.
    """
    path = Path(path)
    with open_h5(path) as h5:  # every read is checked: shape, dtype, finiteness, JSON, checksums
        verify_checksums(h5)
        system_data, camera_data = read_json_attr(h5, "system_json"), read_json_attr(h5, "camera_spec_json")
        cdp_adu, mask = read_array(h5, "cdp_adu", ndim=2), read_array(h5, "mask_rad", ndim=2)
        frames = _frame_count(h5)
    try:
        system = from_mapping(SystemConfig, system_data, where=f"{path}:system_json")
        camera = from_mapping(CameraSpec, camera_data, where=f"{path}:camera_spec_json")
    except ConfigError as exc:
        raise CaptureError(str(exc)) from None
    n = system.optics.n
    if mask.shape != (n, n):
        raise CaptureError(f"{path}: mask_rad has shape {mask.shape}, the system's optics.n is {n}")
    try:
        check_signal(cdp_adu[None], 0.0, camera)
    except SignalError as exc:
        raise SignalError(f"{path}: {exc}") from None
    mask_rad = torch.from_numpy(np.asarray(mask, dtype=np.float64))
    op = mask_operator(system, mask_rad)
    if registration is not None:
        cdp_adu = registration.resample(cdp_adu)
    photons = frame_to_photons(cdp_adu, camera)
    return LoadedCapture(system, mask_rad, frames * float(photons.mean()), frames, op, to_model_units(op, photons))
