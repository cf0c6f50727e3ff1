"""Object-domain constraint sets and their projections (complex objects ``(B, n, n)``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hil.common.metrics import wrap


@dataclass(frozen=True)
class ObjectConstraint:
    """What is known of the object a priori.

    Attributes:
        unit_modulus: the object is phase-only, ``|x| = 1``.
        phase_range_rad: ``(lo, hi)`` in radians: the phase lies on this arc (the range prior
            that removes the single-snapshot twin); None for no phase prior.
    """

    unit_modulus: bool = True
    phase_range_rad: tuple[float, float] | None = (0.0, math.pi)

    def __post_init__(self) -> None:
        if self.phase_range_rad is not None:
            lo, hi = self.phase_range_rad
            if not hi > lo:
                raise ValueError(f"phase_range_rad must satisfy hi > lo, got {self.phase_range_rad}")

    def clip_phase(self, phase_rad: torch.Tensor) -> torch.Tensor:
        """Nearest point of the arc ``[lo, hi]`` for each phase (identity without a range prior)."""
        if self.phase_range_rad is None or self.phase_range_rad[1] - self.phase_range_rad[0] >= 2 * math.pi:
            return phase_rad
        lo, hi = self.phase_range_rad
        centre = 0.5 * (lo + hi)
        return (centre + wrap(phase_rad - centre)).clamp(lo, hi)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Euclidean projection of complex objects onto the constraint set."""
        if self.phase_range_rad is None:
            if not self.unit_modulus:
                return x
            return x / x.abs().clamp_min(1e-30)
        magnitude = torch.ones_like(x.real) if self.unit_modulus else x.abs()
        return torch.polar(magnitude, self.clip_phase(torch.angle(x)))


NO_PRIOR = ObjectConstraint(unit_modulus=False, phase_range_rad=None)
