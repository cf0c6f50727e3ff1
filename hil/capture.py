"""Capture a coded diffraction pattern on a bench: dark frames, averaged frames, saturation, storage.

Every frame goes to an HDF5 file as soon as it is read (datasets ``dark`` and ``frames``, shape
``(count, height, width)``, with a per-frame timestamp), so an error or Ctrl-C later in the
sequence loses nothing already captured. The file's attributes hold the provenance: exposure,
mask, bench and system configs, versions, git commit.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hil.bench import Bench
from hil.config import to_mapping
from hil.provenance import record


class SaturationError(RuntimeError):
    """Too many pixels at the camera's ceiling: the CDP's bright speckles would be clipped."""


@dataclass(frozen=True)
class CaptureSettings:
    """How to record one CDP.

    Attributes:
        frames: light frames averaged into the CDP.
        dark_frames: frames with the light off (shutter closed, laser off), averaged and subtracted.
        exposure_s: camera exposure; None keeps the bench config's.
        max_saturated_fraction: largest tolerated fraction of saturated pixels per frame.
    """

    frames: int = 4
    dark_frames: int = 4
    exposure_s: float | None = None
    max_saturated_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.frames < 1 or self.dark_frames < 0:
            raise ValueError(f"need frames >= 1 and dark_frames >= 0, got {self.frames}, {self.dark_frames}")
        if not 0 <= self.max_saturated_fraction < 1:
            raise ValueError(f"max_saturated_fraction must be in [0, 1), got {self.max_saturated_fraction}")


@dataclass
class CaptureResult:
    """Dark-subtracted mean CDP in ADU ``(height, width)``, float64, and where the raw frames are."""

    cdp_adu: np.ndarray
    dark_adu: np.ndarray
    exposure_s: float
    saturated_fraction: float
    path: Path


def _saturation_level(camera: object) -> float:
    """ADU value of a saturated pixel: slmsuite's ``bitresolution - 1`` (summed frames scale it)."""
    return float(getattr(camera, "bitresolution", 2 ** getattr(camera, "bitdepth", 16)) - 1)


def _record_frames(h5: h5py.File, name: str, bench: Bench, count: int, shape: tuple[int, int]) -> np.ndarray:
    frames = h5.create_dataset(name, shape=(count, *shape), dtype="f8")
    stamps = h5.create_dataset(f"{name}_time_unix_s", shape=(count,), dtype="f8")
    for i in range(count):
        frame = np.asarray(bench.capture(), dtype=np.float64)
        if frame.shape != shape:
            raise ValueError(f"camera frame shape {frame.shape} (height, width) changed from {shape}")
        frames[i], stamps[i] = frame, time.time()
        h5.flush()
    return frames[()]


def capture_cdp(bench: Bench, mask_rad: np.ndarray, settings: CaptureSettings, path: Path) -> CaptureResult:
    """Show ``mask_rad`` ``(n, n)``, record dark then light frames into ``path`` (HDF5), check saturation.

    The light is switched on only for the light frames and off again on every exit path; the
    bench's own context manager still owns the full safe state. The file also holds what
    reconstruction needs: the mask, the system config and the camera's gain and QE
    (:func:`hil.reconstruct.load_capture`).
    """
    exposure_s = bench.set_exposure(settings.exposure_s) if settings.exposure_s is not None else None
    exposure_s = float(bench.camera.get_exposure()) if exposure_s is None else exposure_s
    bench.show_mask(mask_rad)
    shape = tuple(np.asarray(bench.capture()).shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5.attrs["provenance_json"] = json.dumps(
            record(
                {"capture": to_mapping(settings), "bench": to_mapping(bench.spec.config)},
                seed=bench.spec.config.seed,
                exposure_s=exposure_s,
                mask_sha256=hashlib.sha256(np.ascontiguousarray(mask_rad, dtype=np.float64).tobytes()).hexdigest(),
            )
        )
        camera_spec = getattr(bench.camera, "spec", bench.spec.system.camera)
        h5.attrs["system_json"] = json.dumps(to_mapping(bench.spec.system))
        h5.attrs["camera_spec_json"] = json.dumps(to_mapping(camera_spec))
        h5.attrs["exposure_s"] = exposure_s
        h5.create_dataset("mask_rad", data=np.asarray(mask_rad, dtype=np.float64))
        bench.light_off()
        dark = _record_frames(h5, "dark", bench, settings.dark_frames, shape) if settings.dark_frames else None
        bench.light_on()
        try:
            frames = _record_frames(h5, "frames", bench, settings.frames, shape)
        finally:
            bench.light_off()
        level = _saturation_level(bench.camera)
        saturated = float((frames >= level).mean(axis=(1, 2)).max())
        h5.attrs["saturated_fraction"] = saturated
        if saturated > settings.max_saturated_fraction:
            raise SaturationError(
                f"{saturated:.2%} of pixels saturated (>= {level:g} ADU) at exposure {exposure_s:g} s, "
                f"above max_saturated_fraction {settings.max_saturated_fraction:g}: lower the exposure or the "
                f"laser power (frames kept in {path})"
            )
        dark_mean = dark.mean(axis=0) if dark is not None else np.zeros(shape)
        cdp = frames.mean(axis=0) - dark_mean
        h5.create_dataset("cdp_adu", data=cdp)
    return CaptureResult(cdp, dark_mean, exposure_s, saturated, path)
