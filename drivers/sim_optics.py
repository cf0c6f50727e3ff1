"""Optical imperfections of the simulated bench as arrays on the SLM's ROI (height, width).

Coordinates are normalised to the ROI: x, y in [-1, 1] from edge to edge (pixel centres).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hil.data import objects
from hil.data.datasets import DataSpec, batch

SAMPLE_KINDS = ("none", "phase_screen", "cells", "resolution_target", "natural")


def normalised_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates of pixel centres scaled to [-1, 1] across ``shape``."""
    y = (np.arange(shape[0]) + 0.5) / shape[0] * 2 - 1
    x = (np.arange(shape[1]) + 0.5) / shape[1] * 2 - 1
    return np.meshgrid(y, x, indexing="ij")


def gaussian_illumination(shape: tuple[int, int], waist_rel: float | None) -> np.ndarray:
    """Beam amplitude ``exp(-(r / waist_rel)^2)`` (peak 1; ``waist_rel`` in ROI half-widths), or ones."""
    if waist_rel is None:
        return np.ones(shape)
    y, x = normalised_grid(shape)
    return np.exp(-(x**2 + y**2) / waist_rel**2)


def zernike_aberration(shape: tuple[int, int], coefficients_rad: tuple[float, ...]) -> np.ndarray:
    """Static aberration in radians: Noll-normalised Zernike terms j = 4, 5, ... (defocus first)."""
    y, x = normalised_grid(shape)
    r2 = x**2 + y**2
    terms = (
        np.sqrt(3) * (2 * r2 - 1),  # j=4 defocus
        np.sqrt(6) * 2 * x * y,  # j=5 oblique astigmatism
        np.sqrt(6) * (x**2 - y**2),  # j=6 vertical astigmatism
        np.sqrt(8) * (3 * r2 - 2) * y,  # j=7 vertical coma
        np.sqrt(8) * (3 * r2 - 2) * x,  # j=8 horizontal coma
        np.sqrt(8) * (3 * x**2 * y - y**3),  # j=9 vertical trefoil
        np.sqrt(8) * (x**3 - 3 * x * y**2),  # j=10 oblique trefoil
        np.sqrt(5) * (6 * r2**2 - 6 * r2 + 1),  # j=11 primary spherical
    )
    if len(coefficients_rad) > len(terms):
        raise ValueError(f"aberration_rad takes at most {len(terms)} Zernike terms (j = 4..11)")
    phase = np.zeros(shape)
    for c, term in zip(coefficients_rad, terms, strict=False):
        phase += c * term
    return phase


def sample_phase(kind: str, n: int, rng: np.random.Generator, phi_max_rad: float) -> np.ndarray:
    """Thin phase sample ``(n, n)`` in radians: a generator of :mod:`hil.data.objects`, a natural image
    (a held-out scikit-image crop), a ``.npy`` file, or flat."""
    if kind == "none":
        return np.zeros((n, n))
    if kind == "natural":
        spec = DataSpec(sources=("skimage",), n=n, phi_max_rad=phi_max_rad, augment=False)
        return batch(spec, "test", 1, seed=int(rng.integers(2**31)))[0][0].numpy().astype(np.float64)
    if kind in SAMPLE_KINDS:
        return getattr(objects, kind)(n, rng).astype(np.float64) * phi_max_rad
    phase = np.load(Path(kind), allow_pickle=False)
    if phase.shape != (n, n):
        raise ValueError(f"sample file {kind} holds shape {phase.shape}, expected ({n}, {n})")
    return phase.astype(np.float64)


class DriftingSample:
    """A sample larger than the field of view sliding diagonally across it, back and forth.

    The sample is drawn at ``n + travel_px`` pixels; at time ``t_s`` the view is the ``(n, n)``
    window offset by ``speed_px_per_s * t_s`` along both axes, folded into ``[0, travel_px]`` (it
    turns round at either end), rounded to whole pixels.
    """

    def __init__(self, kind: str, n: int, rng: np.random.Generator, phi_max_rad: float, speed_px_per_s: float):
        if kind not in SAMPLE_KINDS:
            raise ValueError(f"a drifting sample must be one of {list(SAMPLE_KINDS)}, got {kind!r}")
        self.n, self.travel_px, self.speed_px_per_s = n, n // 2, speed_px_per_s
        self.phase_rad = sample_phase(kind, n + self.travel_px, rng, phi_max_rad)

    def offset_px(self, t_s: float) -> int:
        distance = (self.speed_px_per_s * t_s) % (2 * self.travel_px)
        return int(round(distance if distance <= self.travel_px else 2 * self.travel_px - distance))

    def at(self, t_s: float) -> np.ndarray:
        """The sample's phase ``(n, n)`` in radians seen at time ``t_s``."""
        o = self.offset_px(t_s)
        return self.phase_rad[o : o + self.n, o : o + self.n]
