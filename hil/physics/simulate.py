"""Simulated measurements: objects -> CDPs -> camera frames, in model units (no devices)."""

from __future__ import annotations

import torch

from hil.physics.camera import CameraModel
from hil.physics.optics import CDPOperator, phase_to_field


def measure(
    op: CDPOperator,
    phase_rad: torch.Tensor,
    camera: CameraModel,
    amplitude: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    photons_per_pixel: float | None = None,
) -> torch.Tensor:
    """Noisy CDPs ``(B, L, Hd, Wd)`` of objects ``(B, n, n)``, rescaled to model units.

    ``photons_per_pixel`` (per frame) overrides the camera's budget; frames go through the
    full camera model (shot/read noise, ADC, ...) and back to photons, then are normalised to
    the energy of a unit-modulus object (:meth:`CDPOperator.normalise_intensities`).
    """
    x = phase_to_field(phase_rad.to(op.masks.real.dtype), amplitude)
    clean = op.intensity(x)  # per sensor pixel; the camera bins
    frames = camera.to_photons(camera.expose(clean, generator, photons_per_pixel))
    return op.normalise_intensities(frames)
