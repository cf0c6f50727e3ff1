"""Camera-to-model registration: the affine map between camera pixels and the model's detector grid."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Registration:
    """Affine ``camera_to_model`` ``(2, 3)``: model (x, y) = A @ (camera x, camera y, 1).

    ``correlation``: Pearson correlation of the resampled frame with the model CDP.
    """

    camera_to_model: np.ndarray
    model_shape: tuple[int, int]
    camera_shape: tuple[int, int]
    correlation: float

    def resample(self, frame: np.ndarray) -> np.ndarray:
        """A camera frame ``camera_shape`` resampled (bilinear) onto the model grid ``model_shape``."""
        frame = np.asarray(frame, dtype=np.float64)
        if frame.shape != self.camera_shape:
            raise ValueError(f"frame has shape {frame.shape} (height, width); registered for {self.camera_shape}")
        height, width = self.model_shape
        return cv2.warpAffine(frame, self.camera_to_model, (width, height), flags=cv2.INTER_LINEAR)

    def parameters(self) -> dict[str, float]:
        """Scale (model px per camera px), rotation (degrees, counter-clockwise in (x, y)), shear, shift."""
        a = self.camera_to_model[:, :2]
        scale_x = math.hypot(a[0, 0], a[1, 0])
        rotation = math.atan2(a[1, 0], a[0, 0])
        shear = (a[0, 0] * a[0, 1] + a[1, 0] * a[1, 1]) / scale_x
        scale_y = float(np.linalg.det(a)) / scale_x
        return {
            "scale_x": scale_x,
            "scale_y": scale_y,
            "rotation_deg": math.degrees(rotation),
            "shear": shear / scale_y,
            "shift_x_px": float(self.camera_to_model[0, 2]),
            "shift_y_px": float(self.camera_to_model[1, 2]),
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "camera_to_model": self.camera_to_model.tolist(),
            "model_shape": list(self.model_shape),
            "camera_shape": list(self.camera_shape),
            "correlation": self.correlation,
            "parameters": self.parameters(),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def load_registration(path: str | Path) -> Registration:
    """Read a registration written by :meth:`Registration.save`; errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: registration file does not exist")
    try:
        data = json.loads(path.read_text())
        matrix = np.asarray(data["camera_to_model"], dtype=np.float64)
        model_shape, camera_shape = tuple(data["model_shape"]), tuple(data["camera_shape"])
        correlation = float(data["correlation"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: not a registration file ({type(exc).__name__}: {exc})") from None
    if matrix.shape != (2, 3) or len(model_shape) != 2 or len(camera_shape) != 2:
        raise ValueError(f"{path}: camera_to_model must be 2 x 3 and the shapes (height, width)")
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:, :2])) < 1e-6:
        raise ValueError(f"{path}: camera_to_model must be finite and invertible, got {matrix.tolist()}")
    for key, shape in (("model_shape", model_shape), ("camera_shape", camera_shape)):
        if not all(isinstance(v, int) and 1 <= v <= 65536 for v in shape):
            raise ValueError(f"{path}: {key} must be two integers in [1, 65536], got {list(shape)}")
    return Registration(matrix, model_shape, camera_shape, correlation)
