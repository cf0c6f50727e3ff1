"""Simulated Fourier-plane camera of the bench: slmsuite's ``SimulatedCamera`` with the shared
forward model's geometry and a photon-counting sensor.

The SLM's field on its ``pad * k * n`` grid goes through the system's own optics
(:meth:`hil.physics.optics.CDPGeometry.detector_field`: the lens's centred unitary FFT and its central
``pad * n`` window, or free-space propagation), so with imperfections off a frame is exactly
:class:`hil.physics.optics.CDPOperator` (binning included). :meth:`render` returns that intensity in
model units (``|field|^2``). Frames then go through the sensor of the system config's
:class:`hil.physics.camera.CameraSpec` (overridable per key), scaled by exposure:

* ``photons_per_pixel`` is the mean photons per detector pixel at ``reference_exposure_s`` when
  a uniform unit-amplitude beam fills the ROI and all light lands in the window; ``null`` gives
  noiseless frames in model units (times ``exposure_s / reference_exposure_s``);
* Poisson shot noise (switch ``shot_noise``), quantum efficiency, Gaussian read noise, full
  well, gain, dark offset, ADC rounding and clipping, then digital binning;
* optionally lit by a simulated laser shutter (``light_source: "sim-shutter://"``): frames are
  dark unless its shutter is open and its laser on, and scale with its power setpoint divided
  by ``reference_power_mw``.

Noise draws come from a ``torch.Generator`` seeded with ``seed``: deterministic. Like a real
camera's frame metadata, ``frame_number`` counts the frames exposed (1, 2, ...) and
``frame_time_s`` holds the ``time.perf_counter()`` of the last exposure, so a consumer counts
dropped frames instead of guessing them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from slmsuite.hardware.cameras.simulated import SimulatedCamera
from slmsuite.hardware.slms.simulated import SimulatedSLM
from slmsuite.misc.xp import as_numpy

from drivers.serial_sim import simulated_device
from hil.common.config import ConfigError, from_mapping
from hil.physics.camera import CameraModel, CameraSpec
from hil.physics.optics import bin_pixels
from hil.physics.system import SystemConfig, load_system


@dataclass(frozen=True)
class SimCameraSettings:
    """Config ``camera.kwargs`` of the ``simulated`` camera.

    Attributes:
        shot_noise: Poisson photon noise on (off: frames are the mean photon counts).
        sensor: overrides of the system config's ``camera`` keys (e.g. ``{read_noise_e: 2.0}``).
        reference_exposure_s: exposure at which ``photons_per_pixel`` holds.
        light_source: URL of the simulated shutter that lights the bench (None: always lit).
        reference_power_mw: laser power at which ``photons_per_pixel`` holds.
    """

    shot_noise: bool = True
    sensor: dict[str, Any] = field(default_factory=dict)
    reference_exposure_s: float = 0.01
    light_source: str | None = None
    reference_power_mw: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.reference_exposure_s <= 3600:
            raise ValueError(f"reference_exposure_s = {self.reference_exposure_s} is outside (0, 3600] s")
        if not 0 < self.reference_power_mw <= 1e6:
            raise ValueError(f"reference_power_mw = {self.reference_power_mw} is outside (0, 1e6] mW")
        if self.light_source is not None and not self.light_source.startswith("sim-shutter://"):
            raise ValueError(f"light_source = {self.light_source!r} must be a 'sim-shutter://' URL or null")
        try:
            from_mapping(CameraSpec, self.sensor, where="sensor", prefix="sensor")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    def spec(self, base: CameraSpec) -> CameraSpec:
        """``base`` with the ``sensor`` overrides applied."""
        parsed = from_mapping(CameraSpec, self.sensor, where="sensor", prefix="sensor")
        return dataclasses.replace(base, **{k: getattr(parsed, k) for k in self.sensor})


class SimulatedBenchCamera(SimulatedCamera):
    """Camera in the back focal plane of the bench's lens, imaging a (simulated) SLM's field."""

    Settings = SimCameraSettings

    def __init__(
        self,
        slm: SimulatedSLM,
        system: SystemConfig | None = None,
        seed: int = 0,
        exposure_s: float = 0.01,
        **settings: Any,
    ) -> None:
        self.settings = SimCameraSettings(**settings)
        self.system = system or load_system()
        self.spec = self.settings.spec(self.system.camera)
        geometry = dataclasses.replace(self.system.geometry(), binning=self.spec.binning)
        if tuple(slm.shape) != geometry.field_shape:
            raise ValueError(f"the simulated SLM must have shape {geometry.field_shape}, got {tuple(slm.shape)}")
        self.geometry = geometry
        self.detector_shape = geometry.detector_shape
        self._roi_pixels = geometry.slm_shape[0] * geometry.slm_shape[1]
        self._generator = torch.Generator().manual_seed(seed)
        self.frame_number, self.frame_time_s = 0, float("nan")
        height, width = geometry.camera_shape
        bits = self.spec.adc_bits if self.spec.adc_bits is not None and self.spec.adc_bits <= 16 else 16
        self._frame_dtype = np.dtype(np.uint8 if bits <= 8 else np.uint16)
        super().__init__(slm, resolution=(width, height), bitdepth=bits, name="SimulatedBenchCamera")
        self.set_exposure(exposure_s)

    def _intensity(self) -> torch.Tensor:
        """Unbinned detector intensity ``(pad n, pad n)`` in model units, float64."""
        slm = self._slm
        if hasattr(slm, "field"):
            u = slm.field()
        else:
            phase = as_numpy(slm._display2phase(slm.display, dtype=np.float64))
            u = as_numpy(slm.source["amplitude_sim"]) * np.exp(1j * (phase + as_numpy(slm.source["phase_sim"])))
        return self.geometry.detector_field(torch.from_numpy(np.asarray(u, dtype=np.complex128))).abs().square()

    def _render(self) -> np.ndarray:
        return bin_pixels(self._intensity(), self.spec.binning).numpy()

    def light(self) -> float:
        """Beam power relative to ``reference_power_mw`` (0 while the shutter is closed or the laser off)."""
        if self.settings.light_source is None:
            return 1.0
        state = simulated_device(self.settings.light_source).firmware.state
        if state["shutter"] != "OPEN" or state["laser"] != "ON":
            return 0.0
        return float(state["power_mw"]) / self.settings.reference_power_mw

    def _get_image_hw(self, timeout_s: float = 0, quantize: bool = True) -> np.ndarray:
        self.frame_number += 1
        self.frame_time_s = time.perf_counter()
        spec = self.spec
        ratio = self.light() * self.exposure_s / self.settings.reference_exposure_s
        intensity = self._intensity()
        if spec.photons_per_pixel is None:
            return bin_pixels(intensity * ratio, spec.binning).numpy()
        pixels = self.detector_shape[0] * self.detector_shape[1]
        photons = intensity * (spec.photons_per_pixel * pixels / self._roi_pixels * ratio)
        sensor = CameraModel(spec)
        frame = sensor.read_out(photons, self._generator, self.settings.shot_noise, quantise=quantize).numpy()
        return frame.astype(self._frame_dtype) if spec.adc_bits is not None and quantize else frame
