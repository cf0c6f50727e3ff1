"""Photon-transfer calibration of the camera: dark offset, read noise, conversion gain, saturation.

Method (EMVA 1288 style, from frames only):

* dark frames (light off): offset = mean ADU; read noise = std of frame differences / sqrt(2),
  which cancels the fixed pattern, converted to e- with the gain below;
* pairs of lit frames at several exposures: for each pair, pixels are grouped by level
  (quantiles of the other pairs' mean) and each group gives one point (mean signal above the offset, ADU; half the
  variance of the pair's difference, ADU²). Shot noise makes ``var = gain * signal + read_var``,
  so the slope of a weighted straight-line fit is the conversion gain (ADU/e-). Any illumination works,
  speckle included: the difference of two frames holds noise only;
* saturation: the highest ADU reached by many pixels at once; pixels near it are left out of
  the fit (clipping shrinks their variance). Below the ADC ceiling it is the full well.

The dark frames are verified dark (:mod:`calibration.frame_checks`): frames that hold the lit
pattern are refused rather than read as offset and read noise. Quantum efficiency needs a
calibrated light source and is not measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from calibration.frame_checks import camera_ceiling_adu, refuse_lit_dark
from hil.bench.bench import Bench
from hil.bench.frame_log import FrameLog

CLIPPED_PIXELS_MIN = 10  # pixels sharing the top value before it counts as saturation
FIT_MAX_FRACTION = 0.7  # pixels above this fraction of the saturation signal stay out of the fit
SIGNAL_MIN_READ_NOISE = 10  # the brightest group must exceed this many read-noise sigmas


@dataclass(frozen=True)
class Radiometry:
    """Camera constants measured from frames (units in the names).

    ``saturation_adu`` / ``full_well_e`` are None when no frame reached saturation (full well
    is also None when the ADC ceiling, not the pixel, saturates).
    """

    dark_offset_adu: float
    read_noise_e: float
    gain_adu_per_e: float
    saturation_adu: float | None
    full_well_e: float | None
    fit_points: int
    fit_r2: float

    def camera_keys(self) -> dict[str, float]:
        """The measured ``camera:`` keys of ``configs/system.yaml`` (full well only when measured)."""
        keys = {
            "dark_offset_adu": round(self.dark_offset_adu, 3),
            "read_noise_e": round(self.read_noise_e, 4),
            "gain_adu_per_e": round(self.gain_adu_per_e, 5),
        }
        if self.full_well_e is not None:
            keys["full_well_e"] = round(self.full_well_e, 1)
        return keys

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _saturation(frames: np.ndarray) -> float | None:
    top = float(frames.max())
    return top if int((frames >= top).sum()) >= CLIPPED_PIXELS_MIN else None


def _fit_line(x: np.ndarray, v: np.ndarray, sizes: np.ndarray, rounds: int = 3) -> tuple[float, float]:
    """Straight line ``v = slope x + intercept`` by iteratively reweighted least squares: a group
    variance from ``m`` pixels has standard error ``v sqrt(2 / (m - 1))``, taken from the fitted
    line (weights from the noisy ``v`` itself would bias the slope low)."""
    slope, intercept = np.polyfit(x, v, 1)
    for _ in range(rounds):
        predicted = np.maximum(slope * x + intercept, 1e-12)
        slope, intercept = np.polyfit(x, v, 1, w=np.sqrt((sizes - 1) / 2) / predicted)
    return float(slope), float(intercept)


def photon_transfer(
    dark_adu: np.ndarray,
    lit_adu: list[np.ndarray],
    adc_max_adu: float | None = None,
    groups: int = 16,
) -> Radiometry:
    """Fit the camera constants from dark frames ``(N >= 2, height, width)`` and lit frames.

    ``lit_adu`` holds one array ``(pairs, 2, height, width)`` per light level (exposure): frames
    taken under the same light. With two or more pairs per level, the pixels of each pair are
    grouped by the mean of the *other* pairs, so the grouping is independent of the pair's noise
    (grouping by the pair's own mean biases the gain about 1 % low through the read noise).
    ``adc_max_adu`` (the camera's top code) tells a full well from ADC clipping.
    """
    dark = np.asarray(dark_adu, dtype=np.float64)
    if dark.ndim != 3 or dark.shape[0] < 2:
        raise ValueError(f"need at least 2 dark frames (N, height, width), got shape {dark.shape}")
    levels = [np.asarray(level, dtype=np.float64) for level in lit_adu]
    if not levels or any(level.ndim != 4 or level.shape[:2] < (1, 2) for level in levels):
        raise ValueError("need lit frames as arrays (pairs, 2, height, width), one per light level")
    offset_adu = float(dark.mean())
    read_var_adu = float(np.mean([np.var(dark[i + 1] - dark[i], ddof=1) / 2 for i in range(len(dark) - 1)]))
    saturation_adu = _saturation(np.concatenate(levels))
    ceiling = np.inf if saturation_adu is None else offset_adu + FIT_MAX_FRACTION * (saturation_adu - offset_adu)
    signal, variance, sizes = [], [], []
    for level in levels:
        means = level.mean(axis=1).reshape(len(level), -1)
        for i, (a, b) in enumerate(level):
            mean, diff = means[i], (a - b).ravel()
            key = np.delete(means, i, axis=0).mean(axis=0) if len(level) > 1 else mean
            usable = np.flatnonzero((key < ceiling) & (mean < ceiling))  # never max(a, b): it selects on |a - b|
            order = usable[np.argsort(key[usable], kind="stable")]
            for group in np.array_split(order, groups):
                if group.size >= 8:
                    signal.append(mean[group].mean() - offset_adu)
                    variance.append(np.var(diff[group], ddof=1) / 2)
                    sizes.append(group.size)
    x, v = np.asarray(signal), np.asarray(variance)
    if len(x) < 3 or x.max(initial=0) < SIGNAL_MIN_READ_NOISE * np.sqrt(read_var_adu) + 1:
        raise ValueError(
            f"{len(x)} photon-transfer points, brightest {x.max(initial=0):.3g} ADU above the dark: "
            "use brighter (unsaturated) frames"
        )
    gain, intercept = _fit_line(x, v, np.asarray(sizes))
    if gain <= 0:
        raise ValueError(f"photon-transfer slope {gain:.3g} ADU/e- is not positive: frames hold no shot noise")
    r2 = 1 - float(np.sum((v - (gain * x + intercept)) ** 2) / np.sum((v - v.mean()) ** 2))
    full_well_e = None
    if saturation_adu is not None and (adc_max_adu is None or saturation_adu < adc_max_adu):
        full_well_e = (saturation_adu - offset_adu) / gain
    return Radiometry(
        dark_offset_adu=offset_adu,
        read_noise_e=float(np.sqrt(read_var_adu)) / float(gain),
        gain_adu_per_e=float(gain),
        saturation_adu=saturation_adu,
        full_well_e=full_well_e,
        fit_points=len(x),
        fit_r2=r2,
    )


def measure_radiometry(
    bench: Bench,
    log: FrameLog,
    exposures_s: list[float],
    mask_rad: np.ndarray,
    pairs: int = 2,
    dark_frames: int = 8,
) -> Radiometry:
    """Record dark frames, then ``pairs`` frame pairs per exposure with ``mask_rad`` shown; fit.

    Raises ``ValueError`` when the dark frames hold the lit pattern (light reaches the camera with
    the light off: :func:`~calibration.frame_checks.refuse_lit_dark`). Every frame goes to ``log``.
    The light is on only for the lit frames; the camera's exposure is restored afterwards.
    """
    if dark_frames < 2 or pairs < 1 or not exposures_s:
        raise ValueError("need dark_frames >= 2, pairs >= 1 and at least one exposure")
    exposure_before_s = float(bench.camera.get_exposure())
    bench.show_mask(mask_rad)
    try:
        bench.light_off()
        dark = np.stack([log.add("dark", bench.capture(), exposure_s=exposure_before_s) for _ in range(dark_frames)])
        lit: list[np.ndarray] = []
        with bench.lit():
            for exposure_s in exposures_s:
                actual_s = bench.set_exposure(exposure_s)
                frames = [log.add("lit", bench.capture(), exposure_s=actual_s) for _ in range(2 * pairs)]
                lit.append(np.stack(frames).reshape(pairs, 2, *frames[0].shape))
    finally:
        bench.set_exposure(exposure_before_s)
    dark_ok = refuse_lit_dark(dark, lit[0].reshape(-1, *dark.shape[1:]).mean(axis=0))
    result = photon_transfer(dark, lit, camera_ceiling_adu(bench.camera))
    log.set_result({**result.to_dict(), "dark_check": dark_ok.to_dict()})
    return result
