"""Synthetic phase objects of the kinds labs image. Each returns a map in [0, 1], float32 (n, n).

The dataset layer scales maps to radians (``phi_max``); keeping them unitless here lets the
same generator serve any phase range.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _normalise(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32)


def cells(n: int, rng: np.random.Generator) -> np.ndarray:
    """Cells: 2-8 overlapping elliptical domes (optical thickness ~ sqrt(1-r^2)), each with a nucleus."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) / n
    out = np.zeros((n, n))
    for _ in range(rng.integers(2, 9)):
        cy, cx = rng.uniform(0.15, 0.85, 2)
        ry, rx = rng.uniform(0.08, 0.25, 2)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
        r2 = u**2 + v**2
        out += rng.uniform(0.4, 1.0) * np.sqrt(np.clip(1 - r2, 0, None))
        nuc = r2 / rng.uniform(0.1, 0.25)
        out += rng.uniform(0.2, 0.6) * np.sqrt(np.clip(1 - nuc, 0, None))
    return np.clip(out / max(out.max(), 1e-9), 0, 1).astype(np.float32)


def phase_screen(n: int, rng: np.random.Generator, exponent: float = 11 / 3) -> np.ndarray:
    """Smooth random phase screen: Gaussian field with power spectrum ~ f^-exponent (Kolmogorov 11/3)."""
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = np.inf
    amplitude = f ** (-exponent / 2)
    noise = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    return _normalise(np.real(np.fft.ifft2(noise * amplitude)))


def resolution_target(n: int, rng: np.random.Generator) -> np.ndarray:
    """Bar groups of decreasing period plus a Siemens star, randomly rotated and flipped (binary)."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    out = np.zeros((n, n))
    half = n // 2
    for i, period in enumerate(rng.choice([2, 3, 4, 6, 8], size=3, replace=False)):
        y0 = 2 + i * (half // 3)
        rows = slice(y0, y0 + max(2, half // 3 - 2))
        bars = (np.arange(half - 4) // period) % 2
        out[rows, 2 : half - 2] = bars[None, :]
    cy, cx, radius = 0.75 * n, 0.5 * n + rng.uniform(-2, 2), 0.22 * n
    angle = np.arctan2(yy - cy, xx - cx)
    star = (np.cos(angle * rng.integers(6, 13)) > 0) & (np.hypot(yy - cy, xx - cx) < radius)
    out[star] = 1
    mask = (yy > half - 1) & (xx > half)
    out[mask] = np.maximum(out[mask], ((xx[mask] + yy[mask]).astype(int) // 3 % 2))
    out = np.rot90(out, rng.integers(4))
    if rng.integers(2):
        out = out[:, ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)


SYNTHETIC_KINDS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "cells": cells,
    "phase_screen": phase_screen,
    "resolution_target": resolution_target,
}
