"""Live single-snapshot imaging: the camera delivers frames at a set rate, each is decoded as it arrives.

Two threads and a bounded queue. The acquisition loop (the caller's thread, so Ctrl-C lands
there) paces the trigger box at ``fps`` (``FIRE`` after ``ARM``; a bench without one is paced by
the host), reads each frame with the camera's own frame number and timestamp when the camera
gives them (``frame_number``, ``frame_time_s``), and puts it on the queue; when the queue is
full the frame is dropped and its number recorded, so drops are counted, not guessed. The
decoder thread takes whatever waits on the queue (up to ``max_batch`` frames at once), sets aside
saturated frames and frames without signal (stored in group ``rejected`` and counted, as a capture
would refuse them), turns the rest into model units on the camera's own pixels through the bench's
calibrated model (as capture and reconstruct do: nothing is resampled), decodes them, and writes each
phase map, its raw frame and its timing to the HDF5 log at once (:class:`hil.bench.frame_log.FrameLog`),
which also records the calibrated model (:func:`hil.bench.capture.record_model`). On every
exit the loop stops, the decoder finishes the frames already queued, the trigger box is disarmed and
the light switched off; the :class:`~hil.bench.bench.Bench` context manager still owns the full safe state.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from drivers.io_guard import atomic_io
from hil.bench.bench import Bench
from hil.bench.capture import dark_level, record_model
from hil.bench.config import BenchSpec
from hil.bench.exposure import auto_expose
from hil.bench.frame_log import FrameLog
from hil.bench.reconstruct import detector_pixels_per_camera_pixel, frame_to_photons, single_precision, to_model_units
from hil.bench.signals import has_signal, saturated_fraction, saturation_level
from hil.common.config import to_mapping
from hil.learning.coded_system import CodedSystem
from hil.physics.bench_model import BenchModel
from hil.physics.optics import CDPOperator

Decoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B, 1, H, W) camera px, photons (B,) -> (B, n, n)


@dataclass(frozen=True)
class LiveSettings:
    """How to image live.

    Attributes:
        fps: trigger rate (frames per second).
        frames: triggers to send (the run's length).
        queue_frames: frames that may wait for the decoder before new ones are dropped.
        max_batch: most frames the decoder takes at once from the queue.
        dark_frames: dark frames averaged before streaming (0: the calibrated dark offset).
        auto_exposure: target peak as a fraction of full scale before streaming (None: keep).
        keep_frames: also store each raw frame beside its phase map.
    """

    fps: float = 20.0
    frames: int = 100
    queue_frames: int = 8
    max_batch: int = 16
    dark_frames: int = 4
    auto_exposure: float | None = None
    keep_frames: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 10_000:
            raise ValueError(f"fps = {self.fps} is outside (0, 10000]")
        if self.frames < 1 or self.queue_frames < 1 or self.max_batch < 1 or self.dark_frames < 0:
            raise ValueError(f"need frames, queue_frames, max_batch >= 1 and dark_frames >= 0, got {self}")
        if self.auto_exposure is not None and not 0 < self.auto_exposure < 1:
            raise ValueError(f"auto_exposure must be a fraction of full scale in (0, 1), got {self.auto_exposure}")


@dataclass
class LiveStats:
    """What a live run did; ``fps`` is decoded frames over the streaming time."""

    triggers: int = 0
    frames: int = 0  # frames the camera delivered (its own frame counter when it has one)
    decoded: int = 0
    dropped: list[int] = field(default_factory=list)  # frame numbers dropped at the full queue
    rejected: list[int] = field(default_factory=list)  # frame numbers saturated or without signal
    elapsed_s: float = 0.0  # first trigger -> last frame decoded
    latencies_s: list[float] = field(default_factory=list)  # exposure -> phase map written
    decode_s: float = 0.0  # decoder thread: time inside the decoder (device time)
    busy_s: float = 0.0  # decoder thread: time from taking frames to having written them

    @property
    def fps(self) -> float:
        return self.decoded / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self, quantile: float = 0.5) -> float:
        if not self.latencies_s:
            return math.nan
        ordered = sorted(self.latencies_s)
        return 1e3 * ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    @property
    def device_ms_per_frame(self) -> float:
        return 1e3 * self.decode_s / self.decoded if self.decoded else math.nan

    @property
    def overhead_pct(self) -> float:
        """Decoder-thread time beyond the decoder itself (conversion, storage), relative to it."""
        return 100 * (self.busy_s - self.decode_s) / self.decode_s if self.decode_s > 0 else math.nan

    def summary(self) -> dict[str, float | int]:
        return {
            "triggers": self.triggers, "frames": self.frames, "decoded": self.decoded, "dropped": len(self.dropped),
            "rejected": len(self.rejected),
            "fps": self.fps, "latency_ms_median": self.latency_ms(0.5), "latency_ms_p95": self.latency_ms(0.95),
            "device_ms_per_frame": self.device_ms_per_frame, "overhead_pct": self.overhead_pct,
            "elapsed_s": self.elapsed_s,
        }  # fmt: skip


@dataclass
class _Frame:
    number: int
    time_s: float  # perf_counter at exposure (camera) or at read-out (host)
    adu: np.ndarray


class _DecoderThread(threading.Thread):
    """Takes frames off the queue, decodes them in batches, writes each result to the log."""

    def __init__(self, jobs: queue.Queue, stop: threading.Event, screen, convert, decode: Decoder, log, stats, cfg):
        super().__init__(name="hil-live-decoder", daemon=True)
        self.jobs, self.stop, self.screen, self.convert, self.decode = jobs, stop, screen, convert, decode
        self.log, self.stats, self.cfg = log, stats, cfg
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                try:
                    batch = [self.jobs.get(timeout=0.05)]
                except queue.Empty:
                    if self.stop.is_set():
                        return
                    continue
                while len(batch) < self.cfg.max_batch:
                    try:
                        batch.append(self.jobs.get_nowait())
                    except queue.Empty:
                        break
                self._process(batch)
        except BaseException as exc:  # reported by the acquisition loop
            self.error = exc
            self.stop.set()

    def _process(self, frames: list[_Frame]) -> None:
        start = time.perf_counter()
        batch = []
        for frame in frames:  # saturated or empty frames are kept and counted, never decoded
            reason = self.screen(frame.adu)
            if reason is None:
                batch.append(frame)
                continue
            self.log.add("rejected", frame.adu, frame_number=frame.number, camera_time_s=frame.time_s, reason=reason)
            self.stats.rejected.append(frame.number)
        if not batch:
            return
        y, photons = self.convert([f.adu for f in batch])
        decode_start = time.perf_counter()
        phase = self.decode(y, photons)
        decode_end = time.perf_counter()
        for frame, phase_rad in zip(batch, phase.double().numpy(), strict=True):
            attrs = {"frame_number": frame.number, "camera_time_s": frame.time_s}
            if self.cfg.keep_frames:
                self.log.add("frames", frame.adu, **attrs)
            self.log.add("phase_rad", phase_rad, **attrs, latency_s=time.perf_counter() - frame.time_s)
            self.stats.latencies_s.append(time.perf_counter() - frame.time_s)
        self.stats.decoded += len(batch)
        self.stats.decode_s += decode_end - decode_start
        self.stats.busy_s += time.perf_counter() - start


def _camera_frame(bench: Bench, host_count: int) -> _Frame:
    """One frame with the camera's frame number and exposure time when it reports them."""
    adu = bench.capture()
    number = getattr(bench.camera, "frame_number", None)
    stamp = getattr(bench.camera, "frame_time_s", None)
    return _Frame(
        host_count if number is None else int(number),
        time.perf_counter() if stamp is None or math.isnan(stamp) else float(stamp),
        adu,
    )


def trigger_rate_fps(spec: BenchSpec, default: float = 20.0) -> float:
    """The frame rate the bench config sets for its trigger box (``period_us``), else ``default``."""
    for name, device in spec.serial.items():
        period_us = spec.config.serial[name].kwargs.get("period_us")
        if hasattr(device.cls, "fire") and period_us:
            return 1e6 / period_us
    return default


def system_decoder(system: CodedSystem, op: CDPOperator) -> Decoder:
    """A coded system's decoder told the bench's calibrated operator ``op`` of its mask
    (``spec.model().operator(mask_rad)``), in single precision, as a live :data:`Decoder` (per-frame photon
    levels); as :func:`hil.bench.reconstruct.reconstruct_bundle` decodes a capture."""
    system, op = system.eval(), single_precision(op)

    @torch.no_grad()
    def decode(y: torch.Tensor, photons: torch.Tensor) -> torch.Tensor:
        return system(op, y.to(torch.float32), photons).phase_rad

    return decode


def _screen(bench: Bench, dark_adu: np.ndarray) -> Callable[[np.ndarray], str | None]:
    """Why a raw frame must not be decoded (``saturated``, ``no signal``), or None (the capture's checks)."""
    level, camera = saturation_level(bench.camera), bench.spec.system.camera

    def screen(adu: np.ndarray) -> str | None:
        if saturated_fraction(adu, level) > 0:
            return "saturated"
        return None if has_signal(adu, dark_adu, camera) else "no signal"

    return screen


def model_converter(model: BenchModel, op: CDPOperator, camera, dark_adu: np.ndarray) -> Callable:
    """Raw frames (ADU, (height, width) camera pixels) -> (CDPs (B, 1, height, width) in model units on the
    camera's pixels, float32; photons per model detector pixel (B,), the decoders' unit, as
    :func:`hil.bench.reconstruct.load_capture` counts them)."""
    area = detector_pixels_per_camera_pixel(model)

    def convert(frames_adu: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        photons = [frame_to_photons(adu - dark_adu, camera) for adu in frames_adu]
        y = torch.cat([to_model_units(op, p) for p in photons]).float()
        return y, torch.tensor([float(p.mean()) / area for p in photons])

    return convert


def run_live(
    bench: Bench,
    mask_rad: np.ndarray,
    op: CDPOperator,
    decode: Decoder,
    settings: LiveSettings,
    path: Path,
    progress: Callable[[LiveStats], None] | None = None,
    decoder: str = "",
) -> LiveStats:
    """Show ``mask_rad`` ``(n, n)``, take the dark level, then stream ``settings.frames`` triggers.

    ``op`` is the bench's calibrated model of the shown mask (``bench.spec.model().operator(mask_rad)``,
    on the camera's own pixels when the bench config names a registration); ``decode`` turns CDPs in model
    units on those pixels into phase maps (``decoder`` says which, for the provenance). A camera whose
    frames are not the size the model predicts is refused before streaming. Returns the run's counts and
    timings; they are also written to ``path``'s ``result_json``.
    """
    camera = bench.spec.system.camera  # the calibrated sensor
    model = bench.spec.model()
    bench.show_mask(mask_rad)
    shape = tuple(np.asarray(bench.capture()).shape)
    if shape != tuple(op.camera_shape):
        raise ValueError(
            f"the camera gives frames of {shape} (height, width) but the model predicts {tuple(op.camera_shape)}: "
            "name the camera registration (hil calibrate geometry) in the bench config's calibration section, "
            "or fix the camera window/binning"
        )
    stats = LiveStats()
    record = {"live": to_mapping(settings), "bench": to_mapping(bench.spec.config), "decoder": decoder}
    with FrameLog(path, "live", record, seed=bench.spec.config.seed) as log:
        record_model(log, bench.spec, model)
        log.set_attrs(camera_spec_json=json.dumps(to_mapping(camera)))
        log.store("mask_rad", np.asarray(mask_rad, dtype=np.float64))
        if settings.auto_exposure is not None:
            with bench.lit():
                auto_expose(bench, settings.auto_exposure, log)
        log.set_attrs(exposure_s=float(bench.camera.get_exposure()))
        bench.light_off()
        dark_adu = dark_level(bench, log, settings.dark_frames, shape)
        jobs: queue.Queue = queue.Queue(maxsize=settings.queue_frames)
        stop = threading.Event()
        convert = model_converter(model, op, camera, dark_adu)
        worker = _DecoderThread(jobs, stop, _screen(bench, dark_adu), convert, decode, log, stats, settings)
        trigger = next((a for a in bench.serial.values() if hasattr(a, "fire")), None)
        start, fired_before = None, None
        try:
            with bench.lit():
                if trigger is not None:
                    trigger.configure(period_us=max(1, round(1e6 / settings.fps)), count=0)
                    trigger.arm()
                    fired_before = trigger.fired()
                worker.start()
                start = time.perf_counter()
                _acquire(bench, trigger, jobs, stop, settings, stats, start, progress)
        finally:
            stop.set()  # the decoder finishes what is queued, then ends
            if worker.is_alive():
                worker.join()
            if start is not None:
                stats.elapsed_s = time.perf_counter() - start
            if fired_before is not None:  # armed
                trigger.disarm()
                stats.triggers = trigger.fired() - fired_before
            log.set_attrs(dropped_frame_numbers=json.dumps(stats.dropped))
            log.set_result(stats.summary())
        if worker.error is not None:
            raise worker.error
    return stats


def _acquire(bench, trigger, jobs: queue.Queue, stop: threading.Event, settings, stats, start: float, progress) -> None:
    """The acquisition loop: one trigger per period, each frame queued or counted as dropped."""
    period_s = 1 / settings.fps
    first_number = None
    last_report = start
    for index in range(settings.frames):
        if stop.is_set():  # the decoder failed
            break
        delay = start + index * period_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with atomic_io():  # Ctrl-C waits until the triggered frame is read and queued or counted as dropped
            if trigger is not None:
                trigger.fire()
            else:
                stats.triggers += 1
            frame = _camera_frame(bench, index + 1)
            first_number = frame.number if first_number is None else first_number
            stats.frames = frame.number - first_number + 1
            try:
                jobs.put_nowait(frame)
            except queue.Full:
                stats.dropped.append(frame.number)
        stats.elapsed_s = time.perf_counter() - start
        if progress is not None and time.perf_counter() - last_report > 0.25:
            progress(stats)
            last_report = time.perf_counter()
    if progress is not None:
        progress(stats)
