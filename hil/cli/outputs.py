"""Writing a command's outputs: never over an existing file without ``--overwrite``, never half-written.

A file is written to a temporary name beside it, flushed to disk and then renamed over the target,
so a full disk, a file-size limit or a crash leaves either the old file or the complete new one;
the error names the file. Only regular files are replaced (``--out /dev/full`` is refused).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """``path`` if it may be written: absent, or a regular file and ``overwrite``; its folder is creatable."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise FileExistsError(f"{path} exists and is not a regular file: choose another output")
        if not overwrite:
            raise FileExistsError(f"{path} exists: choose another output or pass --overwrite to replace it")
    folder = next((p for p in path.absolute().parents if p.exists()), None)
    if folder is None or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: cannot write in {folder} (not a writable folder)")
    return path


def write_bytes(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename); errors name ``path``."""
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # what open() would have given (mkstemp makes it 0600)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(f"{path}: not written ({exc.strerror or exc}); nothing was left half-written") from exc
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """UTF-8 text to ``path`` atomically (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"), overwrite)


def save_npy(path: str | Path, array: np.ndarray, overwrite: bool = False) -> Path:
    """``array`` as ``.npy`` at exactly ``path`` (no suffix appended), atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buffer.getvalue(), overwrite)
