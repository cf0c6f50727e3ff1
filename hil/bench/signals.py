"""Honest signals: a frame is checked against the calibrated sensor before anything is built on it.

The calibrated sensor is the system config's ``camera`` section (``hil calibrate radiometry`` writes
it): ``dark_offset_adu``, ``read_noise_e`` and ``gain_adu_per_e``. Three checks, each an error
(:class:`SignalError`, a ``ValueError``: one line and exit 2 in the CLI), never a reconstruction:

* a *dark* frame whose mean lies more than the tolerance above the calibrated offset, or whose
  pixel spread exceeds the read noise by more than it, saw light (shutter not closing, room light)
  or was taken against a stale radiometry calibration;
* a *light* frame whose mean excess over the dark level is not significant (five standard errors of a frame's
  mean under the read noise, :func:`signal_tolerance_adu`) carries no signal; a frame of 5 photons per pixel
  (10 dB) is signal however small each pixel's excess;
* a light frame with more saturated pixels than allowed would clip the speckles.

The dark tolerance is ``max(1 ADU, read noise in ADU)``: about one photon per pixel at unit gain.
"""

from __future__ import annotations

import math

import numpy as np

from hil.physics.camera import CameraSpec


class SignalError(ValueError):
    """A frame that is not what the procedure needs (lit dark frame, no signal, saturated)."""


class SaturationError(SignalError):
    """Too many pixels at the camera's ceiling: the CDP's bright speckles would be clipped."""


def read_noise_adu(camera: CameraSpec) -> float:
    return camera.read_noise_e * camera.gain_adu_per_e


def tolerance_adu(camera: CameraSpec) -> float:
    """How far a frame's mean may sit from the dark level and still count as dark (ADU)."""
    return max(1.0, read_noise_adu(camera))


def saturation_level(camera: object) -> float:
    """ADU value of a saturated pixel: slmsuite's ``bitresolution - 1`` of the camera device."""
    return float(getattr(camera, "bitresolution", 2 ** getattr(camera, "bitdepth", 16)) - 1)


def check_dark(frames_adu: np.ndarray, camera: CameraSpec) -> None:
    """Refuse dark frames ``(count, height, width)`` that are not dark for the calibrated ``camera``."""
    tol, noise = tolerance_adu(camera), read_noise_adu(camera)
    for index, frame in enumerate(frames_adu):
        excess, spread = float(frame.mean()) - camera.dark_offset_adu, float(frame.std())
        if excess > tol or spread > noise + tol:
            raise SignalError(
                f"dark frame {index} is not dark: mean {excess:+.3g} ADU from the calibrated offset "
                f"{camera.dark_offset_adu:g} ADU, spread {spread:.3g} ADU against read noise {noise:.3g} ADU "
                f"(tolerance {tol:.3g} ADU): light reaches the camera with the light off (shutter, room light) "
                "or the radiometry calibration is stale (hil calibrate radiometry)"
            )


def signal_tolerance_adu(camera: CameraSpec, pixels: int) -> float:
    """Smallest mean excess over the dark level (ADU) that counts as signal in a frame of ``pixels``: five standard
    errors of its mean under the read noise (at least half an ADU of rounding per pixel), and at least 0.05 ADU."""
    return max(0.05, 5 * max(read_noise_adu(camera), 0.5) / math.sqrt(max(pixels, 1)))


def signal_excess(frame_adu: np.ndarray, dark_level_adu: np.ndarray | float, camera: CameraSpec) -> tuple[float, float]:
    """(mean excess of a light frame ``(height, width)`` over the dark level, its signal tolerance), in ADU."""
    return float(np.mean(frame_adu - dark_level_adu)), signal_tolerance_adu(camera, np.size(frame_adu))


def has_signal(frame_adu: np.ndarray, dark_level_adu: np.ndarray | float, camera: CameraSpec) -> bool:
    """Whether a light frame ``(height, width)`` stands significantly above the dark level."""
    signal, tol = signal_excess(frame_adu, dark_level_adu, camera)
    return signal > tol


def check_signal(frames_adu: np.ndarray, dark_level_adu: np.ndarray | float, camera: CameraSpec) -> None:
    """Refuse light frames ``(count, height, width)`` whose mean sits at the dark level (no light arrived)."""
    for index, frame in enumerate(frames_adu):
        signal, tol = signal_excess(frame, dark_level_adu, camera)
        if not signal > tol:
            raise SignalError(
                f"light frame {index} has no signal: mean {signal:.3g} ADU above the dark level (tolerance "
                f"{tol:.3g} ADU): check the laser, shutter and exposure"
            )


def saturated_fraction(frames_adu: np.ndarray, level_adu: float) -> float:
    """Largest fraction of pixels at or above ``level_adu`` in any of ``frames_adu`` ``(count, height, width)``."""
    return float((np.asarray(frames_adu) >= level_adu).mean(axis=(-2, -1)).max())
