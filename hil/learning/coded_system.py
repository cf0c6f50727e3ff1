"""End-to-end coded systems: learnable coded phase masks + a decoder.

* teacher: ``L`` continuous masks (no hardware constraint), a larger decoder;
* student: one mask shown through the shared :class:`~hil.physics.slm.SLMModel` (bit depth,
  range, LUT, macro-pixels, crosstalk; straight-through gradients), a smaller decoder.

Both simulate their measurements with the shared operator and the shared camera model's
differentiable noise, so gradients reach the masks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from hil.learning.decoders import DecoderConfig, DecoderOutput, build_decoder
from hil.physics.camera import CameraModel, CameraSpec
from hil.physics.optics import CDPGeometry, CDPOperator, macro_upsample, phase_to_field
from hil.physics.slm import SLMModel, SLMSpec
from hil.solvers.constraints import ObjectConstraint

Role = Literal["teacher", "student"]
Budget = Literal["per_snapshot", "equal_total"]
STUDENT_MASK_SEED_OFFSET = 10_000


class CodedSystem(nn.Module):
    """Masks (radians on the mask grid, ``(L, n, n)``) + decoder; ``slm`` given = hardware-constrained."""

    def __init__(
        self,
        geometry: CDPGeometry,
        n_masks: int,
        decoder: DecoderConfig,
        slm: SLMSpec | None = None,
        seed: int = 0,
        constraint: ObjectConstraint | None = None,
    ) -> None:
        super().__init__()
        if n_masks < 1:
            raise ValueError(f"n_masks must be >= 1, got {n_masks}")
        if slm is not None and slm.macro_pixel != geometry.macro_pixel:
            raise ValueError(f"slm.macro_pixel {slm.macro_pixel} != geometry.macro_pixel {geometry.macro_pixel}")
        self.geometry = geometry
        n = geometry.n
        # teacher and student masks come from different streams, so a student never starts as a teacher mask
        generator = torch.Generator().manual_seed(seed + (STUDENT_MASK_SEED_OFFSET if slm is not None else 0))
        self.mask_rad = nn.Parameter(torch.rand((n_masks, n, n), generator=generator) * (2 * math.pi))
        self.slm = None if slm is None else SLMModel(slm)
        self.decoder = build_decoder(n, decoder, constraint)

    @property
    def n_masks(self) -> int:
        return self.mask_rad.shape[0]

    def transmittance(self) -> torch.Tensor:
        """Realised complex masks on the SLM grid ``(L, k*n, k*n)``."""
        if self.slm is not None:
            return self.slm.transmittance(self.mask_rad)
        return phase_to_field(macro_upsample(self.mask_rad, self.geometry.macro_pixel))

    def operator(self) -> CDPOperator:
        return self.geometry.operator(self.transmittance())

    def measure(
        self,
        op: CDPOperator,
        phase_rad: torch.Tensor,
        amplitude: torch.Tensor | None,
        photons_per_frame: torch.Tensor | None,
        camera: CameraSpec,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Differentiable noisy CDPs in model units (``photons_per_frame`` (B,) or None: noiseless).

        ``noise``: pre-drawn standard normal of the CDPs' shape (else drawn from ``generator``).
        """
        clean = op.intensity(phase_to_field(phase_rad, amplitude))  # per sensor pixel; the camera bins
        model = CameraModel(camera)
        budget = None if photons_per_frame is None else photons_per_frame.view(-1, 1, 1, 1).to(clean.dtype)
        noisy = model.surrogate(clean, generator, photons_per_pixel=budget, noise=noise)
        return op.normalise_intensities(noisy)

    def forward(self, op: CDPOperator, y: torch.Tensor, photons_per_frame: torch.Tensor | None) -> DecoderOutput:
        return self.decoder(op, y, photons_per_frame)


def photons_per_frame(photons_per_pixel: torch.Tensor, n_masks: int, budget: Budget) -> torch.Tensor:
    """Photons per pixel of each of ``n_masks`` frames when the single-snapshot budget is ``photons_per_pixel``.

    ``per_snapshot``: every frame gets the full budget (L times the photons in total);
    ``equal_total``: the L frames share it (each gets 1/L).
    """
    return photons_per_pixel if budget == "per_snapshot" else photons_per_pixel / n_masks


def point_antisymmetry(mask_rad: torch.Tensor) -> torch.Tensor:
    """``|mean exp(1j (θ(n) + θ(N-1-n)))|`` per mask ``(L,)``: 1 for a point-antisymmetric mask,
    for which the single-snapshot twin stays inside the phase range; about 1/n for a random mask."""
    flipped = torch.flip(mask_rad, dims=(-2, -1))
    s = mask_rad + flipped
    return torch.hypot(torch.cos(s).mean(dim=(-2, -1)), torch.sin(s).mean(dim=(-2, -1)))


def twin(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The exact single-CDP twin ``conj(μ(N-1-n) x(N-1-n)) / μ(n)`` of objects ``x`` (B, n, n) for a
    unit-modulus mask ``μ`` (n, n) on the object grid: same intensities, different object."""
    flipped = torch.flip(mask * x, dims=(-2, -1)).conj()
    return flipped / mask


@contextmanager
def without_handover(system: CodedSystem) -> Iterator[None]:
    """The decoder without its classical hand-over and rescue (RAAR, no gradient) for the block."""
    cfg = system.decoder.cfg
    system.decoder.cfg = dataclasses.replace(cfg, handover_iterations=0, rescue_iterations=0)
    try:
        yield
    finally:
        system.decoder.cfg = cfg


@torch.no_grad()
def decode_output(system: CodedSystem, op: CDPOperator, y: torch.Tensor, photons: float | None) -> DecoderOutput:
    """``system``'s decoder output for CDPs ``y`` taken at ``photons`` per pixel per frame."""
    level = None if photons is None else torch.full((y.shape[0],), photons)
    return system(op, y, level)


def decode(system: CodedSystem, op: CDPOperator, y: torch.Tensor, photons: float | None) -> torch.Tensor:
    """Phase (B, n, n) decoded by ``system`` from CDPs ``y`` taken at ``photons`` per pixel per frame."""
    return decode_output(system, op, y, photons).phase_rad
