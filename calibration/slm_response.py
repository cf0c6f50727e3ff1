"""SLM phase response (phase per gray level) from two-region interference, without a model template.

With the sample out of the beam, the panel is split in two at the ROI's centre column: the left
part shows a reference level ``r``, the right part level ``g`` (one straight boundary through the
beam, so pixel crosstalk, which blurs the phase only along boundaries, matters least). Whatever
the beam, the aberration, the light outside the ROI or the camera's placement, each camera pixel
then records

    I_g(p) = A(p) + B(p) cos Δ_g + C(p) sin Δ_g,   Δ_g = φ(g) - φ(r),

so the frames (levels x pixels, each pixel's mean over levels removed) have rank 2, and their two
leading left singular vectors trace an ellipse, an affine image of (cos Δ_g, sin Δ_g) (phase
shifting with unknown steps, principal-component method). A conic fitted to those points and
mapped onto the unit circle gives every Δ_g up to a common offset (removed by Δ_r = 0) and a
sign (chosen so that the phase magnitude grows with the level, as on every SLM); alternating least
squares over all pixels (per-pixel A, B, C, then per-level Δ_g) refines them. Neither a
registration nor a model of the optics enters; the frames are refused when saturated, and the
result when the modulation does not stand out of the noise or the points leave the ellipse.

The phases are unwrapped along the gray levels (steps below π) and converted to slmsuite's
``gamma``: realised phase ``φ(g) = gamma_sign · 2π · gamma[g]`` with ``gamma[r] = 0``, which is
what ``SLMSpec.gamma`` (``configs/system.yaml``) and ``slm.set_gamma`` take. Levels not measured
are interpolated linearly. The stroke needs to cover a good part of a wave (about π or more) for
the ellipse to be determined.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from calibration.frame_checks import camera_ceiling_adu, refuse_saturated
from hil.bench.bench import Bench
from hil.bench.frame_log import FrameLog

TWO_PI = 2 * math.pi


MIN_MODULATION_SNR = 10.0  # second over third singular value of the frames
MAX_ELLIPSE_RESIDUAL = 0.05  # rms radial deviation of the whitened points from the unit circle
ITERATIONS = 30  # rounds of the alternating least-squares refinement


@dataclass(frozen=True)
class SLMResponse:
    """Measured response: ``gamma`` (one value per level, units of 2π, slmsuite convention) and fit quality.

    ``modulation_snr``: the frames' second singular value over their third (signal over what is
    not interference); ``ellipse_residual``: rms radial deviation of the whitened points from the
    unit circle; ``rank_residual``: the part of the frames (relative RMS) outside the rank-2 fit.
    """

    gamma: tuple[float, ...]
    measured_levels: tuple[int, ...]
    reference_level: int
    phase_range_rad: float  # stroke over all levels, extrapolated from the end levels
    modulation_snr: float
    ellipse_residual: float
    rank_residual: float

    def system_keys(self) -> dict[str, list[float]]:
        """The ``slm:`` key of ``configs/system.yaml`` this measurement sets."""
        return {"gamma": [round(g, 6) for g in self.gamma]}

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _fit_ellipse(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(2,)`` and shape ``Q`` ``(2, 2)``, ``(p - c)ᵀ Q (p - c) = 1``, of points ``(N, 2)`` (algebraic fit)."""
    x, y = points[:, 0], points[:, 1]
    design = np.stack([x * x, x * y, y * y, x, y, np.ones_like(x)], axis=1)
    a, b, c, d, e, f = np.linalg.svd(design, full_matrices=False)[2][-1]
    quadratic = np.array([[a, b / 2], [b / 2, c]])
    if np.linalg.det(quadratic) <= 0:
        raise ValueError("the interference points do not lie on an ellipse: stroke too short or frames too noisy")
    centre = np.linalg.solve(2 * quadratic, -np.array([d, e]))
    scale = float(centre @ quadratic @ centre - f)
    shape = quadratic / scale
    if not np.all(np.linalg.eigvalsh(shape) > 0):
        raise ValueError("the interference points do not lie on an ellipse: stroke too short or frames too noisy")
    return centre, shape


def phase_steps(frames: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Phase steps Δ_g (radians, wrapped, common offset and sign arbitrary) of frames ``(levels, height, width)``;
    modulation SNR, ellipse residual, rank-2 residual (see :class:`SLMResponse`)."""
    data = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)
    if len(data) < 6:
        raise ValueError(f"need at least 6 gray levels to fit the interference ellipse, got {len(data)}")
    centred = data - data.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    points = u[:, :2] * s[:2]
    centre, shape = _fit_ellipse(points)
    values, vectors = np.linalg.eigh(shape)
    whitened = (points - centre) @ (vectors * np.sqrt(values)) @ vectors.T
    radius = np.hypot(whitened[:, 0], whitened[:, 1])
    rank_residual = float(np.sqrt(np.sum(s[2:] ** 2) / max(np.sum(s**2), 1e-300)))
    snr = float(s[1] / s[2]) if len(s) > 2 and s[2] > 0 else math.inf
    steps = _refine(data, np.arctan2(whitened[:, 1], whitened[:, 0]))
    return steps, snr, float(np.sqrt(np.mean((radius - 1) ** 2))), rank_residual


def _refine(data: np.ndarray, steps: np.ndarray, rounds: int = ITERATIONS) -> np.ndarray:
    """Alternating least squares on ``data`` (levels, pixels) = A + B cos Δ + C sin Δ: per-pixel
    (A, B, C) given the steps, then each step given (A, B, C); every pixel weighs in, not only the
    two principal components."""
    for _ in range(rounds):
        basis = np.stack([np.ones_like(steps), np.cos(steps), np.sin(steps)], axis=1)
        a, b, c = np.linalg.lstsq(basis, data, rcond=None)[0]
        cos_sin = np.linalg.lstsq(np.stack([b, c], axis=1), (data - a).T, rcond=None)[0]
        steps = np.arctan2(cos_sin[1], cos_sin[0])
    return steps


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
) -> SLMResponse:
    """Show the two-region pattern for each gray level (sample out of the beam), fit, build ``gamma``.

    ``levels``: increasing gray levels to measure (default: all). Frames go to ``log``; the SLM is
    blanked afterwards. Raises ``ValueError`` on saturated frames, too little modulation
    (:data:`MIN_MODULATION_SNR`) or points off the ellipse (:data:`MAX_ELLIPSE_RESIDUAL`).
    """
    slm = bench.slm.slm
    total = int(slm.bitresolution)
    levels = list(range(total)) if levels is None else sorted(set(levels))
    if len(levels) < 2 or levels[0] < 0 or levels[-1] >= total or not 0 <= reference_level < total:
        raise ValueError(f"levels and reference_level must be distinct gray levels in [0, {total - 1}], at least two")
    if reference_level not in levels:
        levels = sorted([*levels, reference_level])
    cols = bench.slm.roi[1]
    right = slice(cols.start + (cols.stop - cols.start) // 2, None)  # the whole panel right of the ROI's centre
    ceiling = camera_ceiling_adu(bench.camera)
    measured = []
    try:
        with bench.lit():
            for level in levels:
                display = np.full(slm.shape, reference_level, dtype=slm.dtype)
                display[:, right] = level
                slm.set_phase(display, phase_correct=False, settle=True)
                shots = np.stack([log.add("lit", bench.capture(), level=level) for _ in range(frames)])
                refuse_saturated(shots, ceiling, f"slm-response level {level}")
                measured.append(shots.mean(axis=0))
    finally:
        bench.slm.blank()
    steps, snr, ellipse_residual, rank_residual = phase_steps(np.stack(measured))
    system = bench.spec.system
    gamma = response_from_steps(steps, np.array(levels), total, reference_level, system.slm.gamma_sign)
    if gamma[-1] < gamma[0]:  # the sign of the ellipse's parametrisation is arbitrary; the stroke grows
        gamma = response_from_steps(-steps, np.array(levels), total, reference_level, system.slm.gamma_sign)
    result = SLMResponse(
        gamma=tuple(float(g) for g in gamma),
        measured_levels=tuple(levels),
        reference_level=reference_level,
        phase_range_rad=float(TWO_PI * abs(gamma[-1] - gamma[0]) * total / (total - 1)),
        modulation_snr=snr,
        ellipse_residual=ellipse_residual,
        rank_residual=rank_residual,
    )
    log.set_result(result.to_dict())
    if snr < MIN_MODULATION_SNR:
        raise ValueError(
            f"interference modulation only {snr:.3g} x the noise (< {MIN_MODULATION_SNR:g}): raise the exposure, "
            "take the sample out of the beam, check that the camera sees the Fourier plane"
        )
    if ellipse_residual > MAX_ELLIPSE_RESIDUAL:
        raise ValueError(
            f"interference points leave the ellipse by {ellipse_residual:.3g} rms (> {MAX_ELLIPSE_RESIDUAL}): "
            "frames too noisy, light unstable, or a stroke too short to measure this way"
        )
    return result
