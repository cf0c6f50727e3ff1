"""Differentiable model of a phase-only SLM: phase -> gray level -> realised phase.

The gray-level convention is slmsuite 0.5's (``SLM._phase2gray`` / ``SLM._gray2phase``), so
a mask designed here and uploaded through slmsuite shows the same levels:

* linear response with full 2π stroke (``phase_scaling == 1``): phase 0 maps to the top
  level, ``gray = (rint(-phase * levels / 2π) - 1) mod levels``;
* reduced stroke (``phase_range_rad < 2π``, slmsuite ``phase_scaling = 2π / phase_range_rad``):
  slmsuite's wrap-and-clip rule;
* measured response ``gamma`` (phase per level in units of 2π, as ``SLM.set_gamma``): a
  lookup table of ``lut_size`` uniformly spaced phases, each assigned to the level whose
  realised phase is circularly nearest.

The realised phase goes forward; the gradient passes straight through to the requested
phase (straight-through estimator), so masks can be trained through quantisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hil.physics.optics import macro_upsample

TWO_PI = 2 * math.pi
LUT_SIZE = 1 << 16


@dataclass(frozen=True)
class SLMSpec:
    """What the SLM can show.

    Attributes:
        bitdepth: bits per gray level (levels = 2**bitdepth).
        phase_range_rad: full stroke of the linear response in radians (2π: a full wave);
            ignored when ``gamma`` is given, which already holds the measured range.
        gamma: measured phase response, one value per level in units of 2π (slmsuite's
            ``gamma``), or empty for the ideal linear response.
        macro_pixel: SLM pixels per mask pixel along each axis (k).
        crosstalk_sigma_px: standard deviation, in SLM pixels, of the Gaussian blur of the
            realised phase caused by fringing fields (0 = none).
        gamma_sign: -1 when phase delay decreases with gray level (most SLMs; slmsuite's default).
    """

    bitdepth: int = 8
    phase_range_rad: float = TWO_PI
    gamma: tuple[float, ...] = field(default_factory=tuple)
    macro_pixel: int = 1
    crosstalk_sigma_px: float = 0.0
    gamma_sign: int = -1

    def __post_init__(self) -> None:
        if not 1 <= self.bitdepth <= 16:
            raise ValueError(f"SLMSpec.bitdepth must be in [1, 16], got {self.bitdepth}")
        if not 0 < self.phase_range_rad <= 2 * TWO_PI:
            raise ValueError(f"SLMSpec.phase_range_rad must be in (0, 4π], got {self.phase_range_rad}")
        if self.gamma and len(self.gamma) != self.levels:
            raise ValueError(f"SLMSpec.gamma must have {self.levels} entries (one per level), got {len(self.gamma)}")
        if self.macro_pixel < 1:
            raise ValueError(f"SLMSpec.macro_pixel must be >= 1, got {self.macro_pixel}")
        if self.crosstalk_sigma_px < 0:
            raise ValueError(f"SLMSpec.crosstalk_sigma_px must be >= 0, got {self.crosstalk_sigma_px}")
        if self.gamma_sign not in (-1, 1):
            raise ValueError(f"SLMSpec.gamma_sign must be -1 or 1, got {self.gamma_sign}")
        if not self.gamma and self.gamma_sign != -1 and self.phase_scaling != 1:
            raise ValueError("a reduced phase range with gamma_sign=+1 needs a measured gamma (slmsuite rule)")

    @property
    def levels(self) -> int:
        return 1 << self.bitdepth

    @property
    def phase_scaling(self) -> float:
        """slmsuite's ``phase_scaling`` (= wav_um / wav_design_um) for this stroke."""
        return TWO_PI / self.phase_range_rad

    def level_phases(self) -> np.ndarray:
        """Realised phase of each gray level in radians, wrapped to [0, 2π), float64 ``(levels,)``."""
        return np.mod(self.level_retardance(), TWO_PI)

    def level_retardance(self) -> np.ndarray:
        """Phase of each gray level in radians as the liquid crystal delays it: continuous in the level, not
        wrapped (what crosstalk blurs: fringing fields between two pixels give intermediate retardance)."""
        g = np.arange(self.levels, dtype=np.float64)
        if self.gamma:
            phase = self.gamma_sign * TWO_PI * np.asarray(self.gamma, dtype=np.float64)
        elif self.phase_scaling == 1:
            phase = (g + 1) * (self.gamma_sign * TWO_PI / self.levels)
        else:
            phase = (g - (self.levels - 1)) * (-TWO_PI / (self.levels * self.phase_scaling))
        return phase

    def lut(self, lut_size: int = LUT_SIZE) -> np.ndarray:
        """Phase lookup table: gray level for each of ``lut_size`` phases ``j * 2π / lut_size``."""
        phase = self.level_phases()
        ranking = np.argsort(phase, kind="stable")
        tiled = np.concatenate((phase[ranking] - TWO_PI, phase[ranking], phase[ranking] + TWO_PI))
        grid = np.arange(lut_size) * (TWO_PI / lut_size)
        index = np.searchsorted((tiled[:-1] + tiled[1:]) / 2, grid, side="right")
        return ranking[np.mod(index, self.levels)]


class SLMModel(torch.nn.Module):
    """Phase (radians, mask grid ``(..., n, n)``) -> realised phase on the SLM grid ``(..., k*n, k*n)``."""

    def __init__(self, spec: SLMSpec) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("level_phase", torch.from_numpy(spec.level_phases()), persistent=False)
        self.register_buffer("level_retardance", torch.from_numpy(spec.level_retardance()), persistent=False)
        if spec.gamma:
            self.register_buffer("lut", torch.from_numpy(spec.lut()).long(), persistent=False)
        else:
            self.lut = None

    def phase_to_gray(self, phase_rad: torch.Tensor) -> torch.Tensor:
        """Gray levels (int64) slmsuite would display for ``phase_rad`` (any shape; no gradient)."""
        spec = self.spec
        levels = spec.levels
        phase = phase_rad.detach().to(torch.float64)
        if self.lut is not None:
            index = torch.floor(phase * (self.lut.numel() / TWO_PI)).long() & (self.lut.numel() - 1)
            return self.lut[index]
        if spec.phase_scaling == 1:
            index = torch.round(phase * (spec.gamma_sign * levels / TWO_PI)).long() - 1
            return torch.remainder(index, levels)
        scaled = phase * -(levels * spec.phase_scaling / TWO_PI)
        if scaled.numel() and (scaled.min() <= -levels or scaled.max() > 0):
            scaled = torch.remainder(scaled - 1, levels * spec.phase_scaling) + levels * (1 - spec.phase_scaling)
            if spec.phase_scaling > 1:
                scaled = torch.where(scaled < 0, torch.full_like(scaled, levels - 1), scaled)
        else:
            scaled = scaled + (levels - 1)
        return scaled.long()

    def gray_to_phase(self, gray: torch.Tensor) -> torch.Tensor:
        """Realised phase in radians, [0, 2π), of integer gray levels."""
        return self.level_phase.to(gray.device)[gray.long()]

    def upsample(self, phase_rad: torch.Tensor) -> torch.Tensor:
        """Repeat each mask pixel over ``k x k`` SLM pixels (macro-pixels)."""
        return macro_upsample(phase_rad, self.spec.macro_pixel)

    def forward(self, phase_rad: torch.Tensor) -> torch.Tensor:
        """Realised phase (radians) on the SLM grid, differentiable by straight-through estimation; with crosstalk,
        the level's retardance (equal to the wrapped phase modulo 2π), which is what crosstalk blurs."""
        wrapped = torch.remainder(self.upsample(phase_rad), TWO_PI)
        gray = self.phase_to_gray(wrapped)
        table = self.level_retardance if self.spec.crosstalk_sigma_px > 0 else self.level_phase  # equal mod 2π
        realised = table.to(gray.device)[gray].to(wrapped.dtype)
        out = wrapped + (realised - wrapped).detach()
        return crosstalk_blur(out, self.spec.crosstalk_sigma_px)

    def transmittance(self, phase_rad: torch.Tensor) -> torch.Tensor:
        """Complex transmittance ``exp(1j * realised phase)`` on the SLM grid."""
        realised = self(phase_rad)
        return torch.polar(torch.ones_like(realised), realised)


def crosstalk_blur(phase_rad: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Pixel crosstalk: Gaussian blur (``sigma_px`` SLM pixels) of a realised phase over its last two axes.

    The one implementation, used by the model and by the simulated SLM (edges replicated; taps to 3 sigma).
    """
    taps = _gaussian_kernel(sigma_px)
    return phase_rad if taps.numel() == 1 else _blur(phase_rad, taps.to(phase_rad.dtype))


def _gaussian_kernel(sigma_px: float) -> torch.Tensor:
    """Normalised separable Gaussian (1-D taps, float64); a single tap of 1 when sigma is 0."""
    if sigma_px <= 0:
        return torch.ones(1, dtype=torch.float64)
    radius = max(1, math.ceil(3 * sigma_px))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return taps / taps.sum()


def _blur(phase: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable blur over the last two axes with replicated edges."""
    shape = phase.shape
    x = phase.reshape(-1, 1, *shape[-2:])
    r = taps.numel() // 2
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, -1))
    x = F.conv2d(x, taps.view(1, 1, -1, 1))
    return x.reshape(shape)
