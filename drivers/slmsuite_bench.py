"""An independent test bench: slmsuite's ``SimulatedSLM`` / ``SimulatedCamera`` with a real bench's flaws.

This module is a **test fixture**, deliberately written without :mod:`hil.physics` (nothing here
imports the project's forward model), so that calibrations and deployment are tested against a bench
that is *not* the project's twin. It plugs in through the bench config's import path
(``configs/bench_fixture.yaml``, ``configs/bench_fixture_varied.yaml``)::

    slm:    {driver: "drivers.slmsuite_bench:FixtureSLM", kwargs: {...}}
    camera: {driver: "drivers.slmsuite_bench:FixtureCamera", kwargs: {...}}

Every hidden value is a constructor keyword (physical units, nothing in model units):

* :class:`FixtureSLM`: an SLM larger than the mask ROI (the bench config places the ROI and the
  macro-pixels), a nonlinear phase response short of 2π (slmsuite ``gamma_sim``:
  ``phase(g) = phase_range_rad * (g / levels) ** gamma_exponent``), pixel crosstalk (Gaussian blur
  of the realised phase, SLM pixels), a Gaussian beam behind a circular iris (SLM pixels, centred on
  the SLM plus ``beam_centre_px``), a static aberration (Zernike, Noll j = 4..8, over the iris), and
  an optional thin phase sample conjugate to the SLM.
* :class:`FixtureCamera`: a Fourier-plane camera of its own pixel count, placed in the SLM's
  k-space by slmsuite's affine map (``focal_px`` camera pixels per radian of angle, rotated by
  ``rotation_deg``, optical axis ``offset_px`` from the camera centre), each pixel integrating its
  footprint; then a sensor: Poisson photons, Gaussian read noise (e-), gain (ADU/e-),
  dark offset (ADU), rounding and clipping at ``bitdepth`` bits. Lit only while a simulated
  shutter (``light_source``) is open and its laser on, except for ``shutter_leak``, the fraction of
  the reference light that still reaches the camera while they are off (a source or path the shutter does
  not control; 0 on a good bench).

Both are deterministic for ``seed`` (the camera's noise).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates
from slmsuite.hardware.cameras.simulated import SimulatedCamera
from slmsuite.hardware.slms.simulated import SimulatedSLM
from slmsuite.misc.xp import as_numpy

from drivers.serial_sim import simulated_device

TWO_PI = 2 * math.pi


def zernike(y: np.ndarray, x: np.ndarray, coefficients_rad: tuple[float, ...]) -> np.ndarray:
    """Noll-normalised Zernike terms j = 4 (defocus), 5, 6 (astigmatism), 7, 8 (coma) at (y, x), unit disc."""
    r2 = x**2 + y**2
    terms = (
        np.sqrt(3) * (2 * r2 - 1),
        np.sqrt(6) * 2 * x * y,
        np.sqrt(6) * (x**2 - y**2),
        np.sqrt(8) * (3 * r2 - 2) * y,
        np.sqrt(8) * (3 * r2 - 2) * x,
    )
    if len(coefficients_rad) > len(terms):
        raise ValueError(f"aberration_rad takes at most {len(terms)} Zernike terms (Noll j = 4..8)")
    return sum((c * t for c, t in zip(coefficients_rad, terms, strict=False)), np.zeros_like(x))


class FixtureSLM(SimulatedSLM):
    """slmsuite ``SimulatedSLM`` with a nonlinear short stroke, crosstalk, a Gaussian beam behind an
    iris, a static aberration and an optional sample. ``resolution`` is (width, height)."""

    def __init__(
        self,
        resolution: tuple[int, int] = (160, 128),
        pitch_um: float = 8.0,
        wav_um: float = 0.633,
        bitdepth: int = 8,
        settle_time_s: float = 0.0,
        phase_range_rad: float = 0.88 * TWO_PI,
        gamma_exponent: float = 1.15,
        crosstalk_sigma_px: float = 0.6,
        beam_waist_px: float = 40.0,
        iris_radius_px: float = 36.0,
        beam_centre_px: tuple[float, float] = (0.0, 0.0),
        aberration_rad: tuple[float, ...] = (0.5, -0.3, 0.25, 0.0, 0.0),
        sample_file: str | None = None,
        sample_pixel_px: int = 4,
    ) -> None:
        checks = (
            ("phase_range_rad", 0 < phase_range_rad <= 2 * TWO_PI, "(0, 4π]"),
            ("gamma_exponent", 0.2 <= gamma_exponent <= 5, "[0.2, 5]"),
            ("crosstalk_sigma_px", 0 <= crosstalk_sigma_px <= 10, "[0, 10]"),
            ("beam_waist_px", beam_waist_px > 0, "> 0"),
            ("iris_radius_px", iris_radius_px > 0, "> 0"),
            ("sample_pixel_px", sample_pixel_px >= 1, ">= 1"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name} = {locals()[name]!r} is outside the allowed range {allowed}")
        levels = 1 << bitdepth
        gamma_sim = phase_range_rad / TWO_PI * (np.arange(levels) / levels) ** gamma_exponent
        super().__init__(
            tuple(resolution),
            pitch_um=(pitch_um, pitch_um),
            gamma_sim=gamma_sim,
            bitdepth=bitdepth,
            wav_um=wav_um,
            settle_time_s=settle_time_s,
            name="FixtureSLM",
        )
        self.crosstalk_sigma_px = float(crosstalk_sigma_px)
        self.sample_pixel_px = int(sample_pixel_px)
        height, width = self.shape
        rows, cols = np.indices(self.shape, dtype=np.float64)
        y = rows - (height - 1) / 2 - beam_centre_px[0]
        x = cols - (width - 1) / 2 - beam_centre_px[1]
        r2 = x**2 + y**2
        self.source["amplitude_sim"] = np.exp(-r2 / beam_waist_px**2) * (r2 <= iris_radius_px**2)
        self.aberration_rad = zernike(y / iris_radius_px, x / iris_radius_px, tuple(aberration_rad))
        self.sample_rad = np.zeros(self.shape)
        if sample_file is not None:
            self.set_sample(np.load(Path(sample_file), allow_pickle=False))
        else:
            self.source["phase_sim"] = self.aberration_rad.copy()

    def set_sample(self, phase_rad: np.ndarray | None, offset_px: tuple[int, int] = (0, 0)) -> None:
        """Put a thin phase sample ``(n, n)`` (radians; each pixel ``sample_pixel_px`` SLM pixels
        square) centred on the SLM plus ``offset_px``; None removes it."""
        self.sample_rad = np.zeros(self.shape)
        if phase_rad is not None:
            phase = np.kron(np.asarray(phase_rad, dtype=np.float64), np.ones((self.sample_pixel_px,) * 2))
            top = (self.shape[0] - phase.shape[0]) // 2 + offset_px[0]
            left = (self.shape[1] - phase.shape[1]) // 2 + offset_px[1]
            if top < 0 or left < 0 or top + phase.shape[0] > self.shape[0] or left + phase.shape[1] > self.shape[1]:
                raise ValueError(f"a sample of {phase.shape} SLM px does not fit on the SLM {self.shape}")
            self.sample_rad[top : top + phase.shape[0], left : left + phase.shape[1]] = phase
        self.source["phase_sim"] = self.aberration_rad + self.sample_rad

    def true_phase(self, gray: np.ndarray) -> np.ndarray:
        """The phase (radians) the liquid crystal realises for integer ``gray`` levels, before crosstalk."""
        return np.asarray(self.gamma_sim)[np.asarray(gray)] * (self._gamma_sign * TWO_PI)

    def _display2phase(self, display, dtype=np.float32):
        phase = super()._display2phase(display, dtype)
        if self.crosstalk_sigma_px > 0 and np.ndim(phase) == 2 and tuple(np.shape(phase)) == tuple(self.shape):
            blurred = gaussian_filter(np.asarray(as_numpy(phase), dtype=np.float64), self.crosstalk_sigma_px)
            phase = blurred.astype(dtype)
        return phase


class FixtureCamera(SimulatedCamera):
    """slmsuite ``SimulatedCamera`` (affine placement, pixel footprints) with a photon-counting sensor.

    ``total_photons`` is the number of photons per frame leaving the whole SLM at
    ``reference_exposure_s`` and ``reference_power_mw`` (the light that misses the camera is lost).
    """

    def __init__(
        self,
        slm: SimulatedSLM,
        resolution: tuple[int, int] = (48, 40),
        focal_px: float = 2265.0,
        rotation_deg: float = 1.5,
        offset_px: tuple[float, float] = (1.3, -0.8),
        bitdepth: int = 12,
        gain_adu_per_e: float = 2.0,
        dark_offset_adu: float = 100.0,
        read_noise_e: float = 3.0,
        total_photons: float = 2.0e6,
        reference_exposure_s: float = 0.01,
        light_source: str | None = None,
        reference_power_mw: float = 1.0,
        shutter_leak: float = 0.0,
        exposure_s: float = 0.01,
        seed: int = 0,
        farfield_oversample: int = 4,
        footprint_samples: int = 4,
    ) -> None:
        if not (1 <= farfield_oversample <= 16 and 1 <= footprint_samples <= 16):
            raise ValueError("farfield_oversample and footprint_samples must lie in [1, 16]")
        self.farfield_oversample, self.footprint_samples = int(farfield_oversample), int(footprint_samples)
        if not 0 <= shutter_leak <= 1:
            raise ValueError(f"shutter_leak = {shutter_leak} is outside [0, 1]")
        if light_source is not None and not light_source.startswith("sim-shutter://"):
            raise ValueError(f"light_source = {light_source!r} must be a 'sim-shutter://' URL or null")
        for name, value in (("gain_adu_per_e", gain_adu_per_e), ("total_photons", total_photons)):
            if not value > 0:
                raise ValueError(f"{name} = {value} must be > 0")
        self.gain_adu_per_e = float(gain_adu_per_e)
        self.dark_offset_adu = float(dark_offset_adu)
        self.read_noise_e = float(read_noise_e)
        self.total_photons = float(total_photons)
        self.reference_exposure_s = float(reference_exposure_s)
        self.light_source = light_source
        self.reference_power_mw = float(reference_power_mw)
        self.shutter_leak = float(shutter_leak)
        self._rng = np.random.default_rng(seed)
        t = math.radians(rotation_deg)
        m = focal_px * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        width, height = resolution
        b = np.array([[width / 2 + offset_px[0]], [height / 2 + offset_px[1]]])
        super().__init__(slm, resolution=tuple(resolution), M=m, b=b, bitdepth=bitdepth, name="FixtureCamera")
        self._set_exposure_hw(exposure_s)

    def light(self) -> float:
        """Power reaching the camera relative to the reference: the setpoint when lit, the leak when not."""
        if self.light_source is None:
            return 1.0
        state = simulated_device(self.light_source).firmware.state
        if state["shutter"] == "OPEN" and state["laser"] == "ON":
            return float(state["power_mw"]) / self.reference_power_mw
        return self.shutter_leak

    def photons(self) -> np.ndarray:
        """Mean photons per camera pixel of the next frame (height, width), before noise."""
        power = float(np.sum(np.abs(as_numpy(self._slm.source["amplitude_sim"])) ** 2))
        scale = self.total_photons / power * self.light() * self.exposure_s / self.reference_exposure_s
        return np.clip(np.asarray(as_numpy(self._render()), dtype=np.float64), 0, None) * scale

    def _render(self) -> np.ndarray:
        """Far-field intensity integrated over each camera pixel's footprint (height, width).

        slmsuite's own render takes the nearest cell of a far field padded just enough for the camera
        pitch (here 0.7 camera px per cell, one sample per pixel), which puts tens of percent of sampling
        error on speckle near Nyquist: a simulator shortcut, not optics. This render keeps slmsuite's SLM
        pipeline (``_display2phase``, ``amplitude_sim``, ``phase_sim``) and its camera placement
        (``knm_cam``), pads ``farfield_oversample`` times further, and averages ``footprint_samples``²
        bilinear samples over each pixel's footprint, times the footprint's area in far-field cells.
        """
        slm, o, s = self._slm, self.farfield_oversample, self.footprint_samples
        phase = np.asarray(as_numpy(slm._display2phase(slm.display)), dtype=np.float64)
        phase = phase - phase.min() + np.asarray(as_numpy(slm.source["phase_sim"]), dtype=np.float64)
        near = np.abs(np.asarray(as_numpy(slm.source["amplitude_sim"]))) * np.exp(1j * phase)
        padded_shape = np.array(self.shape_padded) * o
        padded = np.zeros(tuple(padded_shape), dtype=np.complex128)
        top, left = (padded_shape - np.array(near.shape)) // 2
        padded[top : top + near.shape[0], left : left + near.shape[1]] = near
        far = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.fftshift(padded), norm="ortho"))) ** 2
        knm = np.asarray(as_numpy(self.knm_cam), dtype=np.float64)  # (2, h, w): (row, col) in slmsuite's cells
        step_col, step_row = knm[:, 0, 1] - knm[:, 0, 0], knm[:, 1, 0] - knm[:, 0, 0]
        centre = np.array(self.shape_padded, dtype=np.float64)[:, None, None] / 2
        total = np.zeros(self._shape)
        for v in (np.arange(s) + 0.5) / s - 0.5:
            for u in (np.arange(s) + 0.5) / s - 0.5:
                points = knm + (u * step_col + v * step_row)[:, None, None]
                total += map_coordinates(far, o * (points - centre) + o * centre, order=1, mode="constant")
        area = abs(step_col[0] * step_row[1] - step_col[1] * step_row[0]) * o**2
        return total / s**2 * area

    def _get_image_hw(self, timeout_s: float = 0, quantize: bool = True) -> np.ndarray:
        electrons = self._rng.poisson(self.photons()) + self._rng.normal(0, self.read_noise_e, self._shape)
        adu = electrons * self.gain_adu_per_e + self.dark_offset_adu
        if not quantize:
            return adu
        return np.clip(np.rint(adu), 0, 2**self.bitdepth - 1).astype(self.dtype)
