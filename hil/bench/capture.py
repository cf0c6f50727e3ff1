"""Capture a coded diffraction pattern on a bench: dark frames, averaged frames, saturation, storage.

Every frame goes to an HDF5 file as soon as it is read (:class:`hil.bench.frame_log.FrameLog`: datasets
``auto_exposure/00000``, ``dark/00000``, ``frames/00000``, ... each ``(height, width)`` with its
timestamp), so an error or Ctrl-C later in the sequence loses nothing already captured. The file's
attributes hold the provenance: exposure, frame counts, mask, bench and system configs, versions,
git commit. Frames are checked against the calibrated sensor (:mod:`hil.bench.signals`): lit dark
frames, light frames without signal and saturated frames are errors.

The file is self-contained: it records the bench's calibrated model (:class:`~hil.physics.bench_model.BenchModel`)
that reconstruction uses, i.e. the system config (with the measured SLM response and radiometry), the camera
registration (attribute ``registration_json``, :meth:`Registration.to_dict`, with its SHA-256 in
``registration_sha256``) and the SLM-plane field (datasets ``field/amplitude`` and ``field/phase_rad``, with
Fletcher-32 like the frames), plus the names and SHA-256 of the calibration files they came from
(``calibration_files_json``). :func:`read_model` reads them back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hil.bench.bench import Bench
from hil.bench.config import BenchSpec
from hil.bench.exposure import auto_expose
from hil.bench.frame_log import CaptureError, FrameLog, read_array, read_json_attr
from hil.bench.signals import SaturationError, check_dark, check_signal, saturated_fraction, saturation_level
from hil.common.config import ConfigError, from_mapping, to_mapping
from hil.physics.bench_model import BenchModel
from hil.physics.registration import Registration
from hil.physics.system import SystemConfig

__all__ = ["CaptureResult", "CaptureSettings", "SaturationError", "capture_cdp", "read_model", "record_model"]


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


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_model(log: FrameLog, spec: BenchSpec, model: BenchModel) -> None:
    """Write the bench's calibrated ``model`` (``spec.model()``: system, registration, field; see the module
    docstring) into ``log``, with the calibration files it came from."""
    files = {
        key: {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for key, path in spec.calibration_files.items()
    }
    log.set_attrs(system_json=json.dumps(to_mapping(model.system)), calibration_files_json=json.dumps(files))
    if model.registration is not None:
        text = json.dumps(model.registration.to_dict())
        log.set_attrs(registration_json=text, registration_sha256=_sha256_text(text))
    if model.field is not None:
        log.store("field/amplitude", np.abs(model.field))
        log.store("field/phase_rad", np.angle(model.field))


def _read_registration(h5: h5py.File) -> Registration:
    where = f"{h5.filename}: attribute registration_json"
    text = h5.attrs["registration_json"]
    text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
    if h5.attrs.get("registration_sha256") != _sha256_text(text):
        raise CaptureError(f"{where}: SHA-256 missing or does not match (corrupted or edited)")
    data = read_json_attr(h5, "registration_json")
    try:
        matrix = np.asarray(data["camera_to_model"], dtype=np.float64)
        shapes = tuple(data["model_shape"]), tuple(data["camera_shape"])
        if matrix.shape != (2, 3) or not all(len(s) == 2 and all(isinstance(v, int) for v in s) for s in shapes):
            raise ValueError("camera_to_model must be 2 x 3 and the shapes two integers")
        return Registration(matrix, shapes[0], shapes[1], float(data["correlation"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CaptureError(f"{where}: not a registration ({exc})") from None


def read_model(h5: h5py.File, registration: Registration | None = None) -> BenchModel:
    """The calibrated model a capture file records (:func:`record_model`); ``registration`` replaces the
    recorded one. A :class:`CaptureError` names what is malformed."""
    try:
        system = from_mapping(SystemConfig, read_json_attr(h5, "system_json"), where=f"{h5.filename}:system_json")
    except ConfigError as exc:
        raise CaptureError(str(exc)) from None
    if registration is None and "registration_json" in h5.attrs:
        registration = _read_registration(h5)
    field = None
    if "field" in h5:
        amplitude = read_array(h5, "field/amplitude", ndim=2)
        field = amplitude * np.exp(1j * read_array(h5, "field/phase_rad", shape=amplitude.shape))
    try:
        model = BenchModel(system, registration, field)
        model.detector  # noqa: B018 - the registration's matrix is checked here, not at the first reconstruction
        return model
    except ValueError as exc:
        raise CaptureError(f"{h5.filename}: the recorded calibrated model does not fit together: {exc}") from None


def capture_cdp(bench: Bench, mask_rad: np.ndarray, settings: CaptureSettings, path: Path) -> CaptureResult:
    """Show ``mask_rad`` ``(n, n)``, record dark then light frames into ``path`` (HDF5), check them.

    The light is switched on only for auto-exposure and the light frames and off again on every
    exit path; the bench's own context manager still owns the full safe state. The file also
    holds what reconstruction needs: the mask, the frame count and the bench's calibrated model
    (:func:`record_model`; read by :func:`hil.bench.reconstruct.load_capture`).
    """
    camera = bench.spec.system.camera  # the calibrated sensor (hil calibrate radiometry)
    model = bench.spec.model()  # a broken calibration file stops the capture before any frame is taken
    exposure_s = bench.set_exposure(settings.exposure_s) if settings.exposure_s is not None else None
    exposure_s = float(bench.camera.get_exposure()) if exposure_s is None else exposure_s
    bench.show_mask(mask_rad)
    shape = tuple(np.asarray(bench.capture()).shape)
    settings_record = {"capture": to_mapping(settings), "bench": to_mapping(bench.spec.config)}
    with FrameLog(path, "capture", settings_record, seed=bench.spec.config.seed) as log:
        mask_bytes = np.ascontiguousarray(mask_rad, dtype=np.float64).tobytes()
        record_model(log, bench.spec, model)
        log.set_attrs(
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
