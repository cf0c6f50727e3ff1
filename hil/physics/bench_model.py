"""The calibrated model of one bench: the system config plus what calibration measured on the bench.

A :class:`BenchModel` builds the :class:`~hil.physics.optics.CDPOperator` that predicts a bench's camera
pixels for given masks, from

* the system config (optics, the SLM's measured phase response ``slm.gamma``, macro-pixels, crosstalk);
* the camera registration (``hil calibrate geometry``): the operator then ends in a
  :class:`~hil.physics.detector.RegisteredCamera` on the camera's own pixels, with the model's detector
  grid refined to ``DETECTOR_PAD`` (each camera pixel integrates its footprint; 1.1 % error at pad 8
  against 15 % at pad 2, ``tests/test_detector.py``);
* the SLM-plane field (``hil calibrate field``): the illumination amplitude and static aberration over
  the mask, one complex value per mask pixel (interpolated between the macro-pixels' centres on the SLM
  grid, :attr:`BenchModel.slm_field`), multiplying every mask; measured with a margin of ``m`` mask
  pixels around the ROI, it also carries the light that passes the SLM outside the ROI (an iris wider than
  the ROI): a fixed detector field added to every frame's (the operator's ``offset``). Its power is small
  (about 1 %) but it interferes with the ROI's light: leaving it out doubled the prediction residual on the
  fixture bench (``benchmarks/calibrated_model.md``).

With macro-pixels (``k > 1``, Fraunhofer) the operator's polyphase factorisation keeps the cost near that
of ``k = 1`` for block-constant masks; masks that crosstalk makes vary inside the blocks go through the SLM
grid's DFT at the detector's frequencies (two matrix products, exact, about ``k`` times that). A camera
that sees beyond the ``pad*n`` band gets a guard band (``CDPGeometry.detector_guard``) wide enough for its
footprint: there it sees the neighbouring diffraction orders of the macro-pixel grid.
``tests/test_bench_model.py`` measures that approximation against the full SLM-grid computation and
the whole model against frames of the independent slmsuite fixture bench.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from hil.physics.detector import RegisteredCamera
from hil.physics.optics import CDPGeometry, CDPOperator, macro_upsample
from hil.physics.registration import Registration
from hil.physics.slm import SLMModel
from hil.physics.slm_field import central
from hil.physics.system import SystemConfig

DETECTOR_PAD = 8  # the model's pad factor under a registered camera


def smooth_upsample(values: torch.Tensor, k: int) -> torch.Tensor:
    """Complex values ``(S, S)`` at the centres of ``k x k`` blocks -> ``(k S, k S)``, bicubic between the centres
    (edges held); ``k = 1`` returns them."""
    if k == 1:
        return values

    def upsample(part: torch.Tensor) -> torch.Tensor:
        return F.interpolate(part[None, None], scale_factor=k, mode="bicubic", align_corners=False)[0, 0]

    return torch.complex(upsample(values.real), upsample(values.imag))


@dataclass(frozen=True, eq=False)
class BenchModel:
    """Forward model of a calibrated bench (see the module docstring).

    Attributes:
        system: the system config (its ``slm.gamma`` is the measured phase response when calibrated).
        registration: camera pixels -> the system's detector grid; None: frames are on that grid.
        field: ``(n + 2m, n + 2m)`` complex SLM-plane field per mask pixel (illumination amplitude times
            ``exp(1j * aberration_rad)``) over the ROI and ``m >= 0`` mask pixels around it, where the SLM shows
            what it shows outside the ROI (that light is the operator's ``offset``); None: uniform unit
            illumination of the ROI only.
    """

    system: SystemConfig
    registration: Registration | None = None
    field: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.system.optics.n
        if self.field is not None:
            field = np.asarray(self.field)
            side = field.shape[-1]
            square = field.ndim == 2 and field.shape[0] == side and side >= n and (side - n) % 2 == 0
            if not square or not np.all(np.isfinite(field)) or not np.any(field):
                raise ValueError(
                    f"field must be a finite, non-zero (n + 2m, n + 2m) array with n = {n}; got shape {field.shape}"
                )
        if self.registration is not None:
            expected = self.system.geometry().detector_shape
            if tuple(self.registration.model_shape) != tuple(expected):
                raise ValueError(
                    f"the registration is for a model grid of {tuple(self.registration.model_shape)} (height, width), "
                    f"the system's detector grid is {expected}: calibrate the geometry with this system"
                )

    @cached_property
    def geometry(self) -> CDPGeometry:
        """The system's geometry; under a registration, refined to ``DETECTOR_PAD``, without binning, with the
        guard band the camera's footprint needs."""
        geometry = self.system.geometry()
        if self.registration is None:
            return geometry
        fine = dataclasses.replace(geometry, pad_factor=max(geometry.pad_factor, DETECTOR_PAD), binning=1)
        if fine.propagator != "fraunhofer" or fine.macro_pixel == 1:
            return fine
        height, width = self.registration.camera_shape
        corners = np.array([[x, y, 1.0] for x in (-0.5, width - 0.5) for y in (-0.5, height - 0.5)])
        model = corners @ self.registration.camera_to_model.T - np.array(self.registration.model_shape[::-1]) // 2
        reach = float(np.abs(model).max()) * self._bins_per_model_px(fine) + 2  # bins from the centre, + interpolation
        guard = min(max(0, math.ceil(reach - fine.band / 2)), (fine.macro_pixel - 1) * fine.band // 2)
        return dataclasses.replace(fine, detector_guard=guard)

    def _bins_per_model_px(self, geometry: CDPGeometry) -> float:
        return geometry.pad_factor / self.system.optics.pad_factor

    @cached_property
    def detector(self) -> RegisteredCamera | None:
        if self.registration is None:
            return None
        geometry = self.geometry
        return RegisteredCamera(
            self.registration, geometry.detector_shape, bins_per_model_px=self._bins_per_model_px(geometry)
        )

    @property
    def camera_shape(self) -> tuple[int, int]:
        """(height, width) of the frames this model predicts."""
        return tuple(self.registration.camera_shape) if self.registration else self.geometry.camera_shape

    @property
    def margin(self) -> int:
        """Mask pixels the field covers beyond the ROI on each side."""
        return 0 if self.field is None else (np.asarray(self.field).shape[-1] - self.system.optics.n) // 2

    @property
    def roi_field(self) -> np.ndarray | None:
        """The field's ``(n, n)`` part over the ROI (complex), or None."""
        if self.field is None:
            return None
        return central(np.asarray(self.field, dtype=np.complex128), self.system.optics.n)

    @cached_property
    def slm_field(self) -> torch.Tensor | None:
        """The field on the SLM grid ``(k (n + 2m), k (n + 2m))`` (complex128), None without one. Over the ROI the
        measured values, one per mask pixel, are taken at the macro-pixels' centres and interpolated between
        them (bicubic, the ROI's edges held), since a beam and an aberration are smooth across a macro-pixel:
        block-constant values left 4.8 % of the prediction residual with a 20 px beam waist on the fixture bench,
        bicubic 0.7 % (``tests/test_bench_model.py``). The margin keeps one value per macro-pixel: what it
        holds is the light the SLM leaves there (a dump grating's zero order), not a smooth beam."""
        if self.field is None:
            return None
        k, n = self.geometry.macro_pixel, self.system.optics.n
        wide = macro_upsample(torch.from_numpy(np.asarray(self.field, dtype=np.complex128)), k)
        start = k * self.margin
        wide[start : start + k * n, start : start + k * n] = smooth_upsample(torch.from_numpy(self.roi_field), k)
        return wide

    @cached_property
    def offset(self) -> torch.Tensor | None:
        """Detector field of the light outside the ROI (:meth:`CDPGeometry.outside_field`); None without a margin."""
        if not self.margin:
            return None
        return self.geometry.outside_field(self.slm_field)

    def transmittance(self, masks_rad: torch.Tensor) -> torch.Tensor:
        """Realised transmittance ``(L, k*n, k*n)`` (complex) of masks ``(L, n, n)`` in radians, times the field."""
        t = SLMModel(self.system.slm).transmittance(masks_rad)
        if self.field is not None:
            side = self.geometry.macro_pixel * self.system.optics.n
            t = t * central(self.slm_field, side).to(t.dtype)
        return t

    def operator(self, masks_rad: np.ndarray | torch.Tensor) -> CDPOperator:
        """The operator of masks ``(n, n)`` or ``(L, n, n)`` in radians, as this bench shows and records them."""
        masks = torch.as_tensor(masks_rad, dtype=torch.float64)
        masks = masks[None] if masks.dim() == 2 else masks
        n = self.system.optics.n
        if masks.dim() != 3 or tuple(masks.shape[-2:]) != (n, n):
            raise ValueError(f"masks must have shape (n, n) or (L, n, n) with n = {n}; got {tuple(masks.shape)}")
        return self.geometry.operator(self.transmittance(masks), self.detector, self.offset)
