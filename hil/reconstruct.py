"""Phase from one captured CDP: camera frame -> model units -> classical solver or learned decoder."""

from __future__ import annotations

import numpy as np
import torch

from hil.bundle import Bundle
from hil.camera_model import CameraSpec
from hil.optics import CDPOperator
from hil.solvers import solve


def frame_to_photons(cdp_adu: np.ndarray, camera: CameraSpec) -> torch.Tensor:
    """Dark-subtracted frame (ADU, (height, width)) -> detected photons per pixel, float32."""
    return torch.from_numpy(np.asarray(cdp_adu, dtype=np.float32) / (camera.gain_adu_per_e * camera.quantum_efficiency))


def to_model_units(op: CDPOperator, photons: torch.Tensor) -> torch.Tensor:
    """Photons ``(height, width)`` on the model's detector grid -> one CDP ``(1, 1, Hd, Wd)`` in model units."""
    expected = op.geometry.detector_shape
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


@torch.no_grad()
def reconstruct_bundle(bundle: Bundle, y: torch.Tensor, photons_per_pixel: float) -> torch.Tensor:
    """The bundle's decoder on CDPs made with its own mask; phase in radians ``(B, n, n)``."""
    system = bundle.system.eval()
    op = system.operator()
    photons = torch.full((y.shape[0],), float(photons_per_pixel))
    return system(op, y.to(op.masks.real.dtype), photons).phase_rad
