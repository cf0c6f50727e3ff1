"""Simulated SLM of the bench: slmsuite's ``SimulatedSLM`` plus the imperfections it lacks.

Geometry comes from the shared system config (``hil.physics.system``): the SLM grid is the
forward model's zero-padded field grid (``pad * k * n`` square) and light reaches only the
centred ``k n x k n`` ROI, the image of the sample's aperture. On that ROI the field is
``illumination * exp(1j * (aberration + sample)) * exp(1j * SLM phase)``: the sample is a thin
unknown phase object conjugate to the SLM (slmsuite's ``source["amplitude_sim"]`` and
``source["phase_sim"]`` hold the first two factors).

Imperfections (:class:`SimSLMSettings`, each off by default): settle time (a new pattern ramps
in linearly from the old one over ``settle_time_s``), pixel crosstalk (Gaussian blur of the
realised phase), reduced phase stroke (a hidden linear LUT through ``gamma_sim``), non-uniform
(Gaussian) illumination, static Zernike aberration, and the sample.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from slmsuite.hardware.slms.simulated import SimulatedSLM
from slmsuite.misc.xp import as_numpy

from drivers.sim_optics import (
    SAMPLE_KINDS,
    DriftingSample,
    gaussian_illumination,
    sample_phase,
    zernike_aberration,
)
from drivers.slm import roi_slices
from hil.physics.optics import macro_upsample
from hil.physics.slm import crosstalk_blur
from hil.physics.system import SystemConfig, load_system

TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class SimSLMSettings:
    """Hidden truths of the simulated SLM and optics (config ``slm.kwargs`` of the ``simulated`` SLM).

    Attributes:
        settle_time_s: liquid-crystal response time; also what ``set_phase(settle=True)`` waits.
        crosstalk_sigma_px: Gaussian blur (SLM pixels) of the realised phase (fringing fields).
        phase_range_rad: true stroke of the SLM over all gray levels (2π: ideal).
        illumination_waist_rel: Gaussian beam amplitude waist in ROI half-widths (None: uniform).
        aberration_rad: Zernike coefficients (radians, Noll j = 4, 5, ...: defocus, astigmatism, ...).
        sample: ``none``, a generator of hil.data.objects (``phase_screen``, ``cells``,
            ``resolution_target``, seeded) or a ``.npy`` file of shape (n, n) in radians.
        sample_phi_max_rad: peak phase of a generated sample.
        sample_drift_px_per_s: a generated sample drifts across the view at this speed (0: static);
            :meth:`SimulatedBenchSLM.set_sample` stops the drift.
    """

    settle_time_s: float = 0.0
    crosstalk_sigma_px: float = 0.0
    phase_range_rad: float = TWO_PI
    illumination_waist_rel: float | None = None
    aberration_rad: tuple[float, ...] = ()
    sample: str = "none"
    sample_phi_max_rad: float = math.pi
    sample_drift_px_per_s: float = 0.0

    def __post_init__(self) -> None:
        checks = (
            ("settle_time_s", 0 <= self.settle_time_s <= 10, "[0, 10]"),
            ("crosstalk_sigma_px", 0 <= self.crosstalk_sigma_px <= 10, "[0, 10]"),
            ("phase_range_rad", 0 < self.phase_range_rad <= TWO_PI, "(0, 2π]"),
            ("sample_phi_max_rad", 0 <= self.sample_phi_max_rad <= 4 * math.pi, "[0, 4π]"),
            ("sample_drift_px_per_s", 0 <= self.sample_drift_px_per_s <= 1000, "[0, 1000]"),
            ("aberration_rad", len(self.aberration_rad) <= 8, "at most 8 terms (j = 4..11)"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name} = {getattr(self, name)!r} is outside the allowed range {allowed}")
        if self.illumination_waist_rel is not None and not 0 < self.illumination_waist_rel <= 100:
            raise ValueError(f"illumination_waist_rel = {self.illumination_waist_rel} is outside (0, 100] or null")
        if self.sample not in SAMPLE_KINDS and not (self.sample.endswith(".npy") and Path(self.sample).is_file()):
            raise ValueError(f"sample = {self.sample!r}: must be one of {list(SAMPLE_KINDS)} or an existing .npy file")


class SimulatedBenchSLM(SimulatedSLM):
    """The bench's simulated SLM; deterministic for ``seed`` (sample generation)."""

    Settings = SimSLMSettings

    def __init__(self, system: SystemConfig | None = None, seed: int = 0, **settings: object) -> None:
        self.settings = SimSLMSettings(**settings)
        self.system = system or load_system()
        geometry = self.system.geometry()
        side = geometry.field_shape[0]
        levels = 1 << self.system.slm.bitdepth
        stroke = self.settings.phase_range_rad / TWO_PI
        gamma_sim = None if stroke == 1 else np.arange(levels) * (stroke / levels)
        self._shown: np.ndarray | None = None
        self._previous_rad: np.ndarray | None = None
        self._t_write = 0.0
        pitch = self.system.optics.pitch_um
        super().__init__(
            (side, side),
            pitch_um=(pitch, pitch),
            gamma_sim=gamma_sim,
            bitdepth=self.system.slm.bitdepth,
            wav_um=self.system.optics.wavelength_um,
            settle_time_s=self.settings.settle_time_s,
            name="SimulatedBenchSLM",
        )
        self.roi = roi_slices(self.shape, geometry.slm_shape)
        amplitude = np.zeros(self.shape)
        amplitude[self.roi] = gaussian_illumination(geometry.slm_shape, self.settings.illumination_waist_rel)
        self._aberration_rad = np.zeros(self.shape)
        self._aberration_rad[self.roi] = zernike_aberration(geometry.slm_shape, self.settings.aberration_rad)
        self.source["amplitude_sim"] = amplitude
        rng = np.random.default_rng(seed)
        n, s = self.system.optics.n, self.settings
        self._drifting, self._t_start = None, time.perf_counter()
        if s.sample_drift_px_per_s > 0 and s.sample in SAMPLE_KINDS:
            self._drifting = DriftingSample(s.sample, n, rng, s.sample_phi_max_rad, s.sample_drift_px_per_s)
            self._apply_sample(self._drifting.at(0.0))
        else:
            self._apply_sample(sample_phase(s.sample, n, rng, s.sample_phi_max_rad))

    def set_sample(self, phase_rad: np.ndarray) -> None:
        """Replace the thin phase sample (``(n, n)`` radians; each pixel covers k x k SLM pixels); no drift."""
        self._drifting = None
        self._apply_sample(phase_rad)

    def _apply_sample(self, phase_rad: np.ndarray) -> None:
        n, k = self.system.optics.n, self.system.slm.macro_pixel
        phase = np.asarray(phase_rad, dtype=np.float64)
        if phase.shape != (n, n):
            raise ValueError(f"sample must have shape ({n}, {n}), got {phase.shape}")
        self.sample_rad = phase
        total = self._aberration_rad.copy()
        total[self.roi] += macro_upsample(phase, k)
        self.source["phase_sim"] = total

    def _set_phase_hw(self, display: np.ndarray) -> None:
        """Start the liquid-crystal transition from what is shown now towards ``display``."""
        now = time.perf_counter()
        self._previous_rad = None if self._shown is None else self.physical_phase(now)
        self._shown = np.array(as_numpy(display), copy=True)
        self._t_write = now

    def _pattern_rad(self, display: np.ndarray) -> np.ndarray:
        phase = np.asarray(as_numpy(self._display2phase(display, dtype=np.float64)), dtype=np.float64)
        return crosstalk_blur(torch.from_numpy(phase), self.settings.crosstalk_sigma_px).numpy()

    def physical_phase(self, t: float | None = None) -> np.ndarray:
        """Phase the liquid crystal shows at time ``t`` (``perf_counter``; default now), SLM grid, radians."""
        target = self._pattern_rad(self._shown if self._shown is not None else self.display)
        settle = self.settings.settle_time_s
        if self._previous_rad is None or settle <= 0:
            return target
        fraction = ((time.perf_counter() if t is None else t) - self._t_write) / settle
        if fraction >= 1:
            return target
        return self._previous_rad + (target - self._previous_rad) * fraction

    def field(self) -> np.ndarray:
        """Complex field leaving the SLM now: illumination, aberration, sample and SLM phase (SLM grid)."""
        if self._drifting is not None:
            self._apply_sample(self._drifting.at(time.perf_counter() - self._t_start))
        amplitude = np.asarray(as_numpy(self.source["amplitude_sim"]), dtype=np.float64)
        phase = self.physical_phase() + np.asarray(as_numpy(self.source["phase_sim"]), dtype=np.float64)
        return amplitude * np.exp(1j * phase)
