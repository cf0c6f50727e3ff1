"""Simulated (object, CDP) pairs through a bench's calibrated model, for supervised fine-tuning.

Measured CDPs of unknown samples carry no ground truth, so consistency alone cannot tell the decoder which of
the objects that explain a frame is right. Objects from the bundle's own training distribution, sent through the
*calibrated* model of the bench (measured SLM response, crosstalk, SLM-plane field, registered camera) with the
bench's noise, give pairs that do: the decoder learns the bench's operator while the prior it was trained with
stays. Each frame is made as a capture is read (:func:`hil.bench.reconstruct.load_capture`): a mean of
``P · a`` photons per camera pixel (``P`` photons per model detector pixel, ``a`` detector pixels per camera
pixel), shot noise and the sensor's read noise over the averaged frames, then the same scale rule into model
units (:func:`hil.bench.reconstruct.to_model_units`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hil.bench.reconstruct import detector_pixels_per_camera_pixel, to_model_units
from hil.data.datasets import DataSpec, PhaseObjectDataset
from hil.physics.bench_model import BenchModel
from hil.physics.optics import CDPOperator, phase_to_field


@dataclass
class SimulatedPairs:
    """Objects ``phase_rad`` / ``amplitude`` ``(B, n, n)``, their CDPs ``y`` ``(B, 1, height, width)`` in model
    units on the camera's pixels, and the photons per model detector pixel each frame integrated ``(B,)``."""

    phase_rad: torch.Tensor
    amplitude: torch.Tensor | None
    y: torch.Tensor
    photons: torch.Tensor


@dataclass(frozen=True)
class PairSource:
    """Where pairs come from: the bench's calibrated ``model`` and its operator ``op`` of the deployed mask,
    the bundle's data ``spec``, the photon range ``photons_range`` (per model detector pixel, integrated over
    ``frames`` averaged frames; log-uniform) and the sensor's read noise ``read_noise_photons`` (rms per frame)."""

    model: BenchModel
    op: CDPOperator
    spec: DataSpec
    photons_range: tuple[float, float]
    frames: int = 1
    read_noise_photons: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.photons_range
        if not 0 < low <= high or self.frames < 1 or self.read_noise_photons < 0:
            raise ValueError(f"need 0 < photons_min <= photons_max, frames >= 1, read noise >= 0: {self}")

    def pairs(self, split: str, count: int, seed: int) -> SimulatedPairs:
        """``count`` pairs of objects from ``split`` (reproducible from ``seed``)."""
        dataset = PhaseObjectDataset(self.spec, split, count, seed)
        items = [dataset[i] for i in range(count)]
        phase = torch.stack([p for p, _ in items]).double()
        amplitude = torch.stack([a for _, a in items]).double() if self.spec.amplitude_contrast > 0 else None
        generator = torch.Generator().manual_seed(seed)
        low, high = math.log(self.photons_range[0]), math.log(self.photons_range[1])
        photons = torch.exp(low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64))
        with torch.no_grad():
            clean = self.op.A(phase_to_field(phase, amplitude))[:, 0]  # (B, height, width)
        area = detector_pixels_per_camera_pixel(self.model)
        rate = clean * (photons * area / clean.mean(dim=(-2, -1)).clamp_min(1e-30)).view(-1, 1, 1)
        read = self.read_noise_photons * math.sqrt(self.frames)
        summed = torch.poisson(rate, generator=generator) + read * torch.randn(
            rate.shape, generator=generator, dtype=rate.dtype
        )
        y = torch.cat([to_model_units(self.op, frame / self.frames) for frame in summed])
        return SimulatedPairs(
            phase.float(), None if amplitude is None else amplitude.float(), y.float(), photons.float()
        )
