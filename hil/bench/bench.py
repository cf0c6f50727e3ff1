"""The bench: devices from a bench config, as a context manager that always ends in a safe state.

On every exit path (normal end, exception, device error, Ctrl-C once or twice, SIGTERM, SIGHUP,
SIGQUIT) the bench closes the shutter, switches the laser off, disarms triggers and blanks the
SLM, then closes the devices. :meth:`Bench.safe_state` is idempotent and bounded in time (serial
accessories get one ``SAFE`` command each, sharing :data:`SAFE_BUDGET_S`); a device whose safe-state
call fails does not stop the others, and the failure is reported (logged, and raised as a
:class:`~drivers.errors.DeviceError` once every device was tried, unless another error is already
on its way out).

Signals (main thread only): the first Ctrl-C, SIGTERM, SIGHUP or SIGQUIT lets a device exchange in
progress finish (no command is cut in half), then raises ``KeyboardInterrupt`` / ``SystemExit(128 +
signal)``; a second one interrupts at once. Signals arriving while the safe state is being
applied are logged and ignored, so the safe state always completes.

Errors raised by device code while connecting (a plugin constructor, ``blank()``) become a
``DeviceError`` naming the device, so they reach the user as one line (the cause stays chained).
"""

from __future__ import annotations

import inspect
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from slmsuite.misc.xp import as_numpy

from drivers import io_guard
from drivers.errors import DeviceError
from drivers.limits import check_range
from drivers.slm import SLMController
from hil.bench.config import DEFAULT_BENCH, BenchSpec, DeviceSpec, load_bench

log = logging.getLogger(__name__)
SAFE_BUDGET_S = 0.8
HANDLED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name)
)


def _device_call(what: str, call: Any) -> Any:
    """``call()``; an exception from device code other than a ``DeviceError`` or a limit check becomes
    a ``DeviceError`` saying ``what`` failed (the original stays chained as its cause)."""
    try:
        return call()
    except (DeviceError, ValueError):
        raise
    except Exception as exc:
        raise DeviceError(f"{what}: {type(exc).__name__}: {exc}") from exc


class Bench:
    """SLM, camera and serial accessories of one bench config.

    Use as ``with Bench.from_config(path) as bench: ...``. Attributes after entering: ``slm``
    (:class:`~drivers.slm.SLMController`), ``camera`` (slmsuite ``Camera``), ``serial``
    (name -> accessory).
    """

    def __init__(self, spec: BenchSpec) -> None:
        self.spec = spec
        self.slm: SLMController | None = None
        self.camera: Any = None
        self.serial: dict[str, Any] = {}
        self.safe_state_problems: list[str] = []
        self._cleaning = False
        self._previous_handlers: dict[int, Any] = {}
        self._interrupt: BaseException | None = None
        self._previous_unraisablehook = sys.unraisablehook

    @classmethod
    def from_config(cls, path: str | Path = DEFAULT_BENCH) -> Bench:
        return cls(load_bench(path))

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Bench:
        self._install_signal_handlers()
        try:
            self.open()
        except BaseException:
            self.close()
            self._restore_signal_handlers()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.close()
        finally:
            self._restore_signal_handlers()
            self._interrupt = None
        if exc_type is None and self.safe_state_problems:
            raise DeviceError("safe state not confirmed: " + "; ".join(self.safe_state_problems))

    def _construct(self, label: str, device: DeviceSpec, **available: Any) -> Any:
        params = device.parameters()
        kwargs = dict(device.kwargs)
        for name, value in available.items():
            if name in params and name not in kwargs:
                kwargs[name] = value
        return _device_call(f"{label} ({device.driver}): cannot be opened", lambda: device.cls(**kwargs))

    def open(self) -> None:
        """Connect every device: serial accessories first (put in their safe state), then SLM (given the
        system's measured phase response ``slm.gamma`` through slmsuite's ``set_gamma``, when there is
        one), camera."""
        spec, config = self.spec, self.spec.config
        common = {"system": spec.system, "seed": config.seed}
        for name, device in spec.serial.items():
            section = config.serial[name]
            accessory = self._construct(
                f"serial.{name}",
                device,
                port=section.port,
                baudrate=section.baudrate,
                timeout_s=section.timeout_s,
                retries=section.retries,
                **common,
            )
            try:
                accessory.open()
                check_identity = getattr(accessory, "check_identity", None)
                if check_identity is not None:  # before any command that changes state
                    check_identity()
            except BaseException:
                accessory.close()
                raise
            self.serial[name] = accessory
            accessory.safe()
        slm = self._construct("slm", spec.slm, **common)
        try:
            self._check_slm(slm)
            if spec.system.slm.gamma:  # the measured response: masks (radians) go through its LUT
                slm.set_gamma(np.asarray(spec.system.slm.gamma, dtype=np.float64))
            self.slm = SLMController(
                slm,
                (spec.system.optics.n, spec.system.optics.n),
                spec.system.slm.macro_pixel,
                config.slm.roi_offset_px,
                settle=config.slm.settle,
                mask_bitdepth=spec.system.slm.bitdepth,
                phase_correct=config.slm.phase_correct,
                dump_period_px=config.slm.dump_period_px,
            )
        except BaseException:
            _device_call("slm: close", slm.close)
            raise
        _device_call("slm: blank()", self.slm.blank)
        self.camera = self._construct("camera", spec.camera, slm=slm, **common)
        self.set_exposure(config.camera.exposure_s)

    def _check_slm(self, slm: Any) -> None:
        section = self.spec.config.slm
        if section.shape_px is not None and tuple(slm.shape) != tuple(section.shape_px):
            raise DeviceError(f"slm.shape_px: config says {list(section.shape_px)}, the SLM reports {list(slm.shape)}")
        if section.bitdepth is not None and slm.bitdepth != section.bitdepth:
            raise DeviceError(f"slm.bitdepth: config says {section.bitdepth}, the SLM reports {slm.bitdepth}")

    def safe_state(self) -> list[str]:
        """Shutter closed, laser off, triggers disarmed, SLM blanked; returns the problems met.

        Idempotent; never raises; signals are ignored while it runs.
        """
        self._cleaning = True
        problems = []
        start = time.perf_counter()
        try:
            accessories = sorted(self.serial.items(), key=lambda item: not hasattr(item[1], "emit"))
            for name, accessory in accessories:
                left = SAFE_BUDGET_S - (time.perf_counter() - start)
                try:
                    if accessory.is_open:
                        accessory.safe(timeout_s=max(0.05, left / max(1, len(accessories))))
                    else:
                        problems.append(f"serial.{name}: port not open, safe state not confirmed")
                except Exception as exc:
                    problems.append(f"serial.{name}: {exc}")
            if self.slm is not None:
                try:
                    self.slm.blank()
                except Exception as exc:
                    problems.append(f"slm: {exc}")
        finally:
            self._cleaning = False
        for problem in problems:
            log.error("safe state: %s", problem)
        self.safe_state_problems = problems
        return problems

    def close(self) -> None:
        """Safe state, then close every device (idempotent)."""
        self.safe_state()
        self._cleaning = True
        try:
            for name, device in (("camera", self.camera), ("slm", self.slm and self.slm.slm)):
                if device is not None:
                    try:
                        device.close()
                    except Exception as exc:
                        log.error("closing %s: %s", name, exc)
            for name, accessory in self.serial.items():
                try:
                    accessory.close()
                except Exception as exc:
                    log.error("closing serial.%s: %s", name, exc)
        finally:
            self._cleaning = False
        self.camera, self.slm, self.serial = None, None, {}

    # --- signals ---------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in HANDLED_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        self._previous_unraisablehook, sys.unraisablehook = sys.unraisablehook, self._on_unraisable

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        if self._previous_handlers:
            sys.unraisablehook = self._previous_unraisablehook
        self._previous_handlers = {}

    def _on_unraisable(self, unraisable: Any) -> None:
        """Python dropped an exception; our own interrupt is re-raised by the next operation, so say nothing."""
        if unraisable.exc_value is not None and unraisable.exc_value is self._interrupt:
            log.debug("%r dropped inside %r; raised at the next bench operation", self._interrupt, unraisable.object)
            return
        self._previous_unraisablehook(unraisable)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._cleaning:
            log.warning("%s ignored: putting the bench in its safe state", name)
            return
        exc: BaseException = KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)
        if self._interrupt is None:
            self._interrupt = exc
        if io_guard.defer(exc):
            log.warning("%s: finishing the device exchange in progress (repeat to abort it)", name)
            return
        raise exc

    def _raise_interrupt(self) -> None:
        """Raise a signal's interrupt that its handler could not deliver (see the module docstring). Inside a
        device exchange (:func:`drivers.io_guard.atomic_io`) it is handed to the exchange, which raises it when
        it ends: a frame whose trigger has fired is still read and counted."""
        if self._interrupt is None:
            return
        if io_guard.in_progress():
            io_guard.defer(self._interrupt)  # a no-op when the signal's handler deferred it already
            return
        raise self._interrupt

    # --- operations ------------------------------------------------------------------------

    def set_exposure(self, exposure_s: float) -> float:
        """Set the camera exposure after checking it against ``camera.exposure_limits_s``."""
        self._raise_interrupt()
        value = check_range("camera.exposure_s", exposure_s, self.spec.config.camera.exposure_limits_s, "s")
        return float(self.camera.set_exposure(value))

    def show_mask(self, phase_rad: np.ndarray) -> None:
        """Display an ``(n, n)`` mask on the SLM's ROI (waits the settle time when configured)."""
        self._raise_interrupt()
        self.slm.show(phase_rad)

    def place_sample(self, phase_rad: np.ndarray | None) -> None:
        """Put a thin phase sample ``(n, n)`` (radians; None removes it) on the mask's ROI of a *simulated* SLM
        (its ``set_sample``), shifted with the ROI (``slm.roi_offset_px``) where the simulator takes an offset,
        so that sample pixel ``(i, j)`` meets mask pixel ``(i, j)``. Raises ``ValueError`` on a real SLM."""
        device = self.slm.slm
        if not hasattr(device, "set_sample"):
            raise ValueError(f"{type(device).__name__} is not a simulated SLM: it cannot place a sample")
        if "offset_px" in inspect.signature(device.set_sample).parameters:
            device.set_sample(phase_rad, offset_px=tuple(self.spec.config.slm.roi_offset_px))
        else:
            device.set_sample(phase_rad)

    def capture(self) -> np.ndarray:
        """One camera frame (height, width)."""
        self._raise_interrupt()
        return np.asarray(as_numpy(self.camera.get_image()))

    def light_on(self) -> None:
        """Every light source emits (configured power, laser on, shutter open)."""
        self._raise_interrupt()
        for accessory in self.serial.values():
            if hasattr(accessory, "emit"):
                accessory.emit()

    @contextmanager
    def lit(self) -> Iterator[None]:
        """Light on for the block and off again on every exit (dark frames are taken outside it)."""
        self.light_on()
        try:
            yield
        finally:
            self.light_off()

    def light_off(self) -> None:
        """Every light source stops (shutter closed, laser off), e.g. for dark frames; the SLM keeps its mask."""
        for accessory in self.serial.values():
            if hasattr(accessory, "emit"):
                accessory.safe()

    def describe(self) -> list[dict[str, str]]:
        """Identity and status of each device (for ``hil check``)."""
        rows = []
        slm = self.slm.slm
        rows_roi, cols_roi = self.slm.roi
        rows.append(
            {
                "device": "slm",
                "driver": self.spec.slm.driver,
                "identity": f"{type(slm).__name__} {slm.name!r}",
                "status": f"shape {tuple(slm.shape)} (h, w), {slm.bitdepth} bit, settle {slm.settle_time_s:g} s, "
                f"ROI rows {rows_roi.start}:{rows_roi.stop} cols {cols_roi.start}:{cols_roi.stop}",
            }
        )
        frame = self.capture()
        cam = self.camera
        rows.append(
            {
                "device": "camera",
                "driver": self.spec.camera.driver,
                "identity": f"{type(cam).__name__} {cam.name!r}",
                "status": f"shape {tuple(cam.shape)} (h, w), {cam.bitdepth} bit, exposure {cam.exposure_s:g} s, "
                f"test frame mean {float(frame.mean()):.4g} max {float(frame.max()):.4g}",
            }
        )
        for name, accessory in self.serial.items():
            status = " ".join(f"{k}={v}" for k, v in accessory.status().items())
            rows.append(
                {
                    "device": f"serial.{name}",
                    "driver": self.spec.serial[name].driver,
                    "identity": f"{accessory.identify()} on {accessory.port}",
                    "status": status,
                }
            )
        return rows
