"""Checks that calibration frames can carry the measurement: not saturated, dark frames dark, enough signal.

Each check raises ``ValueError`` with one line naming the problem and what to change.

* Saturation: any pixel at the camera's top code (``bitresolution - 1``) clips the signal.
* Dark frames are dark: the mean of the dark frames must not correlate with a lit frame of the
  same mask. Light that still reaches the camera with the light off (a shutter that does not
  close, a second source, room light on the same path) carries the lit pattern; fixed-pattern
  noise and read noise do not. The test statistic is the Pearson correlation ``r`` times
  ``sqrt(pixels)`` (standard normal without leak); the leak fraction is the regression slope.
* Signal: the lit frame's mean must stand above the dark level by several noise sigmas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEAK_Z_MAX = 6.0  # correlation sigmas above which dark frames are declared lit
SIGNAL_MIN_SIGMAS = 10.0  # lit mean over dark, in units of the per-pixel dark noise


def camera_ceiling_adu(camera: object) -> float | None:
    """The top code of a slmsuite camera (``bitresolution - 1``), or None if it does not say."""
    top = getattr(camera, "bitresolution", None)
    return None if top is None else float(top) - 1


def refuse_saturated(frames: np.ndarray, ceiling_adu: float | None, what: str) -> None:
    """Refuse frames with any pixel at ``ceiling_adu`` (the clipped signal would bias the fit)."""
    if ceiling_adu is None:
        return
    frames = np.asarray(frames)
    count = int((frames >= ceiling_adu).sum())
    if count:
        shots = frames.reshape(-1, *frames.shape[-2:]).shape[0]
        raise ValueError(
            f"{what}: {count} saturated pixels (at {ceiling_adu:g} ADU) in {shots} frame(s): "
            "lower the exposure or the laser power"
        )


@dataclass(frozen=True)
class DarkCheck:
    """How much of a lit frame's pattern the dark frames hold: correlation, its z-score, leak fraction."""

    correlation: float
    z: float
    leak_fraction: float

    def to_dict(self) -> dict[str, float]:
        return {"correlation": self.correlation, "z": self.z, "leak_fraction": self.leak_fraction}


def dark_check(dark_adu: np.ndarray, lit_adu: np.ndarray) -> DarkCheck:
    """Compare the mean of ``dark_adu`` ``(N, height, width)`` with a lit frame ``(height, width)`` of the same mask."""
    dark = np.asarray(dark_adu, dtype=np.float64).reshape(-1, *np.shape(lit_adu)).mean(axis=0).ravel()
    lit = np.asarray(lit_adu, dtype=np.float64).ravel()
    dark, lit = dark - dark.mean(), lit - lit.mean()
    norm = math.sqrt(float(dark @ dark) * float(lit @ lit))
    correlation = float(dark @ lit) / norm if norm > 0 else 0.0
    leak = float(dark @ lit) / float(lit @ lit) if float(lit @ lit) > 0 else 0.0
    return DarkCheck(correlation, correlation * math.sqrt(lit.size), leak)


def refuse_lit_dark(dark_adu: np.ndarray, lit_adu: np.ndarray) -> DarkCheck:
    """Raise if the dark frames hold the lit pattern (:data:`LEAK_Z_MAX` sigmas); return the check."""
    check = dark_check(dark_adu, lit_adu)
    if check.z > LEAK_Z_MAX:
        raise ValueError(
            f"dark frames are not dark: they hold the lit pattern (correlation {check.correlation:.3f}, "
            f"{check.z:.0f} sigma; about {100 * check.leak_fraction:.2g} % of the light): light reaches the camera "
            "with the light off (shutter, second source, room light)"
        )
    return check


def refuse_no_signal(lit_adu: np.ndarray, dark_adu: np.ndarray, what: str) -> float:
    """Raise if the lit frame's mean is not :data:`SIGNAL_MIN_SIGMAS` dark-noise sigmas above the dark
    mean (no light, wrong exposure); return that margin in sigmas."""
    dark = np.asarray(dark_adu, dtype=np.float64)
    noise = float(np.std(dark[-1] - dark[0]) / math.sqrt(2)) if dark.ndim == 3 and len(dark) > 1 else float(dark.std())
    margin = (float(np.mean(lit_adu)) - float(dark.mean())) / max(noise, 1e-12)
    if margin < SIGNAL_MIN_SIGMAS:
        raise ValueError(
            f"{what}: the lit frame is only {margin:.3g} noise sigmas above the dark frames "
            f"(< {SIGNAL_MIN_SIGMAS:g}): no light reaches the camera, or the exposure is too short"
        )
    return margin
