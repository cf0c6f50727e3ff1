"""SLM phase response (phase per gray level) from two-region interference on the CDP camera.

With the sample out of the beam, the ROI is split in two halves (columns): the left half shows a
reference level ``r``, the right half level ``g``. In the lens's back focal plane the two halves
interfere:

    I(Δ) = |a + exp(iΔ) b|² = c0 + cos Δ · c1 + sin Δ · c2,   Δ = φ(g) - φ(r),

where ``a``, ``b`` are the model's detector fields of each half alone (shared operator, unit
object), ``c0 = |a|² + |b|²``, ``c1 = 2 Re(a* b)``, ``c2 = -2 Im(a* b)``. A linear least-squares fit
``frame ≈ α c0 + β c1 + γ c2 + δ`` (δ absorbs the dark offset, α the unknown power) gives
``Δ = atan2(γ, β)`` with no 2π ambiguity, from one frame per level; ``hypot(β, γ) / α`` is the
fringe contrast (1 ideally; pixel crosstalk or a non-uniform beam lower it).

The phases are unwrapped along the gray levels (steps below π) and converted to slmsuite's
``gamma``: realised phase ``φ(g) = gamma_sign · 2π · gamma[g]`` with ``gamma[r] = 0``, which is
what ``SLMSpec.gamma`` (``configs/system.yaml``) and ``slm.set_gamma`` take. Levels not measured
are interpolated linearly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hil.bench.bench import Bench
from hil.bench.frame_log import FrameLog
from hil.physics.registration import Registration
from hil.physics.system import SystemConfig

TWO_PI = 2 * math.pi
MIN_CONTRAST = 0.3


@dataclass(frozen=True)
class SLMResponse:
    """Measured response: ``gamma`` (one value per level, units of 2π, slmsuite convention) and fit quality."""

    gamma: tuple[float, ...]
    measured_levels: tuple[int, ...]
    reference_level: int
    phase_range_rad: float  # stroke over all levels, extrapolated from the end levels
    min_contrast: float
    rms_residual: float  # fit residual / frame RMS, worst level

    def system_keys(self) -> dict[str, list[float]]:
        """The ``slm:`` key of ``configs/system.yaml`` this measurement sets."""
        return {"gamma": [round(g, 6) for g in self.gamma]}

    def to_dict(self) -> dict[str, object]:
        return {
            "gamma": list(self.gamma),
            "measured_levels": list(self.measured_levels),
            "reference_level": self.reference_level,
            "phase_range_rad": self.phase_range_rad,
            "min_contrast": self.min_contrast,
            "rms_residual": self.rms_residual,
        }


def half_fields(system: SystemConfig) -> tuple[np.ndarray, np.ndarray]:
    """Model detector fields ``(Hd, Wd)`` of the left and right ROI halves alone (unit object)."""
    geometry = system.geometry()
    side = geometry.slm_shape[1]
    left = torch.zeros(geometry.slm_shape, dtype=torch.complex128)
    left[:, : side // 2] = 1
    masks = torch.stack([left, 1 - left])
    n = system.optics.n
    fields = geometry.operator(masks).A_linear(torch.ones((1, n, n), dtype=torch.complex128))[0]
    return fields[0].numpy(), fields[1].numpy()


def fit_phase_step(frame: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Phase step Δ (radians, (-π, π]) of the right half over the left, fringe contrast, relative RMS residual."""
    cross = np.conj(a) * b
    design = np.stack(
        [np.abs(a) ** 2 + np.abs(b) ** 2, 2 * cross.real, -2 * cross.imag, np.ones(a.shape)], axis=-1
    ).reshape(-1, 4)
    target = np.asarray(frame, dtype=np.float64).ravel()
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    alpha, beta, gamma, _ = coefficients
    residual = target - design @ coefficients
    rms = float(np.sqrt(np.mean(residual**2)) / max(np.sqrt(np.mean(target**2)), 1e-300))
    contrast = float(math.hypot(beta, gamma) / alpha) if alpha > 0 else 0.0
    return float(math.atan2(gamma, beta)), contrast, rms


def response_from_steps(
    steps_rad: np.ndarray, levels: np.ndarray, total_levels: int, reference_level: int, gamma_sign: int = -1
) -> np.ndarray:
    """``gamma`` for all ``total_levels`` from phase steps measured at increasing ``levels``."""
    unwrapped = np.unwrap(np.asarray(steps_rad, dtype=np.float64))
    measured = gamma_sign * unwrapped / TWO_PI
    measured = measured - np.interp(reference_level, levels, measured)
    everything = np.arange(total_levels)
    gamma = np.interp(everything, levels, measured)
    low, high = everything < levels[0], everything > levels[-1]  # linear extrapolation at both ends
    gamma[low] = measured[0] + (everything[low] - levels[0]) * (measured[1] - measured[0]) / (levels[1] - levels[0])
    gamma[high] = measured[-1] + (everything[high] - levels[-1]) * (measured[-1] - measured[-2]) / (
        levels[-1] - levels[-2]
    )
    return gamma


def measure_slm_response(
    bench: Bench,
    log: FrameLog,
    levels: list[int] | None = None,
    reference_level: int = 0,
    frames: int = 1,
    registration: Registration | None = None,
) -> SLMResponse:
    """Show the two-region pattern for each gray level (sample out of the beam), fit, build ``gamma``.

    ``levels``: increasing gray levels to measure (default: all). Frames go to ``log``; a
    ``registration`` resamples them onto the model grid first. The SLM is blanked afterwards.
    """
    slm = bench.slm.slm
    total = int(slm.bitresolution)
    levels = list(range(total)) if levels is None else sorted(set(levels))
    if len(levels) < 2 or levels[0] < 0 or levels[-1] >= total or not 0 <= reference_level < total:
        raise ValueError(f"levels and reference_level must be distinct gray levels in [0, {total - 1}], at least two")
    system = bench.spec.system
    a, b = half_fields(system)
    rows, cols = bench.slm.roi
    right = slice(cols.start + (cols.stop - cols.start) // 2, cols.stop)
    steps, contrasts, residuals = [], [], []
    try:
        with bench.lit():
            for level in levels:
                display = np.full(slm.shape, reference_level, dtype=slm.dtype)
                display[rows, right] = level
                slm.set_phase(display, phase_correct=False, settle=True)
                shots = [log.add("lit", bench.capture(), level=level) for _ in range(frames)]
                frame = np.mean(shots, axis=0)
                if registration is not None:
                    frame = registration.resample(frame)
                if frame.shape != a.shape:
                    raise ValueError(
                        f"camera frame {frame.shape} (height, width) is not on the model grid {a.shape}: "
                        "pass a camera-to-model registration"
                    )
                step, contrast, residual = fit_phase_step(frame, a, b)
                steps.append(step)
                contrasts.append(contrast)
                residuals.append(residual)
    finally:
        bench.slm.blank()
    if min(contrasts) < MIN_CONTRAST:
        worst = levels[int(np.argmin(contrasts))]
        raise ValueError(
            f"fringe contrast {min(contrasts):.2f} at level {worst} (< {MIN_CONTRAST}): is the sample out of the "
            "beam and the camera registered to the model grid?"
        )
    gamma = response_from_steps(np.array(steps), np.array(levels), total, reference_level, system.slm.gamma_sign)
    result = SLMResponse(
        gamma=tuple(float(g) for g in gamma),
        measured_levels=tuple(levels),
        reference_level=reference_level,
        phase_range_rad=float(TWO_PI * abs(gamma[-1] - gamma[0]) * total / (total - 1)),
        min_contrast=float(min(contrasts)),
        rms_residual=float(max(residuals)),
    )
    log.set_result(result.to_dict())
    return result
