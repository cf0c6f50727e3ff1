"""HDF5 log of bench frames (captures, calibrations), written frame by frame: an error or Ctrl-C
later in a procedure loses nothing already captured."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hil.common.provenance import record


def ensure_new(path: str | Path) -> Path:
    """``path`` if no file is there yet; recorded frames are never overwritten."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(
            f"{path} exists: choose another output file or move it (recorded frames are never overwritten)"
        )
    return path


class FrameLog:
    """Frames ``(height, width)`` stored as datasets ``<group>/<index>`` with per-frame attributes.

    Use as a context manager; the file's ``provenance_json`` attribute names the procedure and
    its settings.
    """

    def __init__(self, path: str | Path, procedure: str, settings: dict[str, Any], seed: int | None = None) -> None:
        self.path = ensure_new(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._h5 = h5py.File(self.path, "w-")
        self._h5.attrs["procedure"] = procedure
        self._h5.attrs["provenance_json"] = json.dumps(record(settings, seed=seed, procedure=procedure), default=str)
        self._counts: dict[str, int] = {}

    def add(self, group: str, frame: np.ndarray, **attrs: float | int | str) -> np.ndarray:
        """Store one frame (float64) with ``attrs`` and a timestamp; returns the frame."""
        frame = np.asarray(frame, dtype=np.float64)
        index = self._counts.get(group, 0)
        dataset = self._h5.create_dataset(f"{group}/{index:05d}", data=frame)
        dataset.attrs["time_unix_s"] = time.time()
        for key, value in attrs.items():
            dataset.attrs[key] = value
        self._counts[group] = index + 1
        self._h5.flush()
        return frame

    def store(self, name: str, data: np.ndarray) -> None:
        """A named array beside the frames (e.g. the mask shown, the averaged result)."""
        self._h5.create_dataset(name, data=data)
        self._h5.flush()

    def set_attrs(self, **attrs: float | int | str) -> None:
        """File attributes (scalars or JSON strings), written at once."""
        for key, value in attrs.items():
            self._h5.attrs[key] = value
        self._h5.flush()

    def set_result(self, result: dict[str, Any]) -> None:
        """Attach the procedure's result (JSON) once it is known."""
        self.set_attrs(result_json=json.dumps(result, default=float))

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> FrameLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
