"""Reading user-supplied arrays (masks) with every check made before the array is used."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

MAX_MASK_FILE_BYTES = 64 * 1024 * 1024
MAX_ABS_PHASE_RAD = 1e4  # beyond this float64 phases have lost their sub-milliradian precision


def load_mask(path: str | Path, n: int) -> np.ndarray:
    """A ``.npy`` mask in radians, ``(n, n)`` (height, width), real and finite, as float64; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mask file does not exist")
    size = path.stat().st_size
    if size == 0 or size > MAX_MASK_FILE_BYTES:
        raise ValueError(f"{path}: mask file has {size} bytes (expected a .npy of an ({n}, {n}) array)")
    if zipfile.is_zipfile(path):
        raise ValueError(f"{path}: an .npz archive; give the mask as one .npy array (np.save)")
    try:
        mask = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy array ({' '.join(str(exc).split())})") from None
    if not isinstance(mask, np.ndarray) or mask.dtype.kind not in "iuf":
        kind = getattr(mask, "dtype", type(mask).__name__)
        raise ValueError(f"{path}: mask must hold real numbers (radians), got {kind}")
    if mask.shape != (n, n):
        raise ValueError(f"{path}: mask must have shape ({n}, {n}) (height, width), got {mask.shape}")
    mask = mask.astype(np.float64)
    if not np.all(np.isfinite(mask)):
        raise ValueError(f"{path}: mask contains NaN or infinite values")
    if np.abs(mask).max() > MAX_ABS_PHASE_RAD:
        raise ValueError(f"{path}: mask values must lie within ±{MAX_ABS_PHASE_RAD:g} rad, got {np.abs(mask).max():g}")
    return mask
