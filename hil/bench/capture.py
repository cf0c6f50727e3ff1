"""Capture a coded diffraction pattern on a bench: dark frames, averaged frames, saturation, storage.

Every frame goes to an HDF5 file as soon as it is read (:class:`hil.bench.frame_log.FrameLog`: datasets
``auto_exposure/00000``, ``dark/00000``, ``frames/00000``, ... each ``(height, width)`` with its
timestamp), so an error or Ctrl-C later in the sequence loses nothing already captured. The file's
attributes hold the provenance: exposure, frame counts, mask, bench and system configs, versions,
git commit. Frames are checked against the calibrated sensor (:mod:`hil.bench.signals`): lit dark
frames, light frames without signal and saturated frames are errors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hil.bench.bench import Bench
from hil.bench.exposure import auto_expose
from hil.bench.frame_log import FrameLog
from hil.bench.signals import SaturationError, check_dark, check_signal, saturated_fraction, saturation_level
from hil.common.config import to_mapping

__all__ = ["CaptureResult", "CaptureSettings", "SaturationError", "capture_cdp"]


@dataclass(frozen=True)
class CaptureSettings:
    """How to record one CDP.

    Attributes:
        frames: light frames averaged into the CDP.
        dark_frames: frames with the light off (shutter closed, laser off), averaged and subtracted;
            0 subtracts the calibrated ``dark_offset_adu`` of the system config instead.
        exposure_s: camera exposure; None keeps the bench config's.
        max_saturated_fraction: largest tolerated fraction of saturated pixels per frame.
        auto_exposure: target peak as a fraction of full scale (e.g. 0.5); None keeps the exposure.
    """

    frames: int = 4
    dark_frames: int = 4
    exposure_s: float | None = None
    max_saturated_fraction: float = 0.0
    auto_exposure: float | None = None

    def __post_init__(self) -> None:
        if self.frames < 1 or self.dark_frames < 0:
            raise ValueError(f"need frames >= 1 and dark_frames >= 0, got {self.frames}, {self.dark_frames}")
        if not 0 <= self.max_saturated_fraction < 1:
            raise ValueError(f"max_saturated_fraction must be in [0, 1), got {self.max_saturated_fraction}")
        if self.auto_exposure is not None and not 0 < self.auto_exposure < 1:
            raise ValueError(f"auto_exposure must be a fraction of full scale in (0, 1), got {self.auto_exposure}")


@dataclass
class CaptureResult:
    """Dark-subtracted mean of ``frames`` CDPs in ADU ``(height, width)``, float64, and where the raw frames are."""

    cdp_adu: np.ndarray
    dark_adu: np.ndarray
    exposure_s: float
    saturated_fraction: float
    frames: int
    path: Path


def _grab(bench: Bench, log: FrameLog, group: str, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """``count`` frames into ``log`` as they arrive; returns them stacked ``(count, height, width)``."""
    frames = []
    for _ in range(count):
        frame = log.add(group, bench.capture())
        if frame.shape != shape:
            raise ValueError(f"camera frame shape {frame.shape} (height, width) changed from {shape}")
        frames.append(frame)
    return np.stack(frames)


def dark_level(bench: Bench, log: FrameLog, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """Dark level ``(height, width)`` in ADU: the mean of ``count`` dark frames (light off, stored,
    checked against the calibrated sensor), or the calibrated ``dark_offset_adu`` when ``count`` is 0."""
    camera = bench.spec.system.camera
    if not count:
        return np.full(shape, camera.dark_offset_adu)
    bench.light_off()
    dark = _grab(bench, log, "dark", count, shape)
    check_dark(dark, camera)
    return dark.mean(axis=0)


def capture_cdp(bench: Bench, mask_rad: np.ndarray, settings: CaptureSettings, path: Path) -> CaptureResult:
    """Show ``mask_rad`` ``(n, n)``, record dark then light frames into ``path`` (HDF5), check them.

    The light is switched on only for auto-exposure and the light frames and off again on every
    exit path; the bench's own context manager still owns the full safe state. The file also
    holds what reconstruction needs: the mask, the frame count, the system config and the
    calibrated camera (:func:`hil.bench.reconstruct.load_capture`).
    """
    camera = bench.spec.system.camera  # the calibrated sensor (hil calibrate radiometry)
    exposure_s = bench.set_exposure(settings.exposure_s) if settings.exposure_s is not None else None
    exposure_s = float(bench.camera.get_exposure()) if exposure_s is None else exposure_s
    bench.show_mask(mask_rad)
    shape = tuple(np.asarray(bench.capture()).shape)
    settings_record = {"capture": to_mapping(settings), "bench": to_mapping(bench.spec.config)}
    with FrameLog(path, "capture", settings_record, seed=bench.spec.config.seed) as log:
        mask_bytes = np.ascontiguousarray(mask_rad, dtype=np.float64).tobytes()
        log.set_attrs(
            system_json=json.dumps(to_mapping(bench.spec.system)),
            camera_spec_json=json.dumps(to_mapping(camera)),
            mask_sha256=hashlib.sha256(mask_bytes).hexdigest(),
            frames=settings.frames,
            dark_frames=settings.dark_frames,
        )
        log.store("mask_rad", np.asarray(mask_rad, dtype=np.float64))
        if settings.auto_exposure is not None:
            with bench.lit():
                exposure_s = auto_expose(bench, settings.auto_exposure, log)
        log.set_attrs(exposure_s=exposure_s)
        dark_mean = dark_level(bench, log, settings.dark_frames, shape)
        with bench.lit():
            frames = _grab(bench, log, "frames", settings.frames, shape)
        level = saturation_level(bench.camera)
        saturated = saturated_fraction(frames, level)
        log.set_attrs(saturated_fraction=saturated)
        if saturated > settings.max_saturated_fraction:
            raise SaturationError(
                f"{saturated:.2%} of pixels saturated (>= {level:g} ADU) at exposure {exposure_s:g} s, "
                f"above max_saturated_fraction {settings.max_saturated_fraction:g}: lower the exposure or the "
                f"laser power (frames kept in {path})"
            )
        check_signal(frames, dark_mean, camera)
        cdp = frames.mean(axis=0) - dark_mean
        log.store("cdp_adu", cdp)
    return CaptureResult(cdp, dark_mean, exposure_s, saturated, settings.frames, path)
