"""HDF5 log of bench frames (captures, calibrations), written frame by frame: an error, Ctrl-C, a full
disk or a file-size limit later in a procedure loses nothing already captured.

Write side (:class:`FrameLog`): every frame is its own dataset with HDF5's Fletcher-32 checksum
filter, flushed as soon as it is stored. HDF5 cannot be trusted after a failed write (h5py raises,
the file's recorded end lies past its real end, and closing it can crash the process), so before
each write the log checks the room left under the file-size limit (``ulimit -f``) and on the file
system, and stops with an :class:`OSError` naming the file while the file is still whole.

Read side: :func:`open_h5`, :func:`read_array`, :func:`read_json_attr`, :func:`read_number_attr`
and :func:`verify_checksums` turn every malformed, truncated or corrupted file into a
:class:`CaptureError` that names the file and the dataset or attribute.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hil.common.config import json_depth
from hil.common.provenance import record

HEADROOM_BYTES = 256 * 1024  # room kept free beyond a frame's own bytes, for HDF5's metadata
MAX_JSON_ATTR_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_DATASET_ELEMENTS = 1 << 26  # 512 MiB of float64: larger datasets are refused before they are read


class CaptureError(ValueError):
    """An HDF5 frame file that is unreadable, incomplete, corrupted or holds values of the wrong kind."""


def ensure_new(path: str | Path, overwrite: bool = False) -> Path:
    """``path`` if no file is there yet (or ``overwrite``); recorded frames are never overwritten silently."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists: recorded frames are never overwritten; choose another output or pass --overwrite"
        )
    return path


def room_left_bytes(path: Path) -> float:
    """Bytes ``path`` may still grow by: the smaller of the file-size limit and the free disk space."""
    size = path.stat().st_size if path.exists() else 0
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    by_limit = math.inf if limit == resource.RLIM_INFINITY else limit - size
    return min(by_limit, shutil.disk_usage(path.parent).free)


def _check_room(path: Path, needed_bytes: int, what: str) -> None:
    left = room_left_bytes(path)
    if left < needed_bytes + HEADROOM_BYTES:
        raise OSError(
            f"{path}: only {max(left, 0) / 1024:.0f} KiB left (file-size limit or free disk space) for {what} "
            f"of {needed_bytes / 1024:.0f} KiB; stopped before writing, everything recorded so far is kept"
        )


class FrameLog:
    """Frames ``(height, width)`` stored as datasets ``<group>/<index>`` with per-frame attributes.

    Use as a context manager; the file's ``provenance_json`` attribute names the procedure and
    its settings. Every dataset carries a Fletcher-32 checksum and is flushed when stored.
    """

    def __init__(self, path: str | Path, procedure: str, settings: dict[str, Any], seed: int | None = None) -> None:
        self.path = ensure_new(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _check_room(self.path, 0, "a new frame file")
        self._h5 = h5py.File(self.path, "w-")
        self._counts: dict[str, int] = {}
        self._broken = False
        self.set_attrs(
            procedure=procedure,
            provenance_json=json.dumps(record(settings, seed=seed, procedure=procedure), default=str),
        )

    def _write(self, what: str, nbytes: int, write: Any) -> Any:
        if self._broken:
            raise OSError(f"{self.path}: an earlier write failed; nothing more is written to this file")
        _check_room(self.path, nbytes, what)
        try:
            out = write()
            self._h5.flush()
        except (OSError, RuntimeError) as exc:  # HDF5 reports a failed write as either
            self._broken = True
            raise OSError(f"{self.path}: writing {what} failed ({' '.join(str(exc).split())})") from exc
        return out

    def add(self, group: str, frame: np.ndarray, **attrs: float | int | str) -> np.ndarray:
        """Store one frame (float64) with ``attrs`` and a timestamp; returns the frame."""
        frame = np.asarray(frame, dtype=np.float64)
        index = self._counts.get(group, 0)

        def write() -> None:
            dataset = self._h5.create_dataset(f"{group}/{index:05d}", data=frame, fletcher32=True)
            dataset.attrs["time_unix_s"] = time.time()
            for key, value in attrs.items():
                dataset.attrs[key] = value

        self._write(f"frame {group}/{index:05d}", frame.nbytes, write)
        self._counts[group] = index + 1
        return frame

    def store(self, name: str, data: np.ndarray) -> None:
        """A named array beside the frames (e.g. the mask shown, the averaged result)."""
        data = np.asarray(data)
        checked = data.ndim > 0 and data.size > 0  # HDF5 filters need a chunked (non-scalar, non-empty) dataset
        self._write(name, data.nbytes, lambda: self._h5.create_dataset(name, data=data, fletcher32=checked))

    def set_attrs(self, **attrs: float | int | str) -> None:
        """File attributes (scalars or JSON strings), written at once."""

        def write() -> None:
            for key, value in attrs.items():
                self._h5.attrs[key] = value

        size = sum(len(v) if isinstance(v, str) else 8 for v in attrs.values())
        self._write(f"attributes {sorted(attrs)}", size, write)

    def set_result(self, result: dict[str, Any]) -> None:
        """Attach the procedure's result (JSON) once it is known."""
        self.set_attrs(result_json=json.dumps(result, default=float))

    def close(self) -> None:
        """Close the file; after a failed write HDF5 is not asked to flush again (that can crash it)."""
        if self._broken:
            return
        self._h5.close()

    def __enter__(self) -> FrameLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- read side ----------------------------------------------------------------------------------


@contextmanager
def open_h5(path: str | Path) -> Iterator[h5py.File]:
    """Open an HDF5 frame file read-only; a missing, truncated or non-HDF5 file is a :class:`CaptureError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: capture file does not exist")
    try:
        h5 = h5py.File(path, "r")
    except (OSError, RuntimeError) as exc:
        raise CaptureError(f"{path}: not a readable HDF5 file ({' '.join(str(exc).split())})") from None
    try:
        yield h5
    finally:
        h5.close()


def read_array(h5: h5py.File, name: str, ndim: int | None = None, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Dataset ``name`` as float64, checked: a dataset (not a group), real numbers, finite, the given shape.

    A Fletcher-32 mismatch (a corrupted block) is reported as such.
    """
    where = f"{h5.filename}: {name}"
    item = h5.get(name)
    if item is None:
        raise CaptureError(f"{where}: missing (was the recording interrupted?)")
    if not isinstance(item, h5py.Dataset):
        raise CaptureError(f"{where}: expected a dataset, found a {type(item).__name__}")
    if item.dtype.kind not in "iuf":
        raise CaptureError(f"{where}: expected real numbers, got dtype {item.dtype}")
    _check_size(h5, name, item)
    if ndim is not None and item.ndim != ndim:
        raise CaptureError(f"{where}: expected {ndim} dimensions, got shape {item.shape}")
    if shape is not None and item.shape != shape:
        raise CaptureError(f"{where}: expected shape {shape}, got {item.shape}")
    try:
        data = np.asarray(item[()], dtype=np.float64)
    except (OSError, RuntimeError) as exc:
        raise CaptureError(f"{where}: unreadable, checksum or data damaged ({' '.join(str(exc).split())})") from None
    if not np.all(np.isfinite(data)):
        raise CaptureError(f"{where}: contains NaN or infinite values")
    return data


def _check_size(h5: h5py.File, name: str, item: h5py.Dataset) -> None:
    if item.size > MAX_DATASET_ELEMENTS:
        raise CaptureError(f"{h5.filename}: {name}: {item.shape} is larger than {MAX_DATASET_ELEMENTS} elements")


def read_json_attr(h5: h5py.File, name: str) -> dict[str, Any]:
    """File attribute ``name``: a JSON object of bounded size and nesting."""
    where = f"{h5.filename}: attribute {name}"
    if name not in h5.attrs:
        raise CaptureError(f"{where}: missing")
    value = h5.attrs[name]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise CaptureError(f"{where}: expected a JSON string, got {type(value).__name__}")
    if len(value) > MAX_JSON_ATTR_BYTES:
        raise CaptureError(f"{where}: {len(value)} characters, more than the {MAX_JSON_ATTR_BYTES} allowed")
    try:
        data = json.loads(value)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CaptureError(f"{where}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise CaptureError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise CaptureError(f"{where}: nested more than {MAX_JSON_DEPTH} levels deep")
    return data


def read_number_attr(h5: h5py.File, name: str, minimum: float | None = None) -> float:
    """File attribute ``name``: one finite real number, at least ``minimum`` when given."""
    where = f"{h5.filename}: attribute {name}"
    if name not in h5.attrs:
        raise CaptureError(f"{where}: missing")
    value = np.asarray(h5.attrs[name])
    if value.shape != () or value.dtype.kind not in "iuf" or not np.isfinite(value):
        raise CaptureError(f"{where}: expected one finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise CaptureError(f"{where}: must be >= {minimum}, got {float(value)}")
    return float(value)


def verify_checksums(h5: h5py.File) -> int:
    """Read every dataset once so that a Fletcher-32 mismatch anywhere is named; returns how many were read."""
    names: list[str] = []
    h5.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    for name in names:
        _check_size(h5, name, h5[name])
        try:
            h5[name][()]
        except (OSError, RuntimeError) as exc:
            raise CaptureError(
                f"{h5.filename}: {name}: unreadable, checksum or data damaged ({' '.join(str(exc).split())})"
            ) from None
    return len(names)
