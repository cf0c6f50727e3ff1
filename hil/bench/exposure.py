"""Auto-exposure: set the camera so the brightest pixel sits at a target fraction of full scale.

Used by capture and live with the light on and the mask shown. Every test frame is kept in the
frame log (group ``auto_exposure``, with its exposure) so nothing captured is lost.
"""

from __future__ import annotations

from hil.bench.bench import Bench
from hil.bench.frame_log import FrameLog
from hil.bench.signals import SaturationError, saturation_level

MAX_STEPS = 8
MAX_GAIN = 100.0  # largest exposure change per step
ACCEPT = (0.8, 1.05)  # accepted peak / target


def auto_expose(bench: Bench, target_fraction: float, log: FrameLog | None = None) -> float:
    """Adjust the exposure until the peak pixel is ``target_fraction`` of full scale and unsaturated.

    Full scale is the span from the calibrated dark offset to the camera's saturation level. A
    saturated test frame cuts the exposure by ``MAX_GAIN``'s square root; otherwise the exposure is
    scaled by target over measured (clamped to the bench's exposure limits). Returns the exposure
    in seconds; raises :class:`SaturationError` if even the shortest exposure saturates.
    """
    if not 0 < target_fraction < 1:
        raise ValueError(f"auto-exposure target must be in (0, 1) of full scale, got {target_fraction}")
    level = saturation_level(bench.camera)
    offset = bench.spec.system.camera.dark_offset_adu
    low_s, high_s = bench.spec.config.camera.exposure_limits_s
    exposure_s = float(bench.camera.get_exposure())
    for _ in range(MAX_STEPS):
        frame = bench.capture()
        if log is not None:
            log.add("auto_exposure", frame, exposure_s=exposure_s)
        peak = float(frame.max())
        if peak >= level:
            wanted_s = exposure_s / MAX_GAIN**0.5
        else:
            fraction = (peak - offset) / (level - offset)
            if ACCEPT[0] <= fraction / target_fraction <= ACCEPT[1]:
                return exposure_s
            wanted_s = exposure_s * min(MAX_GAIN, target_fraction / max(fraction, 1 / MAX_GAIN))
        wanted_s = min(max(wanted_s, low_s), high_s)
        if wanted_s == exposure_s:  # at a limit: the best this bench can do
            break
        exposure_s = bench.set_exposure(wanted_s)
    if peak >= level:
        raise SaturationError(
            f"auto-exposure: saturated even at {exposure_s:g} s (limit {low_s:g} s): lower the laser power"
        )
    return exposure_s
