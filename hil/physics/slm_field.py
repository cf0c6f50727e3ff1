"""The SLM-plane field of a bench: illumination amplitude and static aberration over the mask, one file.

Written by ``hil calibrate field``; read by :class:`~hil.physics.bench_model.BenchModel` through the bench
config's ``calibration.field``. JSON (no pickle): the amplitude (relative, max 1) and the phase (radians)
per mask pixel, ``(n + 2m, n + 2m)`` (height, width): the ROI's ``(n, n)`` and ``m`` mask pixels of margin
around it (light that passes the SLM beside the ROI), with the provenance and metrics of the run that
measured it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAX_SIDE = 2048


def central(values: np.ndarray, n: int) -> np.ndarray:
    """The centred ``(n, n)`` part of a square ``(n + 2m, n + 2m)`` array (the ROI of a field with a margin)."""
    side = values.shape[-1]
    if values.shape[-2] != side or side < n or (side - n) % 2:
        raise ValueError(f"a field of shape {values.shape} has no centred ({n}, {n}) ROI")
    start = (side - n) // 2
    return values[..., start : start + n, start : start + n]


@dataclass(frozen=True)
class SLMField:
    """``amplitude`` (relative) and ``phase_rad`` ``(n, n)`` per mask pixel; ``complex`` is their product."""

    amplitude: np.ndarray
    phase_rad: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a, p = np.asarray(self.amplitude, dtype=np.float64), np.asarray(self.phase_rad, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape != p.shape or not 2 <= a.shape[0] <= MAX_SIDE:
            raise ValueError(f"amplitude {a.shape} and phase_rad {p.shape} must be the same square (n, n)")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(p))) or a.min() < 0 or a.max() <= 0:
            raise ValueError("amplitude must be finite, >= 0 and not all 0; phase_rad finite")
        object.__setattr__(self, "amplitude", a / a.max())
        object.__setattr__(self, "phase_rad", p)

    @classmethod
    def from_complex(cls, values: np.ndarray, **extra: Any) -> SLMField:
        """From complex values ``(n, n)``: the amplitude normalised to its maximum, the phase re-referenced
        to the amplitude-weighted mean (a global phase is not measurable)."""
        values = np.asarray(values, dtype=np.complex128)
        weight = np.abs(values) ** 2
        reference = np.angle(np.sum(weight * np.exp(1j * np.angle(values))))
        return cls(np.abs(values), np.angle(values * np.exp(-1j * reference)), **extra)

    @property
    def complex(self) -> np.ndarray:
        return self.amplitude * np.exp(1j * self.phase_rad)

    def roi(self, n: int) -> np.ndarray:
        """The complex field over the ``(n, n)`` ROI (without the margin)."""
        return central(self.complex, n)

    def to_json(self) -> str:
        """The file's text (what :meth:`save` writes and :func:`load_slm_field` reads)."""
        document = {
            "kind": "slm_field",
            "shape": list(self.amplitude.shape),
            "amplitude": np.round(self.amplitude, 6).tolist(),
            "phase_rad": np.round(self.phase_rad, 6).tolist(),
            "metrics": self.metrics,
            "provenance": self.provenance,
        }
        return json.dumps(document)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path


def load_slm_field(path: str | Path) -> SLMField:
    """Read :meth:`SLMField.save`'s file; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SLM field file does not exist")
    try:
        data = json.loads(path.read_text())
        if data.get("kind") != "slm_field":
            raise ValueError("kind is not 'slm_field'")
        metrics = {str(k): float(v) for k, v in dict(data.get("metrics", {})).items()}
        return SLMField(
            np.asarray(data["amplitude"], dtype=np.float64),
            np.asarray(data["phase_rad"], dtype=np.float64),
            dict(data.get("provenance", {})),
            {k: v for k, v in metrics.items() if math.isfinite(v)},
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ValueError(f"{path}: not an SLM field file ({type(exc).__name__}: {exc})") from None
