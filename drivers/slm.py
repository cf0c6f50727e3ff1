"""What the bench needs on top of any slmsuite SLM: masks on a region of interest (ROI) with k x k
macro-pixels, blanking, read-back of the realised phase, and the settle time.

The ROI is centred on the SLM (plus an offset), exactly as :class:`hil.physics.optics.CDPGeometry` centres
the object in its zero-padded grid, so the simulated bench and the shared forward model agree.
Shapes are (height, width); slmsuite's ``resolution`` is (width, height).
"""

from __future__ import annotations

import numpy as np
from slmsuite.hardware.slms.slm import SLM
from slmsuite.misc.xp import as_numpy

from drivers.errors import LimitError
from hil.physics.optics import macro_upsample


def roi_slices(
    slm_shape: tuple[int, int], roi_shape: tuple[int, int], offset_px: tuple[int, int] = (0, 0)
) -> tuple[slice, slice]:
    """Rows and columns of a ``roi_shape`` region centred on ``slm_shape`` shifted by ``offset_px``.

    Raises :class:`LimitError` naming the allowed offsets when the ROI does not fit.
    """
    slices = []
    for axis, name in enumerate(("rows", "cols")):
        size, roi, offset = slm_shape[axis], roi_shape[axis], offset_px[axis]
        centred = (size - roi) // 2
        low, high = -centred, size - roi - centred
        if roi > size or not low <= offset <= high:
            raise LimitError(
                f"slm.roi_offset_px[{axis}] ({name}) = {offset}: an ROI of {roi_shape} px (height, width) "
                f"on an SLM of {slm_shape} px allows offsets in [{low}, {high}]"
                + (" (ROI larger than the SLM)" if roi > size else "")
            )
        slices.append(slice(centred + offset, centred + offset + roi))
    return slices[0], slices[1]


class SLMController:
    """Shows ``(n, n)`` masks (radians) on an ROI of ``slm`` with ``macro_pixel`` x ``macro_pixel`` pixels each.

    Works with any slmsuite SLM (hardware or simulated). ``settle`` waits the SLM's
    ``settle_time_s`` after each mask, so the next frame sees the new pattern; ``phase_correct``
    adds the SLM's stored wavefront correction (slmsuite ``source["phase"]``) to masks.
    ``dump_period_px`` > 0 shows a blazed diagonal grating of that period (SLM pixels) outside the ROI
    while a mask is shown (a beam dump): light that misses the ROI is steered to ``(1, 1) / period``
    cycles per pixel, away from the camera, instead of adding an unmodulated zero order to every CDP.
    """

    def __init__(
        self,
        slm: SLM,
        mask_shape: tuple[int, int],
        macro_pixel: int = 1,
        roi_offset_px: tuple[int, int] = (0, 0),
        settle: bool = True,
        mask_bitdepth: int | None = None,
        phase_correct: bool = False,
        dump_period_px: int = 0,
    ) -> None:
        if dump_period_px < 0 or dump_period_px == 1:
            raise LimitError(f"dump_period_px must be 0 (flat) or >= 2 SLM pixels, got {dump_period_px}")
        if macro_pixel < 1:
            raise LimitError(f"macro_pixel must be >= 1, got {macro_pixel}")
        if mask_bitdepth is not None and mask_bitdepth > slm.bitdepth:
            raise LimitError(
                f"slm.bitdepth = {mask_bitdepth} of the masks exceeds the SLM's {slm.bitdepth} bits; "
                f"allowed [1, {slm.bitdepth}]"
            )
        self.slm = slm
        self.mask_shape = (int(mask_shape[0]), int(mask_shape[1]))
        self.macro_pixel = int(macro_pixel)
        self.settle = settle
        self.phase_correct = phase_correct
        roi_shape = (self.mask_shape[0] * self.macro_pixel, self.mask_shape[1] * self.macro_pixel)
        self.roi = roi_slices(tuple(slm.shape), roi_shape, roi_offset_px)
        self.background = np.zeros(tuple(slm.shape), dtype=np.float64)
        if dump_period_px:
            rows, cols = np.indices(self.background.shape)
            self.background = np.mod(2 * np.pi * (rows + cols) / dump_period_px, 2 * np.pi)

    @property
    def settle_time_s(self) -> float:
        return float(self.slm.settle_time_s)

    def show(self, phase_rad: np.ndarray) -> None:
        """Display a mask: zero phase (or the dump grating) outside the ROI; waits the settle time when ``settle``."""
        phase = np.asarray(phase_rad, dtype=np.float64)
        if phase.shape != self.mask_shape:
            raise ValueError(f"mask must have shape {self.mask_shape} (height, width), got {phase.shape}")
        if not np.all(np.isfinite(phase)):
            raise ValueError("mask phase must be finite")
        full = self.background.copy()
        full[self.roi] = macro_upsample(phase, self.macro_pixel)
        self.slm.set_phase(full, phase_correct=self.phase_correct, settle=self.settle)

    def blank(self) -> None:
        """Flat (zero-phase) pattern on the whole SLM, no wavefront correction, no settle wait."""
        self.slm.set_phase(None, phase_correct=False, settle=False)

    def realised_phase(self) -> np.ndarray:
        """Phase the SLM shows on the ROI (quantised by its gray levels), radians in [0, 2π), (k n, k n)."""
        return np.asarray(as_numpy(self.slm.get_realized_phase()), dtype=np.float64)[self.roi]
