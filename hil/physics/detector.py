"""A registered camera: camera pixels from detector-plane intensities, each pixel integrating its footprint.

The forward model predicts intensities on its detector grid (``detector_shape``, bins of unit area whose
centres are at integer (x, y)); a camera integrates that light over its own pixels. A detector is the
linear, non-negative map ``D`` from detector-grid intensities ``(..., *detector_shape)`` to camera pixels
``(..., *camera_shape)``, with its adjoint. Consistency is then measured on camera pixels, where the noise
is, instead of resampling a frame onto the model grid (which cannot be done for speckle sampled near
Nyquist; see ``docs/calibration.md``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hil.physics.registration import Registration


class RegisteredCamera:
    """A camera whose pixels sit at an affine position on the detector grid, each integrating its footprint.

    ``registration.camera_to_model`` maps camera pixel centres (x, y) to the registration's model grid; when
    the operator's detector grid is finer (a larger ``pad_factor``: ``bins_per_model_px`` detector bins per
    registration model pixel, by default the ratio of the two grids' sides) or wider (a guard band), positions
    are rescaled about the zero frequency (index ``side // 2``). Each camera pixel's unit-square footprint is sampled at
    ``supersample x supersample`` points; the intensity density there is the bilinear interpolation of the
    detector bins, and each point carries the footprint area over the point count (in detector-bin units), so
    a uniform intensity ``I`` gives ``I x area`` per camera pixel. Light outside the detector grid is lost.
    """

    def __init__(
        self,
        registration: Registration,
        detector_shape: tuple[int, int],
        supersample: int = 4,
        bins_per_model_px: float | None = None,
    ) -> None:
        matrix = np.asarray(registration.camera_to_model, dtype=np.float64)
        if matrix.shape != (2, 3) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:, :2])) < 1e-9:
            raise ValueError("camera_to_model must be a finite, invertible 2 x 3 affine matrix")
        if not 1 <= supersample <= 16:
            raise ValueError(f"supersample must be in [1, 16], got {supersample}")
        self.detector_shape = tuple(detector_shape)
        self.camera_shape = tuple(registration.camera_shape)
        scale = np.array(self.detector_shape[::-1], dtype=np.float64) / np.array(registration.model_shape[::-1])
        if bins_per_model_px is not None:
            scale = np.full(2, float(bins_per_model_px))
        centre_model = np.array(registration.model_shape[::-1]) // 2
        centre_detector = np.array(self.detector_shape[::-1]) // 2
        # detector (x, y) = centre_d + scale * (model (x, y) - centre_m)
        linear = scale[:, None] * matrix[:, :2]
        offset = centre_detector + scale * (matrix[:, 2] - centre_model)
        self.camera_to_detector = np.concatenate([linear, offset[:, None]], axis=1)
        self.pixel_area = abs(float(np.linalg.det(linear)))
        self._matrix = self._build(supersample)
        self._transpose = self._matrix.t().coalesce()

    def _build(self, s: int) -> torch.Tensor:
        """Sparse ``(camera pixels, detector bins)`` weights (float64, coalesced COO)."""
        hc, wc = self.camera_shape
        hd, wd = self.detector_shape
        sub = (np.arange(s) + 0.5) / s - 0.5
        cy, cx, sy, sx = np.meshgrid(np.arange(hc), np.arange(wc), sub, sub, indexing="ij")
        points = np.stack([(cx + sx).ravel(), (cy + sy).ravel(), np.ones(cx.size)])
        x, y = self.camera_to_detector @ points
        pixel = np.repeat(np.arange(hc * wc), s * s)
        x0, y0 = np.floor(x), np.floor(y)
        rows, cols, weights = [], [], []
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                w = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi)) * (self.pixel_area / (s * s))
                inside = (xi >= 0) & (xi < wd) & (yi >= 0) & (yi < hd) & (w > 0)
                rows.append(pixel[inside])
                cols.append((yi[inside] * wd + xi[inside]).astype(np.int64))
                weights.append(w[inside])
        indices = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
        values = torch.from_numpy(np.concatenate(weights))
        return torch.sparse_coo_tensor(indices, values, (hc * wc, hd * wd), check_invariants=True).coalesce()

    def _apply(self, matrix: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        lead = values.shape[:-2]
        flat = values.reshape(-1, math.prod(values.shape[-2:])).T
        out = torch.sparse.mm(matrix.to(device=flat.device, dtype=flat.dtype), flat).T
        return out.reshape(*lead, *shape)

    def forward(self, intensity: torch.Tensor) -> torch.Tensor:
        """Camera pixels ``(..., *camera_shape)`` from detector-grid intensities ``(..., *detector_shape)``."""
        return self._apply(self._matrix, intensity, self.camera_shape)

    def adjoint(self, values: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`forward`: camera-pixel values -> detector grid."""
        return self._apply(self._transpose, values, self.detector_shape)
